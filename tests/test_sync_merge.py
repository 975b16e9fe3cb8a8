"""The three-way merge's rule for one field, alone: given sheet, store and base, which side wins."""

from __future__ import annotations

from typing import Any

import pytest

from crmkit.sync.merge import NO_BASE, NOT_ON_SHEET, Conflicting, merge_field


@pytest.mark.parametrize(
    ("sheet", "store", "base", "expected"),
    [
        ("a", "a", "old", "same"),  # both agree, whatever the base said
        ("new", "old", "old", "sheet"),  # only the person changed it
        ("old", "new", "old", "store"),  # only the store changed it
        (None, "old", "old", "sheet"),  # the person cleared the cell: an edit like any other
        ("old", None, "old", "store"),  # the store cleared it
        ("x", "y", "old", Conflicting("old", "agreed")),  # both changed it, differently
        (NOT_ON_SHEET, "v", "old", "store"),  # a column not on the sheet yet: the store fills it
    ],
)
def test_a_field_keeps_the_side_that_changed_it_since_the_base(
    sheet: Any, store: Any, base: Any, expected: Any
) -> None:
    assert merge_field(sheet, store, base, new_row=False, stood_in=False) == expected


@pytest.mark.parametrize(
    ("sheet", "store", "new_row", "expected"),
    [
        ("typed", None, False, "sheet"),  # nothing agreed yet: the side that has a value
        (None, "kept", False, "store"),
        (False, "kept", False, "store"),  # an unticked box is no value
        ("typed", "kept", False, Conflicting(None, "none")),  # both have one: a person decides
        ("typed", "kept", True, "sheet"),  # a row a person added: its cells are edits
        (None, "kept", True, "store"),  # ...but an empty cell of it erases nothing
    ],
)
def test_without_a_base_only_a_value_against_none_is_decided(
    sheet: Any, store: Any, new_row: bool, expected: Any
) -> None:
    assert merge_field(sheet, store, NO_BASE, new_row=new_row, stood_in=False) == expected


def test_a_valid_value_typed_over_an_invalid_cell_is_the_persons_edit() -> None:
    # the base only stood in for a cell that was invalid at the last sync (the store's value)
    assert (
        merge_field("fixed@x.example", "old@x.example", "old@x.example", new_row=False, stood_in=True)
        == "sheet"
    )
    assert merge_field("fixed@x.example", "new@x.example", "old@x.example", new_row=False, stood_in=True) == (
        Conflicting("old@x.example", "invalid")
    )
