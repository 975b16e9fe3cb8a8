"""Two-way sync behaviour, the same for every kind of workbook: each test runs against a real
.xlsx file and against a Google spreadsheet (the real gspread client and crmkit's adapter,
talking to the local Sheets API stand-in). See sheetbooks.py for what a test can do to a book.

What only one adapter must get right is in test_sync_excel.py and test_sync_gsheet.py.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from sheetbooks import Book, Books, run_sync

from crmkit.cli import main
from crmkit.store import Store
from crmkit.sync import SheetBook, sync_book

CONTACT_HEADERS = ["ID", "Name", "Email", "Phone", "Title", "Account", "Owner", "Region"]


@pytest.fixture
def book(books: Books) -> Book:
    return books.make(
        {
            "Contacts": [
                CONTACT_HEADERS,
                [None, "Nguyễn Thị Hoa", "hoa@saomai.vn", "+84 90 123 4567", "COO", None, "linh", "South"],
                [None, "Bob Smith", "Bob@Example.com", None, "CTO", None, "ana", "North"],
            ]
        },
    )


def cli(store_path: Path | str, book: Book, *args: str) -> Any:
    return CliRunner().invoke(
        main, ["--store", str(store_path), "sync", book.target, *args], env=book.cli_env
    )


def test_first_sync_creates_records_and_writes_ids_back(store: Store, book: Book) -> None:
    report = run_sync(store, book)
    contacts = book.rows("Contacts")
    assert [r["ID"] for r in contacts] == ["C-1", "C-2"]
    hoa = store.get("C-1")
    assert (hoa["name"], hoa["email"], hoa["title"], hoa["custom"]) == (
        "Nguyễn Thị Hoa", "hoa@saomai.vn", "COO", {"Region": "South"},
    )  # fmt: skip
    summary = next(s for s in report.sheets if s.sheet == "Contacts")
    assert summary.store_added == ["C-1", "C-2"] and summary.ids_written == 2
    # the missing Leads, Deals and Invoices sheets were created with the schema's headers
    assert {"Leads", "Deals", "Invoices", "Invoice Lines"} <= set(book.titles())
    assert book.values("Deals")[0][:6] == ["ID", "Title", "Account", "Contact", "Pipeline", "Stage"]


def test_second_sync_changes_nothing_and_writes_nothing(store: Store, book: Book) -> None:
    run_sync(store, book)
    mark = book.mark()
    again = run_sync(store, book)
    assert again.changes == 0 and not again.book_written and not again.needs_attention
    # xlsx: the file's bytes and mtime are as they were; gsheet: not one write request was sent
    assert book.writes_since(mark) == []
    # only a workbook that can tell it is unchanged skips reading it (Google's cannot)
    assert again.skipped_unchanged is book.fingerprinted
    # also through a fresh Store object (a new cron run)
    assert run_sync(Store(store.location), book).changes == 0
    assert book.writes_since(mark) == []


def test_both_sides_changed_different_fields_of_one_row(store: Store, book: Book) -> None:
    run_sync(store, book)
    book.edit("Contacts", {"E2": "Chief Operating Officer"})  # title, on the sheet
    store.update("C-1", {"owner": "binh"})  # owner, in the store
    report = run_sync(store, book)
    assert not report.conflicts
    assert store.get("C-1")["title"] == "Chief Operating Officer"
    assert book.cell("Contacts", "G2") == "binh"
    assert run_sync(store, book).changes == 0


@pytest.mark.parametrize("choice", ["fail", "sheet", "store"])
def test_conflicts_under_each_choice(store: Store, book: Book, choice: str) -> None:
    run_sync(store, book)
    book.edit("Contacts", {"E2": "Sheet title"})
    store.update("C-1", {"title": "Store title"})
    report = run_sync(store, book, on_conflict=choice)
    [conflict] = report.conflicts
    assert (conflict.sheet, conflict.row, conflict.record_id, conflict.field) == (
        "Contacts",
        2,
        "C-1",
        "Title",
    )
    assert (conflict.sheet_value, conflict.store_value) == ("Sheet title", "Store title")
    expected = {
        "fail": ("Sheet title", "Store title"),
        "sheet": ("Sheet title",) * 2,
        "store": ("Store title",) * 2,
    }
    assert (book.cell("Contacts", "E2"), store.get("C-1")["title"]) == expected[choice]
    assert report.needs_attention is (choice == "fail")
    # under fail the conflict stays until a person settles it, then syncs normally
    if choice == "fail":
        assert len(run_sync(store, book).conflicts) == 1
        book.edit("Contacts", {"E2": "Store title"})
        settled = run_sync(store, book)
        assert not settled.conflicts and not settled.needs_attention


def test_conflict_exit_code_and_message_via_cli(store_path: Path, book: Book) -> None:
    assert cli(store_path, book).exit_code == 0
    book.edit("Contacts", {"E2": "Sheet title"})
    Store(store_path).update("C-1", {"title": "Store title"})
    result = cli(store_path, book)
    assert result.exit_code == 3
    # both sides changed the title since the last sync: the line says what each did
    assert (
        "conflict: Contacts row 2 (C-1) Title: sheet changed 'COO' → 'Sheet title', "
        "store changed 'COO' → 'Store title'; neither kept (use --on-conflict sheet|store)"
    ) in result.stderr
    data = json.loads(cli(store_path, book, "--json").stdout)
    assert data["needs_attention"] is True
    contacts = next(sheet for sheet in data["sheets"] if sheet["sheet"] == "Contacts")
    assert contacts["conflicts"][0]["field"] == "Title"
    assert (contacts["conflicts"][0]["base_value"], contacts["conflicts"][0]["base"]) == ("COO", "agreed")


def test_deleted_row_archives_the_record(store: Store, book: Book) -> None:
    run_sync(store, book)
    book.delete_rows("Contacts", 3)
    report = run_sync(store, book)
    summary = next(s for s in report.sheets if s.sheet == "Contacts")
    assert summary.store_archived == ["C-2"]
    assert store.get("C-2")["archived_at"]  # kept, restorable
    assert [r["ID"] for r in book.rows("Contacts")] == ["C-1"]  # not re-added
    assert run_sync(store, book).changes == 0
    assert store.count("contacts", archived=True) == 2


def test_emptied_sheet_archives_nothing(store: Store, book: Book) -> None:
    run_sync(store, book)
    book.delete_rows("Contacts", 2, 2)
    report = run_sync(store, book)
    assert store.count("contacts") == 2
    assert any("not archived" in p for s in report.sheets for p in s.problems)
    assert report.needs_attention


def test_invalid_cells_are_reported_and_left_as_typed(store: Store, books: Books) -> None:
    book = books.make(
        {
            "Contacts": [CONTACT_HEADERS, [None, "Ana", "ana@", None, "CEO", None, "linh", None]],
            "Deals": [
                ["ID", "Title", "Stage", "Amount", "Close date"],
                [None, "Deal A", "dreaming", "12 apples", "next week"],
                [None, "Deal B", "proposal", 1500, date(2026, 12, 1)],
            ],
        },
        name="bad",
    )
    report = run_sync(store, book)
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
    assert book.cell("Contacts", "C2") == "ana@"
    assert (book.cell("Deals", "C2"), book.cell("Deals", "D2")) == ("dreaming", "12 apples")
    # fixed on the sheet, the value flows in on the next sync
    book.edit("Contacts", {"C2": "ana@example.com"})
    fixed = run_sync(store, book)
    assert not [i for i in fixed.invalid if i.sheet == "Contacts"]
    assert store.get(ana["id"])["email"] == "ana@example.com"


def test_stage_change_on_sheet_updates_probability_on_sheet(store: Store, books: Books) -> None:
    book = books.make(
        {"Deals": [["ID", "Title", "Stage", "Probability", "Amount"], [None, "Big", "proposal", None, 1000]]},
        name="deals",
    )
    run_sync(store, book)
    assert book.cell("Deals", "D2") == 50
    book.edit("Deals", {"C2": "Closed Won"})
    run_sync(store, book)
    deal = store.get("D-1")
    assert deal["stage"] == "won" and deal["probability"] == 100
    assert book.cell("Deals", "D2") == 100
    assert [h["stage"] for h in deal["stage_history"]] == ["proposal", "won"]
    # "sync:deals.xlsx" for the file; "sync:gsheet:<key>" for the spreadsheet
    assert deal["stage_history"][-1]["by"] == f"sync:{book.display_name}"
    if book.kind == "xlsx":
        assert deal["stage_history"][-1]["by"] == "sync:deals.xlsx"


def test_new_row_with_known_email_links_instead_of_duplicating(store: Store, book: Book) -> None:
    store.add("contacts", {"name": "Bob S.", "email": "bob@example.com", "phone": "+1 555 0100"})
    report = run_sync(store, book)
    rows = book.rows("Contacts")
    assert [r["ID"] for r in rows] == ["C-2", "C-1"]  # Bob's row got his existing id
    assert store.count("contacts") == 2
    bob = store.get("C-1")
    assert bob["name"] == "Bob Smith" and bob["title"] == "CTO"  # the row's cells merged as edits
    assert rows[1]["Phone"] == "+1 555 0100"  # and the store filled the empty cell
    assert not report.needs_attention
    # importing the same list again never duplicates people
    book.append_row("Contacts", [None, "Bob Smith", "BOB@example.com", None, "CTO", None, "ana", "North"])
    again = run_sync(store, book)
    [dup] = again.invalid
    assert (dup.sheet, dup.row, dup.header) == ("Contacts", 4, "Email")
    assert "C-1 on row 3" in dup.problem
    assert store.count("contacts") == 2


def test_store_records_become_rows_with_custom_fields(store: Store, book: Book) -> None:
    run_sync(store, book)
    store.add("contacts", {"name": '=HYPERLINK("http://evil")', "email": "x@example.com", "Region": "East"})
    store.update("C-2", {"Region": "West"})
    run_sync(store, book)
    assert book.values("Contacts")[3][:3] == ["C-3", '=HYPERLINK("http://evil")', "x@example.com"]
    assert book.is_text("Contacts", "B4")  # text, never a formula
    assert book.cell("Contacts", "H4") == "East" and book.cell("Contacts", "H3") == "West"
    book.edit("Contacts", {"H2": "Far South"})
    run_sync(store, book)
    assert store.get("C-1")["custom"] == {"Region": "Far South"}


def test_formula_injection_guard_on_every_prefix(store: Store, book: Book) -> None:
    run_sync(store, book)
    for i, text in enumerate(["=1+1", "+1+1", "-1+1", "@SUM(A1)"]):
        store.update("C-2", {"title": text})
        run_sync(store, book)
        # gsheet: the stored cell is the text itself, not a Formula (which would read as 2 or #NAME?)
        assert book.cell("Contacts", "E3") == text and book.is_text("Contacts", "E3"), i


def test_dates_and_money_are_real_values(store: Store, book: Book) -> None:
    run_sync(store, book)
    store.add("deals", {"title": "D", "amount": "1234.5", "close_date": "2026-12-31"})
    run_sync(store, book)
    amount, close_date = book.ref("Deals", "Amount", 2), book.ref("Deals", "Close date", 2)
    assert book.cell("Deals", amount) == 1234.5 and book.is_number("Deals", amount)
    # xlsx: a datetime cell; gsheet: a serial number in a cell whose number format is DATE
    assert book.is_date("Deals", close_date) and book.cell("Deals", close_date) == date(2026, 12, 31)


def test_header_variants_are_forgiven(store: Store, books: Books) -> None:
    book = books.make(
        {"contacts ": [["id", "Full Name", "E-mail", "Job Title"], [None, "Ana", "ana@example.com", "CEO"]]},
        name="v",
    )
    run_sync(store, book)
    ana = store.get("C-1")
    assert (ana["name"], ana["email"], ana["title"]) == ("Ana", "ana@example.com", "CEO")
    assert "custom" not in ana


def test_dry_run_writes_nothing(store: Store, book: Book) -> None:
    mark = book.mark()
    report = run_sync(store, book, dry_run=True)
    assert report.dry_run and next(s for s in report.sheets if s.sheet == "Contacts").store_added == [
        "C-1",
        "C-2",
    ]
    assert book.writes_since(mark) == []  # xlsx: the same bytes; gsheet: no write request
    assert not store.exists_on_disk() or Store(store.location).count("contacts") == 0
    result = cli(store.location, book, "--dry-run", "--json")
    assert json.loads(result.stdout)["dry_run"] is True and book.writes_since(mark) == []


def test_invoice_lines_drive_totals(store: Store, books: Books) -> None:
    book = books.make(
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
        name="inv",
    )
    run_sync(store, book, today=date(2026, 11, 5))
    invoice = store.get("I-1")
    assert (invoice["subtotal"], invoice["tax"], invoice["total"]) == ("740.00", "50.00", "790.00")
    assert book.cell("Invoices", "H2") == 790
    book.edit("Invoice Lines", {"C3": 5})
    run_sync(store, book, today=date(2026, 11, 5))
    assert store.get("I-1")["total"] == "950.00" and book.cell("Invoices", "H2") == 950
    # lines changed in the store are written back to the lines sheet
    store.update("I-1", {"lines": [{"description": "Flat fee", "quantity": 1, "unit_price": 100}]})
    run_sync(store, book, today=date(2026, 11, 5))
    lines = book.rows("Invoice Lines")
    assert [(r["Invoice"], r["Description"], r["Unit price"]) for r in lines] == [
        ("INV-2026-0100", "Flat fee", 100)
    ]
    assert book.cell("Invoices", "H2") == 100
    assert run_sync(store, book, today=date(2026, 11, 5)).changes == 0


def test_lost_id_header_leaves_the_sheet_alone(store: Store, book: Book) -> None:
    run_sync(store, book)
    book.edit("Contacts", {"A1": "Identifier"})
    report = run_sync(store, book)
    [contacts] = [s for s in report.sheets if s.sheet == "Contacts"]
    assert contacts.problems and "no ID column" in contacts.problems[0]
    assert (
        report.needs_attention
        and store.count("contacts") == 2
        and store.count("contacts", archived=True) == 2
    )
    book.edit("Contacts", {"A1": "Contact ID"})  # a natural variant of the header
    assert not run_sync(store, book).needs_attention
    assert store.count("contacts", archived=True) == 2


def test_mistyped_id_archives_nothing(store: Store, book: Book) -> None:
    run_sync(store, book)
    book.edit("Contacts", {"A2": "C1", "B2": "Renamed"})
    report = run_sync(store, book)
    assert report.needs_attention
    assert [i.header for i in report.invalid] == ["ID"]
    assert not store.get("C-1").get("archived_at")
    book.edit("Contacts", {"A2": "C-1"})
    run_sync(store, book)
    assert store.get("C-1")["name"] == "Renamed"


def test_headers_not_in_the_first_column(store: Store, books: Books) -> None:
    book = books.make(
        {"Contacts": [[None, "ID", "Name", "Email"], [None, None, "Ana", "ana@example.com"]]}, name="offset"
    )
    run_sync(store, book)
    assert book.cell("Contacts", "B2") == "C-1" and book.cell("Contacts", "C2") == "Ana"
    store.update("C-1", {"email": "new@example.com"})
    run_sync(store, book)
    assert book.cell("Contacts", "D2") == "new@example.com" and book.cell("Contacts", "E2") is None


def test_row_deleted_then_pasted_back_is_the_same_person(store: Store, book: Book) -> None:
    run_sync(store, book)
    book.delete_rows("Contacts", 2)
    run_sync(store, book)
    assert store.get("C-1")["archived_at"]
    book.append_row("Contacts", [None, "Nguyễn Thị Hoa", "hoa@saomai.vn", None, "COO", None, "linh", "South"])
    report = run_sync(store, book)
    assert not report.needs_attention
    assert store.count("contacts", archived=True) == 2 and "archived_at" not in store.get("C-1")
    assert sorted(r["ID"] for r in book.rows("Contacts")) == ["C-1", "C-2"]


class DiesBeforeWriting:
    """A workbook whose process dies just before the workbook is written (as a kill there would)."""

    def __init__(self, book: SheetBook) -> None:
        self.book = book
        self.identity = book.identity
        self.display_name = book.display_name

    def fingerprint(self) -> str | None:
        return self.book.fingerprint()

    def check_writable(self) -> None:
        self.book.check_writable()

    def read(self) -> Any:
        return self.book.read()

    def read_back(self, value: Any) -> Any:
        return self.book.read_back(value)

    def write(self, changes: Any) -> None:
        raise KeyboardInterrupt("killed")


def test_run_dying_before_the_workbook_is_written_twice_then_edited(store: Store, books: Books) -> None:
    book = books.make(
        {"Deals": [["ID", "Title", "Amount"], [None, "Deal one", 100], [None, "Deal two", 5]]}, name="deals"
    )
    mark = book.mark()
    for _ in range(2):  # dies twice in a row
        with pytest.raises(KeyboardInterrupt):
            sync_book(store, DiesBeforeWriting(book.open()))
    assert book.writes_since(mark) == []
    assert store.count("deals") == 2  # made once, not twice
    book.edit("Deals", {"C2": 250})  # a person goes on filling in the new row meanwhile
    report = run_sync(store, book)
    assert not report.needs_attention
    assert store.count("deals") == 2
    assert [(r["ID"], r["Title"], r["Amount"]) for r in book.rows("Deals")] == [
        ("D-1", "Deal one", 250),
        ("D-2", "Deal two", 5),
    ]
    assert store.get("D-1")["amount"] == "250.00"
    assert run_sync(store, book).changes == 0


def test_unchanged_runs_write_nothing_and_never_hide_a_change(store: Store, book: Book) -> None:
    run_sync(store, book)
    mark = book.mark()
    # skipped without reading only where the workbook can tell it is unchanged (not Google's)
    assert run_sync(store, book).skipped_unchanged is book.fingerprinted
    assert book.writes_since(mark) == []
    Store(store.location).add("contacts", {"name": "New", "email": "new@example.com"})  # another process
    report = run_sync(store, book)
    assert not report.skipped_unchanged
    assert [r["ID"] for r in book.rows("Contacts")] == ["C-1", "C-2", "C-3"]
    mark = book.mark()
    assert run_sync(store, book).skipped_unchanged is book.fingerprinted
    assert book.writes_since(mark) == []
    book.edit("Contacts", {"E2": "Boss"})
    assert not run_sync(store, book).skipped_unchanged and store.get("C-1")["title"] == "Boss"


def test_invoice_turns_overdue_on_the_sheet_with_the_calendar(store: Store, books: Books) -> None:
    book = books.make(
        {
            "Invoices": [
                ["ID", "Issue date", "Due date", "Status"],
                [None, date(2026, 11, 1), date(2026, 11, 30), "sent"],
            ],
            "Invoice Lines": [["Invoice", "Description", "Unit price"], ["I-1", "Work", 100]],
        },
        name="inv",
    )
    run_sync(store, book, today=date(2026, 11, 20))
    run_sync(store, book, today=date(2026, 11, 20))
    assert book.cell("Invoices", "D2") == "sent"
    report = run_sync(store, book, today=date(2026, 12, 5))  # nothing edited; a later day
    assert book.cell("Invoices", "D2") == "overdue" and report.book_written
    assert store.get("I-1")["status"] == "sent"  # stored as set; overdue follows from the date
    assert run_sync(store, book, today=date(2026, 12, 5)).changes == 0


def test_invalid_line_cell_is_reported_and_the_invoice_keeps_its_lines(store: Store, books: Books) -> None:
    book = books.make(
        {
            "Invoices": [["ID", "Issue date"], [None, date(2026, 11, 1)]],
            "Invoice Lines": [
                ["Invoice", "Description", "Quantity", "Unit price"],
                ["I-1", "Work", 2, 100],
                ["I-1", "More", "lots", 10],
            ],
        },
        name="inv",
    )
    report = run_sync(store, book, today=date(2026, 11, 2))
    [bad] = report.invalid
    assert (bad.sheet, bad.row, bad.column, bad.header, bad.value) == (
        "Invoice Lines",
        3,
        "C",
        "Quantity",
        "lots",
    )
    assert "lines" not in store.get("I-1")  # not half the lines: none until the cell is fixed
    book.edit("Invoice Lines", {"C3": 1})
    assert not run_sync(store, book, today=date(2026, 11, 2)).needs_attention
    assert store.get("I-1")["total"] == "210.00"


def test_column_added_between_syncs(store: Store, book: Book) -> None:
    run_sync(store, book)
    book.edit("Contacts", {"I1": "Segment", "I2": "Enterprise", "E3": "VP"})
    store.update("C-1", {"owner": "binh"})
    report = run_sync(store, book)
    assert not report.needs_attention
    assert store.get("C-1")["custom"] == {"Region": "South", "Segment": "Enterprise"}
    assert store.get("C-2")["title"] == "VP" and book.cell("Contacts", "G2") == "binh"
    assert run_sync(store, book).changes == 0


def test_amounts_beyond_a_double_survive_an_edit_of_their_row(store: Store, books: Books) -> None:
    book = books.make({"Deals": [["ID", "Title", "Amount"]]})
    store.add("deals", {"title": "Big", "amount": "987654321012345.67"})
    store.add("deals", {"title": "Usual", "amount": "1234.5"})
    run_sync(store, book)
    assert book.cell("Deals", "C3") == 1234.5 and book.is_number(
        "Deals", "C3"
    )  # a number where a double holds it
    book.edit("Deals", {"B2": "Big renamed"})  # the whole row is read and parsed again
    run_sync(store, book)
    assert store.get("D-1")["amount"] == "987654321012345.67" and store.get("D-1")["title"] == "Big renamed"
    assert run_sync(store, book).changes == 0
