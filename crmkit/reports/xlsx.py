"""A report in a workbook: a ``Reports`` sheet of its tables, each with a native Excel chart.

:func:`write_report` writes a :class:`~crmkit.reports.model.Report` into an
.xlsx file:

* a new file is written with openpyxl: one sheet holding the report;
* into an existing workbook the sheet is *grafted*: it is built alone in a
  scratch workbook with openpyxl, then its parts (the worksheet, its drawing
  and charts) are added to the existing zip at the XML level. Every other part
  of the workbook is copied unchanged; only ``[Content_Types].xml``, the
  workbook part, its relationships and ``styles.xml`` change, and styles.xml
  only by appending (existing entries keep their indexes, so the other sheets
  look exactly as before). Text is written as inline strings, so
  sharedStrings.xml is never touched. openpyxl never saves the user's
  workbook: it would rewrite every sheet and drop what it does not know.

The sheet holds the report's title and notes, then each table under the one
before (a bold title row, a bold header row, the rows, a blank row), with
number formats by column kind, and the table's chart to the right of it: a
real chart over the table's cells (stacked columns, horizontal bars for a
funnel, a line), not a picture.

crmkit marks the sheets it writes with a hidden sheet-scoped defined name
(:data:`MARKER`). Writing again replaces crmkit's sheet of that name (its old
parts are removed); a sheet of that name crmkit did not write is never
overwritten: :class:`~crmkit.errors.CrmkitError` says so instead. The file is
always written beside the target and moved over it, so a failure leaves the
old workbook as it was.
"""

from __future__ import annotations

import io
import math
import os
import posixpath
import re
import stat
import tempfile
import zipfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from openpyxl import Workbook
from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.chart.data_source import AxDataSource, NumRef, StrRef
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.worksheet import Worksheet

from crmkit.errors import CrmkitError
from crmkit.records.money import MINOR_UNITS
from crmkit.reports.model import Chart, Column, Report, Table

__all__ = ["MARKER", "write_report"]

#: The hidden, sheet-scoped defined name on every sheet crmkit writes a report into.
MARKER = "crmkit_report"

NUMBER_FORMATS = {
    "money": "#,##0.00",
    "percent": "0.0%",
    "int": "#,##0",
    "days": "0.0",
    "date": "yyyy-mm-dd",
}
_DATETIME_FORMAT = "yyyy-mm-dd hh:mm"
_AXIS_FORMATS = {"money": "#,##0", "percent": "0%", "int": "#,##0", "days": "0"}
_NUMERIC = frozenset({"money", "percent", "int", "days"})

_CHART_WIDTH_CM = 16.0
_CHART_HEIGHT_CM = 7.5
_CHART_ROWS = 16  # rows of the default height (15 pt) a chart covers, and a little more
_MIN_WIDTH, _MAX_WIDTH = 8, 60
_MAX_TEXT = 32_767  # characters Excel keeps in a cell
_ILLEGAL_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_BAD_SHEET_CHARS = set("[]:*?/\\")

_TITLE_FONT = Font(bold=True, size=14)
_BOLD = Font(bold=True)
_NOTE_FONT = Font(italic=True)


def write_report(report: Report, path: Path, *, sheet: str = "Reports") -> None:
    """Write ``report`` into the workbook ``path``: a new file, or sheet ``sheet`` of an existing one.

    An existing workbook keeps every other part as it was. Raises
    :class:`CrmkitError` when ``sheet`` is not a valid sheet name, when
    ``path`` is not an .xlsx workbook, or when it already has a sheet
    ``sheet`` that crmkit did not write.
    """
    path = Path(path)
    _check_sheet_name(sheet)
    if path.is_symlink():
        path = Path(os.path.realpath(path))
    if path.is_dir():
        raise CrmkitError(f"{path} is a directory, not a workbook")
    book = build_workbook(report, sheet)
    if not path.exists():
        _replace_atomically(path, lambda tmp: book.save(tmp))
        return
    scratch = io.BytesIO()
    book.save(scratch)
    data = _graft(path, scratch.getvalue(), sheet)
    _replace_atomically(path, lambda tmp: tmp.write_bytes(data))


# --------------------------------------------------------------------------------------------
# The sheet, with openpyxl


def build_workbook(report: Report, sheet: str = "Reports") -> Workbook:
    """A workbook of one sheet, ``sheet``, holding ``report`` with its charts (not saved)."""
    book = Workbook()
    ws = book.active
    assert isinstance(ws, Worksheet)
    ws.title = sheet
    ws.defined_names.add(DefinedName(MARKER, attr_text=f"{_quote_sheet(sheet)}!$A$1", hidden=True))
    # printed: landscape, one page wide, so a table and the chart beside it stay together
    ws.page_setup.orientation = "landscape"
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.cell(1, 1, _text(report.title or report.name)).font = _TITLE_FONT
    row = 2
    for note in report.notes:
        ws.cell(row, 1, _text(note)).font = _NOTE_FONT
        row += 1
    row += 1
    widths: dict[int, int] = {}
    for table in report.tables:
        row = _write_table(ws, table, row, widths)
    for column, width in widths.items():
        ws.column_dimensions[get_column_letter(column)].width = max(_MIN_WIDTH, min(_MAX_WIDTH, width + 2))
    return book


