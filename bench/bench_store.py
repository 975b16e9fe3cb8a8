"""crmkit's Store against plain TinyDB, on the same contacts, in one run.

    python bench/bench_store.py [--contacts 100000] [--lookups 10000] [--budget 20]

For each library, on the same generated contacts:

- add N contacts in one call (crmkit: ``Store.add_many``, which validates
  every row, checks duplicates and writes once; TinyDB: ``insert_multiple``);
- reopen the file (a new object) and look contacts up by email (crmkit:
  ``Store.find_by_email``; TinyDB: ``table.search(Query().email == e)``);
- add one contact to the N-contact file with a fresh object, which is what a
  single ``crmkit contacts add`` costs inside its process;
- the file's size.

Plain TinyDB re-reads and re-parses the whole file and scans every document
on each search, so the full set of look-ups would take a very long time:
as many as fit in ``--budget`` seconds (at least 20) are timed and the rest
extrapolated, and the table says so.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

from tinydb import Query, TinyDB

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crmkit.store import Store

T = TypeVar("T")


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def make_rows(n: int) -> list[dict[str, Any]]:
    return [{"name": f"Person {i}", "email": f"person{i}@example{i % 500}.com"} for i in range(n)]


def check_found(found: Sequence[Mapping[str, Any]], email: str) -> None:
    if len(found) != 1 or found[0]["email"] != email:
        raise SystemExit(f"look-up of {email} returned {found!r}")


def bench_crmkit(folder: Path, rows: list[dict[str, Any]], emails: list[str]) -> dict[str, Any]:
    path = folder / "crm.json"
    out: dict[str, Any] = {}

    out["add_many"], added = timed(lambda: Store(path, actor="bench").add_many("contacts", rows))
    assert len(added) == len(rows)
    del added
    gc.collect()
    out["size"] = path.stat().st_size

    reopened = Store(path, actor="bench")  # nothing loaded yet: the first look-up reads the file
    out["first"], found = timed(lambda: reopened.find_by_email("contacts", emails[0]))
    check_found(found, emails[0])
    results: list[list[dict[str, Any]]] = []

    def rest() -> None:
        for email in emails[1:]:
            results.append(reopened.find_by_email("contacts", email))

    out["rest"], _ = timed(rest)
    for email, found in zip(emails[1:], results, strict=True):
        check_found(found, email)
    out["lookups"] = out["first"] + out["rest"]
    out["lookup_count"] = len(emails)

    new = {"name": "One More", "email": "one.more@example.com"}
    # First on the Store already loaded (file unchanged since: no reload, indexes built),
    # then with a fresh Store, as a `crmkit contacts add` process does.
    out["add_one_warm"], _ = timed(
        lambda: reopened.add("contacts", {"name": "Two More", "email": "two.more@example.com"})
    )
    out["add_one_cold"], _ = timed(lambda: Store(path, actor="bench").add("contacts", new))
    out["size_after"] = path.stat().st_size
    assert Store(path).count("contacts") == len(rows) + 2
    return out


def bench_tinydb(
    folder: Path, rows: list[dict[str, Any]], emails: list[str], budget: float, minimum: int
) -> dict[str, Any]:
    path = folder / "tinydb.json"
    out: dict[str, Any] = {}

    db = TinyDB(path)  # the default JSONStorage
    out["add_many"], ids = timed(lambda: db.table("contacts").insert_multiple(rows))
    assert len(ids) == len(rows)
    db.close()
    del db, ids
    gc.collect()
    out["size"] = path.stat().st_size

    db = TinyDB(path)
    table = db.table("contacts")
    contact = Query()
    out["first"], found = timed(lambda: table.search(contact.email == emails[0]))
    check_found(found, emails[0])
    done, spent = 1, out["first"]
    while done < len(emails) and (spent < budget or done < minimum):
        email = emails[done]
        start = time.perf_counter()
        found = table.search(contact.email == email)
        spent += time.perf_counter() - start
        check_found(found, email)
        done += 1
    db.close()
    out["lookup_count"] = done
    out["lookups_measured"] = spent
    out["lookups"] = spent / done * len(emails)  # extrapolated when done < len(emails)

    db = TinyDB(path)
    out["add_one_cold"], _ = timed(
        lambda: db.table("contacts").insert({"name": "One More", "email": "one.more@example.com"})
    )
    db.close()
    out["size_after"] = path.stat().st_size
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000, help="contacts to add (default 100000)")
    parser.add_argument("--lookups", type=int, default=10_000, help="look-ups by email (default 10000)")
    parser.add_argument(
        "--budget", type=float, default=20.0, help="seconds for plain TinyDB's look-ups (default 20)"
    )
    parser.add_argument("--min-tinydb-lookups", type=int, default=20, help="even past the budget")
    parser.add_argument("--seed", type=int, default=1, help="which contacts are looked up")
    args = parser.parse_args(argv)

    n = args.contacts
    rows = make_rows(n)
    picks = random.Random(args.seed).sample(range(n), min(args.lookups, n))
    emails = [rows[i]["email"] for i in picks]

    print(f"crmkit store benchmark: {n:,} contacts, {len(emails):,} look-ups by email")
    print(f"Python {sys.version.split()[0]} on {sys.platform}")
    print()

    with tempfile.TemporaryDirectory(prefix="crmkit-bench-") as tmp:
        print("crmkit  ...", flush=True)
        crm = bench_crmkit(Path(tmp), rows, emails)
        rss_after_crmkit = peak_rss_mb()
        gc.collect()
        print("TinyDB  ...", flush=True)
        tdb = bench_tinydb(Path(tmp), rows, emails, args.budget, args.min_tinydb_lookups)

    extrapolated = tdb["lookup_count"] < len(emails)
    star = "*" if extrapolated else ""
    table = [
        (f"add {n:,} contacts in one call", crm["add_many"], tdb["add_many"], ""),
        ("reopen + first look-up by email", crm["first"], tdb["first"], ""),
        (f"{len(emails):,} look-ups by email{star}", crm["lookups"], tdb["lookups"], star),
        (
            f"mean look-up, ms (of {crm['lookup_count']:,} / {tdb['lookup_count']:,} timed)",
            crm["lookups"] / len(emails) * 1000,
            tdb["lookups_measured"] / tdb["lookup_count"] * 1000,
            "",
        ),
        (f"add 1 contact to the {n:,} file (fresh object)", crm["add_one_cold"], tdb["add_one_cold"], ""),
    ]

    print()
    head = f"{'operation (seconds unless noted)':<50} {'crmkit':>11} {'TinyDB':>12} {'TinyDB/crmkit':>14}"
    print(head)
    print("-" * len(head))
    for label, c, t, mark in table:
        ratio = t / c if c else float("inf")
        print(f"{label:<50} {c:>11.4f} {t:>11.4f}{mark or ' '} {ratio:>13.3g}x")
    cs, ts = crm["size"] / 1e6, tdb["size"] / 1e6
    print(f"{'file size after the bulk add, MB':<50} {cs:>11.2f} {ts:>12.2f} {ts / cs:>13.3g}x")
    print()
    print(
        f"crmkit: adding 1 contact with the Store that did the look-ups (loaded, indexed): {crm['add_one_warm']:.4f} s"
    )
    print(
        f"crmkit: {len(emails):,} look-ups = {crm['first']:.4f} s for the first "
        f"(reads and parses the file, builds the email index) + {crm['rest']:.4f} s for the other "
        f"{len(emails) - 1:,}"
    )
    if extrapolated:
        print(
            f"* TinyDB look-ups EXTRAPOLATED: {tdb['lookup_count']} measured in "
            f"{tdb['lookups_measured']:.2f} s ({tdb['lookups_measured'] / tdb['lookup_count']:.4f} s each, "
            f"a full file parse and scan per search), times {len(emails):,}"
        )
    else:
        print(f"TinyDB look-ups: all {tdb['lookup_count']:,} measured")
    print("(timings are in-process: a CLI command also pays interpreter start and imports)")
    print()
    print(f"peak RSS after the crmkit part: {rss_after_crmkit:.0f} MB")
    print(f"peak RSS of the whole run:      {peak_rss_mb():.0f} MB")
    print()
    startup()


#: Issue 13's start-up target: these commands on an empty store, wall time, in seconds.
STARTUP_TARGET = 0.15


def startup(repeat: int = 5) -> None:
    """Wall time of a few `crmkit` commands as a user starts them, beside `python -c pass`."""
    import os
    import subprocess

    crmkit = str(Path(sys.executable).with_name("crmkit"))
    with tempfile.TemporaryDirectory() as folder:
        env = {k: v for k, v in os.environ.items() if k not in ("CRMKIT_STORE", "CRMKIT_CONFIG")}
        subprocess.run([crmkit, "init"], cwd=folder, env=env, check=True, capture_output=True)
        runs = [
            ("python -c pass", [sys.executable, "-c", "pass"]),
            ("crmkit --version", [crmkit, "--version"]),
            ("crmkit contacts show EMAIL (empty store)", [crmkit, "contacts", "show", "ana@example.com"]),
            ("crmkit contacts list (empty store)", [crmkit, "contacts", "list"]),
        ]
        print(f"start-up, wall time, median of {repeat} (target <= {STARTUP_TARGET} s for crmkit's)")
        for label, argv in runs:
            times = []
            for _ in range(repeat):
                start = time.perf_counter()
                subprocess.run(argv, cwd=folder, env=env, capture_output=True)
                times.append(time.perf_counter() - start)
            median = sorted(times)[len(times) // 2]
            verdict = "" if argv[0] == sys.executable else ("PASS" if median <= STARTUP_TARGET else "FAIL")
            print(f"  {label:<45} {median:6.3f} s  {verdict}")


if __name__ == "__main__":
    main()
