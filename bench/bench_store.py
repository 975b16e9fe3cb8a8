"""crmkit's Store against plain TinyDB, on the same contacts, in one run.

    python bench/bench_store.py [--contacts 100000] [--lookups 10000] [--budget 20]
                                [--sizes S1,S2] [--keep] [--profile DIR] [--postgres]

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

Then issue 13's sizes (``--sizes S1,S2``, the default; S3 is opt-in, it takes a
while to build): S1 = 1k contacts + 10k activities, S2 = 10k + 100k, S3 =
50k + 500k, with accounts, deals and 1-2 KB of mail text per activity over
three years. Each is built with the library (one transaction) and copied into
an equivalent SQLite database (indexes on email and on the account/contact
links). Five CLI commands run as fresh processes on the TinyDB store, each
beside a fresh Python process doing the same with sqlite3
(bench/store_child.py): wall time (median of 3), the ratio, and the child's
own peak RSS. Then one library transaction adding an activity, in-process,
on an open store and with opening it. Data goes under TMPDIR (``--keep``
keeps it; ``--postgres`` also copies each size into a private PostgreSQL server
with durable settings and runs the same commands there; ``--profile DIR`` also
runs each command once under cProfile at
the largest size). Last, the start-up times.
"""

from __future__ import annotations

import argparse
import gc
import random
import resource
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
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
    out["size"] = store_bytes(path)

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
    out["size_after"] = store_bytes(path)
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


# -- issue 13's sizes: the CLI on a store with history, beside SQLite ---------------------------

#: name -> (contacts, activities); accounts are a tenth of the contacts, deals a quarter.
SIZES: dict[str, tuple[int, int]] = {"S1": (1_000, 10_000), "S2": (10_000, 100_000), "S3": (50_000, 500_000)}
#: Issue 13's targets for a CLI command: wall time, times SQLite's, peak RSS of the process.
CLI_WALL_TARGET = 0.3
CLI_RATIO_TARGET = 3.0
RSS_TARGET_MB = 300.0
#: ... and for one library transaction adding one activity, the store already open.
TXN_TARGET = 0.020
REPEAT = 3
CHILD = Path(__file__).with_name("store_child.py")
#: The activities' dates: three years.
HISTORY_START = datetime(2023, 7, 1, tzinfo=UTC)
HISTORY_DAYS = 3 * 365

#: Names to make people and companies from.
_FIRST = (
    "Ana Binh Carla David Elena Farid Greta Hiro Ines Jonas Kavya Liam Mai Nikolai Olivia Pedro Quynh "
    "Rosa Sven Tomoko Umar Vera Wen Ximena Yusuf Zofia"
)
_LAST = (
    "Nguyen Tran Klein Okafor Rossi Silva Novak Jensen Haddad Kowalski Moreau Tanaka Schmidt Laurent "
    "Fischer Costa Ivanova Mensah Larsen Ortega Petrov Sato Weber Yilmaz"
)
_COMPANY = (
    "Sao Mai|Nordlicht|Harbourview|Bluestone|Cedar|Kestrel|Lumen|Meridian|Northwind|Orchid|Pioneer|"
    "Quarry|Riverside|Summit|Tidewater|Union|Vantage|Willow|Zenith|Atlas"
)
FIRST, LAST, COMPANY = tuple(_FIRST.split()), tuple(_LAST.split()), tuple(_COMPANY.split("|"))
COMPANY_KIND = ("Logistics", "Software", "Dental Group", "Coffee Roasters", "Engineering", "Foods", "Media")
INDUSTRIES = ("Logistics", "Software", "Healthcare", "Food & beverage", "Manufacturing", "Media", "Retail")
REGIONS = ("Germany", "Vietnam", "France", "United States", "Brazil", "Japan", "Kenya", "Poland")
OWNERS = ("ana", "binh", "carla", "david", "sarah")
TITLES = ("CEO", "CFO", "Head of Operations", "Procurement Manager", "IT Lead", "Office Manager", "Buyer")
STAGES = (
    ("prospecting", 3),
    ("qualification", 3),
    ("proposal", 2),
    ("negotiation", 2),
    ("won", 2),
    ("lost", 2),
)
PRODUCTS = (
    "the fleet dashboard",
    "the annual licence",
    "the onboarding package",
    "the support plan",
    "route planning",
)
SENTENCES = (
    "Thanks for the call on {day}, it was good to go through {product} with your team.",
    "As promised, I am sending over the revised figures for {product}.",
    "Could you confirm whether the {n} seats we discussed are still the right number?",
    "Our finance team asked me to check the payment terms before we sign anything.",
    "The quote for {product} comes to {amount} {ccy} before tax, valid until the end of {month}.",
    "I have attached the signed order form; please let me know if anything is missing.",
    "We ran into an issue with the export last {day}, the file stopped after {n} rows.",
    "Would {day} at {hour}:00 work for a short demo with our operations lead?",
    "Following up on my last message: is there anything else you need from our side?",
    "Our board meets in {month}, so a decision before then would help us a lot.",
    "The pilot went well overall, although the reports took longer to load than expected.",
    "I am out of the office until {day}; for anything urgent please contact my colleague.",
    "Please find below the summary of what we agreed in the meeting.",
    "We would like to extend the contract to {n} more sites from {month}.",
    "Can you send the invoice to our accounts payable address instead of mine?",
    "The delivery to the warehouse arrived on {day}, but two pallets were missing.",
    "I forwarded your proposal to our procurement team, they will be in touch shortly.",
    "Let us keep the price at {amount} {ccy} and revisit the volume discount next quarter.",
)
DAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday")
MONTHS = ("January", "March", "May", "July", "September", "November")