def _write_table(ws: Worksheet, table: Table, top: int, widths: dict[int, int]) -> int:
    """Write ``table`` from row ``top``; the row the next table starts at."""
    columns = _columns(table)
    title = table.title
    if table.currency and table.currency not in title:
        title = f"{title} ({table.currency})"
    ws.cell(top, 1, _text(title)).font = _BOLD
    header = top + 1
    for j, column in enumerate(columns, start=1):
        label = column.label
        if column.kind == "money" and table.currency and table.currency not in label:
            label = f"{label} ({table.currency})"
        cell = ws.cell(header, j, _text(label))
        cell.font = _BOLD
        if column.kind in _NUMERIC:
            cell.alignment = Alignment(horizontal="right")
        widths[j] = max(widths.get(j, 0), len(label))
    for i, values in enumerate(table.rows, start=header + 1):
        for j, column in enumerate(columns, start=1):
            value = _cell_value(values.get(column.key), column.kind)
            if value is None:
                continue
            cell = ws.cell(i, j)
            cell.value = value
            if isinstance(value, str):
                cell.data_type = "s"  # text is text, even when it starts with "="
            elif isinstance(value, datetime) and value.time() != datetime.min.time():
                cell.number_format = _DATETIME_FORMAT
            elif isinstance(value, date):
                cell.number_format = NUMBER_FORMATS["date"]
            elif column.kind == "money" and MINOR_UNITS.get(table.currency or "", 2) != 2:
                places = MINOR_UNITS[table.currency or ""]
                cell.number_format = "#,##0" + ("." + "0" * places if places else "")  # VND 0, KWD 3
            elif column.kind in _NUMERIC and not isinstance(value, bool):
                cell.number_format = NUMBER_FORMATS[column.kind]
            widths[j] = max(widths.get(j, 0), _shown_width(value, column.kind))
    last = header + len(table.rows)
    after = last + 2
    if table.chart is not None and table.rows:
        ws.add_chart(
            _chart(ws, table, table.chart, columns, header, last),
            f"{get_column_letter(len(columns) + 2)}{top}",
        )
        after = max(after, top + _CHART_ROWS + 1)
    return after


def _columns(table: Table) -> list[Column]:
    """The table's columns, then any column its chart needs that the table does not show."""
    columns = list(table.columns)
    if table.chart is None:
        return columns
    known = {c.key for c in columns}
    for n, key in enumerate((table.chart.categories, *table.chart.series)):
        if key in known:
            continue
        known.add(key)
        values = [row.get(key) for row in table.rows if row.get(key) is not None]
        if n == 0:
            kind = "date" if values and all(isinstance(v, date) for v in values) else "text"
        elif any(isinstance(v, Decimal) for v in values) and table.currency:
            kind = "money"
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            kind = "int"
        else:
            kind = "days"
        columns.append(Column(key, key.replace("_", " ").capitalize(), kind))
    return columns


def _chart(
    ws: Worksheet, table: Table, spec: Chart, columns: list[Column], header: int, last: int
) -> BarChart | LineChart:
    index = {c.key: j for j, c in enumerate(columns, start=1)}
    kinds = {c.key: c.kind for c in columns}
    chart: BarChart | LineChart
    if spec.kind == "line":
        chart = LineChart()
    elif spec.kind in ("bar", "stacked_bar"):
        chart = BarChart()
        chart.type = "bar" if spec.horizontal else "col"
        if spec.kind == "stacked_bar":
            chart.grouping = "stacked"
            chart.overlap = 100
        if spec.horizontal:
            chart.x_axis.scaling.orientation = "maxMin"  # the first category (widest) on top
            chart.y_axis.crosses = "max"  # and the value axis still along the bottom
    else:
        raise ValueError(f"unknown chart kind {spec.kind!r} in table {table.title!r}")
    title = spec.title or table.title
    if table.currency and table.currency not in title and any(kinds[k] == "money" for k in spec.series):
        title = f"{title} ({table.currency})"
    chart.title = title
    chart.width, chart.height = _CHART_WIDTH_CM, _CHART_HEIGHT_CM
    for key in spec.series:
        column = index[key]
        chart.add_data(Reference(ws, min_col=column, min_row=header, max_row=last), titles_from_data=True)
    categories = Reference(ws, min_col=index[spec.categories], min_row=header + 1, max_row=last)
    text_categories = kinds[spec.categories] == "text"
    for series in chart.series:
        series.cat = (
            AxDataSource(strRef=StrRef(f=str(categories)))
            if text_categories
            else AxDataSource(numRef=NumRef(f=str(categories)))
        )
    axis_format = _AXIS_FORMATS.get(kinds[spec.series[0]]) if spec.series else None
    if axis_format:
        chart.y_axis.number_format = axis_format
    # openpyxl leaves <c:delete> out, which recent Excel and LibreOffice read as "no axis".
    chart.x_axis.delete = False
    chart.y_axis.delete = False
    if len(spec.series) > 1:
        assert chart.legend is not None
        chart.legend.position = "b"
    else:
        chart.legend = None
    return chart


