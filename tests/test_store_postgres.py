"""The PostgreSQL backend's own behaviour, on a real server (crmkit/testing/postgres.py).

The Store's rules run on PostgreSQL in the suites the `store` fixture parametrises
(test_records, test_invoices, ...); this file covers what only this backend does: its
tables and indexes, its schema version, its transactions and locks across connections
and processes, and where its password may and may not come from.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from click.testing import CliRunner

from crmkit.cli import App, main
from crmkit.config import load_config, redact_url
from crmkit.errors import CrmkitError, StoreError, StoreLockedError
from crmkit.records.query import Condition
from crmkit.store import Store
from crmkit.testing.postgres import PostgresServer

ROOT = Path(__file__).resolve().parent.parent


def sql(url: str, query: str, params: Any = None) -> list[tuple[Any, ...]]:
    """A query on its own connection, as another program (or person) on the database would run it."""
    with psycopg.connect(url, autocommit=True) as conn:
        cur = conn.execute(query, params)  # type: ignore[arg-type]
        return cur.fetchall() if cur.description else []


def with_password(url: str, user: str, password: str) -> str:
    return url.replace(f"postgresql://{user}@", f"postgresql://{user}:{password}@")


@pytest.fixture
def store(postgres_url: str, tmp_path: Path) -> Iterator[Store]:
    opened = Store(postgres_url, actor="test", local_folder=tmp_path)
    yield opened
    opened.close()


# -- tables, indexes, schema ------------------------------------------------------------


def test_a_database_without_crmkit_tables_is_no_store_until_created(store: Store, postgres_url: str) -> None:
    assert not store.exists_on_disk()
    assert store.count("contacts") == 0 and list(store.all("contacts")) == [] and store.revision == 0
    assert store.find_by_email("contacts", "a@x.com") == [] and store.state("sync", "k") is None
    assert sql(postgres_url, "SELECT to_regclass('contacts')") == [(None,)]  # reading made nothing
    store.create()
    assert store.exists_on_disk()
    assert sql(postgres_url, "SELECT version FROM crmkit_schema") == [(1,)]
    indexes = {row[0]: row[1] for row in sql(postgres_url, "SELECT indexname, indexdef FROM pg_indexes")}
    for table in ("leads", "contacts", "accounts", "deals", "quotes", "invoices", "cases", "activities"):
        assert "USING gin (keys)" in indexes[f"{table}_keys"]
        assert f"{table}_pkey" in indexes and f"{table}_id_key" in indexes  # number; unique id


def test_a_record_is_a_jsonb_row_found_through_its_indexed_keys(store: Store, postgres_url: str) -> None:
    store.add("accounts", {"name": "Sao Mai Logistics", "domain": "saomai.vn"})
    store.add("contacts", {"name": "Hoa", "email": "Hoa@SaoMai.vn", "phone": "+84 90 123 4567", "account": "A-1"})
    [(doc, keys, archived)] = sql(postgres_url, "SELECT doc, keys, archived FROM contacts WHERE id = 'C-1'")
    assert doc == store.get("C-1") and archived is False
    assert set(keys) == {"email=hoa@saomai.vn", "phone=84901234567", "link:account=A-1"}
    store.archive("C-1")
    [(keys, archived)] = sql(postgres_url, "SELECT keys, archived FROM contacts WHERE id = 'C-1'")
    assert archived is True and "~email=hoa@saomai.vn" in keys
    assert store.find_by_email("contacts", "hoa@saomai.vn") == []
    assert [d["id"] for d in store.find_by_email("contacts", "hoa@saomai.vn", archived=True)] == ["C-1"]
    assert store.count("contacts") == 0 and store.count("contacts", archived=True) == 1
    # the look-up is a probe of the GIN index, not a scan (the planner would scan a table this small)
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("SET enable_seqscan = off")
        plan = conn.execute("EXPLAIN SELECT id FROM contacts WHERE keys @> ARRAY['email=hoa@saomai.vn']")
        assert "contacts_keys" in "\n".join(row[0] for row in plan)


def test_a_row_deleted_behind_crmkits_back_does_not_free_its_number(store: Store, postgres_url: str) -> None:
    store.add("contacts", {"name": "A"})
    store.add("contacts", {"name": "B"})
    sql(postgres_url, "DELETE FROM contacts WHERE id = 'C-2'")
    assert Store(postgres_url).add("contacts", {"name": "C"})["id"] == "C-3"


def test_a_newer_schema_is_refused_with_a_clear_error(store: Store, postgres_url: str) -> None:
    store.create()
    sql(postgres_url, "UPDATE crmkit_schema SET version = 99")
    with pytest.raises(StoreError, match=r"schema version 99, newer than this crmkit knows \(1\): upgrade crmkit"):
        Store(postgres_url).count("contacts")


def test_text_postgresql_cannot_hold_is_kept_exactly(store: Store) -> None:
    """JSONB refuses U+0000; mail bodies and spreadsheet cells carry it now and then."""
    cell = "before\x00after \\u0000 literally"
    act = store.add("activities", {"kind": "note", "subject": "cells", "Cell": cell})
    store.set_state("sync", "book\x00", {"row": ["a\x00"]})
    again = Store(store.location)
    assert again.get(act["id"])["custom"] == {"Cell": cell}
    assert again.find("activities", [Condition("Cell", "=", cell)])[0]["id"] == act["id"]
    assert again.state("sync", "book\x00") == {"row": ["a\x00"], "key": "book\x00"}
    assert again.states("sync") == [{"row": ["a\x00"], "key": "book\x00"}]


# -- transactions -----------------------------------------------------------------------


def test_a_failed_transaction_leaves_nothing_and_the_next_starts_clean(store: Store, postgres_url: str) -> None:
    store.add("contacts", {"name": "Keep"})
    with pytest.raises(RuntimeError), store.transaction():
        store.add("contacts", {"name": "Gone 1"})
        with store.transaction():  # nested: joins
            store.add("invoices", {"lines": [{"description": "x", "quantity": 1, "unit_price": "1"}]})
            store.set_state("sync", "book", {"x": 1})
        raise RuntimeError("boom")
    assert [d["name"] for d in Store(postgres_url).all("contacts")] == ["Keep"]
    assert store.count("invoices") == 0 and store.state("sync", "book") is None
    assert sql(postgres_url, "SELECT active FROM crmkit_counts WHERE tbl = 'contacts'") == [(1,)]
    assert store.add("contacts", {"name": "Next"})["id"] == "C-2"  # the counters were not kept
    assert store.add("invoices", {"lines": [{"description": "x", "quantity": 1, "unit_price": "1"}]})[
        "number"
    ].endswith("-0001")


def test_after_commit_runs_once_the_change_is_visible_to_others(store: Store, postgres_url: str) -> None:
    seen: list[int] = []
    with store.transaction():
        store.add("contacts", {"name": "A"})
        store.after_commit(lambda: seen.append(Store(postgres_url).count("contacts")))
        assert seen == []
    assert seen == [1]


def test_reads_outside_a_transaction_see_the_latest_commit(store: Store, postgres_url: str) -> None:
    other = Store(postgres_url)
    store.add("contacts", {"name": "A", "email": "a@example.com"})
    assert other.find_by_email("contacts", "a@example.com")[0]["name"] == "A"
    other.update("C-1", {"title": "CTO"})
    assert store.get("C-1")["title"] == "CTO" and store.revision == other.revision == 2


def test_a_writer_waits_for_the_lock_then_says_who_holds_it(postgres_server: PostgresServer, postgres_url: str) -> None:
    Store(postgres_url).create()
    with psycopg.connect(postgres_url) as holder:  # another machine's transaction, mid-way
        holder.execute("SELECT doc FROM crmkit_meta WHERE id = 1 FOR UPDATE")
        waiting = Store(postgres_url, lock_timeout=0.3)
        started = time.monotonic()
        with pytest.raises(StoreLockedError) as caught:
            waiting.add("contacts", {"name": "A"})
        assert 0.25 < time.monotonic() - started < 5
        assert str(caught.value) == f"{postgres_url} is locked by another crmkit process (waited 0.3 s for the store's lock)"
        holder.rollback()
    assert waiting.add("contacts", {"name": "A"})["id"] == "C-1"  # the same Store works once it is free


def test_one_sync_at_a_time_across_machines(postgres_url: str) -> None:
    from crmkit.sync.engine import _sync_lock

    first, second = Store(postgres_url, lock_timeout=0.05), Store(postgres_url, lock_timeout=0.05)
    first.create()
    with _sync_lock(first):
        with pytest.raises(CrmkitError, match=r"another sync of .* is still running"), _sync_lock(second):
            pass
        first.add("contacts", {"name": "A"})  # the session's lock outlives the transactions under it
        with pytest.raises(CrmkitError, match="still running"), _sync_lock(second):
            pass
    with _sync_lock(second):
        pass


WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from crmkit.store import Store
    url, tag, how, go = sys.argv[1], sys.argv[2], sys.argv[3], Path(sys.argv[4])
    store = Store(url, lock_timeout=120)
    store.count("contacts")  # connected before the start
    while not go.exists():
        time.sleep(0.001)
    rows = [{"name": f"{tag} {i}"} for i in range(500)]
    if how == "one":
        ids = [d["id"] for d in store.add_many("contacts", rows)]
    elif how == "each":
        ids = [store.add("contacts", row)["id"] for row in rows]
    else:
        ids = [store.add("invoices", {"lines": [{"description": "x", "quantity": 1, "unit_price": "1"}],
                                      "issue_date": "2026-04-15"})["number"] for _ in range(100)]
    print(" ".join(ids))
    """
)


