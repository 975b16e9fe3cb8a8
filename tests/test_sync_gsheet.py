"""What only the Google Sheets adapter must get right: few requests, rate limits, rows that
move while a sync runs, types that do not drift, and signing in.

The real gspread client talks to the local Sheets API stand-in; the behaviours shared with
Excel are in test_sync_books.py.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crmkit.cli import main
from crmkit.config import SheetsSettings
from crmkit.errors import ConfigError, CrmkitError
from crmkit.store import Store
from crmkit.sync import SyncReport, open_book, sync_book
from crmkit.sync.google import RetryPolicy, SheetsUnavailableError, connect
from crmkit.sync.gsheet import GoogleSheetBook, parse_spreadsheet_key
from crmkit.testing.sheets_standin import (
    Formula,
    SheetsStandIn,
    gspread_client,
    make_private_key_pem,
    write_service_account_key,
)

EMAIL = "crm-sync@demo-project.iam.gserviceaccount.com"
FAST = RetryPolicy(timeout=5, deadline=1.0, first_wait=0.01, max_wait=0.05)
WRITES = ("spreadsheets.batchUpdate", "spreadsheets.values.batchUpdate")


@pytest.fixture(scope="module")
def standin() -> Iterator[SheetsStandIn]:
    with SheetsStandIn() as server:
        yield server


@pytest.fixture(autouse=True)
def _fresh_counts(standin: SheetsStandIn) -> Iterator[None]:
    standin.clear_failures()
    standin.latency = 0.0
    yield
    standin.clear_failures()
    standin.latency = 0.0


def open_sheet(standin: SheetsStandIn, sid: str, policy: RetryPolicy = FAST) -> GoogleSheetBook:
    client, creds = connect(SheetsSettings(endpoint=standin.base_url), policy=policy, env={})
    return GoogleSheetBook(sid, client, creds)


def sync(store: Store, standin: SheetsStandIn, sid: str, **kwargs: Any) -> SyncReport:
    return sync_book(store, open_sheet(standin, sid), **kwargs)


def rows(standin: SheetsStandIn, sid: str, title: str) -> list[dict[str, Any]]:
    values = standin.cell_values(sid, title)
    headers = [str(h) for h in values[0]]
    width = len(headers)  # the API leaves out a row's trailing empty cells
    return [
        dict(zip(headers, [*r, *[None] * (width - len(r))], strict=False))
        for r in values[1:]
        if any(v is not None for v in r)
    ]


def person_types(standin: SheetsStandIn, sid: str, title: str, a1: str, values: list[list[Any]]) -> None:
    """Cells typed into the sheet, as a person in the browser would (USER_ENTERED)."""
    ws = gspread_client(standin.base_url).open_by_key(sid).worksheet(title)
    ws.update(values, a1, value_input_option="USER_ENTERED")


def four_sheets(n: int) -> dict[str, list[list[Any]]]:
    return {
        "Contacts": [["ID", "Name", "Email", "Title"]]
        + [[None, f"Person {i}", f"p{i}@example.com", "Buyer"] for i in range(n)],
        "Leads": [["ID", "Name", "Company", "Email"]]
        + [[None, f"Lead {i}", f"Co {i}", f"l{i}@example.org"] for i in range(n)],
        "Deals": [["ID", "Title", "Stage", "Amount", "Close date"]]
        + [[None, f"Deal {i}", "proposal", 100 + i, date(2026, 12, 1)] for i in range(n)],
        "Invoices": [["ID", "Number", "Issue date", "Amount paid"]]
        + [[None, f"INV-{i:05}", date(2026, 11, 1), 0] for i in range(n)],
        "Invoice Lines": [["Invoice", "Description", "Quantity", "Unit price"]]
        + [[f"INV-{i:05}", "Work", 1, 50] for i in range(n)],
    }


# -- requests -------------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10, 1500])
def test_a_handful_of_requests_whatever_the_rows(standin: SheetsStandIn, store: Store, n: int) -> None:
    sid = standin.create_spreadsheet("CRM", four_sheets(n))
    standin.reset_counts()
    first = sync(store, standin, sid)
    assert first.book_written and store.count("contacts") == n and store.count("invoices") == n
    # metadata, one read of every sheet, the re-read of the ID columns, the grids grown
    # (1500 rows do not fit the grid), the values, the dates
    assert standin.request_count <= 6, standin.method_counts
    assert [r["ID"] for r in rows(standin, sid, "Deals")] == [f"D-{i}" for i in range(1, n + 1)]

    # changes everywhere, on both sides
    for title, cell, value in (
        ("Contacts", "D2", "CEO"),
        ("Leads", "C2", "Other Co"),
        ("Deals", "C2", "negotiation"),
        ("Invoice Lines", "C2", 3),
    ):
        person_types(standin, sid, title, cell, [[value]])
    store.update("C-2", {"title": "CFO"})
    store.update("L-2", {"company": "Store Co"})
    store.update("D-2", {"amount": "999", "close_date": "2027-01-15"})
    store.add("contacts", {"name": "New One", "email": "new@example.com"})
    store.add("deals", {"title": "New deal", "amount": "5", "close_date": "2027-02-01"})
    store.add("invoices", {"number": "INV-NEW", "lines": [{"description": "x", "quantity": 1, "unit_price": 9}]})
    standin.reset_counts()
    second = sync(store, standin, sid)
    assert not second.needs_attention and second.book_written
    # as above; the grids grow here when the sheets were full (then with room to spare)
    assert standin.request_count <= 6, standin.method_counts
    assert store.get("C-1")["title"] == "CEO" and store.get("D-1")["stage"] == "negotiation"
    assert store.get("I-1")["total"] == "150.00"
    deals = rows(standin, sid, "Deals")
    assert deals[1]["Amount"] == 999 and deals[1]["Close date"] == date(2027, 1, 15)
    assert deals[-1]["ID"] == f"D-{n + 1}" and deals[-1]["Close date"] == date(2027, 2, 1)

    standin.reset_counts()
    assert sync(store, standin, sid).changes == 0
    assert standin.request_count == 2  # metadata and one read; nothing written
    assert not any(name in WRITES for name in standin.method_counts)


# -- rate limits and errors ---------------------------------------------------------------


def test_a_short_429_storm_is_waited_out(standin: SheetsStandIn, store: Store) -> None:
    sid = standin.create_spreadsheet("CRM", four_sheets(20))
    book = open_sheet(standin, sid)
    standin.fail_next(3, 429)
    standin.fail_next(2, 503, method="POST")
    report = sync_book(store, book)
    assert report.book_written and not report.needs_attention
    assert book.client.retries == 5
    assert store.count("contacts") == 20 and rows(standin, sid, "Contacts")[-1]["ID"] == "C-20"


def test_a_storm_past_the_deadline_mid_write_is_finished_by_the_next_run(
    standin: SheetsStandIn, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    n = 120
    sid = standin.create_spreadsheet("CRM", four_sheets(n))
    # small requests, so the write takes several, and the storm starts after the first
    monkeypatch.setattr("crmkit.sync.gsheet._MAX_PAYLOAD", 1500)
    book = open_sheet(standin, sid)
    write = book.client.values_batch_update
    calls = 0

    def storm_after_first(*args: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 2:
            standin.fail_next(100_000, 429)  # Google keeps saying "slow down", for ever
        return write(*args)

    monkeypatch.setattr(book.client, "values_batch_update", storm_after_first)
    started = time.monotonic()
    with pytest.raises(SheetsUnavailableError, match="429"):
        sync_book(store, book)
    assert time.monotonic() - started < 10  # gave up at the deadline, did not hang
    standin.clear_failures()
    written = [r["ID"] for t in ("Contacts", "Leads", "Deals") for r in rows(standin, sid, t) if r["ID"]]
    assert 0 < len(written) < 3 * n  # the write really was cut short

    report = sync(store, standin, sid)
    assert not report.needs_attention
    for title, prefix, table in (("Contacts", "C", "contacts"), ("Leads", "L", "leads"), ("Deals", "D", "deals")):
        ids = [r["ID"] for r in rows(standin, sid, title)]
        assert sorted(ids, key=lambda i: int(i.split("-")[1])) == [f"{prefix}-{i}" for i in range(1, n + 1)]
        assert store.count(table) == n  # nothing made twice
    names = {r["ID"]: r["Name"] for r in rows(standin, sid, "Contacts")}
    assert all(store.get(i)["name"] == name for i, name in names.items())
    assert sync(store, standin, sid).changes == 0


def test_no_request_is_bigger_than_the_limit_even_for_one_long_range(
    standin: SheetsStandIn, store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first sync writes one ID range per sheet: 20,000 rows of it is megabytes in one range."""
    n = 300
    sid = standin.create_spreadsheet("CRM", four_sheets(n))
    monkeypatch.setattr("crmkit.sync.gsheet._MAX_PAYLOAD", 2000)
    book = open_sheet(standin, sid)
    write = book.client.values_batch_update
    sizes: list[int] = []

    def measured(*args: Any, **kwargs: Any) -> Any:
        body = kwargs.get("body") or args[-1]
        sizes.append(len(json.dumps(body["data"], default=str)))
        return write(*args, **kwargs)

    monkeypatch.setattr(book.client, "values_batch_update", measured)
    assert not sync_book(store, book).needs_attention
    assert len(sizes) > 3 and max(sizes) <= 2000
    for title, prefix in (("Contacts", "C"), ("Leads", "L"), ("Deals", "D")):
        assert [r["ID"] for r in rows(standin, sid, title)] == [f"{prefix}-{i}" for i in range(1, n + 1)]