def _cell_value(value: Any, kind: str) -> Any:
    """``value`` as openpyxl writes it into a cell of a ``kind`` column, or ``None`` for no value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is not None else value
    if isinstance(value, date):
        return value
    text = str(value)
    if kind == "date":
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    elif kind in _NUMERIC:
        try:
            number = Decimal(text)
        except ArithmeticError:
            pass
        else:
            return number if number.is_finite() else None
    return _text(text)


def _text(value: str) -> str:
    """Text a cell can hold: no XML-illegal characters, at most Excel's 32,767 characters."""
    return _ILLEGAL_XML_RE.sub("", str(value))[:_MAX_TEXT]


def _shown_width(value: Any, kind: str) -> int:
    """About how many characters ``value`` shows as in a ``kind`` column."""
    if isinstance(value, str):
        return max((len(line) for line in value.splitlines()), default=0)
    if isinstance(value, datetime):
        return 16
    if isinstance(value, date):
        return 10
    if isinstance(value, bool):
        return 5
    if kind == "percent":
        return len(f"{float(value) * 100:.1f}%")
    if kind == "money":
        return len(f"{float(value):,.2f}")
    if kind == "days":
        return len(f"{float(value):.1f}")
    if kind == "int":
        return len(f"{value:,}") if isinstance(value, int) else len(str(value))
    return len(str(value))


def _check_sheet_name(sheet: str) -> None:
    if (
        not sheet
        or len(sheet) > 31
        or any(ch in _BAD_SHEET_CHARS for ch in sheet)
        or sheet.startswith("'")
        or sheet.endswith("'")
        or _ILLEGAL_XML_RE.search(sheet)
        or sheet.casefold() == "history"
    ):
        raise CrmkitError(
            f"{sheet!r} is not a sheet name Excel accepts: 1 to 31 characters, none of [ ] : * ? / \\, "
            "not starting or ending with ', and not History"
        )


def _quote_sheet(sheet: str) -> str:
    return "'" + sheet.replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------
# Writing the file


def _replace_atomically(path: Path, write: Callable[[Path], object]) -> None:
    """Call ``write`` on a temporary file beside ``path``, then move it over ``path``."""
    existing = path.stat() if path.exists() else None
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except FileNotFoundError:
        raise CrmkitError(f"cannot write {path}: the folder {path.parent} does not exist") from None
    os.close(fd)
    tmp = Path(name)
    try:
        write(tmp)
        if existing is not None:
            os.chmod(tmp, stat.S_IMODE(existing.st_mode))
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------------------------
# Grafting the sheet into an existing workbook, at the XML level

_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_PKG_RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
_DOC_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_OFFICE_DOCUMENT = f"{_DOC_RELS}/officeDocument"
_WORKSHEET = f"{_DOC_RELS}/worksheet"
_STYLES = f"{_DOC_RELS}/styles"
_SHARED_STRINGS = f"{_DOC_RELS}/sharedStrings"
_STYLES_TYPE = "application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"
_M = f"{{{_MAIN_NS}}}"
_R = f"{{{_PKG_RELS_NS}}}"

_ATTR_RE = re.compile(r"([\w:.-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_NUMBERED_RE = re.compile(r"^(.*?)(\d*)(\.[^./]+)$")
_STYLES_ORDER = (
    "numFmts",
    "fonts",
    "fills",
    "borders",
    "cellStyleXfs",
    "cellXfs",
    "cellStyles",
    "dxfs",
    "tableStyles",
    "colors",
    "extLst",
)


def _not_a_workbook(path: Path, why: str) -> CrmkitError:
    return CrmkitError(f"cannot add a report sheet to {path}: {why}")


@dataclass
class _Relationship:
    id: str
    type: str
    target: str  # the part it points at, resolved: a zip member name, or the raw external target
    external: bool


@dataclass
class _Package:
    """The members of an .xlsx zip, in order, read whole."""

    infos: list[zipfile.ZipInfo]
    data: dict[str, bytes]
    comment: bytes = b""
    by_lower: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, source: Path | bytes) -> _Package:
        with zipfile.ZipFile(io.BytesIO(source) if isinstance(source, bytes) else source) as zf:
            infos = zf.infolist()
            data = {info.filename: zf.read(info) for info in infos}
            comment = zf.comment
        return cls(infos, data, comment, {name.lower(): name for name in data})

    def find(self, name: str) -> str | None:
        return self.by_lower.get(name.lower())

    def text(self, name: str) -> str:
        return _decode(self.data[name], name)

    def relationships(self, part: str) -> list[_Relationship]:
        """The relationships of ``part`` ("" for the package's own), targets resolved."""
        rels = self.find(_rels_name(part))
        if rels is None:
            return []
        out = []
        root = ET.fromstring(self.data[rels])
        for el in root.iter(f"{_R}Relationship"):
            target = el.get("Target", "")
            external = el.get("TargetMode") == "External"
            out.append(
                _Relationship(
                    el.get("Id", ""),
                    el.get("Type", ""),
                    target if external else _resolve(part, target),
                    external,
                )
            )
        return out


def _rels_name(part: str) -> str:
    folder, name = posixpath.split(part)
    return posixpath.join(folder, "_rels", f"{name}.rels")


def _resolve(source: str, target: str) -> str:
    """The zip member a relationship of part ``source`` to ``target`` points at."""
    target = unquote(target.split("#", 1)[0])
    if target.startswith("/"):
        return posixpath.normpath(target.lstrip("/"))
    return posixpath.normpath(posixpath.join(posixpath.dirname(source), target)).lstrip("/")


