"""The Google Sheets adapter: a spreadsheet as a :class:`~crmkit.sync.source.SheetBook`.

Few requests, whatever the number of rows (the API allows about 60 a minute):

* read: the spreadsheet's metadata, then one ``values:batchGet`` for every sheet;
* write: one ``values:batchGet`` re-reading the key columns (see below), one
  ``batchUpdate`` only when sheets are added, grids must grow or cells take a
  number format (money in its currency's), then one ``values:batchUpdate``
  for the values (split past 2 MB, Google's advice) and one more for dates.

Values are read unformatted, so text stays text ("007" stays "007") and
numbers stay numbers; dates arrive as serial numbers, which date fields
read. Values are written RAW: text is stored as typed, so a name or subject
beginning with ``=`` never becomes a formula. Dates go in their own
USER_ENTERED batch as ISO text crmkit formats itself from a date, so they
land as real dates, in the cell's own date format if it has one. A
:class:`~crmkit.sync.model.Formatted` value also sets its cell's number
format (only that: the cell keeps the rest of its look).

Tabs that are not grids (a chart on its own sheet) are read as tables of
their kind, without cells, so that the engine knows the title is taken.

A spreadsheet cannot be locked while it is synced. Before writing, the key
column of every sheet written (ID, or Invoice on Invoice Lines) is read again
and compared with what was read, and the rows below the table must still be
empty: a row that a person inserted, deleted or added meanwhile stops the
write with :class:`~crmkit.sync.source.BookChangedError`, and the engine
re-reads and plans again. A write that stops halfway (a rate-limit storm
past the deadline) leaves cells that already agree with the store, and the
next run completes it.
"""

from __future__ import annotations

import json
import re
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any
from urllib.parse import urlsplit

from google.auth.credentials import Credentials
from google.auth.exceptions import GoogleAuthError
from gspread.exceptions import APIError

from crmkit.errors import CrmkitError
from crmkit.perf import paused_gc
from crmkit.sync.google import PatientHTTPClient, describe_auth_error
from crmkit.sync.model import Formatted, SheetChanges, SheetRow, SheetTable, column_letter
from crmkit.sync.source import BookChangedError
from crmkit.sync.values import as_read, serial_from_date

__all__ = ["GoogleSheetBook", "parse_spreadsheet_key", "quote_title"]

_KEY = re.compile(r"^[A-Za-z0-9_-]+$")
_URL_KEY = re.compile(r"/spreadsheets/d/([A-Za-z0-9_-]+)")
#: Google advises keeping a request's payload under 2 MB.
_MAX_PAYLOAD = 2_000_000
_SPARE_ROWS = 1000
#: What a tab that is not a grid is, as SheetTable.kind says it.
_KINDS = {"OBJECT": "chartsheet", "DATA_SOURCE": "datasourcesheet"}
_READ = {
    "valueRenderOption": "UNFORMATTED_VALUE",
    "dateTimeRenderOption": "SERIAL_NUMBER",
    "majorDimension": "ROWS",
}


def parse_spreadsheet_key(text: str) -> str:
    """The key of a spreadsheet from its key or its URL (``https://docs.google.com/spreadsheets/d/KEY/...``)."""
    text = text.strip()
    if text.startswith(("http://", "https://")):
        match = _URL_KEY.search(urlsplit(text).path)
        if match:
            return match.group(1)
        raise CrmkitError(f"{text} is not a Google spreadsheet URL (…/spreadsheets/d/KEY/…)")
    if not _KEY.match(text):
        raise CrmkitError(f"{text!r} is not a Google spreadsheet key (the long id in its URL)")
    return text


def quote_title(title: str) -> str:
    """A sheet title as A1 notation needs it: ``'Invoice Lines'``, with ``'`` doubled."""
    return "'" + title.replace("'", "''") + "'"


def _first_row(a1: str) -> int:
    """The first row of a range Google answered with (``'Leads'!A1:Z1000`` -> 1)."""
    cells = a1.rpartition("!")[2]
    digits = re.match(r"[A-Z]*(\d*)", cells)
    return int(digits.group(1)) if digits and digits.group(1) else 1


def _cell_out(value: Any) -> Any:
    """A value to write RAW; None empties the cell."""
    if value is None:
        return ""
    if isinstance(value, Decimal):  # cell_value already made text of what a double cannot hold
        return int(value) if value == value.to_integral_value() else float(value)
    return value


