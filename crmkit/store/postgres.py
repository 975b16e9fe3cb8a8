"""The PostgreSQL backend: a Store's documents in JSONB rows, for teams that share one CRM.

Tables (schema version :data:`SCHEMA_VERSION`, in the connection's current schema)::

    contacts, deals, ...   one per record type: number integer primary key, id text unique,
                           archived boolean, doc jsonb (the document as Store made it), raw
                           bytea (the document's exact JSON when it holds a U+0000, which
                           JSONB cannot; else NULL) and keys text[], its index keys (GIN)
    crmkit_meta            one row: the counters (sequences, revision, numbers) as jsonb
    crmkit_counts          active and archived documents per table, so count() reads one row
    crmkit_state           crmkit's bookkeeping documents: name, key, seq (creation order),
                           doc and raw as above
    crmkit_schema          one row: the version of these tables

The index keys are computed in Python by the same functions as the TinyDB files'
(:mod:`crmkit.store.keys`), as ``"email=ana@x.com"`` for an active document and
``"~email=ana@x.com"`` for an archived one, so a look-up is one ``keys @> ARRAY[...]``
probe of the GIN index and means exactly what it means in the TinyDB store. The GIN index
is built with ``fastupdate = off``: with it on, fresh keys wait in a pending list that
every look-up scans until a vacuum; measured on 100k activities right after loading them,
a link look-up took 12.7 ms with it on and 0.15 ms with it off (loading cost the same).

Transactions: :meth:`PostgresBackend.transaction` begins a database transaction and first
locks the one ``crmkit_meta`` row (``SELECT ... FOR UPDATE``, waiting at most
``lock_timeout``). Every writer does so, so writers take turns exactly like the TinyDB
file lock: each starts from the previous one's commit (READ COMMITTED sees it), and ids
and invoice numbers, counted in that row, are never given twice, whichever machine asks.
A writer that waits too long gets :class:`~crmkit.errors.StoreLockedError`. Reads outside
a transaction run in autocommit mode and see the latest commit; a scan pages through the
table by number, so memory stays flat however large the table.

A new database gets its tables on the first write (or ``crmkit store create``), under an
advisory lock so two first writers do not collide. A store whose tables are of a newer
schema version than this crmkit knows is refused; an older one is migrated on open
(:data:`MIGRATIONS`, under the same advisory lock).

psycopg is imported on the first connection, never at import, so commands that do not
touch the store do not pay for it. The password is never part of :attr:`location`, nor of
any message: it comes from the URL given on the command line or in ``CRMKIT_STORE``, the
``password`` argument (``CRMKIT_STORE_PASSWORD``, ``store_password_command``), or libpq's
own ``PGPASSWORD`` and ``~/.pgpass``.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from crmkit.config.passwords import scrub
from crmkit.errors import StoreError, StoreLockedError
from crmkit.locations import local_store_path, redact_url, url_password
from crmkit.records.schema import RECORD_TYPES
from crmkit.store.backend import Doc, empty_meta
from crmkit.store.keys import INDEXES

if TYPE_CHECKING:
    import psycopg

__all__ = ["MIGRATIONS", "SCHEMA_VERSION", "PostgresBackend"]

#: The version of the tables below; crmkit_schema holds the version a database is at.
SCHEMA_VERSION = 1
#: version -> the statements that bring a database from it to the next version.
MIGRATIONS: dict[int, list[str]] = {}
#: Documents fetched per round trip when scanning a table.
PAGE = 1000
#: Documents a transaction keeps at most of what it read and wrote.
TRANSACTION_CACHE = 20_000
#: Record numbers read together once a transaction has read a table's documents one by one a few times.
READ_AHEAD = 128
#: Advisory lock keys (first of the two int4 keys: crmkit's; second: what is locked).
_LOCK_CLASS = 0x63726D6B  # "crmk"
_SCHEMA_LOCK = 1
_NAMED_LOCKS = {"sync": 2}
_TABLE_NAME = re.compile(r"^[a-z][a-z_]*$")

_RECORD_TABLE = """
CREATE TABLE IF NOT EXISTS {t} (
    number integer PRIMARY KEY,
    id text NOT NULL UNIQUE,
    archived boolean NOT NULL DEFAULT false,
    doc jsonb NOT NULL,
    raw bytea,
    keys text[] NOT NULL DEFAULT '{{}}'
);
CREATE INDEX IF NOT EXISTS {name}_keys ON {t} USING gin (keys) WITH (fastupdate = off);
INSERT INTO crmkit_counts (tbl) VALUES ('{name}') ON CONFLICT DO NOTHING;
"""
_BOOKKEEPING = f"""
CREATE TABLE IF NOT EXISTS crmkit_schema (
    id integer PRIMARY KEY CHECK (id = 1),
    version integer NOT NULL
);
CREATE TABLE IF NOT EXISTS crmkit_meta (id integer PRIMARY KEY CHECK (id = 1), doc jsonb NOT NULL);
CREATE TABLE IF NOT EXISTS crmkit_counts (
    tbl text PRIMARY KEY,
    active bigint NOT NULL DEFAULT 0,
    archived bigint NOT NULL DEFAULT 0
);
CREATE SEQUENCE IF NOT EXISTS crmkit_state_seq;
CREATE TABLE IF NOT EXISTS crmkit_state (
    name text NOT NULL,
    key text NOT NULL,
    seq bigint NOT NULL DEFAULT nextval('crmkit_state_seq'),
    doc jsonb NOT NULL,
    raw bytea,
    PRIMARY KEY (name, key)
);
CREATE INDEX IF NOT EXISTS crmkit_state_order ON crmkit_state (name, seq);
INSERT INTO crmkit_schema (id, version) VALUES (1, {SCHEMA_VERSION}) ON CONFLICT DO NOTHING;
"""


def _dumps(value: Any) -> bytes:
    return orjson.dumps(value)


def _text(text: str) -> str:
    """Text as a PostgreSQL text column can hold it: no NUL characters."""
    return text.replace("\x00", "\ufffd")


def _key_entry(index: str, key: str, archived: bool) -> str:
    return _text(f"{'~' if archived else ''}{index}={key}")


def _keys(table: str, doc: Doc) -> list[str]:
    """The document's entries for the keys column: ``index=key``, ``~`` first when archived."""
    archived = bool(doc.get("archived_at"))
    return [
        _key_entry(name, key, archived)
        for name, keys_of in INDEXES.get(table, {}).items()
        for key in keys_of(doc)
    ]


