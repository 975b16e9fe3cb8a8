"""``[imap]`` (or ``[[imap]]``) and ``[smtp]``: how to reach the mail servers.

An ``[imap]`` table also says how the support inbox files mail (:class:`InboxSettings`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from crmkit.config.checks import check_keys, choice, expect, texts
from crmkit.errors import ConfigError

__all__ = [
    "AFTER_ACTIONS",
    "SECURITY_MODES",
    "UNKNOWN_SENDER",
    "InboxSettings",
    "MailServer",
    "Mailbox",
    "parse_mailboxes",
    "parse_server",
]

SECURITY_MODES = ("ssl", "starttls", "plain")
_DEFAULT_PORTS = {
    "imap": {"ssl": 993, "starttls": 143, "plain": 143},
    "smtp": {"ssl": 465, "starttls": 587, "plain": 25},
}
#: What the support inbox does with mail: [imap] keys beside the connection ones.
_INBOX_KEYS = (
    "after",
    "move_to",
    "unknown_sender",
    "ignore_plus_tags",
    "urgent_keywords",
    "high_keywords",
    "max_new_cases_per_hour",
    "acknowledge",
    "acknowledge_every_hours",
    "own_addresses",
    "sent_folder",
)
AFTER_ACTIONS = ("seen", "move", "none")
UNKNOWN_SENDER = ("contact", "lead")
_SERVER_KEYS = {
    "imap": (
        "host",
        "port",
        "security",
        "user",
        "password_command",
        "folder",
        "timeout",
        "cafile",
        *_INBOX_KEYS,
    ),
    "smtp": ("host", "port", "security", "user", "password_command", "from", "timeout", "cafile"),
}


@dataclass(frozen=True)
class MailServer:
    """How to reach an IMAP or SMTP server. The password is not kept here."""

    protocol: str  # "imap" or "smtp"
    host: str
    port: int
    security: str = "ssl"
    user: str | None = None
    password_command: str | None = None
    folder: str = "INBOX"  # IMAP only
    from_address: str | None = None  # SMTP only
    timeout: float = 60.0
    cafile: Path | None = None  # trust this CA (a private one) instead of the system CAs

    @property
    def password_env(self) -> str:
        return f"CRMKIT_{self.protocol.upper()}_PASSWORD"


@dataclass(frozen=True)
class InboxSettings:
    """How the support inbox files mail and leaves the mailbox: ``[imap]`` keys besides the server's.

    None means "crmkit's default" (see :class:`crmkit.mail.inbox.InboxRules`), so the
    defaults live in one place.
    """

    after: str = "seen"  # seen, move (to move_to) or none
    move_to: str | None = None
    unknown_sender: str | None = None  # contact or lead
    ignore_plus_tags: bool | None = None
    urgent_keywords: tuple[str, ...] | None = None
    high_keywords: tuple[str, ...] | None = None
    max_new_cases_per_hour: int | None = None
    acknowledge: bool | None = None
    acknowledge_every_hours: float | None = None  # at most one acknowledgement per sender per window
    own_addresses: tuple[str, ...] = ()
    sent_folder: str | None = None  # the team's sent mail, logged as email_out and joined to cases


@dataclass(frozen=True)
class Mailbox:
    """One mailbox the poller reads: an ``[imap]`` table, or one entry of ``[[imap]]``."""

    server: MailServer
    inbox: InboxSettings


def _inbox(path: Path, data: Mapping[str, Any]) -> InboxSettings:
    """The [imap] keys that say how mail is filed; the table's keys were checked by _server."""
    after = choice(path, "imap.after", data.get("after", "seen"), AFTER_ACTIONS)
    move_to = None
    if "move_to" in data:
        move_to = expect(path, "imap.move_to", data["move_to"], str, "a folder name").strip()
        if not move_to:
            raise ConfigError(f"{path}: imap.move_to must name a folder")
    if after == "move" and move_to is None:
        raise ConfigError(f'{path}: imap.after = "move" needs imap.move_to, the folder to move mail to')
    folder = str(data.get("folder", "INBOX"))
    if move_to is not None and (move_to == folder or move_to.upper() == folder.upper() == "INBOX"):
        raise ConfigError(f"{path}: imap.move_to must be another folder than the one polled ({move_to})")
    settings: dict[str, Any] = {"after": after, "move_to": move_to}
    if "sent_folder" in data:
        sent = expect(path, "imap.sent_folder", data["sent_folder"], str, "a folder name").strip()
        if not sent or sent.upper() == folder.upper() or sent == move_to:
            raise ConfigError(f"{path}: imap.sent_folder must name another folder than folder and move_to")
        settings["sent_folder"] = sent
    if "unknown_sender" in data:
        settings["unknown_sender"] = choice(
            path, "imap.unknown_sender", data["unknown_sender"], UNKNOWN_SENDER
        )
    for key in ("ignore_plus_tags", "acknowledge"):
        if key in data:
            settings[key] = expect(path, f"imap.{key}", data[key], bool, "true or false")
    for key in ("urgent_keywords", "high_keywords"):
        if key in data:
            settings[key] = texts(path, f"imap.{key}", data[key])
    if "max_new_cases_per_hour" in data:
        limit = expect(
            path, "imap.max_new_cases_per_hour", data["max_new_cases_per_hour"], int, "a whole number"
        )
        if limit < 1:
            raise ConfigError(f"{path}: imap.max_new_cases_per_hour must be at least 1 (got {limit})")
        settings["max_new_cases_per_hour"] = limit
    if "acknowledge_every_hours" in data:
        hours = expect(
            path,
            "imap.acknowledge_every_hours",
            data["acknowledge_every_hours"],
            (int, float),
            "a number of hours",
        )
        if hours <= 0:
            raise ConfigError(f"{path}: imap.acknowledge_every_hours must be more than 0 (got {hours})")
        settings["acknowledge_every_hours"] = float(hours)
    if "own_addresses" in data:
        addresses = texts(path, "imap.own_addresses", data["own_addresses"])
        for address in addresses:
            if "@" not in address:
                raise ConfigError(f"{path}: imap.own_addresses: {address!r} is not an email address")
        settings["own_addresses"] = tuple(a.lower() for a in addresses)
    return InboxSettings(**settings)


