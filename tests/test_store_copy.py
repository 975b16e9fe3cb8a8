"""``crmkit store copy``: a whole CRM moved between TinyDB and PostgreSQL, verified, on a real server."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from crmkit.cli import main
from crmkit.errors import StoreError
from crmkit.records.schema import RECORD_TYPES
from crmkit.store import Store
from crmkit.store.copy import CopyMismatchError, checksums, copy_store

LINES = [{"description": "Setup", "quantity": 1, "unit_price": "1500", "tax_rate": "10"}]


def build_crm(store: Store) -> None:
    """Every record type, links between them, archived records, custom fields, states, counters."""
    with store.transaction():
        store.add("accounts", {"name": "Sao Mai Logistics", "domain": "saomai.vn", "tier": "A", "Region": "South"})
        store.add("accounts", {"name": "Hanoi Fresh Foods", "domain": "hanoifresh.vn"})
        store.add("contacts", {"name": "Nguyễn Thị Hoa", "email": "hoa@saomai.vn", "account": "A-1", "tags": "vip, logistics"})
        store.add("contacts", {"name": "Old Contact", "email": "old@saomai.vn", "phone": "+84 90 123 4567"})
        store.add("leads", {"name": "Trần Văn Bình", "company": "Hanoi Fresh Foods", "email": "binh@hanoifresh.vn"})
        store.add("deals", {"title": "Cold-chain routing", "account": "A-1", "contact": "C-1", "amount": "42000"})
        store.add("quotes", {"account": "A-1", "lines": LINES, "issue_date": "2026-03-01"})
        store.add("invoices", {"account": "A-1", "contact": "C-1", "lines": LINES, "issue_date": "2026-03-02"})
        store.add("invoices", {"account": "A-2", "lines": LINES, "issue_date": "2026-03-03", "amount_paid": "1650"})
        store.add("cases", {"subject": "Truck late", "contact": "C-1", "priority": "high"})
        for i in range(1, 1201):  # past one page of a PostgreSQL scan and one TinyDB segment
            store.add("activities", {"kind": "note", "subject": f"note {i}", "contact": "C-1", "Mood": i % 7})
    store.update("D-1", {"stage": "negotiation"})
    store.archive("C-2")
    store.archive("I-2")
    store.set_state("sync", "book.xlsx", {"fingerprint": "abc", "sheets": {"Contacts": {"rows": [["Hoa", "\x00"]]}}})
    store.set_state("sync", "another.xlsx", {"fingerprint": "def"})
    store.set_state("imap", "support@saomai.vn/INBOX", {"uidvalidity": 7, "last_uid": 42})


def everything(store: Store) -> dict[str, Any]:
    """What a store holds, as a comparable value."""
    from crmkit.store.copy import _state_names

    return {
        "records": {rt.table: list(store.all(rt.table, archived=True)) for rt in RECORD_TYPES.values()},
        "counts": {rt.table: store.backend.count(rt.table) for rt in RECORD_TYPES.values()},
        "meta": store.backend.meta(),
        "states": {name: store.states(name) for name in _state_names(store.backend)},
    }


def next_ids(store: Store) -> list[str]:
    with store.transaction():
        made = [
            store.add("contacts", {"name": "Next", "email": "next@example.com"}),
            store.add("invoices", {"account": "A-1", "lines": LINES, "issue_date": "2026-03-09"}),
            store.add("activities", {"kind": "call", "subject": "next"}),
        ]
    return [d["id"] for d in made] + [made[1]["number"]]


def copy_cli(tmp_path: Path, *args: str, code: int = 0) -> Any:
    result = CliRunner().invoke(main, ["store", "copy", *args], catch_exceptions=False)
    assert result.exit_code == code, result.output
    return result


@pytest.mark.slow
def test_tinydb_to_postgresql_and_back_keeps_everything(tmp_path: Path, postgres_url: str) -> None:
    source = Store(tmp_path / "crm.json", actor="test")
    build_crm(source)
    before = everything(source)

    to_pg = copy_cli(tmp_path, str(tmp_path / "crm.json"), postgres_url, "--json")
    report = json.loads(to_pg.output)
    assert report["verified"] and report["destination"] == postgres_url
    assert report["tables"]["activities"]["count"] == 1200 and report["tables"]["contacts"]["count"] == 2
    assert report["tables"]["_sync"]["count"] == 2 and report["tables"]["_imap"]["count"] == 1
    on_pg = Store(postgres_url)
    assert everything(on_pg) == before

    back = Store(tmp_path / "back.json", actor="test")
    result = copy_store(on_pg, back)
    assert {name: (s.count, s.sha256) for name, s in result.tables.items()} == {
        name: (t["count"], t["sha256"]) for name, t in report["tables"].items()
    }
    assert everything(Store(tmp_path / "back.json")) == before
    # each copy goes on where the source stopped: the same next ids and invoice number
    expected = next_ids(source)
    assert next_ids(on_pg) == expected == next_ids(Store(tmp_path / "back.json", actor="test"))
    assert expected[1] == "I-3" and expected[3] == "INV-2026-0003"
    # the checksums are the same wherever the documents are kept
    assert checksums(on_pg) == checksums(source)


def test_tinydb_to_tinydb_prints_each_table(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    source = Store(tmp_path / "crm.json")
    source.add("contacts", {"name": "Ana", "email": "ana@example.com"})
    output = copy_cli(tmp_path, "crm.json", "copy.json").output.splitlines()
    assert output[0].startswith("copied crm.json -> copy.json in ")
    assert [line.split()[:2] for line in output[1:-1]] == [
        [t, "1" if t == "contacts" else "0"] for t in (rt.table for rt in RECORD_TYPES.values())
    ] + [["_meta", "1"]]
    assert output[-1] == "verified: every table's count and checksum match"
    assert Store(tmp_path / "copy.json").get("C-1")["email"] == "ana@example.com"


@pytest.fixture
def filled(tmp_path: Path, postgres_url: str) -> Callable[[], Store]:
    """A small TinyDB store and a PostgreSQL database already holding another CRM."""
    Store(tmp_path / "crm.json").add("contacts", {"name": "From the file"})
    other = Store(postgres_url)
    other.add("contacts", {"name": "Already there"})
    other.set_state("sync", "book", {"x": 1})
    return lambda: Store(postgres_url)


def test_a_destination_holding_a_crm_is_refused_unless_forced(
    tmp_path: Path, postgres_url: str, filled: Callable[[], Store], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    refused = copy_cli(tmp_path, "crm.json", postgres_url, code=1)
    assert refused.output == (
        f"Error: {postgres_url} already holds a CRM (2 records and bookkeeping documents); "
        "copy into an empty store, or pass --force to replace it\n"
    )
    assert [d["name"] for d in filled().all("contacts")] == ["Already there"]  # nothing merged
    copy_cli(tmp_path, "crm.json", postgres_url, "--force")
    assert [d["name"] for d in filled().all("contacts")] == ["From the file"]
    assert filled().states("sync") == [] and filled().count("contacts") == 1
    # into a TinyDB store: the old files are moved aside, still a store of their own
    Store(tmp_path / "old.json").add("leads", {"name": "Old lead"})
    copy_cli(tmp_path, "old.json", "crm.json", code=1)
    forced = copy_cli(tmp_path, "old.json", "crm.json", "--force").output
    aside = forced.splitlines()[1].split(" is kept as ")[1]
    assert [d["name"] for d in Store(tmp_path / aside).all("contacts")] == ["From the file"]
    assert [d["name"] for d in Store(tmp_path / "crm.json").all("leads")] == ["Old lead"]
    assert Store(tmp_path / "crm.json").count("contacts") == 0
    # a copy onto itself is refused before anything is read
    assert "both the source and the destination" in copy_cli(tmp_path, "crm.json", "crm.json", code=1).output


def test_a_destination_that_does_not_keep_what_it_is_given_fails_the_check(
    tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    source = Store(tmp_path / "crm.json")
    source.add("contacts", {"name": "Ana", "email": "ana@example.com"})
    source.add("contacts", {"name": "Bình"})
    Store(postgres_url).create()
    with psycopg.connect(postgres_url, autocommit=True) as conn:  # something on the database rewrites names
        conn.execute(
            "CREATE FUNCTION shout() RETURNS trigger AS $$ BEGIN "
            "NEW.doc = jsonb_set(NEW.doc, '{name}', to_jsonb(upper(NEW.doc->>'name'))); RETURN NEW; END "
            "$$ LANGUAGE plpgsql; CREATE TRIGGER shout BEFORE INSERT ON contacts FOR EACH ROW EXECUTE FUNCTION shout()"
        )
    result = copy_cli(tmp_path, "crm.json", postgres_url, code=1)
    assert result.output.count("\n") == 1
    assert result.output.startswith(f"Error: copy to {postgres_url} does not match crm.json: contacts checksum ")
    assert result.output.endswith("look at it, or copy again with --force\n")
    # the library says the same, and a copy with documents missing names the counts
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DROP TRIGGER shout ON contacts")
    copy_store(source, Store(postgres_url), force=True)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM contacts WHERE id = 'C-2'")
    from crmkit.store.copy import CopyResult, _verify

    want = CopyResult("crm.json", postgres_url, tables=checksums(source))
    with pytest.raises(CopyMismatchError, match="contacts has 1 documents, not 2"):
        _verify(want, checksums(Store(postgres_url)))


def test_copying_a_store_that_does_not_exist_is_an_error(tmp_path: Path, postgres_url: str) -> None:
    with pytest.raises(StoreError, match=r"no store at .*missing\.json to copy"):
        copy_store(Store(tmp_path / "missing.json"), Store(postgres_url))
    with pytest.raises(StoreError, match="no store at postgresql://"):
        copy_store(Store(postgres_url), Store(tmp_path / "out.json"))
    assert not (tmp_path / "out.json").exists()