def sentence_pool(rng: random.Random, size: int = 3000) -> list[str]:
    return [
        rng.choice(SENTENCES).format(
            day=rng.choice(DAYS),
            product=rng.choice(PRODUCTS),
            n=rng.randint(2, 400),
            amount=f"{rng.randint(1, 900) * 100:,}",
            ccy=rng.choice(("USD", "EUR")),
            month=rng.choice(MONTHS),
            hour=rng.randint(8, 17),
        )
        for _ in range(size)
    ]


def mail_body(rng: random.Random, pool: list[str], to_first: str, signature: str, quoted: str) -> str:
    """1-2 KB of mail: greeting, paragraphs, signature, sometimes the message it answers, quoted."""
    target = rng.randint(1000, 2000) - len(signature)
    parts = [f"Hi {to_first},\n"]
    size = len(parts[0])
    while size < target:
        paragraph = " ".join(rng.choices(pool, k=rng.randint(2, 4)))
        parts.append(paragraph + "\n")
        size += len(paragraph) + 2
        if quoted and size < target - 300 and rng.random() < 0.2:
            lines = "\n".join("> " + s for s in rng.choices(pool, k=3))
            parts.append(f"{quoted} wrote:\n{lines}\n")
            size += len(parts[-1]) + 1
    text = "\n".join(parts)
    if len(text) > target:
        text = text[:target].rsplit(" ", 1)[0] + "…"
    return f"{text}\n\n{signature}"


@dataclass
class Built:
    """A size's stores, how long they took, and what the commands look up."""

    name: str
    contacts: int
    activities: int
    accounts: int
    deals: int
    store: Path
    db: Path
    crmkit_build: float = 0.0
    sqlite_build: float = 0.0
    probe_email: str = ""
    probe_activities: int = 0
    probe_account: str = ""
    probe_account_contacts: int = 0


