"""Every record type through the store: validation, defaults, rules, ids."""

from __future__ import annotations

import json
import os
from datetime import date
from decimal import Decimal
from pathlib import Path

import pytest
from backends import on_tinydb
from storefiles import hand_delete

from crmkit.errors import CrmkitError, DuplicateError, NotFoundError, ValidationError
from crmkit.records.query import Condition
from crmkit.records.rules import invoice_status, invoice_status_reason
from crmkit.records.schema import INVOICE, LEAD_STATUS_TYPES, RECORD_TYPES, parse_id, record_type
from crmkit.store import Store

VALID = {
    "leads": {"name": "Hoa", "company": "Hanoi Fresh", "email": "hoa@hanoifresh.vn", "source": "Website",
              "rating": "Hot"},
    "contacts": {"name": "Nguyễn Thị Hoa", "email": "hoa@saomai.vn", "phone": "+84 90 123 4567",
                 "tags": "vip, partner"},
    "accounts": {"name": "Sao Mai Logistics", "domain": "saomai.vn", "tier": "a", "region": "North"},
    "deals": {"title": "Fleet tracking", "amount": "12,500", "stage": "proposal", "close_date": "2026-12-01"},
    "invoices": {"lines": [{"description": "Setup", "quantity": 2, "unit_price": "100.50", "tax_rate": 10}]},
    "quotes": {"lines": [{"description": "Setup", "quantity": 1, "unit_price": "900", "tax_rate": 0}]},
    "cases": {"subject": "Cannot log in", "priority": "High", "origin": "email"},
    "activities": {"kind": "call", "subject": "Intro call", "date": "2026-03-01 10:00"},
}  # fmt: skip

BAD = {
    "leads": ("email", "hoa@"),
    "contacts": ("phone", "call me maybe"),
    "accounts": ("tier", "Z"),
    "deals": ("close_date", "next week"),
    "invoices": ("amount_paid", "lots"),
    "quotes": ("valid_until", "soonish"),
    "cases": ("priority", "whenever"),
    "activities": ("kind", "fax"),
}


@pytest.mark.parametrize("table", list(RECORD_TYPES))
def test_every_type_adds_with_readable_id(store: Store, table: str) -> None:
    rt = record_type(table)
    doc = store.add(table, VALID[table])
    assert doc["id"] == f"{rt.prefix}-1"
    assert parse_id(doc["id"]) == (rt, 1)
    assert doc["created_at"] == doc["updated_at"]
    assert store.get(doc["id"]) == doc
    if not on_tinydb(store):
        return
    # the record's file is plain TinyDB JSON: its type's table, document id = record number
    from tinydb import TinyDB

    manifest = json.loads(store.path.read_text())["_manifest"]["1"]
    segment = store.path.with_name("crm.json.d") / manifest["tables"][table]["segments"]["0"]
    with TinyDB(segment, access_mode="r") as db:
        assert db.table(table).get(doc_id=1)["id"] == doc["id"]


@pytest.mark.parametrize("table", list(RECORD_TYPES))
def test_every_type_refuses_bad_values_naming_field_and_value(store: Store, table: str) -> None:
    field, bad = BAD[table]
    with pytest.raises(ValidationError) as info:
        store.add(table, {**VALID[table], field: bad})
    error = info.value.errors[0]
    assert (error.field, error.value) == (field, bad)
    assert field in str(info.value) and repr(bad) in str(info.value)
    assert store.count(table) == 0


def test_all_errors_reported_at_once(store: Store) -> None:
    with pytest.raises(ValidationError) as info:
        store.add("deals", {"title": "X", "amount": "abc", "stage": "dreaming", "close_date": "soon"})
    assert sorted(e.field for e in info.value.errors) == ["amount", "close_date", "stage"]


def test_required_fields(store: Store) -> None:
    with pytest.raises(ValidationError, match="name: is required"):
        store.add("contacts", {"email": "a@example.com"})


def test_system_fields_cannot_be_typed(store: Store) -> None:
    with pytest.raises(ValidationError, match="kept by crmkit"):
        store.add("contacts", {"name": "A", "created_at": "2020-01-01"})
    c = store.add("contacts", {"name": "A"})
    with pytest.raises(ValidationError, match="kept by crmkit"):
        store.update(c["id"], {"id": "C-9"})


