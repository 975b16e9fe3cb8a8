"""The store shared by real OS processes: no lost update, no torn file, a clear lock error.

Every test here starts real Python processes (``sys.executable -c``) that
each open their own :class:`crmkit.store.Store` on the same file; nothing of
crmkit is mocked. What each test would catch:

- two writers at once: a missing or broken lock (lost counter increments,
  lost or duplicated activity ids), and, through a lock-free reader running
  beside them, a file written in place (torn / empty reads) or a transaction
  that reaches the disk in pieces (counter and activities out of step);
- a writer SIGKILLed at random moments: a write that is not atomic (the file
  no longer parses, or loses records already reported committed), a lock that
  outlives its holder, temp files never cleaned up;
- a failing transaction: any byte written, or half-made changes kept in memory;
- a held lock: a wait without a limit, or an error that does not name the store.
"""

from __future__ import annotations

import contextlib
import itertools
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from crmkit.errors import DuplicateError, StoreLockedError
from crmkit.store import Store

ROOT = Path(__file__).resolve().parents[1]


def _spawn(code: str, *args: object) -> subprocess.Popen[str]:
    """A fresh Python process running ``code`` with ``args`` in sys.argv[1:]."""
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env["PYTHONUNBUFFERED"] = "1"
    return subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(code), *(str(a) for a in args)],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _reap(*procs: subprocess.Popen[str]) -> None:
    """Kill whatever a failed test left running (only our own children)."""
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired, ValueError):
            proc.communicate(timeout=10)


