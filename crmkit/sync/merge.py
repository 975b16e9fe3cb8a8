"""What the three-way merge keeps of a field: pure decisions, no store and no sheet.

Given the field's value on the sheet, in the store, and in the base (what both agreed
on at the last sync), :func:`merge_field` says which side's value both sides get, or
that both changed it and ``on_conflict`` must decide.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

__all__ = ["NOT_ON_SHEET", "NO_BASE", "Conflicting", "Side", "merge_field"]

#: A field whose cells are not on the sheet yet: the store's value goes there, nothing is an edit.
NOT_ON_SHEET = object()
#: A field no sync agreed on yet (a new row, a new column).
NO_BASE = object()

#: The side whose value both sides get: "sheet" copies the sheet's value into the store,
#: "store" writes the store's value into the sheet, "same" when they already agree.
Side = Literal["same", "sheet", "store"]


@dataclass(frozen=True)
class Conflicting:
    """Both sides changed the field since the base, to different values."""

    base_value: Any  # None when there was no base
    base: str  # what the base was: "none", "agreed", or "invalid" (it stood in for an invalid cell)


def merge_field(sheet: Any, store: Any, base: Any, *, new_row: bool, stood_in: bool) -> Side | Conflicting:
    """Which value a field keeps: the side that changed it since ``base``, or a conflict.

    ``base`` is :data:`NO_BASE` where nothing was agreed yet. ``new_row`` is a row a person
    added that was tied to its record by its email or the journal: its cells are edits.
    ``stood_in`` says the base is only the store's value standing in for a cell that was
    invalid at the last sync.
    """
    if sheet is NOT_ON_SHEET:
        return "store"
    if sheet == store:
        return "same"
    if base is NO_BASE:
        if new_row:
            return "sheet" if sheet not in (None, False) else "store"
        if sheet in (None, False):
            return "store"
        if store in (None, False):
            return "sheet"
        return Conflicting(None, "none")
    if stood_in:
        # A valid value in the cell now is the person's edit, to keep unless the store
        # changed the field meanwhile too.
        return "sheet" if store == base else Conflicting(base, "invalid")
    if sheet == base:
        return "store"
    if store == base:
        return "sheet"
    return Conflicting(base, "agreed")
