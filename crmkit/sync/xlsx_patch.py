"""Writing sync changes into an .xlsx by patching only the worksheets they touch.

openpyxl loads every sheet of a workbook into objects and writes them all out
again; for a workbook of 50,000 rows that takes seconds even when the sync only
fills in the ID column. :func:`patch_workbook` instead edits the XML of the
worksheets that change, as text, and copies every other part of the zip
byte for byte (compressed data included), in the same order.

It is deliberately conservative: whenever a change or a workbook is outside
what it knows to be safe (a new sheet, a formula cell, an array formula or
merged area over a target cell, a date in a cell without a date format, the
1904 date system, an unusual zip or XML layout, ...) it writes nothing and
returns ``False``, and the caller writes the workbook with openpyxl instead.

What it does to a workbook it patches:

* cell values: text as an inline string (never a formula, and sharedStrings.xml
  stays as it is; text starting with ``=+-@`` gets the cell's quotePrefix twin
  style when the workbook already has one), numbers and Decimals (exact text)
  as numbers, booleans as booleans, dates and datetimes as 1900-system serial
  numbers, ``None`` clears the value (a styled cell keeps its style, empty);
* a changed cell keeps its style; a new cell takes its column's style (but a
  number never takes a date format from its column), and an appended cell the
  style of the cell in the last data row above it;
* a date needs a style that shows dates (and times, for a datetime with one):
  the cell's own; or, for a cell without one, the cell above's, or an existing
  style that looks like the cell's but has a date format; styles.xml itself is
  never changed;
* rows are appended below the last row holding a value;
* the sheet's ``<dimension>``, its auto-filter (and the workbook's matching
  ``_xlnm._FilterDatabase`` name) and the Excel tables that ended at the last
  data row grow to cover appended rows;
* the workbook's ``calcPr`` gets ``fullCalcOnLoad="1"`` (as openpyxl writes it),
  so formulas over the changed cells are recomputed when the file is opened.
"""

from __future__ import annotations

import bisect
import gc
import logging
import math
import posixpath
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import unquote
from xml.etree import ElementTree as ET

from crmkit.sync.model import SheetChanges, column_letter

__all__ = ["patch_workbook"]

log = logging.getLogger(__name__)

_MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
_PKG_RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
_DOC_RELS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_OFFICE_DOCUMENT = f"{_DOC_RELS}/officeDocument"
_WORKSHEET = f"{_DOC_RELS}/worksheet"
_STYLES = f"{_DOC_RELS}/styles"
_TABLE = f"{_DOC_RELS}/table"
_M = f"{{{_MAIN_NS}}}"

_MAX_ROW = 1_048_576
_MAX_COLUMN = 16_384
_MAX_TEXT = 32_767  # characters Excel keeps in a cell
_DEFLATE_LEVEL = 6  # zlib's default, like openpyxl's
_FORMULA_STARTS = ("=", "+", "-", "@")
_EXCEL_EPOCH = date(1899, 12, 30)
_FIRST_SAFE_DATE = date(1900, 3, 1)  # before it, Excel's 1900 leap-year bug shifts serials

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
_ENCODING_RE = re.compile(rb"^<\?xml[^>]*\bencoding\s*=\s*[\"']([^\"']+)[\"']")
_ILLEGAL_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_ESCAPED_CHAR_RE = re.compile("_x[0-9A-Fa-f]{4}_")  # Excel reads it as one escaped character
_QUOTED_RE = re.compile(r'"[^"]*"|\\.|[_*].')
_BRACKET_RE = re.compile(r"\[([^\]]*)\]")

# Built-in number formats that show a date (14-17) or a date and a time (22).
_BUILTIN_DATE_FORMATS = {14: False, 15: False, 16: False, 17: False, 22: True}


class _Unsupported(Exception):
    """A change or a workbook this module does not patch; openpyxl writes it instead."""