def _row_key(raw: list[Any]) -> tuple[Any, ...]:
    """A row as the API answered it, comparable (the API leaves out trailing empty cells)."""
    end = len(raw)
    while end and raw[end - 1] == "":
        end -= 1
    return tuple(raw[:end])


def _iso(value: date) -> str:
    if isinstance(value, datetime):
        return value.replace(tzinfo=None).isoformat(sep=" ", timespec="seconds")
    return value.isoformat()


@dataclass
class _SheetInfo:
    title: str
    sheet_id: int
    rows: int  # the grid's size
    columns: int
    last_row: int = 0  # the last row that held anything when read
    read_rows: dict[int, Any] = field(default_factory=dict)  # row -> its cells as read, for the re-check


def _sheet_info(props: dict[str, Any]) -> _SheetInfo:
    grid = props.get("gridProperties", {})
    rows, columns = grid.get("rowCount", 1000), grid.get("columnCount", 26)
    return _SheetInfo(props["title"], props["sheetId"], rows, columns)


@dataclass
class _Plan:
    """The requests one write needs."""

    structure: list[dict[str, Any]]
    raw: list[dict[str, Any]]
    dates: list[dict[str, Any]]
    formats: list[dict[str, Any]] = field(default_factory=list)
    new_ids: set[int] = field(default_factory=set)  # ids of the sheets it adds