def parse_server(path: Path, protocol: str, data: Mapping[str, Any]) -> MailServer:
    check_keys(path, protocol, data, _SERVER_KEYS[protocol])
    if "host" not in data:
        raise ConfigError(f"{path}: [{protocol}] needs a host")
    host = expect(path, f"{protocol}.host", data["host"], str, "a host name")
    security = expect(path, f"{protocol}.security", data.get("security", "ssl"), str, "text")
    if security not in SECURITY_MODES:
        raise ConfigError(
            f"{path}: {protocol}.security must be one of {', '.join(SECURITY_MODES)} (got {security!r})"
        )
    port = expect(
        path, f"{protocol}.port", data.get("port", _DEFAULT_PORTS[protocol][security]), int, "a number"
    )
    if not 0 < port < 65536:
        raise ConfigError(f"{path}: {protocol}.port must be between 1 and 65535 (got {port})")
    timeout = expect(
        path, f"{protocol}.timeout", data.get("timeout", 60), (int, float), "a number of seconds"
    )
    if timeout <= 0:
        raise ConfigError(f"{path}: {protocol}.timeout must be more than 0 seconds (got {timeout})")
    optional = {}
    for key in ("user", "password_command", "folder", "from"):
        if key in data:
            optional[key] = expect(path, f"{protocol}.{key}", data[key], str, "text")
    cafile = None
    if "cafile" in data:
        name = expect(path, f"{protocol}.cafile", data["cafile"], str, "a file path")
        cafile = path.parent / Path(name).expanduser()  # relative to crmkit.toml, like store
    return MailServer(
        protocol=protocol,
        host=host,
        port=port,
        security=security,
        user=optional.get("user"),
        password_command=optional.get("password_command"),
        folder=optional.get("folder", "INBOX"),
        from_address=optional.get("from"),
        timeout=float(timeout),
        cafile=cafile,
    )


def parse_mailboxes(path: Path, value: Any) -> tuple[Mailbox, ...]:
    """``[imap]`` (one mailbox) or ``[[imap]]`` (several: support@, sales@, each with its own checkpoint)."""
    if isinstance(value, dict):
        return (Mailbox(parse_server(path, "imap", value), _inbox(path, value)),)
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: imap must be a table ([imap]) or a list of tables ([[imap]])")
    found = tuple(Mailbox(parse_server(path, "imap", v), _inbox(path, v)) for v in value)
    seen: set[tuple[str, int, str, str]] = set()
    for box in found:
        s = box.server
        for folder in (s.folder, box.inbox.sent_folder):
            if folder is None:
                continue
            where = (
                s.host.lower(),
                s.port,
                (s.user or "").lower(),
                folder.upper() if folder.upper() == "INBOX" else folder,
            )
            if where in seen:
                raise ConfigError(f"{path}: [[imap]] reads {s.user}@{s.host} folder {folder} twice")
            seen.add(where)
    return found