def test_a_server_that_does_not_answer_times_out(standin: SheetsStandIn, store: Store) -> None:
    sid = standin.create_spreadsheet("CRM", {"Contacts": [["ID", "Name"], [None, "Ana"]]})
    standin.latency = 1.0
    book = open_sheet(standin, sid, RetryPolicy(timeout=0.2, deadline=0.5, first_wait=0.05, max_wait=0.1))
    started = time.monotonic()
    with pytest.raises(SheetsUnavailableError, match="did not answer"):
        sync_book(store, book)
    assert time.monotonic() - started < 3


def test_a_slow_answer_is_cut_at_the_deadline_not_at_the_longer_request_timeout(
    standin: SheetsStandIn, store: Store
) -> None:
    sid = standin.create_spreadsheet("CRM", {"Contacts": [["ID", "Name"], [None, "Ana"]]})
    standin.latency = 5.0
    book = open_sheet(standin, sid, RetryPolicy(timeout=30, deadline=1.0, first_wait=0.05, max_wait=0.1))
    started = time.monotonic()
    with pytest.raises(SheetsUnavailableError, match="did not answer"):
        sync_book(store, book)
    assert time.monotonic() - started < 2.5  # not the 30 s of one request's timeout


def test_unknown_spreadsheet_is_one_line(standin: SheetsStandIn, store: Store) -> None:
    with pytest.raises(CrmkitError, match="no Google spreadsheet with key nope"):
        sync(store, standin, "nope")


