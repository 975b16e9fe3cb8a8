"""``crmkit sync BOOK.xlsx`` as a person runs it, against openpyxl alone on the same workbook, in one run.

    python bench/bench_sync_excel.py [--rows 50000] [--edit-percent 1] [--keep] [--profile]

Every timed sync is the ``crmkit`` command of this virtualenv (the script beside
``sys.executable``) run as a child process, ``crmkit --store STORE sync BOOK
--json``, from an empty folder without a crmkit.toml: start-up, imports, reading
the store and the workbook, writing both, all included. Its counts come from
the ``--json`` report it prints; its time, CPU and peak memory from ``os.wait4``
in a small launcher process (see LAUNCHER).

The workbook is crmkit's template (``crmkit.workbooks.build_template``, what
``crmkit init`` copies) holding N rows without IDs on all six record sheets,
every column of every row filled with realistic values: 35% contacts, 25%
leads, 20% deals, 10% invoices, 6% cases and 4% accounts, plus 1-2 Invoice
Lines rows per invoice. Links are written as people write them (an account's
name, a contact's email; an invoice's deal by the ID the first sync gives it)
and the invoices' Subtotal, Tax and Total are what crmkit computes from their
lines; their Status is what a person sets (draft, sent, void), their Amount
paid and Due date make some paid, partly paid or overdue.
Then, on a fresh store, four syncs, each beside a plain openpyxl baseline that
runs in this process (openpyxl already imported: no start-up on its side):

a. the first sync (creates every record, writes the IDs back into the
   workbook) vs openpyxl ``load_workbook`` + ``save`` of that workbook;
b. after a person edits 1% of the rows (the Owner cell, with openpyxl, outside
   the timings), a re-sync vs openpyxl reading the workbook read-only
   (``load_workbook(read_only=True)``, every row of every sheet, values only);
c. a re-sync with nothing changed vs that same read-only read;
d. the first sync of a person's own workbook with no crmkit sheets (made with
   openpyxl: one budget sheet of a few hundred rows and a chart) against the
   store of a-c: crmkit adds its sheets and appends every record; vs openpyxl
   loading that workbook, appending the same rows (read back from crmkit's
   result, outside the timing) to new sheets and saving it. No target: the
   ratio is printed. Then every zip member of the person's workbook except
   the few crmkit must touch (workbook.xml and its rels, [Content_Types].xml,
   docProps/app.xml, styles.xml) must be byte-identical in the result.

Before each sync the workbook is copied aside; the baseline then runs on the
copy (its sha256 is checked), so both always see the same bytes.
``--profile`` runs each crmkit child under ``python -m cProfile`` and keeps
``phase-X.prof`` in the folder (timings then include the profiler).
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import json
import os
import random
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import unicodedata
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import Any, TypeVar

from openpyxl import Workbook, load_workbook
from openpyxl.chart import BarChart, Reference
from python_calamine import CalamineWorkbook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crmkit.workbooks import build_template  # the template only: the sync runs as `crmkit`

T = TypeVar("T")

CRMKIT = Path(sys.executable).with_name("crmkit")
SHARES = (
    ("Contacts", 0.35),
    ("Leads", 0.25),
    ("Deals", 0.20),
    ("Invoices", 0.10),
    ("Cases", 0.06),
    ("Accounts", 0.04),
)
DATA_SHEETS = ("Leads", "Contacts", "Accounts", "Deals", "Invoices", "Cases")
#: The sheets `crmkit sync` adds to a workbook that has none (Accounts and Cases only where present).
ADDED_SHEETS = ("Leads", "Contacts", "Deals", "Invoices", "Invoice Lines")
TARGETS: dict[str, float | None] = {"a": 1.3, "b": 0.5, "c": 0.1, "d": None}
#: Members of a person's workbook crmkit may change when it adds sheets; every other one is kept.
MAY_CHANGE = frozenset(
    {
        "xl/workbook.xml",
        "xl/_rels/workbook.xml.rels",
        "[Content_Types].xml",
        "docProps/app.xml",
        "xl/styles.xml",
    }
)
TODAY = date.today()  # `crmkit sync` dates invoices against the real today

OWNERS = ("ana", "bo", "chen", "dara", "eli", "fay")
FIRST = (
    "Ana", "Bao", "Chen", "Dara", "Elif", "Farah", "Gabriel", "Hoa", "Inès", "Jonas", "Kenji", "Lena",
    "Mateo", "Nadia", "Olu", "Priya", "Quentin", "Rosa", "Sven", "Thảo", "Umar", "Vera", "Wei", "Yara",
    "Zoltán", "Amara", "Björn", "Carmen", "Dmitri", "Esi",
)  # fmt: skip
LAST = (
    "Nguyễn", "Schmidt", "Okafor", "García", "Kowalski", "Tanaka", "Haddad", "Silva", "Müller",
    "Andersen", "Rossi", "Dubois", "Kim", "Patel", "Novak", "Ibrahim", "Lindqvist", "Moreau", "Costa",
    "Yılmaz", "Trần", "O'Brien", "Mensah", "Horvat", "Sato",
)  # fmt: skip
ADJECTIVES = (
    "Bright", "Northern", "Blue", "Silver", "Green", "Golden", "Rapid", "Quiet", "Bold", "Clear",
    "Red", "Harbor", "Summit", "Cedar", "Iron", "Coral", "Eastern", "Lotus", "Maple", "Orion",
    "Pioneer", "River", "Solar", "Stone", "True", "Urban", "Vivid", "West", "Alpine", "Delta",
)  # fmt: skip
NOUNS = (
    "Harbor", "Peak", "Field", "Bridge", "Wave", "Forge", "Lane", "Point", "Valley", "Gate",
    "Crest", "Path", "Mill", "Port", "Ridge", "Grove", "Bay", "Works", "Haven", "Line",
    "Star", "Oak", "Brook", "Hill", "Isle", "Rock", "Vale", "Wharf", "Cross", "Dale",
)  # fmt: skip
TRADES = (
    ("Logistics", "Logistics"), ("Foods", "Food & beverage"), ("Software", "Software"),
    ("Clinics", "Healthcare"), ("Builders", "Construction"), ("Textiles", "Manufacturing"),
    ("Energy", "Energy"), ("Travel", "Hospitality"), ("Retail", "Retail"), ("Finance", "Financial services"),
    ("Media", "Media"), ("Farms", "Agriculture"),
)  # fmt: skip
LEGAL = (
    ("Ltd", "co.uk"),
    ("GmbH", "de"),
    ("Inc.", "com"),
    ("SAS", "fr"),
    ("JSC", "vn"),
    ("Pty Ltd", "com.au"),
)
REGIONS = ("North", "South", "Central", "EMEA", "APAC", "Americas")
JOB_TITLES = ("CEO", "CTO", "Head of purchasing", "Buyer", "Engineer", "Office manager", "CFO", "Ops lead")
CONTACT_SOURCES = ("web", "referral", "campaign", "import", "email", "event", "partner", "phone", "other")
LEAD_STATUSES = ("new", "contacted", "nurturing", "qualified", "disqualified")
STAGES = ("prospecting", "qualification", "proposal", "negotiation", "won", "lost")
PROBABILITY = {
    "prospecting": 10,
    "qualification": 20,
    "proposal": 50,
    "negotiation": 75,
    "won": 100,
    "lost": 0,
}
FORECAST = {
    "prospecting": "pipeline",
    "qualification": "pipeline",
    "proposal": "best_case",
    "negotiation": "commit",
    "won": "closed",
    "lost": "omitted",
}
PRODUCTS = (
    "Fleet tracking",
    "Cold-chain routing",
    "POS roll-out",
    "Support plan",
    "Data migration",
    "Licences",
)
LINE_ITEMS = ("Onboarding workshop", "Licence (annual)", "Support hours", "Hardware kit", "Training day")
CURRENCIES = ("USD", "EUR", "GBP")
TAGS = ("vip", "newsletter", "partner", "trade show", "renewal due", "beta")
EVENTS = (
    "the Hanoi logistics fair",
    "a webinar",
    "a referral from a customer",
    "the Berlin expo",
    "a cold call",
)
CASE_SUBJECTS = (
    "Cannot log in",
    "Invoice shows the wrong address",
    "Tracker offline",
    "Export fails",
    "Refund",
)


# -- helpers -------------------------------------------------------------------


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def kib_to_mb(kib: float) -> float:
    return kib / (1024 * 1024) if sys.platform == "darwin" else kib / 1024  # bytes on macOS, KiB on Linux


def peak_rss_mb() -> float:
    return kib_to_mb(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


def sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def header_index(ws: Any) -> dict[str, int]:
    return {str(c.value): c.column for c in ws[1] if c.value is not None}


def ascii_slug(text: str) -> str:
    text = unicodedata.normalize("NFKD", text.replace("đ", "d").replace("ı", "i"))
    return "".join(ch for ch in text.casefold() if ch.isascii() and ch.isalnum())


def money(value: Decimal) -> Decimal:
    return value.quantize(Decimal("0.01"), rounding=ROUND_HALF_UP)


# -- the crmkit command ----------------------------------------------------------------


@dataclass
class Child:
    """One run of the crmkit command: wall time, exit code, output and what the kernel counted."""

    seconds: float
    code: int
    stdout: str
    stderr: str
    maxrss_mb: float
    cpu_s: float


class CrmkitFailed(Exception):
    pass


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    for name in ("CRMKIT_CONFIG", "CRMKIT_STORE"):  # the store is named by --store; no config
        env.pop(name, None)
    return env


#: Runs one command (``sys.argv[2:]``) and writes its wall time and rusage as JSON to ``sys.argv[1]``.
#: Linux counts, in the peak RSS of a child, the memory of the process it was (v)forked from:
#: a crmkit started straight from this process would report this process's peak as its own.
#: Forked from this small launcher (``python -I -S``, about 10 MB), it reports its own.
LAUNCHER = """
import json, os, sys, time
result, argv = sys.argv[1], sys.argv[2:]
start = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execv(argv[0], argv)
    finally:
        os._exit(127)