def race(url: str, how: str, folder: Path) -> tuple[list[str], list[str], float]:
    """Two processes, each on its own connection, writing at once; what each got, and how long."""
    go = folder / f"go-{how}"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WRITER, url, tag, how, str(go)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=folder,
        )
        for tag in ("first", "second")
    ]
    time.sleep(1.0)  # both connected and waiting
    started = time.monotonic()
    go.touch()
    outputs = [p.communicate(timeout=300) for p in procs]
    elapsed = time.monotonic() - started
    for proc, (_, err) in zip(procs, outputs, strict=True):
        assert proc.returncode == 0, err
    first, second = (out.split() for out, _ in outputs)
    return first, second, elapsed


def numbers(ids: list[str]) -> list[int]:
    return [int(i.rsplit("-", 1)[1]) for i in ids]


@pytest.mark.slow
def test_two_processes_adding_500_each_lose_nothing_and_share_no_id(postgres_url: str, tmp_path: Path) -> None:
    Store(postgres_url).create()
    # one transaction each: one waits for the other, so each process's ids are contiguous
    first, second, elapsed = race(postgres_url, "one", tmp_path)
    print(f"\n2 x 500 contacts, one transaction each: {elapsed:.2f} s")
    for ids in (first, second):
        assert len(ids) == 500 and numbers(ids) == list(range(numbers(ids)[0], numbers(ids)[0] + 500))
    assert sorted(numbers(first) + numbers(second)) == list(range(1, 1001))
    # a transaction per record: interleaved, still none lost and none given twice
    first, second, elapsed = race(postgres_url, "each", tmp_path)
    print(f"2 x 500 contacts, a transaction each: {elapsed:.2f} s")
    assert sorted(numbers(first) + numbers(second)) == list(range(1001, 2001))
    store = Store(postgres_url)
    assert store.count("contacts") == 2000 and len(store.ids("contacts")) == 2000
    names = sorted(d["name"] for d in store.all("contacts"))
    assert names == sorted(f"{tag} {i}" for tag in ("first", "second") for i in range(500) for _ in (1, 2))
    # invoice numbers, counted in the locked counters row, are never given twice either
    first, second, _ = race(postgres_url, "invoices", tmp_path)
    assert sorted(first + second) == [f"INV-2026-{n:04}" for n in range(1, 201)]