def _decode(data: bytes, name: str) -> str:
    try:
        if data.startswith(b"\xef\xbb\xbf"):
            return data[3:].decode("utf-8")
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CrmkitError(f"{name} in the workbook is not UTF-8 XML: {exc}") from None


def _encode(text: str, like: bytes = b"") -> bytes:
    """``text`` encoded as the part ``like`` was: UTF-8 (with its BOM if it had one) or UTF-16."""
    if like.startswith((b"\xff\xfe", b"\xfe\xff")):
        return text.encode("utf-16")
    return (b"\xef\xbb\xbf" if like.startswith(b"\xef\xbb\xbf") else b"") + text.encode("utf-8")


def _attrs(tag: str) -> dict[str, str]:
    return {m.group(1): m.group(2) if m.group(2) is not None else m.group(3) for m in _ATTR_RE.finditer(tag)}


def _set_attr(tag: str, name: str, value: str) -> str:
    """``tag`` (an opening tag's text) with attribute ``name`` set to ``value``."""
    pattern = re.compile(rf"(\s{re.escape(name)}\s*=\s*)(?:\"[^\"]*\"|'[^']*')")
    if pattern.search(tag):
        return pattern.sub(lambda m: f'{m.group(1)}"{value}"', tag, count=1)
    end = len(tag) - (2 if tag.endswith("/>") else 1)
    return f'{tag[:end]} {name}="{value}"{tag[end:]}'


def _root_prefix(text: str, local: str) -> str:
    """The prefix (``"x:"`` or ``""``) of the root element ``local`` in ``text``."""
    match = re.search(rf"<(?:([\w.-]+):)?{local}[\s>/]", text)
    if match is None:
        raise CrmkitError(f"expected a <{local}> element")
    return f"{match.group(1)}:" if match.group(1) else ""


def _graft(path: Path, scratch: bytes, sheet: str) -> bytes:
    """The bytes of workbook ``path`` with sheet ``sheet`` of the scratch workbook grafted in."""
    try:
        package = _Package.read(path)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise _not_a_workbook(path, f"it is not an .xlsx file ({exc})") from None
    except OSError as exc:
        raise _not_a_workbook(path, str(exc)) from None
    try:
        return _Graft(path, package, _Package.read(scratch), sheet).run()
    except ET.ParseError as exc:
        raise _not_a_workbook(path, f"its XML cannot be read ({exc})") from None


