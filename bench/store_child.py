"""What bench_store.py runs in child processes: a launcher, SQLite's side of each command, and
the in-process transaction timings.

    python bench/store_child.py launch ARGV...        run ARGV, print its wall time and peak RSS (JSON)
    python bench/store_child.py sqlite DB OP ARGS...  one command, done with sqlite3 (a fresh process)
    python bench/store_child.py txn-crmkit STORE FIELD=VALUE...
    python bench/store_child.py txn-sqlite DB FIELD=VALUE...

Only ``sys`` is imported at the top: each mode imports what it needs, so SQLite's
side of a command pays the interpreter start-up, ``sqlite3`` and nothing else.
"""

from __future__ import annotations

import sys

#: What ``crmkit contacts show`` and ``list`` print per record, as crmkit's list columns.
CONTACT_COLUMNS = ("id", "name", "email", "phone", "title", "account", "owner")
ACTIVITY_COLUMNS = ("id", "date", "kind", "subject", "contact", "case", "deal")
DEAL_COLUMNS = ("id", "title", "account", "stage", "amount", "currency", "probability", "close_date", "owner")
OPEN_STAGES = ("prospecting", "qualification", "proposal", "negotiation")


def launch(argv: list[str]) -> None:
    """Run ``argv`` once; print its wall time and its own peak RSS.

    The peak comes from ``getrusage(RUSAGE_CHILDREN)`` in this launcher, whose
    only child is ``argv``: in the bench process that figure would be the
    largest of every child it ever ran.
    """
    import json
    import resource
    import subprocess
    import time

    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True)
    wall = time.perf_counter() - start
    peak_kb = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if sys.platform == "darwin":
        peak_kb //= 1024
    print(
        json.dumps(
            {
                "wall": wall,
                "rss_mb": peak_kb / 1024,
                "rc": proc.returncode,
                "stdout": proc.stdout[-20000:],
                "stderr": proc.stderr[-4000:],
            }
        )
    )


def _assignments(items: list[str]) -> dict[str, str]:
    return dict(item.split("=", 1) for item in items)


def _num(record_id: str) -> int:
    return int(record_id.rsplit("-", 1)[1])


def _now() -> str:
    from datetime import UTC, datetime

    return datetime.now(UTC).isoformat(timespec="seconds")


def _print_rows(title: str, rows: list, columns: tuple[str, ...]) -> None:
    print(f"{title} ({len(rows)}):")
    for row in rows:
        print("  ".join("" if row[c] is None else str(row[c]) for c in columns))


def _insert(con, table: str, prefix: str, values: dict[str, object]) -> str:
    """Insert a record with the next number; returns its id."""
    (last,) = con.execute(f"SELECT coalesce(max(num), 0) FROM {table}").fetchone()
    num = last + 1
    now = _now()
    row = {"num": num, "id": f"{prefix}-{num}", **values, "created_at": now, "updated_at": now}
    names = ", ".join(f'"{k}"' for k in row)
    marks = ", ".join("?" for _ in row)
    con.execute(f"INSERT INTO {table} ({names}) VALUES ({marks})", list(row.values()))
    return row["id"]


def _contact_by_email(con, email: str):
    return con.execute(
        "SELECT * FROM contacts WHERE email = ? AND archived_at IS NULL", (email.strip().casefold(),)
    ).fetchall()


