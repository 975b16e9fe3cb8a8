"""Two-way sync with real .xlsx files, written and read back: what only the Excel adapter must get
right (the file is not rewritten when nothing changed, formatting and other sheets survive, a
workbook open in Excel, a killed sync, the unchanged-file shortcut).

The sync behaviour shared with Google Sheets runs against both adapters in test_sync_books.py.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
from backends import on_tinydb
from openpyxl import Workbook, load_workbook
from openpyxl.styles import Font

from crmkit.errors import CrmkitError
from crmkit.store import Store
from crmkit.sync import sync_book
from crmkit.sync.excel import ExcelBook
from crmkit.workbooks import build_template

CONTACT_HEADERS = ["ID", "Name", "Email", "Phone", "Title", "Account", "Owner", "Region"]


def make_book(path: Path, sheets: dict[str, list[list[Any]]]) -> Path:
    wb = Workbook()
    wb.remove(wb.active)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(row)
    wb.save(path)
    return path


def sheet_rows(path: Path, title: str) -> list[dict[str, Any]]:
    ws = load_workbook(path)[title]
    rows = list(ws.iter_rows(values_only=True))
    headers = [str(h) if h is not None else "" for h in rows[0]]
    return [dict(zip(headers, r, strict=False)) for r in rows[1:] if any(v is not None for v in r)]


def edit(path: Path, title: str, changes: dict[str, Any]) -> None:
    wb = load_workbook(path)
    for ref, value in changes.items():
        wb[title][ref] = value
    wb.save(path)


@pytest.fixture
def book(tmp_path: Path) -> Path:
    return make_book(
        tmp_path / "book.xlsx",
        {
            "Contacts": [
                CONTACT_HEADERS,
                [None, "Nguyễn Thị Hoa", "hoa@saomai.vn", "+84 90 123 4567", "COO", None, "linh", "South"],
                [None, "Bob Smith", "Bob@Example.com", None, "CTO", None, "ana", "North"],
            ]
        },
    )


def run_sync(store: Store, path: Path, **kwargs: Any):
    return sync_book(store, ExcelBook(path), **kwargs)


def test_second_sync_changes_nothing_and_does_not_rewrite(store: Store, book: Path) -> None:
    run_sync(store, book)
    before = book.read_bytes()
    mtime = book.stat().st_mtime_ns
    again = run_sync(store, book)
    assert again.changes == 0 and not again.book_written and not again.needs_attention
    assert book.read_bytes() == before and book.stat().st_mtime_ns == mtime
    # also through a fresh Store object (a new cron run)
    assert run_sync(Store(store.location), book).changes == 0


def test_formatting_formulas_and_other_sheets_survive(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "styled.xlsx"
    build_template(path)
    wb = load_workbook(path)
    ws = wb["Contacts"]
    ws.append([None, "Ana", "ana@example.com"])
    ws.column_dimensions["B"].width = 42
    ws["Z1"] = "Total"
    ws["Z2"] = "=LEN(B2)"
    notes = wb.create_sheet("Notes")
    notes["A1"] = "keep me"
    notes["B1"] = "=1+2"
    deals = wb["Deals"]
    deals.append([None, "Deal", None, None, None, "proposal", 1234.5, "VND"])
    deals["G2"].number_format = "#,##0.00 [$₫-42A]"
    deals["G2"].font = Font(bold=True, color="C00000")
    deals["J2"] = datetime(2026, 12, 1)
    deals["J2"].number_format = "d mmm yyyy"
    validations = len(wb["Deals"].data_validations.dataValidation)
    wb.save(path)
    run_sync(store, path)
    store.update("D-1", {"amount": "2000", "close_date": "2027-01-15"})
    store.add("deals", {"title": "New", "amount": "10", "currency": "USD"})
    run_sync(store, path)
    wb = load_workbook(path)
    assert wb["Notes"]["A1"].value == "keep me" and wb["Notes"]["B1"].value == "=1+2"
    assert wb["Contacts"]["Z2"].value == "=LEN(B2)"
    assert wb["Contacts"].column_dimensions["B"].width == 42
    # a changed amount keeps the format the person gave its cell, and its look
    g2 = wb["Deals"]["G2"]
    assert g2.value == 2000 and g2.number_format == "#,##0.00 [$₫-42A]"
    assert g2.font.b and g2.font.color.rgb == "00C00000"
    # a date crmkit writes keeps the format the person gave its cell
    assert (
        wb["Deals"]["J2"].value == datetime(2027, 1, 15) and wb["Deals"]["J2"].number_format == "d mmm yyyy"
    )
    # the new row takes the row above's look, its amount in its own currency's format (USD)
    g3 = wb["Deals"]["G3"]
    assert g3.value == 10 and g3.number_format == "#,##0.00" and g3.font.b and g3.font.color.rgb == "00C00000"
    # a currency change gives the amount the new currency's format, keeping the rest of its look
    store.update("D-1", {"currency": "USD"})
    run_sync(store, path)
    g2 = load_workbook(path)["Deals"]["G2"]
    assert g2.value == 2000 and g2.number_format == "#,##0.00" and g2.font.b
    assert len(wb["Deals"].data_validations.dataValidation) == validations
    assert wb["Contacts"].freeze_panes == "A2"
    assert isinstance(wb["Deals"]["J2"].value, (datetime, type(None)))


def test_open_in_excel_is_reported(store: Store, book: Path) -> None:
    (book.parent / ("~$" + book.name)).write_text("owner")
    with pytest.raises(CrmkitError, match="open in Excel"):
        run_sync(store, book)


_KILLED_SYNC = """
import sys
from crmkit.store import Store
from crmkit.sync import sync_book
from crmkit.sync.excel import ExcelBook
print("start", flush=True)
sync_book(Store(sys.argv[1]), ExcelBook(sys.argv[2]))
print("done", flush=True)
"""


def _contacts_book(folder: Path, count: int) -> Path:
    folder.mkdir()
    rows: list[list[Any]] = [["ID", "Name", "Email", "Title"]]
    rows += [[None, f"Person {i}", f"p{i}@example.com", f"T{i}"] for i in range(count)]
    return make_book(folder / "book.xlsx", {"Contacts": rows})


def test_killed_sync_is_completed_by_the_next_run(tmp_path: Path) -> None:
    count = 400
    started = time.perf_counter()
    run_sync(Store(tmp_path / "timing.json"), _contacts_book(tmp_path / "timing", count))
    duration = time.perf_counter() - started
    rng = random.Random()
    interrupted = 0
    for round_ in range(30):
        if round_ >= 8 and interrupted >= 4:
            break
        folder = tmp_path / f"r{round_}"
        path = _contacts_book(folder, count)
        store_path = folder / "crm.json"
        proc = subprocess.Popen(
            [sys.executable, "-c", _KILLED_SYNC, str(store_path), str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert proc.stdout is not None
        proc.stdout.readline()
        time.sleep(rng.uniform(0.0, duration))  # anywhere in the run, start to end
        proc.send_signal(signal.SIGKILL)
        out = proc.stdout.read()
        proc.wait()
        interrupted += "done" not in out
        # whatever the moment, both files are whole and the next run finishes the job
        load_workbook(path)
        store = Store(store_path)
        report = run_sync(store, path)
        assert not report.needs_attention
        ids = [r["ID"] for r in sheet_rows(path, "Contacts")]
        assert len(ids) == count and len(set(ids)) == count and None not in ids, f"round {round_}"
        assert store.count("contacts") == count, f"round {round_}"
        emails = sorted(d["email"] for d in store.all("contacts"))
        assert emails == sorted(f"p{i}@example.com" for i in range(count))
        assert all(store.get(i)["email"] == r["Email"] for i, r in zip(ids, sheet_rows(path, "Contacts"), strict=True))
        assert run_sync(store, path).changes == 0
        assert [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []
    assert interrupted >= 4, "the kills should land inside the sync"


def test_unchanged_shortcut_never_hides_a_change(store: Store, book: Path) -> None:
    run_sync(store, book)
    assert store.path.with_name(".crm.json.synced").exists() or not on_tinydb(store)
    assert run_sync(store, book).skipped_unchanged
    Store(store.location).add("contacts", {"name": "New", "email": "new@example.com"})  # another process
    report = run_sync(store, book)
    assert not report.skipped_unchanged
    assert [r["ID"] for r in sheet_rows(book, "Contacts")] == ["C-1", "C-2", "C-3"]
    assert run_sync(store, book).skipped_unchanged
    edit(book, "Contacts", {"E2": "Boss"})
    assert not run_sync(store, book).skipped_unchanged and store.get("C-1")["title"] == "Boss"
