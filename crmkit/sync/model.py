"""The data the sync engine and its adapters exchange, and what a sync reports.

Adapters (Excel, Google Sheets) only move :class:`SheetTable` in and
:class:`SheetChanges` out; they know nothing of records, merges or the store.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "CellChange",
    "Conflict",
    "Formatted",
    "InvalidCell",
    "SheetChanges",
    "SheetRow",
    "SheetSummary",
    "SheetTable",
    "SyncReport",
    "column_letter",
]


def column_letter(index: int) -> str:
    """0 -> ``A``, 26 -> ``AA``: how people name a column."""
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


@dataclass
class SheetRow:
    """One data row as read: its 1-based sheet row number and its cells, by column."""

    number: int
    cells: list[Any]

    def cell(self, index: int) -> Any:
        return self.cells[index] if index < len(self.cells) else None


@dataclass
class SheetTable:
    """A sheet as read: row 1's headers and the data rows below (empty rows left out).

    ``serial_dates`` is set by readers that hand date cells over as their serial
    numbers (Google Sheets' unformatted values): numbers in date columns are dates.
    """

    title: str
    headers: list[str]
    rows: list[SheetRow] = field(default_factory=list)
    serial_dates: bool = False
    #: "worksheet", or what else a tab of that name is ("chartsheet", "dialogsheet",
    #: "macrosheet"): crmkit syncs worksheets only and never writes into anything else.
    kind: str = "worksheet"


@dataclass(frozen=True)
class Formatted:
    """A value to write with the number format its cell must show.

    Money is written this way in its row's currency (no decimals for JPY or VND):
    adapters give the cell this format, keeping the rest of its look. Anywhere a
    plain value may go (:class:`CellChange`, an appended row), this may go too.
    """

    value: Any
    number_format: str


@dataclass
class CellChange:
    """Write ``value`` into ``row`` (1-based) at column ``column`` (0-based).

    Adapters store every ``str`` value as plain text, never as a formula.
    """

    row: int
    column: int
    value: Any


@dataclass
class SheetChanges:
    """Everything to write into one sheet.

    ``create_headers`` is set when the sheet does not exist yet: the adapter
    creates it with these headers. ``cells`` change existing rows; ``append``
    adds rows after the last one, each a list of values by column.
    """

    title: str
    create_headers: list[str] | None = None
    cells: list[CellChange] = field(default_factory=list)
    append: list[list[Any]] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.create_headers or self.cells or self.append)


@dataclass
class Conflict:
    """A field changed on both sides to different values since the last sync.

    ``base`` says what ``base_value`` is: ``"agreed"``, the value both sides agreed
    on at the last sync (each side changed it from there); ``"invalid"``, the
    store's value at the last sync, when the sheet's cell was invalid and the
    store's value only stood in for it; ``"none"``, no earlier sync of this row
    and record to compare with (``base_value`` is then None).
    """

    sheet: str
    row: int
    record_id: str
    field: str
    sheet_value: Any
    store_value: Any
    resolution: str  # "none" (fail), "sheet" or "store": which side won
    base_value: Any = None
    base: str = "none"  # "agreed", "invalid" or "none"

    def as_json(self) -> dict[str, Any]:
        return {
            "sheet": self.sheet,
            "row": self.row,
            "id": self.record_id,
            "field": self.field,
            "sheet_value": self.sheet_value,
            "store_value": self.store_value,
            "resolution": self.resolution,
            "base_value": self.base_value,
            "base": self.base,
        }

    def __str__(self) -> str:
        sheet, store, base = _shown(self.sheet_value), _shown(self.store_value), _shown(self.base_value)
        if self.base == "agreed":
            sides = f"sheet changed {base} → {sheet}, store changed {base} → {store}"
        elif self.base == "invalid":
            sides = (
                f"sheet now has {sheet} (its cell was invalid at the last sync), "
                f"store changed {base} → {store}"
            )
        else:
            sides = f"sheet has {sheet}, store has {store}, no earlier sync to compare"
        kept = {
            "none": "neither kept (use --on-conflict sheet|store)",
            "sheet": "sheet value kept",
            "store": "store value kept",
        }
        return (
            f"{self.sheet} row {self.row} ({self.record_id}) {self.field}: {sides}; {kept[self.resolution]}"
        )


def _shown(value: Any) -> str:
    return "(empty)" if value is None else repr(value)


@dataclass
class InvalidCell:
    """A cell whose value does not fit its column; it is left as typed and not synced."""

    sheet: str
    row: int
    column: str  # the letter
    header: str
    value: Any
    problem: str

    def as_json(self) -> dict[str, Any]:
        return {
            "sheet": self.sheet,
            "row": self.row,
            "column": self.column,
            "header": self.header,
            "value": self.value
            if isinstance(self.value, (str, int, float, bool)) or self.value is None
            else str(self.value),
            "problem": self.problem,
        }

    def __str__(self) -> str:
        return f"{self.sheet}!{self.column}{self.row} ({self.header}) {self.value!r}: {self.problem}"


@dataclass
class SheetSummary:
    """What one sheet's sync did (or, in a dry run, would do), on each side."""

    sheet: str
    store_added: list[str] = field(default_factory=list)
    store_updated: list[str] = field(default_factory=list)
    store_archived: list[str] = field(default_factory=list)
    sheet_added: list[str] = field(default_factory=list)
    sheet_updated: list[str] = field(default_factory=list)
    ids_written: int = 0
    conflicts: list[Conflict] = field(default_factory=list)
    invalid: list[InvalidCell] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # need a person, like invalid cells

    @property
    def changes(self) -> int:
        return (
            len(self.store_added)
            + len(self.store_updated)
            + len(self.store_archived)
            + len(self.sheet_added)
            + len(self.sheet_updated)
            + self.ids_written
        )

    def as_json(self) -> dict[str, Any]:
        return {
            "sheet": self.sheet,
            "store": {
                "added": self.store_added,
                "updated": self.store_updated,
                "archived": self.store_archived,
            },
            "sheet_side": {
                "added": self.sheet_added,
                "updated": self.sheet_updated,
                "ids_written": self.ids_written,
            },
            "conflicts": [c.as_json() for c in self.conflicts],
            "invalid": [i.as_json() for i in self.invalid],
            "notes": self.notes,
            "problems": self.problems,
        }


@dataclass
class SyncReport:
    """The whole sync: per sheet, plus whether anything was written."""

    book: str
    dry_run: bool
    sheets: list[SheetSummary] = field(default_factory=list)
    book_written: bool = False
    skipped_unchanged: bool = False

    @property
    def changes(self) -> int:
        return sum(s.changes for s in self.sheets)

    @property
    def conflicts(self) -> list[Conflict]:
        return [c for s in self.sheets for c in s.conflicts]

    @property
    def invalid(self) -> list[InvalidCell]:
        return [i for s in self.sheets for i in s.invalid]

    @property
    def needs_attention(self) -> bool:
        """Unresolved conflicts or invalid cells: a person must look (exit code 3)."""
        unresolved = any(c.resolution == "none" for c in self.conflicts)
        return unresolved or bool(self.invalid) or any(s.problems for s in self.sheets)

    def as_json(self) -> dict[str, Any]:
        return {
            "book": self.book,
            "dry_run": self.dry_run,
            "changes": self.changes,
            "book_written": self.book_written,
            "needs_attention": self.needs_attention,
            "sheets": [s.as_json() for s in self.sheets],
        }