def _wait_for(paths: list[Path], procs: list[subprocess.Popen[str]], timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not all(p.exists() for p in paths):
        for proc in procs:
            if proc.poll() is not None:
                _, err = proc.communicate()
                pytest.fail(f"child exited early with {proc.returncode}:\n{err}")
        if time.monotonic() > deadline:
            pytest.fail(f"children not ready after {timeout} s")
        time.sleep(0.005)


def _temp_files(path: Path) -> list[Path]:
    return sorted(path.parent.glob(f".{path.name}.*.tmp"))


# -- 1. two writers at the same moment -------------------------------------

WRITER = """
    import json, sys, time
    from pathlib import Path
    from crmkit.store import Store

    path, name, go, n = sys.argv[1], sys.argv[2], Path(sys.argv[3]), int(sys.argv[4])
    store = Store(path, lock_timeout=60, actor=f"test:{name}")
    Path(path).with_name(f"ready-{name}").touch()
    while not go.exists():
        time.sleep(0.0005)
    start = time.time()
    for i in range(n):
        with store.transaction():
            counter = store.get("C-1")["custom"]["counter"]
            store.update("C-1", {"counter": counter + 1})
            store.add("activities", {"kind": "note", "subject": f"{name}-{i}", "contact": "C-1"})
        # Out of the lock for a moment: filelock's waiter polls every 50 ms, so a
        # writer that re-locks at once would run all its transactions in one burst.
        time.sleep(0.002)
    print(json.dumps({"start": start, "end": time.time()}))
"""

# Takes no lock, as crmkit's readers don't: every file it sees must be whole,
# and a transaction must show entirely or not at all (counter == activities).
READER = """
    import json, sys, time
    from pathlib import Path
    from crmkit.store import Store

    path, go, done = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
    store = Store(path)
    path.with_name("ready-reader").touch()
    while not go.exists():
        time.sleep(0.0005)
    folder = path.with_name(path.name + ".d")
    reads, problems, last = 0, [], -1
    while not done.exists() and len(problems) < 20:
        # the files themselves, as a script would read them: the manifest, then what it names
        raw = path.read_bytes()
        try:
            tables = json.loads(raw)["_manifest"]["1"]["tables"]
            segment = json.loads((folder / tables["contacts"]["segments"]["0"]).read_bytes())
            counter = segment["contacts"]["1"]["custom"]["counter"]
            entry = tables.get("activities") or {"segments": {}, "active": 0}
            activities = sum(
                len(json.loads((folder / name).read_bytes())["activities"]) for name in entry["segments"].values()
            )
        except Exception as exc:
            problems.append(f"torn read ({len(raw)} bytes of manifest): {exc!r}")
            continue
        if activities != entry["active"]:
            problems.append(f"the manifest counts {entry['active']} activities, its files hold {activities}")
        if counter != activities:
            problems.append(f"half a transaction visible: counter {counter}, {activities} activities")
        if counter < last:
            problems.append(f"counter went back from {last} to {counter}")
        last = counter
        try:
            seen = store.get("C-1")["custom"]["counter"]  # the Store API, reloading on change
        except Exception as exc:
            problems.append(f"Store.get failed: {exc!r}")
        else:
            if seen < counter:
                problems.append(f"Store.get saw {seen} after the file showed {counter}")
        reads += 1
        time.sleep(0.0002)
    print(json.dumps({"reads": reads, "problems": problems}))
"""


def test_two_processes_writing_at_once_lose_nothing(tmp_path: Path) -> None:
    n = 200
    path = tmp_path / "crm.json"
    Store(path).add("contacts", {"name": "Shared Counter", "email": "counter@example.com", "counter": 0})
    go, done = tmp_path / "go", tmp_path / "done"
    writers = [_spawn(WRITER, path, name, go, n) for name in ("a", "b")]
    reader = _spawn(READER, path, go, done)
    procs = [*writers, reader]
    try:
        _wait_for([tmp_path / "ready-a", tmp_path / "ready-b", tmp_path / "ready-reader"], procs)
        go.touch()  # both writers leave their busy-wait within a millisecond of each other
        spans = []
        for proc in writers:
            out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
            spans.append(json.loads(out))
        done.touch()
        out, err = reader.communicate(timeout=30)
        assert reader.returncode == 0, err
        reading = json.loads(out)
    finally:
        _reap(*procs)

    # The two loops really ran at the same time.
    assert max(s["start"] for s in spans) < min(s["end"] for s in spans)

    store = Store(path)
    assert store.get("C-1")["custom"]["counter"] == 2 * n
    activities = list(store.all("activities"))
    assert len(activities) == 2 * n
    assert len({a["id"] for a in activities}) == 2 * n
    subjects = sorted(a["subject"] for a in activities)
    assert subjects == sorted(f"{name}-{i}" for name in ("a", "b") for i in range(n))
    assert all(a["contact"] == "C-1" for a in activities)
    # The id sequence advanced once per activity: no id handed out twice.
    assert sorted(int(a["id"].split("-")[1]) for a in activities) == list(range(1, 2 * n + 1))
    # The writers took turns (each reloading what the other wrote), not one after the other.
    order = [a["subject"].split("-")[0] for a in sorted(activities, key=lambda a: int(a["id"].split("-")[1]))]
    assert sum(1 for x, y in itertools.pairwise(order) if x != y) >= 5
    # Each writer's own records are in its own order.
    for name in ("a", "b"):
        mine = [a["subject"] for a in activities if a["subject"].startswith(f"{name}-")]
        assert mine == [f"{name}-{i}" for i in range(n)]

    assert reading["problems"] == []
    assert reading["reads"] > 0
    assert _temp_files(path) == []


# -- 2. a writer killed in the middle of a write -----------------------------

KILLED_WRITER = """
    import sys
    from crmkit.store import Store

    path, tag = sys.argv[1], sys.argv[2]
    store = Store(path, lock_timeout=30)
    i = 0
    while True:
        with store.transaction():
            store.add("contacts", {"name": f"{tag} {i}", "email": f"{tag}-{i}@example.com", "bio": "y" * 400})
            n = store.count("contacts")
        print(n)  # only once the transaction is over: this count is committed
        i += 1  # the parent starts its kill timer at the first line, with the writer in its stride
"""


def _uncommitted(path: Path) -> list[str]:
    """What a writer has written but not committed: a temporary manifest, files of a later generation."""
    generation = json.loads(path.read_bytes())["_manifest"]["1"]["generation"]
    folder = path.with_name(path.name + ".d")
    later = [n for n in os.listdir(folder) if int(n.rsplit(".g", 1)[1].split(".")[0]) > generation]
    return [p.name for p in _temp_files(path)] + later


def _wait_for_a_write(path: Path, proc: subprocess.Popen[str], limit: float = 2.0) -> None:
    """Busy-wait until the writer is inside a commit (files written, manifest not yet), or ``limit``."""
    deadline = time.monotonic() + limit
    while time.monotonic() < deadline and proc.poll() is None:
        with contextlib.suppress(ValueError, OSError, KeyError):
            if _uncommitted(path):
                return


def _load_checked(path: Path) -> int:
    """The store must load both as raw JSON files and through a new Store; its contact count."""
    folder = path.with_name(path.name + ".d")
    entry = json.loads(path.read_bytes())["_manifest"]["1"]["tables"]["contacts"]
    docs: dict[str, dict[str, object]] = {}
    for name in entry["segments"].values():
        docs.update(json.loads((folder / name).read_bytes())["contacts"])
    count = Store(path).count("contacts")
    assert count == len(docs) == entry["active"]
    for key, doc in docs.items():
        assert doc["id"] == f"C-{key}"
    return count


def test_writer_killed_mid_write_leaves_a_whole_store(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    seed = [{"name": f"Seed {i}", "email": f"seed{i}@example.com", "bio": "x" * 400} for i in range(5000)]
    Store(path).add_many("contacts", seed)

    rng = random.Random(20240611)
    before = _load_checked(path)
    start_count = before
    kills_mid_write = 0
    rounds = 15
    for round_no in range(rounds):
        # Two kills in three land at a random moment; the third waits for the writer
        # to be inside a commit first (new files written, the manifest not yet
        # replaced), as that lasts only a few ms, so random kills alone seldom hit it.
        aimed = round_no % 3 == 2
        proc = _spawn(KILLED_WRITER, path, f"r{round_no}")
        try:
            assert proc.stdout is not None
            first = proc.stdout.readline()  # the first transaction is committed
            assert first.strip().isdigit(), proc.stderr.read() if proc.stderr else ""
            time.sleep(rng.uniform(0.05, 0.4))
            if aimed:
                _wait_for_a_write(path, proc)
            proc.send_signal(signal.SIGKILL)
            out, err = proc.communicate(timeout=30)
        finally:
            _reap(proc)
        assert proc.returncode == -signal.SIGKILL, err
        committed = [int(line) for line in (first + out).split()]

        if _uncommitted(path):
            kills_mid_write += 1  # killed between writing its files and replacing the manifest
        after = _load_checked(path)
        assert after >= before, f"round {round_no}: {before} contacts before the kill, {after} after"
        if committed:
            assert after >= max(committed), f"round {round_no}: reported {max(committed)} committed"
        before = after

    assert before > start_count  # the writers made progress between kills
    assert kills_mid_write >= 1, "no kill landed inside a write; the test proved nothing about tearing"

    # A stale temp file of some other killed writer, besides any left above.
    (tmp_path / ".crm.json.4242.deadbeef.tmp").write_text('{"contacts": {"1": ')
    assert _temp_files(path)
    store = Store(path, lock_timeout=5)  # a lock left by a killed process must not block
    store.add("contacts", {"name": "After The Storm", "email": "after@example.com"})
    assert _uncommitted(path) == []
    assert _load_checked(path) == before + 1
    assert [d["name"] for d in Store(path).find_by_email("contacts", "after@example.com")] == [
        "After The Storm"
    ]
    # The seed is all there.
    reopened = Store(path)
    assert all(reopened.find_by_email("contacts", f"seed{i}@example.com") for i in range(0, 5000, 97))


def test_failed_transaction_writes_nothing_and_forgets_its_changes(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    store = Store(path)
    store.add("contacts", {"name": "Ana Lima", "email": "ana@example.com", "counter": 1})
    before = path.read_bytes()
    stamp = path.stat()
    files = sorted(os.listdir(path.with_name("crm.json.d")))

    with pytest.raises(RuntimeError, match="boom"), store.transaction():
        store.update("C-1", {"name": "Ana Changed", "counter": 2})
        store.add("contacts", {"name": "Bo Half", "email": "bo@example.com"})
        store.add("activities", {"kind": "note", "subject": "half done", "contact": "C-1"})
        assert store.get("C-1")["name"] == "Ana Changed"  # visible inside the transaction...
        raise RuntimeError("boom")

    assert path.read_bytes() == before
    assert path.stat().st_ino == stamp.st_ino and path.stat().st_mtime_ns == stamp.st_mtime_ns
    assert _temp_files(path) == [] and sorted(os.listdir(path.with_name("crm.json.d"))) == files
    # ...and gone after it, in this same Store object, indexes included.
    assert store.get("C-1")["name"] == "Ana Lima"
    assert store.get("C-1")["custom"]["counter"] == 1
    assert not store.exists("C-2")
    assert store.count("contacts") == 1
    assert store.count("activities") == 0
    assert store.find_by_email("contacts", "bo@example.com") == []
    assert [d["id"] for d in store.find_by_email("contacts", "ana@example.com")] == ["C-1"]
    # The id sequence was not advanced by the thrown-away add.
    assert store.add("contacts", {"name": "Bo Real", "email": "bo@example.com"})["id"] == "C-2"

    # add_many is all or nothing: a duplicate in the middle keeps the file as it was.
    before = path.read_bytes()
    rows = [
        {"name": "Cy", "email": "cy@example.com"},
        {"name": "Ana Again", "email": "ANA@example.com"},
        {"name": "Di", "email": "di@example.com"},
    ]
    with pytest.raises(DuplicateError):
        store.add_many("contacts", rows)
    assert path.read_bytes() == before
    assert store.find_by_email("contacts", "cy@example.com") == []
    assert Store(path).count("contacts") == 2


# -- 3. a lock held too long ----------------------------------------------------

HOLDER = """
    import sys, time
    from pathlib import Path
    from crmkit.store import Store

    path, release = sys.argv[1], Path(sys.argv[2])
    store = Store(path)
    with store.transaction():
        print("locked")
        deadline = time.monotonic() + 60
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.01)
"""


def test_lock_held_by_another_process_raises_store_locked_error(tmp_path: Path) -> None:
    path = tmp_path / "crm.json"
    Store(path).add("contacts", {"name": "Ana Lima", "email": "ana@example.com"})
    before = path.read_bytes()
    release = tmp_path / "release"
    holder = _spawn(HOLDER, path, release)
    try:
        assert holder.stdout is not None
        assert holder.stdout.readline().strip() == "locked", holder.stderr.read() if holder.stderr else ""

        waiting = Store(path, lock_timeout=0.5)
        started = time.monotonic()
        with pytest.raises(StoreLockedError) as excinfo:
            waiting.add("contacts", {"name": "Bo", "email": "bo@example.com"})
        waited = time.monotonic() - started
        assert 0.45 <= waited < 5
        assert str(path) in str(excinfo.value)
        assert path.read_bytes() == before
        # Readers take no lock: reading still works while a writer holds it.
        assert Store(path).count("contacts") == 1
        assert waiting.get("C-1")["name"] == "Ana Lima"

        release.touch()
        _, err = holder.communicate(timeout=30)
        assert holder.returncode == 0, err
    finally:
        _reap(holder)

    # Once the holder is gone, the same Store object gets through.
    assert waiting.add("contacts", {"name": "Bo", "email": "bo@example.com"})["id"] == "C-2"
    assert Store(path).count("contacts") == 2
