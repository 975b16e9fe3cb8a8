"""A store edited by hand: values of the wrong type and records without an id are named once
(file, table, record, field) and read as empty, and no command stumbles on them."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest
from backends import on_tinydb
from storefiles import hand_edit, manifest

from crmkit.store import Store

#: What a person typed into the files: field -> value, per record.
BROKEN = {
    ("contacts", "C-1"): {"email": 5, "tags": "vip"},
    ("deals", "D-1"): {"amount": [1], "close_date": 20261215, "stage_history": "moved to won"},
    ("invoices", "I-1"): {"lines": "Setup 1500", "total": {"usd": 1650}},
    ("cases", "CASE-1"): {"status": 3, "created_at": "yesterday"},
    ("activities", "ACT-1"): {"date": [], "contact": 7},
}


def build(store: Store) -> None:
    store.add("accounts", {"name": "Sao Mai Logistics", "domain": "saomai.vn"})
    store.add("contacts", {"name": "Nguyễn Thị Hoa", "email": "hoa@saomai.vn", "account": "A-1"})
    store.add("contacts", {"name": "Trần Văn Bình", "email": "binh@saomai.vn", "account": "A-1"})
    store.add("deals", {"title": "Cold-chain routing", "account": "A-1", "contact": "C-1", "amount": "42000",
                        "close_date": "2026-12-15"})  # fmt: skip
    store.update("D-1", {"stage": "won"})
    store.add("invoices", {"account": "A-1", "contact": "C-1", "amount_paid": "100",
                           "lines": [{"description": "Setup", "quantity": 1, "unit_price": 1500, "tax_rate": 10}]})  # fmt: skip
    store.add("cases", {"subject": "Cannot log in", "contact": "C-1"})
    store.add("activities", {"kind": "call", "subject": "Intro call", "contact": "C-1", "case": "CASE-1"})


def break_by_hand(store: Store, store_path: Path | str) -> None:
    """The edits of BROKEN, and C-2's id taken out, in the TinyDB files or with SQL."""
    if on_tinydb(store):
        assert isinstance(store_path, Path)
        for (table, record_id), values in BROKEN.items():
            hand_edit(store_path, table, record_id, lambda doc, v=values: doc.update(v))
        hand_edit(store_path, "contacts", "C-2", lambda doc: doc.pop("id"))
        return
    import psycopg

    with psycopg.connect(str(store_path), autocommit=True) as conn:
        for (table, record_id), values in BROKEN.items():
            conn.execute(
                f"UPDATE {table} SET doc = doc || %s::jsonb WHERE id = %s", (json.dumps(values), record_id)
            )
        conn.execute("UPDATE contacts SET doc = doc - 'id' WHERE number = 2")


@pytest.fixture
def broken(store: Store, store_path: Path | str, tmp_path: Path) -> Store:
    """A store built by crmkit, then edited by hand, opened afresh (as the next command would)."""
    build(store)
    break_by_hand(store, store_path)
    fresh = Store(store_path, actor="test", local_folder=tmp_path)
    yield fresh
    fresh.close()


def warnings_of(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "crmkit.store"]


