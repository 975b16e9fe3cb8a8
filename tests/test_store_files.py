"""The embedded store's files (format 2): what a write touches, what it removes, how indexes grow.

These look at the files under ``crm.json.d`` themselves, so they are about the TinyDB
backend only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from storefiles import manifest
from tinydb import TinyDB

from crmkit.store import Store
from crmkit.store.buckets import BUCKET_BYTES
from crmkit.store.jsonfiles import GRACE_SECONDS, data_folder


def _files(path: Path) -> set[str]:
    return set(os.listdir(data_folder(path)))


def test_a_write_touches_only_the_files_of_what_it_changed(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    store = Store(path)
    with store.transaction():
        store.add_many("contacts", [{"name": f"P {i}", "email": f"p{i}@example.com"} for i in range(2500)])
        store.add_many("activities", [{"kind": "note", "subject": f"n{i}", "contact": "C-1"} for i in range(600)])
    before = manifest(path)
    assert sorted(before["tables"]["contacts"]["segments"]) == ["0", "1", "2"]  # 1000 contacts a file
    assert sorted(before["tables"]["activities"]["segments"]) == ["0", "1", "2"]  # 250 activities a file

    Store(path).update("C-1500", {"title": "CTO"})
    after = manifest(path)
    changed = {
        (table, seg)
        for table, entry in after["tables"].items()
        for seg, name in entry["segments"].items()
        if before["tables"][table]["segments"].get(seg) != name
    }
    assert changed == {("contacts", "1")}
    assert after["indexes"] == before["indexes"]  # the title is in no index

    Store(path).add("activities", {"kind": "call", "subject": "new", "contact": "C-7"})
    latest = manifest(path)
    assert latest["tables"]["contacts"] == after["tables"]["contacts"]
    assert [s for s, n in latest["tables"]["activities"]["segments"].items()
            if after["tables"]["activities"]["segments"].get(s) != n] == ["2"]  # fmt: skip
    changed_indexes = {k for k, v in latest["indexes"].items() if after["indexes"].get(k) != v}
    assert changed_indexes == {"activities link:contact"}


def test_superseded_files_stay_for_readers_then_go(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    Store(path).add("contacts", {"name": "A", "email": "a@example.com"})
    first = manifest(path)["tables"]["contacts"]["segments"]["0"]
    Store(path).update("C-1", {"title": "CEO"})
    assert first in _files(path)  # a reader of the previous manifest can still read it
    assert [name for name, _ in manifest(path)["retired"]].count(first) == 1
    # the grace period passes (the manifest records when each file was superseded)
    data = json.loads(path.read_text())
    data["_manifest"]["1"]["retired"] = [[n, at - GRACE_SECONDS - 1] for n, at in data["_manifest"]["1"]["retired"]]
    path.write_text(json.dumps(data))
    Store(path).update("C-1", {"title": "CFO"})
    assert first not in _files(path)
    assert Store(path).get("C-1")["title"] == "CFO"


def test_files_a_killed_writer_left_are_removed_and_committed_ones_never(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    Store(path).add("contacts", {"name": "A", "email": "a@example.com"})
    generation = manifest(path)["generation"]
    folder = data_folder(path)
    (folder / f"contacts.0.g{generation + 1}.json").write_text('{"contacts": {"1": ')  # torn, uncommitted
    (folder / f"contacts.email.0.g{generation + 1}.json").write_text("{}")
    stray_old = folder / "contacts.0.g0.json"  # older than the manifest: never deleted blindly
    stray_old.write_text('{"contacts": {}}')
    store = Store(path)
    assert store.get("C-1")["name"] == "A"  # readers only read what the manifest names
    store.add("contacts", {"name": "B", "email": "b@example.com"})
    names = _files(path)
    assert not any(n.endswith(f".g{generation + 1}.json") and n not in _named(path) for n in names)
    assert stray_old.exists()
    assert [c["name"] for c in Store(path).all("contacts")] == ["A", "B"]


def _named(path: Path) -> set[str]:
    m = manifest(path)
    names = {n for entry in m["tables"].values() for n in entry["segments"].values()}
    names |= {n for entry in m["indexes"].values() for n in [*entry["buckets"], entry["delta"]] if n}
    names |= {n for entry in m["states"].values() for n in entry["files"] if n}
    return names


def test_big_indexes_and_bookkeeping_tables_split_into_buckets(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    store = Store(path)
    long = "x" * 40
    with store.transaction():
        store.add_many("contacts", [{"name": f"P {i}", "email": f"{long}.{i}@example.com"} for i in range(6000)])
        for i in range(3000):
            store.set_state("inbox", f"sender-{i}@example.com", {"seen": i, "note": long})
    m = manifest(path)
    buckets = m["indexes"]["contacts email"]["buckets"]
    assert len(buckets) > 1 and len(buckets) & (len(buckets) - 1) == 0  # a power of two
    states = m["states"]["inbox"]["files"]
    assert len(states) > 1
    folder = data_folder(path)
    for name in [*buckets, *states]:
        assert (folder / name).stat().st_size <= BUCKET_BYTES
    reopened = Store(path)
    for i in (0, 1234, 5999):
        assert [c["id"] for c in reopened.find_by_email("contacts", f"{long}.{i}@EXAMPLE.com")] == [f"C-{i + 1}"]
    assert reopened.state("inbox", "sender-2999@example.com") == {
        "seen": 2999, "note": long, "key": "sender-2999@example.com"
    }  # fmt: skip
    assert [s["seen"] for s in reopened.states("inbox")] == list(range(3000))  # in the order they were made
    # a later write into a split index and table still lands in the right bucket
    reopened.add("contacts", {"name": "Late", "email": "late@example.com"})
    reopened.set_state("inbox", "sender-5@example.com", None)
    again = Store(path)
    assert [c["name"] for c in again.find_by_email("contacts", "late@example.com")] == ["Late"]
    assert again.state("inbox", "sender-5@example.com") is None
    assert len(again.states("inbox")) == 2999


def test_one_huge_bookkeeping_document_does_not_split_its_table(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    Store(path).set_state("sync", "book.xlsx", {"rows": ["r" * 100] * 5000})  # 500 KB in one document
    assert len(manifest(path)["states"]["sync"]["files"]) == 1
    assert len(Store(path).state("sync", "book.xlsx")["rows"]) == 5000  # type: ignore[index]


def test_every_file_is_tinydb_json(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    store = Store(path)
    store.add("contacts", {"name": "A", "email": "a@example.com"})
    store.set_state("imap", "x", {"uid": 1})
    with TinyDB(path, access_mode="r") as db:
        assert set(db.tables()) == {"_manifest", "_meta"}
    for name in _files(path):
        with TinyDB(data_folder(path) / name, access_mode="r") as db:
            assert len(db.tables()) == 1


def test_a_reader_sees_each_commit_without_reopening(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    reader = Store(path)
    writer = Store(path)
    writer.add("contacts", {"name": "A", "email": "a@example.com"})
    assert reader.count("contacts") == 1
    for n in range(5):
        writer.update("C-1", {"title": f"T{n}"})
        assert reader.get("C-1")["title"] == f"T{n}"


def test_index_changes_go_to_a_delta_merged_into_the_buckets_once_it_grows(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    store = Store(path)
    pad = "y" * 40
    store.add_many("contacts", [{"name": f"P {i}", "email": f"{pad}.{i}@example.com"} for i in range(5000)])
    entry = manifest(path)["indexes"]["contacts email"]
    assert entry["delta"] is None and len(entry["buckets"]) > 1  # one big commit: straight into buckets
    buckets = list(entry["buckets"])

    with store.transaction():
        for n in range(1, 101):
            store.update(f"C-{n}", {"email": f"moved.{n}@example.com"})
        for n in range(101, 111):
            store.archive(f"C-{n}")
    entry = manifest(path)["indexes"]["contacts email"]
    assert entry["buckets"] == buckets and entry["delta"]  # a small commit writes the delta only
    fresh = Store(path)
    assert fresh.find_by_email("contacts", f"{pad}.0@example.com") == []  # the old address is gone
    assert [c["id"] for c in fresh.find_by_email("contacts", "moved.1@example.com")] == ["C-1"]
    assert fresh.find_by_email("contacts", f"{pad}.100@example.com") == []
    assert [c["id"] for c in fresh.find_by_email("contacts", f"{pad}.100@example.com", archived=True)] == ["C-101"]
    assert [c["id"] for c in fresh.find_by_email("contacts", f"{pad}.4999@example.com")] == ["C-5000"]

    more = [{"name": f"Q {i}", "email": f"{pad}.q{i}@example.com"} for i in range(5000)]
    fresh.add_many("contacts", more)  # the delta outgrows DELTA_BYTES: merged into the buckets
    entry = manifest(path)["indexes"]["contacts email"]
    assert entry["delta"] is None
    last = Store(path)
    assert [c["id"] for c in last.find_by_email("contacts", "moved.100@example.com")] == ["C-100"]
    assert last.find_by_email("contacts", f"{pad}.5@example.com") == []
    assert [c["id"] for c in last.find_by_email("contacts", f"{pad}.102@example.com", archived=True)] == ["C-103"]
    assert [c["id"] for c in last.find_by_email("contacts", f"{pad}.q4999@example.com")] == ["C-10000"]
    assert [c["id"] for c in last.find_by_email("contacts", f"{pad}.200@example.com")] == ["C-201"]


def test_index_keys_with_tabs_newlines_and_percent_signs_survive_the_buckets(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    store = Store(path)
    odd = ["<a\tb@x>", "<c\nd@x>", "<50%25off@x>", "<50%off@x>", "<plain@x>", "<sp ace@x>"]
    filler = [{"kind": "email_in", "subject": f"f{i}", "message_id": f"<{'z' * 60}.{i}@x>"} for i in range(5000)]
    with store.transaction():
        for n, mid in enumerate(odd):
            store.add("activities", {"kind": "email_in", "subject": f"odd {n}", "message_id": mid})
        store.add_many("activities", filler)  # past DELTA_BYTES: merged into packed buckets
    assert manifest(path)["indexes"]["activities message_id"]["delta"] is None
    fresh = Store(path)
    for n, mid in enumerate(odd):
        assert [a["subject"] for a in fresh.find_by_message_id(mid)] == [f"odd {n}"], repr(mid)
    assert fresh.find_by_message_id("<a b@x>") == [] and fresh.find_by_message_id("<50@x>") == []
    assert [a["subject"] for a in fresh.find_by_message_id(f"<{'z' * 60}.4999@x>")] == ["f4999"]


def test_a_bucket_looked_up_often_gives_the_same_answers_as_a_cold_one(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    Store(path).add_many("contacts", [{"name": f"P {i}", "email": f"p{i}@example.com"} for i in range(300)])
    hot, cold = Store(path), Store(path)
    for _ in range(3):  # past HOT_BUCKET_LOOKUPS: the hot store keeps its buckets as dicts
        for i in range(0, 300, 7):
            assert [c["id"] for c in hot.find_by_email("contacts", f"p{i}@example.com")] == [f"C-{i + 1}"]
    assert hot.find_by_email("contacts", "nobody@example.com") == []
    for i in range(0, 300, 7):
        email = f"p{i}@example.com"
        assert hot.find_by_email("contacts", email) == cold.find_by_email("contacts", email)
    hot.update("C-8", {"email": "moved@example.com"})  # a change is seen through the delta
    assert hot.find_by_email("contacts", "p7@example.com") == []
    assert [c["id"] for c in hot.find_by_email("contacts", "moved@example.com")] == ["C-8"]


def test_hot_buckets_carried_across_a_delta_merge_answer_as_the_files_do(tmp_path: Path) -> None:
    """The poller's hot buckets keep their unpacked form under the names a merge gives them."""
    path = tmp_path / "crm.json"
    pad = "x" * 40
    people = [{"name": f"P {i}", "email": f"{pad}.{i}@example.com"} for i in range(20000)]
    Store(path).add_many("contacts", people)  # buckets enough that the merge below splits none
    before = manifest(path)["indexes"]["contacts email"]["buckets"]
    hot = Store(path)
    for i in range(0, 20000, 5):  # every bucket looked up past HOT_BUCKET_LOOKUPS: all hot
        assert [c["id"] for c in hot.find_by_email("contacts", f"{pad}.{i}@example.com")] == [f"C-{i + 1}"]
    with hot.transaction():
        hot.update("C-1", {"email": "moved@example.com"})
        hot.archive("C-2")
        hot.add_many("contacts", [{"name": f"Q {i}", "email": f"{pad}.q{i}@example.com"} for i in range(5000)])
    after = manifest(path)["indexes"]["contacts email"]
    assert after["delta"] is None and len(after["buckets"]) == len(before)  # merged, not split
    assert not set(after["buckets"]) & set(before)  # every bucket rewritten under a new name
    cold = Store(path)
    for email in [f"{pad}.{i}@example.com" for i in range(0, 20000, 37)] + [
        f"{pad}.q{i}@example.com" for i in range(0, 5000, 7)
    ] + ["moved@example.com", f"{pad}.0@example.com", f"{pad}.1@example.com"]:  # fmt: skip
        for archived in (False, True):
            found = hot.find_by_email("contacts", email, archived=archived)
            assert found == cold.find_by_email("contacts", email, archived=archived), email
    assert [c["id"] for c in hot.find_by_email("contacts", "moved@example.com")] == ["C-1"]
    assert [c["id"] for c in hot.find_by_email("contacts", f"{pad}.1@example.com", archived=True)] == ["C-2"]
