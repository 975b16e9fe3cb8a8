"""Sending mail over SMTP: one connection reused for many messages, certificates always verified.

``security`` is ``ssl`` (implicit TLS, port 465), ``starttls`` (587) or
``plain`` (a local relay on port 25, only when asked for). A dropped
connection is opened again once before a message is given up on.
"""

from __future__ import annotations

import contextlib
import smtplib
import ssl
from email.message import EmailMessage
from types import TracebackType

from crmkit.config import MailServer, Secret
from crmkit.errors import CrmkitError

__all__ = ["SMTPSender", "SendError"]


class SendError(CrmkitError):
    """The server would not take a message; ``code`` and ``answer`` say why."""

    def __init__(self, message: str, code: int | None = None, answer: str = "") -> None:
        super().__init__(message)
        self.code = code
        self.answer = answer

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

    def close(self) -> None:
        if self._smtp is not None:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                self._smtp.quit()
            self._smtp = None


def _text(reply: bytes | str) -> str:
    return reply.decode(errors="replace") if isinstance(reply, bytes) else str(reply)
