"""Writing sync changes into worksheets at the XML level: only the cells that change.

:func:`patch_sheets` edits the XML text of the worksheets that change, in a
:class:`~crmkit.xlsx.package.Package`; every other part is left to be copied
byte for byte. It never reads the workbook into objects: a sheet of 50,000 rows
is indexed by its row tags and only the rows that change are rebuilt.

What it does to a worksheet it writes:

* cell values: text as an inline string (never a formula, and sharedStrings.xml
  stays as it is; text starting with ``=+-@`` is shown as typed through its
  style's quotePrefix; control characters are written as Excel's ``_xHHHH_``
  escapes), numbers and Decimals (exact text) as numbers, booleans as booleans,
  dates and datetimes as serial numbers of the workbook's date system (1900 or
  1904), ``None`` clears the value (a styled cell keeps its style, empty);
* a changed cell keeps its style; a new cell takes its column's style (but a
  number never takes a date format from its column), and an appended cell the
  style of the cell in the last data row above it;
* a date needs a style that shows dates (and times, for a datetime with one):
  the cell's own, the cell above's, an existing one that looks the same with a
  date format, or one appended to styles.xml; a :class:`~crmkit.sync.model.Formatted`
  value gets its number format the same way;
* a plain formula in a cell crmkit writes is replaced by the value (as typing
  over it would); shared and array formulas, merged areas and a table's header
  row are never written into: the write is refused, naming the cell;
* rows are appended below the last row holding a value;
* the sheet's ``<dimension>``, its auto-filter (and the workbook's matching
  ``_xlnm._FilterDatabase`` name) and the Excel tables that ended at the last
  data row grow to cover appended rows;
* the workbook's ``calcPr`` gets ``fullCalcOnLoad="1"``, so formulas over the
  changed cells are recomputed when the file is opened.

Anything it cannot write safely raises :class:`~crmkit.xlsx.package.WorkbookError`
naming the sheet and cell, before anything is written.
"""

from __future__ import annotations

import bisect
import gc
import math
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree as ET

from crmkit.sync.model import Formatted, SheetChanges, column_letter
from crmkit.xlsx.graft import SheetEntry
from crmkit.xlsx.package import Package, WorkbookError
from crmkit.xlsx.styles import Styles

__all__ = ["patch_sheets"]


_MAX_ROW = 1_048_576
_MAX_COLUMN = 16_384
_MAX_TEXT = 32_767  # characters Excel keeps in a cell
_FORMULA_STARTS = ("=", "+", "-", "@")
_EPOCH_1900 = date(1899, 12, 30)
_EPOCH_1904 = date(1904, 1, 1)
_LEAP_BUG_END = date(1900, 3, 1)  # Excel counts a 29 February 1900 that never was

_SHEET_DATA_RE = re.compile(r"<sheetData\b([^>]*?)(/?)>")
_ROW_NUMBER_RE = re.compile(r"""\sr\s*=\s*["'](\d+)["']""")
# A cell with its reference: (whole element, column letters, row digits, attributes, content).
_CELL_RE = re.compile(
    r"""(<c\b(?=[^>]*?\sr\s*=\s*["']([A-Z]{1,3})(\d+)["'])([^>]*?)(?:/>|>(.*?)</c>))""",
    re.S,
)
_ATTR_RE = re.compile(r"([\w:.-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")
_SPANS_RE = re.compile(r"\sspans\s*=\s*(?:\"[^\"]*\"|'[^']*')")
_HAS_VALUE_RE = re.compile(r"<v(?:\s[^>]*)?>[^<]|<f[\s>/]|<t(?:\s[^>]*)?>[^<]")
_FORMULA_REF_RE = re.compile(r"<f\b([^>]*)>")
_MERGE_RE = re.compile(r"<mergeCell\b([^>]*?)/?>")
_DIMENSION_RE = re.compile(r"<dimension\b([^>]*?)/?>")
_AUTOFILTER_RE = re.compile(r"<autoFilter\b([^>]*?)/?>")
_COL_RE = re.compile(r"<col\b([^>]*?)/?>")
_TABLE_ROOT_RE = re.compile(r"<table\b([^>]*?)/?>")
_PREFIXED_ELEMENT_RE = re.compile(r"</?[A-Za-z_][\w.-]*:")
_RANGE_RE = re.compile(r"^\$?([A-Z]{1,3})\$?(\d+)(?::\$?([A-Z]{1,3})\$?(\d+))?$")
_ILLEGAL_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")
_ESCAPED_CHAR_RE = re.compile("_x[0-9A-Fa-f]{4}_")  # Excel reads it as one escaped character


class _Unsupported(Exception):
    """A change this module cannot make safely; the caller reports it and writes nothing."""


