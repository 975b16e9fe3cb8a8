"""A local, in-process stand-in for the parts of the Google Sheets API v4 crmkit uses.

Standard library only. Start it in a test::

    with SheetsStandIn() as standin:
        sid = standin.create_spreadsheet("CRM", {"Leads": [["Name", "Email"]]})
        gc = gspread_client(standin.base_url)      # needs gspread installed
        ws = gc.open_by_key(sid).worksheet("Leads")

or by hand: ``python -m crmkit.testing.sheets_standin --port 8765 --demo``.

Endpoints (base path ``/v4/spreadsheets``), request/response shapes follow Google's reference:

* ``GET  {id}``                        spreadsheets.get (``fields`` / ``includeGridData`` ignored)
* ``POST {id}:batchUpdate``            spreadsheets.batchUpdate: ``addSheet``,
  ``updateSheetProperties``, ``repeatCell``, ``insertDimension`` and ``deleteDimension``
  requests (atomic: one bad request applies none)
* ``GET  {id}/values/{range}``         spreadsheets.values.get
* ``PUT  {id}/values/{range}``         spreadsheets.values.update
* ``GET  {id}/values:batchGet``        spreadsheets.values.batchGet
* ``POST {id}/values:batchUpdate``     spreadsheets.values.batchUpdate
* ``POST {id}/values/{range}:append``  spreadsheets.values.append
* ``POST {id}/values/{range}:clear``   spreadsheets.values.clear
* ``POST {id}/values:batchClear``      spreadsheets.values.batchClear

and, outside the API, ``POST /token`` (:attr:`SheetsStandIn.token_uri`): the OAuth 2.0 token
endpoint as google-auth's service-account credentials call it (JWT bearer grant).

Fidelity notes (where this differs from, or simplifies, the real service):

* Cell storage: ``None`` (empty), ``str``, ``int``/``float``, ``bool`` or :class:`Formula` (a ``str``
  subclass holding the formula text, e.g. ``Formula("=1+1")``). An empty string written is an
  empty cell, as in Sheets. ``null`` in written values leaves the cell unchanged, as in Sheets.
  Dates and times are numbers (Google's serial numbers: days since 1899-12-30, the time of day
  as a fraction) in a cell whose number format says DATE, DATE_TIME or TIME.
* Formats: each cell may hold a ``userEnteredFormat`` (set by ``repeatCell``, by USER_ENTERED
  dates, or by date values given to ``create_spreadsheet``), kept apart from its value: writing
  or clearing values (values.clear / batchClear clear values only, as in Google) leaves it,
  and INSERT_ROWS appends move it down with its row (the inserted rows start unformatted).
  Only ``numberFormat`` affects what is read back, and only its DATE / DATE_TIME / TIME types
  (and TEXT, see below); NUMBER, CURRENCY, PERCENT and SCIENTIFIC patterns are stored but not
  applied, and other fields (``textFormat`` ...) are stored and ignored.
* USER_ENTERED parsing: ``"=..."`` -> formula; plain decimal/scientific numbers (``"12"``,
  ``"-1.5"``, ``"007"``, ``"1e3"``) -> numbers; ``"TRUE"``/``"FALSE"`` (any case) -> booleans;
  dates as the en_US locale reads them: ``"2024-01-15"`` and ``"1/15/2024"`` -> a date,
  ``"2024-01-15 10:30"`` / ``"2024-01-15 10:30:05"`` -> a date-time (stored as a serial number;
  a cell with no DATE/DATE_TIME/TIME format gets ``yyyy-mm-dd``, ``M/d/yyyy`` or
  ``yyyy-mm-dd hh:mm:ss`` to match the input); a leading apostrophe forces text and is dropped.
  In a cell formatted as plain text (``numberFormat.type`` TEXT) a string is kept as typed.
  RAW never parses anything. NOT implemented: times without a date (``"10:30"``), other date
  spellings (``"Jan 15, 2024"``, two-digit years), percentages, currency and thousands
  separators (Sheets would turn these into formatted numbers; here they stay text).
* Formulas: only constant arithmetic (numbers, ``+ - * / ^``, parentheses, unary minus) is
  computed (``=1+1`` -> 2, ``=1/0`` -> ``#DIV/0!``). Any other formula (cell references,
  functions) evaluates to ``"#NAME?"`` in FORMATTED_VALUE / UNFORMATTED_VALUE rendering.
  FORMULA rendering always returns the formula text.
* FORMATTED_VALUE renders numbers without a date/time format with no number format: integral
  values as integers (``"12"``), others with up to 15 significant digits (``"1.5"``); booleans
  as ``"TRUE"``/``"FALSE"``. Real Sheets' "Automatic" format can differ for very large/small
  numbers. Numbers in DATE / DATE_TIME / TIME cells render through the pattern (tokens
  ``yyyy yy mmmm mmm mm m dd d ddd dddd hh h ss s am/pm a/p .000``, ``"literal"``, ``\\x``;
  ``m``/``mm`` means minutes right after an hour or before seconds, as in Sheets; tokens are
  case-insensitive; without a pattern the en_US defaults ``M/d/yyyy``, ``h:mm:ss am/pm`` and
  ``M/d/yyyy H:mm:ss`` apply), seconds rounded to what the pattern shows. UNFORMATTED_VALUE and
  FORMULA give the serial number, or the formatted string with
  ``dateTimeRenderOption=FORMATTED_STRING`` (``responseDateTimeRenderOption`` for
  ``includeValuesInResponse``). Elapsed-time tokens (``[h]``) are not supported.
* Ranges in responses use Google's style: the sheet name is quoted only when needed
  (``Sheet1!A1:Z1000``, ``'Invoice Lines'!A1:E1000``) and open-ended ranges are bounded by the
  grid. Reads whose start lies outside the grid answer 400 "exceeds grid limits"; the end of a
  read range is clamped to the grid. Writes grow the grid as needed.
* Chart sheets: :meth:`SheetsStandIn.add_chart_sheet` adds a sheet of ``sheetType`` OBJECT (a chart
  on its own sheet; the chart itself is not modelled). spreadsheets.get lists it, without
  gridProperties; a range naming it answers 400 "Unable to parse range", as it holds no cells.
* Ranges without a sheet name: an existing sheet title wins, otherwise A1 notation on the
  first sheet. Named ranges and R1C1 notation are not supported (400 "Unable to parse range").
* append: the "table" is the first block of consecutive rows that have a non-empty cell within
  the range's columns, starting at or below the range's first row (within the range's rows; for
  a single-cell range only if that cell has data, so that gspread's ``insert_rows`` /
  ``insert_cols``, an insertDimension then an append at the new empty cell, write there as
  against Google); values are written at the range's first column in the row after the table's
  last row, or at the range's first row when no table is found. An empty row ends the table:
  rows below it are not looked at.
  INSERT_ROWS inserts whole rows there (rowCount grows by the number of rows); OVERWRITE (the
  default, as in Google) writes in place, growing the grid if needed.
* batchUpdate: ``addSheet`` honours ``title``, ``sheetId``, ``index`` and ``gridProperties``
  (rowCount, columnCount, frozenRowCount, frozenColumnCount); ``updateSheetProperties``
  supports the ``fields`` title, index and gridProperties.{rowCount, columnCount,
  frozenRowCount, frozenColumnCount} (shrinking the grid drops what lies outside it);
  ``repeatCell`` supports fields under ``userEnteredFormat`` only. Field masks may use ``.`` or
  ``/`` and ``a(b,c)`` groups (gspread sends ``gridProperties/frozenRowCount``). Any other
  request kind answers 400. Each request's reply is ``{}`` except addSheet's.
* ``deleteDimension`` / ``insertDimension`` (ROWS or COLUMNS; gspread's ``delete_rows``,
  ``delete_columns``, ``insert_rows``, ``insert_cols``): the values and formats that follow move
  up / left or down / right, and rowCount / columnCount shrink or grow. A deleteDimension range
  without ``endIndex`` runs to the grid's end; deleting every row (column) answers Google's
  "You can't delete all the rows on the sheet.", leaving only frozen ones "Sorry, it is not
  possible to delete all non-frozen rows."; deleted frozen rows (columns) unfreeze. Inserted
  cells are empty and take the formats of the row (column) before them with
  ``inheritFromBefore`` true, else of the one after (none after the grid's end); inserting at
  ``startIndex == rowCount`` needs ``inheritFromBefore`` true, at 0 false, as in Google.
  Inserting inside the frozen rows (columns) freezes the new ones too. Not modelled: row
  heights, column widths and other dimension properties, and what formulas refer to (formulas
  keep their text; only constant formulas are computed anyway). Error messages for empty or
  out-of-grid ranges are the stand-in's own wording.
* Authentication (``require_auth=True``): ``/token`` decodes the JWT assertion without checking
  its signature or times and issues an opaque access token (``expires_in`` 3599) for the
  assertion's ``iss``; tokens never expire unless :meth:`SheetsStandIn.revoke_tokens` is called.
  A ``/v4`` request without a bearer token issued here answers 401 UNAUTHENTICATED (the real
  service answers 403 "The request is missing a valid API key." when no credential at all is
  sent); ``shared_with`` gives a spreadsheet's readers/writers (403 PERMISSION_DENIED for other
  callers; no read-only sharing). Without ``require_auth`` any or no Authorization header is
  accepted.
* Errors use Google's JSON shape ``{"error": {"code", "message", "status"}}`` (the ``details``
  and ``errors`` arrays the real service sometimes adds are omitted); ``/token`` errors use the
  OAuth shape ``{"error", "error_description"}``.
* Not implemented: Drive API (``gspread_client`` refuses Drive requests instead of going to the
  network), spreadsheets.create, other batchUpdate requests, conditional formatting, named
  ranges, protected ranges, quotas (use :meth:`SheetsStandIn.fail_next`).
"""

from __future__ import annotations

import argparse
import ast
import base64
import binascii
import copy
import functools
import json
import operator
import re
import secrets
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from crmkit.records.schema import LEAD
from crmkit.sync.model import column_letter

__all__ = [
    "ApiError",
    "Formula",
    "OAuthError",
    "SheetsStandIn",
    "gspread_client",
    "mount_standin",
]

BASE_PATH = "/v4/spreadsheets"
DEFAULT_ROWS = 1000
DEFAULT_COLS = 26

_STATUS_NAMES = {
    400: "INVALID_ARGUMENT",
    401: "UNAUTHENTICATED",
    403: "PERMISSION_DENIED",
    404: "NOT_FOUND",
    409: "ABORTED",
    429: "RESOURCE_EXHAUSTED",
    500: "INTERNAL",
    501: "UNIMPLEMENTED",
    503: "UNAVAILABLE",
}
_FAIL_MESSAGES = {
    429: (
        "Quota exceeded for quota metric 'Requests' and limit 'Requests per minute per user' of "
        "service 'sheets.googleapis.com' for consumer 'project_number:000000000000'."
    ),
    500: "Internal error encountered.",
    503: "The service is currently unavailable.",
}


class Formula(str):
    """A stored formula; the string value is the formula text, e.g. ``"=1+1"``."""

    __slots__ = ()


class ApiError(Exception):
    """An error answered with Google's error JSON."""

    def __init__(self, code: int, message: str, status: str | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status or _STATUS_NAMES.get(code, "UNKNOWN")

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "status": self.status}}


