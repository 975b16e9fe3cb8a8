"""Real mail servers on 127.0.0.1 for tests: a private Dovecot (IMAP) and an aiosmtpd SMTP server.

The IMAP poller and the mail-merge code are tested against real protocol implementations rather
than mocks, because the bugs worth catching live in the protocol details (STARTTLS, IDLE, UIDs,
SMTP reply codes, dropped connections). Both servers start inside the test process's control,
on free loopback ports, with a throwaway TLS certificate authority whose file clients can trust::

    with DovecotServer(tmp_path / "imap") as imap:
        imap.add_user("alice", "pw")
        imap.append("alice", "INBOX", b"Subject: hi\\r\\n\\r\\nbody\\r\\n")
        ctx = ssl.create_default_context(cafile=imap.cafile)
        with IMAPClient(imap.host, port=imap.ssl_port, ssl_context=ctx) as client: ...

    with SMTPServer(starttls=True, auth={"mailer": "pw"}) as smtp:
        ...  # smtplib.SMTP(smtp.host, smtp.port); smtp.messages

Dovecot comes from Debian's ``dovecot-imapd``; aiosmtpd, imapclient and cryptography are Python
packages. They are imported only when a server starts, so importing this module stays cheap.
"""

from __future__ import annotations

import atexit
import contextlib
import email
import email.message
import email.policy
import grp
import os
import pwd
import re
import secrets
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal, Self

if TYPE_CHECKING:
    from aiosmtpd.controller import Controller
    from imapclient import IMAPClient

from crmkit.testing.folders import let_others_traverse

__all__ = [
    "DovecotServer",
    "ReceivedMessage",
    "SMTPServer",
    "TLSFiles",
    "find_dovecot",
    "make_tls_files",
]

HOST = "127.0.0.1"
START_TIMEOUT = 10.0


# --------------------------------------------------------------------------------------------
# TLS


@dataclass(frozen=True)
class TLSFiles:
    """PEM files of a throwaway CA and a server certificate it signed (for 127.0.0.1/localhost).

    A separate CA (rather than one self-signed leaf) keeps the chain valid under OpenSSL's strict
    verification, which newer Pythons turn on in ``ssl.create_default_context``.
    """

    cafile: Path
    certfile: Path
    keyfile: Path

    def server_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(self.certfile, self.keyfile)
        return context

    def client_context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.cafile))


def make_tls_files(folder: Path, hostnames: Iterable[str] = ("localhost",)) -> TLSFiles:
    """Write ``ca.pem``, ``cert.pem`` (leaf + CA chain) and ``key.pem`` into ``folder``."""
    import datetime as dt
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    folder.mkdir(parents=True, exist_ok=True)
    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "crmkit test CA")])
    ca_ski = x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key())
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=True,
                crl_sign=True,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(ca_ski, critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    names: list[x509.GeneralName] = [x509.IPAddress(ipaddress.ip_address(HOST))]
    names += [x509.DNSName(name) for name in hostnames]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")]))
        .issuer_name(ca_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=7))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.SubjectAlternativeName(names), critical=False)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    files = TLSFiles(folder / "ca.pem", folder / "cert.pem", folder / "key.pem")
    pem = serialization.Encoding.PEM
    files.cafile.write_bytes(ca_cert.public_bytes(pem))
    files.certfile.write_bytes(cert.public_bytes(pem) + ca_cert.public_bytes(pem))
    files.keyfile.touch(mode=0o600)
    files.keyfile.write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return files


def _free_port() -> int:
    # Dovecot needs port numbers in its config; another process could take one before Dovecot
    # binds it, so DovecotServer.start retries on "Address already in use".
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


# --------------------------------------------------------------------------------------------
# Dovecot (IMAP)


def find_dovecot() -> str | None:
    """Path of the ``dovecot`` binary; it lives in /usr/sbin, often not on a non-root PATH."""
    return shutil.which("dovecot") or shutil.which("dovecot", path="/usr/sbin:/usr/local/sbin:/sbin")