def patch_sheets(
    package: Package, styles: Styles, changes: list[SheetChanges], sheets: dict[str, SheetEntry]
) -> None:
    """Make ``changes`` in the worksheets of ``package``; ``sheets`` maps folded titles to tabs.

    New cell formats go to ``styles`` (the caller saves them). Raises
    :class:`WorkbookError` naming the sheet and cell when a change cannot be made safely.
    """
    # Patching makes hundreds of thousands of short-lived strings and lists, none in
    # reference cycles; the cyclic collector would only walk the caller's objects again
    # and again (15-30% of the time in a sync of 50,000 rows).
    collecting = gc.isenabled()
    gc.disable()
    try:
        _Patcher(package, styles).run(changes, sheets)
    except _Unsupported as exc:
        raise WorkbookError(f"cannot write {package.path.name}: {exc}") from None
    finally:
        if collecting:
            gc.enable()


# -- small helpers -----------------------------------------------------------------


def _attrs(text: str) -> dict[str, str]:
    return {m[1]: m[2] if m[2] is not None else m[3] for m in _ATTR_RE.finditer(text)}


def _set_attr(tag: str, name: str, value: str) -> str:
    pattern = re.compile(rf"(\s{re.escape(name)}\s*=\s*)(\"[^\"]*\"|'[^']*')")
    new, count = pattern.subn(lambda m: f'{m[1]}"{value}"', tag, count=1)
    if count != 1:
        raise _Unsupported(f"no {name} attribute to change in {tag[:60]!r}")
    return new


_COLUMN_INDEX: dict[str, int] = {}


def _column_index(letters: str) -> int:
    """``A`` -> 0, ``AA`` -> 26."""
    index = _COLUMN_INDEX.get(letters)
    if index is None:
        index = 0
        for ch in letters:
            index = index * 26 + ord(ch) - 64
        index -= 1
        _COLUMN_INDEX[letters] = index
    return index


def _column_indexes() -> dict[str, int]:
    """Letters -> index for every column of a sheet (built on first use)."""
    if len(_COLUMN_INDEX) < _MAX_COLUMN:
        for column in range(_MAX_COLUMN):
            _COLUMN_INDEX[column_letter(column)] = column
    return _COLUMN_INDEX


_LETTERS: dict[int, str] = {}


def _letters(column: int) -> str:
    letters = _LETTERS.get(column)
    if letters is None:
        letters = _LETTERS[column] = column_letter(column)
    return letters


@dataclass(frozen=True)
class _Range:
    """A cell range, rows 1-based and columns 0-based, both ends included."""

    first_row: int
    first_column: int
    last_row: int
    last_column: int

    @classmethod
    def parse(cls, ref: str) -> _Range:
        m = _RANGE_RE.match(ref.strip())
        if m is None:
            raise _Unsupported(f"cannot read the range {ref!r}")
        first_col, first_row = _column_index(m[1]), int(m[2])
        if m[3] is None:
            return cls(first_row, first_col, first_row, first_col)
        return cls(first_row, first_col, int(m[4]), _column_index(m[3]))

    def __contains__(self, cell: tuple[int, int]) -> bool:
        row, column = cell
        return self.first_row <= row <= self.last_row and self.first_column <= column <= self.last_column

    def ref(self) -> str:
        start = f"{_letters(self.first_column)}{self.first_row}"
        end = f"{_letters(self.last_column)}{self.last_row}"
        return start if start == end else f"{start}:{end}"

    def absolute(self) -> str:
        start = f"${_letters(self.first_column)}${self.first_row}"
        end = f"${_letters(self.last_column)}${self.last_row}"
        return start if start == end else f"{start}:{end}"

    def to_row(self, last_row: int) -> _Range:
        return _Range(self.first_row, self.first_column, last_row, self.last_column)


