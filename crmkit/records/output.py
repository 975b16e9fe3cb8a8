"""Records as scripts and people see them.

``record_output`` is the stable ``--json`` shape: the record's ``id``, then
every field of its schema by name (``null`` when empty), then ``custom``.
Derived values that depend on the day (an invoice turning overdue) are
brought up to date on the way out.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any

from crmkit.records.rules import invoice_status
from crmkit.records.schema import INVOICE, type_of_id

__all__ = ["record_output"]


def record_output(doc: Mapping[str, Any], *, today: date | None = None) -> dict[str, Any]:
    """The stable JSON form of a stored record."""
    rt = type_of_id(doc["id"])
    out: dict[str, Any] = {f.name: doc.get(f.name) for f in rt.fields}
    if rt is INVOICE and today is not None:
        out["status"] = invoice_status(INVOICE.load({k: v for k, v in doc.items() if k != "custom"}), today)
    out["custom"] = dict(doc.get("custom") or {})
    return out
