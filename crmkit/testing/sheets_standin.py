"""A local, in-process stand-in for the parts of the Google Sheets API v4 crmkit uses.

Standard library only. Start it in a test::

    with SheetsStandIn() as standin:
        sid = standin.create_spreadsheet("CRM", {"Leads": [["Name", "Email"]]})
        gc = gspread_client(standin.base_url)      # needs gspread installed
        ws = gc.open_by_key(sid).worksheet("Leads")

or by hand: ``python -m crmkit.testing.sheets_standin --port 8765 --demo``.

Endpoints (base path ``/v4/spreadsheets``), request/response shapes follow Google's reference:

* ``GET  {id}``                        spreadsheets.get (``fields`` / ``includeGridData`` ignored)
* ``POST {id}:batchUpdate``            spreadsheets.batchUpdate, ``addSheet`` requests only
* ``GET  {id}/values/{range}``         spreadsheets.values.get
* ``PUT  {id}/values/{range}``         spreadsheets.values.update
* ``GET  {id}/values:batchGet``        spreadsheets.values.batchGet
* ``POST {id}/values:batchUpdate``     spreadsheets.values.batchUpdate
* ``POST {id}/values/{range}:append``  spreadsheets.values.append
* ``POST {id}/values/{range}:clear``   spreadsheets.values.clear
* ``POST {id}/values:batchClear``      spreadsheets.values.batchClear

Fidelity notes (where this differs from, or simplifies, the real service):

* Cell storage: ``None`` (empty), ``str``, ``int``/``float``, ``bool`` or :class:`Formula` (a ``str``
  subclass holding the formula text, e.g. ``Formula("=1+1")``). An empty string written is an
  empty cell, as in Sheets. ``null`` in written values leaves the cell unchanged, as in Sheets.
* USER_ENTERED parsing: ``"=..."`` -> formula; plain decimal/scientific numbers (``"12"``,
  ``"-1.5"``, ``"007"``, ``"1e3"``) -> numbers; ``"TRUE"``/``"FALSE"`` (any case) -> booleans;
  a leading apostrophe forces text and is dropped. NOT implemented: dates/times, percentages,
  currency and thousands separators (Sheets would turn these into formatted numbers; here
  they stay text).
* Formulas: only constant arithmetic (numbers, ``+ - * / ^``, parentheses, unary minus) is
  computed (``=1+1`` -> 2, ``=1/0`` -> ``#DIV/0!``). Any other formula (cell references,
  functions) evaluates to ``"#NAME?"`` in FORMATTED_VALUE / UNFORMATTED_VALUE rendering.
  FORMULA rendering always returns the formula text.
* FORMATTED_VALUE renders numbers with no number format: integral values as integers
  (``"12"``), others with up to 15 significant digits (``"1.5"``); booleans as
  ``"TRUE"``/``"FALSE"``. Real Sheets' "Automatic" format can differ for very large/small
  numbers. ``dateTimeRenderOption`` is accepted and ignored (no date values exist here).
* Ranges in responses use Google's style: the sheet name is quoted only when needed
  (``Sheet1!A1:Z1000``, ``'Invoice Lines'!A1:E1000``) and open-ended ranges are bounded by the
  grid. Reads whose start lies outside the grid answer 400 "exceeds grid limits"; the end of a
  read range is clamped to the grid. Writes grow the grid as needed.
* Ranges without a sheet name: an existing sheet title wins, otherwise A1 notation on the
  first sheet. Named ranges and R1C1 notation are not supported (400 "Unable to parse range").
* append: the "table" is the rows at or below the range's first row that have a non-empty cell
  within the range's columns; values are written at the range's first column in the row after
  the table's last row. INSERT_ROWS inserts whole rows there (rowCount grows by the number of
  rows); OVERWRITE (the default, as in Google) writes in place, growing the grid if needed.
* Errors use Google's JSON shape ``{"error": {"code", "message", "status"}}`` (the ``details``
  and ``errors`` arrays the real service sometimes adds are omitted).
* Not implemented: Drive API (``gspread_client`` refuses Drive requests instead of going to the
  network), spreadsheets.create, batchUpdate requests other than ``addSheet``, formatting,
  named ranges, protected ranges, authentication (any or no Authorization header is accepted).
"""

