"""``crmkit sync gsheet:KEY`` against plain gspread, on the same spreadsheet, in one run.

    python bench/bench_sync_gsheet.py [--rows 20000] [--latency 0.0] [--edit-percent 1]

The rows are the Excel benchmark's (``bench_sync_excel.build_workbook``: 40%
contacts, 30% leads, 20% deals, 10% invoices, 1-2 invoice lines each), loaded
into the local Sheets API stand-in (``crmkit.testing.sheets_standin``), which
runs in this process, so both sides pay for it alike. ``--latency`` adds that
many seconds to every request, as a network would (Google answers in roughly
0.1-0.5 s): then the number of requests is what counts.

Three syncs, each with a fresh Store and a fresh client (like a cron run),
each beside plain gspread doing the least a script would do for the same job:

a. the first sync (creates every record, writes the IDs back) vs gspread
   reading every sheet (``get_all_values`` per worksheet) and writing one
   column of IDs per sheet in one ``batch_update``;
b. after a person edits 1% of the rows (Owner cells), a re-sync vs gspread
   reading every sheet in one ``values_batch_get``, unformatted;
c. a re-sync with nothing changed vs that same read.

For each: seconds and requests (the API allows about 60 a minute per user).
"""

from __future__ import annotations

import argparse
import os
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from python_calamine import CalamineWorkbook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_sync_excel import OWNERS, build_workbook

from crmkit.config import SheetsSettings
from crmkit.store import Store
from crmkit.sync import SyncReport, sync_book
from crmkit.sync.google import connect
from crmkit.sync.gsheet import GoogleSheetBook, quote_title
from crmkit.testing.sheets_standin import SheetsStandIn, gspread_client

T = TypeVar("T")
SHEETS = ("Contacts", "Leads", "Deals", "Invoices", "Invoice Lines")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


def seed(standin: SheetsStandIn, rows: int, folder: Path) -> str:
    """The Excel benchmark's rows, as a spreadsheet in the stand-in; returns its id."""
    path = folder / "seed.xlsx"
    build_workbook(path, rows)
    book = CalamineWorkbook.from_path(str(path))
    sheets: dict[str, list[list[Any]]] = {}
    for title in SHEETS:
        values = book.get_sheet_by_name(title).to_python(skip_empty_area=False)
        sheets[title] = [[None if v == "" else v for v in row] for row in values if any(v != "" for v in row)]
    return standin.create_spreadsheet("crmkit bench", sheets)


def crmkit_sync(standin: SheetsStandIn, store_path: Path, sid: str) -> tuple[SyncReport, int]:
    client, creds = connect(SheetsSettings(endpoint=standin.base_url), env={})
    report = sync_book(Store(store_path), GoogleSheetBook(sid, client, creds))
    return report, client.requests_sent


def gspread_read_and_write_ids(standin: SheetsStandIn, sid: str) -> int:
    """What a script does for (a) with gspread alone: read each sheet, write an ID column back."""
    spreadsheet = gspread_client(standin.base_url).open_by_key(sid)
    data = []
    for ws in spreadsheet.worksheets():
        values = ws.get_all_values()
        ids = [[f"X-{i}"] for i in range(1, len(values))]
        data.append({"range": f"{quote_title(ws.title)}!A2:A{len(values)}", "values": ids})
    spreadsheet.values_batch_update({"valueInputOption": "RAW", "data": data})
    return sum(len(d["values"]) for d in data)


def gspread_read_all(standin: SheetsStandIn, sid: str) -> int:
    """What a script does to read every sheet with gspread, in the fewest requests."""
    spreadsheet = gspread_client(standin.base_url).open_by_key(sid)
    titles = [ws.title for ws in spreadsheet.worksheets()]
    params = {"valueRenderOption": "UNFORMATTED_VALUE", "dateTimeRenderOption": "SERIAL_NUMBER"}
    answer = spreadsheet.values_batch_get([quote_title(t) for t in titles], params=params)
    return sum(len(r.get("values", [])) for r in answer["valueRanges"])


def edit_owners(standin: SheetsStandIn, sid: str, percent: float) -> int:
    """A person changes the Owner of ``percent``% of the rows of each record sheet."""
    spreadsheet = gspread_client(standin.base_url).open_by_key(sid)
    rng = random.Random(7)
    data = []
    for title in SHEETS[:4]:
        values = spreadsheet.worksheet(title).get_all_values()
        column = values[0].index("Owner")
        letter = chr(ord("A") + column)
        for row in rng.sample(range(2, len(values) + 1), max(1, int((len(values) - 1) * percent / 100))):
            data.append(
                {"range": f"{quote_title(title)}!{letter}{row}", "values": [[rng.choice(OWNERS) + "2"]]}
            )
    spreadsheet.values_batch_update({"valueInputOption": "USER_ENTERED", "data": data})
    return len(data)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--rows", type=int, default=20000)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds added to every request")
    parser.add_argument("--edit-percent", type=float, default=1.0)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp, SheetsStandIn() as standin:
        folder = Path(tmp)
        print(
            f"python {sys.version.split()[0]}, {os.cpu_count()} cores, {args.rows} rows, "
            f"latency {args.latency:.2f} s per request"
        )
        seconds, sid = timed(lambda: seed(standin, args.rows, folder))
        plain_sid = standin.create_spreadsheet("baseline", {t: standin.sheet_values(sid, t) for t in SHEETS})
        print(f"seeded the stand-in in {seconds:.1f} s")
        standin.latency = args.latency
        store_path = folder / "crm.json"
        print()
        print(f"{'':34}{'crmkit':>10}{'requests':>10}{'gspread':>10}{'requests':>10}{'ratio':>8}")

        def phase(name: str, baseline: Callable[[], Any], baseline_sid: str) -> SyncReport:
            standin.reset_counts()
            ours, (report, _) = timed(lambda: crmkit_sync(standin, store_path, sid))
            our_requests = standin.request_count
            standin.reset_counts()
            theirs, _ = timed(baseline)
            their_requests = standin.request_count
            print(
                f"{name:34}{ours:>9.2f}s{our_requests:>10}{theirs:>9.2f}s{their_requests:>10}"
                f"{ours / theirs:>7.2f}x"
            )
            return report

        first = phase(
            "a. first sync / read + write IDs",
            lambda: gspread_read_and_write_ids(standin, plain_sid),
            plain_sid,
        )
        edited = edit_owners(standin, sid, args.edit_percent)
        second = phase(f"b. {edited} owners edited / read all", lambda: gspread_read_all(standin, sid), sid)
        third = phase("c. nothing changed / read all", lambda: gspread_read_all(standin, sid), sid)
        print()
        print(
            f"changes: a {first.changes}, b {second.changes} "
            f"({sum(len(s.store_updated) for s in second.sheets)} records updated), c {third.changes}"
        )
        problems = []
        if sum(len(s.store_added) for s in first.sheets) != args.rows:
            problems.append("a: not every row became a record")
        if sum(len(s.store_updated) for s in second.sheets) != edited:
            problems.append(f"b: expected {edited} updated records")
        if third.changes:
            problems.append("c: changes where there were none")
        print(
            f"peak RSS (process, stand-in included): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )
        print("overall: " + ("FAIL: " + "; ".join(problems) if problems else "PASS (counts as expected)"))
        return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