def _not_found() -> ApiError:
    return ApiError(404, "Requested entity was not found.")


# --------------------------------------------------------------------------- A1 notation


col_to_letters = column_letter  # 0-based column index -> letters (0 -> A, 26 -> AA)


def letters_to_col(letters: str) -> int:
    col = 0
    for ch in letters.upper():
        col = col * 26 + (ord(ch) - 64)
    return col - 1


_CELL_RE = re.compile(r"^([A-Za-z]{0,3})(\d{0,7})$")
_SIMPLE_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_LOOKS_LIKE_REF_RE = re.compile(r"^([A-Za-z]{1,3}\d+|[Rr]\d*[Cc]\d*)$")


def quote_sheet_name(title: str) -> str:
    """Quote a sheet title the way Google does in response ranges (only when needed)."""
    if _SIMPLE_NAME_RE.match(title) and not _LOOKS_LIKE_REF_RE.match(title):
        return title
    return "'" + title.replace("'", "''") + "'"


def split_sheet_name(text: str) -> tuple[str | None, str | None]:
    """Split ``'It''s'!A1:B2`` into (sheet title, A1 part). Either may be None."""
    if text.startswith("'"):
        i = 1
        name = []
        while i < len(text):
            ch = text[i]
            if ch == "'":
                if i + 1 < len(text) and text[i + 1] == "'":
                    name.append("'")
                    i += 2
                    continue
                rest = text[i + 1 :]
                if rest == "":
                    return "".join(name), None
                if rest.startswith("!"):
                    return "".join(name), rest[1:]
                raise ValueError(text)
            name.append(ch)
            i += 1
        raise ValueError(text)
    if "!" in text:
        sheet, _, a1 = text.rpartition("!")
        return sheet, a1
    return None, text


@dataclass
class A1Range:
    """0-based inclusive bounds; ``None`` end means open (to the grid's edge)."""

    r0: int
    c0: int
    r1: int | None
    c1: int | None
    single_cell: bool = False


def parse_a1(a1: str) -> A1Range:
    parts = a1.split(":")
    if len(parts) > 2 or not a1:
        raise ValueError(a1)
    cells = []
    for part in parts:
        m = _CELL_RE.match(part.replace("$", ""))
        if not m or (not m.group(1) and not m.group(2)):
            raise ValueError(a1)
        col = letters_to_col(m.group(1)) if m.group(1) else None
        row = int(m.group(2)) - 1 if m.group(2) else None
        if row is not None and row < 0:
            raise ValueError(a1)
        cells.append((row, col))
    if len(cells) == 1:
        row, col = cells[0]
        if row is None or col is None:
            raise ValueError(a1)
        return A1Range(row, col, row, col, single_cell=True)
    (ra, ca), (rb, cb) = cells
    # "2:5" (rows only) and "A:C" (columns only) forms; a cell on one side only bounds that side.
    if (ra is None) != (rb is None) and ra is None:
        raise ValueError(a1)  # "A:C5" is not valid
    if (ca is None) != (cb is None) and ca is None:
        raise ValueError(a1)  # "2:C5" is not valid
    r0 = 0 if ra is None else ra
    c0 = 0 if ca is None else ca
    r1 = rb
    c1 = cb
    if r1 is not None and r1 < r0:
        r0, r1 = r1, r0
    if c1 is not None and c1 < c0:
        c0, c1 = c1, c0
    return A1Range(r0, c0, r1, c1)


def format_a1(title: str, r0: int, c0: int, r1: int, c1: int) -> str:
    start = f"{col_to_letters(c0)}{r0 + 1}"
    end = f"{col_to_letters(c1)}{r1 + 1}"
    cells = start if (r0, c0) == (r1, c1) else f"{start}:{end}"
    return f"{quote_sheet_name(title)}!{cells}"


# --------------------------------------------------------------------------- values


_NUMBER_RE = re.compile(r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$")
_ISO_DATE_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2})$")
_ISO_DATETIME_RE = re.compile(r"^(\d{4})-(\d{1,2})-(\d{1,2}) (\d{1,2}):(\d{2})(?::(\d{2}))?$")
_US_DATE_RE = re.compile(r"^(\d{1,2})/(\d{1,2})/(\d{4})$")

DATE_FORMAT_TYPES = frozenset({"DATE", "DATE_TIME", "TIME"})
NUMBER_FORMAT_TYPES = frozenset(
    {
        "NUMBER_FORMAT_TYPE_UNSPECIFIED",
        "TEXT",
        "NUMBER",
        "PERCENT",
        "CURRENCY",
        "DATE",
        "TIME",
        "DATE_TIME",
        "SCIENTIFIC",
    }
)
ISO_DATE_FORMAT: dict[str, str] = {"type": "DATE", "pattern": "yyyy-mm-dd"}
ISO_DATE_TIME_FORMAT: dict[str, str] = {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm:ss"}
US_DATE_FORMAT: dict[str, str] = {"type": "DATE", "pattern": "M/d/yyyy"}
# what an en_US spreadsheet shows for a date/time format given without a pattern
_DEFAULT_PATTERNS = {"DATE": "M/d/yyyy", "TIME": "h:mm:ss am/pm", "DATE_TIME": "M/d/yyyy H:mm:ss"}

EPOCH = datetime(1899, 12, 30)  # serial number 0


def _number(text: str) -> int | float:
    value = float(text)
    if re.fullmatch(r"[+-]?\d+", text) and abs(value) < 2**53:
        return int(text)
    return value


def date_to_serial(value: date | datetime) -> int | float:
    """A ``date`` -> whole days since 1899-12-30; a ``datetime`` (wall-clock time, any tzinfo is
    dropped) -> days plus the time of day as a fraction (an int when the time is midnight)."""
    if isinstance(value, datetime):
        delta = value.replace(tzinfo=None) - EPOCH
        if not (delta.seconds or delta.microseconds):
            return delta.days
        return delta.days + (delta.seconds + delta.microseconds / 1_000_000) / 86_400
    return (value - EPOCH.date()).days


def serial_to_datetime(serial: float) -> datetime:
    """The inverse of :func:`date_to_serial`, to the millisecond (raises OverflowError out of range)."""
    dt = EPOCH + timedelta(days=serial)
    ms = round(dt.microsecond / 1000)
    return dt.replace(microsecond=0) + timedelta(milliseconds=ms)


def is_date_format(number_format: dict[str, Any] | None) -> bool:
    return number_format is not None and number_format.get("type") in DATE_FORMAT_TYPES


def _parse_date_text(text: str) -> tuple[int | float, dict[str, str]] | None:
    """USER_ENTERED date/date-time spellings an en_US spreadsheet reads -> (serial, format)."""
    try:
        if m := _ISO_DATE_RE.match(text):
            y, mo, d = (int(g) for g in m.groups())
            return date_to_serial(date(y, mo, d)), ISO_DATE_FORMAT
        if m := _US_DATE_RE.match(text):
            mo, d, y = (int(g) for g in m.groups())
            return date_to_serial(date(y, mo, d)), US_DATE_FORMAT
        if m := _ISO_DATETIME_RE.match(text):
            y, mo, d, hh, mi = (int(g) for g in m.groups()[:5])
            ss = int(m.group(6) or 0)
            return date_to_serial(datetime(y, mo, d, hh, mi, ss)), ISO_DATE_TIME_FORMAT
    except ValueError:  # 2024-02-30, 25:00 ...: Sheets keeps such text as text
        return None
    return None


def parse_input_with_format(value: Any, option: str) -> tuple[Any, dict[str, str] | None]:
    """One written JSON value -> (stored value, number format the input implies or None)."""
    if value is None or value == "":
        return None, None
    if isinstance(value, bool | int | float):
        return value, None
    if isinstance(value, dict | list):
        raise ApiError(400, "Invalid values: nested structures are not allowed in a cell.")
    text = str(value)
    if option == "RAW":
        return text, None
    if text.startswith("'"):
        return text[1:] or None, None
    if text.startswith("=") and len(text) > 1:
        return Formula(text), None
    stripped = text.strip()
    if _NUMBER_RE.match(stripped):
        return _number(stripped), None
    if stripped.upper() in ("TRUE", "FALSE"):
        return stripped.upper() == "TRUE", None
    parsed = _parse_date_text(stripped)
    if parsed is not None:
        return parsed[0], dict(parsed[1])
    return text, None


def parse_input(value: Any, option: str) -> Any:
    """Turn one written JSON value into a stored value (``None`` means empty)."""
    return parse_input_with_format(value, option)[0]


# ---- date/time patterns

_MONTH_NAMES = [
    "January",
    "February",
    "March",
    "April",
    "May",
    "June",
    "July",
    "August",
    "September",
    "October",
    "November",
    "December",
]
_DAY_NAMES = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


@functools.lru_cache(maxsize=256)
def _date_tokens(pattern: str) -> tuple[tuple[str, int, str], ...]:
    """Split a date-time pattern into (kind, count, text); kind "lit" is literal text."""
    tokens: list[tuple[str, int, str]] = []
    i, n = 0, len(pattern)
    while i < n:
        ch = pattern[i]
        low = pattern[i : i + 5].lower()
        if ch == '"':
            end = pattern.find('"', i + 1)
            end = n if end < 0 else end
            tokens.append(("lit", 0, pattern[i + 1 : end]))
            i = end + 1
        elif ch == "\\" and i + 1 < n:
            tokens.append(("lit", 0, pattern[i + 1]))
            i += 2
        elif low == "am/pm":
            tokens.append(("ampm", 0, ""))
            i += 5
        elif low[:3] == "a/p":
            tokens.append(("ap", 0, ""))
            i += 3
        elif ch.lower() in "ymdhs":
            j = i
            while j < n and pattern[j].lower() == ch.lower():
                j += 1
            tokens.append((ch.lower(), j - i, ""))
            i = j
        elif ch == "." and i + 1 < n and pattern[i + 1] == "0" and tokens and tokens[-1][0] == "s":
            j = i + 1
            while j < n and pattern[j] == "0":
                j += 1
            tokens.append(("frac", j - i - 1, ""))
            i = j
        else:
            tokens.append(("lit", 0, ch))
            i += 1
    # m / mm is minutes right after hours or right before seconds, otherwise the month
    fields = [k for k, t in enumerate(tokens) if t[0] != "lit"]
    for pos, k in enumerate(fields):
        kind, count, _ = tokens[k]
        if kind != "m" or count > 2:
            continue
        before = tokens[fields[pos - 1]][0] if pos else None
        after = tokens[fields[pos + 1]][0] if pos + 1 < len(fields) else None
        if before == "h" or after == "s":
            tokens[k] = ("min", count, "")
    return tuple(tokens)


def format_serial(serial: float, number_format: dict[str, Any]) -> str:
    """Render a serial number through a DATE / DATE_TIME / TIME number format."""
    pattern = number_format.get("pattern") or _DEFAULT_PATTERNS.get(number_format.get("type", ""), "")
    tokens = _date_tokens(pattern)
    digits = max((c for kind, c, _ in tokens if kind == "frac"), default=0)
    raw = EPOCH + timedelta(days=serial)
    unit = 10 ** (6 - min(digits, 6))  # round to what the pattern shows
    dt = raw.replace(microsecond=0) + timedelta(microseconds=round(raw.microsecond / unit) * unit)
    twelve = any(kind in ("ampm", "ap") for kind, _, _ in tokens)
    out = []
    for kind, count, text in tokens:
        if kind == "lit":
            out.append(text)
        elif kind == "y":
            out.append(f"{dt.year % 100:02d}" if count <= 2 else f"{dt.year:04d}")
        elif kind == "m":
            name = _MONTH_NAMES[dt.month - 1]
            out.append({1: str(dt.month), 2: f"{dt.month:02d}", 3: name[:3], 5: name[0]}.get(count, name))
        elif kind == "min":
            out.append(f"{dt.minute:02d}" if count == 2 else str(dt.minute))
        elif kind == "d":
            name = _DAY_NAMES[dt.weekday()]
            out.append({1: str(dt.day), 2: f"{dt.day:02d}", 3: name[:3]}.get(count, name))
        elif kind == "h":
            hour = (dt.hour % 12 or 12) if twelve else dt.hour
            out.append(f"{hour:02d}" if count >= 2 else str(hour))
        elif kind == "s":
            out.append(f"{dt.second:02d}" if count >= 2 else str(dt.second))
        elif kind == "frac":
            out.append("." + f"{dt.microsecond:06d}"[:count])
        elif kind == "ampm":
            out.append("AM" if dt.hour < 12 else "PM")
        elif kind == "ap":
            out.append("a" if dt.hour < 12 else "p")
    return "".join(out)


_BINOPS: dict[type, Callable[[Any, Any], Any]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: operator.pow,
}
_ARITH_RE = re.compile(r"^[0-9.eE+\-*/^() ]+$")


def evaluate_formula(text: str) -> Any:
    """Compute constant arithmetic formulas; anything else is ``#NAME?``."""
    expr = text[1:]
    if not _ARITH_RE.match(expr):
        return "#NAME?"
    try:
        tree = ast.parse(expr.replace("^", "**"), mode="eval")
    except SyntaxError:
        return "#ERROR!"

    def walk(node: ast.AST) -> Any:
        if isinstance(node, ast.Expression):
            return walk(node.body)
        if isinstance(node, ast.Constant) and isinstance(node.value, int | float):
            return node.value
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
            inner = walk(node.operand)
            return -inner if isinstance(node.op, ast.USub) else inner
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](walk(node.left), walk(node.right))
        raise ValueError("unsupported")

    try:
        result = walk(tree)
    except ZeroDivisionError:
        return "#DIV/0!"
    except (ValueError, OverflowError, TypeError):
        return "#ERROR!"
    return result