# -- configuration and passwords ---------------------------------------------------------

SECRET = "pw-Zq7!s3cret"


@pytest.fixture(scope="module")
def password_user(postgres_server: PostgresServer) -> Iterator[str]:
    """A role that must give its password (scram-sha-256), on the session's trusting server."""
    user = "crm_pw"
    hba = postgres_server.data_dir / "pg_hba.conf"
    before = hba.read_text()
    hba.write_text(f"host all {user} 127.0.0.1/32 scram-sha-256\n" + before)
    sql(postgres_server.url(), f"CREATE ROLE {user} LOGIN SUPERUSER PASSWORD '{SECRET}'")
    sql(postgres_server.url(), "SELECT pg_reload_conf()")
    yield user
    hba.write_text(before)
    sql(postgres_server.url(), "SELECT pg_reload_conf()")


@pytest.fixture
def pw_url(password_user: str, postgres_url: str) -> str:
    """postgres_url for the role that needs a password (no password in it)."""
    return postgres_url.replace("postgresql://crm@", f"postgresql://{password_user}@")


@pytest.fixture
def cli(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Any]:
    monkeypatch.chdir(tmp_path)
    for name in ("CRMKIT_STORE", "CRMKIT_CONFIG", "CRMKIT_STORE_PASSWORD", "PGPASSWORD", "PGPASSFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.pgpass of the machine's

    def invoke(*args: str, code: int = 0, env: dict[str, str] | None = None) -> Any:
        result = CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)
        assert result.exit_code == code, result.output
        assert SECRET not in result.output
        return result

    return invoke


