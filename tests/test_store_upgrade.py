"""A store written by the one-file release (format 1) upgraded to format 2, losing nothing.

``tests/fixtures/store-v1/crm.json`` was written by that release (its README says how).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from storefiles import manifest
from tinydb import TinyDB

from crmkit.store import Store
from crmkit.store.jsonfiles import data_folder
from crmkit.store.upgrade import upgrade_store

FIXTURE = Path(__file__).parent / "fixtures" / "store-v1" / "crm.json"
ROOT = Path(__file__).resolve().parents[1]
RECORD_TABLES = ("leads", "contacts", "accounts", "deals", "invoices", "cases", "activities")


@pytest.fixture
def v1_store(tmp_path: Path) -> Path:
    path = tmp_path / "crm.json"
    shutil.copyfile(FIXTURE, path)
    return path


def _v1() -> dict[str, Any]:
    return json.loads(FIXTURE.read_bytes())  # type: ignore[no-any-return]


def _assert_everything_kept(path: Path) -> None:
    old = _v1()
    store = Store(path)
    for table in RECORD_TABLES:
        docs = old.get(table, {})
        kept = list(store.all(table, archived=True))
        assert kept == [docs[k] for k in sorted(docs, key=int)], table
        assert store.count(table, archived=True) == len(docs)
    assert store.backend.meta() == old["_meta"]["1"]  # id sequences, number counters, revision
    for table in ("_sync", "_imap"):
        name = table[1:]
        assert store.states(name) == [old[table][k] for k in sorted(old[table], key=int)]
        for doc in old[table].values():
            assert store.state(name, doc["key"]) == doc


def test_first_open_upgrades_and_keeps_a_backup(v1_store: Path) -> None:
    original = v1_store.read_bytes()
    store = Store(v1_store)
    assert store.get("C-9")["name"] == "Zoë Ångström"  # reading is enough to upgrade
    assert v1_store.with_name("crm.json.v1-backup").read_bytes() == original
    assert manifest(v1_store)["format"] == 2
    _assert_everything_kept(v1_store)
    # the indexes were built: look-ups by email, number, link, message id
    assert [c["id"] for c in store.find_by_email("contacts", "ZOE@example.se")] == ["C-9"]
    assert [c["id"] for c in store.find_by_email("contacts", "old@example.com", archived=True)] == ["C-10"]
    assert store.lookup("invoices", "INV-2025-0001")["id"] == "I-4"
    assert [a["id"] for a in store.linked("activities", "contact", "C-9")] == ["ACT-1", "ACT-2"]
    assert [a["id"] for a in store.find_by_message_id("<abc@example.se>")] == ["ACT-1"]
    # ids and invoice numbers go on from the old counters, never reused
    assert store.add("contacts", {"name": "New", "email": "new@example.com"})["id"] == "C-11"
    invoice = store.add("invoices", {"account": "A-1", "issue_date": "2025-06-01", "currency": "EUR"})
    assert (invoice["id"], invoice["number"]) == ("I-5", "INV-2025-0002")
    # every file is TinyDB JSON
    for file in data_folder(v1_store).iterdir():
        with TinyDB(file, access_mode="r") as db:
            assert db.tables()


def test_store_upgrade_command_then_nothing_to_do(v1_store: Path, run) -> None:
    first = json.loads(run("--store", str(v1_store), "store", "upgrade", "--json").stdout)
    assert first["upgraded"] is True and (first["from_format"], first["to_format"]) == (1, 2)
    assert first["tables"]["contacts"] == 10 and first["tables"]["_sync"] == 1
    assert Path(first["backup"]).read_bytes() == FIXTURE.read_bytes()
    again = run("--store", str(v1_store), "store", "upgrade")
    assert "already in format 2; nothing to do" in again.stdout
    _assert_everything_kept(v1_store)
    assert sorted(p.name for p in v1_store.parent.glob("crm.json.v1-backup*")) == ["crm.json.v1-backup"]


def test_upgrade_of_a_missing_store_is_one_clear_line(tmp_path: Path, run) -> None:
    result = run("--store", str(tmp_path / "nope.json"), "store", "upgrade", code=1)
    assert "no store at" in result.stderr and "nope.json" in result.stderr
    assert "crmkit init" in result.stderr  # and how to make one


OPEN_AND_ADD = """
import sys
from crmkit.store import Store
path, name = sys.argv[1], sys.argv[2]
Store(path).add("contacts", {"name": name, "email": name + "@example.com"})
"""


def test_two_processes_opening_an_old_store_at_once_upgrade_it_once(v1_store: Path) -> None:
    procs = [
        subprocess.Popen([sys.executable, "-c", OPEN_AND_ADD, str(v1_store), name], cwd=ROOT, stderr=subprocess.PIPE)
        for name in ("first", "second")
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err
    store = Store(v1_store)
    assert sorted(c["name"] for c in store.all("contacts"))[-2:] == ["first", "second"]
    assert {c["id"] for c in store.find_by_email("contacts", "first@example.com")} | {
        c["id"] for c in store.find_by_email("contacts", "second@example.com")
    } == {"C-11", "C-12"}
    assert sorted(p.name for p in v1_store.parent.glob("crm.json.v1-backup*")) == ["crm.json.v1-backup"]


def test_an_upgrade_killed_at_any_moment_leaves_the_old_file_or_the_new_store(tmp_path: Path) -> None:
    """SIGKILL during the upgrade of a big old store: never half of each; running again finishes."""
    path = tmp_path / "crm.json"
    old = _v1()
    contacts = {str(n): {"id": f"C-{n}", "name": f"Person {n}", "email": f"p{n}@example.com", "bio": "b" * 300}
                for n in range(1, 20001)}  # fmt: skip
    old["contacts"] = contacts
    old["_meta"]["1"]["sequences"]["contacts"] = 20000
    original = json.dumps(old).encode()
    path.write_bytes(original)
    rng = random.Random(7)
    folder = data_folder(path)
    mid_upgrade = 0
    for round_no in range(8):
        proc = subprocess.Popen(
            [sys.executable, "-m", "crmkit", "--store", str(path), "store", "upgrade"],
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if round_no % 2:  # aimed: once it has started writing files
            deadline = time.monotonic() + 10
            while not (folder.exists() and os.listdir(folder)) and time.monotonic() < deadline:
                time.sleep(0.001)
            time.sleep(rng.uniform(0, 0.03))
        else:
            time.sleep(rng.uniform(0.05, 0.5))
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        data = json.loads(path.read_bytes())
        if "_manifest" in data:
            break  # this run committed before its kill
        assert path.read_bytes() == original  # untouched until the manifest replaces it
        if folder.exists() and os.listdir(folder):
            mid_upgrade += 1
    assert mid_upgrade >= 1, "no kill landed while the upgrade was writing; the test proved nothing"
    upgrade_store(path)  # finishes what the killed runs started (or finds it done)
    store = Store(path)
    assert store.count("contacts") == 20000
    assert store.get("C-20000")["email"] == "p20000@example.com"
    assert [c["id"] for c in store.find_by_email("contacts", "p12345@example.com")] == ["C-12345"]
    for backup in path.parent.glob("crm.json.v1-backup*"):
        assert backup.read_bytes() == original
    # files a killed run wrote and never committed are gone
    named = {n for entry in manifest(path)["tables"].values() for n in entry["segments"].values()}
    assert named <= set(os.listdir(data_folder(path)))


def test_records_plain_tinydb_adds_to_crm_json_join_the_store(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    Store(path).add("contacts", {"name": "Ana", "email": "ana@example.com"})
    TinyDB(path).table("contacts").insert({"name": "From TinyDB", "email": "tiny@example.com"})
    store = Store(path)
    # number 1 was taken, so the document TinyDB numbered 1 gets the next free number
    assert [(c["id"], c["name"]) for c in store.all("contacts")] == [("C-1", "Ana"), ("C-2", "From TinyDB")]
    assert [c["id"] for c in store.find_by_email("contacts", "tiny@example.com")] == ["C-2"]
    assert "contacts" not in json.loads(path.read_bytes())
    assert store.add("contacts", {"name": "B"})["id"] == "C-3"
    assert not list(path.parent.glob("crm.json.v1-backup*"))  # not an old-format store: no backup