# -- rows that move while the sync runs ---------------------------------------------------


class PersonEditsDuringSync:
    """The spreadsheet, with a person's edit landing between the sync's read and its write."""

    def __init__(self, book: GoogleSheetBook, edit: Any) -> None:
        self.book = book
        self.edit = edit
        self.identity = book.identity
        self.display_name = book.display_name
        self.reads = 0

    def fingerprint(self) -> str | None:
        return self.book.fingerprint()

    def check_writable(self) -> None:
        self.book.check_writable()

    def read(self) -> Any:
        tables = self.book.read()
        self.reads += 1
        if self.reads == 1:
            self.edit()
        return tables

    def read_back(self, value: Any) -> Any:
        return self.book.read_back(value)

    def write(self, changes: Any) -> None:
        self.book.write(changes)


CONTACTS = {
    "Contacts": [
        ["ID", "Name", "Email", "Title"],
        [None, "Ana", "ana@example.com", "CEO"],
        [None, "Bob", "bob@example.com", "CTO"],
    ]
}


def test_a_row_inserted_above_while_syncing_is_not_overwritten(standin: SheetsStandIn, store: Store) -> None:
    sid = standin.create_spreadsheet("CRM", CONTACTS)
    sync(store, standin, sid)
    store.update("C-2", {"title": "VP"})  # crmkit will write Bob's row (row 3)
    store.add("contacts", {"name": "Cy", "email": "cy@example.com"})

    def insert_row_at_top() -> None:
        ws = gspread_client(standin.base_url).open_by_key(sid).worksheet("Contacts")
        ws.insert_row([None, "Dee", "dee@example.com", "COO"], 2, value_input_option="USER_ENTERED")

    book = PersonEditsDuringSync(open_sheet(standin, sid), insert_row_at_top)
    report = sync_book(store, book)
    assert book.reads == 2  # the first write was refused; read again and planned again
    assert any("changed while it was synced" in n for s in report.sheets for n in s.notes)
    got = {r["Name"]: (r["ID"], r["Title"]) for r in rows(standin, sid, "Contacts")}
    assert got == {"Dee": ("C-4", "COO"), "Ana": ("C-1", "CEO"), "Bob": ("C-2", "VP"), "Cy": ("C-3", None)}
    assert store.get("C-4")["name"] == "Dee" and store.count("contacts") == 4
    assert sync(store, standin, sid).changes == 0


