"""The quickstart: a demo CRM built from the sample workbook that ships with crmkit.

``build_demo`` reads ``workbooks/sample.xlsx`` and loads every sheet into a
fresh store, through the same validation as any other change. The store is
built beside its final place and moved there in one step, so running the
quickstart again replaces the old demo whole, never half.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from crmkit.config import DEFAULT_STORE
from crmkit.project import SAMPLE_WORKBOOK, shipped_workbook
from crmkit.store import Store
from crmkit.workbooks import INVOICE_LINES_TABLE, lines_by_invoice, read_workbook

__all__ = ["IMPORT_ORDER", "build_demo", "import_rows"]

#: Tables in the order their records may link to each other.
IMPORT_ORDER = ("accounts", "contacts", "leads", "deals", "invoices", "cases")


def import_rows(store: Store, rows: Mapping[str, list[dict[str, Any]]]) -> dict[str, int]:
    """Add the rows of a read workbook (ids kept) in one transaction; counts per table."""
    lines = lines_by_invoice(rows.get(INVOICE_LINES_TABLE, []))
    counts: dict[str, int] = {}
    with store.transaction():
        for table in IMPORT_ORDER:
            records = []
            for row in rows.get(table, []):
                record = {k: v for k, v in row.items() if k != "_row"}
                if table == "invoices":
                    record["lines"] = lines.get(str(record.get("id")), [])
                    for computed in ("subtotal", "tax", "total"):
                        record.pop(computed, None)  # crmkit computes them from the lines
                records.append(record)
            counts[table] = len(store.add_many(table, records, allow_system=True, actor="quickstart"))
    return counts


def build_demo(folder: Path, *, workbook: Path | None = None) -> tuple[Store, dict[str, int]]:
    """Build ``folder/crm.json`` from the sample workbook; returns the store and counts."""
    source = workbook or shipped_workbook(SAMPLE_WORKBOOK)
    folder.mkdir(parents=True, exist_ok=True)
    final = folder / DEFAULT_STORE
    building = folder / f".{DEFAULT_STORE}.building"
    building.unlink(missing_ok=True)
    counts = import_rows(Store(building, actor="quickstart"), read_workbook(source))
    os.replace(building, final)
    building.with_name(building.name + ".lock").unlink(missing_ok=True)
    return Store(final), counts