def test_broken_values_read_as_empty_and_each_is_named_once(
    broken: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crmkit.store")
    hoa = broken.get("C-1")
    assert "email" not in hoa and "tags" not in hoa and hoa["name"] == "Nguyễn Thị Hoa"
    deal = broken.get("D-1")
    assert {"amount", "close_date", "stage_history"}.isdisjoint(deal) and deal["stage"] == "won"
    assert "lines" not in broken.get("I-1") and broken.get("I-1")["amount_paid"] == "100.00"
    assert "status" not in broken.get("CASE-1") and "contact" not in broken.get("ACT-1")
    assert [d["id"] for d in broken.all("deals")] == ["D-1"]
    (
        list(broken.all("contacts")),
        list(broken.each("invoices")),
        broken.ids("cases"),
    )  # read again: no more warnings

    where = "crm.json.d/" if on_tinydb(broken) else "postgresql://"
    found = warnings_of(caplog)
    expected = [
        ("contacts C-1: email 5 is not text; read as empty"),
        ("contacts C-1: tags 'vip' is not a list of tags; read as empty"),
        ("deals D-1: amount [1] is not a number"),
        ("deals D-1: close_date 20261215 is not a date (YYYY-MM-DD); read as empty"),
        ("deals D-1: stage_history 'moved to won' is not a list of entries; read as empty"),
        ("invoices I-1: lines 'Setup 1500' is not a list of lines; read as empty"),
        ("invoices I-1: total {'usd': 1650} is not a number"),
        ("cases CASE-1: status 3 is not one of: new, open, pending, resolved, closed; read as empty"),
        ("cases CASE-1: created_at 'yesterday' is not a date and time (ISO 8601); read as empty"),
        ("activities ACT-1: date [] is not a date and time (ISO 8601); read as empty"),
        ("activities ACT-1: contact 7 is not text; read as empty"),
    ]
    for text in expected:
        matching = [w for w in found if text in w]
        assert len(matching) == 1, (text, found)
        assert matching[0].startswith("warning: ") and where in matching[0]
    if on_tinydb(broken):  # the file to open, by name
        assert any(
            w.startswith("warning: ") and ".d/contacts.0.g" in w and "contacts C-1: email" in w for w in found
        )


def test_a_record_without_an_id_gets_the_id_of_its_number_or_is_left_out(
    broken: Store, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="crmkit.store")
    assert broken.get("C-2")["id"] == "C-2" and broken.get("C-2")["name"] == "Trần Văn Bình"
    # its number is its document's key (TinyDB) or its row's number column (PostgreSQL)
    assert [d["id"] for d in broken.all("contacts")] == ["C-1", "C-2"]
    assert any("contacts record number 2 has no id; read as C-2" in w for w in warnings_of(caplog))


def test_changing_a_broken_record_saves_it_sound(broken: Store, store_path: Path | str, tmp_path: Path,
                                                 caplog: pytest.LogCaptureFixture) -> None:  # fmt: skip
    broken.update("C-1", {"email": "hoa@saomai.vn"}, force=True)
    broken.update("C-2", {"title": "COO"})
    reopened = Store(store_path, actor="test", local_folder=tmp_path)
    caplog.clear()
    assert reopened.get("C-1")["email"] == "hoa@saomai.vn" and reopened.get("C-2")["id"] == "C-2"
    assert [d["id"] for d in reopened.all("contacts")] == ["C-1", "C-2"]
    assert not [w for w in warnings_of(caplog) if "contacts" in w]
    reopened.close()


@pytest.mark.tinydb_only
def test_only_files_changed_behind_crmkits_back_are_checked(store: Store, store_path: Path) -> None:
    build(store)
    sums = manifest(store_path)["tables"]["contacts"]["sums"]
    assert set(sums) == {"0"}  # crmkit vouches for what it wrote
    hand_edit(store_path, "contacts", "C-1", lambda doc: doc.update(email=5))
    fresh = Store(store_path, actor="test")
    assert fresh.backend.vouched("contacts", 1) is False and fresh.backend.vouched("deals", 1) is True
    fresh.update("C-2", {"title": "COO"})  # rewrites the file C-1 is in: still not vouched for
    assert "0" not in manifest(store_path)["tables"]["contacts"].get("sums", {})
    fresh.update("C-1", {"title": "CEO"})  # saved without the bad email: the file is sound again
    assert "0" in manifest(store_path)["tables"]["contacts"]["sums"]
    assert Store(store_path).backend.vouched("contacts", 1) is True


@pytest.mark.tinydb_only
def test_a_store_written_by_hand_in_tinydb_format_is_read(tmp_path: Path) -> None:
    """crm.json and one segment file typed by a person, as TinyDB (format 2) keeps them."""
    folder = tmp_path / "crm.json.d"
    folder.mkdir()
    contacts = {"contacts": {
        "1": {"id": "C-1", "name": "Ana", "email": "ana@example.com", "created_at": "2026-01-05T09:00:00+00:00"},
        "2": {"name": "Binh", "email": 42, "opt_out": "no"},
        "3": {"id": "C-9", "name": "Chi", "tags": ["vip"], "custom": "North"},
    }}  # fmt: skip
    (folder / "contacts.0.g1.json").write_text(json.dumps(contacts))
    entry = {"size": 1000, "segments": {"0": "contacts.0.g1.json"}, "active": 3, "archived": 0}
    (tmp_path / "crm.json").write_text(json.dumps({
        "_manifest": {"1": {"format": 2, "generation": 1, "tables": {"contacts": entry}, "indexes": {},
                            "states": {}, "retired": []}},
        "_meta": {"1": {"schema_version": 1, "sequences": {"contacts": 3}}},
    }))  # fmt: skip
    result = crmkit(tmp_path, "--store", str(tmp_path / "crm.json"), "contacts", "list", "--json")
    assert [(c["id"], c["name"], c["email"]) for c in json.loads(result.stdout)] == [
        ("C-1", "Ana", "ana@example.com"), ("C-2", "Binh", None), ("C-3", "Chi", None),
    ]  # fmt: skip
    file = folder / "contacts.0.g1.json"
    assert result.stderr.splitlines() == [
        f"warning: {file}: contacts record number 2 has no id; read as C-2",
        f"warning: {file}: contacts C-2: email 42 is not text; read as empty",
        f"warning: {file}: contacts C-2: opt_out 'no' is not true or false; read as empty",
        f"warning: {file}: contacts record number 3 has the id 'C-9'; read as C-3",
        f"warning: {file}: contacts C-3: custom 'North' is not a set of named values; read as empty",
    ]


# -- every command survives, and says it once, on stderr ---------------------------------------------


def crmkit(folder: Path, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    done = subprocess.run([sys.executable, "-m", "crmkit", *args], cwd=folder, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert done.returncode == code and "Traceback" not in done.stderr, (args, done.stdout, done.stderr)
    return done


COMMANDS = [
    ("contacts", "list"), ("contacts", "list", "--json"), ("contacts", "show", "C-1"), ("contacts", "show", "C-2"),
    ("accounts", "show", "A-1", "--json"), ("deals", "list"), ("deals", "show", "D-1"), ("invoices", "list"),
    ("invoices", "show", "I-1"), ("cases", "list"), ("activities", "list", "--json"),
    ("report", "pipeline"), ("report", "forecast"), ("report", "revenue"), ("report", "funnel"), ("report", "cases"),
    ("sync", "--create", "book.xlsx"), ("sync", "book.xlsx"),
]  # fmt: skip


def test_list_show_report_and_sync_survive_a_broken_store(
    broken: Store, store_path: Path | str, tmp_path: Path
) -> None:
    folder = tmp_path / "work"
    folder.mkdir()
    for args in COMMANDS:
        done = crmkit(folder, "--store", str(store_path), *args)
        lines = done.stderr.splitlines()
        assert all(line.startswith("warning: ") for line in lines), (args, done.stderr)
        assert len(lines) == len(set(lines)), (args, done.stderr)  # each named once
    assert "email 5 is not text" in crmkit(folder, "--store", str(store_path), "contacts", "list").stderr
    assert (folder / "book.xlsx").exists()
