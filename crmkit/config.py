"""crmkit.toml: where the store is, and how to reach the mail servers and Google.

Found via ``--config``, ``CRMKIT_CONFIG``, or ``crmkit.toml`` in the current
folder or the nearest folder above it (as git finds .git); paths in it are
relative to its folder. It is UTF-8 text, and every key is optional. Secrets
never live in it: a password comes from an environment variable
(``CRMKIT_IMAP_PASSWORD``, ``CRMKIT_SMTP_PASSWORD``) or from ``password_command``,
whose output is the password. An unknown key or a bad value is an error that names it.

Example::

    store = "crm.json"            # relative to this file
    default_currency = "USD"

    [imap]
    host = "imap.example.com"
    user = "support@example.com"
    password_command = "pass show mail/support"
    after = "move"                # what the poller does with a filed message
    move_to = "Filed"

    [smtp]
    host = "smtp.example.com"
    security = "starttls"
    user = "support@example.com"
    from = "Support <support@example.com>"

    [merge]                       # mail-merge campaigns (crmkit merge)
    rate = "30/min"               # providers cap sending
    per_day = 2000
    unsubscribe_url = "https://example.com/unsubscribe?c={campaign}&r={record}"

    [sheet_names]                 # crmkit sync: crmkit's sheet -> the workbook's own tab
    Deals = "CRM Deals"
    "Invoice Lines" = "Lines"
"""

from __future__ import annotations

import codecs
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crmkit.errors import ConfigError
from crmkit.locations import is_store_url, local_store_path, redact_url, url_password
from crmkit.records.money import is_currency

__all__ = [
    "CONFIG_FILE",
    "Config",
    "InboxSettings",
    "InvoiceSettings",
    "MailServer",
    "Mailbox",
    "MergeSettings",
    "Secret",
    "SheetsSettings",
    "discover_config",
    "find_config",
    "is_store_url",
    "load_config",
    "local_store_path",
    "redact_url",
    "resolve_password",
    "resolve_sheet_names",
    "resolve_store",
    "resolve_store_path",
    "store_named_by",
    "store_password",
    "url_password",
]

CONFIG_FILE = "crmkit.toml"
DEFAULT_STORE = "crm.json"
SECURITY_MODES = ("ssl", "starttls", "plain")
_DEFAULT_PORTS = {
    "imap": {"ssl": 993, "starttls": 143, "plain": 143},
    "smtp": {"ssl": 465, "starttls": 587, "plain": 25},
}
_TOP_KEYS = (
    "store",
    "store_password_command",
    "default_currency",
    "imap",
    "smtp",
    "sheets",
    "merge",
    "invoices",
    "sheet_names",
)
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
_SHEETS_KEYS = ("credentials", "endpoint", "timeout", "retry_deadline")
_MERGE_KEYS = ("rate", "per_day", "unsubscribe_address", "unsubscribe_url", "attachments")
_INVOICE_KEYS = ("number_pattern", "quote_pattern", "company", "template")


class Secret:
    """A password that does not show itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


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


@dataclass(frozen=True)
class SheetsSettings:
    """Google Sheets: credentials, the API endpoint, and how long to wait for it (seconds)."""

    credentials: Path | None = None
    endpoint: str = "https://sheets.googleapis.com"
    timeout: float = 60.0  # one request
    retry_deadline: float = 120.0  # one request with all its retries (rate limits, server errors)


@dataclass(frozen=True)
class MergeSettings:
    """Mail-merge campaigns: ``[merge]``. The sender and the server are ``[smtp]``'s."""

    rate: str | None = None  # e.g. "30/min": checked by crmkit.mail.merge.parse_rate
    per_day: int | None = None
    unsubscribe_address: str | None = None  # List-Unsubscribe mailto (default: the sender)
    unsubscribe_url: str | None = None  # one-click (RFC 8058); {record}, {email}, {campaign}
    attachments: Path | None = None  # the folder attachments must lie in (default: the template's)