def test_ids_are_never_reused(store: Store) -> None:
    first = store.add("contacts", {"name": "A"})
    store.archive(first["id"])
    second = store.add("contacts", {"name": "B"})
    assert second["id"] == "C-2"
    if on_tinydb(store):  # test_store_postgres does this with a row deleted by SQL
        # even a record removed behind crmkit's back does not free its number
        hand_delete(store.path, "contacts", "C-2")
    assert Store(store.location).add("contacts", {"name": "C"})["id"] == "C-3"


def test_custom_fields_are_kept(store: Store) -> None:
    c = store.add("contacts", {"name": "A", "Shoe size": 42, "Met at": date(2026, 1, 5)})
    assert c["custom"] == {"Shoe size": 42, "Met at": "2026-01-05"}
    c = store.update(c["id"], {"Shoe size": "", "Nickname": "Bé"})
    assert c["custom"] == {"Met at": "2026-01-05", "Nickname": "Bé"}


def test_update_changes_only_given_fields_and_skips_noop(store: Store) -> None:
    c = store.add("contacts", {"name": "A", "email": "a@example.com", "title": "CTO"})
    before = store.revision
    same = store.update(c["id"], {"title": "CTO"})
    assert same == c and store.revision == before
    changed = store.update(c["id"], {"title": "", "phone": "+1 555 0100"})
    assert "title" not in changed and changed["phone"] == "+1 555 0100"
    assert changed["email"] == "a@example.com" and changed["updated_at"] > c["updated_at"]


def test_duplicate_email_or_phone_refused_unless_forced(store: Store) -> None:
    store.add("contacts", {"name": "Ana", "email": "ana@example.com", "phone": "+84 90 123 4567"})
    with pytest.raises(DuplicateError, match=r"C-1 \(Ana\) already has email") as info:
        store.add("contacts", {"name": "Ana 2", "email": "ANA@example.com"})
    assert info.value.existing_id == "C-1"
    with pytest.raises(DuplicateError, match="phone"):
        store.add("contacts", {"name": "Ana 3", "phone": "84901234567"})
    forced = store.add("contacts", {"name": "Ana 2", "email": "ana@example.com"}, force=True)
    assert forced["id"] == "C-2"
    # a lead with the same email is a different record type: allowed
    store.add("leads", {"name": "Ana", "email": "ana@example.com"})
    with pytest.raises(DuplicateError):
        store.add("leads", {"name": "Ana", "email": "ana@example.com"})


def test_update_cannot_steal_an_email(store: Store) -> None:
    store.add("contacts", {"name": "A", "email": "a@example.com"})
    b = store.add("contacts", {"name": "B", "email": "b@example.com"})
    with pytest.raises(DuplicateError):
        store.update(b["id"], {"email": "A@example.com"})


def test_archive_frees_email_and_restore_checks_it(store: Store) -> None:
    a = store.add("contacts", {"name": "A", "email": "a@example.com"})
    store.archive(a["id"])
    assert store.find_by_email("contacts", "a@example.com") == []
    assert [d["id"] for d in store.all("contacts", archived=True)] == ["C-1"]
    store.add("contacts", {"name": "A2", "email": "a@example.com"})
    with pytest.raises(DuplicateError):
        store.restore(a["id"])
    assert "archived_at" not in store.restore(a["id"], force=True)
    assert "archived_at" not in store.get(a["id"])


def test_links_resolve_by_name_email_or_id(store: Store) -> None:
    store.add("accounts", {"name": "ACME, Inc.", "domain": "https://www.acme.com/"})
    c = store.add("contacts", {"name": "Ana", "email": "ana@acme.com", "account": "acme"})
    assert c["account"] == "A-1"
    d = store.add("deals", {"title": "Deal", "account": "acme.com", "contact": "ANA@acme.com"})
    assert (d["account"], d["contact"]) == ("A-1", "C-1")
    with pytest.raises(ValidationError, match="account: no account matches 'Globex'"):
        store.add("deals", {"title": "X", "account": "Globex"})
    with pytest.raises(ValidationError, match="is a contact id"):
        store.add("deals", {"title": "X", "account": "C-1"})
    with pytest.raises(ValidationError, match="no account A-9"):
        store.add("deals", {"title": "X", "account": "A-9"})


def test_lookup(store: Store) -> None:
    store.add("contacts", {"name": "Ana", "email": "ana@example.com"})
    assert store.lookup("contacts", "c-1")["name"] == "Ana"
    assert store.lookup("contacts", "ANA@example.com")["id"] == "C-1"
    with pytest.raises(NotFoundError, match="no contact matches"):
        store.lookup("contacts", "bob@example.com")
    with pytest.raises(NotFoundError, match="no contact C-7"):
        store.get("C-7")
    with pytest.raises(CrmkitError, match="not a record id"):
        store.get("X-1")