def _json_number(value: int | float) -> int | float:
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def format_number(value: int | float) -> str:
    value = _json_number(value)
    if isinstance(value, int):
        return str(value)
    return f"{value:.15g}".replace("e+", "E+").replace("e-", "E-")


def render(
    stored: Any,
    option: str,
    number_format: dict[str, Any] | None = None,
    date_option: str = "SERIAL_NUMBER",
) -> Any:
    """Stored value -> JSON value for a valueRenderOption / dateTimeRenderOption."""
    if stored is None:
        return ""
    if isinstance(stored, Formula):
        if option == "FORMULA":
            return str(stored)
        stored = evaluate_formula(stored)
    if isinstance(stored, bool):
        if option == "FORMATTED_VALUE":
            return "TRUE" if stored else "FALSE"
        return stored
    if isinstance(stored, int | float):
        if is_date_format(number_format) and (
            option == "FORMATTED_VALUE" or date_option == "FORMATTED_STRING"
        ):
            assert number_format is not None
            try:
                return format_serial(stored, number_format)
            except (OverflowError, ValueError):
                pass  # outside the years a datetime can hold: show the number
        if option == "FORMATTED_VALUE":
            return format_number(stored)
        return _json_number(stored)
    return stored


def python_value(stored: Any, number_format: dict[str, Any] | None) -> Any:
    """Stored value -> Python value: formulas computed, numbers in date-formatted cells as
    ``date`` (DATE, whole days), ``datetime`` (DATE_TIME, or DATE with a time) or ``time`` (TIME)."""
    if isinstance(stored, Formula):
        stored = evaluate_formula(stored)
    if isinstance(stored, bool) or not isinstance(stored, int | float) or not is_date_format(number_format):
        return stored
    assert number_format is not None
    try:
        dt = serial_to_datetime(stored)
    except (OverflowError, ValueError):
        return stored
    kind = number_format.get("type")
    if kind == "TIME":
        return dt.time()
    if kind == "DATE" and float(stored).is_integer():
        return dt.date()
    return dt


def _trim(rows: list[list[Any]]) -> list[list[Any]]:
    out = []
    for row in rows:
        end = len(row)
        while end and row[end - 1] == "":
            end -= 1
        out.append(row[:end])
    while out and not out[-1]:
        out.pop()
    return out


def _trim_none(rows: list[list[Any]]) -> list[list[Any]]:
    for row in rows:
        while row and row[-1] is None:
            row.pop()
    while rows and not rows[-1]:
        rows.pop()
    return rows


# --------------------------------------------------------------------------- model


@dataclass
class Sheet:
    sheet_id: int
    title: str
    index: int
    row_count: int = DEFAULT_ROWS
    column_count: int = DEFAULT_COLS
    cells: list[list[Any]] = field(default_factory=list)
    frozen_row_count: int = 0
    frozen_column_count: int = 0
    # (row, col) -> the cell's userEnteredFormat; never mutated in place (copy, then replace)
    formats: dict[tuple[int, int], dict[str, Any]] = field(default_factory=dict)
    # "GRID", or "OBJECT" for a chart moved to its own sheet (no cells, no grid)
    sheet_type: str = "GRID"

    def properties(self) -> dict[str, Any]:
        if self.sheet_type != "GRID":
            return {
                "sheetId": self.sheet_id,
                "title": self.title,
                "index": self.index,
                "sheetType": self.sheet_type,
            }
        grid: dict[str, Any] = {"rowCount": self.row_count, "columnCount": self.column_count}
        if self.frozen_row_count:
            grid["frozenRowCount"] = self.frozen_row_count
        if self.frozen_column_count:
            grid["frozenColumnCount"] = self.frozen_column_count
        return {
            "sheetId": self.sheet_id,
            "title": self.title,
            "index": self.index,
            "sheetType": "GRID",
            "gridProperties": grid,
        }

    def get(self, r: int, c: int) -> Any:
        if r < len(self.cells) and c < len(self.cells[r]):
            return self.cells[r][c]
        return None

    def set(self, r: int, c: int, value: Any) -> None:
        while len(self.cells) <= r:
            self.cells.append([])
        row = self.cells[r]
        while len(row) <= c:
            row.append(None)
        row[c] = value
        self.row_count = max(self.row_count, r + 1)
        self.column_count = max(self.column_count, c + 1)

    def number_format(self, r: int, c: int) -> dict[str, Any] | None:
        fmt = self.formats.get((r, c))
        return fmt.get("numberFormat") if fmt else None

    def set_number_format(self, r: int, c: int, number_format: dict[str, Any]) -> None:
        fmt = dict(self.formats.get((r, c)) or {})
        fmt["numberFormat"] = dict(number_format)
        self.formats[(r, c)] = fmt

    def row_has_data(self, r: int, c0: int, c1: int) -> bool:
        return r < len(self.cells) and any(v is not None for v in self.cells[r][c0 : c1 + 1])

    def find_table(self, r0: int, r1: int, c0: int, c1: int) -> tuple[int, int] | None:
        """The first and last row of the first block of consecutive rows with data in columns
        ``c0..c1`` whose first row lies in ``r0..r1`` (the block may run on below ``r1``)."""
        first = next(
            (r for r in range(r0, min(r1, len(self.cells) - 1) + 1) if self.row_has_data(r, c0, c1)), None
        )
        if first is None:
            return None
        last = first
        while self.row_has_data(last + 1, c0, c1):
            last += 1
        return first, last

    def insert_rows(self, at: int, count: int) -> None:
        if at < len(self.cells):
            self.cells[at:at] = [[] for _ in range(count)]
        if any(r >= at for r, _ in self.formats):
            self.formats = {((r + count if r >= at else r), c): f for (r, c), f in self.formats.items()}
        self.row_count += count

    def delete_dimension(self, dimension: str, start: int, end: int) -> None:
        """Delete rows (``"ROWS"``) or columns ``[start, end)``: what follows moves up / left with
        its formats, the grid shrinks, and frozen rows / columns that are deleted unfreeze.

        Never changes a row list in place (see :meth:`Spreadsheet.snapshot`)."""
        count = end - start
        if dimension == "ROWS":
            self.cells = self.cells[:start] + self.cells[end:]
            self.formats = {
                ((r - count if r >= end else r), c): f
                for (r, c), f in self.formats.items()
                if not start <= r < end
            }
            self.frozen_row_count -= max(0, min(end, self.frozen_row_count) - start)
            self.row_count -= count
        else:
            self.cells = [row[:start] + row[end:] if len(row) > start else row for row in self.cells]
            self.formats = {
                (r, (c - count if c >= end else c)): f
                for (r, c), f in self.formats.items()
                if not start <= c < end
            }
            self.frozen_column_count -= max(0, min(end, self.frozen_column_count) - start)
            self.column_count -= count

    def insert_dimension(self, dimension: str, start: int, end: int, inherit_from_before: bool) -> None:
        """Insert empty rows (``"ROWS"``) or columns at ``[start, end)``; what was there moves down /
        right with its formats, the grid grows. The new cells take the formats of the row / column
        before (``inherit_from_before``) or after them; inserting inside the frozen rows / columns
        freezes the new ones too.

        Never changes a row list in place (see :meth:`Spreadsheet.snapshot`)."""
        count = end - start
        source = start - 1 if inherit_from_before else start  # index before the insertion
        if dimension == "ROWS":
            if start < len(self.cells):
                self.cells = self.cells[:start] + [[] for _ in range(count)] + self.cells[start:]
            formats = {((r + count if r >= start else r), c): f for (r, c), f in self.formats.items()}
            for (r, c), f in self.formats.items():
                if r == source:
                    formats.update({(new, c): f for new in range(start, end)})
            if start < self.frozen_row_count:
                self.frozen_row_count += count
            self.row_count += count
        else:
            self.cells = [
                row[:start] + [None] * count + row[start:] if len(row) > start else row for row in self.cells
            ]
            formats = {(r, (c + count if c >= start else c)): f for (r, c), f in self.formats.items()}
            for (r, c), f in self.formats.items():
                if c == source:
                    formats.update({(r, new): f for new in range(start, end)})
            if start < self.frozen_column_count:
                self.frozen_column_count += count
            self.column_count += count
        self.formats = formats

    def resize(self, rows: int, cols: int) -> None:
        """Set the grid size; values and formats outside the new grid are dropped."""
        if rows < self.row_count or cols < self.column_count:
            self.cells = [row[:cols] for row in self.cells[:rows]]
            self.formats = {(r, c): f for (r, c), f in self.formats.items() if r < rows and c < cols}
        self.row_count, self.column_count = rows, cols


