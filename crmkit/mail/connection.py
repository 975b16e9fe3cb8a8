"""Connecting to an IMAP server: TLS, login, and what goes wrong, as one-line crmkit errors.

A refused login, an unverifiable certificate or a missing folder is a
:class:`~crmkit.errors.CrmkitError` (a configuration to fix); a connection that
could not be made or broke is an :class:`ImapConnectionError` (worth trying
again). No message ever carries the password: answers are scrubbed of it, and
the answer to LOGIN, which may quote what was sent, is reduced to its code.
"""

from __future__ import annotations

import contextlib
import imaplib
import re
import ssl
from collections.abc import Iterator
from typing import Any

from imapclient import IMAPClient
from imapclient.exceptions import CapabilityError, LoginError

from crmkit.config import MailServer, Secret, scrub
from crmkit.errors import ConfigError, CrmkitError

__all__ = [
    "ImapConnectionError",
    "close",
    "connect",
    "imap_errors",
    "mailbox_key",
    "same_folder",
    "server_name",
    "tls_context",
]


class ImapConnectionError(CrmkitError):
    """The server could not be reached or the connection broke: worth trying again later."""


# -- the connection -----------------------------------------------------------------------------


def mailbox_key(server: MailServer) -> str:
    """How progress is named in the store: ``user@host:port/folder``."""
    return f"{server.user}@{server.host}:{server.port}/{server.folder}"


def server_name(server: MailServer) -> str:
    return f"IMAP {server.user}@{server.host}:{server.port}"


def tls_context(server: MailServer) -> ssl.SSLContext:
    """Certificates verified against the system CAs, or against ``cafile`` for a private CA."""
    if server.cafile is None:
        return ssl.create_default_context()
    try:
        return ssl.create_default_context(cafile=str(server.cafile))
    except (OSError, ssl.SSLError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise ConfigError(
            f"[{server.protocol}] cafile {server.cafile}: cannot be read as a CA certificate ({reason})"
        ) from None


def _one_line(text: str, password: Secret | None) -> str:
    text = scrub(text, password)  # a server echoing it back must not leak it
    text = re.sub(r"""^b(['"])(.*)\1$""", r"\2", text.strip())  # imaplib shows answers as b'...'
    return " ".join(text.split())


@contextlib.contextmanager
def imap_errors(where: str, password: Secret | None) -> Iterator[None]:
    """Turn what the network, TLS and the server raise into one-line crmkit errors."""
    try:
        yield
    except CrmkitError:
        raise
    except ssl.SSLCertVerificationError as exc:
        raise CrmkitError(
            f"{where}: the server's TLS certificate could not be verified ({exc.verify_message}); "
            "for a server with a private CA set [imap] cafile"
        ) from None
    except LoginError as exc:
        # The answer to LOGIN may quote what was sent: only its RFC 5530 code is shown.
        code = re.search(r"\[([A-Z-]+)\]", str(exc))
        detail = f"[{code.group(1)}]" if code else "the server gave no reason"
        if code and code.group(1) == "UNAVAILABLE":  # the server cannot check passwords just now
            raise ImapConnectionError(f"{where}: login not possible now ({detail})") from None
        raise CrmkitError(
            f"{where}: login refused ({detail}); check [imap] user and CRMKIT_IMAP_PASSWORD "
            "or [imap] password_command"
        ) from None
    except CapabilityError as exc:
        raise CrmkitError(f"{where}: {_one_line(str(exc), password)}") from None
    except imaplib.IMAP4.abort as exc:
        raise ImapConnectionError(f"{where}: connection lost ({_one_line(str(exc), password)})") from None
    except imaplib.IMAP4.error as exc:
        raise CrmkitError(f"{where}: the server refused: {_one_line(str(exc), password)}") from None
    except (TimeoutError, OSError) as exc:  # refused, unreachable, reset, TLS failures
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise ImapConnectionError(
            f"{where}: cannot reach the server ({_one_line(reason, password)})"
        ) from None


def connect(server: MailServer, password: Secret, *, ssl_context: ssl.SSLContext | None = None) -> Any:
    """A logged-in :class:`IMAPClient`: implicit TLS ("ssl"), STARTTLS, or plain only when configured."""
    if not server.user:
        raise ConfigError('[imap] needs a user, e.g. user = "support@example.com"')
    where = server_name(server)
    context = ssl_context or tls_context(server)
    with imap_errors(where, password):
        if server.security == "ssl":
            client = IMAPClient(
                server.host, port=server.port, ssl=True, ssl_context=context, timeout=server.timeout
            )
        else:
            client = IMAPClient(server.host, port=server.port, ssl=False, timeout=server.timeout)
    try:
        with imap_errors(where, password):
            if server.security == "starttls":
                if not client.has_capability("STARTTLS"):
                    raise CrmkitError(f'{where}: the server does not offer STARTTLS; try security = "ssl"')
                client.starttls(context)
            try:
                client.login(server.user, password.reveal())
            except UnicodeEncodeError:
                # IMAP LOGIN sends ASCII only; the error would quote the character and its place
                raise CrmkitError(
                    f"{where}: the password has characters other than ASCII, which IMAP LOGIN "
                    "cannot send; use an ASCII password for this mailbox"
                ) from None
    except BaseException:
        close(client)
        raise
    return client


def same_folder(a: str, b: str) -> bool:
    return a == b or a.upper() == b.upper() == "INBOX"  # INBOX is case-insensitive (RFC 3501)


def close(client: Any) -> None:
    """Log out politely if the connection still works; never raise (we are leaving anyway)."""
    try:
        client.logout()
    except Exception:
        with contextlib.suppress(Exception):
            client.shutdown()