def patch_workbook(source: Path, target: Path, changes: list[SheetChanges]) -> bool:
    """Write ``source`` with ``changes`` applied to ``target``, patching only the changed sheets.

    Returns ``False``, with nothing written, when a change or the workbook is
    one this module does not handle; the caller then writes it with openpyxl.
    Errors writing ``target`` (``OSError``) are raised, and a partly written
    ``target`` is removed.
    """
    source, target = Path(source), Path(target)
    # Patching makes hundreds of thousands of short-lived strings and lists, none in
    # reference cycles; the cyclic collector would only walk the caller's objects again
    # and again (15-30% of the time in a sync of 50,000 rows).
    collecting = gc.isenabled()
    gc.disable()
    try:
        with zipfile.ZipFile(source) as zf:
            members = _Patcher(zf).run(changes)
            comment = zf.comment
    except _Unsupported as exc:
        log.debug("%s: not patched in place: %s", source, exc)
        return False
    except Exception:  # a damaged or unusual workbook: openpyxl's path decides what to do
        log.debug("%s: not patched in place", source, exc_info=True)
        return False
    finally:
        if collecting:
            gc.enable()
    try:
        _write_zip(target, members, comment)
    except BaseException:
        target.unlink(missing_ok=True)
        raise
    return True


# -- the zip -------------------------------------------------------------------------


@dataclass
class _Member:
    """One zip member as it will be written: its data already compressed."""

    info: zipfile.ZipInfo
    method: int
    crc: int
    size: int
    payload: bytes
    flags: int


def _raw_payload(fh: Any, info: zipfile.ZipInfo) -> bytes:
    fh.seek(info.header_offset)
    head = fh.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise _Unsupported(f"bad local header for {info.filename}")
    name_length, extra_length = struct.unpack("<HH", head[26:30])
    fh.seek(info.header_offset + 30 + name_length + extra_length)
    payload = fh.read(info.compress_size)
    if len(payload) != info.compress_size:
        raise _Unsupported(f"{info.filename} is cut short")
    return payload


def _packed(info: zipfile.ZipInfo, data: bytes) -> _Member:
    if info.compress_type == zipfile.ZIP_STORED:
        method, payload = zipfile.ZIP_STORED, data
    else:
        method = zipfile.ZIP_DEFLATED
        packer = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -15)
        payload = packer.compress(data) + packer.flush()
    if len(data) >= 0xFFFFFFFF or len(payload) >= 0xFFFFFFFF:
        raise _Unsupported("a part would need ZIP64")
    return _Member(info, method, zlib.crc32(data), len(data), payload, info.flag_bits & 0x800)


def _dos_time(info: zipfile.ZipInfo) -> tuple[int, int]:
    year, month, day, hour, minute, second = info.date_time
    return hour << 11 | minute << 5 | second // 2, max(year - 1980, 0) << 9 | month << 5 | day


def _write_zip(target: Path, members: list[_Member], comment: bytes) -> None:
    central: list[bytes] = []
    with open(target, "wb") as out:
        for m in members:
            info = m.info
            name = info.orig_filename.encode("utf-8" if m.flags & 0x800 else "cp437")
            version = max(20, info.extract_version)
            dos_time, dos_date = _dos_time(info)
            offset = out.tell()
            if offset >= 0xFFFFFFFF:
                raise OSError("the workbook would need ZIP64")
            out.write(
                struct.pack(
                    "<4s5H3L2H",
                    b"PK\x03\x04",
                    version,
                    m.flags,
                    m.method,
                    dos_time,
                    dos_date,
                    m.crc,
                    len(m.payload),
                    m.size,
                    len(name),
                    0,
                )
            )
            out.write(name)
            out.write(m.payload)
            member_comment = info.comment or b""
            central.append(
                struct.pack(
                    "<4s6H3L5H2L",
                    b"PK\x01\x02",
                    info.create_system << 8 | info.create_version,
                    version,
                    m.flags,
                    m.method,
                    dos_time,
                    dos_date,
                    m.crc,
                    len(m.payload),
                    m.size,
                    len(name),
                    0,
                    len(member_comment),
                    0,
                    info.internal_attr,
                    info.external_attr,
                    offset,
                )
                + name
                + member_comment
            )
        start = out.tell()
        for entry in central:
            out.write(entry)
        size = out.tell() - start
        if start >= 0xFFFFFFFF:
            raise OSError("the workbook would need ZIP64")
        out.write(
            struct.pack(
                "<4s4H2LH", b"PK\x05\x06", 0, 0, len(members), len(members), size, start, len(comment)
            )
        )
        out.write(comment)


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


def _format_shows(code: str) -> tuple[bool, bool]:
    """Whether a number format code shows (a date, a time of day)."""
    code = _QUOTED_RE.sub("", code)
    elapsed = any(
        part.strip().lower() in ("h", "hh", "m", "mm", "s", "ss") for part in _BRACKET_RE.findall(code)
    )
    section = _BRACKET_RE.sub("", code).split(";")[0].lower()
    has_date = "d" in section or "y" in section
    has_time = "h" in section or "s" in section
    return has_date and not elapsed, has_time


