"""Setting up a folder for crmkit: ``crmkit init``.

A folder gets a commented ``crmkit.toml``, an empty store and a copy of the
template workbook. Nothing that exists is overwritten.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from crmkit.config import CONFIG_FILE, DEFAULT_STORE, load_config, resolve_store
from crmkit.errors import CrmkitError
from crmkit.records.money import is_currency
from crmkit.store import Store
from crmkit.workbooks import TEMPLATE_NAME

__all__ = ["InitResult", "init_project", "shipped_workbook"]

WORKBOOK_NAME = "crm.xlsx"

CONFIG_TEMPLATE = """\
# crmkit settings (see the README, "Configuration").
# Passwords never go in this file: set CRMKIT_IMAP_PASSWORD / CRMKIT_SMTP_PASSWORD
# in the environment, or give a password_command whose output is the password.

store = "{store}"
default_currency = "{currency}"

# [imap]                      # the support inbox `crmkit poll` reads
# host = "imap.example.com"
# security = "ssl"            # ssl (default), starttls or plain
# user = "support@example.com"
# password_command = "pass show mail/support"
# folder = "INBOX"
# after = "seen"              # what happens to filed mail: seen, move (to move_to) or none
# acknowledge = false         # answer new cases with their number (needs [smtp] from)
# urgent_keywords = ["urgent", "asap", "khẩn", "gấp"]

# [smtp]                      # how campaigns and acknowledgements are sent
# host = "smtp.example.com"
# security = "starttls"
# user = "support@example.com"
# from = "Support <support@example.com>"

# [merge]                     # mail-merge campaigns: crmkit merge TEMPLATE
# rate = "30/min"             # providers cap sending
# per_day = 2000              # every campaign's sends of a day count
# unsubscribe_url = "https://example.com/unsubscribe?c={{campaign}}&r={{record}}"   # one-click (RFC 8058)

# [invoices]                  # how new numbers look
# number_pattern = "INV-{{year}}-{{seq:04}}"
# quote_pattern = "QUO-{{year}}-{{seq:04}}"

# [sheets]                    # Google Sheets sync: crmkit sync gsheet:KEY
# credentials = "~/.config/crmkit/service-account.json"   # a key file; keep it out of repositories

# [sheet_names]               # crmkit sync: keep a crmkit sheet in a tab of another name
# Deals = "CRM Deals"         # keys: Leads, Contacts, Accounts, Deals, Invoices, Cases, "Invoice Lines"
"""


def shipped_workbook(name: str) -> Path:
    """A workbook shipped with crmkit: inside the installed package, or the source tree's workbooks/."""
    package_dir = Path(__file__).resolve().parent
    for folder in (package_dir / "_workbooks", package_dir.parent / "workbooks"):
        if (folder / name).is_file():
            return folder / name
    raise CrmkitError(f"the {name} workbook that ships with crmkit is missing; reinstall crmkit")


@dataclass
class InitResult:
    """What ``init_project`` made and what it left alone because it existed.

    ``store`` is where the folder's store is: the crmkit.toml's, if one was there already.
    """

    folder: Path
    created: list[Path] = field(default_factory=list)
    kept: list[Path] = field(default_factory=list)
    store: Path | str | None = None


def init_project(folder: Path, *, currency: str = "USD") -> InitResult:
    """Make ``folder`` a crmkit folder: config, empty store, template workbook.

    A crmkit.toml already there is kept, and the store it names is the one created
    (a PostgreSQL store's tables are left to ``crmkit store create``).
    """
    currency = currency.upper()
    if not is_currency(currency):
        raise CrmkitError(f"{currency!r} is not a known currency code")
    folder.mkdir(parents=True, exist_ok=True)
    result = InitResult(folder)

    config = folder / CONFIG_FILE
    if config.exists():
        settings = load_config(config, env={})
        result.kept.append(config)
        result.store = resolve_store(None, settings, env={})
        currency = settings.default_currency
    else:
        config.write_text(CONFIG_TEMPLATE.format(store=DEFAULT_STORE, currency=currency), encoding="utf-8")
        result.created.append(config)
        result.store = folder / DEFAULT_STORE

    if isinstance(result.store, Path):
        if result.store.exists():
            result.kept.append(result.store)
        else:
            result.store.parent.mkdir(parents=True, exist_ok=True)
            Store(result.store, default_currency=currency).create()
            result.created.append(result.store)

    workbook = folder / WORKBOOK_NAME
    if workbook.exists():
        result.kept.append(workbook)
    else:
        shutil.copyfile(shipped_workbook(TEMPLATE_NAME), workbook)
        result.created.append(workbook)
    return result