def sqlite_op(db: str, op: str, args: list[str]) -> None:
    """Do with sqlite3 what the crmkit command does, and print a comparable result."""
    import sqlite3

    con = sqlite3.connect(db, isolation_level=None)
    con.row_factory = sqlite3.Row
    if op == "contacts-add":  # check email unique, insert, commit
        values = _assignments(args)
        values["email"] = values["email"].casefold()
        con.execute("BEGIN IMMEDIATE")
        if _contact_by_email(con, values["email"]):
            raise SystemExit(f"duplicate email {values['email']}")
        new_id = _insert(con, "contacts", "C", {**values, "opt_out": 0, "email_status": "ok"})
        con.execute("COMMIT")
        print(f"Added {new_id} {values['name']}")
    elif op == "contacts-show":  # the contact, its account and everything linked to it, newest first
        (contact,) = _contact_by_email(con, args[0])
        for key, value in zip(contact.keys(), contact, strict=True):
            if value is not None:
                print(f"{key}: {value}")
        cid = contact["id"]
        if contact["account"]:
            account = con.execute(
                "SELECT * FROM accounts WHERE num = ?", (_num(contact["account"]),)
            ).fetchone()
            print(f"Account: {account['id']} {account['name']}")
        for table, columns in (
            ("deals", DEAL_COLUMNS),
            ("invoices", ("id",)),
            ("cases", ("id",)),
        ):
            rows = con.execute(
                f"SELECT * FROM {table} WHERE contact = ? AND archived_at IS NULL ORDER BY num", (cid,)
            ).fetchall()
            _print_rows(table, rows, columns)
        rows = con.execute(
            "SELECT * FROM activities WHERE contact = ? AND archived_at IS NULL "
            "ORDER BY coalesce(date, created_at) DESC",
            (cid,),
        ).fetchall()
        _print_rows("activities", rows, ACTIVITY_COLUMNS)
        rows = con.execute(
            "SELECT * FROM leads WHERE converted_contact = ? AND archived_at IS NULL", (cid,)
        ).fetchall()
        _print_rows("leads", rows, ("id",))
    elif op == "contacts-list":  # --where account=A-n
        field, value = args[0].split("=", 1)
        rows = con.execute(
            f'SELECT * FROM contacts WHERE "{field}" = ? AND archived_at IS NULL ORDER BY num', (value,)
        ).fetchall()
        _print_rows("contacts", rows, CONTACT_COLUMNS)
    elif op == "activities-add":  # resolve the contact, insert, commit
        values = _assignments(args)
        con.execute("BEGIN IMMEDIATE")
        new_id = _add_activity(con, values)
        con.execute("COMMIT")
        print(f"Added {new_id} {values.get('subject', '')}")
    elif op == "report-pipeline":  # open deals by currency, pipeline and stage
        rows = con.execute(
            "SELECT coalesce(currency, 'USD') AS currency, coalesce(pipeline, 'sales') AS pipeline, stage, "
            "count(*) AS n, sum(CAST(amount AS REAL)) AS amount, "
            "sum(CAST(amount AS REAL) * coalesce(probability, 0) / 100.0) AS weighted "
            "FROM deals WHERE archived_at IS NULL AND stage IN (?, ?, ?, ?) "
            "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3",
            OPEN_STAGES,
        ).fetchall()
        for row in rows:
            print(
                f"{row['currency']} {row['pipeline']} {row['stage']} {row['n']} "
                f"{row['amount']:.2f} {row['weighted']:.2f} {row['amount'] - row['weighted']:.2f}"
            )
    else:
        raise SystemExit(f"unknown op {op}")
    con.close()


def _add_activity(con, values: dict[str, str]) -> str:
    values = dict(values)
    if "contact" in values and "@" in values["contact"]:
        (contact,) = _contact_by_email(con, values["contact"])
        values["contact"] = contact["id"]
    return _insert(con, "activities", "ACT", values)


def _median(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def txn_crmkit(path: str, args: list[str], repeat: int = 3) -> None:
    """One ``Store.add`` of an activity in a transaction: on an open, loaded store; then with opening it."""
    import json
    import time
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from crmkit.records.assignments import parse_assignments
    from crmkit.records.schema import ACTIVITY
    from crmkit.store import Store

    values = parse_assignments(ACTIVITY, tuple(args))
    store = Store(path, actor="bench")
    store.lookup("contacts", values["contact"])  # loads the file, builds the email index
    warm = []
    for _ in range(repeat):
        start = time.perf_counter()
        with store.transaction():
            store.add("activities", values)
        warm.append(time.perf_counter() - start)
    cold = []
    for _ in range(repeat):
        start = time.perf_counter()
        fresh = Store(path, actor="bench")
        with fresh.transaction():
            fresh.add("activities", values)
        cold.append(time.perf_counter() - start)
        del fresh
    print(json.dumps({"open": _median(warm), "opening": _median(cold)}))


def txn_sqlite(db: str, args: list[str], repeat: int = 3) -> None:
    """The same with sqlite3: one insert and commit on an open connection; then with connecting."""
    import json
    import sqlite3
    import time

    values = _assignments(args)
    con = sqlite3.connect(db, isolation_level=None)
    con.row_factory = sqlite3.Row
    _contact_by_email(con, values["contact"])
    warm = []
    for _ in range(repeat):
        start = time.perf_counter()
        con.execute("BEGIN IMMEDIATE")
        _add_activity(con, values)
        con.execute("COMMIT")
        warm.append(time.perf_counter() - start)
    con.close()
    cold = []
    for _ in range(repeat):
        start = time.perf_counter()
        fresh = sqlite3.connect(db, isolation_level=None)
        fresh.row_factory = sqlite3.Row
        fresh.execute("BEGIN IMMEDIATE")
        _add_activity(fresh, values)
        fresh.execute("COMMIT")
        fresh.close()
        cold.append(time.perf_counter() - start)
    print(json.dumps({"open": _median(warm), "opening": _median(cold)}))


def main(argv: list[str]) -> None:
    mode, rest = argv[0], argv[1:]
    if mode == "launch":
        launch(rest)
    elif mode == "sqlite":
        sqlite_op(rest[0], rest[1], rest[2:])
    elif mode == "txn-crmkit":
        txn_crmkit(rest[0], rest[1:])
    elif mode == "txn-sqlite":
        txn_sqlite(rest[0], rest[1:])
    else:
        raise SystemExit(f"unknown mode {mode}")


if __name__ == "__main__":
    main(sys.argv[1:])
