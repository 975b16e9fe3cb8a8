"""A workbook a person edits, as the sync tests see it, whichever adapter syncs it.

Tests written against :class:`Book` run unchanged against every kind of workbook crmkit syncs:

* ``"xlsx"``: an .xlsx file; a person's edits are made with openpyxl, the file saved each time
  (values are stored as given: a ``str`` stays text even if Excel would read it as a number or
  a date, so type numbers and dates as ``int``/``float``/``date``);
* ``"gsheet"``: a spreadsheet on the local Sheets API stand-in; a person's edits are made with
  gspread as typing in the browser does (``USER_ENTERED``: dates as ISO text, numbers as numbers,
  ``=...`` as a formula), and the sheets are read back through the stand-in's test controls.

Each :meth:`Book.open` gives a fresh :class:`~crmkit.sync.SheetBook`, as a new cron run would.

Values read back (:meth:`Book.values`, :meth:`Book.rows`, :meth:`Book.cell`) are what the cell
holds: text as ``str``; numbers as ``int`` or ``float`` (openpyxl and the stand-in may differ,
so compare with ``==``: ``790 == 790.0``); a date as a ``date`` (openpyxl hands over a midnight
``datetime``, the stand-in a ``date``; both become the ``date``); a date and time as a
``datetime``; a formula as what it computes to (the stand-in) or its text (openpyxl: use
:meth:`Book.is_text` to tell text from a formula). Empty cells are ``None``.
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from datetime import date, datetime, time
from pathlib import Path
from typing import Any, ClassVar

from openpyxl import Workbook, load_workbook

from crmkit.config import SheetsSettings
from crmkit.store import Store
from crmkit.sync import GSHEET_PREFIX, SheetBook, SyncReport, open_book, sync_book
from crmkit.sync.excel import ExcelBook
from crmkit.sync.model import column_letter
from crmkit.testing.sheets_standin import Formula, SheetsStandIn, gspread_client

__all__ = ["KINDS", "Book", "Books", "GoogleBook", "XlsxBook", "normalise", "run_sync"]

KINDS = ("xlsx", "gsheet")

_REF = re.compile(r"^([A-Z]{1,3})([1-9][0-9]*)$")
_WRITES = ("POST", "PUT", "PATCH", "DELETE")


def run_sync(store: Store, book: Book | SheetBook, **kwargs: Any) -> SyncReport:
    """One sync of ``book`` (a test's workbook, or an adapter already opened) with ``store``."""
    return sync_book(store, book.open() if isinstance(book, Book) else book, **kwargs)


def normalise(value: Any) -> Any:
    """One cell value as both kinds hand it back: a midnight ``datetime`` is the ``date``."""
    if isinstance(value, datetime) and value.time() == time(0) and value.tzinfo is None:
        return value.date()
    return value


def split_ref(ref: str) -> tuple[int, int]:
    """``"E2"`` -> (row 2, column index 4): 1-based row, 0-based column."""
    match = _REF.match(ref)
    if not match:
        raise ValueError(f"not a cell reference: {ref!r}")
    col = 0
    for ch in match.group(1):
        col = col * 26 + ord(ch) - 64
    return int(match.group(2)), col - 1


def typed(value: Any) -> Any:
    """What a person types into a cell for ``value`` (Google Sheets, USER_ENTERED)."""
    if value is None:
        return ""
    if isinstance(value, datetime):
        return value.isoformat(sep=" ", timespec="seconds")
    if isinstance(value, date):
        return value.isoformat()
    return value


class Book(ABC):
    """One workbook of the tests: what a person sees and does in it, and how crmkit opens it."""

    kind: ClassVar[str]
    #: Whether the adapter can tell cheaply that nothing changed (SheetBook.fingerprint), so
    #: that an unchanged sync is skipped (SyncReport.skipped_unchanged).
    fingerprinted: ClassVar[bool]

    #: How crmkit's reports name the workbook (SheetBook.display_name).
    display_name: str
    #: The ``crmkit sync`` argument naming it.
    target: str
    #: Environment for CliRunner.invoke(..., env=) so that the CLI reaches the workbook.
    cli_env: dict[str, str | None]

    @abstractmethod
    def open(self) -> SheetBook:
        """A fresh adapter for one sync, as a new cron run makes."""

    @abstractmethod
    def values(self, title: str) -> list[list[Any]]:
        """Every row of the sheet from row 1, padded to one width (see the module docstring)."""

    @abstractmethod
    def cell(self, title: str, ref: str) -> Any:
        """One cell's value (``ref`` like ``"E2"``); None when empty or outside the data."""

    @abstractmethod
    def edit(self, title: str, changes: dict[str, Any]) -> None:
        """A person types these values into these cells (``{"E2": "CEO"}``; None empties)."""

    @abstractmethod
    def delete_rows(self, title: str, index: int, amount: int = 1) -> None:
        """A person deletes ``amount`` whole rows from row ``index`` (1-based); rows below move up."""

    @abstractmethod
    def append_row(self, title: str, values: list[Any]) -> None:
        """A person types a new row under the last one (None leaves a cell empty)."""

    @abstractmethod
    def titles(self) -> list[str]:
        """The sheets' titles, in order."""

    @abstractmethod
    def is_text(self, title: str, ref: str) -> bool:
        """The cell holds text: not a formula, not a number."""

    @abstractmethod
    def is_number(self, title: str, ref: str) -> bool:
        """The cell holds a plain number: not text, not a date."""

    @abstractmethod
    def is_date(self, title: str, ref: str) -> bool:
        """The cell holds a real date (a number the workbook shows as a date), not text."""

    @abstractmethod
    def mark(self) -> Any:
        """A point in time for :meth:`writes_since`."""

    @abstractmethod
    def writes_since(self, mark: Any) -> list[str]:
        """What was written to the workbook since ``mark`` (empty: nothing)."""

    def rows(self, title: str) -> list[dict[str, Any]]:
        """The data rows under the header row as header -> value; empty rows are skipped."""
        values = self.values(title)
        if not values:
            return []
        headers = ["" if h is None else str(h) for h in values[0]]
        return [dict(zip(headers, row, strict=True)) for row in values[1:] if any(v is not None for v in row)]

    def ref(self, title: str, header: str, row: int) -> str:
        """The reference of the cell in ``row`` under the header ``header`` (``"G2"``)."""
        headers = self.values(title)[0]
        return f"{column_letter(headers.index(header))}{row}"


def _padded(rows: list[list[Any]]) -> list[list[Any]]:
    width = max((len(r) for r in rows), default=0)
    return [[normalise(v) for v in r] + [None] * (width - len(r)) for r in rows]


class XlsxBook(Book):
    """An .xlsx file, edited with openpyxl."""

    kind = "xlsx"
    fingerprinted = True

    def __init__(self, path: Path) -> None:
        self.path = path
        self.display_name = path.name
        self.target = str(path)
        self.cli_env = {}

    def open(self) -> SheetBook:
        return ExcelBook(self.path)

    def values(self, title: str) -> list[list[Any]]:
        ws = load_workbook(self.path)[title]
        return _padded([list(r) for r in ws.iter_rows(values_only=True)])

    def cell(self, title: str, ref: str) -> Any:
        return normalise(load_workbook(self.path)[title][ref].value)

    def edit(self, title: str, changes: dict[str, Any]) -> None:
        wb = load_workbook(self.path)
        for ref, value in changes.items():
            wb[title][ref] = value
        wb.save(self.path)

    def delete_rows(self, title: str, index: int, amount: int = 1) -> None:
        wb = load_workbook(self.path)
        wb[title].delete_rows(index, amount)
        wb.save(self.path)

    def append_row(self, title: str, values: list[Any]) -> None:
        wb = load_workbook(self.path)
        wb[title].append(values)
        wb.save(self.path)

    def titles(self) -> list[str]:
        return list(load_workbook(self.path).sheetnames)

    def is_text(self, title: str, ref: str) -> bool:
        return load_workbook(self.path)[title][ref].data_type == "s"

    def is_number(self, title: str, ref: str) -> bool:
        cell = load_workbook(self.path)[title][ref]
        return cell.data_type == "n" and not cell.is_date and isinstance(cell.value, int | float)

    def is_date(self, title: str, ref: str) -> bool:
        return isinstance(load_workbook(self.path)[title][ref].value, datetime)

    def mark(self) -> Any:
        if not self.path.exists():
            return None
        return self.path.read_bytes(), self.path.stat().st_mtime_ns

    def writes_since(self, mark: Any) -> list[str]:
        return [] if self.mark() == mark else [f"{self.path.name} was rewritten"]


class GoogleBook(Book):
    """A spreadsheet on the Sheets API stand-in, edited with gspread as a person in the browser."""

    kind = "gsheet"
    fingerprinted = False  # the Sheets API has no cheap revision: every sync reads

    def __init__(self, standin: SheetsStandIn, spreadsheet_id: str) -> None:
        self.standin = standin
        self.spreadsheet_id = spreadsheet_id
        self.display_name = self.target = GSHEET_PREFIX + spreadsheet_id
        self.cli_env = {"CRMKIT_SHEETS_ENDPOINT": standin.base_url, "GOOGLE_APPLICATION_CREDENTIALS": None}
        self._client: Any = None

    def open(self) -> SheetBook:
        # short retries: a stand-in answering 5xx is a failing test, not a rate limit to wait out
        settings = SheetsSettings(endpoint=self.standin.base_url, timeout=10, retry_deadline=2)
        return open_book(self.target, sheets=settings)

    def _worksheet(self, title: str) -> Any:
        if self._client is None:
            self._client = gspread_client(self.standin.base_url)
        return self._client.open_by_key(self.spreadsheet_id).worksheet(title)

    def _stored(self, title: str, ref: str) -> Any:
        row, col = split_ref(ref)
        rows = self.standin.sheet_values(self.spreadsheet_id, title)
        return rows[row - 1][col] if row <= len(rows) and col < len(rows[row - 1]) else None

    def values(self, title: str) -> list[list[Any]]:
        return _padded(self.standin.cell_values(self.spreadsheet_id, title))

    def cell(self, title: str, ref: str) -> Any:
        row, col = split_ref(ref)
        rows = self.standin.cell_values(self.spreadsheet_id, title)
        value = rows[row - 1][col] if row <= len(rows) and col < len(rows[row - 1]) else None
        return normalise(value)

    def edit(self, title: str, changes: dict[str, Any]) -> None:
        data = [{"range": ref, "values": [[typed(value)]]} for ref, value in changes.items()]
        self._worksheet(title).batch_update(data, value_input_option="USER_ENTERED")

    def delete_rows(self, title: str, index: int, amount: int = 1) -> None:
        self._worksheet(title).delete_rows(index, index + amount - 1)

    def append_row(self, title: str, values: list[Any]) -> None:
        self._worksheet(title).append_row([typed(v) for v in values], value_input_option="USER_ENTERED")

    def titles(self) -> list[str]:
        return self.standin.sheet_titles(self.spreadsheet_id)

    def _number_format_type(self, title: str, ref: str) -> str | None:
        row, col = split_ref(ref)
        number_format = self.standin.cell_format(self.spreadsheet_id, title, row, col + 1)
        return None if number_format is None else number_format.get("type")

    def is_text(self, title: str, ref: str) -> bool:
        stored = self._stored(title, ref)
        return isinstance(stored, str) and not isinstance(stored, Formula)

    def is_number(self, title: str, ref: str) -> bool:
        stored = self._stored(title, ref)
        return (
            isinstance(stored, int | float)
            and not isinstance(stored, bool)
            and self._number_format_type(title, ref) not in ("DATE", "DATE_TIME", "TIME")
        )

    def is_date(self, title: str, ref: str) -> bool:
        stored = self._stored(title, ref)
        return (
            isinstance(stored, int | float)
            and not isinstance(stored, bool)
            and self._number_format_type(title, ref) == "DATE"
        )

    def mark(self) -> Any:
        return len(self.standin.requests_log)

    def writes_since(self, mark: Any) -> list[str]:
        prefix = f"/v4/spreadsheets/{self.spreadsheet_id}"
        return [
            f"{method} {path}"
            for method, path, _ in self.standin.requests_log[mark:]
            if method in _WRITES and path.startswith(prefix)
        ]


class Books:
    """Makes the test's workbooks of one kind (``"xlsx"`` in ``folder``, ``"gsheet"`` on ``standin``)."""

    def __init__(self, kind: str, folder: Path, standin: SheetsStandIn | None = None) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind of workbook: {kind!r}")
        if kind == "gsheet" and standin is None:
            raise ValueError("a gsheet workbook needs the Sheets stand-in")
        self.kind = kind
        self.folder = folder
        self.standin = standin

    def make(self, sheets: dict[str, list[list[Any]]], name: str = "book") -> Book:
        """A workbook holding these sheets (rows of values from A1; None is an empty cell).

        ``name`` names the .xlsx file (``name.xlsx``) or the spreadsheet's title."""
        if self.kind == "gsheet":
            assert self.standin is not None
            return GoogleBook(self.standin, self.standin.create_spreadsheet(name, sheets))
        path = self.folder / f"{name}.xlsx"
        if path.exists():
            raise FileExistsError(path)
        wb = Workbook()
        assert wb.active is not None
        wb.remove(wb.active)
        for title, rows in sheets.items():
            ws = wb.create_sheet(title)
            for row in rows:
                ws.append(row)
        wb.save(path)
        return XlsxBook(path)