_, status, usage = os.wait4(pid, 0)
seconds = time.perf_counter() - start
with open(result, "w") as fh:
    json.dump({"seconds": seconds, "code": os.waitstatus_to_exitcode(status),
               "maxrss": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime}, fh)
"""


def run_child(argv: Sequence[str], cwd: Path) -> Child:
    """Run ``argv`` in ``cwd``; its time is from fork to exit, as the launcher measured it."""
    with (
        tempfile.TemporaryFile() as out,
        tempfile.TemporaryFile() as err,
        tempfile.TemporaryDirectory() as tmp,
    ):
        result = Path(tmp) / "result.json"
        gc.collect()
        launcher = subprocess.run(
            [sys.executable, "-I", "-S", "-c", LAUNCHER, str(result), *argv],
            cwd=cwd,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
            check=False,
        )
        out.seek(0)
        err.seek(0)
        stdout = out.read().decode("utf-8", "replace")
        stderr = err.read().decode("utf-8", "replace")
        if launcher.returncode != 0 or not result.exists():
            raise CrmkitFailed(
                f"the launcher of `{' '.join(argv)}` failed ({launcher.returncode}):\n{stderr}"
            )
        got = json.loads(result.read_text())
        return Child(
            seconds=got["seconds"],
            code=got["code"],
            stdout=stdout,
            stderr=stderr,
            maxrss_mb=kib_to_mb(got["maxrss"]),
            cpu_s=got["cpu"],
        )


def crmkit_sync(store: Path, book: Path, cwd: Path, profile: Path | None) -> Child:
    argv = [str(CRMKIT), "--store", str(store), "sync", str(book), "--json"]
    if profile is not None:
        argv = [sys.executable, "-m", "cProfile", "-o", str(profile), *argv]
    child = run_child(argv, cwd)
    if child.code not in (0, 3):  # 3: done, but conflicts or invalid cells need a person
        raise CrmkitFailed(f"`{' '.join(argv)}` exited {child.code}:\n{child.stderr.strip() or child.stdout}")
    return child


def startup_seconds(cwd: Path) -> float:
    """The median of three `crmkit --version`: interpreter start-up and crmkit's imports."""
    return statistics.median(run_child([str(CRMKIT), "--version"], cwd).seconds for _ in range(3))


