"""The base: what a sheet and the store agreed on at the end of the last sync, as it is saved.

The store keeps it per workbook and sheet, compact, as JSON: for each record a list
(an *entry*) rather than a mapping, since a sheet of 20,000 rows is saved at every sync.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import date
from decimal import Decimal
from typing import Any

from crmkit.records.rules import invoice_status

__all__ = [
    "ABSENT",
    "CLEAN",
    "INVALID",
    "REVISION",
    "SIGNATURE",
    "STATUS",
    "VALUES",
    "agreed_values",
    "base_entry",
    "invoice_status_today",
    "rekeyed",
    "stand_ins",
]

# The fields of a base entry: [row signature, record revision, clean?, agreed values in the
# order of the sheet's keys, invoice status]. An entry has a sixth only when some of its cells
# were invalid: the keys whose base value is the store's value that stood in for an invalid
# cell (see SheetSync._write_back).
SIGNATURE, REVISION, CLEAN, VALUES, STATUS, INVALID = range(6)
#: The mark of a value no sync agreed on yet (a field still in conflict).
ABSENT = "\x00absent"


def agreed_values(keys: Iterable[str], entry: list[Any]) -> dict[str, Any]:
    """The values a base entry holds, by column key (fields still in conflict left out)."""
    return {k: v for k, v in zip(keys, entry[VALUES], strict=True) if v != ABSENT}


def base_entry(
    keys: Iterable[str],
    signature: str,
    revision: Any,
    clean: bool,
    values: Mapping[str, Any],
    status: str | None,
    stood_in: Iterable[str] = (),
) -> list[Any]:
    """The entry saved for a record: ``values`` in the order of ``keys``.

    ``stood_in`` are the keys whose value is the store's, standing in for an invalid cell.
    """
    entry = [signature, revision, clean, [values.get(k, ABSENT) for k in keys], status]
    if stood_in:
        entry.append(sorted(stood_in))
    return entry


def rekeyed(base: Mapping[str, list[Any]], old_keys: list[str], keys: list[str]) -> dict[str, list[Any]]:
    """Entries saved under ``old_keys`` (a column was added or removed since), re-ordered for ``keys``."""
    if old_keys == keys:
        return dict(base)
    out: dict[str, list[Any]] = {}
    for record_id, entry in base.items():
        old = {k: v for k, v in zip(old_keys, entry[VALUES], strict=False)}
        # a different set of columns is a different row: never take the shortcut on it
        out[record_id] = [None, entry[REVISION], False, [old.get(k, ABSENT) for k in keys], None]
        if kept := [k for k in stand_ins(entry) if k in keys]:
            out[record_id].append(kept)
    return out


def stand_ins(entry: list[Any] | None) -> frozenset[str]:
    """The keys of a base entry whose value only stood in for a cell that was invalid."""
    return frozenset(entry[INVALID]) if entry is not None and len(entry) > INVALID else frozenset()


def invoice_status_today(doc: Mapping[str, Any], today: date) -> str:
    """The status an invoice shows today, from its stored document (cheaply: no full load).

    Kept in the base, since an invoice turns overdue with the calendar alone.
    """
    due = doc.get("due_date")
    return invoice_status(
        {
            "status": doc.get("status"),
            "total": Decimal(doc.get("total") or 0),
            "amount_paid": Decimal(doc.get("amount_paid") or 0),
            "due_date": date.fromisoformat(due) if due else None,
        },
        today,
    )