def test_deal_stage_drives_probability_forecast_and_history(store: Store) -> None:
    d = store.add("deals", {"title": "D", "amount": "1000"}, actor="cli:ana")
    assert (d["stage"], d["probability"], d["forecast_category"]) == ("prospecting", 10, "pipeline")
    d = store.update(d["id"], {"probability": 35})  # overridden by hand: kept
    assert d["probability"] == 35 and d["stage"] == "prospecting"
    d = store.update(d["id"], {"stage": "Negotiating"}, actor="sync:book.xlsx")
    assert (d["probability"], d["forecast_category"]) == (75, "commit")
    d = store.update(d["id"], {"stage": "won", "probability": 90})  # set in the same change: kept
    assert d["probability"] == 90 and d["forecast_category"] == "closed"
    history = d["stage_history"]
    assert [(h["from"], h["stage"], h["by"]) for h in history] == [
        (None, "prospecting", "cli:ana"),
        ("prospecting", "negotiation", "sync:book.xlsx"),
        ("negotiation", "won", "test"),
    ]
    assert history[0]["at"] < history[1]["at"] < history[2]["at"]
    with pytest.raises(ValidationError, match="stage: is required"):
        store.update(d["id"], {"stage": ""})


def test_deal_money_is_decimal_in_its_currency(store: Store) -> None:
    vnd = store.add("deals", {"title": "V", "amount": "150000000.4", "currency": "vnd"})
    assert (vnd["amount"], vnd["currency"]) == ("150000000", "VND")
    usd = store.add("deals", {"title": "U", "amount": 0.1})
    assert usd["amount"] == "0.10" and usd["currency"] == "USD"
    with pytest.raises(ValidationError, match="currency"):
        store.add("deals", {"title": "X", "currency": "DOGE"})


def test_invoice_totals_numbers_and_status(store: Store, clock) -> None:
    inv = store.add("invoices", VALID["invoices"] | {"currency": "USD", "issue_date": "2026-03-01"})
    assert inv["number"] == "INV-2026-0001"
    assert (inv["subtotal"], inv["tax"], inv["total"]) == ("201.00", "20.10", "221.10")
    assert inv["status"] == "draft" and inv["due_date"] == "2026-03-31"
    second = store.add("invoices", {"issue_date": "2026-04-01", "lines": []})
    assert second["number"] == "INV-2026-0002"
    with pytest.raises(DuplicateError):
        store.add("invoices", {"number": "inv-2026-0001"})
    with pytest.raises(ValidationError, match="follows from the amount paid"):
        store.update(inv["id"], {"status": "paid"})
    sent = store.update(inv["id"], {"status": "sent", "amount_paid": "100"})
    assert sent["status"] == "partly_paid"
    paid = store.update(inv["id"], {"amount_paid": "221.10"})
    assert paid["status"] == "paid"
    # overdue follows from the day: computed, never typed
    loaded = INVOICE.load({k: v for k, v in sent.items() if k != "custom"})
    assert invoice_status(loaded, date(2026, 3, 30)) == "partly_paid"
    assert invoice_status(loaded, date(2026, 4, 1)) == "overdue"
    assert invoice_status({**loaded, "status": "void"}, date(2027, 1, 1)) == "void"
    assert invoice_status({**loaded, "amount_paid": Decimal("221.10")}, date(2027, 1, 1)) == "paid"
    # numbers are never reused, even after the newest is archived
    store.archive(second["id"])
    assert store.add("invoices", {"issue_date": "2026-05-01"})["number"] == "INV-2026-0003"


def test_lead_statuses_have_types() -> None:
    assert set(LEAD_STATUS_TYPES.values()) == {"open", "ongoing", "won", "lost"}
    assert record_type("leads").get_field("status").choices == tuple(LEAD_STATUS_TYPES)


def test_store_survives_reopen(store_path: Path, store: Store) -> None:
    store.add("contacts", {"name": "A", "email": "a@example.com"})
    again = Store(store_path)
    assert again.find_by_email("contacts", "A@EXAMPLE.COM")[0]["name"] == "A"


