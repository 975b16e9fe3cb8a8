"""``crmkit store``: the store itself (its format, upgrading it)."""

from __future__ import annotations

import click

from crmkit.cli import App, pass_app
from crmkit.cli.output import emit_json, json_option

__all__ = ["register"]


@click.group()
def store() -> None:
    """The store itself: its format and upgrades."""


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

    result = upgrade_store(app.store_path)
    if as_json:
        emit_json(result.as_json())
    elif not result.upgraded:
        click.echo(f"{result.path} is already in format {result.to_format}; nothing to do")
    else:
        moved = ", ".join(f"{n} {table}" for table, n in result.tables.items() if n) or "no documents"
        click.echo(f"upgraded {result.path} from format {result.from_format} to {result.to_format}: {moved}")
        if result.backup:
            click.echo(f"the old file is kept as {result.backup}")


def register(main: click.Group) -> None:
    main.add_command(store)