class DovecotServer:
    """A private Dovecot IMAP server on 127.0.0.1 keeping all its files in ``folder``.

    Its own ``base_dir``, ``state_dir`` and ``instance_name`` keep it apart from a system Dovecot
    and from other test runs. Users live in passwd-files (``folder / "users" / <user>``) that
    Dovecot reads at each login, so :meth:`add_user` works while the server runs. Mail is stored
    as a maildir in ``folder / "mail" / <user> / "Maildir"``.

    As root, Dovecot will not run its login processes as root: they run as ``dovenull``, the mail
    processes as ``dovecot``, so those users must be able to reach ``folder``.
    """

    def __init__(self, folder: Path | str, *, binary: str | None = None) -> None:
        self.folder = Path(folder).absolute()
        self.host = HOST
        self.port = 0
        self.ssl_port = 0
        self._binary = binary
        self._users: dict[str, str] = {}
        self._users_lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._tls: TLSFiles | None = None

    # -- files

    @property
    def cafile(self) -> Path:
        """The CA that signed the server's certificate: ``ssl.create_default_context(cafile=...)``."""
        return self.folder / "tls" / "ca.pem"

    @property
    def log_path(self) -> Path:
        return self.folder / "dovecot.log"

    @property
    def config_path(self) -> Path:
        return self.folder / "dovecot.conf"

    def log_text(self) -> str:
        """Dovecot's log, plus what it printed before its log was set up (config errors)."""
        parts = []
        for path in (self.folder / "dovecot.out", self.log_path):
            with contextlib.suppress(FileNotFoundError):
                parts.append(path.read_text(errors="replace"))
        return "".join(parts)

    # -- users

    def add_user(self, name: str, password: str) -> None:
        if not name or any(c in name for c in ":/\n\r\0") or any(c in password for c in ":\n\r\0"):
            raise ValueError(f"user name or password unusable in a passwd-file: {name!r}")
        with self._users_lock:
            if self._users.get(name, password) != password:
                # A changed password: Dovecot notices a changed passwd-file by its mtime (whole
                # seconds) and size, and stats it at most once a second. Writing it in a new
                # second makes the change visible to the next login.
                time.sleep(1 - time.time() % 1 + 0.01)
            self._users[name] = password
            self._write_passwd(name)

    def _write_passwd(self, user: str) -> None:
        # One passwd-file per user: Dovecot re-reads a passwd-file at most once a second, so a
        # user added to a shared file right after a login could stay unknown for up to a
        # second; a file Dovecot has not seen yet is always read. Written whole and renamed into
        # place so Dovecot never reads a half-written file.
        self._prepare_folder()
        path = self.folder / "users" / user
        tmp = self.folder / f".passwd-{user}.tmp"
        tmp.write_text(f"{user}:{{PLAIN}}{self._users[user]}\n")
        _, internal, _ = self._accounts()
        if os.geteuid() == 0:
            os.chown(tmp, -1, pwd.getpwnam(internal).pw_gid)
        tmp.chmod(0o640)
        tmp.replace(path)

    def password(self, user: str) -> str:
        """The password :meth:`add_user` gave ``user``, for tests that log in by hand."""
        return self._users[user]

    # -- lifecycle

    def start(self) -> Self:
        if self._process is not None:
            return self
        binary = self._binary or find_dovecot()
        if binary is None or not Path(binary).exists():
            raise RuntimeError("dovecot is not installed: apt-get install dovecot-imapd")
        if re.search(r"[\s%\"]", str(self.folder)):
            # Dovecot's config splits settings' arguments at spaces and expands %-variables.
            raise ValueError(f"dovecot cannot use a folder with spaces, % or quotes: {self.folder}")
        self._prepare_folder()
        if self._tls is None:
            self._tls = make_tls_files(self.folder / "tls")
        for attempt in range(3):
            self.port, self.ssl_port = _free_port(), _free_port()
            self.config_path.write_text(self._config())
            self.log_path.unlink(missing_ok=True)
            with open(self.folder / "dovecot.out", "wb") as out:
                self._process = subprocess.Popen(
                    [binary, "-F", "-c", str(self.config_path)],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            try:
                self._wait_until_ready()
            except RuntimeError:
                log = self.log_text()
                self.stop()
                if "Address already in use" in log and attempt < 2:
                    continue
                raise
            atexit.register(self.stop)
            return self
        raise AssertionError("unreachable")

    def stop(self) -> None:
        process, self._process = self._process, None
        if process is None:
            return
        atexit.unregister(self.stop)
        if process.poll() is None:
            process.terminate()  # the master stops its children, then exits
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _wait_until_ready(self) -> None:
        # Ready means a login process answers with its greeting, not just a bound socket.
        assert self._process is not None
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"dovecot exited with {self._process.returncode}:\n{self._log_tail()}")
            # The master binds every listener before it starts a login process, so a greeting
            # on the plain port means the IMAPS port is listening too.
            with (
                contextlib.suppress(OSError),
                socket.create_connection((self.host, self.port), timeout=1) as sock,
            ):
                if sock.recv(100).startswith(b"* OK"):
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"dovecot did not come up in {START_TIMEOUT:.0f} s:\n{self._log_tail()}")
            time.sleep(0.05)

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    # -- setup

    @staticmethod
    def _accounts() -> tuple[str, str, str]:
        """(login user, internal user and group, mail user): Dovecot's own users as root, else us."""
        if os.geteuid() == 0:
            return "dovenull", "dovecot", "dovecot"
        me = pwd.getpwuid(os.geteuid()).pw_name
        return me, me, me

    def _prepare_folder(self) -> None:
        mail = self.folder / "mail"
        if mail.is_dir():
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        self.folder.chmod(0o755)
        if os.geteuid() == 0:
            let_others_traverse(self.folder, "dovecot's unprivileged users")
        mail.mkdir()
        (self.folder / "users").mkdir(mode=0o755, exist_ok=True)
        _, _, mail_user = self._accounts()
        if os.geteuid() == 0:
            entry = pwd.getpwnam(mail_user)
            os.chown(mail, entry.pw_uid, entry.pw_gid)
        mail.chmod(0o700)

    def _config(self) -> str:
        assert self._tls is not None
        login_user, internal_user, mail_user = self._accounts()
        internal_group = grp.getgrgid(pwd.getpwnam(internal_user).pw_gid).gr_name
        mail_group = pwd.getpwnam(mail_user).pw_gid
        folder = self.folder
        return f"""\
# A private, throwaway Dovecot written by crmkit.testing.mailservers.
instance_name = crmkit-{secrets.token_hex(4)}
base_dir = {folder}/run
state_dir = {folder}/state
log_path = {self.log_path}
protocols = imap
listen = {self.host}

# Dovecot refuses to run login processes as root; the dovecot user (uid ~100) is below the
# default first_valid_uid of 500.
default_login_user = {login_user}
default_internal_user = {internal_user}
default_internal_group = {internal_group}
first_valid_uid = 1
first_valid_gid = 1

ssl = yes
ssl_cert = <{self._tls.certfile}
ssl_key = <{self._tls.keyfile}
# Tests log in over plain IMAP too.
disable_plaintext_auth = no
auth_mechanisms = plain login
auth_verbose = yes
# A wrong password is answered in ~0.5 s rather than 2 s.
auth_failure_delay = 0

passdb {{
  driver = passwd-file
  args = scheme=PLAIN {folder}/users/%u
}}
userdb {{
  driver = static
  args = uid={mail_user} gid={mail_group} home={folder}/mail/%u
}}
mail_location = maildir:~/Maildir
mail_fsync = never
# IDLE relies on inotify; if it is unavailable, poll every second instead of every 30.
mailbox_idle_check_interval = 1 secs

protocol imap {{
  # Tests open several connections per user from one IP (default: 10).
  mail_max_userip_connections = 100
}}

service imap-login {{
  chroot =
  inet_listener imap {{
    port = {self.port}
  }}
  inet_listener imaps {{
    port = {self.ssl_port}
    ssl = yes
  }}
}}
service anvil {{
  chroot =
  # No auth penalty: without this socket a login after a refused one from the same IP is
  # delayed 2-15 s (Dovecot's documented way to turn the penalty off).
  unix_listener anvil-auth-penalty {{
    mode = 0
  }}
}}
"""

    # -- client helpers

    def connect(self, user: str, *, tls: Literal["plain", "starttls", "ssl"] = "plain") -> IMAPClient:
        """An imapclient connection logged in as ``user`` (usable as a context manager)."""
        from imapclient import IMAPClient
        from imapclient.exceptions import LoginError

        context = ssl.create_default_context(cafile=str(self.cafile))
        for attempt in range(5):
            if tls == "ssl":
                client = IMAPClient(self.host, port=self.ssl_port, ssl=True, ssl_context=context, timeout=10)
            else:
                client = IMAPClient(self.host, port=self.port, ssl=False, timeout=10)
                if tls == "starttls":
                    client.starttls(context)
            try:
                client.login(user, self._users[user])
            except LoginError as exc:
                client.shutdown()
                # RFC 5530 UNAVAILABLE: Dovecot's auth process is busy (a loaded machine); the
                # tests' own set-up connections try again rather than fail the test
                if "[UNAVAILABLE]" not in str(exc) or attempt == 4:
                    raise
                time.sleep(0.2 * (attempt + 1))
                continue
            except BaseException:
                client.shutdown()
                raise
            return client
        raise AssertionError("unreachable")

    def append(self, user: str, folder: str, raw: bytes, flags: Iterable[str | bytes] = ()) -> int | None:
        """APPEND ``raw`` to ``folder`` (created if missing) as ``user``; the new message's UID."""
        with self.connect(user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            response = client.append(folder, raw, flags=tuple(flags))
        match = re.search(rb"\[APPENDUID \d+ (\d+)\]", response)
        return int(match.group(1)) if match else None


# --------------------------------------------------------------------------------------------
# SMTP


@dataclass(frozen=True)
class ReceivedMessage:
    """One message the SMTP server accepted, as the client sent it."""

    mail_from: str
    rcpt_tos: tuple[str, ...]
    data: bytes
    smtputf8: bool = False
    login: str | None = None  # the AUTH user, if any

    @property
    def message(self) -> email.message.EmailMessage:
        parsed = email.message_from_bytes(self.data, policy=email.policy.default)
        assert isinstance(parsed, email.message.EmailMessage)
        return parsed


@dataclass
class _Faults:
    """Failures armed by the test; guarded by SMTPServer's lock (read from the server thread)."""

    fail_count: int = 0
    fail_code: int = 451
    fail_at: str = "DATA"
    drop_countdown: int = 0
    drop_before_reply: bool = True


class SMTPServer:
    """An aiosmtpd SMTP server on 127.0.0.1 that keeps every message it accepts.

    ``auth`` (user -> password) makes AUTH PLAIN/LOGIN mandatory before MAIL. ``starttls`` offers
    STARTTLS (``require_starttls`` refuses anything but EHLO/QUIT before it) and ``implicit_tls``
    speaks TLS from the first byte (SMTPS); both use a throwaway CA, :attr:`cafile`. ``refuse``
    holds recipient addresses answered 550 at RCPT. :meth:`fail_next` and :meth:`drop_after`
    inject temporary failures and dropped connections for retry and "was it sent?" tests.
    """

    def __init__(
        self,
        *,
        auth: dict[str, str] | None = None,
        starttls: bool = False,
        require_starttls: bool = False,
        implicit_tls: bool = False,
        refuse: Iterable[str] = (),
        smtputf8: bool = True,
        pipelining: bool = False,
        folder: Path | str | None = None,
    ) -> None:
        if implicit_tls and (starttls or require_starttls):
            raise ValueError("implicit_tls and starttls exclude each other")
        self.host = HOST
        self.port = 0
        self.auth = dict(auth) if auth is not None else None
        self.starttls = starttls or require_starttls
        self.require_starttls = require_starttls
        self.implicit_tls = implicit_tls
        self.refuse = set(refuse)  # compared case-insensitively; may be changed while running
        self.smtputf8 = smtputf8
        self.pipelining = pipelining  # offer PIPELINING (RFC 2920), as Postfix, Exim and big providers do
        self._folder = Path(folder) if folder is not None else None
        self._own_folder: str | None = None
        self._tls: TLSFiles | None = None
        self._lock = threading.Condition()
        self._messages: list[ReceivedMessage] = []
        self._faults = _Faults()
        self._controller: Controller | None = None

    @property
    def cafile(self) -> Path:
        if self._tls is None:
            raise RuntimeError("SMTPServer has no TLS: pass starttls=True or implicit_tls=True")
        return self._tls.cafile

    # -- what was received

    @property
    def messages(self) -> list[ReceivedMessage]:
        with self._lock:
            return list(self._messages)

    def wait_for(self, count: int, timeout: float = 5.0) -> list[ReceivedMessage]:
        """The messages once at least ``count`` have arrived (for senders running in a thread)."""
        with self._lock:
            if not self._lock.wait_for(lambda: len(self._messages) >= count, timeout):
                raise TimeoutError(f"{len(self._messages)} messages arrived, not {count}")
            return list(self._messages)

    def clear(self) -> None:
        with self._lock:
            self._messages.clear()

    # -- faults

    def reset(self) -> None:
        """Forget what earlier tests received, refused, failed or dropped (a module-wide server)."""
        self.clear()
        self.refuse.clear()
        self.fail_next(0)
        self.drop_after(0)

    def fail_next(self, n: int = 1, code: int = 451, *, at: Literal["MAIL", "RCPT", "DATA"] = "DATA") -> None:
        """Answer the next ``n`` MAIL, RCPT or DATA commands with ``code`` instead of accepting."""
        with self._lock:
            self._faults.fail_count, self._faults.fail_code, self._faults.fail_at = n, code, at

    def drop_after(self, n: int = 1, *, before_reply: bool = True) -> None:
        """Drop the connection once ``n`` more messages have been accepted (and kept).

        ``before_reply=True`` drops it before the n-th message's 250 reply, so the client cannot
        know that message was delivered; ``False`` sends the 250 first, so the client finds the
        connection gone on its next command.
        """
        with self._lock:
            self._faults.drop_countdown, self._faults.drop_before_reply = n, before_reply

    # -- lifecycle

    def start(self) -> Self:
        if self._controller is not None:
            return self
        tls_context = None
        if self.starttls or self.implicit_tls:
            if self._folder is None:
                self._own_folder = tempfile.mkdtemp(prefix="crmkit-smtp-")
                self._folder = Path(self._own_folder)
            self._tls = make_tls_files(self._folder)
            tls_context = self._tls.server_context()
        controller_class = _controller_class()
        kwargs: dict[str, Any] = {
            "server_hostname": "localhost",  # not socket.getfqdn(), which can wait on DNS
            "enable_SMTPUTF8": self.smtputf8,
        }
        if self.starttls:
            kwargs.update(tls_context=tls_context, require_starttls=self.require_starttls)
        if self.auth is not None:
            kwargs.update(auth_required=True, authenticator=self._authenticate)
        controller = controller_class(
            _Handler(self),
            hostname=self.host,
            port=0,
            ssl_context=tls_context if self.implicit_tls else None,
            # aiosmtpd allows AUTH only after STARTTLS; a TLS-from-the-start (or plain, for
            # tests that want it) connection has to be allowed explicitly.
            auth_without_starttls=not self.starttls,
            **kwargs,
        )
        controller.start()
        self._controller = controller
        self.port = controller.port
        return self

    def stop(self) -> None:
        controller, self._controller = self._controller, None
        if controller is not None:
            controller.stop()
        if self._own_folder is not None:
            shutil.rmtree(self._own_folder, ignore_errors=True)
            self._own_folder = self._folder = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- called from the server's thread

    def _authenticate(self, server: Any, session: Any, envelope: Any, mechanism: str, auth_data: Any) -> Any:
        from aiosmtpd.smtp import AuthResult, LoginPassword

        assert self.auth is not None
        if mechanism in ("PLAIN", "LOGIN") and isinstance(auth_data, LoginPassword):
            login = auth_data.login.decode("utf-8", "replace")
            password = auth_data.password.decode("utf-8", "replace")
            if self.auth.get(login) == password:
                return AuthResult(success=True, auth_data=login)
        return AuthResult(success=False, handled=False)

    def _injected_failure(self, stage: str) -> str | None:
        with self._lock:
            faults = self._faults
            if faults.fail_count <= 0 or faults.fail_at != stage:
                return None
            faults.fail_count -= 1
            code = faults.fail_code
        return f"{code} {code // 100}.3.0 Failure injected by the test server"

    def _keep(self, message: ReceivedMessage) -> Literal["keep", "drop_before_reply", "drop_after_reply"]:
        with self._lock:
            self._messages.append(message)
            self._lock.notify_all()
            faults = self._faults
            if faults.drop_countdown <= 0:
                return "keep"
            faults.drop_countdown -= 1
            if faults.drop_countdown:
                return "keep"
            return "drop_before_reply" if faults.drop_before_reply else "drop_after_reply"


class _Handler:
    """aiosmtpd's hooks; each defers to the SMTPServer that owns it."""

    def __init__(self, owner: SMTPServer) -> None:
        self.owner = owner

    async def handle_EHLO(
        self, server: Any, session: Any, envelope: Any, hostname: str, responses: list[str]
    ) -> list[str]:
        session.host_name = hostname  # what aiosmtpd does itself when there is no hook
        if self.owner.pipelining:  # aiosmtpd reads commands one after another, so it can
            responses.insert(len(responses) - 1, "250-PIPELINING")
        return responses

    async def handle_MAIL(
        self, server: Any, session: Any, envelope: Any, address: str, mail_options: list[str]
    ) -> str:
        if failure := self.owner._injected_failure("MAIL"):
            return failure
        envelope.mail_from = address
        envelope.mail_options.extend(mail_options)
        return "250 OK"

    async def handle_RCPT(
        self, server: Any, session: Any, envelope: Any, address: str, rcpt_options: list[str]
    ) -> str:
        if address.lower() in {refused.lower() for refused in self.owner.refuse}:
            return f"550 5.1.1 <{address}>: Recipient address rejected"
        if failure := self.owner._injected_failure("RCPT"):
            return failure
        envelope.rcpt_tos.append(address)
        envelope.rcpt_options.extend(rcpt_options)
        return "250 OK"

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if failure := self.owner._injected_failure("DATA"):
            return failure
        received = ReceivedMessage(
            mail_from=envelope.mail_from,
            rcpt_tos=tuple(envelope.rcpt_tos),
            data=envelope.original_content,
            smtputf8=envelope.smtp_utf8,
            login=session.auth_data if session.authenticated else None,
        )
        action = self.owner._keep(received)
        if action == "drop_before_reply":
            server.transport.abort()  # nothing written after an abort reaches the client
        elif action == "drop_after_reply":
            server.loop.call_soon(server.transport.close)  # runs after the 250 is written
        return "250 OK"


_CONTROLLER_CLASS: type[Controller] | None = None


def _controller_class() -> type[Controller]:
    """aiosmtpd's threaded Controller, taught to bind a free port; built on first use."""
    global _CONTROLLER_CLASS
    if _CONTROLLER_CLASS is not None:
        return _CONTROLLER_CLASS
    import asyncio

    from aiosmtpd.controller import Controller
    from aiosmtpd.smtp import SMTP

    class FreePortController(Controller):
        def __init__(self, *args: Any, auth_without_starttls: bool = False, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.auth_without_starttls = auth_without_starttls

        def factory(self) -> SMTP:
            smtp = SMTP(self.handler, **self.SMTP_kwargs)
            if self.auth_without_starttls:
                # Set after construction: passing auth_require_tls=False warns on every connection.
                smtp._auth_require_tls = False
            return smtp

        def _trigger_server(self) -> None:
            # Bound with port 0: learn the real port before the base class connects to it.
            assert isinstance(self.server, asyncio.Server)
            self.port = self.server.sockets[0].getsockname()[1]
            super()._trigger_server()

    _CONTROLLER_CLASS = FreePortController
    return FreePortController
