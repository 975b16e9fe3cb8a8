"""Sending mail over SMTP: one connection reused for many messages, certificates always verified.

``security`` is ``ssl`` (implicit TLS, port 465), ``starttls`` (587) or
``plain`` (a local relay on port 25, only when asked for). A dropped
connection is opened again once before a message is given up on.

:meth:`SMTPSender.deliver` is the campaign's way to send: it speaks the
transaction step by step so that it can tell "refused" and "never handed over"
(safe to send again) from "the connection broke after the message was handed
over" (perhaps delivered: :class:`SendError` with ``uncertain``), and it
returns the recipients a server refused while accepting the others.
"""

from __future__ import annotations

import contextlib
import re
import smtplib
import ssl
from collections.abc import Callable
from email.message import EmailMessage
from types import TracebackType

from crmkit.config import MailServer, Secret
from crmkit.errors import CrmkitError

__all__ = ["SMTPSender", "SendError"]


class SendError(CrmkitError):
    """The server would not take a message; ``code`` and ``answer`` say why."""

    def __init__(
        self, message: str, code: int | None = None, answer: str = "", *, uncertain: bool = False
    ) -> None:
        super().__init__(message)
        self.code = code
        self.answer = answer
        self.uncertain = uncertain  # handed over, then the connection broke: perhaps delivered

    @property
    def temporary(self) -> bool:
        return self.code is not None and 400 <= self.code < 500