def test_a_row_added_below_while_syncing_is_not_overwritten(standin: SheetsStandIn, store: Store) -> None:
    sid = standin.create_spreadsheet("CRM", CONTACTS)
    sync(store, standin, sid)
    store.add("contacts", {"name": "Cy", "email": "cy@example.com"})  # crmkit appends a row

    def add_row_below() -> None:
        person_types(standin, sid, "Contacts", "B4", [["Dee", "dee@example.com"]])

    report = sync_book(store, PersonEditsDuringSync(open_sheet(standin, sid), add_row_below))
    assert not report.needs_attention
    got = sorted((r["ID"], r["Name"]) for r in rows(standin, sid, "Contacts"))
    assert got == [("C-1", "Ana"), ("C-2", "Bob"), ("C-3", "Cy"), ("C-4", "Dee")]


def test_a_sheet_that_never_stops_changing_stops_the_sync(standin: SheetsStandIn, store: Store) -> None:
    sid = standin.create_spreadsheet("CRM", CONTACTS)
    sync(store, standin, sid)
    store.add("contacts", {"name": "Cy", "email": "cy@example.com"})
    count = 0

    class Busy(PersonEditsDuringSync):
        def read(self) -> Any:
            nonlocal count
            tables = self.book.read()
            count += 1
            person_types(standin, sid, "Contacts", f"B{3 + count}", [[f"Person {count}"]])
            return tables

    with pytest.raises(CrmkitError, match="while it was being synced"):
        sync_book(store, Busy(open_sheet(standin, sid), None))
    assert count == 3
    # nothing lost: the next quiet run takes every row
    assert not sync(store, standin, sid).needs_attention
    assert {r["Name"] for r in rows(standin, sid, "Contacts")} >= {"Cy", "Person 1", "Person 2", "Person 3"}
    assert all(r["ID"] for r in rows(standin, sid, "Contacts"))


# -- values ---------------------------------------------------------------------------------