def counts_of(report: dict[str, Any]) -> dict[str, int]:
    sheets = report["sheets"]
    return {
        "store_added": sum(len(s["store"]["added"]) for s in sheets),
        "store_updated": sum(len(s["store"]["updated"]) for s in sheets),
        "store_archived": sum(len(s["store"]["archived"]) for s in sheets),
        "sheet_added": sum(len(s["sheet_side"]["added"]) for s in sheets),
        "sheet_updated": sum(len(s["sheet_side"]["updated"]) for s in sheets),
        "ids_written": sum(s["sheet_side"]["ids_written"] for s in sheets),
        "conflicts": sum(len(s["conflicts"]) for s in sheets),
        "invalid": sum(len(s["invalid"]) for s in sheets),
        "problems": sum(len(s["problems"]) for s in sheets),
    }


def skipped(report: dict[str, Any]) -> bool:
    """`--json` has no skipped flag: a sync that found nothing changed reports no sheet at all."""
    return not report["sheets"] and not report["changes"] and not report["book_written"]


# -- the workbook ------------------------------------------------------------------


def split(rows: int) -> dict[str, int]:
    counts = {title: int(rows * share) for title, share in SHARES}
    counts["Accounts"] = max(1, counts["Accounts"])
    counts["Contacts"] += rows - sum(counts.values())  # rounding
    return counts


