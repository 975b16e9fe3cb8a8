"""The Excel adapter: an .xlsx workbook as a :class:`~crmkit.sync.source.SheetBook`.

Reading uses python-calamine (about ten times faster than openpyxl here).
Writing patches only the changed sheets inside the .xlsx and copies every
other part byte for byte (:mod:`crmkit.sync.xlsx_patch`); where it can't
(a new sheet, say), openpyxl loads and saves the whole workbook. Either way
other sheets, column widths, number formats, styles, data validation and
formulas in cells crmkit does not own survive. The new file is written beside the old one and renamed
over it in one step: a killed sync leaves the old workbook or the new one.

Text crmkit writes is always stored as text: a name or subject beginning with
``=``, ``+``, ``-`` or ``@`` never becomes a formula.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
from collections.abc import Callable, Iterable
from copy import copy
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from openpyxl import Workbook, load_workbook
from openpyxl.styles import Font, PatternFill
from openpyxl.worksheet.worksheet import Worksheet
from python_calamine import CalamineError, CalamineWorkbook

from crmkit.errors import CrmkitError
from crmkit.files import fsync_dir, remove_temp_leftovers, temp_beside
from crmkit.perf import paused_gc
from crmkit.project import shipped_workbook
from crmkit.sync.model import SheetChanges, SheetRow, SheetTable
from crmkit.sync.source import BookChangedError
from crmkit.sync.values import as_read
from crmkit.sync.xlsx_patch import patch_workbook
from crmkit.workbooks import TEMPLATE_NAME

__all__ = ["ExcelBook"]

_FORMULA_STARTS = ("=", "+", "-", "@")
_HEADER_FONT = Font(bold=True, color="FFFFFF")
_HEADER_FILL = PatternFill("solid", fgColor="1F4E78")


def _file_hash(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except FileNotFoundError:
        return None


def _clean(value: Any) -> Any:
    return None if value == "" else value


class ExcelBook:
    """An .xlsx file. A missing file is created from crmkit's template on first write."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._read_hash: str | None = None

    @property
    def identity(self) -> str:
        return f"xlsx:{self.path.resolve()}"

    @property
    def display_name(self) -> str:
        return self.path.name

    def fingerprint(self) -> str | None:
        return _file_hash(self.path)

    def check_writable(self) -> None:
        lock = self.path.with_name("~$" + self.path.name)
        if lock.exists():
            raise CrmkitError(
                f"{self.path} is open in Excel or LibreOffice ({lock.name} is beside it); "
                "close it and sync again"
            )
        if self.path.suffix.lower() not in (".xlsx", ".xlsm"):
            raise CrmkitError(f"{self.path}: only .xlsx workbooks can be synced")

    def read_back(self, value: Any) -> Any:
        return as_read(value)

    def read(self) -> dict[str, SheetTable]:
        remove_temp_leftovers(self.path)  # syncs of a store run one at a time
        self._read_hash = self.fingerprint()
        if self._read_hash is None:
            return {}
        try:
            book = CalamineWorkbook.from_path(str(self.path))
        except (CalamineError, OSError, ValueError) as exc:
            raise CrmkitError(f"cannot read {self.path} as an Excel workbook: {exc}") from None
        with paused_gc():
            return {name: self._read_sheet(book, name) for name in book.sheet_names}

    @staticmethod
    def _read_sheet(book: CalamineWorkbook, name: str) -> SheetTable:
        sheet = book.get_sheet_by_name(name)
        headers: list[str] = []
        rows: list[SheetRow] = []
        # skip_empty_area=False: rows and columns are counted from A1.
        for offset, raw in enumerate(sheet.to_python(skip_empty_area=False)):
            number = offset + 1
            cells = [_clean(v) for v in raw]
            if number == 1:
                headers = ["" if c is None else str(c) for c in cells]
            elif any(c is not None for c in cells):
                rows.append(SheetRow(number, cells))
        return SheetTable(name, headers, rows)

    def write(self, changes: list[SheetChanges]) -> None:
        if self.fingerprint() != self._read_hash:
            raise BookChangedError(
                f"{self.path} changed while it was being synced; nothing was written to it. Run sync again."
            )
        # Fast path: patch only the changed sheets inside the file, copying the
        # rest byte for byte; openpyxl (load and save everything) when it can't.
        if self.path.exists() and self._replace_with(lambda tmp: patch_workbook(self.path, tmp, changes)):
            return
        source = self.path if self.path.exists() else shipped_workbook(TEMPLATE_NAME)
        try:
            wb = load_workbook(source)
        except Exception as exc:  # openpyxl raises many kinds for a damaged file
            raise CrmkitError(f"cannot open {source} to write it: {exc}") from None
        titles = {ws.title.strip().casefold(): ws for ws in wb.worksheets}
        for change in changes:
            ws = titles.get(change.title.strip().casefold())
            if ws is None:
                ws = self._create_sheet(wb, change.title, change.create_headers or [])
                titles[change.title.casefold()] = ws
            elif change.create_headers and ws.max_row <= 1 and ws.max_column <= 1 and ws["A1"].value is None:
                self._write_headers(ws, change.create_headers)
            for cell in change.cells:
                _put(ws, cell.row, cell.column + 1, cell.value)
            if change.append:
                self._append(ws, change.append)
        self._save(wb)

    # -- writing helpers ----------------------------------------------------

    @staticmethod
    def _write_headers(ws: Worksheet, headers: list[str]) -> None:
        for index, header in enumerate(headers, start=1):
            cell = ws.cell(1, index, header)
            cell.font = _HEADER_FONT
            cell.fill = _HEADER_FILL
        ws.freeze_panes = "A2"

    def _create_sheet(self, wb: Workbook, title: str, headers: list[str]) -> Worksheet:
        ws = wb.create_sheet(title)
        self._write_headers(ws, headers)
        return ws

    @staticmethod
    def _append(ws: Worksheet, rows: Iterable[list[Any]]) -> None:
        last = _last_data_row(ws)
        template_row = last if last >= 2 else None
        new_last = last
        for offset, values in enumerate(rows, start=1):
            row = last + offset
            for index, value in enumerate(values, start=1):
                if value is None:
                    continue
                cell = ws.cell(row, index)
                if template_row is not None:
                    above = ws.cell(template_row, index)
                    if above.has_style:
                        cell._style = copy(above._style)  # the formats people set on their rows
                _put(ws, row, index, value)
            new_last = row
        _extend_ranges(ws, last, new_last)

    def _save(self, wb: Workbook) -> None:
        def save(tmp: Path) -> bool:
            wb.save(tmp)
            return True

        self._replace_with(save)

    def _replace_with(self, make: Callable[[Path], bool]) -> bool:
        """Have ``make`` write a temporary file, then put it in the workbook's place atomically.

        ``make`` returns False when it wrote nothing; the workbook is left as it was.
        """
        tmp = temp_beside(self.path)
        try:
            if not make(tmp):
                return False
            with open(tmp, "rb+") as fh:
                os.fsync(fh.fileno())
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, os.stat(self.path).st_mode & 0o777)
            os.replace(tmp, self.path)
        except OSError as exc:
            raise CrmkitError(f"cannot write {self.path}: {exc.strerror}") from None
        finally:
            tmp.unlink(missing_ok=True)
        fsync_dir(self.path.parent)
        return True


