"""Tests for the local Google Sheets API v4 stand-in, driven through the real gspread client."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from crmkit.testing.sheets_standin import Formula, SheetsStandIn, gspread_client

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


def _http(standin: SheetsStandIn, method: str, path: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(
        standin.base_url + path, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(req, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


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


def test_cli_module_runs(tmp_path: Any) -> None:
    import subprocess
    import sys
    import time

    proc = subprocess.Popen(
        [sys.executable, "-m", "crmkit.testing.sheets_standin", "--port", "0", "--demo"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert "listening on http://127.0.0.1:" in line
        base = line.split("listening on ")[1].strip()
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
    finally:
        proc.terminate()
        proc.wait(timeout=5)


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
        from urllib.parse import quote, urlencode

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
