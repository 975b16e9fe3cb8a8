"""``crmkit sync BOOK.xlsx`` against openpyxl alone, on the same workbook, in one run.

    python bench/bench_sync_excel.py [--rows 50000] [--edit-percent 1] [--keep]

Builds, in a temporary folder, a crmkit workbook (the schema's template from
``crmkit.workbooks.build_template``) holding N rows without IDs: 40% contacts,
30% leads, 20% deals, 10% invoices, plus 1-2 Invoice Lines rows per invoice.
Then, on a fresh store, it times three syncs and sets each beside a plain
openpyxl baseline that reads the *same bytes* the sync read:

a. the first sync (creates every record, writes the IDs back into the
   workbook) vs openpyxl ``load_workbook`` + ``save`` of that workbook;
b. after a person edits 1% of the rows (the Owner cell, with openpyxl, outside
   the timings), a re-sync vs openpyxl reading the workbook read-only
   (``load_workbook(read_only=True)``, every row of every sheet, values only);
c. a re-sync with nothing changed vs that same read-only read.

Each sync runs like ``crmkit sync`` does in its own process: a new ``Store``
and a new ``ExcelBook``, nothing cached. Before each sync the workbook is
copied aside; the baseline then runs on the copy (its sha256 is checked), so
the two always see the same file state and the sync's peak memory is
measured before the baseline adds its own. Peak RSS is the process's peak so
far (``resource.getrusage``), so it only ever grows.
"""

from __future__ import annotations

import argparse
import gc
import hashlib
import os
import random
import resource
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date, timedelta
from pathlib import Path
from typing import Any, TypeVar

from openpyxl import load_workbook
from python_calamine import CalamineWorkbook

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from crmkit.store import Store
from crmkit.sync import SyncReport, sync_book
from crmkit.sync.excel import ExcelBook
from crmkit.workbooks import build_template

T = TypeVar("T")

SHARES = (("Contacts", 0.4), ("Leads", 0.3), ("Deals", 0.2), ("Invoices", 0.1))
DATA_SHEETS = ("Leads", "Contacts", "Deals", "Invoices")
TARGETS = {"a": 1.3, "b": 0.5, "c": 0.1}
OWNERS = ("ana", "bo", "chen", "dara", "eli", "fay")
STAGES = ("prospecting", "qualification", "proposal", "negotiation")
SOURCES = ("web", "referral", "campaign", "event")
TODAY = date(2026, 5, 1)


# -- helpers -------------------------------------------------------------------


def timed(fn: Callable[[], T]) -> tuple[float, T]:
    gc.collect()
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def peak_rss_mb() -> float:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / (1024 * 1024) if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KiB on Linux


def sha256(path: Path) -> str:
    with open(path, "rb") as fh:
        return hashlib.file_digest(fh, "sha256").hexdigest()


def header_index(ws: Any) -> dict[str, int]:
    return {str(c.value): c.column for c in ws[1] if c.value is not None}


# -- the workbook ------------------------------------------------------------------


def split(rows: int) -> dict[str, int]:
    counts = {title: int(rows * share) for title, share in SHARES}
    counts["Contacts"] += rows - sum(counts.values())  # rounding
    return counts


def build_workbook(path: Path, rows: int) -> dict[str, int]:
    """The template, filled with ``rows`` rows without IDs; returns rows per sheet (and lines)."""
    build_template(path)
    wb = load_workbook(path)
    counts = split(rows)
    rng = random.Random(42)
    i = 0  # global row counter: unique emails across contacts and leads

    def fill(title: str, make: Callable[[int, int], dict[str, Any]]) -> None:
        nonlocal i
        ws = wb[title]
        columns = header_index(ws)
        width = max(columns.values())
        for k in range(counts[title]):
            values = make(i, k)
            row: list[Any] = [None] * width
            for header, value in values.items():
                row[columns[header] - 1] = value
            ws.append(row)
            i += 1

    fill(
        "Contacts",
        lambda i, k: {
            "Name": f"Person {i}",
            "Email": f"p{i}@example{i % 300}.com",
            "Title": rng.choice(("CEO", "CTO", "Buyer", "Engineer", "Office manager")),
            "Owner": OWNERS[i % len(OWNERS)],
            "Tags": "vip, newsletter" if i % 7 == 0 else None,
        },
    )
    fill(
        "Leads",
        lambda i, k: {
            "Name": f"Lead {i}",
            "Company": f"Company {i % 997}",
            "Email": f"p{i}@example{i % 300}.com",
            "Source": SOURCES[i % len(SOURCES)],
            "Status": "new",
            "Rating": ("hot", "warm", "cold")[i % 3],
            "Owner": OWNERS[i % len(OWNERS)],
        },
    )
    fill(
        "Deals",
        lambda i, k: {
            "Title": f"Deal {i}",
            "Stage": STAGES[i % len(STAGES)],
            "Amount": rng.choice((500, 1200, 2500.5, 9999.99, 15000, 42000)),
            "Currency": "USD",
            "Close date": TODAY + timedelta(days=i % 180),
            "Owner": OWNERS[i % len(OWNERS)],
        },
    )
    invoice_numbers: list[str] = []

    def invoice(i: int, k: int) -> dict[str, Any]:
        number = f"B-{k + 1:06d}"
        invoice_numbers.append(number)
        return {
            "Number": number,
            "Issue date": TODAY - timedelta(days=k % 90),
            "Currency": ("USD", "EUR", "GBP")[k % 3],
            "Status": "draft",
            "Owner": OWNERS[i % len(OWNERS)],
        }

    fill("Invoices", invoice)
    lines = wb["Invoice Lines"]
    lcols = header_index(lines)
    lwidth = max(lcols.values())
    n_lines = 0
    for k, number in enumerate(invoice_numbers):
        for line in range(1 + k % 2):
            row: list[Any] = [None] * lwidth
            row[lcols["Invoice"] - 1] = number
            row[lcols["Description"] - 1] = f"Service {line + 1}"
            row[lcols["Quantity"] - 1] = 1 + (k + line) % 5
            row[lcols["Unit price"] - 1] = (100, 250, 99.5, 1200)[(k + line) % 4]
            row[lcols["Tax rate"] - 1] = (0, 10, 20)[k % 3]
            lines.append(row)
            n_lines += 1
    wb.save(path)
    counts["Invoice Lines"] = n_lines
    return counts


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