def test_types_do_not_drift(standin: SheetsStandIn, store: Store) -> None:
    sid = standin.create_spreadsheet(
        "CRM",
        {
            "Contacts": [
                ["ID", "Name", "Email", "Title", "Code", "Score"],
                [None, "Ana", "ana@example.com", "007", "0012", 12.5],
                [None, "Bob", "bob@example.com", "1e3", "TRUE", 3],
            ]
        },
    )
    sync(store, standin, sid)
    ana, bob = store.get("C-1"), store.get("C-2")
    assert ana["title"] == "007" and ana["custom"] == {"Code": "0012", "Score": 12.5}
    assert bob["title"] == "1e3" and bob["custom"] == {"Code": "TRUE", "Score": 3}
    store.update("C-1", {"title": "=IMPORTXML(\"http://evil\")"})
    store.update("C-2", {"title": "0044"})
    sync(store, standin, sid)
    stored = standin.sheet_values(sid, "Contacts")
    assert stored[1][3] == '=IMPORTXML("http://evil")' and not isinstance(stored[1][3], Formula)
    assert stored[2][3] == "0044"  # RAW: text stays text, never a number
    assert sync(store, standin, sid).changes == 0


def test_dates_as_people_type_them(standin: SheetsStandIn, store: Store) -> None:
    sid = standin.create_spreadsheet("CRM", {"Deals": [["ID", "Title", "Close date"], [None, "A"], [None, "B"]]})
    person_types(standin, sid, "Deals", "C2", [["12/1/2026"], ["2026-12-15"]])  # en_US and ISO
    sync(store, standin, sid)
    assert store.get("D-1")["close_date"] == "2026-12-01" and store.get("D-2")["close_date"] == "2026-12-15"
    store.update("D-1", {"close_date": "2027-03-04"})
    store.add("deals", {"title": "C", "close_date": "2027-05-06"})
    sync(store, standin, sid)
    got = {r["Title"]: r["Close date"] for r in rows(standin, sid, "Deals")}
    assert got == {"A": date(2027, 3, 4), "B": date(2026, 12, 15), "C": date(2027, 5, 6)}
    assert standin.cell_format(sid, "Deals", 2, "C") == {"type": "DATE", "pattern": "M/d/yyyy"}  # kept
    assert standin.cell_format(sid, "Deals", 4, "C")["type"] == "DATE"  # type: ignore[index]
    assert sync(store, standin, sid).changes == 0


# -- signing in -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def private_key_pem() -> str:
    return make_private_key_pem()


@pytest.fixture(scope="module")
def auth_standin() -> Iterator[SheetsStandIn]:
    with SheetsStandIn(require_auth=True) as server:
        yield server


def key_file(folder: Path, pem: str, token_uri: str) -> Path:
    return write_service_account_key(
        folder / "service-account.json", private_key_pem=pem, token_uri=token_uri, client_email=EMAIL
    )


def test_service_account_through_the_cli(
    auth_standin: SheetsStandIn, private_key_pem: str, tmp_path: Path, store_path: Path
) -> None:
    key = key_file(tmp_path, private_key_pem, auth_standin.token_uri)
    shared = auth_standin.create_spreadsheet("CRM", CONTACTS, shared_with=[EMAIL])
    private = auth_standin.create_spreadsheet("CRM", CONTACTS, shared_with=["someone@example.com"])
    env = {"CRMKIT_SHEETS_ENDPOINT": auth_standin.base_url, "XDG_CONFIG_HOME": str(tmp_path)}
    runner = CliRunner()
    base = ["--store", str(store_path), "sync"]
    result = runner.invoke(main, [*base, f"gsheet:{shared}", "--credentials", str(key), "--json"], env=env)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["book"] == f"gsheet:{shared}"
    assert [r["ID"] for r in rows(auth_standin, shared, "Contacts")] == ["C-1", "C-2"]
    # the same key from GOOGLE_APPLICATION_CREDENTIALS, and a spreadsheet not shared with it
    result = runner.invoke(main, [*base, f"gsheet:{private}"], env={**env, "GOOGLE_APPLICATION_CREDENTIALS": str(key)})
    assert result.exit_code == 1
    assert f"share it with {EMAIL} as Editor" in result.stderr
    assert "Traceback" not in result.output and len(result.stderr.strip().splitlines()) == 1
    assert private_key_pem.splitlines()[1] not in result.output  # the key never reaches the output


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (None, "credentials file .* not found"),
        ("{not json", "is not JSON"),
        ('{"type": "external_account"}', "not a service-account key or an OAuth client file"),
        ('{"type": "service_account", "client_email": "x@y"}', "not a usable service-account key"),
    ],
)
def test_bad_credentials_are_one_clear_line(tmp_path: Path, content: str | None, message: str) -> None:
    path = tmp_path / "key.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        connect(SheetsSettings(credentials=path), env={})