class GoogleSheetBook:
    """A Google spreadsheet, reached through a (patient) gspread HTTP client."""

    def __init__(self, key: str, client: PatientHTTPClient, credentials: Credentials | None = None) -> None:
        self.key = parse_spreadsheet_key(key)
        self.client = client
        self.credentials = credentials
        self._title: str | None = None
        self._sheets: dict[str, _SheetInfo] = {}
        self._others: dict[str, str] = {}  # tabs that are not grids: title -> kind

    @property
    def identity(self) -> str:
        return f"gsheet:{self.key}"

    @property
    def display_name(self) -> str:
        return f"gsheet:{self.key}"

    @property
    def title(self) -> str | None:
        """The spreadsheet's title, once read."""
        return self._title

    def fingerprint(self) -> str | None:
        return None  # the Sheets API has no cheap revision; every sync reads

    def check_writable(self) -> None:
        return None  # a missing Editor share shows on the first write, with what to do

    def read_back(self, value: Any) -> Any:
        if isinstance(value, Formatted):
            value = value.value
        if isinstance(value, date):
            return serial_from_date(value)
        return as_read(value)

    # -- reading --------------------------------------------------------------

    def read(self) -> dict[str, SheetTable]:
        self._load_metadata()
        others = {title: SheetTable(title, [], [], kind=kind) for title, kind in self._others.items()}
        if not self._sheets:
            return others
        titles = list(self._sheets)
        ranges = [quote_title(t) for t in titles]
        with paused_gc():  # parsing builds many small objects and no cycles
            answer = self._call(self.client.values_batch_get, self.key, ranges, dict(_READ))
            return {**self._tables(titles, answer), **others}

    def _tables(self, titles: list[str], answer: dict[str, Any]) -> dict[str, SheetTable]:
        tables: dict[str, SheetTable] = {}
        for title, value_range in zip(titles, answer.get("valueRanges", []), strict=True):
            first = _first_row(value_range.get("range", ""))
            headers: list[str] = []
            rows: list[SheetRow] = []
            last = 0
            info = self._sheets[title]
            info.read_rows = {}
            for offset, raw in enumerate(value_range.get("values", [])):
                number = first + offset
                if key := _row_key(raw):
                    info.read_rows[number] = key
                # as the engine reads cells: numbers as floats, "" as nothing (inlined: 20k rows)
                cells = [None if v == "" else float(v) if type(v) is int else v for v in raw]
                if number == 1:
                    headers = ["" if c is None else str(c) for c in cells]
                # Google leaves out a row's trailing empty cells, so its last cell tells
                if cells and (cells[-1] is not None or any(c is not None for c in cells)):
                    last = number
                    if number > 1:
                        rows.append(SheetRow(number, cells))
            info.last_row = last
            if last == 0:
                continue  # nothing in it, not even headers: as good as missing (crmkit fills it in)
            tables[title] = SheetTable(title, headers, rows, serial_dates=True)
        return tables

    def _load_metadata(self) -> None:
        params = {"fields": "properties.title,sheets.properties"}
        meta = self._call(self.client.fetch_sheet_metadata, self.key, params)
        self._title = meta.get("properties", {}).get("title")
        self._sheets = {}
        self._others = {}
        for sheet in meta.get("sheets", []):
            props = sheet.get("properties", {})
            kind = props.get("sheetType", "GRID")
            if kind != "GRID":  # a chart on its own sheet holds no rows, and cannot take any
                self._others[props["title"]] = _KINDS.get(kind, kind.lower())
                continue
            self._sheets[props["title"]] = _sheet_info(props)

    # -- writing --------------------------------------------------------------

    def write(self, changes: list[SheetChanges]) -> None:
        self._check_rows_did_not_move(changes)
        plan = self._plan(changes)
        # sheets and grids first, then formats (split past 2 MB like the values, which is rare)
        for requests in _chunks(plan.structure + plan.formats):
            try:
                answer = self.client.batch_update(self.key, {"requests": requests})
            except APIError as exc:
                if exc.code == 400 and "already exists" in exc.error.get("message", ""):
                    raise BookChangedError(
                        f"a sheet was added to {self.key} while it was being synced; nothing was written"
                    ) from None
                raise CrmkitError(self._explain(exc)) from None
            except GoogleAuthError as exc:
                raise CrmkitError(describe_auth_error(exc, self.credentials)) from None  # type: ignore[arg-type]
            for reply in answer.get("replies", []):
                props = reply.get("addSheet", {}).get("properties")
                if props:
                    self._sheets[props["title"]] = _sheet_info(props)
        for chunk in _chunks(plan.raw):
            body = {"valueInputOption": "RAW", "data": chunk}
            self._call(self.client.values_batch_update, self.key, body)
        for chunk in _chunks(plan.dates):
            body = {"valueInputOption": "USER_ENTERED", "data": chunk}
            self._call(self.client.values_batch_update, self.key, body)

    def _check_rows_did_not_move(self, changes: list[SheetChanges]) -> None:
        """Read again every sheet about to be written; raise if any row is not as it was read.

        Rows crmkit writes are addressed by number, so a row inserted, deleted or added
        by a person meanwhile would shift them: comparing whole rows (not only IDs, which
        new rows do not have yet) catches every such move. Costs one more read per write.
        """
        infos = [info for change in changes if (info := self._find(change.title)) is not None]
        infos = list({info.title: info for info in infos}.values())
        if not infos:
            return
        ranges = [f"{quote_title(i.title)}!A1:{column_letter(i.columns - 1)}{i.rows}" for i in infos]
        answer = self._call(self.client.values_batch_get, self.key, ranges, dict(_READ))
        for info, value_range in zip(infos, answer.get("valueRanges", []), strict=True):
            first = _first_row(value_range.get("range", ""))
            values = value_range.get("values", [])
            now = {first + n: key for n, raw in enumerate(values) if (key := _row_key(raw))}
            if now != info.read_rows:
                changed = min(n for n in {*now, *info.read_rows} if now.get(n) != info.read_rows.get(n))
                raise BookChangedError(
                    f"{info.title} changed while it was being synced (row {changed}); "
                    "nothing was written to it"
                )

    def _find(self, title: str) -> _SheetInfo | None:
        wanted = title.strip().casefold()
        return next((s for t, s in self._sheets.items() if t.strip().casefold() == wanted), None)

    def _plan(self, changes: list[SheetChanges]) -> _Plan:
        plan = _Plan([], [], [])
        for change in changes:
            info = self._find(change.title)
            title = info.title if info else change.title
            rows: dict[int, dict[int, Any]] = {}
            if change.create_headers is not None:  # a missing sheet, or one left empty
                rows[1] = dict(enumerate(change.create_headers))
                first_free = 2
            else:
                first_free = max(info.last_row if info else 0, 1) + 1
            for cell in change.cells:
                rows.setdefault(cell.row, {})[cell.column] = cell.value
            for offset, values in enumerate(change.append):
                rows[first_free + offset] = {i: v for i, v in enumerate(values) if v is not None}
            height = max(rows, default=1)
            width = max((c + 1 for r in rows.values() for c in r), default=1)
            if info is None:
                sheet_id = _new_sheet_id(title, {s.sheet_id for s in self._sheets.values()} | plan.new_ids)
                plan.new_ids.add(sheet_id)
                plan.structure += _add_sheet(title, height, width, len(change.create_headers or []), sheet_id)
            else:
                sheet_id = info.sheet_id
                if height > info.rows or width > info.columns:
                    plan.structure.append(_grow(info, height, width))
            plan.formats += _format_requests(sheet_id, _take_formats(rows))
            raw, dates = _value_ranges(title, rows)
            plan.raw += raw
            plan.dates += dates
        return plan

    def _call(self, method: Any, *args: Any) -> Any:
        """Call the API, turning its refusals into one line a person can act on."""
        try:
            return method(*args)
        except APIError as exc:
            raise CrmkitError(self._explain(exc)) from None
        except GoogleAuthError as exc:
            raise CrmkitError(describe_auth_error(exc, self.credentials)) from None  # type: ignore[arg-type]

    def _explain(self, exc: APIError) -> str:
        who = getattr(self.credentials, "service_account_email", None)
        message = exc.error.get("message", "")
        if exc.code == 404:
            return f"no Google spreadsheet with key {self.key} (check the key or URL)"
        if exc.code == 403:
            share = f"share it with {who} as Editor" if who else "share it with your Google account as Editor"
            return f"Google refused access to spreadsheet {self.key}: {message}; {share}"
        if exc.code == 401:
            return f"Google did not accept the credentials: {message}"
        return f"Google Sheets answered {exc.code} for spreadsheet {self.key}: {message}"