def ids_on_sheets(path: Path) -> dict[str, tuple[int, int]]:
    """Per data sheet: (rows, rows with an ID), read with calamine."""
    book = CalamineWorkbook.from_path(str(path))
    out: dict[str, tuple[int, int]] = {}
    for title in DATA_SHEETS:
        rows = book.get_sheet_by_name(title).to_python()
        headers = [str(h) for h in rows[0]]
        id_col = headers.index("ID")
        data = [r for r in rows[1:] if any(v not in (None, "") for v in r)]
        out[title] = (len(data), sum(1 for r in data if str(r[id_col]).strip()))
    return out


# -- the baselines ---------------------------------------------------------------------


def openpyxl_load_save(path: Path) -> None:
    wb = load_workbook(path)
    out = path.with_name(path.stem + ".openpyxl-saved.xlsx")
    wb.save(out)
    out.unlink()


def openpyxl_read_only(path: Path) -> int:
    wb = load_workbook(path, read_only=True)
    cells = 0
    try:
        for ws in wb.worksheets:
            for row in ws.iter_rows(values_only=True):
                cells += len(row)
    finally:
        wb.close()
    return cells


# -- the sync ------------------------------------------------------------------------


def run_sync(store_path: Path, book_path: Path) -> SyncReport:
    # As `crmkit sync` does in a new process: nothing loaded, nothing cached.
    return sync_book(Store(store_path, actor="bench"), ExcelBook(book_path), today=TODAY)


def counts_of(report: SyncReport) -> dict[str, int]:
    sheets = report.sheets
    return {
        "store_added": sum(len(s.store_added) for s in sheets),
        "store_updated": sum(len(s.store_updated) for s in sheets),
        "store_archived": sum(len(s.store_archived) for s in sheets),
        "sheet_added": sum(len(s.sheet_added) for s in sheets),
        "sheet_updated": sum(len(s.sheet_updated) for s in sheets),
        "ids_written": sum(s.ids_written for s in sheets),
        "conflicts": len(report.conflicts),
        "invalid": len(report.invalid),
    }


def phase(
    name: str,
    label: str,
    baseline_label: str,
    baseline: Callable[[Path], Any],
    store_path: Path,
    book_path: Path,
) -> dict[str, Any]:
    snapshot = book_path.with_name(f"snapshot-{name}.xlsx")
    shutil.copy2(book_path, snapshot)
    before_hash = sha256(book_path)
    before_inode = os.stat(book_path).st_ino
    sync_s, report = timed(lambda: run_sync(store_path, book_path))
    rss_sync = peak_rss_mb()
    if sha256(snapshot) != before_hash:
        raise SystemExit(f"phase {name}: the snapshot differs from the workbook the sync read")
    base_s, _ = timed(lambda: baseline(snapshot))
    rss_base = peak_rss_mb()
    snapshot.unlink()
    after_hash = sha256(book_path)
    return {
        "name": name,
        "label": label,
        "baseline_label": baseline_label,
        "sync_s": sync_s,
        "base_s": base_s,
        "report": report,
        "counts": counts_of(report),
        "rewritten": after_hash != before_hash or os.stat(book_path).st_ino != before_inode,
        "rss_sync": rss_sync,
        "rss_base": rss_base,
        "store_mb": store_path.stat().st_size / 1e6 if store_path.exists() else 0.0,
        "book_mb": book_path.stat().st_size / 1e6,
    }


