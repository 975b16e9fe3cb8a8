"""Review of the issue 12 sync changes: bugs found, each a failing test against a real .xlsx file
and a Google spreadsheet on the Sheets API stand-in (see sheetbooks.py)."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from openpyxl import load_workbook
from sheetbooks import Book, Books, GoogleBook, XlsxBook, run_sync

from crmkit.store import Store
from crmkit.sync import SyncReport

TODAY = date(2026, 11, 5)
DEAL_HEADERS = ["ID", "Title", "Stage", "Amount", "Currency", "Close date"]


def problems(report: SyncReport) -> list[str]:
    return [f"{s.sheet}: {p}" for s in report.sheets for p in s.problems]


def number_format(book: Book, title: str, ref: str) -> str | None:
    """The number format the cell shows (its pattern, on Google)."""
    if isinstance(book, XlsxBook):
        return str(load_workbook(book.path)[title][ref].number_format)
    assert isinstance(book, GoogleBook)
    found = book.standin.cell_format(book.spreadsheet_id, title, int(ref[1:]), ref[0])
    return None if found is None else found.get("pattern")


def invoice_book(books: Books) -> Book:
    return books.make(
        {
            "Invoices": [["ID", "Number", "Currency", "Total"]],
            "Invoice Lines": [["Invoice", "Description", "Quantity", "Unit price"]],
        },
        name="inv",
    )


def touch_store(store: Store) -> None:
    """Something unrelated changes in crmkit, so that an .xlsx sync is not skipped as unchanged."""
    store.add("contacts", {"name": "Unrelated"})


# -- [sheet_names] and the Invoice Lines tab -----------------------------------------------------


def test_mapping_invoice_lines_to_a_new_tab_keeps_every_invoices_lines(store: Store, books: Books) -> None:
    book = invoice_book(books)
    store.add(
        "invoices",
        {"number": "INV-1", "lines": [{"description": "Work", "quantity": 2, "unit_price": 50}]},
    )
    run_sync(store, book, today=TODAY)
    assert book.rows("Invoice Lines")[0]["Description"] == "Work"
    # the README's example: Invoice Lines synced with a tab called "Lines" ("loses nothing")
    touch_store(store)
    run_sync(store, book, today=TODAY, sheet_names={"Invoice Lines": "Lines"})
    assert store.get("I-1").get("lines"), "every line of every invoice was deleted from the store"
    assert store.get("I-1")["total"] == "100.00"
    assert [r["Description"] for r in book.rows("Lines")] == ["Work"]


# -- [sheet_names] pointing at another tab that already holds rows -------------------------------


def test_mapping_a_sheet_to_another_existing_tab_archives_nothing(store: Store, books: Books) -> None:
    book = books.make(
        {
            "Deals": [["ID", "Title", "Amount"], [None, "Harbour", 100], [None, "Quay", 200]],
            "CRM Deals": [["ID", "Title", "Amount"], [None, "Dock", 300]],  # laid out by a person
        },
        name="switch",
    )
    run_sync(store, book)
    assert store.count("deals") == 2
    touch_store(store)
    report = run_sync(store, book, sheet_names={"Deals": "CRM Deals"})
    archived = [i for s in report.sheets for i in s.store_archived]
    assert archived == [], f"changing crmkit.toml archived {archived}"
    assert store.count("deals") == 3


def test_a_changed_sheet_names_mapping_is_not_skipped_as_unchanged(store: Store, tmp_path: Path) -> None:
    book = Books("xlsx", tmp_path).make({"Deals": [["ID", "Title"], [None, "Harbour"]]}, name="skip")
    run_sync(store, book)
    report = run_sync(store, book, sheet_names={"Deals": "CRM Deals"})
    assert not report.skipped_unchanged, "crmkit.toml changed, yet: nothing changed since the last sync"
    assert "CRM Deals" in book.titles()


# -- a loop: the workbook written at every sync ------------------------------------------------


def test_a_currency_conflict_does_not_rewrite_the_workbook_at_every_sync(store: Store, books: Books) -> None:
    book = books.make({"Deals": [DEAL_HEADERS, [None, "Harbour", "proposal", 1000, "USD"]]}, name="cur")
    run_sync(store, book)
    book.edit("Deals", {"E2": "EUR"})
    store.update("D-1", {"currency": "JPY"})
    [conflict] = run_sync(store, book).conflicts  # reported until a person settles it: fine
    assert conflict.field == "Currency"
    mark = book.mark()
    again = run_sync(store, book)
    assert len(again.conflicts) == 1
    assert not again.book_written and book.writes_since(mark) == []


# -- a tab that is not a crmkit table ------------------------------------------------------------


def test_headers_on_row_3_under_a_row_1_with_one_known_word_are_left_alone(
    store: Store, books: Books
) -> None:
    # a person's contact list for one customer: "Account: Acme" on top, the table from row 3
    rows = [["Account", "Acme Corp"], [None], ["Name", "Email"], ["Ana", "ana@example.com"]]
    book = books.make({"Contacts": rows}, name="row3")
    store.add("contacts", {"name": "Bo", "email": "bo@example.com"})
    before = book.values("Contacts")
    report = run_sync(store, book)
    assert book.values("Contacts") == before, "crmkit wrote an ID header into row 1 and appended rows"
    assert report.needs_attention and problems(report)


# -- money formats -------------------------------------------------------------------------------


def test_unit_prices_take_the_new_format_when_an_invoices_currency_changes(
    store: Store, books: Books
) -> None:
    book = invoice_book(books)
    store.add(
        "invoices",
        {
            "number": "INV-1",
            "currency": "USD",
            "lines": [{"description": "Work", "quantity": 2, "unit_price": 50}],
        },
    )
    run_sync(store, book, today=TODAY)
    assert number_format(book, "Invoice Lines", "D2") == "#,##0.00"
    book.edit("Invoices", {"C2": "JPY"})
    run_sync(store, book, today=TODAY)
    assert store.get("I-1")["currency"] == "JPY"
    assert number_format(book, "Invoices", "D2") == "#,##0"  # the total does
    assert number_format(book, "Invoice Lines", "D2") == "#,##0"  # its unit prices do not


def test_a_unit_price_a_double_cannot_hold_goes_onto_the_lines_sheet_as_text(
    store: Store, books: Books
) -> None:
    """As on the main sheets: 999999999999999.99 as a number would come back as 1e15."""
    book = invoice_book(books)
    store.add(
        "invoices",
        {
            "number": "INV-1",
            "lines": [{"description": "Work", "quantity": 1, "unit_price": "999999999999999.99"}],
        },
    )
    run_sync(store, book, today=TODAY)
    assert book.rows("Invoice Lines")[0]["Unit price"] == "999999999999999.99"
    touch_store(store)
    again = run_sync(store, book, today=TODAY)
    assert store.get("I-1")["lines"][0]["unit_price"] == "999999999999999.99"
    assert not again.conflicts and not again.invalid
