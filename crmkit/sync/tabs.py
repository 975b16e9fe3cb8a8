"""Which tab of a workbook is crmkit's sheet, and whether crmkit may sync it.

A tab that is not a crmkit table (a chart, a report with its headers lower down, a
person's own list under a name crmkit uses) is refused with a reason and left alone:
writing crmkit's rows into it would ruin it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from crmkit.records.fields import Field
from crmkit.sync.model import SheetTable

__all__ = ["blank_tab", "find_tab", "tab_refusal"]

#: What a tab that is not a worksheet is, for a person.
TAB_KINDS = {
    "chartsheet": "a chart sheet",
    "dialogsheet": "a dialog sheet",
    "macrosheet": "a macro sheet",
    "datasourcesheet": "a data source sheet",
    "unlinked": "a tab with no sheet behind it",
}


def find_tab(tables: dict[str, SheetTable], title: str) -> SheetTable | None:
    """The tab named ``title``, whatever its case or spaces around it: people retype tab names."""
    wanted = title.strip().casefold()
    for name, table in tables.items():
        if name.strip().casefold() == wanted:
            return table
    return None


def blank_tab(table: SheetTable) -> bool:
    """A worksheet without a single cell: crmkit may fill it in as if it were missing."""
    return not table.rows and not any(h is not None and str(h).strip() for h in table.headers)


#: How far down a tab to look for a header row below row 1.
HEADER_SEARCH_ROWS = 10


def tab_refusal(
    title: str, table: SheetTable, headers: Sequence[Field], known: Callable[[str], Any]
) -> str | None:
    """Why the tab ``table`` must be left alone, not synced as crmkit's sheet ``title``; None if it may.

    Only a worksheet can hold crmkit's table, and only one whose row 1 has a header
    crmkit knows for that sheet (``known`` maps a header to its field, or None), or
    one without a single cell, which crmkit fills in. ``headers`` are the sheet's
    columns; the reason names the first few.
    """
    key = f'"{title}"' if " " in title else title
    setting = f'[sheet_names] {key} = "CRM {title}" in crmkit.toml'
    if table.kind != "worksheet":
        what = TAB_KINDS.get(table.kind, f"a {table.kind}")
        return (
            f"the tab {table.title!r} is {what}, not a table crmkit can sync, so nothing is written to it; "
            f"to sync {title} with another tab, name it with {setting}"
        )
    labels = [str(h).strip() for h in table.headers if h is not None and str(h).strip()]
    if not labels and not table.rows:
        return None

    def recognised(cells: Sequence[Any]) -> int:
        return sum(1 for c in cells if isinstance(c, str) and c.strip() and known(c.strip()) is not None)

    in_row_1 = recognised(labels)
    # A word in row 1 that happens to be a header ("Account: Acme") is not a header row when
    # a row below holds more of them: the person's table starts there.
    lower = next(
        (row for row in table.rows[:HEADER_SEARCH_ROWS] if recognised(row.cells) > max(in_row_1, 1)),
        None,
    )
    if in_row_1 and lower is None:
        return None
    if lower is not None and in_row_1:
        return (
            f"the headers of the tab {table.title!r} seem to be on row {lower.number}, not row 1, so it "
            f"is not a crmkit table and nothing is written to it; put the headers in row 1, or sync "
            f"{title} with another tab: {setting}"
        )
    examples = ", ".join(f.label for f in headers[:3])
    return (
        f"row 1 of the tab {table.title!r} holds none of crmkit's {title} headers ({examples}, …), so it "
        f"is not a crmkit table and nothing is written to it; put the headers in row 1, or sync {title} "
        f"with another tab: {setting}"
    )