def _text_xml(value: str) -> str:
    if len(value) > _MAX_TEXT:
        raise _Unsupported(f"text of {len(value)} characters, more than the {_MAX_TEXT} a cell keeps")
    # Excel reads "_xHHHH_" as one escaped character: a literal one has its "_" escaped, and
    # characters XML cannot hold are written that way.
    value = _ESCAPED_CHAR_RE.sub(lambda m: "_x005F" + m[0], value)
    value = _ILLEGAL_XML_RE.sub(lambda m: f"_x{ord(m[0]):04X}_", value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _number_text(value: int | float | Decimal) -> str:
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            raise _Unsupported(
                f"a number of {len(str(abs(value)))} digits, larger than a cell can hold"
            ) from None
        return int.__repr__(value)  # an IntEnum as its number too
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unsupported(f"the number {value!r}, which a cell cannot hold")
        text = float.__repr__(value)
        return text[:-2] if text.endswith(".0") else text
    if not value.is_finite() or not math.isfinite(float(value)):
        raise _Unsupported(f"the number {value}, which a cell cannot hold")
    return "0" if value == 0 else format(value, "f")


def _date_serial(value: date, date1904: bool) -> str:
    day = value.date() if isinstance(value, datetime) else value
    if isinstance(value, datetime) and value.tzinfo is not None:
        raise _Unsupported(
            f"the date and time {value.isoformat()} with a time zone, which a cell cannot hold"
        )
    if date1904:
        days = (day - _EPOCH_1904).days
    else:
        days = (day - _EPOCH_1900).days - (1 if day < _LEAP_BUG_END else 0)
    if days < (0 if date1904 else 1):
        raise _Unsupported(f"the date {day.isoformat()}, earlier than this workbook's dates can go")
    if isinstance(value, datetime):
        seconds = value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1_000_000
        return str(days) if seconds == 0 else repr(days + seconds / 86400)
    return str(days)


# -- one worksheet ---------------------------------------------------------------------------


# A parsed cell: (column, whole element, attributes, content); content is "" for <c .../>.
_Cell = tuple[int, str, str, str]


@dataclass
class _Cells:
    """A row's cells as parallel lists, in column order."""

    columns: list[int]
    elements: list[str]
    attrs: list[str]
    inners: list[str]

    def __iter__(self) -> Any:
        return zip(self.columns, self.elements, self.attrs, self.inners, strict=True)


@dataclass
class _SheetResult:
    old_last: int = 1
    new_last: int = 1
    filter_change: tuple[_Range, _Range] | None = None


_UNNUMBERED_ROW_RE = re.compile(r"<row(?![^>]*\sr\s*=)[\s/>]")
_UNNUMBERED_CELL_RE = re.compile(r"<c(?![^>]*\sr\s*=)[\s/>]")
_ROW_OR_CELL_RE = re.compile(r"<(row|c)\b([^>]*?)(/?)>")


def _number_rows_and_cells(data: str) -> str:
    """``<sheetData>``'s content with an ``r`` on every row and cell, as a reader counts them."""
    out: list[str] = []
    pos = 0
    row = 0
    column = -1
    for m in _ROW_OR_CELL_RE.finditer(data):
        out.append(data[pos : m.start()])
        pos = m.end()
        tag, attributes, close = m[1], m[2], m[3]
        found = _attrs(attributes).get("r")
        if tag == "row":
            row = int(found) if found and found.isdigit() else row + 1
            column = -1
            if not found:
                attributes = f' r="{row}"{attributes}'
        else:
            ref = _RANGE_RE.match(found) if found else None
            column = _column_index(ref[1]) if ref else column + 1
            if not found:
                attributes = f' r="{_letters(column)}{row}"{attributes}'
        out.append(f"<{tag}{attributes}{close}>")
    out.append(data[pos:])
    return "".join(out)


class _Sheet:
    """The text of one worksheet part and an index of its rows."""

    def __init__(self, text: str, name: str, main: str) -> None:
        m = _SHEET_DATA_RE.search(text)
        if m is None:
            raise _Unsupported(
                f"its part {name} has no <sheetData> (or a namespace prefix crmkit does not edit)"
            )
        head = text[: m.start()]
        root = re.search(r"<worksheet\b([^>]*)>", head)
        if root is None or _attrs(root[1]).get("xmlns") != main:
            raise _Unsupported(f"its part {name} is not a worksheet in the default namespace")
        if m[2]:
            text = f"{text[: m.start()]}<sheetData{m[1]}></sheetData>{text[m.end() :]}"
            m = _SHEET_DATA_RE.search(text, m.start())
            assert m is not None
        self.name = name
        self.text = text
        self.data_start = m.end()
        self.data_end = text.find("</sheetData>", self.data_start)
        if self.data_end < 0:
            raise _Unsupported(f"{name}: <sheetData> is not closed")
        if (
            text.find("<!", self.data_start, self.data_end) >= 0
            or text.find("<?", self.data_start, self.data_end) >= 0
            or _PREFIXED_ELEMENT_RE.search(text, self.data_start, self.data_end)
        ):
            raise _Unsupported(f"{name}: comments, CDATA or extension elements among the rows")
        data = text[self.data_start : self.data_end]
        if _UNNUMBERED_ROW_RE.search(data) or _UNNUMBERED_CELL_RE.search(data):
            # References are optional (some tools leave them out); rows and cells then follow
            # on from the one before. Numbered, the rows can be indexed like any others.
            data = _number_rows_and_cells(data)
            self.text = text = text[: self.data_start] + data + text[self.data_end :]
            self.data_end = self.data_start + len(data)
        self.numbers: list[int] = []
        self.starts: list[int] = []
        self.ends: list[int] = []
        self._index_rows()

    def _index_rows(self) -> None:
        # A plain loop over str.find: several times faster than a regex over the rows.
        text, end_of_data = self.text, self.data_end
        find, startswith = text.find, text.startswith
        numbers, starts, ends = self.numbers, self.starts, self.ends
        pos = self.data_start
        while True:
            start = find("<row", pos, end_of_data)
            if start < 0:
                break
            tag_end = find(">", start, end_of_data) + 1
            if tag_end <= 0 or text[start + 4] not in " \t\r\n":
                raise _Unsupported(f"{self.name}: a row tag that cannot be read")
            if startswith('<row r="', start):
                number = text[start + 8 : find('"', start + 8, tag_end)]
            else:
                m = _ROW_NUMBER_RE.search(text, start, tag_end)
                number = m[1] if m else ""
            if not number.isdigit():
                raise _Unsupported(f"{self.name}: a row without its number")
            if text[tag_end - 2] == "/":
                end = tag_end
            else:
                end = find("</row>", tag_end, end_of_data)
                if end < 0:
                    raise _Unsupported(f"{self.name}: a row that is not closed")
                end += 6
            if start != pos and text[pos:start].strip():
                raise _Unsupported(f"{self.name}: something besides rows in <sheetData>")
            numbers.append(int(number))
            starts.append(start)
            ends.append(end)
            pos = end
        if text[pos:end_of_data].strip():
            raise _Unsupported(f"{self.name}: something besides rows in <sheetData>")
        if numbers and (numbers != sorted(set(numbers)) or numbers[0] < 1 or numbers[-1] > _MAX_ROW):
            raise _Unsupported(f"{self.name}: rows out of order")

    def position(self, row: int) -> int | None:
        i = bisect.bisect_left(self.numbers, row)
        return i if i < len(self.numbers) and self.numbers[i] == row else None

    def tag_end(self, i: int) -> int:
        """Where the start tag of the row at index ``i`` ends (its end, for ``<row .../>``)."""
        return self.text.index(">", self.starts[i]) + 1

    def body(self, i: int) -> str:
        tag_end, end = self.tag_end(i), self.ends[i]
        return "" if tag_end == end else self.text[tag_end : end - 6]

    def cells(self, i: int) -> _Cells:
        """The cells of the row at index ``i``, checked: all with references, in order, nothing else."""
        row, body = str(self.numbers[i]), self.body(i)
        found = _CELL_RE.findall(body)
        if not found:
            if body.strip():
                raise _Unsupported(f"{self.name} row {row}: something besides numbered cells")
            return _Cells([], [], [], [])
        elements, letters, digits, attrs, inners = (list(t) for t in zip(*found, strict=True))
        if sum(map(len, elements)) != len(body) and _CELL_RE.sub("", body).strip():
            raise _Unsupported(f"{self.name} row {row}: something besides numbered cells")
        columns = list(map(_column_indexes().__getitem__, letters))
        if set(digits) != {row} or columns != sorted(set(columns)):
            raise _Unsupported(f"{self.name} row {row}: cells out of order or misnumbered")
        return _Cells(columns, elements, attrs, inners)

    def style_at(self, row: int, column: int) -> str | None:
        """The ``s`` of a cell as it is in the file, or None."""
        i = self.position(row)
        if i is None:
            return None
        cells = self.cells(i)
        k = bisect.bisect_left(cells.columns, column)
        if k < len(cells.columns) and cells.columns[k] == column:
            return _attrs(cells.attrs[k]).get("s")
        return None


class _Patcher:
    def __init__(self, package: Package, styles: Styles) -> None:
        self.package = package
        self.styles = styles
        self.main = package.ns.main
        self.texts: dict[str, str] = {}  # parts read or changed, as text, by member name
        self.sheet_id = 0  # of the sheet being written
        self.unformulated: set[tuple[int, str]] = set()  # (sheetId, cell) whose formula was replaced
        book = ET.fromstring(package.read(package.workbook))
        props = book.find(f"{{{self.main}}}workbookPr")
        self.date1904 = props is not None and props.get("date1904", "0").lower() in ("1", "true")

    def text(self, name: str) -> str:
        """A part's text as it stands: changed already, or as in the source."""
        if name not in self.texts:
            self.texts[name] = self.package.text(name)
        return self.texts[name]

    def put(self, name: str, text: str) -> None:
        self.texts[name] = text
        self.package.put(name, text)

    # -- the whole job --

    def run(self, changes: list[SheetChanges], sheets: dict[str, SheetEntry]) -> None:
        filters: dict[int, tuple[str, _Range, _Range]] = {}
        changed = False
        for change in changes:
            if not change.cells and not change.append:
                continue
            entry = sheets.get(change.title.strip().casefold())
            if entry is None or entry.kind != "worksheet" or entry.part is None:
                raise _Unsupported(f"the workbook has no worksheet {change.title!r} to write into")
            self.sheet_id = entry.sheet_id
            try:
                result = self.patch_sheet(entry.part, change)
            except _Unsupported as exc:
                raise _Unsupported(f"sheet {entry.name!r}: {exc}") from None
            changed = True
            if result.filter_change is not None:
                old, new = result.filter_change
                earlier = filters.get(entry.index)
                filters[entry.index] = (entry.name, earlier[1] if earlier else old, new)
        if changed:
            workbook = self.package.workbook
            self.put(workbook, self.patch_book(self.text(workbook), filters))
        if self.unformulated:
            self._drop_from_calc_chain()

    def _drop_from_calc_chain(self) -> None:
        """Take cells whose formula crmkit replaced out of the calculation chain.

        Excel checks xl/calcChain.xml when it opens a file, and repairs it (with a
        prompt) when an entry names a cell without a formula. An entry without ``i``
        belongs to the sheet of the one before, so ``i`` is written out where a
        dropped entry carried it.
        """
        chains = self.package.related(self.package.workbook, "calcChain")
        part = self.package.member(chains[0].target) if chains else None
        if part is None:
            return
        text = self.text(part)
        sheet = 0
        last_written = -1

        def keep(m: re.Match[str]) -> str:
            nonlocal sheet, last_written
            attributes = _attrs(m[1])
            if "i" in attributes and attributes["i"].isdigit():
                sheet = int(attributes["i"])
            if (sheet, attributes.get("r", "")) in self.unformulated:
                return ""
            element = m[0]
            if "i" not in attributes and sheet != last_written:
                element = f'<c i="{sheet}"{element[2:]}'
            last_written = sheet
            return element

        self.put(part, re.sub(r"<c\b([^>]*?)/>", keep, text))

    # -- workbook.xml --

    def patch_book(self, text: str, filters: dict[int, tuple[str, _Range, _Range]]) -> str:
        root = re.search(r"<workbook\b([^>]*)>", text)
        if root is None or _attrs(root[1]).get("xmlns") != self.main:
            raise _Unsupported("its workbook part uses a namespace prefix")
        for index, (_title, old, new) in filters.items():
            text = self._patch_filter_name(text, index, old, new)
        calc = re.search(r"<calcPr\b([^>]*?)(/?)>", text)
        if calc is not None:
            tag = calc[0]
            if "fullCalcOnLoad" in _attrs(calc[1]):
                tag = _set_attr(tag, "fullCalcOnLoad", "1")
            else:
                tag = f'{tag[: -len(calc[2]) - 1].rstrip()} fullCalcOnLoad="1"{calc[2]}>'
            return text[: calc.start()] + tag + text[calc.end() :]
        # calcPr goes after definedNames (or whichever of its predecessors is last).
        for element in ("definedNames", "externalReferences", "functionGroups", "sheets"):
            m = re.search(rf"</{element}>|<{element}\b[^>]*/>", text)
            if m is not None:
                return f'{text[: m.end()]}<calcPr fullCalcOnLoad="1"/>{text[m.end() :]}'
        raise _Unsupported("workbook.xml has no <sheets>")

    @staticmethod
    def _patch_filter_name(text: str, index: int, old: _Range, new: _Range) -> str:
        pattern = re.compile(r"<definedName\b([^>]*)>([^<]*)</definedName>")
        for m in pattern.finditer(text):
            attrs = _attrs(m[1])
            if attrs.get("name") != "_xlnm._FilterDatabase" or attrs.get("localSheetId") != str(index):
                continue
            sheet, bang, ref = m[2].rpartition("!")
            try:
                current = _Range.parse(ref)
            except _Unsupported:
                return text
            if not bang or current != old:
                return text
            return f"{text[: m.start(2)]}{sheet}!{new.absolute()}{text[m.end(2) :]}"
        return text

    # -- a worksheet --

    def patch_sheet(self, part: str, change: SheetChanges) -> _SheetResult:
        sheet = _Sheet(self.text(part), part, self.main)
        text = sheet.text
        head, tail = text[: sheet.data_start], text[sheet.data_end :]
        result = _SheetResult()

        writes: dict[int, dict[int, Any]] = {}
        for cell in change.cells:
            row, column = cell.row, cell.column
            if type(row) is not int or type(column) is not int:
                raise _Unsupported("a cell position that is not a whole number")
            if not (1 <= row <= _MAX_ROW and 0 <= column < _MAX_COLUMN):
                raise _Unsupported(f"cell ({row}, {column}) is outside a sheet")
            row_writes = writes.get(row)
            if row_writes is None:
                row_writes = writes[row] = {}
            row_writes[column] = cell.value

        last = self._last_data_row(sheet, writes)
        result.old_last = result.new_last = last
        # Appended cells copy the styles of the last data row (never of the header row).
        copy_styles = bool(change.append) and last >= 2
        template: dict[int, str] = {}
        if copy_styles and last not in writes:
            i = sheet.position(last)
            if i is not None:
                template = {c[0]: s for c in sheet.cells(i) if (s := _attrs(c[2]).get("s"))}
        for offset, values in enumerate(change.append, start=1):
            row = last + offset
            if row > _MAX_ROW:
                raise _Unsupported(
                    f"new rows would go past row {_MAX_ROW:,}, the last a sheet has: "
                    "something is typed at the very bottom of the sheet; clear it and sync again"
                )
            if len(values) > _MAX_COLUMN:
                raise _Unsupported("an appended row wider than a sheet")
            for column, value in enumerate(values):
                if value is not None:
                    writes.setdefault(row, {})[column] = value
        result.new_last = last + len(change.append)

        tables = self._tables(part)
        self._refuse_protected_cells(sheet, tail, writes, tables)
        column_styles = self._column_styles(head)

        out = [""]  # the head, once the dimension is known
        pos = sheet.data_start
        numbers, starts, ends = sheet.numbers, sheet.starts, sheet.ends
        count = len(numbers)
        j = 0  # index of the first existing row at or after the row being written
        top = bottom = left = right = -1
        for row in sorted(writes):
            row_writes = writes[row]
            while j < count and numbers[j] < row:
                j += 1
            row_template = template if row > last else {}
            if j < count and numbers[j] == row:
                xml, columns = self._rebuild_row(sheet, j, row_writes, row_template, column_styles)
                out.append(text[pos : starts[j]])
                pos = ends[j]
            else:
                xml, columns = self._new_row(sheet, row, row_writes, row_template, column_styles)
                insert_at = starts[j] if j < count else sheet.data_end
                out.append(text[pos:insert_at])
                pos = insert_at
            out.append(xml)
            if copy_styles and row == last:
                template = self._styles_in(xml)  # the row's styles after its own changes
            if columns:
                if top < 0:
                    top, left = row, columns[0]
                bottom = row
                left = min(left, columns[0])
                right = max(right, columns[-1])
        out.append(text[pos : sheet.data_end])

        if top > 0:
            head = self._grow_dimension(head, _Range(top, left, bottom, right))
        out[0] = head
        if result.new_last > result.old_last:
            tail, result.filter_change = self._grow_filter(tail, result.old_last, result.new_last)
            for table_part, table_text, _ref in tables:
                grown = self._grow_table(table_text, result.old_last, result.new_last)
                if grown is not None:
                    self.put(table_part, grown)
        out.append(tail)
        self.put(part, "".join(out))
        return result

    @staticmethod
    def _styles_in(row_xml: str) -> dict[int, str]:
        return {_column_index(f[1]): s for f in _CELL_RE.findall(row_xml) if (s := _attrs(f[3]).get("s"))}

    @staticmethod
    def _last_data_row(sheet: _Sheet, writes: dict[int, dict[int, Any]]) -> int:
        """The last row holding a value once ``writes`` are made (at least 1), as openpyxl counts it."""
        for row in sorted(set(sheet.numbers) | set(writes), reverse=True):
            if row <= 1:
                break
            row_writes = writes.get(row, {})
            if any(v is not None and v != "" for v in row_writes.values()):
                return row
            i = sheet.position(row)
            if i is None:
                continue
            if not row_writes:
                if _HAS_VALUE_RE.search(sheet.body(i)):
                    return row
                continue
            for column, _element, _attrs_text, inner in sheet.cells(i):
                if column not in row_writes and inner and _HAS_VALUE_RE.search(inner):
                    return row
        return 1

    def _tables(self, part: str) -> list[tuple[str, str, _Range]]:
        tables = []
        for rel in self.package.related(part, "table"):
            target = rel.target
            name = self.package.member(target)
            if name is None:
                raise _Unsupported(f"table part {target} is missing")
            text = self.text(name)
            root = _TABLE_ROOT_RE.search(text)
            if root is None or _attrs(root[1]).get("xmlns") != self.main:
                raise _Unsupported(f"{name} is not a SpreadsheetML table in the default namespace")
            tables.append((name, text, _Range.parse(_attrs(root[1]).get("ref", ""))))
        return tables

    def _refuse_protected_cells(
        self,
        sheet: _Sheet,
        tail: str,
        writes: dict[int, dict[int, Any]],
        tables: list[tuple[str, str, _Range]],
    ) -> None:
        """No writes into array or shared formula ranges, merged areas (but their top-left cell),
        or a table's header row."""
        ranges: list[tuple[_Range, bool]] = []  # (area, whether its top-left cell may be written)
        for m in _FORMULA_REF_RE.finditer(sheet.text, sheet.data_start, sheet.data_end):
            formula_ref = _attrs(m[1]).get("ref")
            if formula_ref:
                ranges.append((_Range.parse(formula_ref), False))
        for m in _MERGE_RE.finditer(tail):
            ranges.append((_Range.parse(_attrs(m[1]).get("ref", "")), True))
        for _part, text, table in tables:
            root = _TABLE_ROOT_RE.search(text)
            assert root is not None
            if _attrs(root[1]).get("headerRowCount", "1") != "0":
                header = _Range(table.first_row, table.first_column, table.first_row, table.last_column)
                ranges.append((header, False))
        if not ranges:
            return
        lowest = min(area.first_row for area, _ in ranges)
        highest = max(area.last_row for area, _ in ranges)
        for row, row_writes in writes.items():
            if row < lowest or row > highest:
                continue
            for column in row_writes:
                for area, anchor_ok in ranges:
                    if (row, column) in area and not (
                        anchor_ok and (row, column) == (area.first_row, area.first_column)
                    ):
                        raise _Unsupported(
                            f"cell {_letters(column)}{row} is inside {area.ref()} (a shared or array "
                            "formula, a merged area or a table's header row), which crmkit never writes into"
                        )

    @staticmethod
    def _column_styles(head: str) -> dict[int, str]:
        styles: dict[int, str] = {}
        start = head.find("<cols")
        if start < 0:
            return styles
        end = head.find("</cols>", start)
        for m in _COL_RE.finditer(head, start, end if end >= 0 else len(head)):
            attrs = _attrs(m[1])
            style = attrs.get("style")
            if style and style != "0":
                first, last = int(attrs.get("min", "0")), int(attrs.get("max", "0"))
                if last - first > _MAX_COLUMN:
                    raise _Unsupported("a <col> wider than a sheet")
                for column in range(max(first, 1), min(last, _MAX_COLUMN) + 1):
                    styles[column - 1] = style
        return styles

    # -- rows and cells --

    def _rebuild_row(
        self,
        sheet: _Sheet,
        i: int,
        row_writes: dict[int, Any],
        template: dict[int, str],
        column_styles: dict[int, str],
    ) -> tuple[str, list[int]]:
        """The row at index ``i`` with its writes made; and the columns now holding values, in order."""
        row = sheet.numbers[i]
        cells = sheet.cells(i)
        columns, elements = cells.columns, cells.elements
        count = len(columns)
        pieces: list[str] = []
        valued: list[int] = []
        added = False
        k = 0
        for column in sorted(row_writes):
            at = bisect.bisect_left(columns, column, k)
            pieces.extend(elements[k:at])
            existing: _Cell | None = None
            if at < count and columns[at] == column:
                existing = (column, elements[at], cells.attrs[at], cells.inners[at])
                at += 1
            k = at
            value = row_writes[column]
            xml = self._cell_xml(sheet, row, column, value, existing, template, column_styles)
            if xml:
                pieces.append(xml)
                added = added or existing is None
                if value is not None and value != "":
                    valued.append(column)
        pieces.extend(elements[k:])
        body = "".join(pieces)
        tag_end = sheet.tag_end(i)
        tag = sheet.text[sheet.starts[i] : tag_end]
        if added:
            spans = _SPANS_RE.search(tag)
            if spans is not None:
                tag = self._fix_spans(tag, spans, [*columns, *row_writes])
        if tag_end == sheet.ends[i]:  # <row .../>
            if not body:
                return tag, valued
            tag = tag[:-2].rstrip() + ">"
        return f"{tag}{body}</row>", valued

    @staticmethod
    def _fix_spans(tag: str, spans: re.Match[str], columns: list[int]) -> str:
        value = _attrs(spans[0])["spans"]
        m = re.fullmatch(r"\s*(\d+):(\d+)\s*", value)
        if m is None or not columns:
            return tag[: spans.start()] + tag[spans.end() :]
        first, last = min(int(m[1]), min(columns) + 1), max(int(m[2]), max(columns) + 1)
        return f'{tag[: spans.start()]} spans="{first}:{last}"{tag[spans.end() :]}'

    def _new_row(
        self,
        sheet: _Sheet,
        row: int,
        row_writes: dict[int, Any],
        template: dict[int, str],
        column_styles: dict[int, str],
    ) -> tuple[str, list[int]]:
        pieces: list[str] = []
        valued: list[int] = []
        for column in sorted(row_writes):
            xml = self._cell_xml(sheet, row, column, row_writes[column], None, template, column_styles)
            if xml:
                pieces.append(xml)
                valued.append(column)
        if not pieces:
            return "", []
        return f'<row r="{row}">{"".join(pieces)}</row>', valued

    def _cell_xml(
        self,
        sheet: _Sheet,
        row: int,
        column: int,
        value: Any,
        existing: _Cell | None,
        template: dict[int, str],
        column_styles: dict[int, str],
    ) -> str:
        """The new XML of one cell; "" to leave no element."""
        style: str | None = None
        own_style = False  # the cell's style was chosen by a person, not taken from its column
        ref = f"{_letters(column)}{row}"
        number_format: str | None = None
        if isinstance(value, Formatted):
            value, number_format = value.value, value.number_format
        if existing is not None:
            attrs = _attrs(existing[2])
            if "cm" in attrs or "vm" in attrs:
                raise _Unsupported(
                    f"cell {ref} holds a picture or rich value, which crmkit never writes over"
                )
            style = attrs.get("s")
            own_style = style not in (None, "0")
            if "<f" in existing[3]:
                self.unformulated.add((self.sheet_id, ref))
        if template.get(column, "0") != "0":  # an appended cell: the style of the one above
            style, own_style = template[column], True
        if existing is None and style is None:
            # A new cell looks the way its column was formatted, as when a person types into
            # it; but a number never takes a column's date format (it would read back as a date).
            style = column_styles.get(column)
            if (
                style is not None
                and isinstance(value, (int, float, Decimal))
                and not isinstance(value, bool)
                and self.styles.shows_date(style, False)
            ):
                style = None

        if value is None or value == "":
            # Clearing: a cell with a style of its own keeps it, empty; otherwise it goes.
            return f'<c r="{ref}" s="{style}"/>' if existing is not None and own_style else ""
        if isinstance(value, str):
            if _SURROGATE_RE.search(value):
                raise _Unsupported(f"cell {ref}: text with a broken character (a lone UTF-16 surrogate)")
            if value.startswith(_FORMULA_STARTS):
                style = self.styles.quote_prefixed(style)
            s = f' s="{style}"' if style is not None else ""
            return (
                f'<c r="{ref}"{s} t="inlineStr"><is><t xml:space="preserve">{_text_xml(value)}</t></is></c>'
            )
        if isinstance(value, bool):
            s = f' s="{style}"' if style is not None else ""
            return f'<c r="{ref}"{s} t="b"><v>{int(value)}</v></c>'
        if isinstance(value, (int, float, Decimal)):
            if number_format is not None:
                style = self.styles.with_format(style, number_format)
            elif style is not None and self.styles.shows_date(style, False):
                style = self.styles.with_format(style, "General")  # a number, not a date
            s = f' s="{style}"' if style is not None else ""
            return f'<c r="{ref}"{s}><v>{_number_text(value)}</v></c>'
        if isinstance(value, date):
            with_time = isinstance(value, datetime) and value.time() != time(0)
            if number_format is not None:
                style = self.styles.with_format(style, number_format)
            elif style is None or not self.styles.shows_date(style, with_time):
                # The date format of the cell above when it looks the same; else this look with a
                # date format (one the workbook has, or one appended).
                above = sheet.style_at(row - 1, column) if row > 1 else None
                if above is not None and self.styles.shows_date(above, with_time) and not own_style:
                    style = above
                else:
                    style = self.styles.as_date(style, with_time) or self.styles.with_format(
                        style, "yyyy-mm-dd hh:mm" if with_time else "yyyy-mm-dd"
                    )
            return f'<c r="{ref}" s="{style}"><v>{_date_serial(value, self.date1904)}</v></c>'
        raise _Unsupported(f"cell {ref}: a value of type {type(value).__name__}")

    # -- ranges that grow --

    @staticmethod
    def _grow_dimension(head: str, written: _Range) -> str:
        m = _DIMENSION_RE.search(head)
        if m is None:
            return head
        old = _Range.parse(_attrs(m[1]).get("ref", ""))
        grown = _Range(
            min(old.first_row, written.first_row),
            min(old.first_column, written.first_column),
            max(old.last_row, written.last_row),
            max(old.last_column, written.last_column),
        )
        if grown == old:
            return head
        return head[: m.start()] + _set_attr(m[0], "ref", grown.ref()) + head[m.end() :]

    @staticmethod
    def _grow_filter(tail: str, old_last: int, new_last: int) -> tuple[str, tuple[_Range, _Range] | None]:
        views = tail.find("<customSheetViews")  # custom views have auto-filters of their own
        m = _AUTOFILTER_RE.search(tail, 0, views if views >= 0 else len(tail))
        if m is None:
            return tail, None
        ref = _attrs(m[1]).get("ref")
        if not ref or ":" not in ref:
            return tail, None
        old = _Range.parse(ref)
        if old.last_row > old_last:  # as the openpyxl writer decides
            return tail, None
        new = old.to_row(new_last)
        return tail[: m.start()] + _set_attr(m[0], "ref", new.ref()) + tail[m.end() :], (old, new)

    @staticmethod
    def _grow_table(text: str, old_last: int, new_last: int) -> str | None:
        root = _TABLE_ROOT_RE.search(text)
        assert root is not None
        attrs = _attrs(root[1])
        old = _Range.parse(attrs.get("ref", ""))
        if old.last_row != old_last:
            return None
        if attrs.get("totalsRowCount", "0") != "0":
            raise _Unsupported("appending to a table with a totals row")
        new = old.to_row(new_last)
        text = text[: root.start()] + _set_attr(root[0], "ref", new.ref()) + text[root.end() :]
        for m in _AUTOFILTER_RE.finditer(text):
            ref = _attrs(m[1]).get("ref")
            if ref and _Range.parse(ref) == old:
                text = text[: m.start()] + _set_attr(m[0], "ref", new.ref()) + text[m.end() :]
                break
        return text