def _text_xml(value: str) -> str:
    if len(value) > _MAX_TEXT:
        raise _Unsupported("text longer than Excel keeps in a cell")
    if _ILLEGAL_XML_RE.search(value) or _ESCAPED_CHAR_RE.search(value):
        raise _Unsupported("text with control characters or _xHHHH_ sequences")
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")


def _number_text(value: int | float | Decimal) -> str:
    if isinstance(value, int):
        return int.__repr__(value)  # an IntEnum as its number too
    if isinstance(value, float):
        if not math.isfinite(value):
            raise _Unsupported("a number that is not finite")
        text = float.__repr__(value)
        return text[:-2] if text.endswith(".0") else text
    if not value.is_finite() or not math.isfinite(float(value)):
        raise _Unsupported("a Decimal that is not finite")
    return "0" if value == 0 else format(value, "f")


def _date_serial(value: date) -> str:
    if isinstance(value, datetime):
        if value.tzinfo is not None:
            raise _Unsupported("a datetime with a time zone")
        if value.date() < _FIRST_SAFE_DATE:
            raise _Unsupported("a date before 1900-03-01")
        days = (value.date() - _EXCEL_EPOCH).days
        seconds = value.hour * 3600 + value.minute * 60 + value.second + value.microsecond / 1_000_000
        return str(days) if seconds == 0 else repr(days + seconds / 86400)
    if value < _FIRST_SAFE_DATE:
        raise _Unsupported("a date before 1900-03-01")
    return str((value - _EXCEL_EPOCH).days)


def _decode(data: bytes, name: str) -> str:
    """A part's text; a UTF-8 byte-order mark is dropped (the part is written back without it)."""
    data = data.removeprefix(b"\xef\xbb\xbf")
    m = _ENCODING_RE.match(data)
    if m and m[1].decode("ascii", "replace").lower().replace("_", "-") not in ("utf-8", "utf8"):
        raise _Unsupported(f"{name} is not UTF-8")
    return data.decode("utf-8")


# -- styles ------------------------------------------------------------------------------


class _Styles:
    """What the workbook's cell formats (``cellXfs``) show; styles.xml itself is never changed."""

    def __init__(self, data: bytes | None) -> None:
        self.formats: list[int] = []
        self.codes: dict[int, str] = {}
        self.quoted: dict[int, int] = {}  # a style -> the same style with quotePrefix, when one exists
        self.looks: list[tuple[Any, ...]] = []  # per style: everything but its number format
        if data is None:
            return
        root = ET.fromstring(data)
        if root.tag != f"{_M}styleSheet":
            raise _Unsupported("styles.xml is not a SpreadsheetML style sheet")
        for fmt in root.iterfind(f"{_M}numFmts/{_M}numFmt"):
            self.codes[int(fmt.get("numFmtId", "-1"))] = fmt.get("formatCode", "")
        keys: list[tuple[Any, ...]] = []
        with_prefix: dict[tuple[Any, ...], int] = {}
        for index, xf in enumerate(root.iterfind(f"{_M}cellXfs/{_M}xf")):
            self.formats.append(int(xf.get("numFmtId", "0")))
            children = b"".join(ET.tostring(child) for child in xf)
            key = (tuple(sorted((k, v) for k, v in xf.attrib.items() if k != "quotePrefix")), children)
            keys.append(key)
            looks = {k: v for k, v in xf.attrib.items() if k not in ("numFmtId", "applyNumberFormat")}
            self.looks.append((tuple(sorted(looks.items())), children))
            if xf.get("quotePrefix") in ("1", "true"):
                with_prefix.setdefault(key, index)
        for index, key in enumerate(keys):
            if key in with_prefix:
                self.quoted[index] = with_prefix[key]

    def shows_date(self, style: str | None, with_time: bool) -> bool:
        index = int(style or "0")
        if index >= len(self.formats):
            return False
        number_format = self.formats[index]
        if number_format in self.codes:
            has_date, has_time = _format_shows(self.codes[number_format])
        elif number_format in _BUILTIN_DATE_FORMATS:
            has_date, has_time = True, _BUILTIN_DATE_FORMATS[number_format]
        else:
            return False
        return has_date and (has_time or not with_time)

    def as_date(self, style: str | None, with_time: bool) -> str | None:
        """An existing style that looks like ``style`` but shows dates (and times), or None."""
        index = int(style or "0")
        if index >= len(self.looks):
            return None
        look = self.looks[index]
        for other, other_look in enumerate(self.looks):
            if other_look == look and self.shows_date(str(other), with_time):
                return str(other)
        return None

    def quote_prefixed(self, style: str | None) -> str | None:
        twin = self.quoted.get(int(style or "0"))
        return style if twin is None else str(twin)


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


