"""The ``crmkit`` command: a thin shell over the library.

Each command parses its options, makes one library call and prints the result
(``--json`` for scripts). Errors print one line and exit non-zero:

\b
  0  done
  1  failed (bad input, not found, duplicate, store or config problem)
  2  wrong usage (unknown option, missing argument)
  3  done, but conflicts or invalid cells need a person (sync), or
     messages were quarantined (poll)
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from crmkit import __version__
from crmkit.config import (
    Config,
    load_config,
    resolve_store,
    resolve_store_path,
    store_named_by,
    store_password,
)
from crmkit.errors import CrmkitError

if TYPE_CHECKING:  # the store (and the schema under it) loads when a command first needs it
    from crmkit.store import Store

__all__ = ["App", "main"]


@dataclass
class App:
    """What every command needs: the configuration and the store, opened on first use."""

    store_option: str | None = None
    config_option: str | None = None
    _config: Config | None = field(default=None, repr=False)
    _store: Store | None = field(default=None, repr=False)

    @property
    def config(self) -> Config:
        if self._config is None:
            self._config = load_config(self.config_option)
        return self._config

    @property
    def store_location(self) -> Path | str:
        """The store's file, or a PostgreSQL store's URL."""
        return resolve_store(self.store_option, self.config)

    @property
    def store_path(self) -> Path:
        """The store's file; for a PostgreSQL store, the local name its side files go beside."""
        return resolve_store_path(self.store_option, self.config)

    def open_store(self, location: Path | str) -> Store:
        """A Store at ``location`` with this configuration (currency, numbering, password)."""
        from crmkit.store import Store

        return Store(
            location,
            default_currency=self.config.default_currency,
            numbering=self.config.invoices.numbering,
            password=self._password,
            local_folder=self.store_path.parent,
        )

    def _password(self) -> str | None:
        # asked for only when a PostgreSQL store connects, so store_password_command runs then
        secret = store_password(self.config)
        return secret.reveal() if secret is not None else None

    def store(self, *, must_exist: bool = False, create: bool = False) -> Store:
        """The store; ``must_exist`` for commands that only read (a typo must not look like an empty CRM).

        A command that writes creates the store only where ``--store`` or ``CRMKIT_STORE``
        names it, or with ``create`` (``crmkit store create``, whose job it is); anywhere
        else a missing store is refused as a read refuses it, so a command run in the wrong
        folder does not quietly start a second CRM.
        """
        if self._store is None:
            location = self.store_location
            named_by = store_named_by(self.store_option, self.config)
            may_create = not must_exist and (named_by in _NAMES_A_STORE or create)
            if not may_create and isinstance(location, Path) and not location.exists():
                raise CrmkitError(_no_store(location, named_by))
            store = self.open_store(location)
            if not may_create and not isinstance(location, Path) and not store.exists_on_disk():
                store.close()
                raise CrmkitError(
                    f"no store at {store.location} (the database has no crmkit tables): "
                    "run `crmkit store create`, or copy one there with `crmkit store copy`"
                )
            self._store = store
        return self._store


#: What names a store explicitly enough for a command that writes to create it.
_NAMES_A_STORE = ("--store", "CRMKIT_STORE")


def _no_store(location: Path, named_by: str | None) -> str:
    """One line for a missing store: where it was looked for, and the command that makes it."""
    if named_by is None:
        return (
            f"no crmkit.toml in this folder or any folder above it, and no store at {location}: "
            "run `crmkit init` to start a CRM here, or pass --store / set CRMKIT_STORE"
        )
    if named_by in _NAMES_A_STORE:
        return f"no store at {location} (named by {named_by}): run `crmkit init`, or check the path"
    folder = Path(named_by).parent
    init = "crmkit init" if folder == Path() else f"crmkit init {folder}"
    return (
        f"no store at {location}, where {named_by} puts it: run `{init}` to create it, "
        "or pass --store / set CRMKIT_STORE"
    )


#: Which module registers each top-level command. A command's module (and what it imports:
#: openpyxl, jinja2, imapclient ...) is loaded only when that command runs or help lists it,
#: so `crmkit --version` and a cron `crmkit sync` skip what they never use.
_COMMAND_MODULES = {
    "init": "setup",
    "quickstart": "setup",
    "sync": "sync",
    "poll": "mail",
    "merge": "merge",
    "campaigns": "merge",
    "report": "report",
    "store": "store",
    **{
        name: "records"
        for name in ("accounts", "activities", "cases", "contacts", "deals", "invoices", "leads", "quotes")
    },
}


class CrmkitGroup(click.Group):
    """Turns crmkit's own errors into one readable line and exit code 1; loads commands on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(self.commands) | set(_COMMAND_MODULES))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in self.commands and cmd_name in _COMMAND_MODULES:
            module = importlib.import_module(f"crmkit.cli.{_COMMAND_MODULES[cmd_name]}")
            if _COMMAND_MODULES[cmd_name] == "records":
                module.register(self, cmd_name)  # one record type's group, not all eight
            else:
                module.register(self)
        return self.commands.get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except CrmkitError as exc:
            raise click.ClickException(str(exc)) from None


pass_app = click.make_pass_decorator(App)


@click.group(cls=CrmkitGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--store",
    "store_option",
    metavar="PATH|URL",
    help="The store: a file, or postgresql://user@host:port/dbname "
    "[default: CRMKIT_STORE, crmkit.toml's store (or the crm.json beside it), or ./crm.json "
    "without a crmkit.toml]. A command that writes creates only a store named here or by CRMKIT_STORE.",
)
@click.option(
    "--config",
    "config_option",
    metavar="PATH",
    help="The config file [default: CRMKIT_CONFIG, or crmkit.toml in this folder or the nearest one above].",
)
@click.version_option(__version__, prog_name="crmkit")
@click.pass_context
def main(ctx: click.Context, store_option: str | None, config_option: str | None) -> None:
    """crmkit: a CRM on top of the spreadsheets and the inbox your team already uses.

    Records (leads, contacts, accounts, deals, invoices, cases, activities)
    live in the store: TinyDB JSON files, or a PostgreSQL database shared by
    a team (--store postgresql://user@host/dbname). Start with `crmkit init`,
    or see a demo with `crmkit quickstart`.

    \b
    Example:
        crmkit init
        crmkit contacts add name="Ana Nguyen" email=ana@example.com
        crmkit contacts list --where account=A-1
        crmkit contacts show ana@example.com
    """
    ctx.obj = App(store_option=store_option, config_option=config_option)
