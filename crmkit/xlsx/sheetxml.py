"""A worksheet part's XML as text: its rows indexed by number, cell references, and values as
the XML of a cell. :mod:`crmkit.xlsx.patch` builds on it to change cells without parsing the sheet.
"""

from __future__ import annotations

import bisect
import math
import re
from dataclasses import dataclass
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from crmkit.sync.model import column_letter
from crmkit.xlsx.package import attrs as tag_attrs

__all__ = [
    "CELL_RE",
    "MAX_COLUMN",
    "MAX_ROW",
    "Cell",
    "Range",
    "Sheet",
    "Unsupported",
    "column_index",
    "date_serial",
    "letters",
    "number_text",
    "replace_attr",
    "text_xml",
]

MAX_ROW = 1_048_576
MAX_COLUMN = 16_384
_MAX_TEXT = 32_767  # characters Excel keeps in a cell
_EPOCH_1900 = date(1899, 12, 30)
_EPOCH_1904 = date(1904, 1, 1)
_LEAP_BUG_END = date(1900, 3, 1)  # Excel counts a 29 February 1900 that never was

_SHEET_DATA_RE = re.compile(r"<sheetData\b([^>]*?)(/?)>")
_ROW_NUMBER_RE = re.compile(r"""\sr\s*=\s*["'](\d+)["']""")
# A cell with its reference: (whole element, column letters, row digits, attributes, content).
CELL_RE = re.compile(
    r"""(<c\b(?=[^>]*?\sr\s*=\s*["']([A-Z]{1,3})(\d+)["'])([^>]*?)(?:/>|>(.*?)</c>))""",
    re.S,
)
_PREFIXED_ELEMENT_RE = re.compile(r"</?[A-Za-z_][\w.-]*:")
_RANGE_RE = re.compile(r"^\$?([A-Z]{1,3})\$?(\d+)(?::\$?([A-Z]{1,3})\$?(\d+))?$")
_ILLEGAL_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ESCAPED_CHAR_RE = re.compile("_x[0-9A-Fa-f]{4}_")  # Excel reads it as one escaped character


class Unsupported(Exception):
    """A change this module cannot make safely; the caller reports it and writes nothing."""


# -- small helpers -----------------------------------------------------------------


def replace_attr(tag: str, name: str, value: str) -> str:
    """``tag`` with the value of its attribute ``name`` replaced; there must be one."""
    pattern = re.compile(rf"(\s{re.escape(name)}\s*=\s*)(\"[^\"]*\"|'[^']*')")
    new, count = pattern.subn(lambda m: f'{m[1]}"{value}"', tag, count=1)
    if count != 1:
        raise Unsupported(f"no {name} attribute to change in {tag[:60]!r}")
    return new


_COLUMN_INDEX: dict[str, int] = {}


def column_index(letters: str) -> int:
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
    if len(_COLUMN_INDEX) < MAX_COLUMN:
        for column in range(MAX_COLUMN):
            _COLUMN_INDEX[column_letter(column)] = column
    return _COLUMN_INDEX


_LETTERS: dict[int, str] = {}


def letters(column: int) -> str:
    letters = _LETTERS.get(column)
    if letters is None:
        letters = _LETTERS[column] = column_letter(column)
    return letters


@dataclass(frozen=True)
class Range:
    """A cell range, rows 1-based and columns 0-based, both ends included."""

    first_row: int
    first_column: int
    last_row: int
    last_column: int

    @classmethod
    def parse(cls, ref: str) -> Range:
        m = _RANGE_RE.match(ref.strip())
        if m is None:
            raise Unsupported(f"cannot read the range {ref!r}")
        first_col, first_row = column_index(m[1]), int(m[2])
        if m[3] is None:
            return cls(first_row, first_col, first_row, first_col)
        return cls(first_row, first_col, int(m[4]), column_index(m[3]))

    def __contains__(self, cell: tuple[int, int]) -> bool:
        row, column = cell
        return self.first_row <= row <= self.last_row and self.first_column <= column <= self.last_column

    def ref(self) -> str:
        start = f"{letters(self.first_column)}{self.first_row}"
        end = f"{letters(self.last_column)}{self.last_row}"
        return start if start == end else f"{start}:{end}"

    def absolute(self) -> str:
        start = f"${letters(self.first_column)}${self.first_row}"
        end = f"${letters(self.last_column)}${self.last_row}"
        return start if start == end else f"{start}:{end}"

    def to_row(self, last_row: int) -> Range:
        return Range(self.first_row, self.first_column, last_row, self.last_column)


def text_xml(value: str) -> str:
    if len(value) > _MAX_TEXT:
        raise Unsupported(f"text of {len(value)} characters, more than the {_MAX_TEXT} a cell keeps")
    # Excel reads "_xHHHH_" as one escaped character: a literal one has its "_" escaped, and
    # characters XML cannot hold are written that way.
    value = _ESCAPED_CHAR_RE.sub(lambda m: "_x005F" + m[0], value)
    value = _ILLEGAL_XML_RE.sub(lambda m: f"_x{ord(m[0]):04X}_", value)
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def number_text(value: int | float | Decimal) -> str:
    if isinstance(value, int):
        try:
            float(value)
        except OverflowError:
            raise Unsupported(
                f"a number of {len(str(abs(value)))} digits, larger than a cell can hold"
            ) from None
        return int.__repr__(value)  # an IntEnum as its number too
    if isinstance(value, float):
        if not math.isfinite(value):
            raise Unsupported(f"the number {value!r}, which a cell cannot hold")
        text = float.__repr__(value)
        return text[:-2] if text.endswith(".0") else text
    if not value.is_finite() or not math.isfinite(float(value)):
        raise Unsupported(f"the number {value}, which a cell cannot hold")
    return "0" if value == 0 else format(value, "f")