def build_crmkit(built: Built, seed: int) -> None:
    """The store, with the library: accounts, contacts, deals and activities, in one transaction."""
    rng = random.Random(seed)
    pool = sentence_pool(rng)
    n_accounts, n_contacts, n_deals = built.accounts, built.contacts, built.deals
    domains = [f"{COMPANY[i % len(COMPANY)].lower().replace(' ', '')}{i}.example" for i in range(n_accounts)]
    firsts = [rng.choice(FIRST) for _ in range(n_contacts)]
    lasts = [rng.choice(LAST) for _ in range(n_contacts)]
    emails = [
        f"{firsts[i].lower()}.{lasts[i].lower()}.{i}@{domains[i % n_accounts]}" for i in range(n_contacts)
    ]
    timeline = [0] * n_contacts
    stage_names = [s for s, weight in STAGES for _ in range(weight)]
    store = Store(built.store, actor="bench")
    start = time.perf_counter()
    with store.transaction():
        store.create()
        for i in range(n_accounts):
            store.add(
                "accounts",
                {
                    "name": f"{COMPANY[i % len(COMPANY)]} {COMPANY_KIND[i % len(COMPANY_KIND)]} {i}",
                    "domain": domains[i],
                    "industry": rng.choice(INDUSTRIES),
                    "tier": rng.choice("ABC"),
                    "region": rng.choice(REGIONS),
                    "owner": rng.choice(OWNERS),
                },
            )
        for i in range(n_contacts):
            store.add(
                "contacts",
                {
                    "name": f"{firsts[i]} {lasts[i]}",
                    "email": emails[i],
                    "phone": f"+1 555 {i:07d}",
                    "title": rng.choice(TITLES),
                    "account": f"A-{i % n_accounts + 1}",
                    "owner": rng.choice(OWNERS),
                },
            )
        for k in range(n_deals):  # deal k belongs to contact 4k (index), and to its account
            c = 4 * k % n_contacts
            store.add(
                "deals",
                {
                    "title": f"{rng.choice(PRODUCTS).removeprefix('the ').capitalize()} for {domains[c % n_accounts]}",
                    "account": f"A-{c % n_accounts + 1}",
                    "contact": f"C-{c + 1}",
                    "stage": rng.choice(stage_names),
                    "amount": Decimal(rng.randint(5, 2000) * 100),
                    "currency": "EUR" if rng.random() < 0.25 else "USD",
                    "close_date": (HISTORY_START + timedelta(days=rng.randrange(HISTORY_DAYS + 180))).date(),
                    "owner": rng.choice(OWNERS),
                },
            )
        for j in range(built.activities):
            c = rng.randrange(n_contacts)
            timeline[c] += 1
            when = HISTORY_START + timedelta(seconds=rng.randrange(HISTORY_DAYS * 86400))
            kind = rng.choices(("email_in", "email_out", "call", "note"), (45, 45, 5, 5))[0]
            owner = OWNERS[c % len(OWNERS)]
            signature = f"Best regards,\n{firsts[c]} {lasts[c]}\n{domains[c % n_accounts]}"
            if kind == "email_out":
                signature = f"Kind regards,\n{owner.capitalize()}\nAcme Sales"
            values: dict[str, Any] = {
                "kind": kind,
                "subject": ("Re: " if rng.random() < 0.5 else "") + rng.choice(pool)[:60],
                "body": mail_body(
                    rng,
                    pool,
                    owner.capitalize() if kind != "email_out" else firsts[c],
                    signature,
                    f"On {when:%a %d %b %Y}, {firsts[c]} {lasts[c]}",
                ),
                "date": when,
                "contact": f"C-{c + 1}",
                "account": f"A-{c % n_accounts + 1}",
                "owner": owner,
                "created_at": when,
                "updated_at": when,
            }
            if kind.startswith("email"):
                ours = f"{owner}@acme.example"
                values["sender"], values["recipients"] = (
                    (emails[c], ours) if kind == "email_in" else (ours, emails[c])
                )
                values["message_id"] = f"<{j}.{when:%Y%m%d%H%M%S}@{domains[c % n_accounts]}>"
            if c % 4 == 0 and c // 4 < n_deals and rng.random() < 0.5:
                values["deal"] = f"D-{c // 4 + 1}"
            store.add("activities", values, allow_system=True)
    built.crmkit_build = time.perf_counter() - start
    probe = n_contacts // 2
    built.probe_email = emails[probe]
    built.probe_activities = timeline[probe]
    built.probe_account = f"A-{probe % n_accounts + 1}"
    built.probe_account_contacts = sum(1 for i in range(n_contacts) if i % n_accounts == probe % n_accounts)