class _Graft:
    def __init__(self, path: Path, package: _Package, scratch: _Package, sheet: str) -> None:
        self.path, self.package, self.scratch, self.sheet = path, package, scratch, sheet
        self.changed: dict[str, bytes] = {}  # existing members with new content
        self.added: dict[str, bytes] = {}  # new members
        self.removed: set[str] = set()
        self.content_types: dict[str, str] = {}  # new part -> its content type
        self.extra_workbook_rels: list[tuple[str, str]] = []  # (type, part) to relate the workbook to

    # -- the whole ------------------------------------------------------------------------------

    def run(self) -> bytes:
        package = self.package
        office = [r for r in package.relationships("") if r.type == _OFFICE_DOCUMENT and not r.external]
        if not office or package.find(office[0].target) is None:
            raise _not_a_workbook(self.path, "it has no workbook part")
        self.workbook = package.find(office[0].target) or ""
        self.workbook_rels = package.relationships(self.workbook)
        root = ET.fromstring(package.data[self.workbook])
        if root.tag != f"{_M}workbook":
            raise _not_a_workbook(self.path, f"its workbook part is {root.tag}, not a transitional workbook")
        sheets = root.find(f"{_M}sheets")
        entries = list(sheets) if sheets is not None else []
        rid_attr = f"{{{_DOC_RELS}}}id"
        existing = [
            i for i, s in enumerate(entries) if (s.get("name") or "").casefold() == self.sheet.casefold()
        ]
        old_index = existing[0] if existing else None
        old_part: str | None = None
        if old_index is not None:
            self._check_ours(root, old_index, entries[old_index].get("name") or "")
            rel = self._relationship(entries[old_index].get(rid_attr) or "")
            if rel is None or rel.type != _WORKSHEET or rel.external:
                raise CrmkitError(
                    f"{self.path} has a sheet named {self.sheet!r} that is not a worksheet; "
                    "crmkit will not replace it"
                )
            old_part = package.find(rel.target)
        sheet_ids = [int(s.get("sheetId") or 0) for s in entries if (s.get("sheetId") or "").isdigit()]
        sheet_id = max(sheet_ids, default=0) + 1

        selected = False
        if old_part is not None:
            selected = bool(
                re.search(r"\stabSelected\s*=\s*[\"'](?:1|true)[\"']", package.text(old_part)[:4000])
            )
            self._remove_parts(old_part)
        new_sheet = self._add_parts(selected)
        rid = self._fresh_id({r.id for r in self.workbook_rels})
        self._edit_workbook(old_index, len(entries), sheet_id, rid)
        self._edit_workbook_rels(
            old_id=entries[old_index].get(rid_attr) if old_index is not None else None,
            new_id=rid,
            target=new_sheet,
        )
        self._edit_content_types()
        return self._write()

    def _check_ours(self, root: ET.Element, index: int, name: str) -> None:
        names = root.find(f"{_M}definedNames")
        for el in names if names is not None else []:
            if (el.get("name") or "").casefold() == MARKER and el.get("localSheetId") == str(index):
                return
        raise CrmkitError(
            f"{self.path} already has a sheet named {name!r} that crmkit did not write; "
            "crmkit will not overwrite it: rename that sheet, or write the report to another sheet (--sheet)"
        )

    def _relationship(self, rid: str) -> _Relationship | None:
        return next((r for r in self.workbook_rels if r.id == rid), None)

    @staticmethod
    def _fresh_id(taken: Iterable[str]) -> str:
        used = set(taken)
        n = 1
        while f"rId{n}" in used:
            n += 1
        return f"rId{n}"

    # -- parts ----------------------------------------------------------------------------------

    def _reachable(self, package: _Package, start: str) -> list[str]:
        """``start`` and the internal parts its relationships lead to, recursively."""
        seen = [start]
        i = 0
        while i < len(seen):
            for rel in package.relationships(seen[i]):
                name = package.find(rel.target)
                if not rel.external and name is not None and name not in seen:
                    seen.append(name)
            i += 1
        return seen

    def _remove_parts(self, old_sheet: str) -> None:
        """Remove crmkit's old sheet and the parts only it uses (its drawing, charts, ...)."""
        package = self.package
        candidates = set(self._reachable(package, old_sheet))
        # A part something else still points at stays.
        keep: set[str] = set()
        for name in package.data:
            folder, base = posixpath.split(name)
            if posixpath.basename(folder) != "_rels" or not base.endswith(".rels"):
                continue
            source = posixpath.join(posixpath.dirname(folder), base[: -len(".rels")])
            if package.find(source) in candidates:
                continue
            for rel in package.relationships(source):
                found = package.find(rel.target)
                if not rel.external and found is not None and found != old_sheet:
                    keep.add(found)
        for part in candidates - keep:
            self.removed.add(part)
            rels = package.find(_rels_name(part))
            if rels is not None:
                self.removed.add(rels)

    def _new_name(self, name: str) -> str:
        """A member name like ``name`` (``xl/charts/chart1.xml``) no member has."""
        match = _NUMBERED_RE.match(name)
        stem, suffix = (match.group(1), match.group(3)) if match else (name, "")
        taken = set(self.package.by_lower) | {n.lower() for n in self.added}
        n = 1
        while f"{stem}{n}{suffix}".lower() in taken:
            n += 1
        return f"{stem}{n}{suffix}"

    def _add_parts(self, selected: bool) -> str:
        """Add the scratch sheet and the parts it uses; the new sheet's member name."""
        scratch = self.scratch
        office = next(r for r in scratch.relationships("") if r.type == _OFFICE_DOCUMENT)
        scratch_book = office.target
        book_rels = scratch.relationships(scratch_book)
        sheet_part = next(r.target for r in book_rels if r.type == _WORKSHEET)
        strings_rel = next((r for r in book_rels if r.type == _SHARED_STRINGS), None)
        shared = _shared_strings(scratch.data[strings_rel.target]) if strings_rel else []
        styles_rel = next(r for r in book_rels if r.type == _STYLES)
        types = _content_types(scratch.data["[Content_Types].xml"])

        parts = self._reachable(scratch, sheet_part)
        names = {}
        for part in parts:
            names[part] = self._new_name(part)
            self.added[names[part]] = b""  # reserve the name
        for part in parts:
            new = names[part]
            data = scratch.data[part]
            if part == sheet_part:
                text = _decode(data, part)
                text = _inline_shared_strings(text, shared)
                text = self._restyle(text, scratch.data[styles_rel.target])
                if not selected:
                    text = re.sub(r"\stabSelected=\"(?:1|true)\"", "", text)
                data = _encode(text)
            self.added[new] = data
            self.content_types[new] = types.get(part.lower(), "")  # "": the extension's default
            rels = scratch.relationships(part)
            if rels:
                self.added[_rels_name(new)] = _encode(_relationships_xml(rels, names))
        return names[sheet_part]

    # -- styles ---------------------------------------------------------------------------------

    def _restyle(self, sheet_xml: str, scratch_styles: bytes) -> str:
        """The scratch sheet's XML with its style indexes mapped to (appended) styles of the workbook."""
        used = sorted(
            {int(s) for s in re.findall(r"<(?:c|row)\b[^>]*?\ss=\"(\d+)\"", sheet_xml)}
            | {int(s) for s in re.findall(r"<col\b[^>]*?\sstyle=\"(\d+)\"", sheet_xml)}
        )
        if not used:
            return sheet_xml
        styles_rel = next((r for r in self.workbook_rels if r.type == _STYLES and not r.external), None)
        styles_part = self.package.find(styles_rel.target) if styles_rel else None
        if styles_part is None:
            # No styles part at all (every cell is in the default style): the scratch one becomes it.
            name = "xl/styles.xml"  # where openpyxl, among others, looks for it
            if self.package.find(name) is not None:
                name = self._new_name(name)
            self.added[name] = scratch_styles
            self.content_types[name] = _STYLES_TYPE
            self.extra_workbook_rels.append((_STYLES, name))
            return sheet_xml
        text, mapping = _merge_styles(self.package.data[styles_part], scratch_styles, used)
        self.changed[styles_part] = _encode(text, self.package.data[styles_part])

        def remap(match: re.Match[str]) -> str:
            return f'{match.group(1)}{mapping.get(int(match.group(2)), int(match.group(2)))}"'

        sheet_xml = re.sub(r"(<c\b[^>]*?\ss=\")(\d+)\"", remap, sheet_xml)
        sheet_xml = re.sub(r"(<row\b[^>]*?\ss=\")(\d+)\"", remap, sheet_xml)
        return re.sub(r"(<col\b[^>]*?\sstyle=\")(\d+)\"", remap, sheet_xml)

    # -- the workbook's own parts -----------------------------------------------------------------

    def _edit_workbook(self, old_index: int | None, count: int, sheet_id: int, rid: str) -> None:
        text = self.package.text(self.workbook)
        p = _root_prefix(text, "workbook")
        root_tag = re.search(rf"<{re.escape(p)}workbook\b[^>]*>", text)
        assert root_tag is not None
        r_prefix = next(
            (
                m.group(1)
                for m in re.finditer(r"xmlns:([\w.-]+)\s*=\s*[\"']([^\"']*)[\"']", root_tag.group(0))
                if m.group(2) == _DOC_RELS
            ),
            None,
        )
        declare = "" if r_prefix else f' xmlns:r="{_DOC_RELS}"'
        element = (
            f'<{p}sheet name={quoteattr(self.sheet)} sheetId="{sheet_id}" '
            f'{r_prefix or "r"}:id="{rid}"{declare}/>'
        )
        q = re.escape(p)
        sheets = re.search(rf"<{q}sheets\b[^>]*?(?:/>|>(.*?)</{q}sheets\s*>)", text, re.S)
        if sheets is None:
            raise _not_a_workbook(self.path, "its workbook part has no <sheets>")
        body = sheets.group(1) or ""
        entries = list(re.finditer(rf"<{q}sheet\b[^>]*?(?:/>|>.*?</{q}sheet\s*>)", body, re.S))
        if len(entries) != count:
            raise _not_a_workbook(self.path, "its <sheets> is laid out in a way crmkit does not edit")
        if old_index is not None:
            old = entries[old_index]
            body = body[: old.start()] + element + body[old.end() :]
            index = old_index
        else:
            body += element
            index = count
        open_tag = re.match(rf"<{q}sheets\b[^>]*?(/?)>", sheets.group(0))
        assert open_tag is not None
        opening = open_tag.group(0)[:-2] + ">" if open_tag.group(1) else open_tag.group(0)
        text = text[: sheets.start()] + f"{opening}{body}</{p}sheets>" + text[sheets.end() :]

        marker = (
            f'<{p}definedName name="{MARKER}" localSheetId="{index}" hidden="1">'
            f"{escape(_quote_sheet(self.sheet))}!$A$1</{p}definedName>"
        )
        names = re.search(rf"<{q}definedNames\b([^>]*?)(?:/>|>(.*?)</{q}definedNames\s*>)", text, re.S)
        if names is not None:
            kept = names.group(2) or ""
            if old_index is not None:
                # The old sheet's own names (crmkit's marker, a print area ...) go with it.
                def drop(match: re.Match[str]) -> str:
                    return (
                        "" if _attrs(match.group(1)).get("localSheetId") == str(old_index) else match.group(0)
                    )

                kept = re.sub(
                    rf"<{q}definedName\b([^>]*?)(?:/>|>.*?</{q}definedName\s*>)", drop, kept, flags=re.S
                )
            opening = f"<{p}definedNames{names.group(1)}>"
            text = text[: names.start()] + f"{opening}{kept}{marker}</{p}definedNames>" + text[names.end() :]
        else:
            after = 0
            for local in ("sheets", "functionGroups", "externalReferences"):
                for m in re.finditer(rf"<{q}{local}\b[^>]*?(?:/>|>.*?</{q}{local}\s*>)", text, re.S):
                    after = max(after, m.end())
            text = text[:after] + f"<{p}definedNames>{marker}</{p}definedNames>" + text[after:]
        self.changed[self.workbook] = _encode(text, self.package.data[self.workbook])

    def _edit_workbook_rels(self, old_id: str | None, new_id: str, target: str) -> None:
        rels_part = self.package.find(_rels_name(self.workbook))
        new = [(new_id, _WORKSHEET, target)]
        taken = {r.id for r in self.workbook_rels} | {new_id}
        for kind, part in self.extra_workbook_rels:
            rid = self._fresh_id(taken)
            taken.add(rid)
            new.append((rid, kind, part))
        if rels_part is None:
            raise _not_a_workbook(self.path, "its workbook part has no relationships")
        text = self.package.text(rels_part)
        p = _root_prefix(text, "Relationships")
        q = re.escape(p)
        elements = "".join(
            f"<{p}Relationship Id={quoteattr(rid)} Type={quoteattr(kind)} "
            f"Target={quoteattr(_relative(self.workbook, part))}/>"
            for rid, kind, part in new
        )
        if old_id is not None:

            def drop(match: re.Match[str]) -> str:
                return "" if _attrs(match.group(1)).get("Id") == old_id else match.group(0)

            text = re.sub(
                rf"<{q}Relationship\b([^>]*?)(?:/>|>.*?</{q}Relationship\s*>)", drop, text, flags=re.S
            )
        text = _insert_before_close(text, f"{p}Relationships", elements)
        self.changed[rels_part] = _encode(text, self.package.data[rels_part])

    def _edit_content_types(self) -> None:
        name = self.package.find("[Content_Types].xml")
        if name is None:
            raise _not_a_workbook(self.path, "it has no [Content_Types].xml")
        text = self.package.text(name)
        p = _root_prefix(text, "Types")
        q = re.escape(p)
        gone = {f"/{part}".lower() for part in self.removed}

        def drop(match: re.Match[str]) -> str:
            return "" if (_attrs(match.group(1)).get("PartName") or "").lower() in gone else match.group(0)

        text = re.sub(rf"<{q}Override\b([^>]*?)(?:/>|>\s*</{q}Override\s*>)", drop, text)
        elements = "".join(
            f"<{p}Override PartName={quoteattr('/' + part)} ContentType={quoteattr(kind)}/>"
            for part, kind in self.content_types.items()
            if kind
        )
        text = _insert_before_close(text, f"{p}Types", elements)
        self.changed[name] = _encode(text, self.package.data[name])

    # -- the zip ----------------------------------------------------------------------------------

    def _write(self) -> bytes:
        out = io.BytesIO()
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as zf:
            for info in self.package.infos:
                if info.filename in self.removed:
                    continue
                data = self.changed.get(info.filename, self.package.data[info.filename])
                copy = zipfile.ZipInfo(info.filename, info.date_time)
                copy.compress_type = info.compress_type
                copy.external_attr = info.external_attr
                copy.create_system = info.create_system
                copy.comment = info.comment
                zf.writestr(copy, data)
            for name, data in self.added.items():
                zf.writestr(zipfile.ZipInfo(name, datetime.now().timetuple()[:6]), data, zipfile.ZIP_DEFLATED)
            zf.comment = self.package.comment
        return out.getvalue()