def test_transaction_is_all_or_nothing(store: Store) -> None:
    store.add("contacts", {"name": "Keep"})
    with pytest.raises(ValidationError):
        store.add_many("contacts", [{"name": "New 1"}, {"name": "New 2", "email": "bad@"}])
    assert [d["name"] for d in store.all("contacts")] == ["Keep"]
    assert [d["name"] for d in Store(store.location).all("contacts")] == ["Keep"]


def test_store_picks_up_changes_from_another_process(store_path: Path, store: Store) -> None:
    store.add("contacts", {"name": "A", "email": "a@example.com"})
    assert store.find_by_email("contacts", "b@example.com") == []
    Store(store_path).add("contacts", {"name": "B", "email": "b@example.com"})
    assert store.find_by_email("contacts", "b@example.com")[0]["id"] == "C-2"
    assert store.add("contacts", {"name": "C"})["id"] == "C-3"


@pytest.mark.tinydb_only
def test_corrupt_store_is_a_clear_error(store_path: Path) -> None:
    store_path.write_text('{"contacts": {"1": {"id": "C-1"}}}garbage')
    with pytest.raises(CrmkitError, match="not a valid store"):
        Store(store_path).count("contacts")


@pytest.mark.tinydb_only
def test_no_lost_update_when_mtime_and_size_repeat(store_path: Path) -> None:
    # Coarse file-system clocks can give a newer file the old mtime and size;
    # the storage must still notice it is a different file.
    from crmkit.store import AtomicJSONStorage

    first = AtomicJSONStorage(store_path)
    with first.transaction() as data:
        data["counter"] = {"1": {"n": 1}}
        first.write(data)
    a = AtomicJSONStorage(store_path)
    assert a.read() == {"counter": {"1": {"n": 1}}}  # a has loaded the file
    old = store_path.stat()
    b = AtomicJSONStorage(store_path)
    for n in (2, 3):
        with b.transaction() as data:
            data["counter"]["1"]["n"] = n
            b.write(data)
    os.utime(store_path, ns=(old.st_atime_ns, old.st_mtime_ns))
    assert store_path.stat().st_size == old.st_size
    with a.transaction() as data:
        data["counter"]["1"]["n"] += 1
        a.write(data)
    assert AtomicJSONStorage(store_path).read() == {"counter": {"1": {"n": 4}}}


def test_returned_records_are_copies(store: Store) -> None:
    store.add("contacts", {"name": "A", "tags": "vip", "tier": "gold"})
    doc = store.get("C-1")
    doc["custom"]["tier"] = "MUTATED"
    doc["tags"].append("MUTATED")
    next(store.all("contacts"))["custom"]["tier"] = "MUTATED"
    store.add("contacts", {"name": "B"})
    fresh = Store(store.location).get("C-1")
    assert fresh["custom"]["tier"] == "gold" and fresh["tags"] == ["vip"]


@pytest.mark.tinydb_only
def test_write_outside_a_transaction_refuses_to_overwrite_a_newer_file(store_path: Path) -> None:
    from tinydb import TinyDB

    from crmkit.store import AtomicJSONStorage

    Store(store_path).add("contacts", {"name": "A"})
    storage = AtomicJSONStorage(store_path)
    data = storage.read()  # what TinyDB's insert does: read, change, write
    assert data is not None
    Store(store_path).add("contacts", {"name": "B"})  # another process, in between
    data.setdefault("notes", {})["1"] = {"text": "x"}
    with pytest.raises(CrmkitError, match="changed by another process"):
        storage.write(data)
    assert Store(store_path).count("contacts") == 2
    # plain TinyDB on the same storage works and keeps the file TinyDB's (the records
    # themselves are in the segment files the manifest names)
    db = TinyDB(store_path, storage=AtomicJSONStorage)
    db.table("notes").insert({"text": "y"})
    assert db.table("contacts").all() == [] and "_manifest" in db.tables()
    assert Store(store_path).count("contacts") == 2
    assert json.loads(store_path.read_text())["notes"] == {"1": {"text": "y"}}


@pytest.mark.tinydb_only
@pytest.mark.parametrize(
    ("content", "problem"),
    [
        ('{"contacts": []}', "table 'contacts' is not a JSON object"),
        ('{"contacts": {"1": "x"}}', "document '1' of table 'contacts' is not a JSON object"),
        ('{"contacts": {"one": {"name": "A"}}}', "document id 'one' of table 'contacts' is not a number"),
        ("[1, 2]", "expected a JSON object of tables"),
    ],
)
def test_files_that_are_json_but_not_a_store(store_path: Path, content: str, problem: str) -> None:
    store_path.write_text(content)
    with pytest.raises(CrmkitError, match=problem):
        Store(store_path).count("contacts")