def build_workbook(path: Path, rows: int) -> dict[str, int]:
    """The template, filled with ``rows`` rows without IDs, every column of every row set.

    Returns rows per sheet (and Invoice Lines rows).
    """
    build_template(path)
    wb = load_workbook(path)
    counts = split(rows)
    rng = random.Random(42)
    i = 0  # a counter over all people: unique emails and phones across contacts and leads

    def fill(title: str, rows_: Sequence[dict[str, Any]]) -> None:
        ws = wb[title]
        columns = header_index(ws)
        wanted = set(columns) - ({"ID"} if "ID" in columns else set())
        for values in rows_:
            if set(values) != wanted or any(v is None or v == "" for v in values.values()):
                raise SystemExit(
                    f"{title}: a generated row leaves a column empty: {sorted(wanted - set(values))}"
                )
            row: list[Any] = [None] * max(columns.values())
            for header, value in values.items():
                row[columns[header] - 1] = value
            ws.append(row)

    def person() -> tuple[str, str, str]:
        nonlocal i
        first, last = rng.choice(FIRST), rng.choice(LAST)
        phone = f"+1 ({200 + i // 10_000_000 % 800}) {i // 10_000 % 1000:03d}-{i % 10_000:04d}"
        i += 1
        return f"{first} {last}", f"{ascii_slug(first)}.{ascii_slug(last)}.{i}", phone

    combos = len(ADJECTIVES) * len(NOUNS) * len(TRADES)
    accounts: list[tuple[str, str]] = []  # (name, domain)
    account_rows = []
    for k in range(counts["Accounts"]):
        adj, noun = ADJECTIVES[k % len(ADJECTIVES)], NOUNS[k // len(ADJECTIVES) % len(NOUNS)]
        trade, industry = TRADES[k // (len(ADJECTIVES) * len(NOUNS)) % len(TRADES)]
        legal, tld = LEGAL[k % len(LEGAL)]
        extra = f" {k // combos + 1}" if k >= combos else ""  # names must stay unique, legal form aside
        name = f"{adj} {noun} {trade}{extra} {legal}"
        domain = f"{ascii_slug(adj + noun + trade)}{extra.strip()}.{tld}"
        accounts.append((name, domain))
        account_rows.append(
            {
                "Name": name,
                "Domain": domain,
                "Industry": industry,
                "Tier": "ABCCC"[k % 5],
                "Region": REGIONS[k % len(REGIONS)],
                "Owner": OWNERS[k % len(OWNERS)],
            }
        )
    fill("Accounts", account_rows)

    contacts: list[tuple[str, int]] = []  # (email, account index)
    contact_rows = []
    for k in range(counts["Contacts"]):
        a = k % len(accounts)
        name, local, phone = person()
        email = f"{local}@{accounts[a][1]}"
        contacts.append((email, a))
        contact_rows.append(
            {
                "Name": name,
                "Email": email,
                "Phone": phone,
                "Title": rng.choice(JOB_TITLES),
                "Account": accounts[a][0],
                "Owner": OWNERS[k % len(OWNERS)],
                "Source": CONTACT_SOURCES[k % len(CONTACT_SOURCES)],
                "Opt out": "yes" if k % 25 == 0 else "no",
                "Email status": "bounced" if k % 40 == 0 else "ok",
                "Tags": ", ".join(rng.sample(TAGS, 1 + k % 3)),
            }
        )
    fill("Contacts", contact_rows)

    lead_rows = []
    for k in range(counts["Leads"]):
        name, local, phone = person()
        company = f"{rng.choice(ADJECTIVES)} {rng.choice(NOUNS)} {rng.choice(TRADES)[0]}"
        lead_rows.append(
            {
                "Name": name,
                "Company": company,
                "Email": f"{local}@{ascii_slug(company)}.com",
                "Phone": phone,
                "Source": CONTACT_SOURCES[k % len(CONTACT_SOURCES)],
                "Status": LEAD_STATUSES[k % len(LEAD_STATUSES)],
                "Rating": ("hot", "warm", "cold")[k % 3],
                "Owner": OWNERS[k % len(OWNERS)],
                "Notes": f"Met through {rng.choice(EVENTS)}; asked about {rng.choice(PRODUCTS).lower()}, "
                f"call back in {1 + k % 6} weeks.",
            }
        )
    fill("Leads", lead_rows)

    deals: list[tuple[int, str]] = []  # (contact index, currency)
    deal_rows = []
    for k in range(counts["Deals"]):
        c = k % len(contacts)
        email, a = contacts[c]
        stage = STAGES[k % len(STAGES)]
        currency = CURRENCIES[k % len(CURRENCIES)]
        closes = (
            TODAY - timedelta(days=1 + k % 120)
            if stage in ("won", "lost")
            else TODAY + timedelta(days=7 + k % 180)
        )
        deals.append((c, currency))
        deal_rows.append(
            {
                "Title": f"{PRODUCTS[k % len(PRODUCTS)]} for {accounts[a][0]}",
                "Account": accounts[a][0],
                "Contact": email,
                "Pipeline": "renewals" if k % 4 == 0 else "sales",
                "Stage": stage,
                "Amount": rng.choice((500, 1200, 2500.5, 9999.99, 15000, 42000)),
                "Currency": currency,
                "Probability": PROBABILITY[stage],
                "Close date": closes,
                "Forecast category": FORECAST[stage],
                "Owner": OWNERS[k % len(OWNERS)],
                "Source": ("web", "referral", "partner", "event")[k % 4],
            }
        )
    fill("Deals", deal_rows)

    invoice_rows = []
    line_rows: list[list[Any]] = []
    for k in range(counts["Invoices"]):
        d = k % len(deals)
        c, currency = deals[d]
        email, a = contacts[c]
        number = f"INV-{TODAY.year}-{k + 1:05d}"
        lines = [
            (
                LINE_ITEMS[(k + n) % len(LINE_ITEMS)],
                1 + (k + n) % 5,
                Decimal(("100", "250", "99.5", "1200")[(k + n) % 4]),
                (0, 10, 20)[k % 3],
            )
            for n in range(1 + k % 2)
        ]
        line_rows += [[number, desc, qty, float(price), rate] for desc, qty, price, rate in lines]
        subtotal = sum((money(qty * price) for _, qty, price, _ in lines), Decimal(0))
        tax = sum((money(qty * price * rate / 100) for _, qty, price, rate in lines), Decimal(0))
        total = subtotal + tax
        kind = k % 5  # draft, sent, paid, partly paid, overdue (the last three follow from paid and due)
        issued = TODAY - timedelta(days=45 + k % 30 if kind == 4 else k % 20)
        paid = {2: total, 3: money(total / 2)}.get(kind, Decimal(0))
        invoice_rows.append(
            {
                "Number": number,
                "Account": accounts[a][0],
                "Contact": email,
                "Deal": f"D-{d + 1}",  # the ID the first sync gives the deal on row d of Deals
                "Issue date": issued,
                "Due date": issued + timedelta(days=30),
                "Currency": currency,
                "Amount paid": float(paid),
                "Status": "void" if k % 50 == 49 else "draft" if kind == 0 else "sent",  # what a person sets
                "Owner": OWNERS[k % len(OWNERS)],
                "Repeats": ("monthly", "quarterly", "yearly")[k % 3],
                "Subtotal": float(subtotal),
                "Tax": float(tax),
                "Total": float(total),
            }
        )
    fill("Invoices", invoice_rows)
    lines_ws = wb["Invoice Lines"]
    if [str(c.value) for c in lines_ws[1]] != [
        "Invoice",
        "Description",
        "Quantity",
        "Unit price",
        "Tax rate",
    ]:
        raise SystemExit("the Invoice Lines sheet of the template has other columns than the bench writes")
    for row in line_rows:
        lines_ws.append(row)

    case_rows = []
    for k in range(counts["Cases"]):
        email, a = contacts[(k * 7) % len(contacts)]
        case_rows.append(
            {
                "Subject": f"{CASE_SUBJECTS[k % len(CASE_SUBJECTS)]} (ticket {k + 1})",
                "Contact": email,
                "Account": accounts[a][0],
                "Status": ("new", "open", "pending", "resolved", "closed")[k % 5],
                "Priority": ("low", "normal", "normal", "high", "urgent")[k % 5],
                "Origin": ("email", "phone", "web")[k % 3],
                "Description": f"Reported by {email} on {TODAY - timedelta(days=k % 30)}: "
                f"{CASE_SUBJECTS[k % len(CASE_SUBJECTS)].lower()} since the last update.",
                "Owner": OWNERS[k % len(OWNERS)],
            }
        )
    fill("Cases", case_rows)
    wb.save(path)
    counts["Invoice Lines"] = len(line_rows)
    return counts


def build_person_workbook(path: Path, rows: int = 240) -> None:
    """A person's own workbook, made with openpyxl: a budget sheet and a chart of it, nothing of crmkit's."""
    wb = Workbook()
    ws = wb.active
    ws.title = "Budget"
    ws.append(["Month", "Team", "Category", "Planned", "Actual", "Variance", "Comment"])
    rng = random.Random(7)
    teams = ("Sales", "Support", "Marketing", "Ops")
    categories = ("Travel", "Software", "Events", "Hardware", "Training")
    for r in range(rows):
        month = date(TODAY.year, 1 + r % 12, 1)
        planned = rng.choice((1200, 2500, 4000, 800, 15000))
        actual = round(planned * rng.uniform(0.7, 1.3), 2)
        row = r + 2
        ws.append(
            [
                month,
                teams[r // 12 % len(teams)],
                categories[r // 48 % len(categories)],
                planned,
                actual,
                f"=E{row}-D{row}",
                rng.choice(("on track", "check with finance", "one-off", "prepaid", "")) or None,
            ]
        )
        ws.cell(row, 1).number_format = "mmm yyyy"
        for col in (4, 5, 6):
            ws.cell(row, col).number_format = "#,##0.00"
    ws.freeze_panes = "A2"
    ws.column_dimensions["G"].width = 24
    chart = BarChart()
    chart.title = "Planned vs actual, Sales"
    chart.add_data(Reference(ws, min_col=4, max_col=5, min_row=1, max_row=13), titles_from_data=True)
    chart.set_categories(Reference(ws, min_col=1, min_row=2, max_row=13))
    ws.add_chart(chart, "I2")
    wb.save(path)


def edit_owners(path: Path, percent: float) -> dict[str, int]:
    """Change the Owner cell of ``percent``% of the rows of each data sheet, as a person would."""
    wb = load_workbook(path)
    edited: dict[str, int] = {}
    for title in DATA_SHEETS:
        ws = wb[title]
        column = header_index(ws)["Owner"]
        data_rows = ws.max_row - 1
        step = max(1, round(100 / percent))
        count = 0
        for number in range(2, data_rows + 2, step):
            cell = ws.cell(number, column)
            cell.value = f"{cell.value or 'nobody'}-edited"
            count += 1
        edited[title] = count
    wb.save(path)
    return edited


def sheet_rows(path: Path, titles: Sequence[str]) -> dict[str, list[list[Any]]]:
    """The rows (header first, trailing blank rows dropped) of some sheets, read with calamine."""
    book = CalamineWorkbook.from_path(str(path))
    out: dict[str, list[list[Any]]] = {}
    for title in titles:
        rows = book.get_sheet_by_name(title).to_python()
        while rows and all(v in (None, "") for v in rows[-1]):
            rows.pop()
        out[title] = rows
    return out


def ids_on_sheets(path: Path) -> dict[str, tuple[int, int]]:
    """Per data sheet: (rows, rows with an ID)."""
    out: dict[str, tuple[int, int]] = {}
    for title, rows in sheet_rows(path, DATA_SHEETS).items():
        id_col = [str(h) for h in rows[0]].index("ID")
        data = [r for r in rows[1:] if any(v not in (None, "") for v in r)]
        out[title] = (len(data), sum(1 for r in data if str(r[id_col]).strip()))
    return out


def sheet_names(path: Path) -> list[str]:
    return list(CalamineWorkbook.from_path(str(path)).sheet_names)


def members_changed(original: Path, result: Path) -> tuple[int, list[str]]:
    """(members compared, members of ``original`` not byte-identical in ``result``), MAY_CHANGE aside."""
    with zipfile.ZipFile(original) as before, zipfile.ZipFile(result) as after:
        present = set(after.namelist())
        compared, changed = 0, []
        for name in before.namelist():
            if name in MAY_CHANGE:
                continue
            compared += 1
            if name not in present:
                changed.append(f"{name} (missing)")
            elif before.read(name) != after.read(name):
                changed.append(name)
    return compared, changed


# -- the baselines ---------------------------------------------------------------------


def openpyxl_load_save(path: Path, _: Any = None) -> None:
    wb = load_workbook(path)
    out = path.with_name(path.stem + ".openpyxl-saved.xlsx")
    wb.save(out)
    out.unlink()


def openpyxl_read_only(path: Path, _: Any = None) -> int:
    wb = load_workbook(path, read_only=True)
    cells = 0
    try:
        for ws in wb.worksheets:
            for row in ws.iter_rows(values_only=True):
                cells += len(row)
    finally:
        wb.close()
    return cells


def openpyxl_add_sheets(path: Path, sheets: dict[str, list[list[Any]]]) -> None:
    """Load the workbook, append ``sheets`` (title: rows) as new sheets, save it."""
    wb = load_workbook(path)
    for title, rows in sheets.items():
        ws = wb.create_sheet(title)
        for row in rows:
            ws.append(row)
    out = path.with_name(path.stem + ".openpyxl-saved.xlsx")
    wb.save(out)
    out.unlink()


def added_rows(original: Path, result: Path) -> dict[str, list[list[Any]]]:
    """The sheets the sync added to ``original``, with their rows as it wrote them (blanks as None)."""
    new = [t for t in sheet_names(result) if t not in set(sheet_names(original))]
    return {
        title: [[None if v == "" else v for v in row] for row in rows]
        for title, rows in sheet_rows(result, new).items()
    }


# -- a phase --------------------------------------------------------------------------


def phase(
    name: str,
    label: str,
    baseline_label: str,
    baseline: Callable[[Path, Any], Any],
    store_path: Path,
    book_path: Path,
    cwd: Path,
    *,
    profile: bool,
    prepare: Callable[[Path, Path], Any] | None = None,
) -> dict[str, Any]:
    """Sync ``book_path`` with the crmkit command, then time ``baseline`` on a copy of what it read.

    ``prepare(copy, synced book)``, outside both timings, makes the baseline's input.
    """
    snapshot = book_path.with_name(f"snapshot-{name}.xlsx")
    shutil.copy2(book_path, snapshot)
    before_hash = sha256(book_path)
    before_inode = os.stat(book_path).st_ino
    prof = book_path.with_name(f"phase-{name}.prof") if profile else None
    child = crmkit_sync(store_path, book_path, cwd, prof)
    try:
        report = json.loads(child.stdout)
    except json.JSONDecodeError as exc:
        raise CrmkitFailed(
            f"phase {name}: `crmkit sync --json` printed no JSON ({exc}):\n{child.stdout[:2000]}"
        ) from None
    if sha256(snapshot) != before_hash:
        raise SystemExit(f"phase {name}: the snapshot differs from the workbook the sync read")
    extra = prepare(snapshot, book_path) if prepare is not None else None
    base_s, _ = timed(lambda: baseline(snapshot, extra))
    after_hash = sha256(book_path)
    return {
        "name": name,
        "label": label,
        "baseline_label": baseline_label,
        "sync_s": child.seconds,
        "cpu_s": child.cpu_s,
        "exit": child.code,
        "base_s": base_s,
        "report": report,
        "counts": counts_of(report),
        "snapshot": snapshot,
        "rewritten": after_hash != before_hash or os.stat(book_path).st_ino != before_inode,
        "rss_child": child.maxrss_mb,
        "rss_base": peak_rss_mb(),
        "store_mb": store_path.stat().st_size / 1e6 if store_path.exists() else 0.0,
        "book_mb": book_path.stat().st_size / 1e6,
        "extra": extra,
    }


def check(result: dict[str, Any], expected: dict[str, int]) -> list[str]:
    problems = []
    for key, want in expected.items():
        got = result["counts"][key]
        if got != want:
            problems.append(f"{key} = {got}, expected {want}")
    return problems


def first_problems(report: dict[str, Any], limit: int = 5) -> list[str]:
    """A few of the invalid cells, conflicts and problems the report names, to show what went wrong."""
    out: list[str] = []
    for s in report["sheets"]:
        out += [f"problem: {s['sheet']}: {p}" for p in s["problems"]]
        out += [
            f"invalid: {c['sheet']}!{c['column']}{c['row']} {c['value']!r}: {c['problem']}"
            for c in s["invalid"]
        ]
        out += [f"conflict: {c['sheet']} row {c['row']} {c['field']}" for c in s["conflicts"]]
    return out[:limit]


NO_CHANGE = {"store_added": 0, "store_updated": 0, "store_archived": 0, "sheet_added": 0, "ids_written": 0}
CLEAN = {"conflicts": 0, "invalid": 0, "problems": 0}


# -- the run ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50000, help="data rows over the six record sheets")
    parser.add_argument("--edit-percent", type=float, default=1.0, help="rows edited before sync (b)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print it")
    parser.add_argument("--profile", action="store_true", help="run each crmkit child under cProfile (kept)")
    args = parser.parse_args(argv)
    if not CRMKIT.exists():
        raise SystemExit(f"no crmkit command at {CRMKIT}: run this with the virtualenv's python")

    folder = Path(tempfile.mkdtemp(prefix="crmkit-bench-sync-"))
    try:
        cwd = folder / "cwd"  # where the commands run: no crmkit.toml, so --store names the store
        cwd.mkdir()
        book = folder / "book.xlsx"
        store = folder / "crm.json"
        build_s, counts = timed(lambda: build_workbook(book, args.rows))
        print(
            f"workbook: {args.rows} rows ("
            + ", ".join(f"{t} {n}" for t, n in counts.items())
            + f"), every column filled, {book.stat().st_size / 1e6:.1f} MB, built in {build_s:.1f} s"
        )
        startup = startup_seconds(cwd)
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, folder {folder}")
        print(
            f"command: {CRMKIT} --store STORE sync BOOK --json (a child process, from a folder without crmkit.toml)"
        )
        print(f"crmkit start-up (`crmkit --version`, median of 3): {startup:.2f} s")
        print()

        results: list[dict[str, Any]] = []
        problems: list[str] = []
        lines: list[str] = []
        try:
            a = phase(
                "a",
                "first sync",
                "openpyxl load+save",
                openpyxl_load_save,
                store,
                book,
                cwd,
                profile=args.profile,
            )
            results.append(a)
            problems += [
                f"(a) {p}"
                for p in check(a, {**NO_CHANGE, **CLEAN, "store_added": args.rows, "ids_written": args.rows})
            ]
            for title, (rows, with_id) in ids_on_sheets(book).items():
                if rows != counts[title] or with_id != rows:
                    problems.append(
                        f"(a) {title}: {with_id} of {rows} rows have an ID, expected {counts[title]}"
                    )

            edited = edit_owners(book, args.edit_percent)  # outside the timings
            n_edited = sum(edited.values())
            b = phase(
                "b",
                f"re-sync, {n_edited} rows edited",
                "openpyxl read-only read",
                openpyxl_read_only,
                store,
                book,
                cwd,
                profile=args.profile,
            )
            results.append(b)
            problems += [f"(b) {p}" for p in check(b, {**NO_CHANGE, **CLEAN, "store_updated": n_edited})]

            c = phase(
                "c", "re-sync, nothing changed", "openpyxl read-only read", openpyxl_read_only, store, book, cwd,
                profile=args.profile,
            )  # fmt: skip
            results.append(c)
            if not skipped(c["report"]) or c["report"]["changes"] or c["rewritten"]:
                problems.append(
                    "(c) a sync with nothing changed did work: "
                    f"skipped={skipped(c['report'])} changes={c['report']['changes']} rewritten={c['rewritten']}"
                )

            person = folder / "person.xlsx"
            build_person_workbook(person)
            d = phase(
                "d",
                "first sync, person's workbook",
                "openpyxl load+add sheets+save",
                openpyxl_add_sheets,
                store,
                person,
                cwd,
                profile=args.profile,
                prepare=added_rows,
            )
            results.append(d)
            added: dict[str, list[list[Any]]] = d["extra"]
            expected_added = sum(counts[t] for t in ADDED_SHEETS if t != "Invoice Lines")
            problems += [f"(d) {p}" for p in check(d, {**NO_CHANGE, **CLEAN, "sheet_added": expected_added})]
            if set(added) != set(ADDED_SHEETS):
                problems.append(f"(d) sheets added: {', '.join(added)}; expected {', '.join(ADDED_SHEETS)}")
            for title in ADDED_SHEETS:
                got = len(added.get(title, [None])) - 1
                if got != counts[title]:
                    problems.append(f"(d) {title}: {got} rows on the added sheet, expected {counts[title]}")
            compared, changed = members_changed(d["snapshot"], person)
            kept_ok = not changed
            lines.append(
                f"(d) the person's workbook kept byte for byte: {'PASS' if kept_ok else 'FAIL'} "
                f"({compared - len(changed)} of {compared} zip members identical; "
                f"{len(MAY_CHANGE)} may change: {', '.join(sorted(MAY_CHANGE))})"
                + ("" if kept_ok else "; changed: " + ", ".join(changed))
            )
            if not kept_ok:
                problems.append("(d) zip members of the person's workbook changed: " + ", ".join(changed))
            lines.append(f"(d) sheets now: {', '.join(sheet_names(person))}")
        except CrmkitFailed as exc:
            print(f"crmkit failed: {exc}")
            print("overall: FAIL")
            return 1

        width = max(len(r["label"]) for r in results)
        bwidth = max(len(r["baseline_label"]) for r in results)
        print(
            f"{'':4}{'crmkit':<{width}} {'time':>8}   {'openpyxl':<{bwidth}} {'time':>8}   "
            f"{'ratio':>6} {'target':>7}  verdict"
        )
        for r in results:
            ratio = r["sync_s"] / r["base_s"]
            target = TARGETS[r["name"]]
            r["ratio"] = ratio
            r["pass"] = target is None or ratio <= target
            shown = "-" if target is None else "<= " + format(target, "g") + "x"
            verdict = "info" if target is None else ("PASS" if r["pass"] else "FAIL")
            print(
                f"({r['name']}) {r['label']:<{width}} {r['sync_s']:7.2f}s   {r['baseline_label']:<{bwidth}} "
                f"{r['base_s']:7.2f}s   {ratio:5.2f}x {shown:>7}  {verdict}"
            )
        print()
        for r in results:
            rep = r["report"]
            k = r["counts"]
            print(
                f"({r['name']}) exit {r['exit']}, changes reported {rep['changes']}"
                + (" (skipped: nothing changed)" if skipped(rep) else "")
                + f"; store +{k['store_added']} ~{k['store_updated']} archived {k['store_archived']}; "
                f"sheet +{k['sheet_added']} ~{k['sheet_updated']} ids {k['ids_written']}; "
                f"conflicts {k['conflicts']}, invalid {k['invalid']}, problems {k['problems']}"
            )
            print(
                f"    workbook rewritten: {'yes' if r['rewritten'] else 'no'} "
                f"(book_written={rep['book_written']}); workbook {r['book_mb']:.1f} MB, "
                f"store {r['store_mb']:.1f} MB; crmkit CPU {r['cpu_s']:.2f} s, "
                f"peak RSS {r['rss_child']:.0f} MB (crmkit child); bench process peak {r['rss_base']:.0f} MB"
            )
            for p in first_problems(rep):
                print(f"    {p}")
        print()
        for line in lines:
            print(line)
        print("edited rows (b): " + ", ".join(f"{t} {n}" for t, n in edited.items()))
        if problems:
            print("WRONG COUNTS:")
            for p in problems:
                print(f"  {p}")
        else:
            print(
                "counts: as expected (every row created once, IDs on every row, edits copied, no invalid cells, "
                "every record appended to the person's workbook)"
            )
        for r in results:
            r["snapshot"].unlink(missing_ok=True)
        top = max(results, key=lambda r: r["rss_child"])
        print(
            f"peak RSS: crmkit {top['rss_child']:.0f} MB (its largest child, phase {top['name']}); "
            f"bench process (the openpyxl baselines) {peak_rss_mb():.0f} MB"
        )
        ok = all(r["pass"] for r in results) and not problems
        print("overall: " + ("PASS" if ok else "FAIL"))
        return 0 if ok else 1
    finally:
        if args.keep or args.profile:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