def _pack(doc: Any) -> tuple[Any, bytes | None]:
    """A document as the doc (jsonb) and raw (bytea) columns hold it.

    JSONB cannot hold the character U+0000, which mail and cells do carry now and
    then: such a document is kept exactly in ``raw``, and ``doc`` gets U+FFFD instead.
    """
    from psycopg.types.json import Jsonb

    data = orjson.dumps(doc)
    if b"\\u0000" not in data:
        return Jsonb(doc, lambda _: data), None
    return Jsonb(doc, lambda _: data.replace(b"\\u0000", b"\\ufffd")), data


def _unpack(doc: Any, raw: bytes | None) -> Any:
    return doc if raw is None else orjson.loads(raw)


class PostgresBackend:
    """A Store's documents in a PostgreSQL database (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        *,
        lock_timeout: float = 30.0,
        password: str | Callable[[], str | None] | None = None,
        local_folder: str | os.PathLike[str] | None = None,
    ) -> None:
        self._url = url
        self._password_source = password
        self._password: str | None = None
        #: the URL without its password: safe for messages and logs
        self.location = redact_url(url)
        #: where local side files (mail archive, campaign journals) go; never created itself
        self.path: Path = local_store_path(url, Path(local_folder) if local_folder is not None else Path())
        self.lock_timeout = lock_timeout
        self._conn: psycopg.Connection[Any] | None = None
        self._version: int | None = None  # the schema version found, once checked
        self._depth = 0
        self._meta: Doc | None = None
        self._meta_read = b""
        self._counts: dict[str, list[int]] = {}
        self._after: list[Callable[[], None]] = []
        # the documents the last look-up found: Store reads them next (one round trip, not one each)
        self._found: dict[tuple[str, int], Doc] = {}
        # inside a transaction no other writer can change anything (they wait for the counters
        # row), so what it read or wrote is kept until it ends: a sync that resolves the same
        # account for each of 1,500 rows asks the database once, as the TinyDB files would
        self._docs: dict[tuple[str, int], Doc | None] = {}
        self._hits: dict[tuple[str, str], list[str]] = {}
        self._misses: dict[str, int] = {}

    # -- the connection ----------------------------------------------------

    def _secret(self) -> str | None:
        if url_password(self._url) is not None:
            return None  # libpq reads it from the URL
        if self._password is None:
            source = self._password_source
            if callable(source):
                source = source()
            self._password = source or os.environ.get("CRMKIT_STORE_PASSWORD") or ""
        return self._password or None

    def _scrub(self, text: str) -> str:
        return " ".join(scrub(text, self._password, url_password(self._url)).split())

    def _connection(self) -> psycopg.Connection[Any]:
        conn = self._conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        if self._depth:
            raise StoreError(f"the connection to the store {self.location} was lost mid-transaction")
        try:
            import psycopg
            from psycopg.types.json import set_json_dumps, set_json_loads
        except ImportError:
            raise StoreError(
                f"the store {self.location} is a PostgreSQL database, which needs psycopg: "
                "pip install 'crmkit[postgres]'"
            ) from None

        options: dict[str, Any] = {"autocommit": True, "application_name": "crmkit"}
        if "connect_timeout" not in self._url:
            options["connect_timeout"] = 10
        secret = self._secret()
        if secret:
            options["password"] = secret
        try:
            conn = psycopg.connect(self._url, **options)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open the store {self.location}: {self._scrub(str(exc))}") from None
        set_json_loads(orjson.loads, conn)
        set_json_dumps(_dumps, conn)
        self._conn = conn
        self._version = None
        return conn

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn the database's errors into crmkit's, naming the store and never the password."""
        import psycopg

        try:
            yield
        except psycopg.errors.LockNotAvailable:
            raise StoreLockedError(
                f"{self.location} is locked by another crmkit process "
                f"(waited {self.lock_timeout:g} s for the store's lock)"
            ) from None
        except psycopg.OperationalError as exc:
            raise StoreError(f"the store {self.location} failed: {self._scrub(str(exc))}") from None

    def _run(self, query: str, params: Any = None) -> psycopg.Cursor[Any]:
        conn = self._connection()
        with self._errors():
            return conn.execute(query, params)  # type: ignore[arg-type]  # table names are checked

    # -- the schema ----------------------------------------------------------

    def _schema_version(self) -> int:
        """The version of crmkit's tables in the database (0: none yet); a newer one is refused."""
        if self._version is not None:
            return self._version
        row = self._run("SELECT to_regclass('crmkit_schema') IS NOT NULL").fetchone()
        version = 0
        if row and row[0]:
            found = self._run("SELECT version FROM crmkit_schema WHERE id = 1").fetchone()
            version = int(found[0]) if found else 0
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"the store {self.location} has schema version {version}, newer than this crmkit "
                f"knows ({SCHEMA_VERSION}): upgrade crmkit to use it"
            )
        if 0 < version < SCHEMA_VERSION and not self._depth:
            with self.transaction():  # migrates, under the schema lock
                pass
            return self._schema_version()
        if version:  # "no tables yet" is asked again next time: another process may make them
            self._version = version
        return version

    def _prepare(self) -> None:
        """Create or migrate crmkit's tables; inside the transaction, under the schema lock."""
        self._run("SELECT pg_advisory_xact_lock(%s, %s)", (_LOCK_CLASS, _SCHEMA_LOCK))
        row = self._run("SELECT to_regclass('crmkit_schema') IS NOT NULL").fetchone()
        version = 0
        if row and row[0]:
            found = self._run("SELECT version FROM crmkit_schema WHERE id = 1").fetchone()
            version = int(found[0]) if found else 0
        if version > SCHEMA_VERSION:
            self._version = None
            self._schema_version()  # raises
        if version == 0:
            self._run(_BOOKKEEPING)
            for table in RECORD_TYPES.values():
                self._run(_RECORD_TABLE.format(t=_ident(table.table), name=table.table))
            self._run(
                "INSERT INTO crmkit_meta (id, doc) VALUES (1, %s) ON CONFLICT DO NOTHING",
                (_jsonb(empty_meta()),),
            )
        while 0 < version < SCHEMA_VERSION:
            for statement in MIGRATIONS[version]:
                self._run(statement)
            version += 1
            self._run("UPDATE crmkit_schema SET version = %s WHERE id = 1", (version,))
        self._version = SCHEMA_VERSION

    # -- transactions ----------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    def after_commit(self, callback: Callable[[], None]) -> None:
        if not self._depth:
            raise StoreError("after_commit needs an open transaction")
        self._after.append(callback)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self._depth:
            self._depth += 1
            try:
                yield
            finally:
                self._depth -= 1
            return
        version = self._schema_version()
        conn = self._connection()
        callbacks: list[Callable[[], None]] = []
        self._found, self._docs, self._hits, self._misses = {}, {}, {}, {}
        try:
            with self._errors(), conn.transaction():
                self._depth = 1
                millis = max(1, round(self.lock_timeout * 1000))
                self._run(f"SET LOCAL lock_timeout = {millis}")
                if version != SCHEMA_VERSION:
                    self._prepare()
                row = self._run("SELECT doc FROM crmkit_meta WHERE id = 1 FOR UPDATE").fetchone()
                self._meta = row[0] if row else empty_meta()
                assert self._meta is not None
                self._meta.setdefault("sequences", {})
                self._meta_read = orjson.dumps(self._meta, option=orjson.OPT_SORT_KEYS)
                yield
                self._flush()
                callbacks = self._after
        except BaseException:
            self._version = None  # another process may have changed the schema meanwhile
            raise
        finally:
            self._depth = 0
            self._found, self._docs, self._hits, self._misses = {}, {}, {}, {}
            self._meta = None
            self._counts = {}
            self._after = []
        for callback in callbacks:
            callback()

    def _flush(self) -> None:
        """Write what the transaction keeps in memory: the counters and the per-table counts."""
        assert self._meta is not None
        if orjson.dumps(self._meta, option=orjson.OPT_SORT_KEYS) != self._meta_read:
            self._run("UPDATE crmkit_meta SET doc = %s WHERE id = 1", (_jsonb(self._meta),))
        for table, (active, archived) in self._counts.items():
            if active or archived:
                self._run(
                    "UPDATE crmkit_counts SET active = active + %s, archived = archived + %s WHERE tbl = %s",
                    (active, archived, table),
                )

    def _need_transaction(self, what: str) -> None:
        if not self._depth:
            raise StoreError(f"{what} on {self.location} needs a transaction")

    def create(self, tables: list[str]) -> None:
        with self.transaction():
            for table in tables:
                _check_table(table)

    def exists(self) -> bool:
        return self._schema_version() > 0

    # -- records -------------------------------------------------------------------

    def _ready(self) -> bool:
        return self._depth > 0 or self._schema_version() > 0

    def get(self, table: str, number: int) -> Doc | None:
        if self._depth:
            if (table, number) in self._docs:
                return self._docs[(table, number)]
        else:
            found = self._found.pop((table, number), None)
            if found is not None:
                return found
            if not self._ready():
                return None
        if self._depth:
            self._misses[table] = self._misses.get(table, 0) + 1
            if self._misses[table] > 2:  # a bulk job (a sync, an import): read ahead, as a segment would
                self._read_block(table, number)
                return self._docs[(table, number)]
        query = f"SELECT doc, raw FROM {_ident(table)} WHERE number = %s"
        row = self._run(query, (number,)).fetchone()
        doc = _unpack(row[0], row[1]) if row else None
        if self._depth:
            self._remember({(table, number): doc})
        return doc

    def _read_block(self, table: str, number: int) -> None:
        first = (number - 1) // READ_AHEAD * READ_AHEAD + 1
        query = f"SELECT number, doc, raw FROM {_ident(table)} WHERE number BETWEEN %s AND %s"
        block: dict[tuple[str, int], Doc | None] = dict.fromkeys(
            (table, n) for n in range(first, first + READ_AHEAD)
        )
        for n, doc, raw in self._run(query, (first, first + READ_AHEAD - 1)):
            block[(table, n)] = _unpack(doc, raw)
        self._remember(block)

    def _remember(self, docs: dict[tuple[str, int], Doc | None]) -> None:
        if len(self._docs) > TRANSACTION_CACHE:  # a bulk load (store copy): keep memory flat
            self._docs = {}
        self._docs.update(docs)

    def put(self, table: str, number: int, doc: Doc, old: Doc | None) -> None:
        self._need_transaction("a change")
        t = _ident(table)
        archived = bool(doc.get("archived_at"))
        packed, raw = _pack(doc)
        keys = _keys(table, doc)
        self._run(
            f"INSERT INTO {t} (number, id, archived, doc, raw, keys) VALUES (%s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (number) DO UPDATE SET id = EXCLUDED.id, archived = EXCLUDED.archived, "
            "doc = EXCLUDED.doc, raw = EXCLUDED.raw, keys = EXCLUDED.keys",
            (number, doc["id"], archived, packed, raw, keys),
        )
        self._remember({(table, number): doc})
        for entry in {*keys, *(_keys(table, old) if old is not None else ())}:
            self._hits.pop((table, entry), None)  # a look-up of a key it had or has changed
        delta = self._counts.setdefault(table, [0, 0])
        if old is not None:
            delta[1 if old.get("archived_at") else 0] -= 1
        delta[1 if archived else 0] += 1

    def scan(self, table: str) -> Iterator[Doc]:
        for _, doc in self._numbered(table):
            yield doc

    def scan_checked(self, table: str) -> Iterator[tuple[int, Doc, bool]]:
        """Like :meth:`scan`, with each document's number; none is vouched for (any may be hand-edited)."""
        for number, doc in self._numbered(table):
            yield number, doc, False

    def _numbered(self, table: str) -> Iterator[tuple[int, Doc]]:
        if not self._ready():
            return
        query = f"SELECT number, doc, raw FROM {_ident(table)} WHERE number > %s ORDER BY number LIMIT {PAGE}"
        last = 0
        while True:
            rows = self._run(query, (last,)).fetchall()
            for number, doc, raw in rows:
                yield int(number), _unpack(doc, raw)
            if len(rows) < PAGE:
                return
            last = rows[-1][0]

    def count(self, table: str) -> tuple[int, int]:
        if not self._ready():
            return 0, 0
        _check_table(table)
        row = self._run("SELECT active, archived FROM crmkit_counts WHERE tbl = %s", (table,)).fetchone()
        active, archived = (int(row[0]), int(row[1])) if row else (0, 0)
        pending = self._counts.get(table, [0, 0])
        return active + pending[0], archived + pending[1]

    def lookup(self, table: str, index: str, key: str, *, archived: bool = False) -> list[str]:
        if index not in INDEXES.get(table, {}):
            raise StoreError(f"{table} have no index {index!r}")
        if not self._ready():
            return []
        entry = _key_entry(index, key, archived)
        if self._depth and (table, entry) in self._hits:
            return list(self._hits[(table, entry)])
        query = f"SELECT number, id, doc, raw FROM {_ident(table)} WHERE keys @> %s ORDER BY number"
        rows = self._run(query, ([entry],)).fetchall()
        found: dict[tuple[str, int], Doc] = {
            (table, number): _unpack(doc, raw) for number, _, doc, raw in rows
        }
        ids = [row[1] for row in rows]
        if self._depth:
            self._remember(dict(found))
            self._hits[(table, entry)] = ids
        else:
            self._found = found
        return list(ids)

    # -- counters and bookkeeping -------------------------------------------------

    def meta(self) -> Doc:
        if self._meta is not None:
            return self._meta
        if not self._ready():
            return empty_meta()
        row = self._run("SELECT doc FROM crmkit_meta WHERE id = 1").fetchone()
        meta: Doc = row[0] if row else empty_meta()
        meta.setdefault("sequences", {})
        return meta

    def state(self, name: str, key: str) -> Doc | None:
        if not self._ready():
            return None
        query = "SELECT doc, raw FROM crmkit_state WHERE name = %s AND key = %s"
        row = self._run(query, (name, _text(key))).fetchone()
        return _unpack(row[0], row[1]) if row else None

    def states(self, name: str) -> list[Doc]:
        if not self._ready():
            return []
        rows = self._run("SELECT doc, raw FROM crmkit_state WHERE name = %s ORDER BY seq", (name,))
        return [_unpack(doc, raw) for doc, raw in rows]

    def state_names(self) -> list[str]:
        """The names of the bookkeeping tables that hold documents (``store copy`` needs them)."""
        if not self._ready():
            return []
        return [row[0] for row in self._run("SELECT DISTINCT name FROM crmkit_state ORDER BY 1")]

    def set_state(self, name: str, key: str, value: Mapping[str, Any] | None) -> None:
        self._need_transaction("a change")
        if value is None:
            self._run("DELETE FROM crmkit_state WHERE name = %s AND key = %s", (name, _text(key)))
        else:
            packed, raw = _pack({**value, "key": key})
            self._run(
                "INSERT INTO crmkit_state (name, key, doc, raw) VALUES (%s, %s, %s, %s) "
                "ON CONFLICT (name, key) DO UPDATE SET doc = EXCLUDED.doc, raw = EXCLUDED.raw",
                (name, _text(key), packed, raw),
            )

    # -- beyond the Backend protocol -----------------------------------------------

    def clear(self) -> None:
        """Empty every table and reset the counters (``store copy --force``); in a transaction."""
        self._need_transaction("emptying the store")
        tables = ", ".join(_ident(rt.table) for rt in RECORD_TYPES.values())
        self._run(f"TRUNCATE {tables}, crmkit_state")
        self._run("UPDATE crmkit_counts SET active = 0, archived = 0")
        self._counts, self._docs, self._hits = {}, {}, {}
        assert self._meta is not None
        self._meta.clear()
        self._meta.update(empty_meta())

    @contextmanager
    def exclusive(self, name: str, *, timeout: float, busy: str) -> Iterator[None]:
        """Hold a lock named ``name`` across every machine using this database (one sync at a time).

        A session-level advisory lock, kept across the transactions made meanwhile;
        ``busy`` is the message when another holder keeps it past ``timeout`` seconds.
        """
        key = (_LOCK_CLASS, _NAMED_LOCKS[name])
        deadline = time.monotonic() + timeout
        while True:
            row = self._run("SELECT pg_try_advisory_lock(%s, %s)", key).fetchone()
            if row and row[0]:
                break
            if time.monotonic() >= deadline:
                raise StoreLockedError(busy)
            time.sleep(0.05)
        try:
            yield
        finally:
            with contextlib.suppress(StoreError):
                self._run("SELECT pg_advisory_unlock(%s, %s)", key)

    def close(self) -> None:
        if self._conn is not None:
            with contextlib.suppress(Exception):
                self._conn.close()
            self._conn = None
            self._version = None


def _check_table(table: str) -> str:
    if table not in RECORD_TYPES or not _TABLE_NAME.match(table):
        raise StoreError(f"no record table {table!r} in a PostgreSQL store")
    return table


def _ident(table: str) -> str:
    return f'"{_check_table(table)}"'


def _jsonb(value: Any) -> Any:
    from psycopg.types.json import Jsonb

    return Jsonb(value, _dumps)