@dataclass(frozen=True)
class InvoiceSettings:
    """``[invoices]``: how new invoice and quote numbers look (``{year}``, ``{month}``, ``{seq:04}``)."""

    number_pattern: str | None = None
    quote_pattern: str | None = None
    company: Path | None = None  # a TOML file with the seller, for printed invoices
    template: Path | None = None  # the team's own invoice HTML template

    @property
    def numbering(self) -> dict[str, str]:
        patterns = {"invoices": self.number_pattern, "quotes": self.quote_pattern}
        return {table: pattern for table, pattern in patterns.items() if pattern}


@dataclass(frozen=True)
class Config:
    """Settings from crmkit.toml (``path`` is None when there is no file)."""

    path: Path | None = None
    #: a TinyDB store's file, or a PostgreSQL store's URL (without a password) as text
    store: Path | str | None = None
    #: prints the PostgreSQL store's password (like [imap] password_command)
    store_password_command: str | None = None
    default_currency: str = "USD"
    imap: MailServer | None = None  # the first mailbox's server (what one-mailbox code reads)
    smtp: MailServer | None = None
    sheets: SheetsSettings = field(default_factory=SheetsSettings)
    inbox: InboxSettings = field(default_factory=InboxSettings)
    merge: MergeSettings = field(default_factory=MergeSettings)
    invoices: InvoiceSettings = field(default_factory=InvoiceSettings)
    #: ``[sheet_names]``: crmkit's sheet title -> the workbook tab ``crmkit sync`` uses for it
    sheet_names: Mapping[str, str] = field(default_factory=dict)
    #: every mailbox the poller reads: ``[imap]``, or each ``[[imap]]`` entry (support@, sales@ ...)
    mailboxes: tuple[Mailbox, ...] = ()


def resolve_sheet_names(names: Mapping[str, Any] | None) -> dict[str, str]:
    """Every crmkit sheet title -> the workbook tab it syncs with, ``names`` (``[sheet_names]``) applied.

    Keys must be crmkit's sheet titles (Leads, Contacts, Accounts, Deals, Invoices,
    Cases, Invoice Lines), values tab names; no two sheets may share a tab (tab names
    are compared ignoring case, as the sync finds tabs). A ConfigError names the key.
    """
    from crmkit.workbooks import SHEETS  # openpyxl: only for those who sync

    titles = [sheet.title for sheet in SHEETS]
    tabs = {title: title for title in titles}
    for key, tab in (names or {}).items():
        if key not in tabs:
            hint = _close_matches(key, titles)
            suggestion = f"did you mean {hint[0]!r}? " if hint else ""
            raise ConfigError(
                f"sheet_names.{key}: not one of crmkit's sheets "
                f"({suggestion}the keys are {', '.join(titles)})"
            )
        if not isinstance(tab, str) or not tab.strip():
            raise ConfigError(f"sheet_names.{key} must be the name of a tab (got {tab!r})")
        tabs[key] = tab.strip()
    taken: dict[str, str] = {}
    for title, tab in tabs.items():
        other = taken.setdefault(tab.casefold(), title)
        if other != title:
            changed = title if title in (names or {}) else other
            raise ConfigError(
                f"sheet_names.{changed}: {other} and {title} would both sync with the tab {tab!r}; "
                "give each its own tab"
            )
    return tabs


def _check_keys(path: Path, table: str, data: Mapping[str, Any], known: tuple[str, ...]) -> None:
    for key in data:
        if key == "password":
            where = f"[{table}] password" if table else "password"
            remedy = (
                f"set CRMKIT_{table.upper()}_PASSWORD or password_command"
                if table in _SERVER_KEYS
                else "set CRMKIT_IMAP_PASSWORD / CRMKIT_SMTP_PASSWORD, or password_command in [imap] / [smtp]"
            )
            raise ConfigError(f"{path}: {where}: passwords are never read from the config file; {remedy}")
        if key not in known:
            prefix = f"{table}." if table else ""
            hint = _close_matches(key, known)
            suggestion = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
            raise ConfigError(f"{path}: unknown key {prefix}{key}{suggestion}")