def _insert_before_close(text: str, tag: str, content: str) -> str:
    """``text`` with ``content`` added at the end of its root element ``tag`` (self-closing or not)."""
    q = re.escape(tag)
    close = list(re.finditer(rf"</{q}\s*>", text))
    if close:
        at = close[-1].start()
        return text[:at] + content + text[at:]
    empty = re.search(rf"<{q}\b([^>]*?)/>", text)
    if empty is None:
        raise CrmkitError(f"expected a <{tag}> element")
    return text[: empty.start()] + f"<{tag}{empty.group(1)}>{content}</{tag}>" + text[empty.end() :]


def _relative(source: str, part: str) -> str:
    return posixpath.relpath(part, posixpath.dirname(source) or ".")


def _relationships_xml(rels: list[_Relationship], names: dict[str, str]) -> str:
    """A new part's relationships, internal targets renamed as ``names`` says (absolute)."""
    items = []
    for rel in rels:
        if rel.external:
            target, mode = rel.target, ' TargetMode="External"'
        else:
            target, mode = "/" + names.get(rel.target, rel.target), ""
        attrs = f"Id={quoteattr(rel.id)} Type={quoteattr(rel.type)} Target={quoteattr(target)}{mode}"
        items.append(f"<Relationship {attrs}/>")
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<Relationships xmlns="{_PKG_RELS_NS}">{"".join(items)}</Relationships>'
    )