def _put(ws: Worksheet, row: int, column: int, value: Any) -> None:
    cell = ws.cell(row, column)
    if isinstance(value, Decimal):
        value = float(value) if value != value.to_integral_value() else int(value)
    cell.value = value
    if isinstance(value, str):
        # Data from outside is text, whatever it starts with.
        cell.data_type = "s"
        if value.startswith(_FORMULA_STARTS):
            cell.quotePrefix = True
    elif isinstance(value, datetime):
        cell.number_format = "yyyy-mm-dd hh:mm"
    elif isinstance(value, date) and cell.number_format == "General":
        cell.number_format = "yyyy-mm-dd"


def _last_data_row(ws: Worksheet) -> int:
    row = ws.max_row
    while row > 1 and all(c.value is None for c in ws[row]):
        row -= 1
    return row


def _extend_ranges(ws: Worksheet, old_last: int, new_last: int) -> None:
    """Grow Excel tables and the auto-filter that ended at the old last row."""
    if new_last <= old_last:
        return
    for table in ws.tables.values():
        start, _, end = table.ref.partition(":")
        letters = "".join(ch for ch in end if ch.isalpha())
        digits = "".join(ch for ch in end if ch.isdigit())
        if digits and int(digits) == old_last:
            table.ref = f"{start}:{letters}{new_last}"
            if table.autoFilter is not None:
                table.autoFilter.ref = table.ref
    ref = ws.auto_filter.ref
    if ref and ":" in ref:
        start, _, end = ref.partition(":")
        letters = "".join(ch for ch in end if ch.isalpha())
        digits = "".join(ch for ch in end if ch.isdigit())
        if digits and int(digits) <= old_last:
            ws.auto_filter.ref = f"{start}:{letters}{new_last}"
