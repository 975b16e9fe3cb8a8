"""The real PostgreSQL the store tests run against (crmkit.testing.postgres).

These prove the server is the real thing and the fixtures give each test what it needs: psycopg
connects, JSONB and an expression unique index behave as PostgreSQL's do, concurrent writers
lose no update (row locks, and serializable transactions that retry), every test gets a fresh
database that is dropped after it, and a failed start names the server's log.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from psycopg.types.json import Jsonb

from crmkit.testing import postgres
from crmkit.testing.postgres import PostgresServer, find_postgres

REQUIRE_SERVERS = bool(os.environ.get("CRMKIT_REQUIRE_SERVERS"))
needs_postgres = pytest.mark.skipif(
    find_postgres() is None and not REQUIRE_SERVERS,
    reason="PostgreSQL is not installed (apt-get install postgresql); CRMKIT_REQUIRE_SERVERS=1 makes this an error",
)


@pytest.fixture
def scratch() -> Iterator[Path]:
    # Not pytest's tmp_path: a failed start leaves files owned by the postgres user there.
    folder = Path(tempfile.mkdtemp(prefix="crmkit-pgtest-"))
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def test_connects_as_the_trusted_superuser(postgres_server: PostgresServer, postgres_url: str) -> None:
    assert postgres_url.startswith(f"postgresql://crm@127.0.0.1:{postgres_server.port}/test_")
    with psycopg.connect(postgres_url) as conn:
        user, database, version, fsync = conn.execute(
            "SELECT current_user, current_database(), current_setting('server_version_num')::int,"
            " current_setting('fsync')"
        ).fetchone()
    assert user == "crm"
    assert postgres_url.endswith("/" + database)
    assert version >= 130000  # DROP DATABASE ... WITH (FORCE)
    assert fsync == "off"  # the test cluster's speed settings are in force


def test_jsonb_with_a_unique_expression_index(postgres_url: str) -> None:
    with psycopg.connect(postgres_url) as conn:
        conn.execute("CREATE TABLE contacts (id bigserial PRIMARY KEY, doc jsonb NOT NULL)")
        conn.execute("CREATE UNIQUE INDEX contacts_email ON contacts ((doc->>'email'))")
        insert = "INSERT INTO contacts (doc) VALUES (%s)"
        conn.execute(insert, [Jsonb({"email": "ann@example.com", "name": "Ann", "tags": ["vip"]})])
        conn.execute(insert, [Jsonb({"email": "bob@example.com", "name": "Bob"})])
        conn.execute(insert, [Jsonb({"name": "No email"})])  # NULLs are distinct: allowed twice
        conn.execute(insert, [Jsonb({"name": "No email either"})])
        conn.commit()

        with pytest.raises(psycopg.errors.UniqueViolation, match="contacts_email"):
            conn.execute(insert, [Jsonb({"email": "ann@example.com", "name": "Ann again"})])
        conn.rollback()

        rows = conn.execute(
            "SELECT doc->>'name', doc FROM contacts WHERE doc @> %s", [Jsonb({"tags": ["vip"]})]
        ).fetchall()
        assert rows == [("Ann", {"email": "ann@example.com", "name": "Ann", "tags": ["vip"]})]
        conn.execute("SET enable_seqscan = off")  # four rows: make the planner show it can use the index
        plan = conn.execute(
            "EXPLAIN (COSTS OFF) SELECT * FROM contacts WHERE doc->>'email' = 'bob@example.com'"
        ).fetchall()
        assert "contacts_email" in " ".join(row[0] for row in plan)


def test_row_locks_lose_no_update_between_concurrent_writers(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)")
        conn.execute("INSERT INTO counters VALUES (1, 0)")
    rounds = 50
    barrier = threading.Barrier(2)
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with psycopg.connect(postgres_url) as conn:
                barrier.wait()
                for _ in range(rounds):
                    with conn.transaction():
                        # Read, compute in Python, write back: without the lock this loses updates.
                        (n,) = conn.execute("SELECT n FROM counters WHERE id = 1 FOR UPDATE").fetchone()
                        conn.execute("UPDATE counters SET n = %s WHERE id = 1", [n + 1])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    with psycopg.connect(postgres_url) as conn:
        assert conn.execute("SELECT n FROM counters").fetchone() == (2 * rounds,)


def test_serializable_refuses_the_second_of_two_interleaved_updates(postgres_url: str) -> None:
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("CREATE TABLE counters (id int PRIMARY KEY, n int NOT NULL)")
        conn.execute("INSERT INTO counters VALUES (1, 0)")
    serializable = psycopg.IsolationLevel.SERIALIZABLE
    with psycopg.connect(postgres_url) as a, psycopg.connect(postgres_url) as b:
        a.isolation_level = b.isolation_level = serializable
        read, write = "SELECT n FROM counters WHERE id = 1", "UPDATE counters SET n = %s WHERE id = 1"
        (n_a,) = a.execute(read).fetchone()
        (n_b,) = b.execute(read).fetchone()
        assert n_a == n_b == 0  # both saw the same value: the classic lost-update setup
        a.execute(write, [n_a + 1])
        a.commit()
        with pytest.raises(psycopg.errors.SerializationFailure):
            b.execute(write, [n_b + 1])
        b.rollback()
        (n_b,) = b.execute(read).fetchone()  # the retry sees a's update
        b.execute(write, [n_b + 1])
        b.commit()
        assert a.execute(read).fetchone() == (2,)


@pytest.mark.parametrize("turn", [1, 2])
def test_each_test_gets_a_fresh_database(postgres_url: str, turn: int) -> None:
    with psycopg.connect(postgres_url) as conn:
        tables = conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'").fetchone()
        assert tables == (0,)  # whichever turn runs second proves the first one's table is gone
        conn.execute("CREATE TABLE left_behind (turn int)")
        conn.execute("INSERT INTO left_behind VALUES (%s)", [turn])


def test_a_dropped_database_is_gone_even_with_a_connection_left_open(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    name = url.rsplit("/", 1)[1]
    assert name in postgres_server.databases()
    leaked = psycopg.connect(url)  # what a test that forgets to close leaves behind
    try:
        postgres_server.drop_database(url)
        assert name not in postgres_server.databases()
        with pytest.raises(psycopg.OperationalError):
            leaked.execute("SELECT 1")
    finally:
        leaked.close()
    with pytest.raises(ValueError, match="refusing"):
        postgres_server.drop_database("postgres")


@needs_postgres
def test_a_failed_start_names_the_log(scratch: Path) -> None:
    data = scratch / "data"
    data.mkdir(mode=0o700)
    (data / "PG_VERSION").write_text("15\n")  # looks like a cluster, but is not one
    server = PostgresServer(scratch)
    with pytest.raises(RuntimeError) as failure:
        server.start()
    message = str(failure.value)
    assert str(server.log_path) in message
    assert "postgresql.conf" in message  # the server's own complaint, from its log
    assert not server.running


@needs_postgres
def test_start_retries_when_the_chosen_port_is_taken(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        choices = iter([taken_port])
        free_port = postgres._free_port
        monkeypatch.setattr(postgres, "_free_port", lambda: next(choices, None) or free_port())
        with PostgresServer() as server:
            assert server.port != taken_port
            assert "Address already in use" in server.log_text()
            with psycopg.connect(server.url()) as conn:
                assert conn.execute("SELECT 1").fetchone() == (1,)
            folder = server.folder
            assert folder is not None and folder.exists()
        assert not folder.exists()  # its own temporary folder goes when it stops