def _content_types(data: bytes) -> dict[str, str]:
    """Content type of each overridden part (lower-case member name) of a package."""
    root = ET.fromstring(data)
    return {
        (el.get("PartName") or "").lstrip("/").lower(): el.get("ContentType") or ""
        for el in root.iter(f"{{{_CT_NS}}}Override")
    }


def _shared_strings(data: bytes) -> list[str]:
    """The texts of a sharedStrings part: each item's text, or its runs' (phonetic readings left out)."""
    root = ET.fromstring(data)
    return [
        "".join(t.text or "" for t in (*si.findall(f"{_M}t"), *si.findall(f"{_M}r/{_M}t")))
        for si in root.iter(f"{_M}si")
    ]


def _inline_shared_strings(sheet_xml: str, shared: list[str]) -> str:
    """The sheet's shared-string cells (``t="s"``) as inline strings: no sharedStrings part needed."""

    def inline(match: re.Match[str]) -> str:
        attrs = re.sub(r"\st=\"s\"", ' t="inlineStr"', match.group(1))
        text = shared[int(match.group(2))]
        return f'<c{attrs}><is><t xml:space="preserve">{escape(text)}</t></is></c>'

    return re.sub(r"<c\b((?=[^>]*\st=\"s\")[^>]*)>\s*<v>(\d+)</v>\s*</c>", inline, sheet_xml)


# -- merging styles -----------------------------------------------------------------------------


def _canonical(el: ET.Element) -> tuple[Any, ...]:
    return (
        el.tag,
        tuple(sorted(el.attrib.items())),
        (el.text or "").strip(),
        tuple(_canonical(child) for child in el),
    )


def _serialize(el: ET.Element, prefix: str) -> str:
    """``el`` (in the main namespace, as openpyxl writes styles) as XML text with ``prefix``."""
    if not el.tag.startswith(_M):
        raise ValueError(f"unexpected element {el.tag} in a style")
    tag = prefix + el.tag[len(_M) :]
    attrs = "".join(
        f" {name}={quoteattr(value)}" for name, value in el.attrib.items() if not name.startswith("{")
    )
    inner = escape(el.text or "") + "".join(_serialize(child, prefix) for child in el)
    return f"<{tag}{attrs}>{inner}</{tag}>" if inner else f"<{tag}{attrs}/>"


