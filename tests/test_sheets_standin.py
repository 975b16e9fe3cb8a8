"""Tests for the local Google Sheets API v4 stand-in, driven through the real gspread client."""

from __future__ import annotations

import base64
import contextlib
import json
import os
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import date, datetime
from datetime import time as clock
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

import pytest

from crmkit.testing.sheets_standin import (
    Formula,
    SheetsStandIn,
    gspread_client,
    make_private_key_pem,
    mount_standin,
    write_service_account_key,
)

gspread = pytest.importorskip("gspread")


@pytest.fixture(scope="module")
def standin() -> Iterator[SheetsStandIn]:
    with SheetsStandIn() as server:
        yield server


@pytest.fixture()
def book(standin: SheetsStandIn) -> str:
    return standin.create_spreadsheet(
        "CRM",
        {
            "Leads": [
                ["Name", "Email", "Score", "Active"],
                ["Ada", "ada@example.com", 42, True],
                ["Bob", "", 1.5, False, ""],
            ],
            "Invoice Lines": [["Invoice", "Qty"], ["INV-1", 3]],
            "It's": [["quoted"]],
        },
    )


@pytest.fixture()
def gc(standin: SheetsStandIn) -> Any:
    return gspread_client(standin.base_url)


def _http_full(
    standin: SheetsStandIn,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    *,
    raw_body: bytes | None = None,
) -> tuple[int, Any, Any]:
    data = json.dumps(body).encode() if body is not None else raw_body
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    req = urllib.request.Request(standin.base_url + path, data=data, method=method, headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read()), resp.headers
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read()), err.headers


