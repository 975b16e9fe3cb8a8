"""Sync fixes found while trying it (issue 12), each against a real .xlsx file and a Google
spreadsheet on the Sheets API stand-in (see sheetbooks.py):

1. fixing an invalid cell simply syncs: the store's value only stood in for it;
2. a conflict line says what each side changed since the last sync;
3. numbers and dates typed as text are written back as real numbers and dates, once;
4. money cells take their row's currency format;
5. a tab with a crmkit sheet's name that is not a crmkit table is never written into, and
   ``sheet_names`` syncs crmkit's sheet with a tab of another name.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from openpyxl import Workbook, load_workbook
from openpyxl.chart import BarChart, Reference
from sheetbooks import Book, Books, GoogleBook, XlsxBook, run_sync

from crmkit.cli import main
from crmkit.errors import CrmkitError
from crmkit.store import Store
from crmkit.sync import SheetBook, SyncReport
from crmkit.sync.model import SheetChanges, SheetTable
from crmkit.testing.sheets_standin import gspread_client

DEAL_HEADERS = ["ID", "Title", "Stage", "Amount", "Currency", "Close date"]


def cli(store_path: Path, book: Book, *args: str) -> Any:
    return CliRunner().invoke(
        main, ["--store", str(store_path), "sync", book.target, *args], env=book.cli_env
    )


def as_text(book: Book, text: str) -> str:
    """What a person types to keep ``text`` as text: Google Sheets needs the leading apostrophe."""
    return "'" + text if book.kind == "gsheet" else text


def number_format(book: Book, title: str, ref: str) -> str | None:
    """The number format the cell shows (its pattern, on Google)."""
    if isinstance(book, XlsxBook):
        return str(load_workbook(book.path)[title][ref].number_format)
    assert isinstance(book, GoogleBook)
    found = book.standin.cell_format(book.spreadsheet_id, title, int(ref[1:]), ref[0])
    return None if found is None else found.get("pattern")


def rename_tab(book: Book, old: str, new: str) -> None:
    """A person renames a tab."""
    if isinstance(book, XlsxBook):
        wb = load_workbook(book.path)
        wb[old].title = new
        wb.save(book.path)
    else:
        assert isinstance(book, GoogleBook)
        gc = gspread_client(book.standin.base_url)
        gc.open_by_key(book.spreadsheet_id).worksheet(old).update_title(new)


def deals_book(books: Books, *rows: list[Any]) -> Book:
    return books.make({"Deals": [DEAL_HEADERS, *[list(r) for r in rows]]}, name="deals")


# -- 1. fixing an invalid cell ----------------------------------------------------------------


def test_fixing_an_invalid_cell_of_a_new_row_syncs(store: Store, books: Books) -> None:
    book = deals_book(books, [None, "Harbour", "maybe", 100, "USD"])
    first = run_sync(store, book)
    [bad] = first.invalid
    assert (bad.header, bad.value) == ("Stage", "maybe")
    assert store.get("D-1")["stage"] == "prospecting"  # made with the default stage
    assert book.cell("Deals", "C2") == "maybe"  # the cell keeps what was typed
    assert run_sync(store, book).needs_attention  # reported until fixed
    book.edit("Deals", {"C2": "negotiation"})  # fixed, as the report asked
    fixed = run_sync(store, book)
    assert not fixed.conflicts and not fixed.invalid and not fixed.needs_attention
    assert store.get("D-1")["stage"] == "negotiation"
    assert book.cell("Deals", "C2") == "negotiation"
    mark = book.mark()
    again = run_sync(store, book)
    assert again.changes == 0 and not again.needs_attention and book.writes_since(mark) == []


def test_fixing_an_invalid_cell_of_a_new_row_after_the_store_changed_it_is_a_conflict(
    store: Store, books: Books
) -> None:
    book = deals_book(books, [None, "Harbour", "maybe", 100, "USD"])
    run_sync(store, book)
    store.update("D-1", {"stage": "won"})
    run_sync(store, book)  # the cell is still invalid: the store's change waits, the cell is kept
    assert book.cell("Deals", "C2") == "maybe"
    book.edit("Deals", {"C2": "negotiation"})
    report = run_sync(store, book)
    [conflict] = report.conflicts
    assert (conflict.sheet_value, conflict.store_value, conflict.base_value) == (
        "negotiation",
        "won",
        "prospecting",
    )
    assert conflict.base == "invalid" and report.needs_attention
    assert str(conflict) == (
        "Deals row 2 (D-1) Stage: sheet now has 'negotiation' (its cell was invalid at the last sync), "
        "store changed 'prospecting' → 'won'; neither kept (use --on-conflict sheet|store)"
    )
    assert len(run_sync(store, book).conflicts) == 1  # until a person settles it
    assert run_sync(store, book, on_conflict="sheet").conflicts[0].resolution == "sheet"
    assert store.get("D-1")["stage"] == "negotiation"
    assert not run_sync(store, book).needs_attention


def test_fixing_an_invalid_cell_of_an_existing_record_syncs(store: Store, books: Books) -> None:
    book = deals_book(
        books, [None, "Harbour", "proposal", 100, "USD"], [None, "Quay", "proposal", 200, "USD"]
    )
    run_sync(store, book)
    book.edit("Deals", {"C2": "maybe", "C3": "perhaps"})
    report = run_sync(store, book)
    assert {i.value for i in report.invalid} == {"maybe", "perhaps"}
    assert store.get("D-1")["stage"] == store.get("D-2")["stage"] == "proposal"  # kept its old value
    store.update("D-2", {"stage": "won"})  # the store changes one of them meanwhile
    run_sync(store, book)
    book.edit("Deals", {"C2": "negotiation", "C3": "lost"})
    fixed = run_sync(store, book)
    # D-1: only the sheet changed the stage since it was agreed; D-2: both did
    assert store.get("D-1")["stage"] == "negotiation" and book.cell("Deals", "C2") == "negotiation"
    [conflict] = fixed.conflicts
    assert conflict.record_id == "D-2" and conflict.base == "agreed"
    assert str(conflict) == (
        "Deals row 3 (D-2) Stage: sheet changed 'proposal' → 'lost', store changed 'proposal' → 'won'; "
        "neither kept (use --on-conflict sheet|store)"
    )
    assert not fixed.invalid


# -- 2. conflict lines --------------------------------------------------------------------------


@pytest.mark.parametrize(("choice", "kept"), [("sheet", "sheet value kept"), ("store", "store value kept")])
def test_a_conflict_line_names_both_changes_and_the_side_kept(
    store: Store, books: Books, choice: str, kept: str
) -> None:
    book = deals_book(books, [None, "Harbour", "prospecting", 100, "USD"])
    run_sync(store, book)
    book.edit("Deals", {"C2": "negotiation"})
    store.update("D-1", {"stage": "won"})
    [conflict] = run_sync(store, book, on_conflict=choice).conflicts
    assert str(conflict) == (
        "Deals row 2 (D-1) Stage: sheet changed 'prospecting' → 'negotiation', "
        f"store changed 'prospecting' → 'won'; {kept}"
    )
    assert conflict.as_json() == {
        "sheet": "Deals",
        "row": 2,
        "id": "D-1",
        "field": "Stage",
        "sheet_value": "negotiation",
        "store_value": "won",
        "resolution": choice,
        "base_value": "prospecting",
        "base": "agreed",
    }


def test_a_row_and_a_record_meeting_for_the_first_time_say_there_is_nothing_to_compare(
    store: Store, store_path: Path, books: Books
) -> None:
    store.add("deals", {"title": "Harbour", "stage": "won"})
    book = deals_book(books, ["D-1", "Harbour", "negotiation", None, None])  # a workbook from elsewhere
    result = cli(store_path, book)
    assert result.exit_code == 3
    assert (
        "conflict: Deals row 2 (D-1) Stage: sheet has 'negotiation', store has 'won', "
        "no earlier sync to compare; neither kept (use --on-conflict sheet|store)"
    ) in result.stderr
    data = json.loads(cli(store_path, book, "--json").stdout)
    [conflict] = next(s for s in data["sheets"] if s["sheet"] == "Deals")["conflicts"]
    assert (conflict["base_value"], conflict["base"]) == (None, "none")


def test_an_emptied_cell_shows_as_empty_in_a_conflict(store: Store, books: Books) -> None:
    book = deals_book(books, [None, "Harbour", "prospecting", 100, "USD", date(2026, 12, 1)])
    run_sync(store, book)
    book.edit("Deals", {"F2": None})
    store.update("D-1", {"close_date": "2027-01-15"})
    [conflict] = run_sync(store, book).conflicts
    assert "sheet changed '2026-12-01' → (empty), store changed '2026-12-01' → '2027-01-15'" in str(conflict)


# -- 3. numbers and dates typed as text ---------------------------------------------------------


def test_numbers_and_dates_typed_as_text_become_real_ones_once(store: Store, books: Books) -> None:
    book = deals_book(books, [None, "Harbour", "proposal", "7,500", "USD", "2027-01-15"])
    assert book.is_text("Deals", "D2") and book.is_text("Deals", "F2")
    report = run_sync(store, book)
    assert not report.invalid
    deal = store.get("D-1")
    assert (deal["amount"], deal["close_date"]) == ("7500.00", "2027-01-15")
    assert book.cell("Deals", "D2") == 7500 and book.is_number("Deals", "D2")
    assert book.cell("Deals", "F2") == date(2027, 1, 15) and book.is_date("Deals", "F2")
    mark = book.mark()
    again = run_sync(store, book)
    assert again.changes == 0 and not again.book_written and book.writes_since(mark) == []
    # and on a row synced before, typed again as text
    book.edit("Deals", {"D2": as_text(book, "8,250.5"), "F2": as_text(book, "2027-02-01")})
    assert book.is_text("Deals", "D2") and book.is_text("Deals", "F2")
    edited = run_sync(store, book)
    assert not edited.invalid and not edited.needs_attention
    assert store.get("D-1")["amount"] == "8250.50" and store.get("D-1")["close_date"] == "2027-02-01"
    assert book.cell("Deals", "D2") == 8250.5 and book.is_number("Deals", "D2")
    assert book.cell("Deals", "F2") == date(2027, 2, 1) and book.is_date("Deals", "F2")
    mark = book.mark()
    assert run_sync(store, book).changes == 0 and book.writes_since(mark) == []


def format_as_text(book: Book, title: str, ref: str, text: str) -> None:
    """A person formats a cell as plain text ("@"; Google's Format > Number > Plain text) and types."""
    if isinstance(book, XlsxBook):
        wb = load_workbook(book.path)
        wb[title][ref] = text
        wb[title][ref].number_format = "@"
        wb.save(book.path)
    else:
        assert isinstance(book, GoogleBook)
        ws = gspread_client(book.standin.base_url).open_by_key(book.spreadsheet_id).worksheet(title)
        ws.format(ref, {"numberFormat": {"type": "TEXT"}})
        book.edit(title, {ref: text})


def test_a_cell_formatted_as_text_is_not_written_again_and_again(store: Store, books: Books) -> None:
    book = deals_book(books, [None, "Harbour", "proposal", 100, "USD"])
    run_sync(store, book)
    format_as_text(book, "Deals", "F2", "2027-01-15")
    assert book.is_text("Deals", "F2")
    run_sync(store, book)
    assert store.get("D-1")["close_date"] == "2027-01-15"
    # Google keeps a date written into a plain-text cell as text: crmkit tried once, and leaves it
    for _ in range(2):
        mark = book.mark()
        again = run_sync(store, book)
        assert again.changes == 0 and not again.book_written and book.writes_since(mark) == []


def test_text_that_only_looks_right_in_a_text_column_stays_text(store: Store, books: Books) -> None:
    book = books.make({"Contacts": [["ID", "Name", "Phone"], [None, "Ana", "0901234567"]]}, name="c")
    run_sync(store, book)
    assert book.cell("Contacts", "C2") == "0901234567" and book.is_text("Contacts", "C2")


# -- 4. money in its row's currency format ------------------------------------------------------


def test_money_cells_take_their_rows_currency_format(store: Store, books: Books) -> None:
    book = deals_book(books, [None, "Harbour", "proposal", 1000, "USD"])
    run_sync(store, book)
    store.add("deals", {"title": "Tokyo", "amount": "1500000", "currency": "JPY"})
    store.add("deals", {"title": "Boston", "amount": "1234.5", "currency": "USD"})
    run_sync(store, book)
    assert [r["Title"] for r in book.rows("Deals")] == ["Harbour", "Tokyo", "Boston"]
    assert number_format(book, "Deals", "D3") == "#,##0"  # appended rows
    assert number_format(book, "Deals", "D4") == "#,##0.00"
    assert book.cell("Deals", "D3") == 1500000 and book.is_number("Deals", "D3")
    store.update("D-2", {"amount": "2000000"})  # a changed amount
    run_sync(store, book)
    assert book.cell("Deals", "D3") == 2000000 and number_format(book, "Deals", "D3") == "#,##0"
    # the currency changes on the sheet: the unchanged amount takes the new currency's format
    book.edit("Deals", {"E2": "VND"})
    run_sync(store, book)
    assert store.get("D-1")["currency"] == "VND"
    assert book.cell("Deals", "D2") == 1000 and number_format(book, "Deals", "D2") == "#,##0"
    # and in the store
    store.update("D-3", {"currency": "KWD"})
    run_sync(store, book)
    assert book.cell("Deals", "E4") == "KWD" and number_format(book, "Deals", "D4") == "#,##0.000"
    mark = book.mark()
    assert run_sync(store, book).changes == 0 and book.writes_since(mark) == []


def test_an_invoices_money_and_unit_prices_take_its_currency_format(store: Store, books: Books) -> None:
    book = books.make(
        {
            "Invoices": [["ID", "Number", "Currency", "Total"]],
            "Invoice Lines": [["Invoice", "Description", "Quantity", "Unit price"]],
        },
        name="inv",
    )
    store.add(
        "invoices",
        {
            "number": "INV-1",
            "currency": "JPY",
            "lines": [{"description": "Work", "quantity": 2, "unit_price": 5000}],
        },
    )
    run_sync(store, book, today=date(2026, 11, 5))
    assert book.cell("Invoices", "D2") == 10000 and number_format(book, "Invoices", "D2") == "#,##0"
    assert book.cell("Invoice Lines", "D2") == 5000 and number_format(book, "Invoice Lines", "D2") == "#,##0"


# -- 5. tabs that are not crmkit's tables ---------------------------------------------------------


def with_chart_sheet(books: Books, title: str) -> Book:
    """A workbook with a data sheet and a chart on its own sheet named ``title``."""
    data = [["Month", "Sales"], ["Jan", 10], ["Feb", 12]]
    if books.kind == "gsheet":
        book = books.make({"Data": data}, name="charts")
        assert isinstance(book, GoogleBook)
        book.standin.add_chart_sheet(book.spreadsheet_id, title)
        return book
    path = books.folder / "charts.xlsx"
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Data"
    for row in data:
        ws.append(row)
    chart = BarChart()
    chart.add_data(Reference(ws, min_col=2, min_row=1, max_row=3), titles_from_data=True)
    wb.create_chartsheet(title).add_chart(chart)
    wb.save(path)
    return XlsxBook(path)


def problems(report: SyncReport) -> list[str]:
    return [f"{s.sheet}: {p}" for s in report.sheets for p in s.problems]


def test_a_chart_sheet_named_deals_is_left_alone(store: Store, store_path: Path, books: Books) -> None:
    book = with_chart_sheet(books, "Deals")
    store.add("deals", {"title": "Harbour", "amount": "100"})
    for _ in range(2):
        result = cli(store_path, book)
        assert result.exit_code == 3, result.output
        lines = [line for line in result.stderr.splitlines() if line.startswith("problem:")]
        assert len(lines) == 1, result.stderr
        assert lines[0].startswith("problem: Deals: the tab 'Deals' is a chart sheet")
        assert '[sheet_names] Deals = "CRM Deals" in crmkit.toml' in lines[0]
        titles = book.titles()
        assert titles.count("Deals") == 1 and not any(t.startswith("Deals") and t != "Deals" for t in titles)
        assert {"Data", "Leads", "Contacts", "Invoices", "Invoice Lines"} <= set(titles)
    # mapped to a tab of its own, Deals syncs there
    report = run_sync(store, book, sheet_names={"Deals": "CRM Deals"})
    assert not report.needs_attention, problems(report)
    assert [r["Title"] for r in book.rows("CRM Deals")] == ["Harbour"]
    assert book.titles().count("Deals") == 1


class ExtraTabs:
    """A workbook that also holds tabs the test describes (a dialog sheet cannot be made otherwise)."""

    def __init__(self, book: SheetBook, *tabs: SheetTable) -> None:
        self.book = book
        self.tabs = {t.title: t for t in tabs}
        self.identity = book.identity
        self.display_name = book.display_name
        self.written: list[SheetChanges] = []

    def fingerprint(self) -> str | None:
        return None

    def check_writable(self) -> None:
        self.book.check_writable()

    def read(self) -> dict[str, SheetTable]:
        return {**self.book.read(), **self.tabs}

    def read_back(self, value: Any) -> Any:
        return self.book.read_back(value)

    def write(self, changes: list[SheetChanges]) -> None:
        self.written += changes
        self.book.write(changes)


@pytest.mark.parametrize("title", ["Deals", "Invoice Lines"])
def test_a_dialog_sheet_is_left_alone(store: Store, books: Books, title: str) -> None:
    book = books.make({"Notes": [["keep me"]]}, name="dialog")
    store.add("deals", {"title": "Harbour"})
    store.add(
        "invoices", {"number": "INV-1", "lines": [{"description": "x", "quantity": 1, "unit_price": 9}]}
    )
    wrapped = ExtraTabs(book.open(), SheetTable(title, [], [], kind="dialogsheet"))
    report = run_sync(store, wrapped)
    [problem] = problems(report)
    assert f"the tab {title!r} is a dialog sheet" in problem and "[sheet_names]" in problem
    written = {c.title for c in wrapped.written}
    assert title not in written and title not in book.titles()
    if title == "Invoice Lines":  # the invoices are not synced without their lines
        assert problem.startswith("Invoices: ") and "Invoices are synced only with their lines" in problem
        assert "Invoices" not in written and "Deals" in written
    assert report.needs_attention


@pytest.mark.parametrize("first_row", [[None], ["My contact list"]])
def test_a_sheet_whose_headers_are_not_on_row_1_is_left_alone(
    store: Store, store_path: Path, books: Books, first_row: list[Any]
) -> None:
    rows = [first_row, [None], ["Name", "Email"], ["Ana", "ana@example.com"]]
    book = books.make({"Contacts": rows}, name="row3")
    store.add("contacts", {"name": "Bo", "email": "bo@example.com"})
    before = book.values("Contacts")
    for _ in range(2):
        result = cli(store_path, book)
        assert result.exit_code == 3, result.output
        [line] = [line for line in result.stderr.splitlines() if line.startswith("problem:")]
        assert (
            "row 1 of the tab 'Contacts' holds none of crmkit's Contacts headers (ID, Name, Email, …)" in line
        )
        assert '[sheet_names] Contacts = "CRM Contacts"' in line
        assert book.values("Contacts") == before  # not an "ID" written into row 1, nor a row added
    assert Store(store_path).count("contacts") == 1


def test_an_empty_sheet_of_that_name_is_filled_in(store: Store, books: Books) -> None:
    book = books.make({"Notes": [["keep me"]], "Deals": []}, name="empty")
    store.add("deals", {"title": "Harbour"})
    report = run_sync(store, book)
    assert not report.needs_attention, problems(report)
    assert book.titles().count("Deals") == 1
    assert book.values("Deals")[0][:2] == ["ID", "Title"]
    assert [r["Title"] for r in book.rows("Deals")] == ["Harbour"]


def test_sheet_names_syncs_with_a_tab_of_another_name_and_keeps_the_history(
    store: Store, books: Books
) -> None:
    book = books.make(
        {
            "Deals": [["Quarter", "Target"], ["Q1", 100]],  # a person's own sheet
            "CRM Deals": [["ID", "Title", "Amount"], [None, "Harbour", 100]],
        },
        name="mapped",
    )
    names = {"Deals": "CRM Deals"}
    report = run_sync(store, book, sheet_names=names)
    assert not report.needs_attention, problems(report)
    assert store.get("D-1")["title"] == "Harbour" and book.cell("CRM Deals", "A2") == "D-1"
    assert book.values("Deals") == [["Quarter", "Target"], ["Q1", 100]]
    # the tab renamed, and the setting with it: nothing is lost, made twice or archived
    rename_tab(book, "CRM Deals", "Pipeline")
    again = run_sync(store, book, sheet_names={"Deals": "Pipeline"})
    assert again.changes == 0 and not again.needs_attention
    assert store.count("deals") == 1 and store.count("deals", archived=True) == 1
    book.edit("Pipeline", {"C2": 250})
    run_sync(store, book, sheet_names={"Deals": "Pipeline"})
    assert store.get("D-1")["amount"] == "250.00"
    assert "CRM Deals" not in book.titles() and book.values("Deals") == [["Quarter", "Target"], ["Q1", 100]]


def test_sheet_names_must_name_crmkit_sheets_and_distinct_tabs(store: Store, books: Books) -> None:
    book = books.make({"Deals": [["ID", "Title"]]}, name="bad")
    with pytest.raises(
        CrmkitError, match=r"sheet_names\.Deal: not one of crmkit's sheets \(did you mean 'Deals'"
    ):
        run_sync(store, book, sheet_names={"Deal": "X"})
    with pytest.raises(CrmkitError, match="Leads and Deals would both sync with the tab 'leads'"):
        run_sync(store, book, sheet_names={"Deals": "leads"})


def test_sheet_names_in_crmkit_toml_reach_the_sync(store_path: Path, books: Books) -> None:
    book = with_chart_sheet(books, "Deals")
    Store(store_path).add("deals", {"title": "Harbour", "amount": "100"})
    config = books.folder / "crmkit.toml"
    config.write_text('[sheet_names]\nDeals = "CRM Deals"\n', encoding="utf-8")
    args = ["--config", str(config), "--store", str(store_path), "sync", book.target]
    result = CliRunner().invoke(main, args, env=book.cli_env)
    assert result.exit_code == 0, result.output
    assert [r["Title"] for r in book.rows("CRM Deals")] == ["Harbour"]
    assert book.titles().count("Deals") == 1