def _expect(path: Path, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{path}: {key} must be {what} (got {value!r})")
    return value


def _seconds(path: Path, key: str, value: Any) -> float:
    seconds = _expect(path, key, value, (int, float), "a number of seconds")
    if isinstance(seconds, bool) or seconds <= 0:
        raise ConfigError(f"{path}: {key} must be a positive number of seconds")
    return float(seconds)


def _texts(path: Path, key: str, value: Any) -> tuple[str, ...]:
    items = _expect(path, key, value, list, "a list of text")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{path}: {key} must be a list of text (got {item!r} in it)")
    return tuple(item.strip() for item in items)


def _choice(path: Path, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{path}: {key} must be one of {', '.join(choices)} (got {value!r})")
    return str(value)


def _inbox(path: Path, data: Mapping[str, Any]) -> InboxSettings:
    """The [imap] keys that say how mail is filed; the table's keys were checked by _server."""
    after = _choice(path, "imap.after", data.get("after", "seen"), AFTER_ACTIONS)
    move_to = None
    if "move_to" in data:
        move_to = _expect(path, "imap.move_to", data["move_to"], str, "a folder name").strip()
        if not move_to:
            raise ConfigError(f"{path}: imap.move_to must name a folder")
    if after == "move" and move_to is None:
        raise ConfigError(f'{path}: imap.after = "move" needs imap.move_to, the folder to move mail to')
    folder = str(data.get("folder", "INBOX"))
    if move_to is not None and (move_to == folder or move_to.upper() == folder.upper() == "INBOX"):
        raise ConfigError(f"{path}: imap.move_to must be another folder than the one polled ({move_to})")
    settings: dict[str, Any] = {"after": after, "move_to": move_to}
    if "sent_folder" in data:
        sent = _expect(path, "imap.sent_folder", data["sent_folder"], str, "a folder name").strip()
        if not sent or sent.upper() == folder.upper() or sent == move_to:
            raise ConfigError(f"{path}: imap.sent_folder must name another folder than folder and move_to")
        settings["sent_folder"] = sent
    if "unknown_sender" in data:
        settings["unknown_sender"] = _choice(
            path, "imap.unknown_sender", data["unknown_sender"], UNKNOWN_SENDER
        )
    for key in ("ignore_plus_tags", "acknowledge"):
        if key in data:
            settings[key] = _expect(path, f"imap.{key}", data[key], bool, "true or false")
    for key in ("urgent_keywords", "high_keywords"):
        if key in data:
            settings[key] = _texts(path, f"imap.{key}", data[key])
    if "max_new_cases_per_hour" in data:
        limit = _expect(
            path, "imap.max_new_cases_per_hour", data["max_new_cases_per_hour"], int, "a whole number"
        )
        if limit < 1:
            raise ConfigError(f"{path}: imap.max_new_cases_per_hour must be at least 1 (got {limit})")
        settings["max_new_cases_per_hour"] = limit
    if "acknowledge_every_hours" in data:
        hours = _expect(
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
        addresses = _texts(path, "imap.own_addresses", data["own_addresses"])
        for address in addresses:
            if "@" not in address:
                raise ConfigError(f"{path}: imap.own_addresses: {address!r} is not an email address")
        settings["own_addresses"] = tuple(a.lower() for a in addresses)
    return InboxSettings(**settings)


def _server(path: Path, protocol: str, data: Mapping[str, Any]) -> MailServer:
    _check_keys(path, protocol, data, _SERVER_KEYS[protocol])
    if "host" not in data:
        raise ConfigError(f"{path}: [{protocol}] needs a host")
    host = _expect(path, f"{protocol}.host", data["host"], str, "a host name")
    security = _expect(path, f"{protocol}.security", data.get("security", "ssl"), str, "text")
    if security not in SECURITY_MODES:
        raise ConfigError(
            f"{path}: {protocol}.security must be one of {', '.join(SECURITY_MODES)} (got {security!r})"
        )
    port = _expect(
        path, f"{protocol}.port", data.get("port", _DEFAULT_PORTS[protocol][security]), int, "a number"
    )
    if not 0 < port < 65536:
        raise ConfigError(f"{path}: {protocol}.port must be between 1 and 65535 (got {port})")
    timeout = _expect(
        path, f"{protocol}.timeout", data.get("timeout", 60), (int, float), "a number of seconds"
    )
    if timeout <= 0:
        raise ConfigError(f"{path}: {protocol}.timeout must be more than 0 seconds (got {timeout})")
    optional = {}
    for key in ("user", "password_command", "folder", "from"):
        if key in data:
            optional[key] = _expect(path, f"{protocol}.{key}", data[key], str, "text")
    cafile = None
    if "cafile" in data:
        name = _expect(path, f"{protocol}.cafile", data["cafile"], str, "a file path")
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


def parse_config(path: Path, data: Mapping[str, Any]) -> Config:
    """Check the parsed TOML of ``path`` and turn it into a :class:`Config`."""
    _check_keys(path, "", data, _TOP_KEYS)
    base = path.parent
    store: Path | str | None = None
    if "store" in data:
        name = _expect(path, "store", data["store"], str, "a file path or a postgresql:// URL")
        if is_store_url(name):
            if url_password(name) is not None:
                raise ConfigError(
                    f"{path}: store: the URL holds a password, and passwords are never read from the "
                    "config file; set CRMKIT_STORE_PASSWORD or store_password_command instead"
                )
            store = name
        else:
            store = base / name
    password_command = None
    if "store_password_command" in data:
        password_command = _expect(
            path, "store_password_command", data["store_password_command"], str, "text"
        )
    currency = _expect(path, "default_currency", data.get("default_currency", "USD"), str, "a currency code")
    if not is_currency(currency.upper()):
        raise ConfigError(f"{path}: default_currency {currency!r} is not a known currency code")
    tables = {}
    mailboxes = _mailboxes(path, data["imap"]) if "imap" in data else ()
    for name in ("smtp", "sheets", "merge", "invoices"):
        if name in data:
            tables[name] = _expect(path, name, data[name], dict, f"a table ([{name}])")
    sheets = SheetsSettings()
    if "sheets" in tables:
        _check_keys(path, "sheets", tables["sheets"], _SHEETS_KEYS)
        creds = tables["sheets"].get("credentials")
        if creds:
            creds = base / Path(_expect(path, "sheets.credentials", creds, str, "a file path")).expanduser()
        sheets = SheetsSettings(
            credentials=creds or None,
            endpoint=_expect(
                path, "sheets.endpoint", tables["sheets"].get("endpoint", sheets.endpoint), str, "a URL"
            ),
            timeout=_seconds(path, "sheets.timeout", tables["sheets"].get("timeout", sheets.timeout)),
            retry_deadline=_seconds(
                path, "sheets.retry_deadline", tables["sheets"].get("retry_deadline", sheets.retry_deadline)
            ),
        )
    merge = _merge(path, tables["merge"]) if "merge" in tables else MergeSettings()
    sheet_names: dict[str, str] = {}
    if "sheet_names" in data:
        given = _expect(path, "sheet_names", data["sheet_names"], dict, "a table ([sheet_names])")
        try:
            tabs = resolve_sheet_names(given)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        sheet_names = {title: tabs[title] for title in given}
    return Config(
        path=path,
        store=store,
        store_password_command=password_command,
        default_currency=currency.upper(),
        imap=mailboxes[0].server if mailboxes else None,
        smtp=_server(path, "smtp", tables["smtp"]) if "smtp" in tables else None,
        sheets=sheets,
        inbox=mailboxes[0].inbox if mailboxes else InboxSettings(),
        merge=merge,
        invoices=_invoices(path, tables["invoices"]) if "invoices" in tables else InvoiceSettings(),
        sheet_names=sheet_names,
        mailboxes=mailboxes,
    )


def _mailboxes(path: Path, value: Any) -> tuple[Mailbox, ...]:
    """``[imap]`` (one mailbox) or ``[[imap]]`` (several: support@, sales@, each with its own checkpoint)."""
    if isinstance(value, dict):
        return (Mailbox(_server(path, "imap", value), _inbox(path, value)),)
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise ConfigError(f"{path}: imap must be a table ([imap]) or a list of tables ([[imap]])")
    found = tuple(Mailbox(_server(path, "imap", v), _inbox(path, v)) for v in value)
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


def _invoices(path: Path, data: Mapping[str, Any]) -> InvoiceSettings:
    _check_keys(path, "invoices", data, _INVOICE_KEYS)
    patterns: dict[str, Any] = {}
    for key in ("company", "template"):
        if key in data:
            name = _expect(path, f"invoices.{key}", data[key], str, "a file path")
            patterns[key] = path.parent / Path(name).expanduser()  # relative to crmkit.toml
    for key in ("number_pattern", "quote_pattern"):
        if key not in data:
            continue
        pattern = _expect(path, f"invoices.{key}", data[key], str, 'a pattern such as "INV-{year}-{seq:04}"')
        try:
            first, second = (pattern.format(year=2026, month="01", seq=n) for n in (1, 2))
        except (KeyError, IndexError, ValueError) as exc:
            raise ConfigError(
                f"{path}: invoices.{key} {pattern!r}: use {{year}}, {{month}} and {{seq}} only ({exc})"
            ) from None
        if "{seq" not in pattern or first == second:
            raise ConfigError(f"{path}: invoices.{key} {pattern!r} needs {{seq}} (e.g. {{seq:04}})")
        patterns[key] = pattern
    return InvoiceSettings(**patterns)


def _merge(path: Path, data: Mapping[str, Any]) -> MergeSettings:
    _check_keys(path, "merge", data, _MERGE_KEYS)
    settings: dict[str, Any] = {}
    if "rate" in data:
        rate = _expect(path, "merge.rate", data["rate"], str, 'a rate such as "30/min"')
        from crmkit.mail.merge import parse_rate  # the mail package imports this module

        try:
            parse_rate(rate)
        except Exception as exc:
            raise ConfigError(f"{path}: merge.{exc}") from None
        settings["rate"] = rate
    if "per_day" in data:
        per_day = _expect(path, "merge.per_day", data["per_day"], int, "a whole number")
        if per_day < 1:
            raise ConfigError(f"{path}: merge.per_day must be at least 1 (got {per_day})")
        settings["per_day"] = per_day
    for key in ("unsubscribe_address", "unsubscribe_url"):
        if key in data:
            settings[key] = _expect(path, f"merge.{key}", data[key], str, "text").strip()
    if settings.get("unsubscribe_url") and not settings["unsubscribe_url"].startswith("https://"):
        raise ConfigError(f"{path}: merge.unsubscribe_url must be an https:// URL (RFC 8058)")
    if settings.get("unsubscribe_address") and "@" not in settings["unsubscribe_address"]:
        raise ConfigError(f"{path}: merge.unsubscribe_address must be an email address")
    if "attachments" in data:
        folder = _expect(path, "merge.attachments", data["attachments"], str, "a folder path")
        settings["attachments"] = path.parent / Path(folder).expanduser()
    return MergeSettings(**settings)


def find_config(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """``--config``, then ``CRMKIT_CONFIG``, then crmkit.toml in the current folder or the nearest above."""
    if explicit:
        return _config_file(Path(explicit), "config file {path} not found")
    if env.get("CRMKIT_CONFIG"):
        return _config_file(Path(env["CRMKIT_CONFIG"]), "CRMKIT_CONFIG names {path}, which does not exist")
    return discover_config()


def discover_config(start: Path | None = None) -> Path | None:
    """crmkit.toml in ``start`` (the current folder) or the nearest folder above it, as git finds .git.

    Found in the current folder it is ``crmkit.toml``; higher up, its absolute path, so
    messages name the file wherever the command runs. A crmkit.toml that is a folder or
    a broken link is an error, not skipped: a project that is there must not be passed over.
    """
    try:
        here = Path.cwd()
    except FileNotFoundError:
        raise ConfigError("the current folder no longer exists; cd to a folder that does") from None
    start = here if start is None else start.absolute()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILE
        if candidate.exists() or candidate.is_symlink():
            return _config_file(Path(CONFIG_FILE) if folder == here else candidate, "{path} not found")
    return None


def _config_file(path: Path, missing: str) -> Path:
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a file: remove or rename it, or pass --config")
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{path} is a link to {os.readlink(path)}, which does not exist")
    if not path.is_file():
        raise ConfigError(missing.format(path=path))
    return path


def load_config(
    explicit: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> Config:
    """The configuration in force: from a file if one is found, else the defaults."""
    path = find_config(explicit, os.environ if env is None else env)
    if path is None:
        return Config()
    import tomllib  # only when there is a crmkit.toml to read

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0  # Notepad's UTF-8
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = raw.count(b"\n", 0, offset) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset}, line {line}); "
            "save it as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(path, data)


def resolve_store(
    explicit: str | os.PathLike[str] | None, config: Config, env: Mapping[str, str] | None = None
) -> Path | str:
    """``--store``, then ``CRMKIT_STORE``, then crmkit.toml's ``store``, then crm.json beside
    crmkit.toml (./crm.json when there is none).

    A TinyDB store's file as a Path; a PostgreSQL store's URL as text.
    """
    env = os.environ if env is None else env
    given = explicit or env.get("CRMKIT_STORE") or config.store
    if given is None:  # beside crmkit.toml, wherever the command runs
        return config.path.parent / DEFAULT_STORE if config.path is not None else Path(DEFAULT_STORE)
    if is_store_url(given):
        return str(given)
    return Path(given)


def store_named_by(
    explicit: str | os.PathLike[str] | None, config: Config, env: Mapping[str, str] | None = None
) -> str | None:
    """What chose the store: ``--store``, ``CRMKIT_STORE``, the crmkit.toml in force, or None (./crm.json).

    Only a store named by ``--store`` or ``CRMKIT_STORE`` is created by a command that
    writes; any other must exist (``crmkit init``), so a command run in the wrong folder
    does not quietly start a second CRM.
    """
    env = os.environ if env is None else env
    if explicit:
        return "--store"
    if env.get("CRMKIT_STORE"):
        return "CRMKIT_STORE"
    return str(config.path) if config.path is not None else None


def resolve_store_path(
    explicit: str | os.PathLike[str] | None, config: Config, env: Mapping[str, str] | None = None
) -> Path:
    """The store's file; for a PostgreSQL store, the local name its side files go beside.

    That name is in crmkit.toml's folder, or the current one without a crmkit.toml.
    """
    location = resolve_store(explicit, config, env)
    if isinstance(location, Path):
        return location
    return local_store_path(location, config.path.parent if config.path is not None else Path())


def store_password(config: Config, env: Mapping[str, str] | None = None) -> Secret | None:
    """A PostgreSQL store's password: ``CRMKIT_STORE_PASSWORD``, else ``store_password_command``.

    None leaves it to libpq (``PGPASSWORD``, ``~/.pgpass``) or to the URL.
    """
    env = os.environ if env is None else env
    if env.get("CRMKIT_STORE_PASSWORD"):
        return Secret(env["CRMKIT_STORE_PASSWORD"])
    if config.store_password_command:
        return _password_from_command(config.store_password_command, "store_password_command")
    return None


def _close_matches(word: str, choices: Sequence[str]) -> list[str]:
    import difflib  # only to suggest a fix for a mistyped key

    return difflib.get_close_matches(word, choices, n=1)


def _password_from_command(command: str, what: str) -> Secret:
    """Run a password command through the shell; its first line is the password (never shown)."""
    import subprocess

    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{what} did not finish within 60 s") from None
    if done.returncode != 0:
        raise ConfigError(f"{what} failed (exit {done.returncode})")
    lines = done.stdout.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"{what} printed no password")
    return Secret(lines[0])


def resolve_password(server: MailServer, env: Mapping[str, str] | None = None) -> Secret:
    """The server's password: its environment variable, else its password_command.

    The command runs through the shell (so ``pass show x | head -1`` works);
    its first line is the password. Neither the password nor the command's
    output ever appears in an error message.
    """
    env = os.environ if env is None else env
    if env.get(server.password_env):
        return Secret(env[server.password_env])
    if server.password_command:
        return _password_from_command(server.password_command, f"[{server.protocol}] password_command")
    raise ConfigError(
        f"no password for [{server.protocol}] {server.user or ''}@{server.host}: "
        f"set {server.password_env} or password_command in crmkit.toml"
    )