def build_sqlite(built: Built) -> None:
    """The same records, read back from the store's file, in SQLite: one table per record type."""
    import sqlite3

    import orjson

    from crmkit.records.schema import RECORD_TYPES

    def cell(value: Any) -> Any:
        if isinstance(value, (dict, list)):
            return orjson.dumps(value).decode()
        if isinstance(value, bool):
            return int(value)
        return value

    start = time.perf_counter()
    store = Store(built.store)
    con = sqlite3.connect(built.db)
    with con:
        for table, rt in RECORD_TYPES.items():
            docs = {d["id"].rsplit("-", 1)[1]: d for d in store.all(table, archived=True)}
            columns = [f.name for f in rt.fields] + ["custom", "_rev"]
            spec = ", ".join(f'"{c}"' for c in columns)
            con.execute(f'CREATE TABLE "{table}" (num INTEGER PRIMARY KEY, {spec})')
            con.executemany(
                f'INSERT INTO "{table}" VALUES ({", ".join("?" for _ in range(len(columns) + 1))})',
                ([int(key), *(cell(doc.get(c)) for c in columns)] for key, doc in docs.items()),
            )
        con.execute("CREATE INDEX contacts_email ON contacts (email)")
        con.execute("CREATE INDEX leads_email ON leads (email)")
        con.execute("CREATE INDEX leads_converted_contact ON leads (converted_contact)")
        for table in ("contacts", "deals", "activities", "cases", "invoices", "quotes"):
            con.execute(f"CREATE INDEX {table}_account ON {table} (account)")
        for table in ("deals", "activities", "cases", "invoices", "quotes"):
            con.execute(f"CREATE INDEX {table}_contact ON {table} (contact)")
    con.close()
    del store, docs
    gc.collect()
    built.sqlite_build = time.perf_counter() - start


def store_bytes(path: Path) -> int:
    """The size of a TinyDB store: its manifest and the files under crm.json.d."""
    folder = path.with_name(path.name + ".d")
    files = list(folder.iterdir()) if folder.is_dir() else []
    return path.stat().st_size + sum(f.stat().st_size for f in files)


def launched(argv: list[str], cwd: Path) -> dict[str, Any]:
    """Run ``argv`` under the launcher: its wall time and its own peak RSS."""
    import json
    import os
    import subprocess

    env = {k: v for k, v in os.environ.items() if k not in ("CRMKIT_STORE", "CRMKIT_CONFIG")}
    proc = subprocess.run(
        [sys.executable, str(CHILD), "launch", *argv], cwd=cwd, env=env, capture_output=True, text=True
    )
    if proc.returncode:
        raise SystemExit(f"launcher failed on {argv[:6]}: {proc.stderr}")
    out: dict[str, Any] = json.loads(proc.stdout)
    if out["rc"]:
        raise SystemExit(f"{' '.join(argv[:6])} ... exited {out['rc']}: {out['stderr']}")
    return out


def _count_ids(text: str, prefix: str) -> int:
    return sum(1 for line in text.splitlines() if line.startswith(prefix))


@dataclass
class Row:
    label: str
    crmkit: float
    sqlite: float
    crmkit_rss: float
    sqlite_rss: float
    kind: str  # "cli", "txn" or "info"


def activity_fields(built: Built, n: int) -> list[str]:
    rng = random.Random(n)
    body = mail_body(
        rng, sentence_pool(rng, 200), "Ana", "Best regards,\nNew Person\nexample.org", "On Mon, Ana wrote"
    )
    return [
        "kind=email_in",
        f"subject=Re: the annual licence ({n})",
        f"body={body}",
        "date=2026-06-30 09:15",
        f"sender={built.probe_email}",
        "recipients=ana@acme.example",
        f"message_id=<bench-{n}-{time.time_ns()}@example.org>",
        f"contact={built.probe_email}",
        f"account={built.probe_account}",
    ]