def _http(
    standin: SheetsStandIn, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> tuple[int, Any]:
    status, payload, _ = _http_full(standin, method, path, body, headers)
    return status, payload


def test_open_by_key_and_worksheets(standin: SheetsStandIn, gc: Any, book: str) -> None:
    standin.reset_counts()
    sh = gc.open_by_key(book)
    assert sh.title == "CRM"
    assert [ws.title for ws in sh.worksheets()] == ["Leads", "Invoice Lines", "It's"]
    ws = sh.worksheet("Leads")
    assert ws.row_count == 1000 and ws.col_count == 26
    # open_by_key needs only spreadsheets.get; no Drive API call is made
    assert set(standin.method_counts) == {"spreadsheets.get"}


def test_open_unknown_key_raises_spreadsheet_not_found(gc: Any) -> None:
    with pytest.raises(gspread.exceptions.SpreadsheetNotFound):
        gc.open_by_key("doesNotExist")


def test_get_all_values_omits_trailing_empties(gc: Any, book: str) -> None:
    ws = gc.open_by_key(book).worksheet("Leads")
    assert ws.get_all_values() == [
        ["Name", "Email", "Score", "Active"],
        ["Ada", "ada@example.com", "42", "TRUE"],
        ["Bob", "", "1.5", "FALSE"],
    ]
    # without padding, gspread shows the raw API rows: trailing empties are gone
    raw = ws.get("A1:E", pad_values=False)
    assert raw == [
        ["Name", "Email", "Score", "Active"],
        ["Ada", "ada@example.com", "42", "TRUE"],
        ["Bob", "", "1.5", "FALSE"],
    ]


def test_batch_get_unformatted(gc: Any, book: str) -> None:
    ws = gc.open_by_key(book).worksheet("Leads")
    result = ws.batch_get(["A2:D3", "C:C"], value_render_option="UNFORMATTED_VALUE")
    assert result[0] == [["Ada", "ada@example.com", 42, True], ["Bob", "", 1.5, False]]
    assert result[0].range == "Leads!A2:D3"
    assert result[1] == [["Score"], [42], [1.5]]
    assert result[1].range == "Leads!C1:C1000"


def test_update_raw_and_user_entered(standin: SheetsStandIn, gc: Any, book: str) -> None:
    ws = gc.open_by_key(book).worksheet("Leads")
    res = ws.update([["=1+1", "12", "TRUE"]], "F1", raw=True)
    assert res["updatedRange"] == "Leads!F1:H1"
    assert res["updatedCells"] == 3
    ws.update([["=1+1", "12", "true", "=SUM(A1:A2)", "'007", 7]], "F2", raw=False)
    stored = standin.sheet_values(book, "Leads")
    assert stored[0][5:8] == ["=1+1", "12", "TRUE"]
    assert not isinstance(stored[0][5], Formula)
    assert stored[1][5:11] == [Formula("=1+1"), 12, True, Formula("=SUM(A1:A2)"), "007", 7]
    assert isinstance(stored[1][5], Formula)
    assert ws.get("F1:K2") == [["=1+1", "12", "TRUE"], ["2", "12", "TRUE", "#NAME?", "007", "7"]]
    assert ws.get("F1:K2", value_render_option="FORMULA") == [
        ["=1+1", "12", "TRUE"],
        ["=1+1", 12, True, "=SUM(A1:A2)", "007", 7],
    ]
    assert ws.get("F2:G2", value_render_option="UNFORMATTED_VALUE") == [[2, 12]]


def test_batch_update_is_one_request(standin: SheetsStandIn, gc: Any, book: str) -> None:
    ws = gc.open_by_key(book).worksheet("Leads")
    before = standin.request_count
    res = ws.batch_update(
        [
            {"range": "A5", "values": [["x", "y"]]},
            {"range": "A7:B8", "values": [["1", "2"], ["3", "4"]]},
        ],
        raw=False,
    )
    assert standin.request_count == before + 1
    assert standin.method_counts["spreadsheets.values.batchUpdate"] >= 1
    assert res["totalUpdatedCells"] == 6
    assert res["totalUpdatedRows"] == 3
    assert res["totalUpdatedSheets"] == 1
    assert [r["updatedRange"] for r in res["responses"]] == ["Leads!A5:B5", "Leads!A7:B8"]
    assert standin.sheet_values(book, "Leads")[6][:2] == [1, 2]


def test_grid_grows_on_write(standin: SheetsStandIn, gc: Any, book: str) -> None:
    ws = gc.open_by_key(book).worksheet("Invoice Lines")
    ws.update([["far"]], "AB1500")
    props = standin.sheet_properties(book, "Invoice Lines")
    assert props["gridProperties"] == {"rowCount": 1500, "columnCount": 28}
    assert ws.acell("AB1500").value == "far"


def test_append_rows(standin: SheetsStandIn, gc: Any, book: str) -> None:
    ws = gc.open_by_key(book).worksheet("Invoice Lines")
    res = ws.append_rows([["INV-2", "5"], ["INV-3", 7]], value_input_option="USER_ENTERED")
    assert res["tableRange"] == "'Invoice Lines'!A1:B2"
    assert res["updates"]["updatedRange"] == "'Invoice Lines'!A3:B4"
    assert res["updates"]["updatedCells"] == 4
    assert standin.sheet_values(book, "Invoice Lines") == [
        ["Invoice", "Qty"],
        ["INV-1", 3],
        ["INV-2", 5],
        ["INV-3", 7],
    ]
    rows_before = standin.sheet_properties(book, "Invoice Lines")["gridProperties"]["rowCount"]
    ws.append_rows([["INV-4", 1]], insert_data_option="INSERT_ROWS")
    assert standin.sheet_properties(book, "Invoice Lines")["gridProperties"]["rowCount"] == rows_before + 1
    assert ws.get_all_values()[-1] == ["INV-4", "1"]


def test_add_worksheet_and_duplicate(gc: Any, book: str) -> None:
    sh = gc.open_by_key(book)
    ws = sh.add_worksheet("New Sheet", rows=10, cols=3)
    assert (ws.title, ws.row_count, ws.col_count, ws.index) == ("New Sheet", 10, 3, 3)
    assert "New Sheet" in [w.title for w in sh.worksheets()]
    ws.update([["a", "b", "c", "d"]], "A1")  # grows columns
    assert ws.get_all_values() == [["a", "b", "c", "d"]]
    with pytest.raises(gspread.exceptions.APIError) as info:
        sh.add_worksheet("new sheet", rows=1, cols=1)
    assert info.value.code == 400
    assert info.value.error["status"] == "INVALID_ARGUMENT"
    assert "already exists" in info.value.error["message"]


def test_quoted_sheet_names(standin: SheetsStandIn, gc: Any, book: str) -> None:
    sh = gc.open_by_key(book)
    assert sh.worksheet("It's").get_all_values() == [["quoted"]]
    assert sh.values_get("'It''s'!A:A")["range"] == "'It''s'!A1:A1000"
    lines = sh.worksheet("Invoice Lines")
    lines.update([["INV-9", "9"]], "A3", raw=False)
    assert sh.values_get("'Invoice Lines'!A1:E")["values"] == [
        ["Invoice", "Qty"],
        ["INV-1", "3"],
        ["INV-9", "9"],
    ]


def test_columns_major_dimension(gc: Any, book: str) -> None:
    sh = gc.open_by_key(book)
    res = sh.values_get("Leads!A1:B3", params={"majorDimension": "COLUMNS"})
    assert res == {
        "range": "Leads!A1:B3",
        "majorDimension": "COLUMNS",
        "values": [["Name", "Ada", "Bob"], ["Email", "ada@example.com"]],
    }


def test_429_raises_api_error_with_plain_client(standin: SheetsStandIn, gc: Any, book: str) -> None:
    ws = gc.open_by_key(book).worksheet("Leads")
    standin.fail_next(1, status=429)
    with pytest.raises(gspread.exceptions.APIError) as info:
        ws.get_all_values()
    assert info.value.code == 429
    assert info.value.error["status"] == "RESOURCE_EXHAUSTED"
    assert ws.get_all_values()[0][0] == "Name"  # next request succeeds
    standin.fail_next(1, status=503)
    with pytest.raises(gspread.exceptions.APIError) as info:
        ws.acell("A1")
    assert info.value.error == {
        "code": 503,
        "message": "The service is currently unavailable.",
        "status": "UNAVAILABLE",
    }


def test_raw_http_shapes(standin: SheetsStandIn) -> None:
    sid = standin.create_spreadsheet("Shapes", {"Sheet1": [["a", 1, "", ""], [], ["", "b"]]})
    status, body = _http(standin, "GET", f"/v4/spreadsheets/{sid}?fields=sheets.properties")
    assert status == 200
    assert body == {
        "spreadsheetId": sid,
        "properties": {"title": "Shapes", "locale": "en_US", "timeZone": "Etc/GMT"},
        "sheets": [
            {
                "properties": {
                    "sheetId": 0,
                    "title": "Sheet1",
                    "index": 0,
                    "sheetType": "GRID",
                    "gridProperties": {"rowCount": 1000, "columnCount": 26},
                }
            }
        ],
        "spreadsheetUrl": f"https://docs.google.com/spreadsheets/d/{sid}/edit",
    }
    status, body = _http(standin, "GET", f"/v4/spreadsheets/{sid}/values/Sheet1!A1:D5")
    assert (status, body) == (
        200,
        {"range": "Sheet1!A1:D5", "majorDimension": "ROWS", "values": [["a", "1"], [], ["", "b"]]},
    )
    status, body = _http(standin, "GET", f"/v4/spreadsheets/{sid}/values/Sheet1!F10:G12")
    assert (status, body) == (200, {"range": "Sheet1!F10:G12", "majorDimension": "ROWS"})
    status, body = _http(
        standin,
        "GET",
        f"/v4/spreadsheets/{sid}/values:batchGet?ranges=Sheet1!A1&ranges=B1:B3"
        "&valueRenderOption=UNFORMATTED_VALUE&majorDimension=COLUMNS&dateTimeRenderOption=SERIAL_NUMBER",
    )
    assert body == {
        "spreadsheetId": sid,
        "valueRanges": [
            {"range": "Sheet1!A1", "majorDimension": "COLUMNS", "values": [["a"]]},
            {"range": "Sheet1!B1:B3", "majorDimension": "COLUMNS", "values": [[1, "", "b"]]},
        ],
    }
    status, body = _http(
        standin,
        "POST",
        f"/v4/spreadsheets/{sid}/values:batchUpdate",
        {"valueInputOption": "RAW", "data": [{"range": "Sheet1!C1", "values": [["=1+1", 2]]}]},
    )
    assert (status, body) == (
        200,
        {
            "spreadsheetId": sid,
            "totalUpdatedRows": 1,
            "totalUpdatedColumns": 2,
            "totalUpdatedCells": 2,
            "totalUpdatedSheets": 1,
            "responses": [
                {
                    "spreadsheetId": sid,
                    "updatedRange": "Sheet1!C1:D1",
                    "updatedRows": 1,
                    "updatedColumns": 2,
                    "updatedCells": 2,
                }
            ],
        },
    )
    status, body = _http(standin, "GET", "/v4/spreadsheets/nope")
    assert (status, body) == (
        404,
        {"error": {"code": 404, "message": "Requested entity was not found.", "status": "NOT_FOUND"}},
    )
    status, body = _http(standin, "GET", f"/v4/spreadsheets/{sid}/values/Missing!A1")
    assert status == 400 and body["error"]["status"] == "INVALID_ARGUMENT"
    standin.fail_next(1)
    status, body = _http(standin, "GET", f"/v4/spreadsheets/{sid}")
    assert status == 429 and body["error"]["status"] == "RESOURCE_EXHAUSTED"
    assert body["error"]["message"].startswith("Quota exceeded")


def test_bounded_write_overflow_is_rejected(standin: SheetsStandIn) -> None:
    sid = standin.create_spreadsheet("Bounds", {"S": []})
    status, body = _http(
        standin,
        "POST",
        f"/v4/spreadsheets/{sid}/values:batchUpdate",
        {
            "valueInputOption": "RAW",
            "data": [
                {"range": "S!A1", "values": [["ok"]]},
                {"range": "S!A1:B1", "values": [["a", "b", "c"]]},
            ],
        },
    )
    assert status == 400
    assert "Requested writing within range [S!A1:B1]" in body["error"]["message"]
    assert standin.sheet_values(sid, "S") == []  # nothing applied


@contextlib.contextmanager
def demo_standin() -> Iterator[tuple[subprocess.Popen[str], str]]:
    """``python -m crmkit.testing.sheets_standin --demo`` running: (its process, its base URL)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "crmkit.testing.sheets_standin", "--port", "0", "--demo"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        yield proc, line.split("listening on ")[1].strip()
    finally:
        proc.terminate()
        proc.wait(timeout=5)


def test_cli_module_runs() -> None:
    with demo_standin() as (_, base):
        deadline = time.monotonic() + 5
        while True:
            try:
                with urllib.request.urlopen(base + "/demo", timeout=2) as resp:
                    body = json.loads(resp.read())
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        assert [s["properties"]["title"] for s in body["sheets"]] == ["Leads", "Invoice Lines"]


def test_the_demo_lead_syncs_as_a_lead_with_a_status_and_no_stray_column(tmp_path: Path) -> None:
    """A newcomer's first `crmkit sync gsheet:demo`: the demo's columns are a lead's own fields."""
    with demo_standin() as (proc, url):
        assert proc.stdout is not None
        base = urlsplit(url)
        assert "demo spreadsheet id: demo" in proc.stdout.readline()
        endpoint = f"{base.scheme}://{base.netloc}"
        env = {**os.environ, "CRMKIT_SHEETS_ENDPOINT": endpoint, "XDG_CONFIG_HOME": str(tmp_path)}
        env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        crmkit = [sys.executable, "-m", "crmkit", "--store", str(tmp_path / "crm.json")]
        synced = subprocess.run([*crmkit, "sync", "gsheet:demo"], env=env, capture_output=True, text=True)
        assert synced.returncode == 0, synced.stderr
        listed = subprocess.run([*crmkit, "leads", "list", "--json"], env=env, capture_output=True, text=True)
        [lead] = json.loads(listed.stdout)
        assert (lead["name"], lead["status"]) == ("Ada Lovelace", "new")
        assert not lead["custom"], lead["custom"]  # no "Stage" kept as a custom field
        with urllib.request.urlopen(f"{endpoint}{base.path}/demo/values/Leads!1:1") as resp:
            headers = json.loads(resp.read())["values"][0]
        assert "Stage" not in headers and "Status" in headers


def test_backoff_client_retries_on_429(standin: SheetsStandIn, book: str, monkeypatch: Any) -> None:
    monkeypatch.setattr(gspread.http_client.time, "sleep", lambda _s: None)
    gc = gspread_client(standin.base_url, http_client=gspread.BackOffHTTPClient)
    ws = gc.open_by_key(book).worksheet("Leads")
    before = standin.method_counts["spreadsheets.values.get"]
    standin.fail_next(2, status=429)
    assert ws.acell("A1").value == "Name"
    assert standin.method_counts["spreadsheets.values.get"] == before + 3


def test_drive_api_is_not_reached(gc: Any, book: str) -> None:
    import requests

    sh = gc.open_by_key(book)
    with pytest.raises(requests.ConnectionError, match="not served"):
        _ = sh.creationTime  # needs the Drive API


def test_range_forms(standin: SheetsStandIn) -> None:
    sid = standin.create_spreadsheet(
        "Ranges",
        {
            "Data": [["a", "b", "c"], ["d", "e", "f"], ["g", "h", "i"]],
            "A1": [["looks like a cell"]],
        },
    )

    def get(rng: str, **params: str) -> Any:
        query = ("?" + urlencode(params)) if params else ""
        return _http(standin, "GET", f"/v4/spreadsheets/{sid}/values/{quote(rng)}{query}")

    assert get("Data!2:3") == (
        200,
        {"range": "Data!A2:Z3", "majorDimension": "ROWS", "values": [["d", "e", "f"], ["g", "h", "i"]]},
    )
    assert get("Data!$B$2:$C$3")[1]["values"] == [["e", "f"], ["h", "i"]]
    assert get("Data!C3:B2")[1]["range"] == "Data!B2:C3"  # reversed corners normalised
    assert get("Data!B2:C")[1]["range"] == "Data!B2:C1000"
    assert get("B1:B2")[1] == {
        "range": "Data!B1:B2",
        "majorDimension": "ROWS",  # first sheet
        "values": [["b"], ["e"]],
    }
    assert get("'A1'")[1]["range"] == "'A1'!A1:Z1000"  # quoted: looks like a cell
    assert get("A1")[1]["values"] == [["looks like a cell"]]  # a sheet title wins
    status, body = get("Data!A2000")
    assert status == 400 and "exceeds grid limits" in body["error"]["message"]
    for bad in ("Data!A1:B2:C3", "Nope!A1", "'Data!A1", "Data!1A"):
        status, body = get(bad)
        assert status == 400, bad
        assert body["error"]["message"] == f"Unable to parse range: {bad}"


def test_user_entered_parsing_and_rendering(standin: SheetsStandIn) -> None:
    sid = standin.create_spreadsheet("Parse", {"S": []})
    row = [
        "12",
        "-1.5",
        "007",
        "1e3",
        "true",
        "'=not a formula",
        "=2^3*(1+1)",
        "=1/0",
        "abc",
        0.1,
        3.0,
        "  42 ",
        "$5",
        "10%",
    ]
    status, body = _http(
        standin,
        "POST",
        f"/v4/spreadsheets/{sid}/values:batchUpdate",
        {
            "valueInputOption": "USER_ENTERED",
            "includeValuesInResponse": True,
            "responseValueRenderOption": "UNFORMATTED_VALUE",
            "data": [{"range": "S!A1", "values": [row]}],
        },
    )
    assert status == 200
    assert body["responses"][0]["updatedData"]["values"] == [
        [12, -1.5, 7, 1000, True, "=not a formula", 16, "#DIV/0!", "abc", 0.1, 3, 42, "$5", "10%"]
    ]
    _, body = _http(standin, "GET", f"/v4/spreadsheets/{sid}/values/S!A1:N1")
    assert body["values"] == [
        [
            "12",
            "-1.5",
            "7",
            "1000",
            "TRUE",
            "=not a formula",
            "16",
            "#DIV/0!",
            "abc",
            "0.1",
            "3",
            "42",
            "$5",
            "10%",
        ]
    ]


def test_append_with_offset_table_and_update_put(standin: SheetsStandIn, gc: Any) -> None:
    sid = standin.create_spreadsheet("Offset", {"S": [[], [], ["", "h1", "h2"], ["", "v1", "v2"]]})
    sh = gc.open_by_key(sid)
    res = sh.values_append("S!B1:C", params={"valueInputOption": "RAW"}, body={"values": [["x", "y"]]})
    assert res["tableRange"] == "S!B3:C4"
    assert res["updates"]["updatedRange"] == "S!B5:C5"
    res = sh.values_update(
        "S!E1",
        params={"valueInputOption": "RAW", "includeValuesInResponse": "true"},
        body={"values": [["p"], ["q"]], "majorDimension": "ROWS"},
    )
    assert res == {
        "spreadsheetId": sid,
        "updatedRange": "S!E1:E2",
        "updatedRows": 2,
        "updatedColumns": 1,
        "updatedCells": 2,
        "updatedData": {"range": "S!E1:E2", "majorDimension": "ROWS", "values": [["p"], ["q"]]},
    }
    assert standin.sheet_values(sid, "S")[4] == [None, "x", "y"]


# --------------------------------------------------------------------------- dates and number formats


def _values(standin: SheetsStandIn, sid: str, rng: str, **params: str) -> Any:
    query = ("?" + urlencode(params)) if params else ""
    status, body = _http(standin, "GET", f"/v4/spreadsheets/{sid}/values/{quote(rng)}{query}")
    assert status == 200, body
    return body.get("values", [])


def test_user_entered_dates_are_serial_numbers_with_a_date_format(standin: SheetsStandIn, gc: Any) -> None:
    sid = standin.create_spreadsheet("Dates", {"S": []})
    ws = gc.open_by_key(sid).worksheet("S")
    typed = [
        "2024-01-15",
        "2024-01-15 10:30",
        "2024-01-15 10:30:05",
        "1/5/2024",
        "'2024-01-15",
        "2024-02-30",
        " 2024-3-1 ",
        "1899-12-30",
    ]
    ws.update([typed], "A1", raw=False)
    serials = [45306, 45306.4375, 45306 + (10 * 3600 + 30 * 60 + 5) / 86400, 45296]
    assert standin.sheet_values(sid, "S") == [[*serials, "2024-01-15", "2024-02-30", 45352, 0]]
    assert isinstance(standin.sheet_values(sid, "S")[0][0], int)  # a pure date is a whole number
    assert [standin.cell_format(sid, "S", 1, c) for c in range(1, 9)] == [
        {"type": "DATE", "pattern": "yyyy-mm-dd"},
        {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm:ss"},
        {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm:ss"},
        {"type": "DATE", "pattern": "M/d/yyyy"},
        None,  # the apostrophe forced text
        None,  # no such day: stays text
        {"type": "DATE", "pattern": "yyyy-mm-dd"},
        {"type": "DATE", "pattern": "yyyy-mm-dd"},
    ]
    shown = [
        "2024-01-15",
        "2024-01-15 10:30:00",
        "2024-01-15 10:30:05",
        "1/5/2024",
        "2024-01-15",
        "2024-02-30",
        "2024-03-01",
        "1899-12-30",
    ]
    assert ws.get("A1:H1") == [shown]
    assert ws.get("A1:H1", value_render_option="UNFORMATTED_VALUE") == [
        [*serials, "2024-01-15", "2024-02-30", 45352, 0]
    ]
    assert ws.get("A1:H1", value_render_option="FORMULA") == [
        [*serials, "2024-01-15", "2024-02-30", 45352, 0]
    ]
    for option in ("UNFORMATTED_VALUE", "FORMULA"):
        got = ws.get("A1:H1", value_render_option=option, date_time_render_option="FORMATTED_STRING")
        assert got == [shown], option
    # FORMATTED_VALUE ignores dateTimeRenderOption, as Google documents
    assert ws.get("A1:D1", date_time_render_option="SERIAL_NUMBER") == [shown[:4]]
    assert standin.cell_values(sid, "S") == [
        [
            date(2024, 1, 15),
            datetime(2024, 1, 15, 10, 30),
            datetime(2024, 1, 15, 10, 30, 5),
            date(2024, 1, 5),
            "2024-01-15",
            "2024-02-30",
            date(2024, 3, 1),
            date(1899, 12, 30),
        ]
    ]


def test_raw_never_parses_dates(standin: SheetsStandIn, gc: Any) -> None:
    sid = standin.create_spreadsheet("Raw dates", {"S": []})
    ws = gc.open_by_key(sid).worksheet("S")
    ws.update([["2024-01-15", "1/5/2024", "2024-01-15 10:30"]], "A1", raw=True)
    assert standin.sheet_values(sid, "S") == [["2024-01-15", "1/5/2024", "2024-01-15 10:30"]]
    assert standin.cell_format(sid, "S", 1, 1) is None
    assert ws.get("A1:C1", value_render_option="UNFORMATTED_VALUE") == [
        ["2024-01-15", "1/5/2024", "2024-01-15 10:30"]
    ]


def test_formats_outlive_values(standin: SheetsStandIn, gc: Any) -> None:
    sid = standin.create_spreadsheet("Keep", {"S": []})
    sh = gc.open_by_key(sid)
    ws = sh.worksheet("S")
    ws.update([["2024-01-15", "1/5/2024", "2024-01-15 10:30"]], "A1", raw=False)
    ws.batch_clear(["A1"])
    sh.values_clear("S!B1")
    assert standin.sheet_values(sid, "S") == [[None, None, 45306.4375]]
    assert standin.cell_format(sid, "S", 1, 1) == {"type": "DATE", "pattern": "yyyy-mm-dd"}
    assert standin.cell_format(sid, "S", 1, "B") == {"type": "DATE", "pattern": "M/d/yyyy"}
    # a number written later into a cleared date cell shows as a date, even written RAW
    ws.update([[45307, 45307]], "A1", raw=True)
    assert ws.get("A1:B1") == [["2024-01-16", "1/16/2024"]]
    # a cell that already has a date format keeps it when another date spelling arrives
    ws.update([["2/29/2024", "2024-02-29"]], "A1", raw=False)
    assert ws.get("A1:B1") == [["2024-02-29", "2/29/2024"]]
    assert standin.cell_format(sid, "S", 1, 1) == {"type": "DATE", "pattern": "yyyy-mm-dd"}
    # overwriting with text or an empty string keeps the format too
    ws.update([["soon", ""]], "A1", raw=False)
    assert standin.sheet_values(sid, "S") == [["soon", None, 45306.4375]]
    assert standin.cell_format(sid, "S", 1, 1) == {"type": "DATE", "pattern": "yyyy-mm-dd"}
    assert standin.cell_format(sid, "S", 1, 2) == {"type": "DATE", "pattern": "M/d/yyyy"}
    assert standin.cell_values(sid, "S") == [["soon", None, datetime(2024, 1, 15, 10, 30)]]


def test_plain_text_cells_keep_what_was_typed(standin: SheetsStandIn, gc: Any) -> None:
    sid = standin.create_spreadsheet("Text", {"S": []})
    ws = gc.open_by_key(sid).worksheet("S")
    ws.format("A:A", {"numberFormat": {"type": "TEXT"}})
    ws.update([["007", "007"], ["2024-01-15", "2024-01-15"], ["=1+1", "=1+1"]], "A1", raw=False)
    assert standin.sheet_values(sid, "S") == [["007", 7], ["2024-01-15", 45306], ["=1+1", Formula("=1+1")]]
    assert standin.cell_format(sid, "S", 2, 1) == {"type": "TEXT"}


def test_insert_rows_moves_formats_with_their_rows(standin: SheetsStandIn, gc: Any) -> None:
    sid = standin.create_spreadsheet(
        "Move",
        {"S": [["Name", "Due"], ["a", date(2024, 1, 1)], [], [], [], ["", "", "", date(2024, 6, 1)]]},
    )
    ws = gc.open_by_key(sid).worksheet("S")
    ws.format("B4", {"numberFormat": {"type": "DATE", "pattern": "yyyy-mm-dd"}})  # format only, no value
    ws.append_rows(
        [["b", "2024-02-01"], ["c", "3/1/2024"]],
        value_input_option="USER_ENTERED",
        insert_data_option="INSERT_ROWS",
        table_range="A1:B",
    )
    assert standin.cell_values(sid, "S") == [
        ["Name", "Due"],
        ["a", date(2024, 1, 1)],
        ["b", date(2024, 2, 1)],
        ["c", date(2024, 3, 1)],
        [],
        [],
        [],
        [None, None, None, date(2024, 6, 1)],
    ]
    assert standin.cell_format(sid, "S", 4, 2) == {"type": "DATE", "pattern": "M/d/yyyy"}  # the new row's own
    assert standin.cell_format(sid, "S", 6, 2) == {"type": "DATE", "pattern": "yyyy-mm-dd"}  # moved from B4
    assert standin.cell_format(sid, "S", 4, 4) is None
    assert standin.cell_format(sid, "S", 8, 4) == {"type": "DATE", "pattern": "yyyy-mm-dd"}
    assert ws.get("D8") == [["2024-06-01"]]


def test_seeded_dates_cell_values_and_cell_format(standin: SheetsStandIn) -> None:
    sid = standin.create_spreadsheet(
        "Seed",
        {
            "S": [
                ["Day", "When", "Midnight", "Flag", "Score", "Formula", "", ""],
                [
                    date(2024, 1, 15),
                    datetime(2024, 1, 15, 10, 30, 5, 250_000),
                    datetime(2024, 1, 15),
                    True,
                    1.5,
                    Formula("=2*3"),
                ],
                [],
                [None, "", None],
            ]
        },
    )
    assert standin.sheet_values(sid, "S")[1][:3] == [45306, pytest.approx(45306.43755), 45306]
    assert standin.cell_values(sid, "S") == [
        ["Day", "When", "Midnight", "Flag", "Score", "Formula"],
        [date(2024, 1, 15), datetime(2024, 1, 15, 10, 30, 5, 250_000), datetime(2024, 1, 15), True, 1.5, 6],
    ]
    midnight = standin.cell_values(sid, "S")[1][2]
    assert type(midnight) is datetime  # a DATE_TIME cell gives a datetime even at midnight
    assert standin.cell_format(sid, "S", 2, 1) == {"type": "DATE", "pattern": "yyyy-mm-dd"}
    assert standin.cell_format(sid, "S", 2, 2) == {"type": "DATE_TIME", "pattern": "yyyy-mm-dd hh:mm:ss"}
    assert standin.cell_format(sid, "S", 1, 1) is None
    assert standin.cell_format(sid, "S", 500, 26) is None
    with pytest.raises(ValueError, match="1-based"):
        standin.cell_format(sid, "S", 0, 1)
    assert _values(standin, sid, "S!A2:C2") == [["2024-01-15", "2024-01-15 10:30:05", "2024-01-15 00:00:00"]]


def test_date_patterns_and_defaults(standin: SheetsStandIn, gc: Any) -> None:
    sid = standin.create_spreadsheet("Patterns", {"S": [[45306.75] * 6 + [45306]]})
    ws = gc.open_by_key(sid).worksheet("S")
    ws.batch_format(
        [
            {"range": "A1", "format": {"numberFormat": {"type": "DATE"}}},
            {"range": "B1", "format": {"numberFormat": {"type": "DATE_TIME"}}},
            {"range": "C1", "format": {"numberFormat": {"type": "TIME"}}},
            {
                "range": "D1",
                "format": {"numberFormat": {"type": "DATE", "pattern": 'dddd, mmmm d, yyyy "at" h:mm am/pm'}},
            },
            {"range": "E1", "format": {"numberFormat": {"type": "DATE_TIME", "pattern": "mmm d yy hh:mm"}}},
            {"range": "F1", "format": {"numberFormat": {"type": "TIME", "pattern": "h:mm:ss.000"}}},
            {"range": "G1", "format": {"numberFormat": {"type": "NUMBER", "pattern": "0.00"}}},
        ]
    )
    assert ws.get("A1:G1") == [
        [
            "1/15/2024",
            "1/15/2024 18:00:00",
            "6:00:00 PM",
            "Monday, January 15, 2024 at 6:00 PM",
            "Jan 15 24 18:00",
            "18:00:00.000",
            "45306",  # NUMBER patterns are stored, not applied
        ]
    ]
    assert standin.cell_values(sid, "S") == [
        [
            datetime(2024, 1, 15, 18),
            datetime(2024, 1, 15, 18),
            clock(18),
            datetime(2024, 1, 15, 18),
            datetime(2024, 1, 15, 18),
            clock(18),
            45306,
        ]
    ]


def test_date_render_options_in_responses_and_validation(standin: SheetsStandIn) -> None:
    sid = standin.create_spreadsheet("Opts", {"S": []})
    status, body = _http(
        standin,
        "POST",
        f"/v4/spreadsheets/{sid}/values:batchUpdate",
        {
            "valueInputOption": "USER_ENTERED",
            "includeValuesInResponse": True,
            "responseValueRenderOption": "UNFORMATTED_VALUE",
            "responseDateTimeRenderOption": "FORMATTED_STRING",
            "data": [{"range": "S!A1", "values": [["2024-01-15", 5]]}],
        },
    )
    assert status == 200
    assert body["responses"][0]["updatedData"]["values"] == [["2024-01-15", 5]]
    status, body = _http(
        standin,
        "PUT",
        f"/v4/spreadsheets/{sid}/values/S!A2?valueInputOption=USER_ENTERED&includeValuesInResponse=true"
        "&responseValueRenderOption=UNFORMATTED_VALUE",
        {"values": [["1/15/2024"]]},
    )
    assert body["updatedData"]["values"] == [[45306]]  # SERIAL_NUMBER is the default
    assert _values(standin, sid, "S!A1:B2", valueRenderOption="UNFORMATTED_VALUE") == [[45306, 5], [45306]]
    status, body = _http(standin, "GET", f"/v4/spreadsheets/{sid}/values/S!A1?dateTimeRenderOption=NOPE")
    assert status == 400
    assert body["error"]["message"] == "Invalid value at 'date_time_render_option', \"NOPE\""


# --------------------------------------------------------------------------- batchUpdate


def test_add_sheet_honours_grid_properties_and_index(standin: SheetsStandIn) -> None:
    sid = standin.create_spreadsheet("Add", {"First": [], "Second": []})
    status, body = _http(
        standin,
        "POST",
        f"/v4/spreadsheets/{sid}:batchUpdate",
        {
            "requests": [
                {
                    "addSheet": {
                        "properties": {
                            "title": "Deals",
                            "index": 1,
                            "gridProperties": {"rowCount": 50, "columnCount": 8, "frozenRowCount": 1},
                        }
                    }
                }
            ]
        },
    )
    assert status == 200
    assert body == {
        "spreadsheetId": sid,
        "replies": [
            {
                "addSheet": {
                    "properties": {
                        "sheetId": body["replies"][0]["addSheet"]["properties"]["sheetId"],
                        "title": "Deals",
                        "index": 1,
                        "sheetType": "GRID",
                        "gridProperties": {"rowCount": 50, "columnCount": 8, "frozenRowCount": 1},
                    }
                }
            }
        ],
    }
    _, book = _http(standin, "GET", f"/v4/spreadsheets/{sid}")
    assert [(s["properties"]["title"], s["properties"]["index"]) for s in book["sheets"]] == [
        ("First", 0),
        ("Deals", 1),
        ("Second", 2),
    ]
    status, body = _http(
        standin,
        "POST",
        f"/v4/spreadsheets/{sid}:batchUpdate",
        {
            "requests": [
                {"addSheet": {"properties": {"title": "x"}}},
                {"addSheet": {"properties": {"title": "DEALS"}}},
            ]
        },
    )
    assert (status, body) == (
        400,
        {
            "error": {
                "code": 400,
                "message": 'Invalid requests[1].addSheet: A sheet with the name "DEALS" already exists. '
                "Please enter another name.",
                "status": "INVALID_ARGUMENT",
            }
        },
    )
    assert standin.sheet_properties(sid, "Deals")["index"] == 1
    with pytest.raises(KeyError):
        standin.sheet_properties(sid, "x")  # the batch is atomic: the first request was undone too
    status, body = _http(
        standin,
        "POST",
        f"/v4/spreadsheets/{sid}:batchUpdate",
        {
            "requests": [
                {
                    "addSheet": {
                        "properties": {
                            "title": "Tiny",
                            "gridProperties": {"rowCount": 1, "frozenRowCount": 1},
                        }
                    }
                }
            ]
        },
    )
    assert status == 400 and body["error"]["message"].endswith(
        "You can't freeze all visible rows on the sheet."
    )


def test_freeze_resize_and_rename_through_gspread(standin: SheetsStandIn, gc: Any, book: str) -> None:
    sh = gc.open_by_key(book)
    ws = sh.worksheet("Invoice Lines")
    ws.freeze(rows=1, cols=1)
    assert standin.sheet_properties(book, "Invoice Lines")["gridProperties"] == {
        "rowCount": 1000,
        "columnCount": 26,
        "frozenRowCount": 1,
        "frozenColumnCount": 1,
    }
    again = gc.open_by_key(book).worksheet("Invoice Lines")
    assert (again.frozen_row_count, again.frozen_col_count) == (1, 1)
    with pytest.raises(gspread.exceptions.APIError, match="can't freeze all visible columns"):
        ws.resize(cols=1)
    ws.freeze(rows=0, cols=0)
    assert "frozenRowCount" not in standin.sheet_properties(book, "Invoice Lines")["gridProperties"]
    ws.resize(rows=1, cols=1)  # shrinking drops what lies outside
    assert standin.sheet_values(book, "Invoice Lines") == [["Invoice"]]
    ws.update_title("Lines")
    ws.update_index(0)
    assert [w.title for w in gc.open_by_key(book).worksheets()] == ["Lines", "Leads", "It's"]
    ws.update_index(2)  # indexes count before the move, as in Google
    assert [w.title for w in gc.open_by_key(book).worksheets()] == ["Leads", "Lines", "It's"]
    with pytest.raises(gspread.exceptions.APIError) as info:
        ws.update_title("leads")
    assert "already exists" in info.value.error["message"]


def test_repeat_cell_sets_formats_with_field_masks(standin: SheetsStandIn, gc: Any) -> None:
    sid = standin.create_spreadsheet("Fmt", {"S": [["When", 45306], ["x", 45307]]})
    sh = gc.open_by_key(sid)
    ws = sh.worksheet("S")
    ws.format("1:1", {"textFormat": {"bold": True}})
    ws.format("B:B", {"numberFormat": {"type": "DATE", "pattern": "yyyy-mm-dd"}})
    assert ws.get_all_values() == [["When", "2024-01-15"], ["x", "2024-01-16"]]
    sheet_id = ws.id
    # a narrower mask leaves the rest of the cell's format alone
    status, _ = _http(
        standin,
        "POST",
        f"/v4/spreadsheets/{sid}:batchUpdate",
        {
            "requests": [
                {
                    "repeatCell": {
                        "range": {
                            "sheetId": sheet_id,
                            "startRowIndex": 0,
                            "endRowIndex": 1,
                            "startColumnIndex": 1,
                            "endColumnIndex": 2,
                        },
                        "cell": {
                            "userEnteredFormat": {
                                "numberFormat": {"type": "DATE", "pattern": "M/d/yyyy"},
                                "textFormat": {"bold": False},
                            }
                        },
                        "fields": "userEnteredFormat.numberFormat",
                    }
                }
            ]
        },
    )
    assert status == 200
    assert ws.get_all_values() == [["When", "1/15/2024"], ["x", "2024-01-16"]]

    def stored_format(row: int, col: int) -> Any:  # the whole userEnteredFormat (0-based)
        return standin._spreadsheets[sid].sheets[0].formats.get((row, col))

    assert stored_format(0, 1) == {
        "textFormat": {"bold": True},
        "numberFormat": {"type": "DATE", "pattern": "M/d/yyyy"},
    }
    # a field named in the mask but absent from the cell is cleared
    sh.batch_update(
        {
            "requests": [
                {
                    "repeatCell": {
                        "range": {"sheetId": sheet_id, "startColumnIndex": 1},
                        "cell": {},
                        "fields": "userEnteredFormat/numberFormat",
                    }
                }
            ]
        }
    )
    assert standin.cell_format(sid, "S", 1, 2) is None
    assert ws.get_all_values() == [["When", "45306"], ["x", "45307"]]
    assert stored_format(0, 1) == {"textFormat": {"bold": True}}
    assert stored_format(1, 1) is None

    def bad(request: dict[str, Any]) -> str:
        status, body = _http(standin, "POST", f"/v4/spreadsheets/{sid}:batchUpdate", {"requests": [request]})
        assert status == 400, body
        return str(body["error"]["message"])

    assert "No grid with id: 99" in bad(
        {"repeatCell": {"range": {"sheetId": 99}, "cell": {}, "fields": "userEnteredFormat"}}
    )
    assert "exceeds grid limits" in bad(
        {
            "repeatCell": {
                "range": {"sheetId": sheet_id, "endRowIndex": 5000},
                "cell": {},
                "fields": "userEnteredFormat",
            }
        }
    )
    assert "NumberFormatType" in bad(
        {
            "repeatCell": {
                "range": {"sheetId": sheet_id},
                "cell": {"userEnteredFormat": {"numberFormat": {"type": "DATES"}}},
                "fields": "userEnteredFormat.numberFormat",
            }
        }
    )
    assert "supports only addSheet" in bad({"mergeCells": {"range": {"sheetId": sheet_id}}})


def test_batch_update_is_atomic_across_kinds(standin: SheetsStandIn) -> None:
    sid = standin.create_spreadsheet("Atomic", {"S": [["a"]]})
    status, body = _http(
        standin,
        "POST",
        f"/v4/spreadsheets/{sid}:batchUpdate",
        {
            "requests": [
                {"addSheet": {"properties": {"title": "New", "sheetId": 7}}},
                {
                    "updateSheetProperties": {
                        "properties": {"sheetId": 0, "gridProperties": {"frozenRowCount": 1}},
                        "fields": "gridProperties.frozenRowCount",
                    }
                },
                {
                    "repeatCell": {
                        "range": {"sheetId": 7},
                        "cell": {"userEnteredFormat": {"numberFormat": {"type": "DATE"}}},
                        "fields": "userEnteredFormat.numberFormat",
                    }
                },
                {
                    "updateSheetProperties": {
                        "properties": {"sheetId": 0, "title": "S2", "gridProperties": {"rowCount": 2}},
                        "fields": "title,gridProperties(rowCount)",
                    }
                },
                {"repeatCell": {"range": {"sheetId": 0}, "cell": {}, "fields": "userEnteredValue"}},
            ]
        },
    )
    assert status == 400
    assert body["error"]["message"].startswith(
        "Invalid requests[4].repeatCell: the stand-in supports only userEnteredFormat"
    )
    _, book = _http(standin, "GET", f"/v4/spreadsheets/{sid}")
    assert [s["properties"] for s in book["sheets"]] == [
        {
            "sheetId": 0,
            "title": "S",
            "index": 0,
            "sheetType": "GRID",
            "gridProperties": {"rowCount": 1000, "columnCount": 26},
        }
    ]
    # the same requests without the bad one all apply, replies in order
    status, body = _http(
        standin,
        "POST",
        f"/v4/spreadsheets/{sid}:batchUpdate",
        {
            "requests": [
                {"addSheet": {"properties": {"title": "New", "sheetId": 7}}},
                {
                    "repeatCell": {
                        "range": {"sheetId": 7, "endRowIndex": 1, "endColumnIndex": 1},
                        "cell": {"userEnteredFormat": {"numberFormat": {"type": "DATE"}}},
                        "fields": "userEnteredFormat.numberFormat",
                    }
                },
                {
                    "updateSheetProperties": {
                        "properties": {"sheetId": 0, "title": "S2", "gridProperties": {"rowCount": 2}},
                        "fields": "title,gridProperties(rowCount)",
                    }
                },
            ]
        },
    )
    assert status == 200
    assert [list(r) for r in body["replies"]] == [["addSheet"], [], []]
    assert standin.cell_format(sid, "New", 1, 1) == {"type": "DATE"}
    assert standin.sheet_properties(sid, "S2")["gridProperties"] == {"rowCount": 2, "columnCount": 26}


# --------------------------------------------------------------------------- rows and columns


def _grid(standin: SheetsStandIn, sid: str, title: str) -> dict[str, Any]:
    return dict(standin.sheet_properties(sid, title)["gridProperties"])


def _batch(standin: SheetsStandIn, sid: str, *requests: dict[str, Any]) -> tuple[int, Any]:
    return _http(standin, "POST", f"/v4/spreadsheets/{sid}:batchUpdate", {"requests": list(requests)})


def _dim(dimension: str, start: int, end: int | None = None, sheet_id: int = 0) -> dict[str, Any]:
    rng: dict[str, Any] = {"sheetId": sheet_id, "dimension": dimension, "startIndex": start}
    if end is not None:
        rng["endIndex"] = end
    return rng


def test_delete_rows_and_columns_move_values_and_formats(standin: SheetsStandIn, gc: Any) -> None:
    sid = standin.create_spreadsheet(
        "Delete",
        {
            "S": [
                ["Name", "Due", "Note"],
                ["a", date(2024, 1, 1), "x"],
                ["b", date(2024, 2, 1), "y"],
                ["c", date(2024, 3, 1), "z"],
            ]
        },
    )
    ws = gc.open_by_key(sid).worksheet("S")
    ws.format("C4", {"numberFormat": {"type": "TEXT"}})
    standin.reset_counts()
    ws.delete_rows(2)  # one deleteDimension request
    assert standin.method_counts == {"spreadsheets.batchUpdate": 1}
    assert standin.sheet_values(sid, "S") == [["Name", "Due", "Note"], ["b", 45323, "y"], ["c", 45352, "z"]]
    assert standin.cell_values(sid, "S")[1:] == [["b", date(2024, 2, 1), "y"], ["c", date(2024, 3, 1), "z"]]
    assert standin.cell_format(sid, "S", 3, "C") == {"type": "TEXT"}  # moved up from C4
    assert standin.cell_format(sid, "S", 4, "B") is None and standin.cell_format(sid, "S", 4, "C") is None
    assert _grid(standin, sid, "S") == {"rowCount": 999, "columnCount": 26}
    assert ws.get("B2:B3") == [["2024-02-01"], ["2024-03-01"]]
    # columns A and B go; C moves to A with its format
    ws.delete_columns(1, 2)
    assert standin.sheet_values(sid, "S") == [["Note"], ["y"], ["z"]]
    assert standin.cell_format(sid, "S", 3, "A") == {"type": "TEXT"}
    assert standin.cell_format(sid, "S", 2, "A") is None  # the dates' formats went with column B
    assert _grid(standin, sid, "S") == {"rowCount": 999, "columnCount": 24}
    # several rows at once; a range without endIndex runs to the grid's end
    ws.delete_rows(2, 3)
    assert standin.sheet_values(sid, "S") == [["Note"]]
    assert _grid(standin, sid, "S")["rowCount"] == 997
    status, body = _batch(standin, sid, {"deleteDimension": {"range": _dim("ROWS", 10, sheet_id=ws.id)}})
    assert (status, body["replies"]) == (200, [{}])
    assert _grid(standin, sid, "S") == {"rowCount": 10, "columnCount": 24}


def test_insert_rows_and_columns_take_their_neighbours_formats(standin: SheetsStandIn, gc: Any) -> None:
    sid = standin.create_spreadsheet("Insert", {"S": [["Name", "Due"], ["a", date(2024, 1, 1)], ["b", 5]]})
    ws = gc.open_by_key(sid).worksheet("S")
    ws.format("A3:B3", {"numberFormat": {"type": "TEXT"}})
    # gspread's insert_rows: insertDimension, then an append at the new, empty row
    res = ws.insert_rows(
        [["m", "2024-01-15"]], row=3, value_input_option="USER_ENTERED", inherit_from_before=True
    )
    assert res["updates"]["updatedRange"] == "S!A3:B3" and "tableRange" not in res
    assert standin.cell_values(sid, "S") == [
        ["Name", "Due"],
        ["a", date(2024, 1, 1)],
        ["m", date(2024, 1, 15)],
        ["b", 5],
    ]
    assert standin.cell_format(sid, "S", 3, "B") == {"type": "DATE", "pattern": "yyyy-mm-dd"}  # row before's
    assert standin.cell_format(sid, "S", 3, "A") is None
    assert standin.cell_format(sid, "S", 4, "B") == {"type": "TEXT"}  # b's row moved down with its formats
    assert _grid(standin, sid, "S") == {"rowCount": 1001, "columnCount": 26}
    # without inheritFromBefore the new row takes the formats of the row after it: text here
    ws.insert_rows([["n", "007"]], row=4, value_input_option="USER_ENTERED")
    assert standin.sheet_values(sid, "S")[3:] == [["n", "007"], ["b", 5]]
    assert standin.cell_format(sid, "S", 4, "A") == {"type": "TEXT"}
    # a column before B takes B's formats (the column after it); B's values and formats move to C
    ws.insert_cols([["Owner", "ana"]], col=2)
    assert standin.sheet_values(sid, "S") == [
        ["Name", "Owner", "Due"],
        ["a", "ana", 45292],
        ["m", None, 45306],
        ["n", None, "007"],
        ["b", None, 5],
    ]
    assert standin.cell_format(sid, "S", 2, "C") == {"type": "DATE", "pattern": "yyyy-mm-dd"}
    assert standin.cell_format(sid, "S", 2, "B") == {"type": "DATE", "pattern": "yyyy-mm-dd"}
    assert standin.cell_format(sid, "S", 5, "B") == {"type": "TEXT"}
    assert _grid(standin, sid, "S") == {"rowCount": 1002, "columnCount": 27}
    # an append to a whole sheet stops at the first empty row, as Google's table detection does
    ws.update([["gap"]], "A8")
    res = ws.append_row(["after"])
    assert res["tableRange"] == "S!A1:C5" and res["updates"]["updatedRange"] == "S!A6"


def test_dimension_requests_are_refused_as_google_refuses_them(standin: SheetsStandIn) -> None:
    sid = standin.create_spreadsheet("Refuse", {"S": [["h"], ["1"], ["2"]]})
    grid = {"rowCount": 3, "columnCount": 2, "frozenRowCount": 1, "frozenColumnCount": 1}
    status, _ = _batch(
        standin,
        sid,
        {
            "updateSheetProperties": {
                "properties": {"sheetId": 0, "gridProperties": grid},
                "fields": "gridProperties",
            }
        },
    )
    assert status == 200

    def refused(*requests: dict[str, Any]) -> str:
        status, body = _batch(standin, sid, *requests)
        assert status == 400, body
        return str(body["error"]["message"])

    delete = "Invalid requests[0].deleteDimension: "
    insert = "Invalid requests[0].insertDimension: "
    assert refused({"deleteDimension": {"range": _dim("ROWS", 1, 3)}}) == (
        delete + "Sorry, it is not possible to delete all non-frozen rows."
    )
    assert refused({"deleteDimension": {"range": _dim("ROWS", 0)}}) == (
        delete + "You can't delete all the rows on the sheet."
    )
    assert refused({"deleteDimension": {"range": _dim("COLUMNS", 1, 2)}}) == (
        delete + "Sorry, it is not possible to delete all non-frozen columns."
    )
    assert refused({"deleteDimension": {"range": _dim("ROWS", 1, 4)}}) == (
        delete + "Range (S!A2:B4) exceeds grid limits. Max rows: 3, max columns: 2"
    )
    assert refused({"deleteDimension": {"range": _dim("ROWS", -1, 1)}}) == (
        delete + "DimensionRange indexes must be >= 0"
    )
    assert "greater than range.startIndex" in refused({"deleteDimension": {"range": _dim("ROWS", 2, 2)}})
    assert refused({"insertDimension": {"range": _dim("ROWS", 3, 4)}}) == (
        insert + "range.startIndex must be less than the grid size (3) if inheritFromBefore is false."
    )
    assert refused({"insertDimension": {"range": _dim("ROWS", 0, 1), "inheritFromBefore": True}}) == (
        insert + "range.startIndex must be greater than 0 if inheritFromBefore is true."
    )
    assert "range.endIndex is required" in refused({"insertDimension": {"range": _dim("ROWS", 1)}})
    assert "No grid with id: 5" in refused({"deleteDimension": {"range": _dim("ROWS", 1, 2, sheet_id=5)}})
    assert "google.apps.sheets.v4.Dimension" in refused({"deleteDimension": {"range": _dim("ROW", 1, 2)}})
    assert "TYPE_BOOL" in refused(
        {"insertDimension": {"range": _dim("ROWS", 1, 2), "inheritFromBefore": "yes"}}
    )
    # a batch is atomic: the deletes and inserts before a bad request are undone
    assert "No grid with id: 5" in refused(
        {"deleteDimension": {"range": _dim("COLUMNS", 0, 1)}},
        {"insertDimension": {"range": _dim("ROWS", 1, 3)}},
        {"deleteDimension": {"range": _dim("ROWS", 1, 2, sheet_id=5)}},
    )
    assert standin.sheet_values(sid, "S") == [["h"], ["1"], ["2"]]
    assert _grid(standin, sid, "S") == grid
    # deleting the frozen row unfreezes it; inserting inside the frozen columns freezes the new one
    assert _batch(standin, sid, {"deleteDimension": {"range": _dim("ROWS", 0, 1)}})[0] == 200
    assert standin.sheet_values(sid, "S") == [["1"], ["2"]]
    assert _grid(standin, sid, "S") == {"rowCount": 2, "columnCount": 2, "frozenColumnCount": 1}
    assert _batch(standin, sid, {"insertDimension": {"range": _dim("COLUMNS", 0, 1)}})[0] == 200
    assert standin.sheet_values(sid, "S") == [[None, "1"], [None, "2"]]
    assert _grid(standin, sid, "S") == {"rowCount": 2, "columnCount": 3, "frozenColumnCount": 2}
    assert standin.sheet_titles(sid) == ["S"]


# --------------------------------------------------------------------------- authentication

EMAIL = "crm-sync@demo-project.iam.gserviceaccount.com"
SCOPES = ["https://www.googleapis.com/auth/spreadsheets"]


@pytest.fixture(scope="module")
def auth_standin() -> Iterator[SheetsStandIn]:
    with SheetsStandIn(require_auth=True) as server:
        yield server


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    return make_private_key_pem()


def _service_account_file(tmp_path: Path, pem: str, token_uri: str, email: str = EMAIL) -> Path:
    return write_service_account_key(
        tmp_path / "service-account.json", private_key_pem=pem, token_uri=token_uri, client_email=email
    )


def test_service_account_credentials_open_a_sheet(
    auth_standin: SheetsStandIn, private_key_pem: str, tmp_path: Path
) -> None:
    service_account = pytest.importorskip("google.oauth2.service_account")
    from google.auth.transport.requests import AuthorizedSession

    path = _service_account_file(tmp_path, private_key_pem, auth_standin.token_uri)
    creds = service_account.Credentials.from_service_account_file(str(path), scopes=SCOPES)
    session = mount_standin(AuthorizedSession(creds), auth_standin.base_url)
    client = gspread.Client(auth=creds, session=session)
    sid = auth_standin.create_spreadsheet(
        "Private", {"Leads": [["Name"], ["Ada"]]}, shared_with=[EMAIL.upper()]
    )
    auth_standin.reset_counts()
    ws = client.open_by_key(sid).worksheet("Leads")
    assert ws.get_all_values() == [["Name"], ["Ada"]]
    assert auth_standin.token_request_count == 1
    # /token is not an API request
    assert list(auth_standin.method_counts.elements()) == ["spreadsheets.get"] * 2 + [
        "spreadsheets.values.get"
    ]
    assert auth_standin.request_count == 3
    assert creds.valid and creds.token.startswith("ya29.")
    # tokens revoked: the session gets a 401, fetches a new token and retries
    auth_standin.revoke_tokens()
    assert ws.acell("A2").value == "Ada"
    assert auth_standin.token_request_count == 2
    assert auth_standin.request_count == 5  # the refused request, then its retry
    # gspread_client builds the same thing
    other = gspread_client(auth_standin.base_url, credentials=creds)
    assert other.open_by_key(sid).title == "Private"


def test_token_endpoint_decodes_the_assertion(auth_standin: SheetsStandIn) -> None:
    def b64(obj: Any) -> str:
        return base64.urlsafe_b64encode(json.dumps(obj).encode()).rstrip(b"=").decode()

    def token(form: dict[str, str]) -> tuple[int, Any, Any]:
        return _http_full(
            auth_standin,
            "POST",
            "/token",
            headers={"Content-Type": "application/x-www-form-urlencoded"},
            raw_body=urlencode(form).encode(),
        )

    jwt = (
        b64({"alg": "RS256", "typ": "JWT"})
        + "."
        + b64({"iss": "robot@example.iam.gserviceaccount.com"})
        + ".c2ln"
    )
    before_api, before_tokens = auth_standin.request_count, auth_standin.token_request_count
    status, body, _ = token({"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": jwt})
    assert status == 200
    assert set(body) == {"access_token", "expires_in", "token_type"}
    assert (body["expires_in"], body["token_type"]) == (3599, "Bearer")
    sid = auth_standin.create_spreadsheet(
        "Tok", {"S": [["x"]]}, shared_with=["robot@example.iam.gserviceaccount.com"]
    )
    assert (
        _http(
            auth_standin,
            "GET",
            f"/v4/spreadsheets/{sid}",
            headers={"Authorization": f"Bearer {body['access_token']}"},
        )[0]
        == 200
    )
    status, body, _ = token(
        {"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": "not-a-jwt"}
    )
    assert status == 400 and body["error"] == "invalid_grant" and body["error_description"]
    status, body, _ = token(
        {
            "grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer",
            "assertion": b64({}) + "." + b64({}) + ".x",
        }
    )
    assert status == 400 and body["error"] == "invalid_grant"
    status, body, _ = token({"grant_type": "client_credentials", "assertion": jwt})
    assert (status, body) == (
        400,
        {"error": "unsupported_grant_type", "error_description": "Invalid grant_type: client_credentials"},
    )
    assert auth_standin.token_request_count == before_tokens + 4
    assert auth_standin.request_count == before_api + 1


def test_missing_or_unknown_token_is_401(auth_standin: SheetsStandIn) -> None:
    sid = auth_standin.create_spreadsheet("Locked", {"S": [["x"]]})
    expected = {
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials. Expected OAuth 2 access token, "
            "login cookie or other valid authentication credential. "
            "See https://developers.google.com/identity/sign-in/web/devconsole-project.",
            "status": "UNAUTHENTICATED",
        }
    }
    status, body, headers = _http_full(auth_standin, "GET", f"/v4/spreadsheets/{sid}")
    assert (status, body) == (401, expected)
    assert headers["WWW-Authenticate"].startswith("Bearer")
    assert _http(
        auth_standin, "GET", f"/v4/spreadsheets/{sid}", headers={"Authorization": "Bearer ya29.made-up"}
    ) == (401, expected)
    assert _http(
        auth_standin, "GET", "/v4/spreadsheets/nope/values/S!A1", headers={"Authorization": "Basic eDp5"}
    ) == (401, expected)
    token = auth_standin.issue_token("anyone@example.com")
    assert (
        _http(
            auth_standin,
            "GET",
            f"/v4/spreadsheets/{sid}/values/S!A1",
            headers={"Authorization": f"Bearer {token}"},
        )[0]
        == 200
    )
    # gspread without credentials sends no token
    with pytest.raises(gspread.exceptions.APIError) as info:
        gspread_client(auth_standin.base_url).open_by_key(sid)
    assert info.value.code == 401 and info.value.error["status"] == "UNAUTHENTICATED"


def test_spreadsheet_not_shared_with_caller_is_403(
    auth_standin: SheetsStandIn, private_key_pem: str, tmp_path: Path
) -> None:
    service_account = pytest.importorskip("google.oauth2.service_account")
    sid = auth_standin.create_spreadsheet("Theirs", {"S": [["x"]]}, shared_with=["someone-else@example.com"])
    path = _service_account_file(tmp_path, private_key_pem, auth_standin.token_uri)
    creds = service_account.Credentials.from_service_account_file(str(path), scopes=SCOPES)
    client = gspread_client(auth_standin.base_url, credentials=creds)
    with pytest.raises(PermissionError):  # gspread turns the 403 of open_by_key into PermissionError
        client.open_by_key(sid)
    token = auth_standin.issue_token(EMAIL)
    for method, path_ in (
        ("GET", f"/v4/spreadsheets/{sid}"),
        ("PUT", f"/v4/spreadsheets/{sid}/values/S!A1?valueInputOption=RAW"),
    ):
        status, body = _http(
            auth_standin,
            method,
            path_,
            {"values": [["y"]]} if method == "PUT" else None,
            headers={"Authorization": f"Bearer {token}"},
        )
        assert (status, body) == (
            403,
            {
                "error": {
                    "code": 403,
                    "message": "The caller does not have permission",
                    "status": "PERMISSION_DENIED",
                }
            },
        )
    assert auth_standin.sheet_values(sid, "S") == [["x"]]
    other = auth_standin.issue_token("Someone-Else@example.com")
    assert (
        _http(auth_standin, "GET", f"/v4/spreadsheets/{sid}", headers={"Authorization": f"Bearer {other}"})[0]
        == 200
    )


def test_shared_with_is_ignored_without_require_auth(standin: SheetsStandIn, gc: Any) -> None:
    sid = standin.create_spreadsheet("Open", {"S": [["x"]]}, shared_with=["someone@example.com"])
    assert gc.open_by_key(sid).sheet1.acell("A1").value == "x"


# --------------------------------------------------------------------------- failures, latency, log


def test_fail_next_filters_by_method_and_path(standin: SheetsStandIn, gc: Any, book: str) -> None:
    ws = gc.open_by_key(book).worksheet("Leads")
    standin.fail_next(1, 500, method="PUT")
    standin.fail_next(2, 503, path_contains=":append")
    standin.fail_next(1, 429, path_contains="!A1:B1")  # matched after percent-decoding too
    try:
        assert ws.acell("B1").value == "Email"  # a GET: passes
        with pytest.raises(gspread.exceptions.APIError) as info:
            ws.update([["x"]], "F1")
        assert info.value.code == 500
        ws.update([["x"]], "F1")  # the rule was used up
        for _ in range(2):
            with pytest.raises(gspread.exceptions.APIError) as info:
                ws.append_row(["y"])
            assert info.value.code == 503
        ws.append_row(["y"])
        with pytest.raises(gspread.exceptions.APIError) as info:
            ws.get("A1:B1")
        assert info.value.code == 429
        assert ws.get("A1:B1") == [["Name", "Email"]]
    finally:
        standin.clear_failures()


def test_requests_log_and_latency(standin: SheetsStandIn, gc: Any, book: str) -> None:
    ws = gc.open_by_key(book).worksheet("Leads")
    standin.reset_counts()
    ws.get("A1:B2", value_render_option="UNFORMATTED_VALUE")
    ws.update([["z"]], "H1", raw=False)
    assert standin.requests_log == [
        (
            "GET",
            f"/v4/spreadsheets/{book}/values/'Leads'!A1:B2",
            {"valueRenderOption": ["UNFORMATTED_VALUE"]},
        ),
        ("PUT", f"/v4/spreadsheets/{book}/values/'Leads'!H1", {"valueInputOption": ["USER_ENTERED"]}),
    ]
    assert standin.request_count == 2
    standin.latency = 0.2
    try:
        started = time.monotonic()
        ws.acell("A1")
        assert time.monotonic() - started >= 0.2
        # requests wait side by side, not one after the other
        threads = [threading.Thread(target=ws.acell, args=("A1",)) for _ in range(4)]
        started = time.monotonic()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert 0.2 <= time.monotonic() - started < 0.75
    finally:
        standin.latency = 0.0
    assert SheetsStandIn(latency=0.5).latency == 0.5