def date_serial(value: date, date1904: bool) -> str:
    day = value.date() if isinstance(value, datetime) else value
    if isinstance(value, datetime) and value.tzinfo is not None:
        raise Unsupported(f"the date and time {value.isoformat()} with a time zone, which a cell cannot hold")
    if date1904:
        days = (day - _EPOCH_1904).days
    else:
        days = (day - _EPOCH_1900).days - (1 if day < _LEAP_BUG_END else 0)
    if days < (0 if date1904 else 1):
        raise Unsupported(f"the date {day.isoformat()}, earlier than this workbook's dates can go")
    if isinstance(value, datetime):
        seconds = value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1_000_000
        return str(days) if seconds == 0 else repr(days + seconds / 86400)
    return str(days)


# -- one worksheet ---------------------------------------------------------------------------


# A parsed cell: (column, whole element, attributes, content); content is "" for <c .../>.
Cell = tuple[int, str, str, str]


@dataclass
class _Cells:
    """A row's cells as parallel lists, in column order."""

    columns: list[int]
    elements: list[str]
    attrs: list[str]
    inners: list[str]

    def __iter__(self) -> Any:
        return zip(self.columns, self.elements, self.attrs, self.inners, strict=True)


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
        found = tag_attrs(attributes).get("r")
        if tag == "row":
            row = int(found) if found and found.isdigit() else row + 1
            column = -1
            if not found:
                attributes = f' r="{row}"{attributes}'
        else:
            ref = _RANGE_RE.match(found) if found else None
            column = column_index(ref[1]) if ref else column + 1
            if not found:
                attributes = f' r="{letters(column)}{row}"{attributes}'
        out.append(f"<{tag}{attributes}{close}>")
    out.append(data[pos:])
    return "".join(out)


class Sheet:
    """The text of one worksheet part and an index of its rows."""

    def __init__(self, text: str, name: str, main: str) -> None:
        m = _SHEET_DATA_RE.search(text)
        if m is None:
            raise Unsupported(
                f"its part {name} has no <sheetData> (or a namespace prefix crmkit does not edit)"
            )
        head = text[: m.start()]
        root = re.search(r"<worksheet\b([^>]*)>", head)
        if root is None or tag_attrs(root[1]).get("xmlns") != main:
            raise Unsupported(f"its part {name} is not a worksheet in the default namespace")
        if m[2]:
            text = f"{text[: m.start()]}<sheetData{m[1]}></sheetData>{text[m.end() :]}"
            m = _SHEET_DATA_RE.search(text, m.start())
            assert m is not None
        self.name = name
        self.text = text
        self.data_start = m.end()
        self.data_end = text.find("</sheetData>", self.data_start)
        if self.data_end < 0:
            raise Unsupported(f"{name}: <sheetData> is not closed")
        if (
            text.find("<!", self.data_start, self.data_end) >= 0
            or text.find("<?", self.data_start, self.data_end) >= 0
            or _PREFIXED_ELEMENT_RE.search(text, self.data_start, self.data_end)
        ):
            raise Unsupported(f"{name}: comments, CDATA or extension elements among the rows")
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
                raise Unsupported(f"{self.name}: a row tag that cannot be read")
            if startswith('<row r="', start):
                number = text[start + 8 : find('"', start + 8, tag_end)]
            else:
                m = _ROW_NUMBER_RE.search(text, start, tag_end)
                number = m[1] if m else ""
            if not number.isdigit():
                raise Unsupported(f"{self.name}: a row without its number")
            if text[tag_end - 2] == "/":
                end = tag_end
            else:
                end = find("</row>", tag_end, end_of_data)
                if end < 0:
                    raise Unsupported(f"{self.name}: a row that is not closed")
                end += 6
            if start != pos and text[pos:start].strip():
                raise Unsupported(f"{self.name}: something besides rows in <sheetData>")
            numbers.append(int(number))
            starts.append(start)
            ends.append(end)
            pos = end
        if text[pos:end_of_data].strip():
            raise Unsupported(f"{self.name}: something besides rows in <sheetData>")
        if numbers and (numbers != sorted(set(numbers)) or numbers[0] < 1 or numbers[-1] > MAX_ROW):
            raise Unsupported(f"{self.name}: rows out of order")

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
        found = CELL_RE.findall(body)
        if not found:
            if body.strip():
                raise Unsupported(f"{self.name} row {row}: something besides numbered cells")
            return _Cells([], [], [], [])
        elements, letters, digits, attrs, inners = (list(t) for t in zip(*found, strict=True))
        if sum(map(len, elements)) != len(body) and CELL_RE.sub("", body).strip():
            raise Unsupported(f"{self.name} row {row}: something besides numbered cells")
        columns = list(map(_column_indexes().__getitem__, letters))
        if set(digits) != {row} or columns != sorted(set(columns)):
            raise Unsupported(f"{self.name} row {row}: cells out of order or misnumbered")
        return _Cells(columns, elements, attrs, inners)

    def style_at(self, row: int, column: int) -> str | None:
        """The ``s`` of a cell as it is in the file, or None."""
        i = self.position(row)
        if i is None:
            return None
        cells = self.cells(i)
        k = bisect.bisect_left(cells.columns, column)
        if k < len(cells.columns) and cells.columns[k] == column:
            return tag_attrs(cells.attrs[k]).get("s")
        return None