def measure(built: Built, folder: Path, location: str | None = None) -> list[Row]:
    """Each CLI command on the store at ``location`` (a PostgreSQL URL; default the TinyDB store)."""
    import json

    where = location or str(built.store)

    crmkit = str(Path(sys.executable).with_name("crmkit"))
    nonce = time.time_ns()
    commands: list[tuple[str, Callable[[int], list[str]], Callable[[int], list[str]]]] = [
        (
            "contacts add name=… email=…",
            lambda r: ["contacts", "add", f"name=Bench Person {r}", f"email=bench.{nonce}.{r}@example.org"],
            lambda r: ["contacts-add", f"name=Bench Person {r}", f"email=bench.{nonce}.{r}.sql@example.org"],
        ),
        (
            "contacts show EMAIL",
            lambda r: ["contacts", "show", built.probe_email],
            lambda r: ["contacts-show", built.probe_email],
        ),
        (
            f"contacts list --where account={built.probe_account}",
            lambda r: ["contacts", "list", "--where", f"account={built.probe_account}"],
            lambda r: ["contacts-list", f"account={built.probe_account}"],
        ),
        (
            "activities add kind=… body=… contact=…",
            lambda r: ["activities", "add", *activity_fields(built, r)],
            lambda r: ["activities-add", *activity_fields(built, r)],
        ),
        ("report pipeline", lambda r: ["report", "pipeline"], lambda r: ["report-pipeline"]),
    ]
    rows = []
    for label, crm_args, sql_args in commands:
        crm_runs, sql_runs = [], []
        for r in range(REPEAT):  # alternate, so a busy moment of the machine hits both alike
            crm_runs.append(launched([crmkit, "--store", where, *crm_args(r)], folder))
            sql_runs.append(
                launched([sys.executable, str(CHILD), "sqlite", str(built.db), *sql_args(r)], folder)
            )
        if label.startswith("contacts show"):  # the same work: the same timeline
            crm_n = _count_ids(crm_runs[0]["stdout"], "ACT-")
            sql_n = _count_ids(sql_runs[0]["stdout"], "ACT-")
            if crm_n != sql_n or crm_n < built.probe_activities:  # an earlier run may have added some
                raise SystemExit(f"contacts show: crmkit listed {crm_n} activities, SQLite {sql_n}")
        if label.startswith("contacts list"):
            crm_n = _count_ids(crm_runs[0]["stdout"], "C-")
            sql_n = _count_ids(sql_runs[0]["stdout"], "C-")
            if crm_n != sql_n or crm_n != built.probe_account_contacts:
                raise SystemExit(f"contacts list: crmkit listed {crm_n} contacts, SQLite {sql_n}")
        rows.append(
            Row(
                "crmkit " + label,
                statistics.median(run["wall"] for run in crm_runs),
                statistics.median(run["wall"] for run in sql_runs),
                max(run["rss_mb"] for run in crm_runs),
                max(run["rss_mb"] for run in sql_runs),
                "cli",
            )
        )
    fields = activity_fields(built, 99)
    crm = launched([sys.executable, str(CHILD), "txn-crmkit", where, *fields], folder)
    sql = launched([sys.executable, str(CHILD), "txn-sqlite", str(built.db), *fields], folder)
    crm_t, sql_t = json.loads(crm["stdout"]), json.loads(sql["stdout"])
    rows.append(
        Row(
            "library: 1 activity in 1 transaction, store open",
            crm_t["open"],
            sql_t["open"],
            crm["rss_mb"],
            sql["rss_mb"],
            "txn",
        )
    )
    rows.append(
        Row(
            "library: the same, opening the store too",
            crm_t["opening"],
            sql_t["opening"],
            crm["rss_mb"],
            sql["rss_mb"],
            "info",
        )
    )
    return rows