def test_no_credentials_for_google_says_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no Google credentials.*GOOGLE_APPLICATION_CREDENTIALS"):
        connect(SheetsSettings(), env={"XDG_CONFIG_HOME": str(tmp_path)})
    # a stand-in needs no account
    connect(SheetsSettings(endpoint="http://127.0.0.1:9"), env={"XDG_CONFIG_HOME": str(tmp_path)})


def test_config_keys_reach_the_client(tmp_path: Path) -> None:
    from crmkit.config import load_config

    (tmp_path / "crmkit.toml").write_text(
        '[sheets]\nendpoint = "http://127.0.0.1:9"\ntimeout = 7\nretry_deadline = 30\n'
    )
    settings = load_config(tmp_path / "crmkit.toml").sheets
    client, _ = connect(settings, env={})
    assert (client.timeout, client.policy.deadline) == (7.0, 30.0)
    with pytest.raises(ConfigError, match="retry_deadline must be a positive number"):
        (tmp_path / "bad.toml").write_text("[sheets]\nretry_deadline = 0\n")
        load_config(tmp_path / "bad.toml")


def test_keys_and_urls() -> None:
    key = "1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms"
    assert parse_spreadsheet_key(key) == key
    assert parse_spreadsheet_key(f"https://docs.google.com/spreadsheets/d/{key}/edit#gid=0") == key
    with pytest.raises(CrmkitError, match="not a Google spreadsheet URL"):
        parse_spreadsheet_key("https://docs.google.com/document/d/xyz/edit")
    with pytest.raises(CrmkitError, match="not a Google spreadsheet key"):
        parse_spreadsheet_key("my sheet")
    book = open_book(f"https://docs.google.com/spreadsheets/d/{key}/edit", sheets=SheetsSettings(endpoint="http://x"))
    assert isinstance(book, GoogleSheetBook) and book.identity == f"gsheet:{key}"


# -- the whole thing, as a user tries it ------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_against_the_standin_served_by_python_m(tmp_path: Path) -> None:
    port = _free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "crmkit.testing.sheets_standin", "--port", str(port), "--demo"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        assert "listening" in server.stdout.readline()
        env = {**os.environ, "CRMKIT_SHEETS_ENDPOINT": f"http://127.0.0.1:{port}", "XDG_CONFIG_HOME": str(tmp_path)}
        env.pop("GOOGLE_APPLICATION_CREDENTIALS", None)
        crmkit = [sys.executable, "-m", "crmkit", "--store", str(tmp_path / "crm.json")]
        first = subprocess.run([*crmkit, "sync", "gsheet:demo"], env=env, capture_output=True, text=True)
        assert first.returncode == 0, first.stderr
        assert "Leads: crmkit: 1 added; sheet: 1 ID written" in first.stdout
        again = subprocess.run([*crmkit, "sync", "gsheet:demo", "--json"], env=env, capture_output=True, text=True)
        assert again.returncode == 0 and json.loads(again.stdout)["changes"] == 0
        listed = subprocess.run([*crmkit, "leads", "list", "--json"], env=env, capture_output=True, text=True)
        assert [lead["name"] for lead in json.loads(listed.stdout)] == ["Ada Lovelace"]
    finally:
        server.terminate()
        server.wait(timeout=10)


_KILLED_SYNC = """
import sys
from crmkit.config import SheetsSettings
from crmkit.store import Store
from crmkit.sync import open_book, sync_book
book = open_book("gsheet:" + sys.argv[2], sheets=SheetsSettings(endpoint=sys.argv[3]))
print("start", flush=True)
sync_book(Store(sys.argv[1]), book)
print("done", flush=True)
"""


