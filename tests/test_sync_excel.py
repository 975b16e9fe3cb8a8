"""Two-way sync with real .xlsx files, written and read back."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from datetime import date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from openpyxl import Workbook, load_workbook

from crmkit.cli import main
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


def cell(path: Path, title: str, ref: str) -> Any:
    return load_workbook(path)[title][ref].value


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


def test_first_sync_creates_records_and_writes_ids_back(store: Store, book: Path) -> None:
    report = run_sync(store, book)
    contacts = sheet_rows(book, "Contacts")
    assert [r["ID"] for r in contacts] == ["C-1", "C-2"]
    hoa = store.get("C-1")
    assert (hoa["name"], hoa["email"], hoa["title"], hoa["custom"]) == (
        "Nguyễn Thị Hoa", "hoa@saomai.vn", "COO", {"Region": "South"},
    )  # fmt: skip
    summary = next(s for s in report.sheets if s.sheet == "Contacts")
    assert summary.store_added == ["C-1", "C-2"] and summary.ids_written == 2
    # the missing Leads, Deals and Invoices sheets were created with the schema's headers
    wb = load_workbook(book)
    assert {"Leads", "Deals", "Invoices", "Invoice Lines"} <= set(wb.sheetnames)
    assert [c.value for c in wb["Deals"][1]][:6] == ["ID", "Title", "Account", "Contact", "Pipeline", "Stage"]


def test_second_sync_changes_nothing_and_does_not_rewrite(store: Store, book: Path) -> None:
    run_sync(store, book)
    before = book.read_bytes()
    mtime = book.stat().st_mtime_ns
    again = run_sync(store, book)
    assert again.changes == 0 and not again.book_written and not again.needs_attention
    assert book.read_bytes() == before and book.stat().st_mtime_ns == mtime
    # also through a fresh Store object (a new cron run)
    assert run_sync(Store(store.path), book).changes == 0


def test_both_sides_changed_different_fields_of_one_row(store: Store, book: Path) -> None:
    run_sync(store, book)
    edit(book, "Contacts", {"E2": "Chief Operating Officer"})  # title, on the sheet
    store.update("C-1", {"owner": "binh"})  # owner, in the store
    report = run_sync(store, book)
    assert not report.conflicts
    assert store.get("C-1")["title"] == "Chief Operating Officer"
    assert cell(book, "Contacts", "G2") == "binh"
    assert run_sync(store, book).changes == 0


@pytest.mark.parametrize("choice", ["fail", "sheet", "store"])
def test_conflicts_under_each_choice(store: Store, book: Path, choice: str) -> None:
    run_sync(store, book)
    edit(book, "Contacts", {"E2": "Sheet title"})
    store.update("C-1", {"title": "Store title"})
    report = run_sync(store, book, on_conflict=choice)
    [conflict] = report.conflicts
    assert (conflict.sheet, conflict.row, conflict.record_id, conflict.field) == ("Contacts", 2, "C-1", "Title")
    assert (conflict.sheet_value, conflict.store_value) == ("Sheet title", "Store title")
    expected = {"fail": ("Sheet title", "Store title"), "sheet": ("Sheet title",) * 2, "store": ("Store title",) * 2}
    assert (cell(book, "Contacts", "E2"), store.get("C-1")["title"]) == expected[choice]
    assert report.needs_attention is (choice == "fail")
    # under fail the conflict stays until a person settles it, then syncs normally
    if choice == "fail":
        assert len(run_sync(store, book).conflicts) == 1
        edit(book, "Contacts", {"E2": "Store title"})
        settled = run_sync(store, book)
        assert not settled.conflicts and not settled.needs_attention


def test_conflict_exit_code_and_message_via_cli(store_path: Path, book: Path) -> None:
    runner = CliRunner()
    args = ["--store", str(store_path), "sync", str(book)]
    assert runner.invoke(main, args).exit_code == 0
    edit(book, "Contacts", {"E2": "Sheet title"})
    Store(store_path).update("C-1", {"title": "Store title"})
    result = runner.invoke(main, args)
    assert result.exit_code == 3
    assert "conflict: Contacts row 2 (C-1) Title: sheet has 'Sheet title', store has 'Store title'" in result.stderr
    data = json.loads(runner.invoke(main, [*args, "--json"]).stdout)
    assert data["needs_attention"] is True
    contacts = next(sheet for sheet in data["sheets"] if sheet["sheet"] == "Contacts")
    assert contacts["conflicts"][0]["field"] == "Title"


def test_deleted_row_archives_the_record(store: Store, book: Path) -> None:
    run_sync(store, book)
    wb = load_workbook(book)
    wb["Contacts"].delete_rows(3)
    wb.save(book)
    report = run_sync(store, book)
    summary = next(s for s in report.sheets if s.sheet == "Contacts")
    assert summary.store_archived == ["C-2"]
    assert store.get("C-2")["archived_at"]  # kept, restorable
    assert [r["ID"] for r in sheet_rows(book, "Contacts")] == ["C-1"]  # not re-added
    assert run_sync(store, book).changes == 0
    assert store.count("contacts", archived=True) == 2


def test_emptied_sheet_archives_nothing(store: Store, book: Path) -> None:
    run_sync(store, book)
    wb = load_workbook(book)
    wb["Contacts"].delete_rows(2, 2)
    wb.save(book)
    report = run_sync(store, book)
    assert store.count("contacts") == 2
    assert any("not archived" in p for s in report.sheets for p in s.problems)
    assert report.needs_attention


def test_invalid_cells_are_reported_and_left_as_typed(store: Store, tmp_path: Path) -> None:
    path = make_book(
        tmp_path / "bad.xlsx",
        {
            "Contacts": [CONTACT_HEADERS, [None, "Ana", "ana@", None, "CEO", None, "linh", None]],
            "Deals": [
                ["ID", "Title", "Stage", "Amount", "Close date"],
                [None, "Deal A", "dreaming", "12 apples", "next week"],
                [None, "Deal B", "proposal", 1500, date(2026, 12, 1)],
            ],
        },
    )
    report = run_sync(store, path)
    invalid = {(i.sheet, i.row, i.column, i.header): (i.value, i.problem) for i in report.invalid}
    assert invalid[("Contacts", 2, "C", "Email")][0] == "ana@"
    assert invalid[("Deals", 2, "C", "Stage")] == ("dreaming", invalid[("Deals", 2, "C", "Stage")][1])
    assert "must be one of" in invalid[("Deals", 2, "C", "Stage")][1]
    assert invalid[("Deals", 2, "D", "Amount")][0] == "12 apples"
    assert invalid[("Deals", 2, "E", "Close date")][0] == "next week"
    assert report.needs_attention
    # the row's other values still synced; the bad ones never reached the store
    ana = store.find("contacts")[0]
    assert ana["title"] == "CEO" and "email" not in ana
    deal_a = store.get("D-1")
    assert deal_a["title"] == "Deal A" and deal_a["stage"] == "prospecting" and "amount" not in deal_a
    assert store.get("D-2")["amount"] == "1500.00"
    # the cells keep what the person typed
    assert cell(path, "Contacts", "C2") == "ana@"
    assert (cell(path, "Deals", "C2"), cell(path, "Deals", "D2")) == ("dreaming", "12 apples")
    # fixed on the sheet, the value flows in on the next sync
    edit(path, "Contacts", {"C2": "ana@example.com"})
    fixed = run_sync(store, path)
    assert not [i for i in fixed.invalid if i.sheet == "Contacts"]
    assert store.get(ana["id"])["email"] == "ana@example.com"


def test_stage_change_on_sheet_updates_probability_on_sheet(store: Store, tmp_path: Path) -> None:
    path = make_book(
        tmp_path / "deals.xlsx",
        {"Deals": [["ID", "Title", "Stage", "Probability", "Amount"], [None, "Big", "proposal", None, 1000]]},
    )
    run_sync(store, path)
    assert cell(path, "Deals", "D2") == 50
    edit(path, "Deals", {"C2": "Closed Won"})
    run_sync(store, path)
    deal = store.get("D-1")
    assert deal["stage"] == "won" and deal["probability"] == 100
    assert cell(path, "Deals", "D2") == 100
    assert [h["stage"] for h in deal["stage_history"]] == ["proposal", "won"]
    assert deal["stage_history"][-1]["by"] == "sync:deals.xlsx"


def test_new_row_with_known_email_links_instead_of_duplicating(store: Store, book: Path) -> None:
    store.add("contacts", {"name": "Bob S.", "email": "bob@example.com", "phone": "+1 555 0100"})
    report = run_sync(store, book)
    rows = sheet_rows(book, "Contacts")
    assert [r["ID"] for r in rows] == ["C-2", "C-1"]  # Bob's row got his existing id
    assert store.count("contacts") == 2
    bob = store.get("C-1")
    assert bob["name"] == "Bob Smith" and bob["title"] == "CTO"  # the row's cells merged as edits
    assert rows[1]["Phone"] == "+1 555 0100"  # and the store filled the empty cell
    assert not report.needs_attention
    # importing the same list again never duplicates people
    wb = load_workbook(book)
    wb["Contacts"].append([None, "Bob Smith", "BOB@example.com", None, "CTO", None, "ana", "North"])
    wb.save(book)
    again = run_sync(store, book)
    [dup] = again.invalid
    assert (dup.sheet, dup.row, dup.header) == ("Contacts", 4, "Email")
    assert "C-1 on row 3" in dup.problem
    assert store.count("contacts") == 2


def test_store_records_become_rows_with_custom_fields(store: Store, book: Path) -> None:
    run_sync(store, book)
    store.add("contacts", {"name": "=HYPERLINK(\"http://evil\")", "email": "x@example.com", "Region": "East"})
    store.update("C-2", {"Region": "West"})
    run_sync(store, book)
    ws = load_workbook(book)["Contacts"]
    assert [c.value for c in ws[4]][:3] == ["C-3", '=HYPERLINK("http://evil")', "x@example.com"]
    assert ws["B4"].data_type == "s"  # text, never a formula
    assert ws["H4"].value == "East" and ws["H3"].value == "West"
    edit(book, "Contacts", {"H2": "Far South"})
    run_sync(store, book)
    assert store.get("C-1")["custom"] == {"Region": "Far South"}


def test_formula_injection_guard_on_every_prefix(store: Store, book: Path) -> None:
    run_sync(store, book)
    for i, text in enumerate(["=1+1", "+1+1", "-1+1", "@SUM(A1)"]):
        store.update("C-2", {"title": text})
        run_sync(store, book)
        ws = load_workbook(book)["Contacts"]
        assert ws["E3"].value == text and ws["E3"].data_type == "s", i


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
    deals.append([None, "Deal", None, None, None, "proposal", 1234.5])
    deals["G2"].number_format = "#,##0.00 [$₫-42A]"
    validations = len(wb["Deals"].data_validations.dataValidation)
    wb.save(path)
    run_sync(store, path)
    store.update("D-1", {"amount": "2000"})
    store.add("deals", {"title": "New", "amount": "10"})
    run_sync(store, path)
    wb = load_workbook(path)
    assert wb["Notes"]["A1"].value == "keep me" and wb["Notes"]["B1"].value == "=1+2"
    assert wb["Contacts"]["Z2"].value == "=LEN(B2)"
    assert wb["Contacts"].column_dimensions["B"].width == 42
    assert wb["Deals"]["G2"].value == 2000 and wb["Deals"]["G2"].number_format == "#,##0.00 [$₫-42A]"
    assert wb["Deals"]["G3"].number_format == "#,##0.00 [$₫-42A]"  # the new row takes the row above's format
    assert len(wb["Deals"].data_validations.dataValidation) == validations
    assert wb["Contacts"].freeze_panes == "A2"
    assert isinstance(wb["Deals"]["J2"].value, (datetime, type(None)))


def test_dates_and_money_are_real_values(store: Store, book: Path) -> None:
    run_sync(store, book)
    store.add("deals", {"title": "D", "amount": "1234.5", "close_date": "2026-12-31"})
    run_sync(store, book)
    ws = load_workbook(book)["Deals"]
    headers = [c.value for c in ws[1]]
    row = dict(zip(headers, (c for c in ws[2]), strict=False))
    assert row["Amount"].value == 1234.5 and row["Amount"].data_type == "n"
    assert isinstance(row["Close date"].value, datetime) and row["Close date"].value.date() == date(2026, 12, 31)


def test_header_variants_are_forgiven(store: Store, tmp_path: Path) -> None:
    path = make_book(
        tmp_path / "v.xlsx",
        {"contacts ": [["id", "Full Name", "E-mail", "Job Title"], [None, "Ana", "ana@example.com", "CEO"]]},
    )
    run_sync(store, path)
    ana = store.get("C-1")
    assert (ana["name"], ana["email"], ana["title"]) == ("Ana", "ana@example.com", "CEO")
    assert "custom" not in ana


def test_dry_run_writes_nothing(store: Store, book: Path) -> None:
    before = book.read_bytes()
    report = run_sync(store, book, dry_run=True)
    assert report.dry_run and next(s for s in report.sheets if s.sheet == "Contacts").store_added == ["C-1", "C-2"]
    assert book.read_bytes() == before
    assert not store.path.exists() or Store(store.path).count("contacts") == 0
    runner = CliRunner()
    result = runner.invoke(main, ["--store", str(store.path), "sync", str(book), "--dry-run", "--json"])
    assert json.loads(result.stdout)["dry_run"] is True and book.read_bytes() == before


def test_open_in_excel_is_reported(store: Store, book: Path) -> None:
    (book.parent / ("~$" + book.name)).write_text("owner")
    with pytest.raises(CrmkitError, match="open in Excel"):
        run_sync(store, book)


def test_invoice_lines_drive_totals(store: Store, tmp_path: Path) -> None:
    path = make_book(
        tmp_path / "inv.xlsx",
        {
            "Invoices": [
                ["ID", "Number", "Issue date", "Currency", "Status", "Subtotal", "Tax", "Total"],
                [None, "INV-2026-0100", date(2026, 11, 1), "USD", "sent", None, None, None],
            ],
            "Invoice Lines": [
                ["Invoice", "Description", "Quantity", "Unit price", "Tax rate"],
                ["INV-2026-0100", "Setup", 1, 500, 10],
                ["INV-2026-0100", "Hours", 3, 80, 0],
            ],
        },
    )
    run_sync(store, path, today=date(2026, 11, 5))
    invoice = store.get("I-1")
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == ("740.00", "50.00", "790.00")
    assert cell(path, "Invoices", "H2") == 790
    edit(path, "Invoice Lines", {"C3": 5})
    run_sync(store, path, today=date(2026, 11, 5))
    assert store.get("I-1")["total"] == "950.00" and cell(path, "Invoices", "H2") == 950
    # lines changed in the store are written back to the lines sheet
    store.update("I-1", {"lines": [{"description": "Flat fee", "quantity": 1, "unit_price": 100}]})
    run_sync(store, path, today=date(2026, 11, 5))
    lines = sheet_rows(path, "Invoice Lines")
    assert [(r["Invoice"], r["Description"], r["Unit price"]) for r in lines] == [("INV-2026-0100", "Flat fee", 100)]
    assert cell(path, "Invoices", "H2") == 100
    assert run_sync(store, path, today=date(2026, 11, 5)).changes == 0


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


def test_lost_id_header_leaves_the_sheet_alone(store: Store, book: Path) -> None:
    run_sync(store, book)
    edit(book, "Contacts", {"A1": "Identifier"})
    report = run_sync(store, book)
    [contacts] = [s for s in report.sheets if s.sheet == "Contacts"]
    assert contacts.problems and "no ID column" in contacts.problems[0]
    assert report.needs_attention and store.count("contacts") == 2 and store.count("contacts", archived=True) == 2
    edit(book, "Contacts", {"A1": "Contact ID"})  # a natural variant of the header
    assert not run_sync(store, book).needs_attention
    assert store.count("contacts", archived=True) == 2


def test_mistyped_id_archives_nothing(store: Store, book: Path) -> None:
    run_sync(store, book)
    edit(book, "Contacts", {"A2": "C1", "B2": "Renamed"})
    report = run_sync(store, book)
    assert report.needs_attention
    assert [i.header for i in report.invalid] == ["ID"]
    assert not store.get("C-1").get("archived_at")
    edit(book, "Contacts", {"A2": "C-1"})
    run_sync(store, book)
    assert store.get("C-1")["name"] == "Renamed"


def test_headers_not_in_the_first_column(store: Store, tmp_path: Path) -> None:
    wb = Workbook()
    ws = wb.active
    ws.title = "Contacts"
    ws["B1"], ws["C1"], ws["D1"] = "ID", "Name", "Email"
    ws["C2"], ws["D2"] = "Ana", "ana@example.com"
    path = tmp_path / "offset.xlsx"
    wb.save(path)
    run_sync(store, path)
    assert cell(path, "Contacts", "B2") == "C-1" and cell(path, "Contacts", "C2") == "Ana"
    store.update("C-1", {"email": "new@example.com"})
    run_sync(store, path)
    assert cell(path, "Contacts", "D2") == "new@example.com" and cell(path, "Contacts", "E2") is None


def test_row_deleted_then_pasted_back_is_the_same_person(store: Store, book: Path) -> None:
    run_sync(store, book)
    wb = load_workbook(book)
    wb["Contacts"].delete_rows(2)
    wb.save(book)
    run_sync(store, book)
    assert store.get("C-1")["archived_at"]
    wb = load_workbook(book)
    wb["Contacts"].append([None, "Nguyễn Thị Hoa", "hoa@saomai.vn", None, "COO", None, "linh", "South"])
    wb.save(book)
    report = run_sync(store, book)
    assert not report.needs_attention
    assert store.count("contacts", archived=True) == 2 and "archived_at" not in store.get("C-1")
    assert sorted(r["ID"] for r in sheet_rows(book, "Contacts")) == ["C-1", "C-2"]


class DiesBeforeWriting:
    """A workbook whose process dies just before the workbook is written (as a kill there would)."""

    def __init__(self, path: Path) -> None:
        self.book = ExcelBook(path)
        self.identity = self.book.identity
        self.display_name = self.book.display_name

    def fingerprint(self) -> str | None:
        return self.book.fingerprint()

    def check_writable(self) -> None:
        self.book.check_writable()

    def read(self):
        return self.book.read()

    def read_back(self, value: Any) -> Any:
        return self.book.read_back(value)

    def write(self, changes) -> None:
        raise KeyboardInterrupt("killed")


def test_run_dying_before_the_workbook_is_written_twice_then_edited(store: Store, tmp_path: Path) -> None:
    path = make_book(
        tmp_path / "deals.xlsx", {"Deals": [["ID", "Title", "Amount"], [None, "Deal one", 100], [None, "Deal two", 5]]}
    )
    for _ in range(2):  # dies twice in a row
        with pytest.raises(KeyboardInterrupt):
            sync_book(store, DiesBeforeWriting(path))
    assert store.count("deals") == 2  # made once, not twice
    edit(path, "Deals", {"C2": 250})  # a person goes on filling in the new row meanwhile
    report = run_sync(store, path)
    assert not report.needs_attention
    assert store.count("deals") == 2
    assert [(r["ID"], r["Title"], r["Amount"]) for r in sheet_rows(path, "Deals")] == [
        ("D-1", "Deal one", 250),
        ("D-2", "Deal two", 5),
    ]
    assert store.get("D-1")["amount"] == "250.00"
    assert run_sync(store, path).changes == 0


def test_unchanged_shortcut_never_hides_a_change(store: Store, book: Path) -> None:
    run_sync(store, book)
    assert store.path.with_name(".crm.json.synced").exists()
    assert run_sync(store, book).skipped_unchanged
    Store(store.path).add("contacts", {"name": "New", "email": "new@example.com"})  # another process
    report = run_sync(store, book)
    assert not report.skipped_unchanged
    assert [r["ID"] for r in sheet_rows(book, "Contacts")] == ["C-1", "C-2", "C-3"]
    assert run_sync(store, book).skipped_unchanged
    edit(book, "Contacts", {"E2": "Boss"})
    assert not run_sync(store, book).skipped_unchanged and store.get("C-1")["title"] == "Boss"


def test_invoice_turns_overdue_on_the_sheet_with_the_calendar(store: Store, tmp_path: Path) -> None:
    path = make_book(
        tmp_path / "inv.xlsx",
        {
            "Invoices": [["ID", "Issue date", "Due date", "Status"], [None, date(2026, 11, 1), date(2026, 11, 30), "sent"]],
            "Invoice Lines": [["Invoice", "Description", "Unit price"], ["I-1", "Work", 100]],
        },
    )
    run_sync(store, path, today=date(2026, 11, 20))
    run_sync(store, path, today=date(2026, 11, 20))
    assert cell(path, "Invoices", "D2") == "sent"
    report = run_sync(store, path, today=date(2026, 12, 5))  # nothing edited; a later day
    assert cell(path, "Invoices", "D2") == "overdue" and report.book_written
    assert store.get("I-1")["status"] == "sent"  # stored as set; overdue follows from the date
    assert run_sync(store, path, today=date(2026, 12, 5)).changes == 0


def test_invalid_line_cell_is_reported_and_the_invoice_keeps_its_lines(store: Store, tmp_path: Path) -> None:
    path = make_book(
        tmp_path / "inv.xlsx",
        {
            "Invoices": [["ID", "Issue date"], [None, date(2026, 11, 1)]],
            "Invoice Lines": [
                ["Invoice", "Description", "Quantity", "Unit price"],
                ["I-1", "Work", 2, 100],
                ["I-1", "More", "lots", 10],
            ],
        },
    )
    report = run_sync(store, path, today=date(2026, 11, 2))
    [bad] = report.invalid
    assert (bad.sheet, bad.row, bad.column, bad.header, bad.value) == ("Invoice Lines", 3, "C", "Quantity", "lots")
    assert "lines" not in store.get("I-1")  # not half the lines: none until the cell is fixed
    edit(path, "Invoice Lines", {"C3": 1})
    assert not run_sync(store, path, today=date(2026, 11, 2)).needs_attention
    assert store.get("I-1")["total"] == "210.00"


def test_column_added_between_syncs(store: Store, book: Path) -> None:
    run_sync(store, book)
    edit(book, "Contacts", {"I1": "Segment", "I2": "Enterprise", "E3": "VP"})
    store.update("C-1", {"owner": "binh"})
    report = run_sync(store, book)
    assert not report.needs_attention
    assert store.get("C-1")["custom"] == {"Region": "South", "Segment": "Enterprise"}
    assert store.get("C-2")["title"] == "VP" and cell(book, "Contacts", "G2") == "binh"
    assert run_sync(store, book).changes == 0