def test_the_password_comes_from_the_environment_and_never_shows(cli: Callable[..., Any], pw_url: str) -> None:
    failed = cli("--store", pw_url, "contacts", "list", code=1)
    assert failed.output.count("\n") == 1 and "no password supplied" in failed.output
    wrong = cli("--store", pw_url, "contacts", "list", code=1, env={"CRMKIT_STORE_PASSWORD": SECRET[:-1]})
    assert "password authentication failed" in wrong.output
    cli("--store", pw_url, "store", "create", env={"CRMKIT_STORE_PASSWORD": SECRET})
    added = cli("--store", pw_url, "contacts", "add", "name=Ana", env={"PGPASSWORD": SECRET})  # libpq's own
    assert "C-1" in added.output


def test_the_password_comes_from_store_password_command(cli: Callable[..., Any], pw_url: str, tmp_path: Path) -> None:
    (tmp_path / "pw.txt").write_text(SECRET + "\nsecond line ignored\n")
    (tmp_path / "crmkit.toml").write_text(f'store = "{pw_url}"\nstore_password_command = "cat pw.txt"\n')
    cli("store", "create")
    cli("contacts", "add", "name=Ana", "email=ana@example.com")
    shown = cli("contacts", "show", "ana@example.com", "--json")
    assert json.loads(shown.output)["name"] == "Ana"
    (tmp_path / "crmkit.toml").write_text(f'store = "{pw_url}"\nstore_password_command = "exit 3"\n')
    assert cli("contacts", "list", code=1).output == "Error: store_password_command failed (exit 3)\n"


def test_a_password_in_crmkit_toml_is_refused_with_one_line(cli: Callable[..., Any], pw_url: str, tmp_path: Path) -> None:
    for url in (with_password(pw_url, "crm_pw", SECRET), f"{pw_url}?password={SECRET}"):
        (tmp_path / "crmkit.toml").write_text(f'store = "{url}"\n')
        result = cli("contacts", "list", code=1)
        assert result.output == (
            "Error: crmkit.toml: store: the URL holds a password, and passwords are never "
            "read from the config file; set CRMKIT_STORE_PASSWORD or store_password_command instead\n"
        )


