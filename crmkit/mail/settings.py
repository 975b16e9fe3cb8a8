"""The support inbox's settings, read from crmkit.toml's ``[imap]`` table.

:mod:`crmkit.config` checks the keys; this module turns them into what the
poller takes: the server, the :class:`~crmkit.mail.inbox.InboxRules`, what
to do with a message once it is filed, and (``acknowledge = true``) the
hook that acknowledges new cases over ``[smtp]``. Keys left out keep
:class:`InboxRules`' defaults, so those live in one place.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from email.utils import parseaddr
from typing import Any

from crmkit.config import Config, Mailbox, MailServer, resolve_password
from crmkit.errors import ConfigError, CrmkitError
from crmkit.mail.ack import acknowledgement, record_sent
from crmkit.mail.connection import tls_context
from crmkit.mail.inbox import Filed, InboxRules
from crmkit.mail.message import ParsedMessage
from crmkit.mail.smtp import SMTPSender
from crmkit.store import Store

log = logging.getLogger(__name__)

__all__ = ["IMAP_EXAMPLE", "PollSettings", "acknowledger", "inbox_rules", "poll_settings"]

#: What a missing [imap] table is answered with.
IMAP_EXAMPLE = (
    'an [imap] table with host = "imap.example.com" and user = "support@example.com" '
    "(the password: CRMKIT_IMAP_PASSWORD or password_command)"
)


@dataclass(frozen=True)
class PollSettings:
    """Everything ``crmkit poll`` needs from the config, besides the password."""

    server: MailServer
    rules: InboxRules
    after: str  # seen, move or none
    move_to: str | None
    sent_folder: str | None = None  # read too, as the team's own mail (never flagged or moved)


def inbox_rules(config: Config, mailbox: Mailbox | None = None) -> InboxRules:
    """How ``mailbox`` (default: the first) files mail, from its ``[imap]``; crmkit's defaults for the rest.

    Every mailbox's own address (each IMAP user, the SMTP sender) counts as
    ``own_addresses`` too: mail from them is never a customer's, which also
    keeps a copy of an acknowledgement from opening a case.
    """
    settings = mailbox.inbox if mailbox is not None else config.inbox
    rules = InboxRules()
    changes: dict[str, Any] = {}
    if settings.unknown_sender is not None:
        changes["unknown_sender"] = settings.unknown_sender
    if settings.ignore_plus_tags is not None:
        changes["ignore_plus_tags"] = settings.ignore_plus_tags
    if settings.urgent_keywords is not None:
        changes["urgent_keywords"] = settings.urgent_keywords
    if settings.high_keywords is not None:
        changes["high_keywords"] = settings.high_keywords
    if settings.max_new_cases_per_hour is not None:
        changes["max_new_cases"] = settings.max_new_cases_per_hour
        changes["rate_window"] = timedelta(hours=1)
    if settings.acknowledge is not None:
        changes["acknowledge"] = settings.acknowledge
    if settings.acknowledge_every_hours is not None:
        changes["ack_window"] = timedelta(hours=settings.acknowledge_every_hours)
    own = list(settings.own_addresses)
    servers = [box.server for box in config.mailboxes] or ([config.imap] if config.imap else [])
    own += [server.user for server in servers if server.user and "@" in server.user]
    if config.smtp is not None and config.smtp.from_address:
        own.append(parseaddr(config.smtp.from_address)[1])
    own_addresses = tuple(dict.fromkeys(a.lower() for a in [*rules.own_addresses, *own] if "@" in a))
    if own_addresses:
        changes["own_addresses"] = own_addresses
    return replace(rules, **changes)


def poll_settings(config: Config) -> PollSettings:
    """The first mailbox's settings (see :func:`all_poll_settings`)."""
    return all_poll_settings(config)[0]


def all_poll_settings(config: Config) -> list[PollSettings]:
    """Each mailbox's settings; a missing ``[imap]`` table or user is one line saying what to add."""
    where = f"in {config.path}" if config.path else "in crmkit.toml (none found)"
    boxes = list(config.mailboxes)
    if not boxes and config.imap is not None:
        boxes = [Mailbox(config.imap, config.inbox)]
    if not boxes:
        raise ConfigError(f"no [imap] table {where}: to poll a mailbox, add {IMAP_EXAMPLE}")
    found = []
    for box in boxes:
        if not box.server.user:
            raise ConfigError(f'[imap] has no user {where}: add user = "support@example.com"')
        found.append(
            PollSettings(
                server=box.server,
                rules=inbox_rules(config, box),
                after=box.inbox.after,
                move_to=box.inbox.move_to,
                sent_folder=box.inbox.sent_folder,
            )
        )
    return found


@contextmanager
def acknowledger(
    config: Config, store: Store, *, ssl_context: ssl.SSLContext | None = None
) -> Iterator[Callable[[Filed, ParsedMessage], None] | None]:
    """The poller's ``on_filed`` hook that acknowledges new cases, or None without ``acknowledge``.

    The acknowledgement goes over ``[smtp]`` (one connection, opened on the first
    one) and is logged on its case, so a reply to it threads by its headers.
    :func:`~crmkit.mail.inbox.file_message` decides who gets one (RFC 3834).
    """
    if not any(box.inbox.acknowledge for box in config.mailboxes) and not config.inbox.acknowledge:
        yield None
        return
    smtp = config.smtp
    if smtp is None or not smtp.from_address:
        raise ConfigError(
            '[imap] acknowledge = true needs an [smtp] table with host and from = "Support <support@…>"'
        )
    from_address = smtp.from_address
    password = resolve_password(smtp) if smtp.user else None
    with SMTPSender(smtp, password, ssl_context=ssl_context or tls_context(smtp)) as sender:
        failed: list[str] = []

        def acknowledge(filed: Filed, parsed: ParsedMessage) -> None:
            if not (filed.acknowledge and filed.case) or failed:
                return  # after one failure, the rest of this run sends none: no timeout per case
            message = acknowledgement(filed.case, parsed, from_address=from_address)
            try:
                sender.send(message)
            except CrmkitError as exc:
                # the case is filed either way; an acknowledgement is a courtesy, not worth a stop
                log.warning("acknowledgement of %s not sent, nor any more this run: %s", filed.case, exc)
                failed.append(str(exc))
                return
            record_sent(store, filed.case, message, contact=filed.person, actor="poller")

        yield acknowledge
