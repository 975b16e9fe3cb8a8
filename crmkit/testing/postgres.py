"""A real PostgreSQL server on 127.0.0.1 for tests: a private cluster in a temporary folder.

The PostgreSQL store is tested against the real server rather than a mock or SQLite, because
the bugs worth catching live in what only PostgreSQL does (JSONB, expression indexes, row locks,
serializable transactions). One cluster per test session (initdb and start take about two
seconds) and a fresh database per test (``CREATE DATABASE`` takes a few milliseconds)::

    with PostgresServer() as server:
        url = server.create_database()  # postgresql://crm@127.0.0.1:PORT/test_...
        with psycopg.connect(url) as conn: ...
        server.drop_database(url)

The server comes from Debian's ``postgresql`` package, whose ``initdb`` and ``pg_ctl`` live in
``/usr/lib/postgresql/<version>/bin``, off the PATH. PostgreSQL refuses to run as root, so as
root both run as the ``postgres`` user (``runuser``), who must own the cluster's folder and be
able to reach it. psycopg is imported only by the methods that connect, so importing this module
stays cheap.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import pwd
import re
import secrets
import shlex
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import urlsplit

if TYPE_CHECKING:
    import psycopg

from crmkit.testing.folders import let_others_traverse

__all__ = ["PostgresServer", "find_postgres"]

HOST = "127.0.0.1"
USER = "crm"
START_TIMEOUT = 30  # seconds pg_ctl waits for the server to accept connections
STOP_TIMEOUT = 30
SERVER_USER = "postgres"  # the account the server runs as when we are root (Debian's)

# Test-only settings: nothing here has to survive a crash, and durability costs most of the time.
FAST_SETTINGS = ("fsync=off", "synchronous_commit=off", "full_page_writes=off")

# What the server logs when another process took its port between our choice and its bind.
_PORT_TAKEN = re.compile(r"Address already in use|could not create any TCP/IP sockets")


def find_postgres() -> Path | None:
    """The folder holding ``initdb`` and ``pg_ctl``: Debian's newest version, else the PATH's."""
    versions = []
    for initdb in Path("/usr/lib/postgresql").glob("*/bin/initdb"):
        version = initdb.parent.parent.name
        if re.fullmatch(r"\d+(\.\d+)*", version) and (initdb.parent / "pg_ctl").exists():
            versions.append((tuple(int(part) for part in version.split(".")), initdb.parent))
    if versions:
        return max(versions)[1]
    initdb_path = shutil.which("initdb")
    if initdb_path is not None:
        bindir = Path(initdb_path).resolve().parent
        if (bindir / "pg_ctl").exists():
            return bindir
    return None


def _free_port() -> int:
    # The port has to go on the server's command line; another process could take it before the
    # server binds it, so PostgresServer.start retries when the log says so.
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class PostgresServer:
    """A private PostgreSQL cluster on 127.0.0.1 keeping all its files in ``folder``.

    ``folder`` holds the cluster (``data``), the server's log (``postgres.log``, which also gets
    initdb's output) and its Unix socket. Without a ``folder`` the server makes a temporary one
    and removes it when it stops; a failed start keeps it, so the log the error names can be
    read. An existing cluster in ``folder / "data"`` is started as it is. The superuser is
    ``crm``, and every local connection is trusted: this is for tests only. ``durable`` keeps
    PostgreSQL's own fsync settings (for benchmarks) instead of the tests' FAST_SETTINGS.
    """

    def __init__(
        self, folder: Path | str | None = None, *, bindir: Path | str | None = None, durable: bool = False
    ) -> None:
        self._durable = durable
        self._own_folder = folder is None
        self.folder = Path(folder).absolute() if folder is not None else None
        self.host = HOST
        self.port = 0
        self.user = USER
        self._bindir = Path(bindir) if bindir is not None else None
        self._running = False

    # -- files and addresses

    @property
    def data_dir(self) -> Path:
        return self._folder() / "data"

    @property
    def log_path(self) -> Path:
        return self._folder() / "postgres.log"

    @property
    def running(self) -> bool:
        return self._running

    def url(self, dbname: str = "postgres") -> str:
        """A libpq URL for ``dbname`` on this server (no password: local connections are trusted)."""
        if not self._running:
            raise RuntimeError("the PostgreSQL server is not running: call start() first")
        return f"postgresql://{self.user}@{self.host}:{self.port}/{dbname}"

    def log_text(self, start: int = 0) -> str:
        """The server's log (with initdb's output), from byte ``start`` on."""
        with contextlib.suppress(FileNotFoundError), open(self.log_path, "rb") as log:
            log.seek(start)
            return log.read().decode(errors="replace")
        return ""

    # -- databases

    def create_database(self, name: str | None = None) -> str:
        """Create an empty database (a unique ``test_...`` name unless given); its URL."""
        from psycopg import sql

        name = name or f"test_{secrets.token_hex(6)}"
        with self._admin() as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url(name)

    def drop_database(self, name_or_url: str) -> None:
        """Drop a database, closing any connection a test left open to it."""
        from psycopg import sql

        name = urlsplit(name_or_url).path.lstrip("/") if "://" in name_or_url else name_or_url
        if name in ("postgres", "template0", "template1"):
            raise ValueError(f"refusing to drop the {name} database")
        with self._admin() as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))

    def databases(self) -> list[str]:
        """The names of the databases on the server, templates left out."""
        with self._admin() as conn:
            rows = conn.execute("SELECT datname FROM pg_database WHERE NOT datistemplate ORDER BY 1")
            return [row[0] for row in rows]

    def _admin(self) -> psycopg.Connection[tuple[Any, ...]]:
        import psycopg

        return psycopg.connect(self.url(), autocommit=True, connect_timeout=10)

    # -- lifecycle

    def start(self) -> Self:
        if self._running:
            return self
        bindir = self._bindir or find_postgres()
        if bindir is None or not (bindir / "pg_ctl").exists():
            raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql")
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="crmkit-postgres-"))
        self._prepare_folder()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb(bindir)
        for attempt in range(3):
            self.port = _free_port()
            log_start = self.log_path.stat().st_size
            options = [f"-p {self.port}", f"-k {shlex.quote(str(self._folder()))}"]
            settings = (f"listen_addresses={HOST}", *(() if self._durable else FAST_SETTINGS))
            options += [f"-c {setting}" for setting in settings]
            result = self._run(
                bindir / "pg_ctl",
                ["-D", str(self.data_dir), "-l", str(self.log_path), "-o", " ".join(options)],
                ["-w", "-t", str(START_TIMEOUT), "start"],
            )
            if result.returncode == 0:
                self._running = True
                atexit.register(self.stop)
                return self
            self._pg_ctl_stop(bindir, "immediate")  # in case it came up after pg_ctl gave up
            log = self.log_text(log_start)
            if _PORT_TAKEN.search(log) and attempt < 2:
                continue
            what = f"PostgreSQL did not start on port {self.port} (pg_ctl exited {result.returncode})"
            raise RuntimeError(self._failure(what, result.stdout or "", log))
        raise AssertionError("unreachable")

    def stop(self) -> None:
        if self._running:
            self._running = False
            atexit.unregister(self.stop)
            bindir = self._bindir or find_postgres()
            if bindir is not None and self._pg_ctl_stop(bindir, "fast") != 0:
                self._pg_ctl_stop(bindir, "immediate")
        if self._own_folder and self.folder is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
            self.folder = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _pg_ctl_stop(self, bindir: Path, mode: str) -> int:
        if not (self.data_dir / "postmaster.pid").exists():
            return 0
        args = ["-D", str(self.data_dir), "-m", mode, "-w", "-t", str(STOP_TIMEOUT), "stop"]
        return self._run(bindir / "pg_ctl", args).returncode

    def _initdb(self, bindir: Path) -> None:
        args = ["-D", str(self.data_dir), "-A", "trust", "-U", self.user, "-E", "UTF8", "--locale=C"]
        # --no-sync: a test cluster need not reach the disk (about a second saved).
        result = self._run(bindir / "initdb", args, ["--no-sync"], log=True)
        if result.returncode != 0:
            raise RuntimeError(self._failure(f"initdb exited {result.returncode}", "", self.log_text()))

    def _failure(self, what: str, output: str, log: str) -> str:
        kept = " (kept for inspection)" if self._own_folder else ""
        tail = "\n".join(log.strip().splitlines()[-30:]) or "(empty)"
        message = f"{what}; its log is {self.log_path}{kept}:\n{tail}"
        if output.strip():
            message += f"\n\n{output.strip()}"
        return message

    def _run(self, program: Path, *args: list[str], log: bool = False) -> subprocess.CompletedProcess[str]:
        """Run an initdb or pg_ctl as the server's user; its output goes to the log or is returned."""
        command = [str(program), *(arg for part in args for arg in part)]
        if os.geteuid() == 0:
            runuser = shutil.which("runuser") or shutil.which("runuser", path="/usr/sbin:/sbin")
            if runuser is None:
                raise RuntimeError("runuser (util-linux) is needed to run PostgreSQL as root")
            command = [runuser, "-u", SERVER_USER, "--", *command]
        env = {**os.environ, "LC_ALL": "C"}
        for name in [name for name in env if name.startswith("PG")]:
            del env[name]  # PGDATA, PGPORT, PGUSER... of the caller's own server must not leak in
        with contextlib.ExitStack() as stack:
            out = stack.enter_context(open(self.log_path, "a")) if log else subprocess.PIPE
            return subprocess.run(
                command,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                text=True,
                env=env,
                cwd=self._folder(),  # the postgres user may not be able to enter ours
                check=False,
            )

    # -- setup

    def _folder(self) -> Path:
        if self.folder is None:
            raise RuntimeError("the PostgreSQL server has no folder until it starts")
        return self.folder

    def _prepare_folder(self) -> None:
        folder = self._folder()
        if re.search(r"[\s,\"'\\]", str(folder)):
            raise ValueError(f"PostgreSQL's socket directory cannot have spaces, commas or quotes: {folder}")
        if len(str(folder)) + len("/.s.PGSQL.65535") >= 108:
            raise ValueError(f"folder too long for PostgreSQL's Unix socket (107 bytes at most): {folder}")
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o755)
        self.log_path.touch()
        if os.geteuid() != 0:
            return
        let_others_traverse(folder, f"the {SERVER_USER} user")
        try:
            entry = pwd.getpwnam(SERVER_USER)
        except KeyError:
            raise RuntimeError(
                f"no {SERVER_USER} user to run PostgreSQL as: apt-get install postgresql"
            ) from None
        for path in [folder, *folder.rglob("*")]:
            if path.lstat().st_uid != entry.pw_uid:
                os.lchown(path, entry.pw_uid, entry.pw_gid)