@pytest.mark.tinydb_only
def test_documents_added_by_plain_tinydb_get_their_id(store_path: Path) -> None:
    from tinydb import TinyDB

    TinyDB(store_path).table("contacts").insert({"name": "From TinyDB"})
    store = Store(store_path)
    assert store.get("C-1")["name"] == "From TinyDB"
    assert store.add("contacts", {"name": "B"})["id"] == "C-2"
    assert [d["id"] for d in store.all("contacts")] == ["C-1", "C-2"]


def test_find_by_a_link_uses_its_index_and_still_applies_every_condition(store: Store) -> None:
    acme = store.add("accounts", {"name": "Acme"})["id"]
    other = store.add("accounts", {"name": "Other"})["id"]
    a = store.add("contacts", {"name": "A", "account": acme, "title": "CTO"})["id"]
    store.add("contacts", {"name": "B", "account": other, "title": "CTO"})
    c = store.add("contacts", {"name": "C", "account": acme})["id"]
    d = store.add("contacts", {"name": "D", "account": acme, "title": "CTO"})["id"]
    store.archive(d)
    assert [x["id"] for x in store.find("contacts", [Condition("account", "=", acme)])] == [a, c]
    assert [x["id"] for x in store.find("contacts", [Condition("account", "=", acme.lower())])] == [a, c]
    cto = [Condition("account", "=", acme), Condition("title", "=", "CTO")]
    assert [x["id"] for x in store.find("contacts", cto)] == [a]
    assert [x["id"] for x in store.find("contacts", cto, archived=True)] == [a, d]
    store.update(c, {"account": other})  # the index follows the change
    assert [x["id"] for x in store.find("contacts", [Condition("account", "=", other)])] == ["C-2", c]


def test_a_draft_someone_paid_follows_its_payments(store: Store) -> None:
    lines = [{"description": "Setup", "quantity": 1, "unit_price": "1500", "tax_rate": 0}]
    draft = store.add("invoices", {"issue_date": "2026-03-01", "lines": lines})
    assert draft["status"] == "draft"
    assert store.update(draft["id"], {"amount_paid": "1500"})["status"] == "paid"  # not a draft any more
    part = store.add("invoices", {"issue_date": "2026-03-01", "lines": lines, "amount_paid": "500"})
    assert part["status"] == "partly_paid"
    # the day decides overdue for a paid-in-part draft too; a void one stays void
    loaded = INVOICE.load({k: v for k, v in part.items() if k != "custom"})
    assert invoice_status({**loaded, "status": "draft"}, date(2026, 4, 1)) == "overdue"
    assert invoice_status({**loaded, "status": "void"}, date(2026, 4, 1)) == "void"
    assert invoice_status({**loaded, "status": "draft", "amount_paid": None}, date(2027, 1, 1)) == "draft"


@pytest.mark.parametrize(
    ("status", "paid", "today", "reason"),
    [
        ("draft", None, date(2026, 3, 2), "draft (not sent yet, nothing received)"),
        ("draft", "1500", date(2026, 3, 2), "paid (1,500.00 of 1,500.00 USD received)"),
        ("sent", None, date(2026, 3, 2), "sent (0.00 of 1,500.00 USD received, due 2026-03-31)"),
        ("sent", "1000", date(2026, 3, 2), "partly_paid (1,000.00 of 1,500.00 USD received, due 2026-03-31)"),
        ("sent", "1000", date(2026, 4, 2), "overdue (1,000.00 of 1,500.00 USD received, due 2026-03-31)"),
        ("void", "1000", date(2026, 4, 2), "void (set by hand: nothing is owed)"),
    ],
)
def test_invoice_status_reason_says_what_the_status_follows_from(
    status: str, paid: str | None, today: date, reason: str
) -> None:
    invoice = INVOICE.load({"status": status, "amount_paid": paid, "total": "1500.00", "currency": "USD",
                            "due_date": "2026-03-31"})  # fmt: skip
    assert invoice_status_reason(invoice, today) == reason


def test_lines_are_counted_in_words() -> None:
    lines = INVOICE.by_name["lines"]
    one = {"description": "x", "quantity": Decimal(1), "unit_price": Decimal(1), "tax_rate": Decimal(0)}
    assert [lines.format(v) for v in (None, [one], [one, one])] == ["0 lines", "1 line", "2 lines"]