@dataclass
class _Collection:
    """One list of styles.xml (fonts, fills, ...): the workbook's entries, and the ones to append."""

    tag: str
    existing: list[ET.Element]
    appended: list[ET.Element] = field(default_factory=list)

    def index_of(self, el: ET.Element) -> int:
        """The index of an entry just like ``el``, appending it when there is none."""
        key = _canonical(el)
        for i, other in enumerate(self.existing + self.appended):
            if _canonical(other) == key:
                return i
        self.appended.append(el)
        return len(self.existing) + len(self.appended) - 1


def _merge_styles(user: bytes, scratch: bytes, used: list[int]) -> tuple[str, dict[int, int]]:
    """The workbook's styles.xml with what the scratch styles ``used`` need appended, and the index map.

    Existing entries keep their indexes; an entry the workbook already has (the
    same XML) is reused, so writing a report again adds nothing.
    """
    user_text = _decode(user, "styles.xml")
    mine = ET.fromstring(scratch)
    theirs = ET.fromstring(user)
    if theirs.tag != f"{_M}styleSheet":
        raise CrmkitError("the workbook's styles part is not a transitional styleSheet")

    def items(root: ET.Element, tag: str) -> list[ET.Element]:
        el = root.find(f"{_M}{tag}")
        return list(el) if el is not None else []

    collections = {
        tag: _Collection(tag, items(theirs, tag)) for tag in ("fonts", "fills", "borders", "cellXfs")
    }
    their_formats = {
        int(el.get("numFmtId") or 0): el.get("formatCode") or "" for el in items(theirs, "numFmts")
    }
    my_formats = {int(el.get("numFmtId") or 0): el.get("formatCode") or "" for el in items(mine, "numFmts")}
    new_formats: dict[int, str] = {}
    my = {tag: items(mine, tag) for tag in ("fonts", "fills", "borders", "cellXfs")}
    has_style_xfs = bool(items(theirs, "cellStyleXfs"))

    def format_id(number: int) -> int:
        if number < 164 or number not in my_formats:
            return number
        code = my_formats[number]
        for known, other in (*their_formats.items(), *new_formats.items()):
            if other == code:
                return known
        fresh = max([163, *their_formats, *new_formats]) + 1
        new_formats[fresh] = code
        return fresh

    mapping: dict[int, int] = {}
    for index in used:
        xf = my["cellXfs"][index]
        copy = ET.Element(xf.tag, dict(xf.attrib))
        copy.extend(list(xf))
        for attr, tag in (("fontId", "fonts"), ("fillId", "fills"), ("borderId", "borders")):
            if attr in copy.attrib:
                copy.set(attr, str(collections[tag].index_of(my[tag][int(copy.get(attr) or 0)])))
        if "numFmtId" in copy.attrib:
            copy.set("numFmtId", str(format_id(int(copy.get("numFmtId") or 0))))
        if "xfId" in copy.attrib and not has_style_xfs:
            del copy.attrib["xfId"]
        mapping[index] = collections["cellXfs"].index_of(copy)

    prefix = _root_prefix(user_text, "styleSheet")
    text = user_text
    if new_formats:
        text = _append_to_list(
            text,
            prefix,
            "numFmts",
            "".join(
                f'<{prefix}numFmt numFmtId="{number}" formatCode={quoteattr(code)}/>'
                for number, code in new_formats.items()
            ),
            len(their_formats) + len(new_formats),
        )
    for tag in ("fonts", "fills", "borders", "cellXfs"):
        collection = collections[tag]
        if collection.appended:
            text = _append_to_list(
                text,
                prefix,
                tag,
                "".join(_serialize(el, prefix) for el in collection.appended),
                len(collection.existing) + len(collection.appended),
            )
    return text, mapping


def _append_to_list(text: str, prefix: str, tag: str, content: str, count: int) -> str:
    """styles.xml ``text`` with ``content`` appended to its list ``tag``, made when missing."""
    q = re.escape(prefix)
    found = re.search(rf"<{q}{tag}\b([^>]*?)(/?)>", text)
    if found is not None:
        opening = _set_attr(f"<{prefix}{tag}{found.group(1)}>", "count", str(count))
        if found.group(2):  # <fonts/>
            return text[: found.start()] + f"{opening}{content}</{prefix}{tag}>" + text[found.end() :]
        close = re.compile(rf"</{q}{tag}\s*>").search(text, found.end())
        if close is None:
            raise CrmkitError(f"the workbook's styles.xml has an unclosed <{tag}>")
        return (
            text[: found.start()]
            + opening
            + text[found.end() : close.start()]
            + content
            + text[close.start() :]
        )
    element = f'<{prefix}{tag} count="{count}">{content}</{prefix}{tag}>'
    for later in _STYLES_ORDER[_STYLES_ORDER.index(tag) + 1 :]:
        after = re.search(rf"<{q}{later}\b", text)
        if after is not None:
            return text[: after.start()] + element + text[after.start() :]
    return _insert_before_close(text, f"{prefix}styleSheet", element)