def _new_sheet_id(title: str, taken: set[int]) -> int:
    """An id for a sheet to add: ours to choose, so that formats can go in the same request."""
    sheet_id = zlib.crc32(title.encode()) & 0x7FFFFFFF
    while sheet_id in taken:
        sheet_id = (sheet_id + 1) & 0x7FFFFFFF
    return sheet_id


def _add_sheet(title: str, height: int, width: int, header_width: int, sheet_id: int) -> list[dict[str, Any]]:
    return [
        {
            "addSheet": {
                "properties": {
                    "sheetId": sheet_id,
                    "title": title,
                    "gridProperties": {
                        "rowCount": max(1000, height),
                        "columnCount": max(26, width),
                        "frozenRowCount": 1,
                    },
                }
            }
        },
        {
            "repeatCell": {
                "range": {
                    "sheetId": sheet_id,
                    "startRowIndex": 0,
                    "endRowIndex": 1,
                    "startColumnIndex": 0,
                    "endColumnIndex": max(1, header_width),
                },
                "cell": {"userEnteredFormat": {"textFormat": {"bold": True}}},
                "fields": "userEnteredFormat.textFormat.bold",
            }
        },
    ]


def _take_formats(rows: dict[int, dict[int, Any]]) -> dict[tuple[int, int], dict[str, str]]:
    """The number formats of the :class:`Formatted` values in ``rows``, by (row, column); the
    values are unwrapped in place."""
    formats: dict[tuple[int, int], dict[str, str]] = {}
    for number, cells in rows.items():
        for column, value in cells.items():
            if isinstance(value, Formatted):
                inner = value.value
                kind = (
                    "DATE_TIME"
                    if isinstance(inner, datetime)
                    else "DATE"
                    if isinstance(inner, date)
                    else "NUMBER"
                )
                formats[(number, column)] = {"type": kind, "pattern": value.number_format}
                cells[column] = inner
    return formats


def _format_requests(sheet_id: int, formats: dict[tuple[int, int], dict[str, str]]) -> list[dict[str, Any]]:
    """One ``repeatCell`` per run of consecutive rows of a column taking one number format.

    Only the number format is set: the cells keep their fonts, colours and borders.
    """
    requests: list[dict[str, Any]] = []
    last: dict[str, Any] | None = None
    for (row, column), number_format in sorted(formats.items(), key=lambda item: (item[0][1], item[0][0])):
        if (
            last is not None
            and last["range"]["startColumnIndex"] == column
            and last["range"]["endRowIndex"] == row - 1
            and last["cell"]["userEnteredFormat"]["numberFormat"] == number_format
        ):
            last["range"]["endRowIndex"] = row
            continue
        last = {
            "range": {
                "sheetId": sheet_id,
                "startRowIndex": row - 1,
                "endRowIndex": row,
                "startColumnIndex": column,
                "endColumnIndex": column + 1,
            },
            "cell": {"userEnteredFormat": {"numberFormat": number_format}},
            "fields": "userEnteredFormat.numberFormat",
        }
        requests.append({"repeatCell": last})
    return requests