def check(result: dict[str, Any], expected: dict[str, int]) -> list[str]:
    problems = []
    for key, want in expected.items():
        got = result["counts"][key]
        if got != want:
            problems.append(f"{key} = {got}, expected {want}")
    return problems


# -- the run ---------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, default=50000, help="data rows over the four sheets")
    parser.add_argument("--edit-percent", type=float, default=1.0, help="rows edited before sync (b)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print it")
    args = parser.parse_args(argv)

    folder = Path(tempfile.mkdtemp(prefix="crmkit-bench-sync-"))
    try:
        book = folder / "book.xlsx"
        store = folder / "crm.json"
        build_s, counts = timed(lambda: build_workbook(book, args.rows))
        print(
            f"workbook: {args.rows} rows ("
            + ", ".join(f"{t} {n}" for t, n in counts.items())
            + f"), {book.stat().st_size / 1e6:.1f} MB, built in {build_s:.1f} s"
        )
        print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores, folder {folder}")
        print()

        results: list[dict[str, Any]] = []
        problems: list[str] = []

        a = phase("a", "first sync", "openpyxl load+save", openpyxl_load_save, store, book)
        results.append(a)
        problems += [
            f"(a) {p}"
            for p in check(
                a,
                {
                    "store_added": args.rows,
                    "ids_written": args.rows,
                    "store_updated": 0,
                    "store_archived": 0,
                    "sheet_added": 0,
                    "conflicts": 0,
                    "invalid": 0,
                },
            )
        ]
        on_sheets = ids_on_sheets(book)
        for title, (rows, with_id) in on_sheets.items():
            if rows != counts[title] or with_id != rows:
                problems.append(f"(a) {title}: {with_id} of {rows} rows have an ID, expected {counts[title]}")

        edited = edit_owners(book, args.edit_percent)  # outside the timings
        n_edited = sum(edited.values())
        b = phase(
            "b",
            f"re-sync, {n_edited} rows edited",
            "openpyxl read-only read",
            openpyxl_read_only,
            store,
            book,
        )
        results.append(b)
        problems += [
            f"(b) {p}"
            for p in check(
                b,
                {
                    "store_added": 0,
                    "store_updated": n_edited,
                    "store_archived": 0,
                    "sheet_added": 0,
                    "ids_written": 0,
                    "conflicts": 0,
                    "invalid": 0,
                },
            )
        ]

        c = phase("c", "re-sync, nothing changed", "openpyxl read-only read", openpyxl_read_only, store, book)
        results.append(c)
        if not c["report"].skipped_unchanged or c["report"].changes or c["rewritten"]:
            problems.append(
                "(c) a sync with nothing changed did work: "
                f"skipped={c['report'].skipped_unchanged} changes={c['report'].changes} "
                f"rewritten={c['rewritten']}"
            )

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
            r["pass"] = ratio <= target
            print(
                f"({r['name']}) {r['label']:<{width}} {r['sync_s']:7.2f}s   {r['baseline_label']:<{bwidth}} "
                f"{r['base_s']:7.2f}s   {ratio:5.2f}x {'<= ' + format(target, 'g') + 'x':>7}  "
                f"{'PASS' if r['pass'] else 'FAIL'}"
            )
        print()
        for r in results:
            rep: SyncReport = r["report"]
            k = r["counts"]
            print(
                f"({r['name']}) changes reported {rep.changes}"
                + (" (skipped: nothing changed)" if rep.skipped_unchanged else "")
                + f"; store +{k['store_added']} ~{k['store_updated']} archived {k['store_archived']}; "
                f"sheet +{k['sheet_added']} ~{k['sheet_updated']} ids {k['ids_written']}; "
                f"conflicts {k['conflicts']}, invalid {k['invalid']}"
            )
            print(
                f"    workbook rewritten: {'yes' if r['rewritten'] else 'no'} "
                f"(report.book_written={rep.book_written}); workbook {r['book_mb']:.1f} MB, "
                f"store {r['store_mb']:.1f} MB; peak RSS after sync {r['rss_sync']:.0f} MB, "
                f"after baseline {r['rss_base']:.0f} MB"
            )
        print()
        print("edited rows (b): " + ", ".join(f"{t} {n}" for t, n in edited.items()))
        if problems:
            print("WRONG COUNTS:")
            for p in problems:
                print(f"  {p}")
        else:
            print(
                "counts: as expected (every row created once, IDs on every row, edits copied, no invalid cells)"
            )
        print(f"peak RSS (process): {peak_rss_mb():.0f} MB")
        print("overall: " + ("PASS" if all(r["pass"] for r in results) and not problems else "FAIL"))
        return 0 if all(r["pass"] for r in results) and not problems else 1
    finally:
        if args.keep:
            print(f"kept {folder}")
        else:
            shutil.rmtree(folder, ignore_errors=True)


if __name__ == "__main__":
    raise SystemExit(main())