class _Sheet:
    """The text of one worksheet part and an index of its rows."""

    def __init__(self, text: str, name: str) -> None:
        m = _SHEET_DATA_RE.search(text)
        if m is None:
            raise _Unsupported(f"{name} has no <sheetData> (or a namespace prefix)")
        head = text[: m.start()]
        root = re.search(r"<worksheet\b([^>]*)>", head)
        if root is None or _attrs(root[1]).get("xmlns") != _MAIN_NS:
            raise _Unsupported(f"{name} is not a transitional worksheet in the default namespace")
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
    def __init__(self, zf: zipfile.ZipFile) -> None:
        self.zf = zf
        self.infos = zf.infolist()
        names = [info.filename for info in self.infos]
        if len(set(names)) != len(names) or len(names) >= 0xFFFF:
            raise _Unsupported("duplicate or too many zip members")
        for info in self.infos:
            if info.flag_bits & 0x1:
                raise _Unsupported("an encrypted zip member")
            if max(info.file_size, info.compress_size, info.header_offset) >= 0xFFFFFFFF:
                raise _Unsupported("a ZIP64 archive")
        self.by_name = {info.filename: info for info in self.infos}
        self.folded = {name.casefold(): name for name in names}
        self.originals: dict[str, str] = {}  # parts read as text, by member name
        self.changed: dict[str, str] = {}  # parts to write anew, by member name
        self._styles: _Styles | None = None
        self.styles_part: str | None = None

    # -- package plumbing --

    def member(self, name: str) -> str | None:
        return name if name in self.by_name else self.folded.get(name.casefold())

    def read(self, name: str) -> bytes:
        return self.zf.read(name)

    def text(self, name: str) -> str:
        """A part's text as it stands: changed already, or as in the source."""
        if name in self.changed:
            return self.changed[name]
        if name not in self.originals:
            self.originals[name] = _decode(self.read(name), name)
        return self.originals[name]

    def relationships(self, part: str) -> list[tuple[str, str, str]]:
        """(Id, Type, target member) of a part's internal relationships."""
        folder, base = posixpath.split(part)
        rels = self.member(posixpath.join(folder, "_rels", f"{base}.rels"))
        if rels is None:
            return []
        root = ET.fromstring(self.read(rels))
        found = []
        for rel in root.iter(f"{{{_PKG_RELS_NS}}}Relationship"):
            if rel.get("TargetMode") == "External":
                continue
            target = unquote(rel.get("Target", ""))
            if target.startswith("/"):
                name = target.lstrip("/")
            else:
                name = posixpath.normpath(posixpath.join(folder, target))
            found.append((rel.get("Id", ""), rel.get("Type", ""), name))
        return found

    @property
    def styles(self) -> _Styles:
        if self._styles is None:
            name = self.member(self.styles_part) if self.styles_part else None
            self._styles = _Styles(self.read(name) if name else None)
        return self._styles

    # -- the whole job --

    def run(self, changes: list[SheetChanges]) -> list[_Member]:
        book_part = next((t for _, kind, t in self.relationships("") if kind == _OFFICE_DOCUMENT), None)
        book_part = self.member(book_part) if book_part else None
        if book_part is None:
            raise _Unsupported("no workbook part (or a Strict Open XML workbook)")
        book = ET.fromstring(self.read(book_part))
        if book.tag != f"{_M}workbook":
            raise _Unsupported("not a transitional SpreadsheetML workbook")
        props = book.find(f"{_M}workbookPr")
        if props is not None and props.get("date1904", "0").lower() in ("1", "true"):
            raise _Unsupported("the 1904 date system")
        rels = {rid: (kind, target) for rid, kind, target in self.relationships(book_part)}
        self.styles_part = next((t for kind, t in rels.values() if kind == _STYLES), None)
        sheets: dict[str, tuple[int, str, str]] = {}
        for index, sheet in enumerate(book.iterfind(f"{_M}sheets/{_M}sheet")):
            name = sheet.get("name", "")
            kind, target = rels.get(sheet.get(f"{{{_DOC_RELS}}}id", ""), ("", ""))
            key = name.strip().casefold()
            if key in sheets:
                raise _Unsupported(f"two sheets named {name!r}")
            sheets[key] = (index, name, target if kind == _WORKSHEET else "")  # not a chart sheet
        filters: dict[int, tuple[str, _Range, _Range]] = {}
        changed = False
        for change in changes:
            if change.create_headers:
                raise _Unsupported(f"sheet {change.title!r} is to be created")
            if not change.cells and not change.append:
                continue
            found = sheets.get(change.title.strip().casefold())
            if found is None:
                raise _Unsupported(f"no sheet {change.title!r}")
            index, title, target = found
            part = self.member(target) if target else None
            if part is None:
                raise _Unsupported(f"sheet {title!r} is not a worksheet in the package")
            result = self.patch_sheet(part, change)
            changed = True
            if result.filter_change is not None:
                old, new = result.filter_change
                earlier = filters.get(index)
                filters[index] = (title, earlier[1] if earlier else old, new)
        if changed:
            self.changed[book_part] = self.patch_book(self.text(book_part), filters)
        return self.members()

    def members(self) -> list[_Member]:
        out: list[_Member] = []
        with open(self.zf.filename or "", "rb") as fh:
            for info in self.infos:
                if info.filename in self.changed:
                    out.append(_packed(info, self.changed[info.filename].encode("utf-8")))
                else:
                    payload = _raw_payload(fh, info)
                    flags = info.flag_bits & ~0x8  # sizes go in the local header: no data descriptor
                    out.append(_Member(info, info.compress_type, info.CRC, info.file_size, payload, flags))
        return out

    # -- workbook.xml --

    def patch_book(self, text: str, filters: dict[int, tuple[str, _Range, _Range]]) -> str:
        root = re.search(r"<workbook\b([^>]*)>", text)
        if root is None or _attrs(root[1]).get("xmlns") != _MAIN_NS:
            raise _Unsupported("workbook.xml uses a namespace prefix")
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
        sheet = _Sheet(self.text(part), part)
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
                raise _Unsupported("appended rows go past the last row of a sheet")
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
                    self.changed[table_part] = grown
        out.append(tail)
        self.changed[part] = "".join(out)
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
        for _rid, kind, target in self.relationships(part):
            if kind != _TABLE:
                continue
            name = self.member(target)
            if name is None:
                raise _Unsupported(f"table part {target} is missing")
            text = self.text(name)
            root = _TABLE_ROOT_RE.search(text)
            if root is None or _attrs(root[1]).get("xmlns") != _MAIN_NS:
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
                            f"{sheet.name}: a write into {area.ref()} (formula, merge or table header)"
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
        if existing is not None:
            attrs = _attrs(existing[2])
            if "cm" in attrs or "vm" in attrs:
                raise _Unsupported(f"{sheet.name}: cell with rich value or array metadata")
            if "<f" in existing[3]:
                raise _Unsupported(f"{sheet.name}: a write over a formula")
            style = attrs.get("s")
            own_style = style not in (None, "0")
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

        ref = f"{_letters(column)}{row}"
        if value is None or value == "":
            # Clearing: a cell with a style of its own keeps it, empty; otherwise it goes.
            return f'<c r="{ref}" s="{style}"/>' if existing is not None and own_style else ""
        if isinstance(value, str):
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
            s = f' s="{style}"' if style is not None else ""
            return f'<c r="{ref}"{s}><v>{_number_text(value)}</v></c>'
        if isinstance(value, date):
            with_time = isinstance(value, datetime) and value.time() != time(0)
            if style is None or not self.styles.shows_date(style, with_time):
                if own_style:
                    raise _Unsupported(
                        f"{sheet.name}!{ref}: a date into a cell whose format would not show it"
                    )
                # The date format of the cell above, or the same look as now with a date format.
                above = sheet.style_at(row - 1, column) if row > 1 else None
                if above is not None and self.styles.shows_date(above, with_time):
                    style = above
                else:
                    style = self.styles.as_date(style, with_time)
                    if style is None:
                        raise _Unsupported(f"{sheet.name}!{ref}: a date with no date format to give it")
            return f'<c r="{ref}" s="{style}"><v>{_date_serial(value)}</v></c>'
        raise _Unsupported(f"a value of type {type(value).__name__}")

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
