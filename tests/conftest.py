from __future__ import annotations

import json
import os
import secrets
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from sheetbooks import KINDS, Books

from crmkit.cli import main
from crmkit.store import Store
from crmkit.testing.postgres import PostgresServer, find_postgres
from crmkit.testing.sheets_standin import SheetsStandIn

REQUIRE_SERVERS = bool(os.environ.get("CRMKIT_REQUIRE_SERVERS"))


class TickingClock:
    """A clock that moves one minute per reading, so timestamps are distinct and known."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))


# The store's own tests run against both backends: `store_path` (and `store`, opened on it) are
# parametrised over "tinydb" (a crm.json in the test's folder) and "postgresql" (a URL whose
# search_path is a fresh schema of its own in one database of the session's server; a schema is
# made in about 10 ms where a database takes 150). A test that reads or edits TinyDB's files
# itself is marked @pytest.mark.tinydb_only: its postgresql variant is deselected, not skipped.

BACKENDS = ("tinydb", "postgresql")


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int | None:
    """``-n auto`` (``make test``): two pytest-xdist workers per CPU, eight at most.

    Most of the suite's time goes on waiting for the real programs it starts (Dovecot,
    PostgreSQL, LibreOffice, pollers killed and run again), not on computing: on a 2-CPU machine
    four workers took 2.3 minutes where two took 3.3. Past eight the longest test file (about
    40 s) decides the time anyway, and each worker starts a PostgreSQL of its own.
    PYTEST_XDIST_AUTO_NUM_WORKERS still decides when set.
    """
    if os.environ.get("PYTEST_XDIST_AUTO_NUM_WORKERS"):
        return None  # pytest-xdist's own hook reads it
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(2 * cpus, 8)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "tinydb_only: reads or edits the TinyDB store's files itself; runs on that backend only"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    kept, dropped = [], []
    for item in items:
        callspec = getattr(item, "callspec", None)
        backend = callspec.params.get("store_backend") if callspec is not None else None
        if backend == "postgresql" and item.get_closest_marker("tinydb_only"):
            dropped.append(item)
        else:
            kept.append(item)
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = kept


@pytest.fixture(params=BACKENDS)
def store_backend(request: pytest.FixtureRequest) -> str:
    """Which backend the test's store is on: "tinydb" or "postgresql"."""
    return str(request.param)


@pytest.fixture
def store_path(store_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Path | str:
    """Where the test's store is: ``tmp_path / "crm.json"``, or a PostgreSQL URL of its own."""
    if store_backend == "tinydb":
        return tmp_path / "crm.json"
    return str(request.getfixturevalue("postgres_schema_url"))


@pytest.fixture
def store(store_path: Path | str, clock: TickingClock, tmp_path: Path) -> Iterator[Store]:
    opened = Store(store_path, actor="test", clock=clock, local_folder=tmp_path)
    yield opened
    opened.close()


@pytest.fixture(scope="module")
def standin() -> Iterator[SheetsStandIn]:
    """The local Sheets API stand-in, one per test module."""
    with SheetsStandIn() as server:
        yield server


@pytest.fixture(params=KINDS)
def books(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Books:
    """Workbooks of each kind crmkit syncs: tests using it run once per adapter."""
    if request.param == "gsheet":
        # no Google account of the machine's: the stand-in needs none, and nothing reaches Google
        monkeypatch.delenv("GOOGLE_APPLICATION_CREDENTIALS", raising=False)
        monkeypatch.delenv("CRMKIT_SHEETS_ENDPOINT", raising=False)
        monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
        return Books("gsheet", tmp_path, request.getfixturevalue("standin"))
    return Books("xlsx", tmp_path)


# A real PostgreSQL (crmkit/testing/postgres.py): one cluster for the whole session, started on
# first use (about a second), and a fresh database for each test. On a developer's machine
# without it the tests that use it skip; CI sets CRMKIT_REQUIRE_SERVERS=1, which makes that an error.


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if find_postgres() is None and not REQUIRE_SERVERS:
        pytest.skip(
            "PostgreSQL is not installed (apt-get install postgresql); "
            "CRMKIT_REQUIRE_SERVERS=1 makes this an error"
        )
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of an empty database of its own, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)


@pytest.fixture(scope="session")
def postgres_shared_url(postgres_server: PostgresServer) -> str:
    """One database for the whole session, holding a schema per test (postgres_schema_url)."""
    return postgres_server.create_database("crmkit_tests")


#: Schemas a finished test left, emptied, for the next one: making crmkit's tables takes about
#: 0.1 s, emptying them a tenth of that (a schema that cannot be emptied is dropped instead).
_SPARE_SCHEMAS: list[str] = []


def _empty_schema(conn: Any, name: str) -> None:
    from crmkit.records.schema import RECORD_TYPES
    from crmkit.store.backend import empty_meta
    from crmkit.store.postgres import SCHEMA_VERSION

    conn.execute("SET lock_timeout = '2s'")
    conn.execute(f"SET search_path = {name}")
    found = conn.execute("SELECT to_regclass('crmkit_schema') IS NOT NULL").fetchone()[0]
    if not found:
        return  # the test made no tables: nothing to empty
    if conn.execute("SELECT version FROM crmkit_schema").fetchone() != (SCHEMA_VERSION,):
        raise ValueError("not crmkit's current tables")
    tables = ", ".join(rt.table for rt in RECORD_TYPES.values())
    conn.execute(f"TRUNCATE {tables}, crmkit_state")
    conn.execute("UPDATE crmkit_counts SET active = 0, archived = 0")
    conn.execute("UPDATE crmkit_meta SET doc = %s", (json.dumps(empty_meta()),))


@pytest.fixture
def postgres_schema_url(postgres_shared_url: str) -> Iterator[str]:
    """The URL of an empty schema of its own (``options=-csearch_path%3D...``) in a shared database.

    Its crmkit tables may already be there, empty: the store "exists", as after ``store create``.
    """
    import psycopg

    if _SPARE_SCHEMAS:
        name = _SPARE_SCHEMAS.pop()
    else:
        name = f"t_{secrets.token_hex(6)}"
        with psycopg.connect(postgres_shared_url, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
    yield f"{postgres_shared_url}?options=-csearch_path%3D{name}"
    with psycopg.connect(postgres_shared_url, autocommit=True) as conn:
        try:
            _empty_schema(conn, name)
        except Exception:
            conn.execute("RESET search_path")
            conn.execute(f"DROP SCHEMA {name} CASCADE")
        else:
            _SPARE_SCHEMAS.append(name)


@pytest.fixture
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """``run("contacts", "add", ..., code=0)``: the CLI in a fresh folder, its exit code checked."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRMKIT_STORE", raising=False)
    monkeypatch.delenv("CRMKIT_CONFIG", raising=False)
    runner = CliRunner()

    def invoke(*args: str, code: int = 0) -> Result:
        result = runner.invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    return invoke


@pytest.fixture
def crm_folder(run: Callable[..., Result]) -> Callable[..., Result]:
    """``run`` in a folder `crmkit init` made, its store holding one contact (Ana Lima)."""
    run("init")
    run("contacts", "add", "name=Ana Lima", "email=ana@limatech.com.br")
    return run