def test_a_killed_sync_is_completed_by_the_next_run(standin: SheetsStandIn, tmp_path: Path) -> None:
    import random
    import signal

    count = 300
    sheets = {
        "Contacts": [["ID", "Name", "Email", "Title"]]
        + [[None, f"Person {i}", f"p{i}@example.com", f"T{i}"] for i in range(count)]
    }

    def child(store_path: Path, sid: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-c", _KILLED_SYNC, str(store_path), sid, standin.base_url],
            stdout=subprocess.PIPE,
            text=True,
        )

    timing = child(tmp_path / "timing.json", standin.create_spreadsheet("CRM", sheets))
    assert timing.stdout is not None
    timing.stdout.readline()
    started = time.monotonic()
    assert "done" in timing.stdout.read() and timing.wait() == 0
    duration = time.monotonic() - started
    rng = random.Random()
    interrupted = 0
    for round_ in range(20):
        if round_ >= 6 and interrupted >= 3:
            break
        sid = standin.create_spreadsheet("CRM", sheets)
        store_path = tmp_path / f"r{round_}.json"
        proc = child(store_path, sid)
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(rng.uniform(0.0, duration))
        proc.send_signal(signal.SIGKILL)
        interrupted += "done" not in proc.stdout.read()
        proc.wait()
        store = Store(store_path)
        report = sync(store, standin, sid)
        assert not report.needs_attention
        got = rows(standin, sid, "Contacts")
        ids = [r["ID"] for r in got]
        assert len(ids) == count and len(set(ids)) == count and None not in ids, f"round {round_}"
        assert store.count("contacts") == count, f"round {round_}"
        assert all(store.get(r["ID"])["email"] == r["Email"] for r in got)
        assert sync(store, standin, sid).changes == 0
    assert interrupted >= 3, "the kills should land inside the sync"


def test_a_person_signs_in_once_through_an_oauth_client(tmp_path: Path) -> None:
    from google.oauth2.credentials import Credentials as UserCredentials

    from crmkit.sync.google import load_credentials

    client = tmp_path / "client.json"
    client.write_text(
        json.dumps(
            {
                "installed": {
                    "client_id": "123.apps.googleusercontent.com",
                    "client_secret": "shh",
                    "auth_uri": "https://accounts.google.com/o/oauth2/auth",
                    "token_uri": "https://oauth2.googleapis.com/token",
                    "redirect_uris": ["http://localhost"],
                }
            }
        )
    )
    env = {"XDG_CONFIG_HOME": str(tmp_path / "config")}
    # under cron (no terminal) there is no browser to sign in with: say so, do not hang
    with pytest.raises(ConfigError, match="needs a browser once"):
        load_credentials(client, endpoint="https://sheets.googleapis.com", env=env)
    # once signed in, the stored token is used, from the user's config folder
    token = tmp_path / "config" / "crmkit" / "google-authorized-user.json"
    token.parent.mkdir(parents=True)
    token.write_text(
        json.dumps(
            {
                "type": "authorized_user",
                "client_id": "123.apps.googleusercontent.com",
                "client_secret": "shh",
                "refresh_token": "1//refresh",
            }
        )
    )
    creds = load_credentials(client, endpoint="https://sheets.googleapis.com", env=env)
    assert isinstance(creds, UserCredentials) and creds.refresh_token == "1//refresh"
    # and so is gspread's own stored sign-in, when nothing else is given
    gspread_dir = tmp_path / "config" / "gspread"
    gspread_dir.mkdir()
    (gspread_dir / "authorized_user.json").write_text(token.read_text())
    assert isinstance(load_credentials(None, endpoint="https://sheets.googleapis.com", env=env), UserCredentials)


