"""crmkit.toml: where the store is, and how to reach the mail servers and Google.

Found via ``--config``, ``CRMKIT_CONFIG``, or ``crmkit.toml`` in the current
folder or the nearest folder above it (as git finds .git); paths in it are
relative to its folder. It is UTF-8 text, and every key is optional. Secrets
never live in it: a password comes from an environment variable
(``CRMKIT_IMAP_PASSWORD``, ``CRMKIT_SMTP_PASSWORD``) or from ``password_command``,
whose output is the password. An unknown key or a bad value is an error that names it.

The parts: :mod:`.files` finds and reads the file and says where the store is;
:mod:`.settings` turns it into a :class:`Config`; :mod:`.mailservers` is
``[imap]`` and ``[smtp]``; :mod:`.passwords` is where passwords come from;
:mod:`.checks` are the value checks they share. Everything is importable from
``crmkit.config``.

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

from crmkit.config.files import (
    CONFIG_FILE,
    DEFAULT_STORE,
    discover_config,
    find_config,
    load_config,
    resolve_store,
    resolve_store_path,
    store_named_by,
)
from crmkit.config.mailservers import (
    AFTER_ACTIONS,
    SECURITY_MODES,
    UNKNOWN_SENDER,
    InboxSettings,
    Mailbox,
    MailServer,
)
from crmkit.config.passwords import Secret, resolve_password, scrub, store_password
from crmkit.config.settings import (
    Config,
    InvoiceSettings,
    MergeSettings,
    SheetsSettings,
    parse_config,
    resolve_sheet_names,
)
from crmkit.locations import is_store_url, local_store_path, redact_url, url_password

__all__ = [
    "AFTER_ACTIONS",
    "CONFIG_FILE",
    "DEFAULT_STORE",
    "SECURITY_MODES",
    "UNKNOWN_SENDER",
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
    "parse_config",
    "redact_url",
    "resolve_password",
    "resolve_sheet_names",
    "resolve_store",
    "resolve_store_path",
    "scrub",
    "store_named_by",
    "store_password",
    "url_password",
]
