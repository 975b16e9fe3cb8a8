"""``crmkit store``: the store itself (its format, upgrading it, creating it, copying it)."""

from __future__ import annotations

from pathlib import Path

import click

from crmkit.cli import App, pass_app
from crmkit.cli.output import emit_json, json_option

__all__ = ["register"]


@click.group()
def store() -> None:
    """The store itself: its format, upgrades, and copies between TinyDB and PostgreSQL.

    \b
    Example:
        crmkit store upgrade
        crmkit store copy crm.json postgresql://crm@db.example.com/crm
    """


@store.command()
@json_option
@pass_app
def upgrade(app: App, as_json: bool) -> None:
    """Bring a store written by an earlier crmkit to the current format.

    Opening an old store with any command upgrades it too; this does it now, under
    the store's lock, and keeps the old file as crm.json.v1-backup.

    \b
    Example:
        crmkit store upgrade
    """
    from crmkit.store.upgrade import upgrade_store

    location = app.store_location
    if not isinstance(location, Path):  # PostgreSQL: opening it migrates its tables
        store = app.store(must_exist=True)
        from crmkit.store.postgres import SCHEMA_VERSION

        if as_json:
            emit_json({"store": store.location, "upgraded": False, "schema_version": SCHEMA_VERSION})
        else:
            click.echo(f"{store.location} is at schema version {SCHEMA_VERSION}; nothing to do")
        return
    if not location.exists():
        app.store(must_exist=True)  # refuses with where it looked and how to make one
    result = upgrade_store(location)
    if as_json:
        emit_json(result.as_json())
    elif not result.upgraded:
        click.echo(f"{result.path} is already in format {result.to_format}; nothing to do")
    else:
        moved = ", ".join(f"{n} {table}" for table, n in result.tables.items() if n) or "no documents"
        click.echo(f"upgraded {result.path} from format {result.from_format} to {result.to_format}: {moved}")
        if result.backup:
            click.echo(f"the old file is kept as {result.backup}")


@store.command()
@pass_app
def create(app: App) -> None:
    """Create the store's tables (or file), empty; what is there already is kept.

    For a PostgreSQL store, the database must exist (createdb); crmkit makes its tables.

    \b
    Example:
        crmkit --store postgresql://crm@db.example.com/crm store create
    """
    store = app.store(create=True)
    existed = store.exists_on_disk()
    store.create()
    click.echo(f"{store.location} {'already existed; kept it' if existed else 'created'}")


@store.command()
@click.argument("source", metavar="SRC")
@click.argument("destination", metavar="DST")
@click.option("--force", is_flag=True, help="Replace what DST holds (a TinyDB store's files are kept aside).")
@json_option
@pass_app
def copy(app: App, source: str, destination: str, force: bool, as_json: bool) -> None:
    """Copy a whole CRM from SRC to DST (files or postgresql:// URLs), then verify it.

    Every record table, the counters (next ids, invoice numbers) and crmkit's
    bookkeeping (sync state, poller, campaigns) are copied; DST must be empty
    unless --force. Each table's count and checksum are compared after the copy:
    a mismatch exits 1. A PostgreSQL password comes from CRMKIT_STORE_PASSWORD,
    store_password_command, PGPASSWORD or ~/.pgpass.

    \b
    Example:
        crmkit store copy crm.json postgresql://crm@db.example.com:5432/crm
        crmkit store copy postgresql://crm@db.example.com/crm backup.json --json
    """
    from crmkit.locations import is_store_url
    from crmkit.store.copy import copy_store

    def at(text: str) -> Path | str:
        return text if is_store_url(text) else Path(text)

    src, dst = app.open_store(at(source)), app.open_store(at(destination))
    try:
        result = copy_store(src, dst, force=force)
    finally:
        src.close()
        dst.close()
    if as_json:
        emit_json(result.as_json())
        return
    click.echo(f"copied {result.source} -> {result.destination} in {result.seconds:.1f} s")
    if result.replaced:
        click.echo(f"what {result.destination} held is kept as {result.replaced}")
    width = max(len(name) for name in result.tables)
    for name, table in result.tables.items():
        click.echo(f"  {name:<{width}}  {table.count:>8}  sha256 {table.sha256[:16]}")
    click.echo("verified: every table's count and checksum match")


def register(main: click.Group) -> None:
    main.add_command(store)