def _grow(info: _SheetInfo, height: int, width: int) -> dict[str, Any]:
    # Writing values past the grid is refused ("exceeds grid limits"), so the grid grows first,
    # with room to spare so that the next syncs' new rows fit without another request.
    if height > info.rows:
        info.rows = height + _SPARE_ROWS
    info.columns = max(info.columns, width)
    return {
        "updateSheetProperties": {
            "properties": {
                "sheetId": info.sheet_id,
                "gridProperties": {"rowCount": info.rows, "columnCount": info.columns},
            },
            "fields": "gridProperties.rowCount,gridProperties.columnCount",
        }
    }


def _value_ranges(
    title: str, rows: dict[int, dict[int, Any]]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The RAW and the date value ranges for these rows: one range per run of consecutive rows.

    Cells a row does not change are sent as null, which leaves them as they are.
    """
    quoted = quote_title(title)
    raw: list[dict[str, Any]] = []
    dates: list[dict[str, Any]] = []
    for start, block in _runs(rows):
        for out, want_dates in ((raw, False), (dates, True)):
            columns = sorted(
                {c for cells in block for c, v in cells.items() if isinstance(v, date) == want_dates}
            )
            if not columns:
                continue
            first, last = columns[0], columns[-1]
            values = []
            for cells in block:
                line: list[Any] = []
                for column in range(first, last + 1):
                    if column not in cells or isinstance(cells[column], date) != want_dates:
                        line.append(None)
                    else:
                        value = cells[column]
                        line.append(_iso(value) if want_dates else _cell_out(value))
                values.append(line)
            a1 = f"{quoted}!{column_letter(first)}{start}:{column_letter(last)}{start + len(block) - 1}"
            out.append({"range": a1, "majorDimension": "ROWS", "values": values})
    return raw, dates


def _runs(rows: dict[int, dict[int, Any]]) -> Iterator[tuple[int, list[dict[int, Any]]]]:
    """Consecutive row numbers grouped: (first row, the rows' cells)."""
    start = previous = -1
    block: list[dict[int, Any]] = []
    for number in sorted(rows):
        if block and number != previous + 1:
            yield start, block
            block = []
        if not block:
            start = number
        block.append(rows[number])
        previous = number
    if block:
        yield start, block


def _split(value_range: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A value range whose JSON is over the request limit, as ranges of fewer rows under it."""
    title, _, cells = value_range["range"].rpartition("!")
    found = re.fullmatch(r"([A-Z]+)(\d+):([A-Z]+)(\d+)", cells)
    if found is None or len(value_range["values"]) < 2:
        yield value_range  # nothing to split by (the limit is a guess of Google's, not a wall)
        return
    first_col, first_row, last_col = found.group(1), int(found.group(2)), found.group(3)
    part: list[list[Any]] = []
    size = 0
    start = first_row
    for line in value_range["values"]:
        length = len(json.dumps(line, default=str)) + 2  # and its ", "
        if part and size + length > _MAX_PAYLOAD - 300:  # room for the range and the keys
            yield {
                **value_range,
                "range": f"{title}!{first_col}{start}:{last_col}{start + len(part) - 1}",
                "values": part,
            }
            start += len(part)
            part, size = [], 0
        part.append(line)
        size += length
    if part:
        yield {
            **value_range,
            "range": f"{title}!{first_col}{start}:{last_col}{start + len(part) - 1}",
            "values": part,
        }


def _chunks(ranges: list[dict[str, Any]]) -> Iterator[list[dict[str, Any]]]:
    """Value ranges grouped into requests of at most :data:`_MAX_PAYLOAD` bytes of JSON each;
    a range bigger than that alone is split by rows."""
    chunk: list[dict[str, Any]] = []
    size = 0
    pieces = (
        piece
        for whole in ranges
        for piece in (_split(whole) if len(json.dumps(whole, default=str)) > _MAX_PAYLOAD else (whole,))
    )
    for value_range in pieces:
        length = len(json.dumps(value_range, default=str)) + 2  # and the ", " or "[]" around it
        if chunk and size + length > _MAX_PAYLOAD:
            yield chunk
            chunk, size = [], 0
        chunk.append(value_range)
        size += length
    if chunk:
        yield chunk
