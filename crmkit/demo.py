"""The quickstart: a demo CRM synced from the sample workbook that ships with crmkit.

``build_demo`` copies ``workbooks/sample.xlsx`` into a folder and syncs it into
a fresh store there, exactly as ``crmkit sync`` would. The store is built
in a staging folder beside its final place and moved there, so running the
quickstart again replaces the old demo.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crmkit.config import CONFIG_FILE, DEFAULT_STORE
from crmkit.contacts import contact_view
from crmkit.project import CONFIG_TEMPLATE, WORKBOOK_NAME, shipped_workbook
from crmkit.reports import Report, pipeline
from crmkit.store import Store
from crmkit.store.jsonfiles import data_folder
from crmkit.sync import SyncReport, sync_book
from crmkit.sync.excel import ExcelBook
from crmkit.workbooks import SAMPLE_NAME

__all__ = ["Quickstart", "build_demo", "quickstart"]


def build_demo(folder: Path, *, workbook: Path | None = None) -> tuple[Store, ExcelBook, SyncReport]:
    """Copy the sample workbook to ``folder/crm.xlsx`` and sync it into ``folder/crm.json``.

    A ``crmkit.toml`` naming that store is written beside them unless one is there.

    The store is built in a staging folder and moved into place, its manifest
    last: a run stopped half way leaves the old demo or a staging folder, and
    running the quickstart again finishes the job.
    """
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / CONFIG_FILE
    if not config.exists():  # so commands run in the demo folder find the demo store, not another
        config.write_text(CONFIG_TEMPLATE.format(store=DEFAULT_STORE, currency="USD"), encoding="utf-8")
    book_path = folder / WORKBOOK_NAME
    shutil.copyfile(workbook or shipped_workbook(SAMPLE_NAME), book_path)
    final = folder / DEFAULT_STORE
    staging = folder / ".crm-quickstart"
    shutil.rmtree(staging, ignore_errors=True)
    for leftover in folder.glob(f"*{DEFAULT_STORE}.building*"):  # what earlier releases left
        leftover.unlink(missing_ok=True)
    staging.mkdir()
    book = ExcelBook(book_path)
    building = staging / DEFAULT_STORE
    report = sync_book(Store(building, actor="quickstart"), book)
    final.unlink(missing_ok=True)
    shutil.rmtree(data_folder(final), ignore_errors=True)
    os.replace(data_folder(building), data_folder(final))
    os.replace(building, final)  # the manifest last: it is what makes the store whole
    shutil.rmtree(staging, ignore_errors=True)
    return Store(final), book, report


@dataclass
class Quickstart:
    """The demo, built: where it is, what the sync made, the pipeline and one contact's view."""

    store: Store
    book: ExcelBook
    imported: dict[str, int]
    pipeline: Report
    contact: dict[str, Any]

    def as_json(self) -> dict[str, Any]:
        return {
            "store": str(self.store.path),
            "workbook": str(self.book.path),
            "imported": self.imported,
            "pipeline": [
                {
                    "pipeline": row["pipeline"],
                    "stage": row["stage"],
                    "currency": table.currency,
                    "count": row["count"],
                    "amount": format(row["amount"], "f"),
                    "weighted": format(row["weighted"], "f"),
                }
                for table in self.pipeline.tables
                if table.chart is not None
                for row in table.rows
            ],
            "contact": self.contact,
        }


def quickstart(folder: Path, *, contact: str = "C-1") -> Quickstart:
    """Build the demo in ``folder`` and gather what the quickstart shows."""
    store, book, synced = build_demo(folder)
    imported = {s.sheet: len(s.store_added) for s in synced.sheets if s.store_added}
    return Quickstart(store, book, imported, pipeline(store), contact_view(store, contact))