@dataclass
class Spreadsheet:
    spreadsheet_id: str
    title: str
    sheets: list[Sheet] = field(default_factory=list)
    next_sheet_id: int = 0
    shared_with: frozenset[str] | None = None  # lower-cased emails; None: anyone authenticated

    def to_json(self) -> dict[str, Any]:
        return {
            "spreadsheetId": self.spreadsheet_id,
            "properties": {"title": self.title, "locale": "en_US", "timeZone": "Etc/GMT"},
            "sheets": [{"properties": s.properties()} for s in self.sheets],
            "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{self.spreadsheet_id}/edit",
        }

    def find_sheet(self, title: str) -> Sheet | None:
        for sheet in self.sheets:
            if sheet.title == title:
                return sheet
        return None

    def sheet_by_id(self, sheet_id: Any) -> Sheet | None:
        for sheet in self.sheets:
            if sheet.sheet_id == sheet_id:
                return sheet
        return None

    def title_taken(self, title: str, other_than: Sheet | None = None) -> bool:
        return any(s.title.lower() == title.lower() and s is not other_than for s in self.sheets)

    def add_sheet(
        self,
        title: str,
        rows: int = DEFAULT_ROWS,
        cols: int = DEFAULT_COLS,
        index: int | None = None,
        sheet_id: int | None = None,
    ) -> Sheet:
        if self.title_taken(title):
            raise ApiError(
                400,
                f'Invalid requests[0].addSheet: A sheet with the name "{title}" already exists. '
                "Please enter another name.",
            )
        if sheet_id is None:
            sheet_id = self.next_sheet_id
            while self.sheet_by_id(sheet_id) is not None:
                sheet_id = sheet_id + 1 if sheet_id else 1_000_001
            self.next_sheet_id = sheet_id + 1 if sheet_id else 1_000_001
        sheet = Sheet(sheet_id, title, 0, rows, cols)
        pos = len(self.sheets) if index is None else max(0, min(index, len(self.sheets)))
        self.sheets.insert(pos, sheet)
        self.renumber()
        return sheet

    def move_sheet(self, sheet: Sheet, index: int) -> None:
        self.sheets.remove(sheet)
        self.sheets.insert(max(0, min(index, len(self.sheets))), sheet)
        self.renumber()

    def renumber(self) -> None:
        for i, s in enumerate(self.sheets):
            s.index = i

    def snapshot(self) -> Callable[[], None]:
        """Remember the sheets' properties, formats and grids; returns a function restoring them.

        Cells are restored by reference: the batchUpdate requests never change a row in place."""
        sheets, next_id = list(self.sheets), self.next_sheet_id
        saved = [(s, copy.copy(s), dict(s.formats), list(s.cells)) for s in self.sheets]

        def restore() -> None:
            self.sheets, self.next_sheet_id = sheets, next_id
            for sheet, state, formats, cells in saved:
                sheet.__dict__.update(state.__dict__)
                sheet.formats, sheet.cells = formats, cells

        return restore

    def resolve(self, range_text: str) -> tuple[Sheet, A1Range | None]:
        """Resolve a range string to (sheet, bounds); bounds None means the whole sheet."""
        bad = ApiError(400, f"Unable to parse range: {range_text}")
        try:
            title, a1 = split_sheet_name(range_text)
        except ValueError:
            raise bad from None
        if title is None:
            assert a1 is not None
            found = self.find_sheet(a1)
            if found is not None:
                return found, None
            if not self.sheets:
                raise bad
            sheet = self.sheets[0]
        else:
            maybe = self.find_sheet(title)
            if maybe is None or maybe.sheet_type != "GRID":  # a chart's sheet has no cells to address
                raise bad
            sheet = maybe
            if a1 is None:
                return sheet, None
        try:
            return sheet, parse_a1(a1)  # type: ignore[arg-type]
        except ValueError:
            raise bad from None


# --------------------------------------------------------------------------- batchUpdate helpers


def parse_field_mask(text: str) -> list[tuple[str, ...]]:
    """``"a.b(c,d/e),f"`` -> ``[("a","b","c"), ("a","b","d","e"), ("f",)]``.

    Google accepts ``.`` or ``/`` between names and ``(...)`` groups (gspread sends
    ``gridProperties/frozenRowCount`` and ``userEnteredFormat(numberFormat,textFormat)``)."""
    pos = 0

    def parse_list(prefix: tuple[str, ...], closing: str | None) -> list[tuple[str, ...]]:
        nonlocal pos
        paths: list[tuple[str, ...]] = []
        while True:
            path = prefix
            while True:
                m = re.compile(r"\s*([A-Za-z_][A-Za-z0-9_]*|\*)\s*").match(text, pos)
                if not m:
                    raise ValueError(text)
                path += (m.group(1),)
                pos = m.end()
                if pos < len(text) and text[pos] in "./":
                    pos += 1
                    continue
                break
            if pos < len(text) and text[pos] == "(":
                pos += 1
                paths.extend(parse_list(path, ")"))
            else:
                paths.append(path)
            if pos < len(text) and text[pos] == ",":
                pos += 1
                continue
            if closing is not None:
                if pos < len(text) and text[pos] == closing:
                    pos += 1
                    return paths
                raise ValueError(text)
            if pos != len(text):
                raise ValueError(text)
            return paths

    if not text.strip():
        return []
    return parse_list((), None)


def _get_path(source: Any, path: tuple[str, ...]) -> Any:
    for name in path:
        if not isinstance(source, dict) or name not in source:
            return None
        source = source[name]
    return source