def test_a_password_in_the_url_given_on_the_command_line_works_and_never_shows(
    cli: Callable[..., Any], pw_url: str
) -> None:
    url = with_password(pw_url, "crm_pw", SECRET)
    cli("--store", url, "contacts", "add", "name=Ana")
    store = Store(url)
    assert SECRET not in store.location and store.location == pw_url and SECRET not in repr(store)
    assert redact_url(f"{pw_url}?sslmode=disable&password={SECRET}") == f"{pw_url}?sslmode=disable"
    # an error on a connection made with it names the store without its password
    with pytest.raises(StoreError) as caught:
        Store(with_password(pw_url, "crm_pw", SECRET + "x")).count("contacts")
    assert SECRET not in str(caught.value) and str(caught.value).startswith(f"cannot open the store {pw_url}: ")


def test_reading_commands_need_crmkits_tables(cli: Callable[..., Any], postgres_url: str) -> None:
    result = cli("--store", postgres_url, "contacts", "show", "C-1", code=1)
    assert result.output == (
        f"Error: no store at {postgres_url} (the database has no crmkit tables): "
        "run `crmkit store create`, or copy one there with `crmkit store copy`\n"
    )
    assert cli("--store", postgres_url, "store", "create").output == f"{postgres_url} created\n"
    assert "already existed" in cli("--store", postgres_url, "store", "create").output
    assert "schema version 1" in cli("--store", postgres_url, "store", "upgrade").output
    cli("--store", postgres_url, "contacts", "add", "name=Ana", "email=ana@example.com")
    assert "Ana" in cli("--store", postgres_url, "contacts", "show", "ana@example.com").output


def test_side_files_go_to_the_folder_of_crmkit_toml(postgres_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    folder = tmp_path / "team"
    folder.mkdir()
    (folder / "crmkit.toml").write_text(f'store = "{postgres_url}"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRMKIT_STORE", raising=False)
    app = App(config_option=str(folder / "crmkit.toml"))
    dbname = postgres_url.rsplit("/", 1)[1]
    assert app.store_path == folder / f"{dbname}.postgresql"
    Store(postgres_url).create()  # a store crmkit.toml names must exist for a write (issue 15)
    store = app.store()
    assert store.path == app.store_path and store.location == postgres_url
    from crmkit.mail.archive import MailArchive
    from crmkit.mail.journal import CampaignJournal

    assert MailArchive(app.store_path).root == folder / f"{dbname}-mail"
    assert CampaignJournal(store, "spring").wal_path.parent == folder / f"{dbname}-mail" / "campaigns"
    assert load_config(folder / "crmkit.toml").store == postgres_url
    store.add("contacts", {"name": "A"})
    assert list(folder.iterdir()) == [folder / "crmkit.toml"]  # no file named after the store


def test_commands_that_do_not_open_the_store_never_import_psycopg(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom crmkit.cli import main\n"
        "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
        "print('psycopg' in sys.modules)"
    )
    env = {**os.environ, "CRMKIT_STORE": str(tmp_path / "crm.json")}
    for args in (["--version"], ["contacts", "list"]):
        out = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path, env=env)
        assert out.stdout.strip().endswith("False"), (args, out.stdout, out.stderr)


def test_a_store_made_by_another_process_is_seen_by_one_that_looked_before(postgres_url: str) -> None:
    early = Store(postgres_url)
    assert not early.exists_on_disk() and early.count("contacts") == 0
    Store(postgres_url).add("contacts", {"name": "A"})
    assert early.exists_on_disk() and early.count("contacts") == 1 and early.get("C-1")["name"] == "A"