def profile(built: Built, folder: Path, out: Path) -> list[Path]:
    """Each crmkit command once more under cProfile (``python -m cProfile -o ... -m crmkit``)."""
    import os
    import subprocess

    out.mkdir(parents=True, exist_ok=True)
    env = {k: v for k, v in os.environ.items() if k not in ("CRMKIT_STORE", "CRMKIT_CONFIG")}
    commands = {
        "contacts-add": [
            "contacts",
            "add",
            "name=Profiled Person",
            f"email=profiled.{time.time_ns()}@example.org",
        ],
        "contacts-show": ["contacts", "show", built.probe_email],
        "contacts-list": ["contacts", "list", "--where", f"account={built.probe_account}"],
        "activities-add": ["activities", "add", *activity_fields(built, 7)],
        "report-pipeline": ["report", "pipeline"],
    }
    written = []
    for slug, args in commands.items():
        target = out / f"{built.name}-{slug}.prof"
        argv = [
            sys.executable,
            "-m",
            "cProfile",
            "-o",
            str(target),
            "-m",
            "crmkit",
            "--store",
            str(built.store),
        ]
        subprocess.run([*argv, *args], cwd=folder, env=env, check=True, capture_output=True)
        written.append(target)
    return written


def verdict(row: Row) -> tuple[str, str]:
    """(target, PASS or FAIL with what failed)."""
    if row.kind == "info":
        return "-", ""
    if row.kind == "txn":
        return f"<= {TXN_TARGET * 1000:.0f} ms", "PASS" if row.crmkit <= TXN_TARGET else "FAIL"
    failed = []
    if row.crmkit > CLI_WALL_TARGET:
        failed.append("time")
    if row.crmkit > CLI_RATIO_TARGET * row.sqlite:
        failed.append("ratio")
    if row.crmkit_rss > RSS_TARGET_MB:
        failed.append("RSS")
    target = f"<= {CLI_WALL_TARGET} s, {CLI_RATIO_TARGET:g}x, {RSS_TARGET_MB:.0f} MB"
    return target, "PASS" if not failed else f"FAIL ({', '.join(failed)})"


def _seconds(value: float, kind: str) -> str:
    return f"{value:.3f} s" if kind == "cli" else f"{value * 1000:.1f} ms"


def print_size(built: Built, rows: list[Row]) -> None:
    print(
        f"{built.name}: {built.contacts:,} contacts + {built.activities:,} activities "
        f"({built.accounts:,} accounts, {built.deals:,} deals)"
    )
    print(
        f"  built with crmkit in {built.crmkit_build:.1f} s (one transaction; files "
        f"{store_bytes(built.store) / 1e6:.0f} MB); SQLite copy in {built.sqlite_build:.1f} s "
        f"({built.db.stat().st_size / 1e6:.0f} MB)"
    )
    print(
        f"  show: {built.probe_email} ({built.probe_activities} activities); "
        f"list: {built.probe_account} ({built.probe_account_contacts} contacts)"
    )
    print_rows(rows)


def print_rows(rows: list[Row]) -> None:
    head = (
        f"  {'operation':<52} {'crmkit':>9} {'SQLite':>9} {'ratio':>7}  {'target':<26} "
        f"{'verdict':<22} {'peak RSS crmkit / SQLite':>24}"
    )
    print(head)
    print("  " + "-" * (len(head) - 2))
    for row in rows:
        target, result = verdict(row)
        ratio = row.crmkit / row.sqlite if row.sqlite else float("inf")
        print(
            f"  {row.label:<52} {_seconds(row.crmkit, row.kind):>9} {_seconds(row.sqlite, row.kind):>9} "
            f"{ratio:>6.1f}x  {target:<26} {result:<22} "
            f"{row.crmkit_rss:>10.0f} / {row.sqlite_rss:>4.0f} MB"
        )
    print()


