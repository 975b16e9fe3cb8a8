"""The whole of crmkit.toml as a :class:`Config`.

The top-level keys, ``[sheets]``, ``[merge]``, ``[invoices]`` and ``[sheet_names]`` are
checked here; ``[imap]`` and ``[smtp]`` in :mod:`crmkit.config.mailservers`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from crmkit.config.checks import check_keys, close_matches, expect, seconds
from crmkit.config.mailservers import InboxSettings, Mailbox, MailServer, parse_mailboxes, parse_server
from crmkit.errors import ConfigError
from crmkit.locations import is_store_url, url_password
from crmkit.records.money import is_currency

__all__ = [
    "Config",
    "InvoiceSettings",
    "MergeSettings",
    "SheetsSettings",
    "parse_config",
    "resolve_sheet_names",
]

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
_SHEETS_KEYS = ("credentials", "endpoint", "timeout", "retry_deadline")
_MERGE_KEYS = ("rate", "per_day", "unsubscribe_address", "unsubscribe_url", "attachments")
_INVOICE_KEYS = ("number_pattern", "quote_pattern", "company", "template")


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
            hint = close_matches(key, titles)
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


def parse_config(path: Path, data: Mapping[str, Any]) -> Config:
    """Check the parsed TOML of ``path`` and turn it into a :class:`Config`."""
    check_keys(path, "", data, _TOP_KEYS)
    base = path.parent
    store: Path | str | None = None
    if "store" in data:
        name = expect(path, "store", data["store"], str, "a file path or a postgresql:// URL")
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
        password_command = expect(path, "store_password_command", data["store_password_command"], str, "text")
    currency = expect(path, "default_currency", data.get("default_currency", "USD"), str, "a currency code")
    if not is_currency(currency.upper()):
        raise ConfigError(f"{path}: default_currency {currency!r} is not a known currency code")
    tables = {}
    mailboxes = parse_mailboxes(path, data["imap"]) if "imap" in data else ()
    for name in ("smtp", "sheets", "merge", "invoices"):
        if name in data:
            tables[name] = expect(path, name, data[name], dict, f"a table ([{name}])")
    sheets = SheetsSettings()
    if "sheets" in tables:
        check_keys(path, "sheets", tables["sheets"], _SHEETS_KEYS)
        creds = tables["sheets"].get("credentials")
        if creds:
            creds = base / Path(expect(path, "sheets.credentials", creds, str, "a file path")).expanduser()
        sheets = SheetsSettings(
            credentials=creds or None,
            endpoint=expect(
                path, "sheets.endpoint", tables["sheets"].get("endpoint", sheets.endpoint), str, "a URL"
            ),
            timeout=seconds(path, "sheets.timeout", tables["sheets"].get("timeout", sheets.timeout)),
            retry_deadline=seconds(
                path, "sheets.retry_deadline", tables["sheets"].get("retry_deadline", sheets.retry_deadline)
            ),
        )
    merge = _merge(path, tables["merge"]) if "merge" in tables else MergeSettings()
    sheet_names: dict[str, str] = {}
    if "sheet_names" in data:
        given = expect(path, "sheet_names", data["sheet_names"], dict, "a table ([sheet_names])")
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
        smtp=parse_server(path, "smtp", tables["smtp"]) if "smtp" in tables else None,
        sheets=sheets,
        inbox=mailboxes[0].inbox if mailboxes else InboxSettings(),
        merge=merge,
        invoices=_invoices(path, tables["invoices"]) if "invoices" in tables else InvoiceSettings(),
        sheet_names=sheet_names,
        mailboxes=mailboxes,
    )


def _invoices(path: Path, data: Mapping[str, Any]) -> InvoiceSettings:
    check_keys(path, "invoices", data, _INVOICE_KEYS)
    patterns: dict[str, Any] = {}
    for key in ("company", "template"):
        if key in data:
            name = expect(path, f"invoices.{key}", data[key], str, "a file path")
            patterns[key] = path.parent / Path(name).expanduser()  # relative to crmkit.toml
    for key in ("number_pattern", "quote_pattern"):
        if key not in data:
            continue
        pattern = expect(path, f"invoices.{key}", data[key], str, 'a pattern such as "INV-{year}-{seq:04}"')
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
    check_keys(path, "merge", data, _MERGE_KEYS)
    settings: dict[str, Any] = {}
    if "rate" in data:
        rate = expect(path, "merge.rate", data["rate"], str, 'a rate such as "30/min"')
        from crmkit.mail.merge import parse_rate  # the mail package imports this module

        try:
            parse_rate(rate)
        except Exception as exc:
            raise ConfigError(f"{path}: merge.{exc}") from None
        settings["rate"] = rate
    if "per_day" in data:
        per_day = expect(path, "merge.per_day", data["per_day"], int, "a whole number")
        if per_day < 1:
            raise ConfigError(f"{path}: merge.per_day must be at least 1 (got {per_day})")
        settings["per_day"] = per_day
    for key in ("unsubscribe_address", "unsubscribe_url"):
        if key in data:
            settings[key] = expect(path, f"merge.{key}", data[key], str, "text").strip()
    if settings.get("unsubscribe_url") and not settings["unsubscribe_url"].startswith("https://"):
        raise ConfigError(f"{path}: merge.unsubscribe_url must be an https:// URL (RFC 8058)")
    if settings.get("unsubscribe_address") and "@" not in settings["unsubscribe_address"]:
        raise ConfigError(f"{path}: merge.unsubscribe_address must be an email address")
    if "attachments" in data:
        folder = expect(path, "merge.attachments", data["attachments"], str, "a folder path")
        settings["attachments"] = path.parent / Path(folder).expanduser()
    return MergeSettings(**settings)