def test_new_rows_shifted_by_a_person_mid_sync_are_not_made_twice(standin: SheetsStandIn, store: Store) -> None:
    sid = standin.create_spreadsheet(
        "CRM", {"Deals": [["ID", "Title", "Amount"], [None, "Alpha", 10], [None, "Beta", 20], [None, "Beta", 30]]}
    )

    def insert_row_at_top() -> None:
        ws = gspread_client(standin.base_url).open_by_key(sid).worksheet("Deals")
        ws.insert_row([None, "Gamma", 40], 2, value_input_option="USER_ENTERED")

    report = sync_book(store, PersonEditsDuringSync(open_sheet(standin, sid), insert_row_at_top))
    assert not report.needs_attention
    got = [(r["ID"], r["Title"], r["Amount"]) for r in rows(standin, sid, "Deals")]
    # deals have no email to match by: the journal of the refused write ties the shifted rows
    # to the records the first attempt made, by title and in order
    assert got == [("D-4", "Gamma", 40), ("D-1", "Alpha", 10), ("D-2", "Beta", 20), ("D-3", "Beta", 30)]
    assert store.count("deals") == 4
    assert [store.get(f"D-{i}")["amount"] for i in range(1, 5)] == ["10.00", "20.00", "30.00", "40.00"]


def test_a_row_deleted_while_syncing_does_not_shift_ids_onto_other_people(
    standin: SheetsStandIn, store: Store
) -> None:
    sid = standin.create_spreadsheet(
        "CRM", {"Contacts": [["ID", "Name", "Email"], [None, "Alice", "a@x.com"], [None, "Bob", "b@x.com"]]}
    )

    def delete_alice() -> None:
        gspread_client(standin.base_url).open_by_key(sid).worksheet("Contacts").delete_rows(2)

    sync_book(store, PersonEditsDuringSync(open_sheet(standin, sid), delete_alice))
    sync(store, standin, sid)
    got = sorted((r["ID"], r["Name"], r["Email"]) for r in rows(standin, sid, "Contacts"))
    # Every ID sits on its own person's row, and no record took another's values. Alice's
    # record was made by the first attempt from the row she deleted meanwhile: crmkit cannot
    # tell that from a record added in crmkit, so her row comes back once (nothing is lost).
    assert got == [("C-1", "Alice", "a@x.com"), ("C-2", "Bob", "b@x.com")]
    assert {i: (store.get(i)["name"], store.get(i)["email"]) for i in ("C-1", "C-2")} == {
        "C-1": ("Alice", "a@x.com"),
        "C-2": ("Bob", "b@x.com"),
    }
    assert sync(store, standin, sid).changes == 0


def test_a_first_sync_cut_short_after_adding_sheets_is_completed_with_headers(
    standin: SheetsStandIn, store: Store
) -> None:
    store.add("contacts", {"name": "Alice", "email": "a@x.com", "title": "CEO"})
    sid = standin.create_spreadsheet("CRM", {"Sheet1": []})
    standin.fail_next(10_000, 429, path_contains="values:batchUpdate")  # the sheets get added, no values
    with pytest.raises(SheetsUnavailableError):
        sync(store, standin, sid)
    standin.clear_failures()
    sync(store, standin, sid)
    [alice] = rows(standin, sid, "Contacts")
    assert (alice["ID"], alice["Name"], alice["Email"], alice["Title"]) == ("C-1", "Alice", "a@x.com", "CEO")
    assert sync(store, standin, sid).changes == 0


def test_amounts_beyond_a_double_round_trip_exactly(standin: SheetsStandIn, store: Store) -> None:
    sid = standin.create_spreadsheet("CRM", {"Deals": [["ID", "Title", "Amount"]]})
    store.add("deals", {"title": "Big", "amount": "987654321012345.67"})
    store.add("deals", {"title": "Usual", "amount": "1234.5"})
    sync(store, standin, sid)
    person_types(standin, sid, "Deals", "B2", [["Big renamed"]])  # the whole row is read again
    sync(store, standin, sid)
    assert store.get("D-1")["amount"] == "987654321012345.67" and store.get("D-1")["title"] == "Big renamed"
    assert rows(standin, sid, "Deals")[1]["Amount"] == 1234.5  # a number, where a double holds it
    assert sync(store, standin, sid).changes == 0