def bench_sizes(
    names: list[str], seed: int, keep: bool, profile_dir: Path | None, postgres: bool = False
) -> None:
    folder = Path(tempfile.mkdtemp(prefix="crmkit-bench-sizes-"))
    server = None
    if postgres:  # a private cluster, as the tests start it (Debian's postgresql)
        from crmkit.testing.postgres import PostgresServer

        server = PostgresServer(durable=True).start()
    print(
        f"Issue 13 sizes on the TinyDB store, each command a fresh process, wall time median of {REPEAT}, "
        "beside sqlite3 from a fresh Python process"
    )
    print(f"data under {folder}")
    print()
    done: list[Built] = []
    try:
        for name in names:
            contacts, activities = SIZES[name]
            here = folder / name
            here.mkdir()
            built = Built(
                name,
                contacts,
                activities,
                max(1, contacts // 10),
                contacts // 4,
                here / "crm.json",
                here / "crm.sqlite",
            )
            print(f"{name}: building ...", flush=True)
            build_crmkit(built, seed)
            gc.collect()
            build_sqlite(built)
            rows = measure(built, here)
            print_size(built, rows)
            done.append(built)
            sys.stdout.flush()
            if server is not None:
                from crmkit.store.copy import copy_store

                url = server.create_database()
                started = time.perf_counter()
                copy_store(Store(built.store), Store(url))
                took = time.perf_counter() - started
                print(f"  PostgreSQL (copied with crmkit store copy in {took:.1f} s): {url}")
                print_rows(measure(built, here, url))
                print()
                sys.stdout.flush()
        if profile_dir is not None and done:
            for path in profile(done[-1], folder / done[-1].name, profile_dir):
                print(f"profile: {path}")
            print()
    finally:
        if server is not None:
            server.stop()
        if keep:
            print(f"kept: {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)
    skipped = [name for name in SIZES if name not in names]
    if skipped and done:
        largest = done[-1]
        rate = largest.crmkit_build / largest.activities
        for name in skipped:
            print(
                f"{name} ({SIZES[name][0]:,} + {SIZES[name][1]:,}) not run (--sizes); building it "
                f"would take about {rate * SIZES[name][1]:.0f} s at {largest.name}'s rate per activity"
            )
        print()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--contacts", type=int, default=100_000, help="contacts to add (default 100000)")
    parser.add_argument("--lookups", type=int, default=10_000, help="look-ups by email (default 10000)")
    parser.add_argument(
        "--budget", type=float, default=20.0, help="seconds for plain TinyDB's look-ups (default 20)"
    )
    parser.add_argument("--min-tinydb-lookups", type=int, default=20, help="even past the budget")
    parser.add_argument("--seed", type=int, default=1, help="which contacts are looked up")
    parser.add_argument(
        "--sizes",
        default="S1,S2",
        help="issue 13's sizes to build and run, of S1,S2,S3 ('' for none; default S1,S2: S3 takes a while)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the sizes' stores and SQLite files")
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="also profile each command once at the largest size"
    )
    parser.add_argument(
        "--postgres",
        action="store_true",
        help="also copy each size into a private PostgreSQL (Debian's postgresql) and run the commands there",
    )
    args = parser.parse_args(argv)
    sizes = [name.strip().upper() for name in args.sizes.split(",") if name.strip()]
    if sizes == ["NONE"]:
        sizes = []
    unknown = [name for name in sizes if name not in SIZES]
    if unknown:
        parser.error(f"unknown size {', '.join(unknown)}: choose from {', '.join(SIZES)}")
    sizes = sorted(set(sizes), key=list(SIZES).index)

    n = args.contacts
    rows = make_rows(n)
    picks = random.Random(args.seed).sample(range(n), min(args.lookups, n))
    emails = [rows[i]["email"] for i in picks]

    print(f"crmkit store benchmark: {n:,} contacts, {len(emails):,} look-ups by email")
    print(f"Python {sys.version.split()[0]} on {sys.platform}")
    # An installed crmkit has its bytecode compiled at install; a source checkout run with
    # PYTHONDONTWRITEBYTECODE (as on CI machines) would compile every module at every start.
    import compileall

    compileall.compile_dir(str(Path(__file__).resolve().parents[1] / "crmkit"), quiet=1)
    print("crmkit's modules compiled to bytecode first, as pip install does")
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
    print(f"{'size on disk after the bulk add, MB':<50} {cs:>11.2f} {ts:>12.2f} {ts / cs:>13.3g}x")
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
    if sizes:
        bench_sizes(sizes, args.seed, args.keep, args.profile, args.postgres)
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
