"""The Excel adapter: an .xlsx workbook as a :class:`~crmkit.sync.source.SheetBook`.

Reading uses python-calamine (about ten times faster than openpyxl here), which
needs no understanding of the rest of the workbook. Writing is done at the part
level (:mod:`crmkit.xlsx`): crmkit changes only its own sheets' parts, a few
entries of the workbook's own parts, and appends to styles.xml; every other
part of the file (pictures, macros, controls, pivot tables, printer settings,
other sheets) is copied byte for byte. A sheet crmkit adds is built alone with
openpyxl and grafted in. The new file is written beside the old one and moved
over it in one step (through a symlink to its target): a killed sync leaves the
old workbook or the new one.

Text crmkit writes is always stored as text: a name or subject beginning with
``=``, ``+``, ``-`` or ``@`` never becomes a formula.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import zipfile
from pathlib import Path
from typing import Any
from xml.sax.saxutils import unescape

from openpyxl import Workbook
from openpyxl.styles import Font, PatternFill
from python_calamine import CalamineError, CalamineWorkbook, SheetTypeEnum

from crmkit.errors import CrmkitError
from crmkit.files import remove_temp_leftovers, replace_file
from crmkit.perf import paused_gc
from crmkit.project import shipped_workbook
from crmkit.sync.model import CellChange, SheetChanges, SheetRow, SheetTable
from crmkit.sync.source import BookChangedError
from crmkit.sync.values import as_read
from crmkit.workbooks import SHEETS, TEMPLATE_NAME, write_sheet
from crmkit.xlsx import Package, Styles, WorkbookError, graft_sheet, patch_sheets, sheet_entries
from crmkit.xlsx.package import attrs

__all__ = ["ExcelBook", "write_changes"]

_HEADER_FONT = Font(bold=True, color="FFFFFF")
_HEADER_FILL = PatternFill("solid", fgColor="1F4E78")
_KINDS = (
    (SheetTypeEnum.WorkSheet, "worksheet"),
    (SheetTypeEnum.ChartSheet, "chartsheet"),
    (SheetTypeEnum.DialogSheet, "dialogsheet"),
    (SheetTypeEnum.MacroSheet, "macrosheet"),
)


def _kind(typ: Any) -> str:
    return next((name for known, name in _KINDS if typ == known), "worksheet")


def _file_hash(path: Path) -> str | None:
    try:
        with open(path, "rb") as fh:
            return hashlib.file_digest(fh, "sha256").hexdigest()
    except (FileNotFoundError, IsADirectoryError):
        return None


def _clean(value: Any) -> Any:
    return None if value == "" else value


class ExcelBook:
    """An .xlsx (or .xlsm) file.

    A missing file is an error, unless ``create`` is set: then the first write
    makes it from crmkit's template workbook.
    """

    def __init__(self, path: str | os.PathLike[str], *, create: bool = False) -> None:
        self.path = Path(path)
        self.create = create
        self._read_hash: str | None = None

    @property
    def identity(self) -> str:
        return f"xlsx:{self.path.resolve()}"

    @property
    def display_name(self) -> str:
        return self.path.name

    def fingerprint(self) -> str | None:
        return _file_hash(self.path)

    def _check_path(self) -> None:
        if self.path.is_dir():
            raise CrmkitError(f"{self.path} is a folder, not a workbook: name an .xlsx file")
        if self.path.suffix.lower() not in (".xlsx", ".xlsm"):
            raise CrmkitError(f"{self.path}: only .xlsx and .xlsm workbooks can be synced")
        if not self.path.exists() and not self.create:
            raise CrmkitError(
                f"{self.path} does not exist; check the name, or add --create to start a new workbook there"
            )

    def check_writable(self) -> None:
        self._check_path()
        lock = self.path.with_name("~$" + self.path.name)
        if lock.exists():
            raise CrmkitError(
                f"{self.path} is open in Excel or LibreOffice ({lock.name} is beside it); "
                "close it and sync again"
            )

    def read_back(self, value: Any) -> Any:
        return as_read(value)

    def read(self) -> dict[str, SheetTable]:
        self._check_path()
        real = Path(os.path.realpath(self.path))
        remove_temp_leftovers(real)  # syncs of a store run one at a time
        self._read_hash = self.fingerprint()
        if self._read_hash is None:
            return {}
        try:
            try:
                book = CalamineWorkbook.from_path(str(real))
                left_out: dict[str, str] = {}
            except CalamineError as exc:
                if not any(known in str(exc) for known in ("Relationship", "Unrecognized sheet")):
                    raise
                book, left_out = _readable_copy(real)
            kinds = {m.name: _kind(m.typ) for m in book.sheets_metadata}
            with paused_gc():
                tables = {
                    name: self._read_sheet(book, name, kinds.get(name, "worksheet"))
                    for name in book.sheet_names
                }
        except (CalamineError, OSError, ValueError, zipfile.BadZipFile, WorkbookError) as exc:
            raise CrmkitError(f"cannot read {self.path} as an Excel workbook: {_one_line(exc)}") from None
        for name, kind in left_out.items():  # nothing crmkit reads, and never written into
            tables[name] = SheetTable(name, [], [], kind=kind)
        return tables

    @staticmethod
    def _read_sheet(book: CalamineWorkbook, name: str, kind: str) -> SheetTable:
        if kind != "worksheet":
            return SheetTable(name, [], [], kind=kind)
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
        self._check_path()
        source = self.path if self.path.exists() else shipped_workbook(TEMPLATE_NAME)
        try:
            replace_file(self.path, lambda tmp: write_changes(source, tmp, changes))
        except WorkbookError as exc:
            raise WorkbookError(f"{exc}; {self.path} was left as it was") from None
        except OSError as exc:
            raise CrmkitError(f"cannot write {self.path}: {exc.strerror or exc}") from None


def write_changes(source: Path, target: Path, changes: list[SheetChanges]) -> None:
    """Write workbook ``source`` with ``changes`` made to ``target``, at the part level.

    Sheets that are missing are added in crmkit's layout; every part crmkit does
    not own is copied byte for byte. Raises :class:`WorkbookError` (nothing
    written) when a change cannot be made safely.
    """
    with Package(Path(source)) as package:
        _apply(package, changes)
        package.write(Path(target))


def _readable_copy(path: Path) -> tuple[CalamineWorkbook, dict[str, str]]:
    """The workbook read from a copy calamine accepts, and the tabs left out of it, with their kinds.

    Excel and LibreOffice open workbooks calamine refuses whole: a tab that names
    no part (no ``r:id``; opened as an empty sheet), an Excel 4.0 macro sheet, a
    sheet ``state`` outside the schema. calamine reads a copy (in memory) without
    those tabs, and with such states left out; the tabs come back as tabs crmkit
    never writes into.
    """
    with Package(path) as package:
        text = package.text(package.workbook)
        kinds = {e.rid: e.kind for e in sheet_entries(package) if e.rid}
        left_out: dict[str, str] = {}

        def drop(m: re.Match[str]) -> str:
            found = attrs(m[0])
            rid = next((v for k, v in found.items() if k.endswith(":id")), "")
            kind = kinds.get(rid, "") if rid else "unlinked"
            if kind in ("worksheet", "chartsheet", "dialogsheet"):
                state = found.get("state")
                if state is not None and state not in ("visible", "hidden", "veryHidden"):
                    return re.sub(r"\sstate\s*=\s*(?:\"[^\"]*\"|'[^']*')", "", m[0])
                return m[0]
            left_out[unescape(found.get("name", ""))] = kind or "unlinked"
            return ""

        text = re.sub(r"<(?:[\w.-]+:)?sheet\b[^>]*?/>", drop, text)
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as copy:
            for name in package.names():
                copy.writestr(name, text.encode("utf-8") if name == package.workbook else package.read(name))
    out.seek(0)
    return CalamineWorkbook.from_filelike(out), left_out


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _apply(package: Package, changes: list[SheetChanges]) -> None:
    """Make ``changes`` in ``package``: sheets that are missing are added first."""
    styles = Styles(package)
    entries = {e.name.strip().casefold(): e for e in sheet_entries(package)}
    writes: list[SheetChanges] = []
    for change in changes:
        key = change.title.strip().casefold()
        if change.create_headers and key not in entries:
            _check_sheet_title(change.title)
            graft_sheet(package, styles, _new_sheet(change.title, change.create_headers), change.title)
            entries = {e.name.strip().casefold(): e for e in sheet_entries(package)}
        elif change.create_headers:
            # An empty worksheet of that name: the headers go into its first row.
            headers = [CellChange(1, i, h) for i, h in enumerate(change.create_headers)]
            change = SheetChanges(change.title, None, headers + change.cells, change.append)
        writes.append(change)
    patch_sheets(package, styles, writes, entries)
    styles.save()


_BAD_TITLE_CHARACTERS = set(":\\/?*[]")


def _check_sheet_title(title: str) -> None:
    """Refuse, in one line, a sheet title Excel would have to repair."""
    problem = None
    if not title.strip():
        problem = "is empty"
    elif len(title) > 31:
        problem = f"has {len(title)} characters, more than the 31 Excel allows"
    elif _BAD_TITLE_CHARACTERS & set(title):
        problem = "holds one of : \\ / ? * [ ], which Excel does not allow"
    elif title.startswith("'") or title.endswith("'"):
        problem = "starts or ends with an apostrophe, which Excel does not allow"
    elif title.casefold() == "history":
        problem = "is a name Excel keeps for itself"
    if problem:
        raise WorkbookError(f"cannot add a sheet named {title!r}: the name {problem} (see [sheet_names])")


def _new_sheet(title: str, headers: list[str]) -> bytes:
    """A scratch workbook holding only sheet ``title``, laid out as crmkit's template lays it out."""
    wb = Workbook()
    wb.remove(wb.active)
    layout = next((s for s in SHEETS if [f.label for f in s.columns] == headers), None)
    if layout is not None:
        write_sheet(wb, layout, [], {})
        ws = wb[layout.title]
        ws.title = title
        for other in list(wb.worksheets):
            if other is not ws:
                wb.remove(other)  # a hidden list sheet: its validations fall back to plain cells
                for validation in list(ws.data_validations.dataValidation):
                    if other.title in (validation.formula1 or ""):
                        ws.data_validations.dataValidation.remove(validation)
        ws.print_title_rows = None
    else:
        ws = wb.create_sheet(title)
        for index, header in enumerate(headers, start=1):
            cell = ws.cell(1, index, header)
            cell.font = _HEADER_FONT
            cell.fill = _HEADER_FILL
        ws.freeze_panes = "A2"
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()