def _apply_path(target: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set (or, for ``None``, clear) ``path`` in ``target`` (a private deep copy)."""
    node = target
    for name in path[:-1]:
        child = node.get(name)
        if not isinstance(child, dict):
            if value is None:
                return
            child = node[name] = {}
        node = child
    if value is None:
        node.pop(path[-1], None)
    else:
        node[path[-1]] = copy.deepcopy(value)


def _prune(node: dict[str, Any]) -> dict[str, Any]:
    for key in [k for k, v in node.items() if isinstance(v, dict)]:
        if not _prune(node[key]):
            del node[key]
    return node


def _int_field(value: Any, where: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ApiError(400, f"Invalid value at '{where}' (TYPE_INT32), {json.dumps(value)}")
    try:
        return int(value)
    except ValueError:
        raise ApiError(400, f"Invalid value at '{where}' (TYPE_INT32), \"{value}\"") from None


def _snake(name: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", name).lower()


# --------------------------------------------------------------------------- auth helpers

JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
_UNAUTHENTICATED = (
    "Request had invalid authentication credentials. Expected OAuth 2 access token, login cookie "
    "or other valid authentication credential. "
    "See https://developers.google.com/identity/sign-in/web/devconsole-project."
)


class OAuthError(Exception):
    """An error answered by the token endpoint in the OAuth 2.0 shape."""

    def __init__(self, error: str, description: str, code: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.code = code
        self.error = error
        self.description = description

    def body(self) -> dict[str, Any]:
        return {"error": self.error, "error_description": self.description}


def _b64url_json(segment: str) -> Any:
    return json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))


def decode_jwt_claims(assertion: str) -> dict[str, Any]:
    """The claims of a JWT, not verified (the signature is not checked)."""
    parts = assertion.split(".")
    if len(parts) != 3:
        raise OAuthError("invalid_grant", "Invalid JWT: the assertion is not a signed JWT (3 segments).")
    try:
        header, claims = _b64url_json(parts[0]), _b64url_json(parts[1])
    except (ValueError, binascii.Error):
        raise OAuthError("invalid_grant", "Invalid JWT: the assertion could not be decoded.") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise OAuthError("invalid_grant", "Invalid JWT: the assertion could not be decoded.")
    if not isinstance(claims.get("iss"), str) or not claims["iss"]:
        raise OAuthError("invalid_grant", "Invalid JWT: no issuer (iss) claim.")
    return claims


@dataclass
class _FailRule:
    status: int
    remaining: int
    method: str | None
    path_contains: str | None

    def matches(self, method: str, raw_path: str, path: str) -> bool:
        if self.method is not None and self.method.upper() != method.upper():
            return False
        return self.path_contains is None or self.path_contains in path or self.path_contains in raw_path


# --------------------------------------------------------------------------- the stand-in


class SheetsStandIn:
    """In-memory Sheets API v4 stand-in with an HTTP front end and Python test controls.

    ``require_auth``: API requests need a bearer token issued by :attr:`token_uri` (or
    :meth:`issue_token`). ``latency``: seconds each API request waits before it is answered
    (outside the lock, so concurrent requests overlap as they would against Google).

    Counters: ``request_count`` / ``method_counts`` (by API method name, e.g.
    ``"spreadsheets.values.get"``) / ``requests_log`` (``(http_method, path, query)`` with the
    path percent-decoded and ``query`` as :func:`urllib.parse.parse_qs` gives it) cover API
    requests only; ``token_request_count`` counts ``/token`` requests.
    """

    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        require_auth: bool = False,
        latency: float = 0.0,
    ) -> None:
        self.host = host
        self.port = port
        self.require_auth = require_auth
        self.latency = latency
        self._lock = threading.RLock()
        self._spreadsheets: dict[str, Spreadsheet] = {}
        self._fail_rules: list[_FailRule] = []
        self._tokens: dict[str, str] = {}  # access token -> the service account's email
        self.request_count = 0
        self.token_request_count = 0
        self.method_counts: Counter[str] = Counter()
        self.requests_log: list[tuple[str, str, dict[str, list[str]]]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- test controls -------------------------------------------------------------

    def create_spreadsheet(
        self,
        title: str,
        sheets: dict[str, list[list[Any]]] | None = None,
        spreadsheet_id: str | None = None,
        *,
        shared_with: list[str] | None = None,
    ) -> str:
        """Create a spreadsheet; cell values are stored as given (like RAW, but numbers,
        booleans and :class:`Formula` values are kept; ``date`` / ``datetime`` values become
        serial numbers formatted ``yyyy-mm-dd`` / ``yyyy-mm-dd hh:mm:ss``). Returns its id.

        ``shared_with``: the service-account emails allowed to use it when the stand-in
        requires auth (others get 403); ``None`` lets any authenticated caller in."""
        with self._lock:
            sid = spreadsheet_id or secrets.token_urlsafe(33)
            book = Spreadsheet(sid, title)
            if shared_with is not None:
                book.shared_with = frozenset(email.lower() for email in shared_with)
            for sheet_title, rows in (sheets or {"Sheet1": []}).items():
                n_rows = max(DEFAULT_ROWS, len(rows))
                n_cols = max([DEFAULT_COLS, *(len(r) for r in rows)])
                sheet = book.add_sheet(sheet_title, n_rows, n_cols)
                for r, row in enumerate(rows):
                    for c, value in enumerate(row):
                        if value is None or (isinstance(value, str) and value == ""):
                            continue
                        if isinstance(value, datetime):
                            sheet.set(r, c, date_to_serial(value))
                            sheet.set_number_format(r, c, ISO_DATE_TIME_FORMAT)
                        elif isinstance(value, date):
                            sheet.set(r, c, date_to_serial(value))
                            sheet.set_number_format(r, c, ISO_DATE_FORMAT)
                        else:
                            sheet.set(r, c, value)
            self._spreadsheets[sid] = book
            return sid

    def add_chart_sheet(self, spreadsheet_id: str, title: str) -> None:
        """Give a spreadsheet a sheet holding only a chart (``sheetType`` OBJECT), as "Move to own
        sheet" on a chart does: listed by spreadsheets.get, without cells or grid to read or write."""
        with self._lock:
            sheet = self._spreadsheets[spreadsheet_id].add_sheet(title, 1, 1)
            sheet.sheet_type = "OBJECT"

    def _sheet(self, spreadsheet_id: str, title: str) -> Sheet:
        sheet = self._spreadsheets[spreadsheet_id].find_sheet(title)
        if sheet is None:
            raise KeyError(title)
        return sheet

    def sheet_values(self, spreadsheet_id: str, title: str) -> list[list[Any]]:
        """Raw stored values (empty cells as ``None``; trailing empties trimmed)."""
        with self._lock:
            rows = [list(row) for row in self._sheet(spreadsheet_id, title).cells]
            return _trim_none(rows)

    def cell_values(self, spreadsheet_id: str, title: str) -> list[list[Any]]:
        """The sheet's values as Python values, trailing empty cells/rows trimmed as the API does.

        ``None`` for an empty cell, ``str``, ``int``/``float``, ``bool``; a formula gives its
        computed value (see :meth:`sheet_values` for the formula text); a number in a cell
        formatted DATE gives a ``date`` (a ``datetime`` if it has a time of day), DATE_TIME a
        ``datetime`` (also at midnight), TIME a ``time``; to the millisecond."""
        with self._lock:
            sheet = self._sheet(spreadsheet_id, title)
            rows = [
                [
                    python_value(v, sheet.number_format(r, c)) if v is not None else None
                    for c, v in enumerate(row)
                ]
                for r, row in enumerate(sheet.cells)
            ]
            return _trim_none(rows)

    def cell_format(self, spreadsheet_id: str, title: str, row: int, col: int | str) -> dict[str, Any] | None:
        """The number format of one cell (``{"type": "DATE", "pattern": "yyyy-mm-dd"}``) or None.

        ``row`` and ``col`` are both 1-based (``row=1, col=1`` is A1); ``col`` may also be letters."""
        c = letters_to_col(col) if isinstance(col, str) else col - 1
        if row < 1 or c < 0:
            raise ValueError(f"row and col are 1-based (got row={row!r}, col={col!r})")
        with self._lock:
            number_format = self._sheet(spreadsheet_id, title).number_format(row - 1, c)
            return copy.deepcopy(number_format) if number_format else None

    def sheet_titles(self, spreadsheet_id: str) -> list[str]:
        """The titles of a spreadsheet's sheets, in their order."""
        with self._lock:
            return [sheet.title for sheet in self._spreadsheets[spreadsheet_id].sheets]

    def sheet_properties(self, spreadsheet_id: str, title: str) -> dict[str, Any]:
        with self._lock:
            return self._sheet(spreadsheet_id, title).properties()

    def fail_next(
        self,
        n: int = 1,
        status: int = 429,
        *,
        method: str | None = None,
        path_contains: str | None = None,
    ) -> None:
        """Answer the next ``n`` API requests with Google's error JSON for ``status``.

        With ``method`` (an HTTP method, e.g. ``"PUT"``) and/or ``path_contains`` (a substring of
        the request path, matched before and after percent-decoding, e.g. ``":append"`` or
        ``"values/Leads"``) only matching requests count and fail; others pass. Failed requests
        still count in ``request_count`` / ``method_counts`` and change nothing. 429, 500 and
        503 get Google's messages; other codes a generic one. ``/token`` requests never fail."""
        if n > 0:
            with self._lock:
                self._fail_rules.append(_FailRule(status, n, method, path_contains))

    def clear_failures(self) -> None:
        """Forget the failures :meth:`fail_next` queued that have not happened yet."""
        with self._lock:
            self._fail_rules.clear()

    def reset_counts(self) -> None:
        with self._lock:
            self.request_count = 0
            self.token_request_count = 0
            self.method_counts.clear()
            self.requests_log.clear()

    def issue_token(self, email: str) -> str:
        """A bearer token for ``email``, as ``/token`` issues (for raw-HTTP tests)."""
        token = "ya29.standin-" + secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = email
        return token

    def revoke_tokens(self) -> None:
        """Invalidate every issued access token (callers must fetch new ones)."""
        with self._lock:
            self._tokens.clear()

    @property
    def token_uri(self) -> str:
        """The OAuth token endpoint, for a service-account JSON's ``token_uri``."""
        return self.base_url + "/token"

    # ---- server lifecycle ----------------------------------------------------------

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("stand-in is not running; call start() or use it as a context manager")
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> SheetsStandIn:
        if self._server is not None:
            return self
        handler = type("_BoundHandler", (_Handler,), {"standin": self})
        self._server = ThreadingHTTPServer((self.host, self.port), handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="sheets-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> SheetsStandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- dispatch ------------------------------------------------------------------

    def handle(
        self, http_method: str, raw_path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any]]:
        """Handle one HTTP request; returns (status, JSON body)."""
        status, payload, _ = self.handle_with_headers(http_method, raw_path, body, headers)
        return status, payload

    def handle_with_headers(
        self, http_method: str, raw_path: str, body: bytes, headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        """Handle one HTTP request; returns (status, JSON body, extra response headers)."""
        parts = urlsplit(raw_path)
        lowered = {k.lower(): v for k, v in (headers or {}).items()}
        if parts.path == "/token" and http_method == "POST":
            try:
                return 200, self._token(body, lowered), {"Cache-Control": "no-cache, no-store"}
            except OAuthError as err:
                return err.code, err.body(), {}
        if self.latency > 0:
            time.sleep(self.latency)
        query = parse_qs(parts.query, keep_blank_values=True)
        path = unquote(parts.path)
        with self._lock:
            self.request_count += 1
            route_error: ApiError | None = None
            try:
                name, func = self._route(http_method, parts.path)
            except ApiError as exc:
                name, route_error = "unknown", exc
            self.method_counts[name] += 1
            self.requests_log.append((http_method, path, query))
            caller: str | None = None
            if self.require_auth and parts.path.startswith("/v4/"):
                caller = self._caller(lowered)
                if caller is None:
                    denied = ApiError(401, _UNAUTHENTICATED)
                    return (
                        401,
                        denied.body(),
                        {"WWW-Authenticate": 'Bearer realm="https://accounts.google.com/"'},
                    )
            if route_error is not None:
                return route_error.code, route_error.body(), {}
            for rule in self._fail_rules:
                if rule.matches(http_method, parts.path, path):
                    rule.remaining -= 1
                    if rule.remaining <= 0:
                        self._fail_rules.remove(rule)
                    message = _FAIL_MESSAGES.get(rule.status, "Stand-in injected failure.")
                    return rule.status, ApiError(rule.status, message).body(), {}
            try:
                payload: dict[str, Any] = {}
                if body.strip():
                    try:
                        payload = json.loads(body)
                    except ValueError:
                        raise ApiError(400, "Invalid JSON payload received.") from None
                    if not isinstance(payload, dict):
                        raise ApiError(400, "Invalid JSON payload received.")
                return 200, func(query, payload, caller), {}
            except ApiError as err:
                return err.code, err.body(), {}
            except Exception as exc:  # a stand-in bug or a payload of the wrong shape: say so
                internal = f"Internal error encountered. (stand-in: {type(exc).__name__}: {exc})"
                return 500, ApiError(500, internal).body(), {}

    def _caller(self, headers: dict[str, str]) -> str | None:
        scheme, _, token = headers.get("authorization", "").strip().partition(" ")
        if scheme.lower() != "bearer":
            return None
        return self._tokens.get(token.strip())

    def _token(self, body: bytes, headers: dict[str, str]) -> dict[str, Any]:
        """OAuth 2.0 token endpoint, JWT bearer grant (RFC 7523) as google-auth sends it."""
        with self._lock:
            self.token_request_count += 1
        try:
            text = body.decode("utf-8")
            if "json" in headers.get("content-type", ""):
                raw = json.loads(text or "{}")
                form = {str(k): str(v) for k, v in raw.items()} if isinstance(raw, dict) else {}
            else:
                form = {k: v[0] for k, v in parse_qs(text, keep_blank_values=True).items()}
        except ValueError:
            raise OAuthError("invalid_request", "Could not parse the request body.") from None
        grant = form.get("grant_type", "")
        if grant != JWT_BEARER_GRANT:
            raise OAuthError("unsupported_grant_type", f"Invalid grant_type: {grant}")
        assertion = form.get("assertion")
        if not assertion:
            raise OAuthError("invalid_request", "Missing required parameter: assertion")
        claims = decode_jwt_claims(assertion)
        return {"access_token": self.issue_token(claims["iss"]), "expires_in": 3599, "token_type": "Bearer"}

    def _route(self, http_method: str, path: str) -> tuple[str, Callable[..., dict[str, Any]]]:
        if not path.startswith(BASE_PATH + "/"):
            raise _not_found()
        rest = path[len(BASE_PATH) + 1 :]
        m = re.match(r"^([A-Za-z0-9_-]+)(.*)$", rest)
        if not m:
            raise _not_found()
        sid, tail = m.group(1), m.group(2)

        def bind(fn: Callable[..., dict[str, Any]], *args: Any) -> Callable[..., dict[str, Any]]:
            return lambda q, p, caller: fn(self._book(sid, caller), *args, q, p)

        routes: dict[tuple[str, str], tuple[str, Callable[..., dict[str, Any]]]] = {
            ("GET", ""): ("spreadsheets.get", bind(self._get)),
            ("POST", ":batchUpdate"): ("spreadsheets.batchUpdate", bind(self._batch_update)),
            ("GET", "/values:batchGet"): ("spreadsheets.values.batchGet", bind(self._values_batch_get)),
            ("POST", "/values:batchUpdate"): (
                "spreadsheets.values.batchUpdate",
                bind(self._values_batch_update),
            ),
            ("POST", "/values:batchClear"): (
                "spreadsheets.values.batchClear",
                bind(self._values_batch_clear),
            ),
        }
        if (http_method, tail) in routes:
            return routes[(http_method, tail)]
        if tail.startswith("/values/"):
            encoded = tail[len("/values/") :]
            if http_method == "POST" and encoded.endswith(":append"):
                rng = unquote(encoded[: -len(":append")])
                return "spreadsheets.values.append", bind(self._values_append, rng)
            if http_method == "POST" and encoded.endswith(":clear"):
                rng = unquote(encoded[: -len(":clear")])
                return "spreadsheets.values.clear", bind(self._values_clear, rng)
            rng = unquote(encoded)
            if http_method == "GET":
                return "spreadsheets.values.get", bind(self._values_get, rng)
            if http_method == "PUT":
                return "spreadsheets.values.update", bind(self._values_update, rng)
        raise _not_found()

    def _book(self, sid: str, caller: str | None = None) -> Spreadsheet:
        book = self._spreadsheets.get(sid)
        if book is None:
            raise _not_found()
        if (
            self.require_auth
            and book.shared_with is not None
            and (caller or "").lower() not in book.shared_with
        ):
            raise ApiError(403, "The caller does not have permission")
        return book

    # ---- API methods ---------------------------------------------------------------

    def _get(self, book: Spreadsheet, query: dict[str, list[str]], payload: dict[str, Any]) -> dict[str, Any]:
        return book.to_json()

    def _batch_update(
        self, book: Spreadsheet, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        requests = payload.get("requests") or []
        if not isinstance(requests, list):
            raise ApiError(400, "Invalid JSON payload received. 'requests' must be a list.")
        handlers: dict[str, Callable[[Spreadsheet, int, dict[str, Any]], dict[str, Any]]] = {
            "addSheet": self._add_sheet,
            "updateSheetProperties": self._update_sheet_properties,
            "repeatCell": self._repeat_cell,
            "insertDimension": self._insert_dimension,
            "deleteDimension": self._delete_dimension,
        }
        # reject unsupported kinds before anything is applied
        for i, req in enumerate(requests):
            if isinstance(req, dict) and not req:
                raise ApiError(400, f"Invalid requests[{i}]: No request set.")
            if not isinstance(req, dict) or len(req) != 1 or next(iter(req)) not in handlers:
                kinds = ", ".join(req) if isinstance(req, dict) else type(req).__name__
                raise ApiError(
                    400,
                    f"Invalid requests[{i}]: the stand-in supports only {', '.join(handlers)} (got {kinds}).",
                )
        restore = book.snapshot()  # batchUpdate is atomic: a failing request undoes the others
        replies = []
        try:
            for i, req in enumerate(requests):
                kind, body = next(iter(req.items()))
                if not isinstance(body, dict):
                    raise ApiError(400, f"Invalid requests[{i}].{kind}: expected an object.")
                replies.append(handlers[kind](book, i, body))
        except BaseException:
            restore()
            raise
        return {"spreadsheetId": book.spreadsheet_id, "replies": replies}

    @staticmethod
    def _check_frozen(
        error: Callable[[str], ApiError], rows: int, cols: int, frozen_rows: int, frozen_cols: int
    ) -> None:
        if rows < 0 or cols < 0 or frozen_rows < 0 or frozen_cols < 0:
            raise error("Row and column counts must not be negative.")
        if frozen_rows and frozen_rows >= rows:
            raise error("You can't freeze all visible rows on the sheet.")
        if frozen_cols and frozen_cols >= cols:
            raise error("You can't freeze all visible columns on the sheet.")

    def _add_sheet(self, book: Spreadsheet, i: int, body: dict[str, Any]) -> dict[str, Any]:
        def error(message: str) -> ApiError:
            return ApiError(400, f"Invalid requests[{i}].addSheet: {message}")

        where = f"requests[{i}].add_sheet.properties"
        props = body.get("properties") or {}
        grid = (props.get("gridProperties") or {}) if isinstance(props, dict) else {}
        if not isinstance(props, dict) or not isinstance(grid, dict):
            raise error("properties must be an object.")
        title = str(props.get("title") or "")
        if not title:
            n = len(book.sheets) + 1
            while book.title_taken(f"Sheet{n}"):
                n += 1
            title = f"Sheet{n}"
        rows = _int_field(grid.get("rowCount", DEFAULT_ROWS), f"{where}.grid_properties.row_count")
        cols = _int_field(grid.get("columnCount", DEFAULT_COLS), f"{where}.grid_properties.column_count")
        frozen_rows = _int_field(grid.get("frozenRowCount", 0), f"{where}.grid_properties.frozen_row_count")
        frozen_cols = _int_field(
            grid.get("frozenColumnCount", 0), f"{where}.grid_properties.frozen_column_count"
        )
        index = None if props.get("index") is None else _int_field(props["index"], f"{where}.index")
        sheet_id = None if props.get("sheetId") is None else _int_field(props["sheetId"], f"{where}.sheet_id")
        if book.title_taken(title):
            raise error(f'A sheet with the name "{title}" already exists. Please enter another name.')
        if sheet_id is not None and (sheet_id < 0 or book.sheet_by_id(sheet_id) is not None):
            raise error(f"Sheet ID {sheet_id} is negative or already in use.")
        self._check_frozen(error, rows, cols, frozen_rows, frozen_cols)
        sheet = book.add_sheet(title, rows, cols, index, sheet_id)
        sheet.frozen_row_count, sheet.frozen_column_count = frozen_rows, frozen_cols
        return {"addSheet": {"properties": sheet.properties()}}

    _GRID_FIELDS = ("rowCount", "columnCount", "frozenRowCount", "frozenColumnCount")

    def _update_sheet_properties(self, book: Spreadsheet, i: int, body: dict[str, Any]) -> dict[str, Any]:
        def error(message: str) -> ApiError:
            return ApiError(400, f"Invalid requests[{i}].updateSheetProperties: {message}")

        where = f"requests[{i}].update_sheet_properties.properties"
        props = body.get("properties") or {}
        grid = (props.get("gridProperties") or {}) if isinstance(props, dict) else {}
        if not isinstance(props, dict) or not isinstance(grid, dict):
            raise error("properties must be an object.")
        fields = body.get("fields")
        if not isinstance(fields, str) or not fields.strip():
            raise error("'fields' is required (a field mask naming the properties to update).")
        try:
            paths = parse_field_mask(fields)
        except ValueError:
            raise error(f"Invalid field mask: {fields}") from None
        sheet_id = _int_field(props.get("sheetId", 0), f"{where}.sheet_id")
        sheet = book.sheet_by_id(sheet_id)
        if sheet is None:
            raise error(f"No grid with id: {sheet_id}")
        new: dict[str, Any] = {
            "title": sheet.title,
            "index": None,
            "rowCount": sheet.row_count,
            "columnCount": sheet.column_count,
            "frozenRowCount": sheet.frozen_row_count,
            "frozenColumnCount": sheet.frozen_column_count,
        }
        for path in paths:
            if path == ("title",):
                new["title"] = str(props.get("title") or "")
                if not new["title"]:
                    raise error("A sheet's title must not be empty.")
            elif path == ("index",):
                new["index"] = _int_field(props.get("index", 0), f"{where}.index")
            elif path == ("gridProperties",):
                for key in self._GRID_FIELDS:
                    if key in grid or key.startswith("frozen"):
                        new[key] = _int_field(grid.get(key, 0), f"{where}.grid_properties.{_snake(key)}")
            elif len(path) == 2 and path[0] == "gridProperties" and path[1] in self._GRID_FIELDS:
                new[path[1]] = _int_field(grid.get(path[1], 0), f"{where}.grid_properties.{_snake(path[1])}")
            else:
                raise error(
                    f"the stand-in cannot update '{'.'.join(path)}' (it supports title, index and "
                    "gridProperties.rowCount/columnCount/frozenRowCount/frozenColumnCount)."
                )
        if book.title_taken(new["title"], other_than=sheet):
            raise error(f'A sheet with the name "{new["title"]}" already exists. Please enter another name.')
        if new["rowCount"] < 1 or new["columnCount"] < 1:
            raise error("A sheet must keep at least one row and one column.")
        self._check_frozen(
            error, new["rowCount"], new["columnCount"], new["frozenRowCount"], new["frozenColumnCount"]
        )
        sheet.title = new["title"]
        sheet.resize(new["rowCount"], new["columnCount"])
        sheet.frozen_row_count, sheet.frozen_column_count = new["frozenRowCount"], new["frozenColumnCount"]
        if new["index"] is not None:
            # indexes count "before the move", as Google documents: to move S1 of S1,S2,S3
            # after S2 the index is 2
            target = new["index"] - 1 if new["index"] > sheet.index else new["index"]
            book.move_sheet(sheet, target)
        return {}

    def _dimension_range(
        self, book: Spreadsheet, i: int, kind: str, body: dict[str, Any], *, bounded: bool
    ) -> tuple[Sheet, str, int, int | None]:
        """Validate a request's DimensionRange -> (sheet, dimension, start, end or None)."""

        def error(message: str) -> ApiError:
            return ApiError(400, f"Invalid requests[{i}].{kind}: {message}")

        where = f"requests[{i}].{_snake(kind)}.range"
        rng = body.get("range")
        if not isinstance(rng, dict):
            raise error("range is required.")
        sheet_id = _int_field(rng.get("sheetId", 0), f"{where}.sheet_id")
        dimension = rng.get("dimension")
        if dimension not in (None, "DIMENSION_UNSPECIFIED", "ROWS", "COLUMNS"):
            raise ApiError(
                400,
                f"Invalid value at '{where}.dimension' "
                f'(type.googleapis.com/google.apps.sheets.v4.Dimension), "{dimension}"',
            )
        sheet = book.sheet_by_id(sheet_id)
        if sheet is None:
            raise error(f"No grid with id: {sheet_id}")
        if dimension not in ("ROWS", "COLUMNS"):
            raise error("range.dimension must be ROWS or COLUMNS.")
        start = _int_field(rng.get("startIndex", 0), f"{where}.start_index")
        end = None if rng.get("endIndex") is None else _int_field(rng["endIndex"], f"{where}.end_index")
        if start < 0 or (end is not None and end < 0):
            raise error("DimensionRange indexes must be >= 0")
        if end is None and bounded:
            raise error("range.endIndex is required.")
        if end is not None and end <= start:
            raise error("range.endIndex must be greater than range.startIndex.")
        return sheet, dimension, start, end

    def _delete_dimension(self, book: Spreadsheet, i: int, body: dict[str, Any]) -> dict[str, Any]:
        def error(message: str) -> ApiError:
            return ApiError(400, f"Invalid requests[{i}].deleteDimension: {message}")

        sheet, dimension, start, maybe_end = self._dimension_range(
            book, i, "deleteDimension", body, bounded=False
        )
        rows = dimension == "ROWS"
        size = sheet.row_count if rows else sheet.column_count
        end = size if maybe_end is None else maybe_end
        if start >= end:  # an open range starting at or past the grid's end
            raise error("range.endIndex must be greater than range.startIndex.")
        if end > size:
            last_row, last_col = sheet.row_count - 1, sheet.column_count - 1
            box = (start, 0, end - 1, last_col) if rows else (0, start, last_row, end - 1)
            raise error(
                f"Range ({format_a1(sheet.title, *box)}) exceeds grid limits. "
                f"Max rows: {sheet.row_count}, max columns: {sheet.column_count}"
            )
        what = "rows" if rows else "columns"
        frozen = sheet.frozen_row_count if rows else sheet.frozen_column_count
        frozen_left = frozen - max(0, min(end, frozen) - start)
        left = size - (end - start)
        if left == 0:
            raise error(f"You can't delete all the {what} on the sheet.")
        if frozen_left and left <= frozen_left:
            raise error(f"Sorry, it is not possible to delete all non-frozen {what}.")
        sheet.delete_dimension(dimension, start, end)
        return {}

    def _insert_dimension(self, book: Spreadsheet, i: int, body: dict[str, Any]) -> dict[str, Any]:
        def error(message: str) -> ApiError:
            return ApiError(400, f"Invalid requests[{i}].insertDimension: {message}")

        sheet, dimension, start, end = self._dimension_range(book, i, "insertDimension", body, bounded=True)
        assert end is not None
        inherit = body.get("inheritFromBefore", False)
        if not isinstance(inherit, bool):
            raise ApiError(
                400,
                f"Invalid value at 'requests[{i}].insert_dimension.inherit_from_before' (TYPE_BOOL), "
                f"{json.dumps(inherit)}",
            )
        size = sheet.row_count if dimension == "ROWS" else sheet.column_count
        if start > size:
            raise error(f"range.startIndex must be less than or equal to the grid size ({size}).")
        if start == size and not inherit:
            raise error(
                f"range.startIndex must be less than the grid size ({size}) if inheritFromBefore is false."
            )
        if start == 0 and inherit:
            raise error("range.startIndex must be greater than 0 if inheritFromBefore is true.")
        sheet.insert_dimension(dimension, start, end, inherit)
        return {}

    def _repeat_cell(self, book: Spreadsheet, i: int, body: dict[str, Any]) -> dict[str, Any]:
        def error(message: str) -> ApiError:
            return ApiError(400, f"Invalid requests[{i}].repeatCell: {message}")

        where = f"requests[{i}].repeat_cell"
        rng = body.get("range")
        cell = body.get("cell") or {}
        if not isinstance(rng, dict):
            raise error("range is required.")
        if not isinstance(cell, dict):
            raise error("cell must be an object.")
        fields = body.get("fields")
        if not isinstance(fields, str) or not fields.strip():
            raise error("'fields' is required (a field mask naming the cell fields to set).")
        try:
            paths = parse_field_mask(fields)
        except ValueError:
            raise error(f"Invalid field mask: {fields}") from None
        sub_paths = []
        for path in paths:
            if path[0] != "userEnteredFormat" or "*" in path:
                raise error(f"the stand-in supports only userEnteredFormat fields (got '{'.'.join(path)}').")
            sub_paths.append(path[1:])  # () is the whole userEnteredFormat
        sheet_id = _int_field(rng.get("sheetId", 0), f"{where}.range.sheet_id")
        sheet = book.sheet_by_id(sheet_id)
        if sheet is None:
            raise error(f"No grid with id: {sheet_id}")
        bounds = [
            _int_field(rng.get(key, default), f"{where}.range.{_snake(key)}")
            for key, default in (
                ("startRowIndex", 0),
                ("endRowIndex", sheet.row_count),
                ("startColumnIndex", 0),
                ("endColumnIndex", sheet.column_count),
            )
        ]
        r0, r1, c0, c1 = bounds
        if min(bounds) < 0 or r0 > r1 or c0 > c1:
            raise error("The range's start must not be negative or after its end.")
        if r1 > sheet.row_count or c1 > sheet.column_count:
            a1 = format_a1(sheet.title, r0, c0, max(r1 - 1, r0), max(c1 - 1, c0))
            raise error(
                f"Range ({a1}) exceeds grid limits. Max rows: {sheet.row_count}, "
                f"max columns: {sheet.column_count}"
            )
        source = cell.get("userEnteredFormat") or {}
        if not isinstance(source, dict):
            raise error("cell.userEnteredFormat must be an object.")
        number_format = source.get("numberFormat")
        if isinstance(number_format, dict) and "type" in number_format:
            kind = number_format["type"]
            if kind not in NUMBER_FORMAT_TYPES:
                raise ApiError(
                    400,
                    f"Invalid value at '{where}.cell.user_entered_format.number_format.type' "
                    f'(type.googleapis.com/google.apps.sheets.v4.NumberFormatType), "{kind}"',
                )
        # cells sharing a format share the result (keep `old` alive so its id stays unique)
        results: dict[int, tuple[Any, dict[str, Any] | None]] = {}
        formats = sheet.formats
        for r in range(r0, r1):
            for c in range(c0, c1):
                old = formats.get((r, c))
                hit = results.get(id(old))
                if hit is None:
                    target: dict[str, Any] = copy.deepcopy(old) if old else {}
                    for sub in sub_paths:
                        if not sub:
                            target = copy.deepcopy(source)
                        else:
                            _apply_path(target, sub, _get_path(source, sub))
                    hit = results[id(old)] = (old, _prune(target) or None)
                if hit[1] is None:
                    formats.pop((r, c), None)
                else:
                    formats[(r, c)] = hit[1]
        return {}

    def _read(
        self,
        book: Spreadsheet,
        range_text: str,
        render_option: str,
        major: str,
        date_option: str = "SERIAL_NUMBER",
    ) -> dict[str, Any]:
        sheet, bounds = book.resolve(range_text)
        if bounds is None:
            bounds = A1Range(0, 0, None, None)
        if bounds.r0 >= sheet.row_count or bounds.c0 >= sheet.column_count:
            raise ApiError(
                400,
                f"Range ({format_a1(sheet.title, bounds.r0, bounds.c0, bounds.r0, bounds.c0)}) "
                f"exceeds grid limits. Max rows: {sheet.row_count}, max columns: {sheet.column_count}",
            )
        r1 = sheet.row_count - 1 if bounds.r1 is None else min(bounds.r1, sheet.row_count - 1)
        c1 = sheet.column_count - 1 if bounds.c1 is None else min(bounds.c1, sheet.column_count - 1)
        last_row = min(r1, len(sheet.cells) - 1)
        number_format = sheet.number_format if sheet.formats else lambda r, c: None
        rows = [
            [
                render(sheet.get(r, c), render_option, number_format(r, c), date_option)
                for c in range(bounds.c0, c1 + 1)
            ]
            for r in range(bounds.r0, last_row + 1)
        ]
        if major == "COLUMNS":
            width = c1 - bounds.c0 + 1
            rows = [[row[c] for row in rows] for c in range(width)] if rows else []
        result: dict[str, Any] = {
            "range": format_a1(sheet.title, bounds.r0, bounds.c0, r1, c1),
            "majorDimension": major,
        }
        values = _trim(rows)
        if values:
            result["values"] = values
        return result

    @staticmethod
    def _date_option(value: Any, name: str) -> str:
        option = value or "SERIAL_NUMBER"
        if option not in ("SERIAL_NUMBER", "FORMATTED_STRING"):
            raise ApiError(400, f"Invalid value at '{name}', \"{option}\"")
        return str(option)

    @staticmethod
    def _read_options(query: dict[str, list[str]]) -> tuple[str, str, str]:
        render_option = (query.get("valueRenderOption") or ["FORMATTED_VALUE"])[0] or "FORMATTED_VALUE"
        major = (query.get("majorDimension") or ["ROWS"])[0] or "ROWS"
        if render_option not in ("FORMATTED_VALUE", "UNFORMATTED_VALUE", "FORMULA"):
            raise ApiError(400, f"Invalid value at 'value_render_option', \"{render_option}\"")
        if major not in ("ROWS", "COLUMNS", "DIMENSION_UNSPECIFIED"):
            raise ApiError(400, f"Invalid value at 'major_dimension', \"{major}\"")
        date_option = SheetsStandIn._date_option(
            (query.get("dateTimeRenderOption") or [""])[0], "date_time_render_option"
        )
        return render_option, ("ROWS" if major == "DIMENSION_UNSPECIFIED" else major), date_option

    def _values_get(
        self, book: Spreadsheet, rng: str, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        render_option, major, date_option = self._read_options(query)
        return self._read(book, rng, render_option, major, date_option)

    def _values_batch_get(
        self, book: Spreadsheet, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        render_option, major, date_option = self._read_options(query)
        ranges = query.get("ranges") or []
        value_ranges = [self._read(book, r, render_option, major, date_option) for r in ranges]
        result: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id}
        if value_ranges:
            result["valueRanges"] = value_ranges
        return result

    def _write(
        self,
        book: Spreadsheet,
        range_text: str,
        values: Any,
        major: str,
        input_option: str,
        *,
        anchor: tuple[Sheet, int, int] | None = None,
        dry_run: bool = False,
    ) -> tuple[dict[str, Any], Sheet, tuple[int, int, int, int] | None]:
        if input_option not in ("RAW", "USER_ENTERED"):
            raise ApiError(
                400,
                "Invalid valueInputOption: INPUT_VALUE_OPTION_UNSPECIFIED"
                if not input_option
                else f"Invalid value at 'value_input_option', \"{input_option}\"",
            )
        if not isinstance(values, list) or not all(isinstance(r, list) for r in values):
            raise ApiError(400, "Invalid values: expected a list of lists.")
        if major == "COLUMNS":
            height = max((len(col) for col in values), default=0)
            values = [[col[i] if i < len(col) else None for col in values] for i in range(height)]
        if anchor is not None:
            sheet, r0, c0 = anchor
            bounds = A1Range(r0, c0, None, None, single_cell=True)
        else:
            sheet, maybe_bounds = book.resolve(range_text)
            bounds = maybe_bounds or A1Range(0, 0, None, None)
        parsed = [[parse_input_with_format(v, input_option) for v in row] for row in values]
        n_rows = len(parsed)
        n_cols = max((len(r) for r in parsed), default=0)
        if not bounds.single_cell:
            full = format_a1(
                sheet.title,
                bounds.r0,
                bounds.c0,
                bounds.r1 if bounds.r1 is not None else sheet.row_count - 1,
                bounds.c1 if bounds.c1 is not None else sheet.column_count - 1,
            )
            if bounds.r1 is not None and n_rows > bounds.r1 - bounds.r0 + 1:
                raise ApiError(
                    400,
                    f"Requested writing within range [{full}], but tried writing to "
                    f"row [{bounds.r0 + n_rows}]",
                )
            if bounds.c1 is not None and n_cols > bounds.c1 - bounds.c0 + 1:
                raise ApiError(
                    400,
                    f"Requested writing within range [{full}], but tried writing to "
                    f"column [{col_to_letters(bounds.c0 + n_cols - 1)}]",
                )
        cells = 0
        if not dry_run:
            for i, row in enumerate(values):
                for j, raw in enumerate(row):
                    if raw is None:
                        continue  # null leaves the cell unchanged
                    r, c = bounds.r0 + i, bounds.c0 + j
                    value, implied = parsed[i][j]
                    current = sheet.number_format(r, c)
                    text_cell = current is not None and current.get("type") == "TEXT"
                    if text_cell and input_option == "USER_ENTERED" and isinstance(raw, str):
                        value, implied = raw or None, None  # a plain-text cell keeps what was typed
                    sheet.set(r, c, value)
                    if implied is not None and not is_date_format(current):
                        sheet.set_number_format(r, c, implied)
                    cells += 1
        box = None
        result: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id}
        if n_rows and n_cols:
            box = (bounds.r0, bounds.c0, bounds.r0 + n_rows - 1, bounds.c0 + n_cols - 1)
            result["updatedRange"] = format_a1(sheet.title, *box)
            result.update(updatedRows=n_rows, updatedColumns=n_cols, updatedCells=cells)
        else:
            r1 = bounds.r0 if bounds.r1 is None else bounds.r1
            c1 = bounds.c0 if bounds.c1 is None else bounds.c1
            result["updatedRange"] = format_a1(sheet.title, bounds.r0, bounds.c0, r1, c1)
        return result, sheet, box

    @staticmethod
    def _flag(value: Any) -> bool:
        if isinstance(value, list):
            value = value[0] if value else None
        return str(value).lower() == "true" if value is not None else False

    def _updated_data(
        self,
        book: Spreadsheet,
        sheet: Sheet,
        box: tuple[int, int, int, int] | None,
        render_option: str | None,
        date_option: Any = None,
    ) -> dict[str, Any]:
        render_option = render_option or "FORMATTED_VALUE"
        date_option = self._date_option(date_option, "response_date_time_render_option")
        if box is None:
            return {"range": f"{quote_sheet_name(sheet.title)}!A1", "majorDimension": "ROWS"}
        a1 = format_a1(sheet.title, *box)
        return self._read(book, a1, render_option, "ROWS", date_option)

    def _values_update(
        self, book: Spreadsheet, rng: str, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        option = (query.get("valueInputOption") or [""])[0]
        major = payload.get("majorDimension") or "ROWS"
        result, sheet, box = self._write(book, rng, payload.get("values") or [], major, option)
        if self._flag(query.get("includeValuesInResponse")):
            render_option = (query.get("responseValueRenderOption") or [""])[0] or None
            date_option = (query.get("responseDateTimeRenderOption") or [""])[0]
            result["updatedData"] = self._updated_data(book, sheet, box, render_option, date_option)
        return result

    def _values_batch_update(
        self, book: Spreadsheet, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        option = payload.get("valueInputOption") or ""
        data = payload.get("data") or []
        # validate every range before writing anything (the real call is atomic)
        for item in data:
            self._write(
                book,
                item.get("range", ""),
                item.get("values") or [],
                item.get("majorDimension") or "ROWS",
                option,
                dry_run=True,
            )
        responses = []
        sheets_touched: set[int] = set()
        totals = Counter[str]()
        include = self._flag(payload.get("includeValuesInResponse"))
        for item in data:
            result, sheet, box = self._write(
                book,
                item.get("range", ""),
                item.get("values") or [],
                item.get("majorDimension") or "ROWS",
                option,
            )
            if include:
                result["updatedData"] = self._updated_data(
                    book,
                    sheet,
                    box,
                    payload.get("responseValueRenderOption"),
                    payload.get("responseDateTimeRenderOption"),
                )
            if result.get("updatedCells"):
                sheets_touched.add(sheet.sheet_id)
                for key in ("updatedRows", "updatedColumns", "updatedCells"):
                    totals[key] += result[key]
            responses.append(result)
        out: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id}
        if totals:
            out.update(
                totalUpdatedRows=totals["updatedRows"],
                totalUpdatedColumns=totals["updatedColumns"],
                totalUpdatedCells=totals["updatedCells"],
                totalUpdatedSheets=len(sheets_touched),
            )
        out["responses"] = responses
        return out

    def _values_append(
        self, book: Spreadsheet, rng: str, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        option = (query.get("valueInputOption") or [""])[0]
        insert = (query.get("insertDataOption") or ["OVERWRITE"])[0] or "OVERWRITE"
        if insert not in ("OVERWRITE", "INSERT_ROWS"):
            raise ApiError(400, f"Invalid value at 'insert_data_option', \"{insert}\"")
        sheet, bounds = book.resolve(rng)
        bounds = bounds or A1Range(0, 0, None, None)
        c1 = bounds.c1 if bounds.c1 is not None and not bounds.single_cell else sheet.column_count - 1
        # a single cell finds a table only if it holds data; a range, the first table within it
        if bounds.single_cell:
            found = sheet.get(bounds.r0, bounds.c0) is not None
            table = sheet.find_table(bounds.r0, bounds.r0, bounds.c0, c1) if found else None
        else:
            r1 = sheet.row_count - 1 if bounds.r1 is None else bounds.r1
            table = sheet.find_table(bounds.r0, r1, bounds.c0, c1)
        values = payload.get("values") or []
        major = payload.get("majorDimension") or "ROWS"
        # validate before changing anything
        self._write(book, "", values, major, option, anchor=(sheet, bounds.r0, bounds.c0), dry_run=True)
        result: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id}
        last = None
        if table is not None:
            first, last = table
            width_end = max(
                (len(sheet.cells[r]) - 1 for r in range(first, last + 1) if r < len(sheet.cells)),
                default=bounds.c0,
            )
            table_c1 = min(max(width_end, bounds.c0), c1)
            result["tableRange"] = format_a1(sheet.title, first, bounds.c0, last, table_c1)
        start_row = bounds.r0 if last is None else last + 1
        n_rows = len(values) if major != "COLUMNS" else max((len(c) for c in values), default=0)
        if insert == "INSERT_ROWS" and n_rows:
            sheet.insert_rows(start_row, n_rows)
        updates, updated_sheet, box = self._write(
            book, "", values, major, option, anchor=(sheet, start_row, bounds.c0)
        )
        if self._flag(query.get("includeValuesInResponse")):
            render_option = (query.get("responseValueRenderOption") or [""])[0] or None
            date_option = (query.get("responseDateTimeRenderOption") or [""])[0]
            updates["updatedData"] = self._updated_data(book, updated_sheet, box, render_option, date_option)
        result["updates"] = updates
        return result

    def _clear(self, book: Spreadsheet, rng: str) -> str:
        sheet, bounds = book.resolve(rng)
        bounds = bounds or A1Range(0, 0, None, None)
        r1 = sheet.row_count - 1 if bounds.r1 is None else bounds.r1
        c1 = sheet.column_count - 1 if bounds.c1 is None else bounds.c1
        for r in range(bounds.r0, min(r1, len(sheet.cells) - 1) + 1):
            row = sheet.cells[r]
            for c in range(bounds.c0, min(c1, len(row) - 1) + 1):
                row[c] = None
        return format_a1(sheet.title, bounds.r0, bounds.c0, r1, c1)

    def _values_clear(
        self, book: Spreadsheet, rng: str, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        return {"spreadsheetId": book.spreadsheet_id, "clearedRange": self._clear(book, rng)}

    def _values_batch_clear(
        self, book: Spreadsheet, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        ranges = payload.get("ranges") or []
        for r in ranges:
            book.resolve(r)
        return {"spreadsheetId": book.spreadsheet_id, "clearedRanges": [self._clear(book, r) for r in ranges]}


class _Handler(BaseHTTPRequestHandler):
    standin: SheetsStandIn
    protocol_version = "HTTP/1.1"

    def _dispatch(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        headers = {key: value for key, value in self.headers.items()}
        status, payload, extra = self.standin.handle_with_headers(self.command, self.path, body, headers)
        data = json.dumps(payload, indent=2).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        for key, value in extra.items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(data)

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_PATCH = _dispatch
    do_DELETE = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


# --------------------------------------------------------------------------- gspread glue

GOOGLE_SHEETS_PREFIX = "https://sheets.googleapis.com/"
_REFUSED_PREFIXES = (
    "https://www.googleapis.com/",  # Drive API
    "https://docs.google.com/",
    "https://iamcredentials.googleapis.com/",
    "https://iamcredentials.mtls.googleapis.com/",
    "https://oauth2.googleapis.com/",  # a token_uri left pointing at Google
)


def make_private_key_pem() -> str:
    """A fresh RSA key in PEM, as a service-account key file holds (needs ``cryptography``)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def write_service_account_key(path: Path, *, private_key_pem: str, token_uri: str, client_email: str) -> Path:
    """A service-account key file, as Google's console downloads it, whose tokens come from ``token_uri``."""
    info = {
        "type": "service_account",
        "project_id": "demo-project",
        "private_key_id": "0f1e2d3c4b5a69788796a5b4c3d2e1f001234567",
        "private_key": private_key_pem,
        "client_email": client_email,
        "client_id": "100000000000000000001",
        "token_uri": token_uri,
    }
    Path(path).write_text(json.dumps(info), encoding="utf-8")
    return path


def mount_standin(session: Any, base_url: str) -> Any:
    """Send a ``requests.Session``'s (or google-auth ``AuthorizedSession``'s) Sheets API
    requests to the stand-in at ``base_url`` and refuse other Google hosts; returns the session.

    gspread copies its URL constants at import, so the redirect happens in a requests transport
    adapter mounted for ``https://sheets.googleapis.com/``. The Drive API, IAM credentials and
    Google's own token endpoint are mounted with an adapter that refuses (``ConnectionError``),
    so nothing reaches the network. For an ``AuthorizedSession`` the session it fetches tokens
    with is mounted too (the token request itself goes straight to the credentials'
    ``token_uri``, e.g. :attr:`SheetsStandIn.token_uri`)."""
    import requests
    from requests.adapters import HTTPAdapter

    from crmkit.sync.google import EndpointAdapter  # the same redirect crmkit itself uses

    class _Refuse(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            raise requests.ConnectionError(
                f"Sheets stand-in: {request.url} is not served (only the Sheets API is)"
            )

    # google-auth's AuthorizedSession fetches tokens, and looks up the service account's
    # Regional Access Boundary (iamcredentials.googleapis.com, in the background; failures are
    # tolerated), through a session of its own: mount there too
    auth_session = getattr(session, "_auth_request_session", None)
    for each in (session, auth_session):
        if isinstance(each, requests.Session):
            each.mount(GOOGLE_SHEETS_PREFIX, EndpointAdapter(base_url))
            for prefix in _REFUSED_PREFIXES:
                each.mount(prefix, _Refuse())
    return session


def gspread_client(base_url: str, http_client: Any = None, credentials: Any = None) -> Any:
    """A real ``gspread.Client`` (gspread 6) whose Sheets requests go to ``base_url``.

    ``http_client`` may be a gspread HTTP client class, e.g. ``gspread.BackOffHTTPClient``
    (default: gspread's plain ``HTTPClient``, which raises ``APIError`` on 429 without retrying).

    ``credentials``: google-auth credentials (e.g. service-account credentials whose
    ``token_uri`` is the stand-in's :attr:`SheetsStandIn.token_uri`); requests then go through
    a google-auth ``AuthorizedSession`` that fetches and sends bearer tokens. Without them no
    Authorization header is sent. See :func:`mount_standin` for how requests are redirected.
    """
    import gspread
    import requests

    if credentials is None:
        session = requests.Session()
    else:
        from google.auth.transport.requests import AuthorizedSession

        session = AuthorizedSession(credentials)
    mount_standin(session, base_url)
    if http_client is None:
        return gspread.Client(auth=credentials, session=session)
    return gspread.Client(auth=credentials, session=session, http_client=http_client)


# --------------------------------------------------------------------------- CLI


def _iter_demo() -> Iterator[tuple[str, list[list[Any]]]]:
    # headers from the schema, so the demo reads as crmkit's own sheet (leads have a status, not a stage)
    fields = [LEAD.get_field(name) for name in ("name", "email", "status")]
    yield LEAD.sheet, [[f.label for f in fields], ["Ada Lovelace", "ada@example.com", "new"]]
    yield "Invoice Lines", [["Invoice", "Item", "Qty", "Price"], ["INV-1", "Widget", 2, 9.5]]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m crmkit.testing.sheets_standin",
        description="Local stand-in for the Google Sheets API v4.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8765)
    parser.add_argument("--demo", action="store_true", help="create a demo spreadsheet")
    parser.add_argument(
        "--spreadsheet",
        action="append",
        default=[],
        metavar="TITLE",
        help="create an empty spreadsheet with one sheet 'Sheet1' (repeatable)",
    )
    parser.add_argument(
        "--require-auth", action="store_true", help="require bearer tokens issued by the /token endpoint"
    )
    parser.add_argument(
        "--latency", type=float, default=0.0, metavar="SECONDS", help="delay each API request"
    )
    parser.add_argument("--verbose", action="store_true", help="log each request")
    args = parser.parse_args(argv)
    standin = SheetsStandIn(args.host, args.port, require_auth=args.require_auth, latency=args.latency)
    standin.start()
    assert standin._server is not None
    standin._server.verbose = args.verbose  # type: ignore[attr-defined]
    print(f"Sheets API stand-in listening on {standin.base_url}{BASE_PATH}", flush=True)
    if args.require_auth:
        print(f"  token_uri: {standin.token_uri}", flush=True)
    if args.demo:
        sid = standin.create_spreadsheet("crmkit demo", dict(_iter_demo()), spreadsheet_id="demo")
        print(f"  demo spreadsheet id: {sid}", flush=True)
    for title in args.spreadsheet:
        print(f"  spreadsheet {title!r}: {standin.create_spreadsheet(title)}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        pass
    finally:
        standin.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