from __future__ import annotations

import argparse
import ast
import json
import operator
import re
import secrets
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from crmkit.sync.model import column_letter

__all__ = [
    "ApiError",
    "Formula",
    "SheetsStandIn",
    "gspread_client",
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


def _number(text: str) -> int | float:
    value = float(text)
    if re.fullmatch(r"[+-]?\d+", text) and abs(value) < 2**53:
        return int(text)
    return value


def parse_input(value: Any, option: str) -> Any:
    """Turn one written JSON value into a stored value (``None`` means empty)."""
    if value is None or value == "":
        return None
    if isinstance(value, bool | int | float):
        return value
    if isinstance(value, dict | list):
        raise ApiError(400, "Invalid values: nested structures are not allowed in a cell.")
    text = str(value)
    if option == "RAW":
        return text
    if text.startswith("'"):
        return text[1:] or None
    if text.startswith("=") and len(text) > 1:
        return Formula(text)
    stripped = text.strip()
    if _NUMBER_RE.match(stripped):
        return _number(stripped)
    if stripped.upper() in ("TRUE", "FALSE"):
        return stripped.upper() == "TRUE"
    return text


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


def render(stored: Any, option: str) -> Any:
    """Stored value -> JSON value for a valueRenderOption."""
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
        if option == "FORMATTED_VALUE":
            return format_number(stored)
        return _json_number(stored)
    return stored


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


# --------------------------------------------------------------------------- model


@dataclass
class Sheet:
    sheet_id: int
    title: str
    index: int
    row_count: int = DEFAULT_ROWS
    column_count: int = DEFAULT_COLS
    cells: list[list[Any]] = field(default_factory=list)

    def properties(self) -> dict[str, Any]:
        return {
            "sheetId": self.sheet_id,
            "title": self.title,
            "index": self.index,
            "sheetType": "GRID",
            "gridProperties": {"rowCount": self.row_count, "columnCount": self.column_count},
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

    def last_data_row(self, start_row: int, c0: int, c1: int) -> int | None:
        for r in range(len(self.cells) - 1, start_row - 1, -1):
            row = self.cells[r]
            if any(v is not None for v in row[c0 : c1 + 1]):
                return r
        return None

    def insert_rows(self, at: int, count: int) -> None:
        if at < len(self.cells):
            self.cells[at:at] = [[] for _ in range(count)]
        self.row_count += count


@dataclass
class Spreadsheet:
    spreadsheet_id: str
    title: str
    sheets: list[Sheet] = field(default_factory=list)
    next_sheet_id: int = 0

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

    def add_sheet(
        self, title: str, rows: int = DEFAULT_ROWS, cols: int = DEFAULT_COLS, index: int | None = None
    ) -> Sheet:
        if any(s.title.lower() == title.lower() for s in self.sheets):
            raise ApiError(
                400,
                f'Invalid requests[0].addSheet: A sheet with the name "{title}" already exists. '
                "Please enter another name.",
            )
        sheet = Sheet(self.next_sheet_id, title, 0, rows, cols)
        self.next_sheet_id = self.next_sheet_id + 1 if self.next_sheet_id else 1_000_001
        pos = len(self.sheets) if index is None else max(0, min(index, len(self.sheets)))
        self.sheets.insert(pos, sheet)
        for i, s in enumerate(self.sheets):
            s.index = i
        return sheet

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
            if maybe is None:
                raise bad
            sheet = maybe
            if a1 is None:
                return sheet, None
        try:
            return sheet, parse_a1(a1)  # type: ignore[arg-type]
        except ValueError:
            raise bad from None


# --------------------------------------------------------------------------- the stand-in


class SheetsStandIn:
    """In-memory Sheets API v4 stand-in with an HTTP front end and Python test controls."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self._lock = threading.RLock()
        self._spreadsheets: dict[str, Spreadsheet] = {}
        self._fail_queue: list[int] = []
        self.request_count = 0
        self.method_counts: Counter[str] = Counter()
        self.requests_log: list[tuple[str, str]] = []
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ---- test controls -------------------------------------------------------------

    def create_spreadsheet(
        self, title: str, sheets: dict[str, list[list[Any]]] | None = None, spreadsheet_id: str | None = None
    ) -> str:
        """Create a spreadsheet; cell values are stored as given (like RAW, but numbers,
        booleans and :class:`Formula` values are kept). Returns the spreadsheet id."""
        with self._lock:
            sid = spreadsheet_id or secrets.token_urlsafe(33)
            book = Spreadsheet(sid, title)
            for sheet_title, rows in (sheets or {"Sheet1": []}).items():
                n_rows = max(DEFAULT_ROWS, len(rows))
                n_cols = max([DEFAULT_COLS, *(len(r) for r in rows)])
                sheet = book.add_sheet(sheet_title, n_rows, n_cols)
                for r, row in enumerate(rows):
                    for c, value in enumerate(row):
                        stored = None if value == "" else value
                        if stored is not None:
                            sheet.set(r, c, stored)
            self._spreadsheets[sid] = book
            return sid

    def sheet_values(self, spreadsheet_id: str, title: str) -> list[list[Any]]:
        """Raw stored values (empty cells as ``None``; trailing empties trimmed)."""
        with self._lock:
            book = self._spreadsheets[spreadsheet_id]
            sheet = book.find_sheet(title)
            if sheet is None:
                raise KeyError(title)
            rows = [list(row) for row in sheet.cells]
            for row in rows:
                while row and row[-1] is None:
                    row.pop()
            while rows and not rows[-1]:
                rows.pop()
            return rows

    def sheet_properties(self, spreadsheet_id: str, title: str) -> dict[str, Any]:
        with self._lock:
            sheet = self._spreadsheets[spreadsheet_id].find_sheet(title)
            if sheet is None:
                raise KeyError(title)
            return sheet.properties()

    def fail_next(self, n: int = 1, status: int = 429) -> None:
        """Answer the next ``n`` requests with Google's error JSON for ``status``.

        Failed requests still count in ``request_count`` / ``method_counts`` and change nothing.
        429, 500 and 503 get Google's messages; other codes a generic one."""
        with self._lock:
            self._fail_queue.extend([status] * n)

    def reset_counts(self) -> None:
        with self._lock:
            self.request_count = 0
            self.method_counts.clear()
            self.requests_log.clear()

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

    def handle(self, http_method: str, raw_path: str, body: bytes) -> tuple[int, dict[str, Any]]:
        """Handle one HTTP request; returns (status, JSON body)."""
        parts = urlsplit(raw_path)
        query = parse_qs(parts.query, keep_blank_values=True)
        with self._lock:
            self.request_count += 1
            try:
                name, func = self._route(http_method, parts.path)
            except ApiError as err:
                self.method_counts["unknown"] += 1
                self.requests_log.append(("unknown", raw_path))
                return err.code, err.body()
            self.method_counts[name] += 1
            self.requests_log.append((name, raw_path))
            if self._fail_queue:
                status = self._fail_queue.pop(0)
                injected = ApiError(status, _FAIL_MESSAGES.get(status, "Stand-in injected failure."))
                return status, injected.body()
            try:
                payload: dict[str, Any] = {}
                if body.strip():
                    try:
                        payload = json.loads(body)
                    except ValueError:
                        raise ApiError(400, "Invalid JSON payload received.") from None
                    if not isinstance(payload, dict):
                        raise ApiError(400, "Invalid JSON payload received.")
                return 200, func(query, payload)
            except ApiError as err:
                return err.code, err.body()

    def _route(self, http_method: str, path: str) -> tuple[str, Callable[..., dict[str, Any]]]:
        if not path.startswith(BASE_PATH + "/"):
            raise _not_found()
        rest = path[len(BASE_PATH) + 1 :]
        m = re.match(r"^([A-Za-z0-9_-]+)(.*)$", rest)
        if not m:
            raise _not_found()
        sid, tail = m.group(1), m.group(2)

        def bind(fn: Callable[..., dict[str, Any]], *args: Any) -> Callable[..., dict[str, Any]]:
            return lambda q, p: fn(self._book(sid), *args, q, p)

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

    def _book(self, sid: str) -> Spreadsheet:
        book = self._spreadsheets.get(sid)
        if book is None:
            raise _not_found()
        return book

    # ---- API methods ---------------------------------------------------------------

    def _get(self, book: Spreadsheet, query: dict[str, list[str]], payload: dict[str, Any]) -> dict[str, Any]:
        return book.to_json()

    def _batch_update(
        self, book: Spreadsheet, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        requests = payload.get("requests") or []
        # validate first so a failing request applies nothing (batchUpdate is atomic)
        for i, req in enumerate(requests):
            if not isinstance(req, dict) or list(req) != ["addSheet"]:
                kinds = ", ".join(req) if isinstance(req, dict) else type(req).__name__
                raise ApiError(
                    400, f"Invalid requests[{i}]: the stand-in supports only addSheet (got {kinds})."
                )
        snapshot = (list(book.sheets), book.next_sheet_id, [s.index for s in book.sheets])
        replies = []
        try:
            for i, req in enumerate(requests):
                props = req["addSheet"].get("properties") or {}
                title = props.get("title")
                if not title:
                    title = f"Sheet{len(book.sheets) + 1}"
                    while book.find_sheet(title):
                        title += "_"
                grid = props.get("gridProperties") or {}
                try:
                    sheet = book.add_sheet(
                        title,
                        int(grid.get("rowCount", DEFAULT_ROWS)),
                        int(grid.get("columnCount", DEFAULT_COLS)),
                        props.get("index"),
                    )
                except ApiError as err:
                    err.message = err.message.replace("requests[0]", f"requests[{i}]")
                    raise
                replies.append({"addSheet": {"properties": sheet.properties()}})
        except ApiError:
            book.sheets, book.next_sheet_id = snapshot[0], snapshot[1]
            for s, idx in zip(book.sheets, snapshot[2], strict=True):
                s.index = idx
            raise
        return {"spreadsheetId": book.spreadsheet_id, "replies": replies}

    def _read(self, book: Spreadsheet, range_text: str, render_option: str, major: str) -> dict[str, Any]:
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
        rows = [
            [render(sheet.get(r, c), render_option) for c in range(bounds.c0, c1 + 1)]
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
    def _read_options(query: dict[str, list[str]]) -> tuple[str, str]:
        render_option = (query.get("valueRenderOption") or ["FORMATTED_VALUE"])[0] or "FORMATTED_VALUE"
        major = (query.get("majorDimension") or ["ROWS"])[0] or "ROWS"
        if render_option not in ("FORMATTED_VALUE", "UNFORMATTED_VALUE", "FORMULA"):
            raise ApiError(400, f"Invalid value at 'value_render_option', \"{render_option}\"")
        if major not in ("ROWS", "COLUMNS", "DIMENSION_UNSPECIFIED"):
            raise ApiError(400, f"Invalid value at 'major_dimension', \"{major}\"")
        return render_option, ("ROWS" if major == "DIMENSION_UNSPECIFIED" else major)

    def _values_get(
        self, book: Spreadsheet, rng: str, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        render_option, major = self._read_options(query)
        return self._read(book, rng, render_option, major)

    def _values_batch_get(
        self, book: Spreadsheet, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        render_option, major = self._read_options(query)
        ranges = query.get("ranges") or []
        value_ranges = [self._read(book, r, render_option, major) for r in ranges]
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
        parsed = [[parse_input(v, input_option) for v in row] for row in values]
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
                    sheet.set(bounds.r0 + i, bounds.c0 + j, parsed[i][j])
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
    ) -> dict[str, Any]:
        render_option = render_option or "FORMATTED_VALUE"
        if box is None:
            return {"range": f"{quote_sheet_name(sheet.title)}!A1", "majorDimension": "ROWS"}
        a1 = format_a1(sheet.title, *box)
        return self._read(book, a1, render_option, "ROWS")

    def _values_update(
        self, book: Spreadsheet, rng: str, query: dict[str, list[str]], payload: dict[str, Any]
    ) -> dict[str, Any]:
        option = (query.get("valueInputOption") or [""])[0]
        major = payload.get("majorDimension") or "ROWS"
        result, sheet, box = self._write(book, rng, payload.get("values") or [], major, option)
        if self._flag(query.get("includeValuesInResponse")):
            render_option = (query.get("responseValueRenderOption") or [""])[0] or None
            result["updatedData"] = self._updated_data(book, sheet, box, render_option)
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
                    book, sheet, box, payload.get("responseValueRenderOption")
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
        last = sheet.last_data_row(bounds.r0, bounds.c0, c1)
        values = payload.get("values") or []
        major = payload.get("majorDimension") or "ROWS"
        # validate before changing anything
        self._write(book, "", values, major, option, anchor=(sheet, bounds.r0, bounds.c0), dry_run=True)
        result: dict[str, Any] = {"spreadsheetId": book.spreadsheet_id}
        if last is not None:
            first = bounds.r0
            while first < last and not any(
                v is not None
                for v in (sheet.cells[first] if first < len(sheet.cells) else [])[bounds.c0 : c1 + 1]
            ):
                first += 1
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
            updates["updatedData"] = self._updated_data(book, updated_sheet, box, render_option)
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
        status, payload = self.standin.handle(self.command, self.path, body)
        data = json.dumps(payload, indent=2).encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=UTF-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch

    def log_message(self, format: str, *args: Any) -> None:
        if getattr(self.server, "verbose", False):
            super().log_message(format, *args)


# --------------------------------------------------------------------------- gspread glue

GOOGLE_SHEETS_PREFIX = "https://sheets.googleapis.com/"


def gspread_client(base_url: str, http_client: Any = None) -> Any:
    """A real ``gspread.Client`` (gspread 6) whose Sheets requests go to ``base_url``.

    ``http_client`` may be a gspread HTTP client class, e.g. ``gspread.BackOffHTTPClient``
    (default: gspread's plain ``HTTPClient``, which raises ``APIError`` on 429 without retrying).

    gspread copies its URL constants at import, so the redirect happens in a requests
    transport adapter mounted for ``https://sheets.googleapis.com/``. Drive API hosts are
    mounted with an adapter that refuses, so nothing reaches the network.
    """
    import gspread
    import requests
    from requests.adapters import HTTPAdapter

    target = base_url.rstrip("/") + "/"

    class _Redirect(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            url = request.url or ""
            if url.startswith(GOOGLE_SHEETS_PREFIX):
                request.url = target + url[len(GOOGLE_SHEETS_PREFIX) :]
            return super().send(request, *args, **kwargs)

    class _Refuse(HTTPAdapter):
        def send(self, request: Any, *args: Any, **kwargs: Any) -> Any:
            raise requests.ConnectionError(
                f"Sheets stand-in: {request.url} is not served (Drive API is not implemented)"
            )

    session = requests.Session()
    session.mount(GOOGLE_SHEETS_PREFIX, _Redirect())
    for prefix in ("https://www.googleapis.com/", "https://docs.google.com/"):
        session.mount(prefix, _Refuse())
    if http_client is None:
        return gspread.Client(auth=None, session=session)  # type: ignore[arg-type]
    return gspread.Client(auth=None, session=session, http_client=http_client)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- CLI


def _iter_demo() -> Iterator[tuple[str, list[list[Any]]]]:
    yield "Leads", [["Name", "Email", "Stage"], ["Ada Lovelace", "ada@example.com", "new"]]
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
    parser.add_argument("--verbose", action="store_true", help="log each request")
    args = parser.parse_args(argv)
    standin = SheetsStandIn(args.host, args.port).start()
    assert standin._server is not None
    standin._server.verbose = args.verbose  # type: ignore[attr-defined]
    print(f"Sheets API stand-in listening on {standin.base_url}{BASE_PATH}", flush=True)
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