class SMTPSender:
    """A connection to the configured SMTP server, opened on first use."""

    def __init__(
        self, server: MailServer, password: Secret | None, *, ssl_context: ssl.SSLContext | None = None
    ) -> None:
        self.server = server
        self.password = password
        self.context = ssl_context or ssl.create_default_context()
        self._smtp: smtplib.SMTP | None = None

    def __enter__(self) -> SMTPSender:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _connect(self) -> smtplib.SMTP:
        host, port, timeout = self.server.host, self.server.port, self.server.timeout
        try:
            if self.server.security == "ssl":
                smtp: smtplib.SMTP = smtplib.SMTP_SSL(host, port, timeout=timeout, context=self.context)
            else:
                smtp = smtplib.SMTP(host, port, timeout=timeout)
                if self.server.security == "starttls":
                    smtp.starttls(context=self.context)
            if self.server.user:
                if self.password is None:
                    raise CrmkitError(f"no SMTP password for {self.server.user} ({self.server.password_env})")
                smtp.login(self.server.user, self.password.reveal())
            smtp.ehlo_or_helo_if_needed()  # the extensions deliver() asks about
        except smtplib.SMTPAuthenticationError:
            raise CrmkitError(
                f"the SMTP server {host}:{port} refused the login of {self.server.user}"
            ) from None
        except ssl.SSLError as exc:
            raise CrmkitError(f"TLS with the SMTP server {host}:{port} failed: {exc.reason}") from None
        except (OSError, smtplib.SMTPException) as exc:
            raise CrmkitError(f"cannot reach the SMTP server {host}:{port}: {exc}") from None
        return smtp

    def send(self, message: EmailMessage) -> dict[str, tuple[int, bytes]]:
        """Send one message; returns the recipients the server refused (others got it).

        Raises :class:`SendError` when the server refuses the message as a whole.
        """
        for attempt in (1, 2):
            if self._smtp is None:
                self._smtp = self._connect()
            try:
                return self._smtp.send_message(message)
            except smtplib.SMTPServerDisconnected:
                self._smtp = None
                if attempt == 2:
                    raise SendError("the SMTP server closed the connection twice") from None
            except smtplib.SMTPRecipientsRefused as exc:
                code, reply = next(iter(exc.recipients.values()), (None, b""))
                text = _text(reply)
                raise SendError(f"every recipient refused: {text}", code, text) from None
            except smtplib.SMTPResponseException as exc:
                text = _text(exc.smtp_error)
                raise SendError(
                    f"the SMTP server answered {exc.smtp_code} {text}", exc.smtp_code, text
                ) from None
        raise AssertionError("unreachable")

    def deliver(
        self,
        sender: str,
        recipients: list[str],
        data: bytes,
        *,
        utf8: bool = False,
        while_waiting: Callable[[], object] | None = None,
    ) -> dict[str, str]:
        """Hand ``data`` over for ``recipients``; returns those refused (address -> answer).

        The addresses must be checked ones (no spaces or brackets): they go into the
        commands as they are. With PIPELINING (RFC 2920) the envelope goes in one
        round trip. ``while_waiting`` runs while the server answers each command (a
        campaign writes its next message and checks its journal then); what it
        raises is ignored.

        Raises :class:`SendError`: ``uncertain`` when the connection broke after
        the message was handed over; ``code`` None when it broke before (nothing
        was delivered: send again); else the server's refusal (``temporary``
        for 4xx). A connection that cannot be opened raises CrmkitError.
        """
        if self._smtp is None:
            self._smtp = self._connect()
        smtp = self._smtp
        handed_over = False

        def answer_to_last() -> tuple[int, bytes]:
            if while_waiting is not None:  # the server is busy with our command: use the time
                with contextlib.suppress(Exception):  # the caller's work must not look like a broken line
                    while_waiting()
            return smtp.getreply()

        try:
            options = ""
            if utf8:
                if not smtp.has_extn("smtputf8"):
                    raise SendError(
                        "the SMTP server does not take non-ASCII addresses (no SMTPUTF8)", 553, "no SMTPUTF8"
                    )
                options = " SMTPUTF8" + (" BODY=8BITMIME" if smtp.has_extn("8bitmime") else "")
            encoding = "utf-8" if utf8 else "ascii"
            pipelining = smtp.has_extn("pipelining")
            envelope = [f"MAIL FROM:<{sender}>{options}", *(f"RCPT TO:<{r}>" for r in recipients)]
            if pipelining:  # the envelope and DATA in one round trip
                smtp.send("".join(f"{c}\r\n" for c in [*envelope, "DATA"]).encode(encoding))
                replies = [answer_to_last(), *(smtp.getreply() for _ in range(len(envelope)))]
            else:
                replies = []
                for command in envelope:
                    smtp.send(f"{command}\r\n".encode(encoding))
                    replies.append(answer_to_last())
                    if not 200 <= replies[0][0] < 400:
                        break  # no RCPT after a refused MAIL
            code, reply = replies[0]
            self._check(smtp, code, reply, "MAIL FROM")
            refused: dict[str, str] = {}
            for recipient, (code, reply) in zip(recipients, replies[1 : len(envelope)], strict=True):
                if code == 421:
                    self._check(smtp, code, reply, "RCPT TO")
                if code not in (250, 251):
                    refused[recipient] = f"{code} {_text(reply)}"
            if len(refused) == len(recipients):
                if pipelining and replies[-1][0] == 354:  # the server waits for a message: give it none
                    smtp.send(b".\r\n")
                    smtp.getreply()
                else:
                    smtp.rset()
                first = next(iter(refused.values()))
                raise SendError(f"every recipient refused: {first}", int(first[:3]), first[4:])
            if pipelining:
                code, reply = replies[-1]
            else:
                smtp.send(b"DATA\r\n")
                code, reply = answer_to_last()
            if code != 354:
                self._check(smtp, code, reply, "DATA")
                raise SendError(
                    f"the SMTP server answered DATA with {code} {_text(reply)}", code, _text(reply)
                )
            handed_over = True
            smtp.send(_dot_stuffed(data))
            code, reply = answer_to_last()
            if code != 250:
                handed_over = False  # answered: the server did not take it
                raise SendError(f"the SMTP server answered {code} {_text(reply)}", code, _text(reply))
            return refused
        except (smtplib.SMTPServerDisconnected, OSError) as exc:
            self._drop()
            if handed_over:
                raise SendError(
                    f"the connection broke after the message was handed over ({exc or 'closed'})",
                    uncertain=True,
                ) from None
            raise SendError(
                f"the connection broke before the message was handed over ({exc or 'closed'})"
            ) from None

    def _check(self, smtp: smtplib.SMTP, code: int, reply: bytes, step: str) -> None:
        if code == 421:  # the server is closing the connection
            self._drop()
            raise SendError(f"the SMTP server closed the connection at {step}: {code} {_text(reply)}")
        if not 200 <= code < 400:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                smtp.rset()
            raise SendError(f"the SMTP server answered {step} with {code} {_text(reply)}", code, _text(reply))

    def _drop(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None:
            with contextlib.suppress(OSError):
                smtp.close()

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._smtp = None


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _dot_stuffed(data: bytes) -> bytes:
    """The DATA payload: CRLF line ends, a dot doubled at a line start, ended by CRLF . CRLF."""
    data = re.sub(rb"\r\n|\r|\n", b"\r\n", data)
    data = _LEADING_DOT.sub(b"..", data)
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    return data + b".\r\n"


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
