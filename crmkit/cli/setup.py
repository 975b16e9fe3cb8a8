"""Getting started: ``crmkit init`` and ``crmkit quickstart``."""

from __future__ import annotations

from pathlib import Path

import click

from crmkit.cli.output import emit_json, json_option
from crmkit.cli.records import print_contact_view
from crmkit.cli.report import print_report
from crmkit.demo import quickstart as quickstart_demo
from crmkit.project import init_project

__all__ = ["register"]


@click.command()
@click.argument("folder", default=".", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--currency", default="USD", show_default=True, help="The default currency of deals and invoices."
)
def init(folder: Path, currency: str) -> None:
    """Set up FOLDER for crmkit: crmkit.toml, an empty store and the template workbook.

    Nothing that already exists is overwritten.

    \b
    Example:
        crmkit init acme-crm --currency VND
    """
    result = init_project(folder, currency=currency)
    for path in result.created:
        click.echo(f"created {path}")
    for path in result.kept:
        click.echo(f"kept    {path} (already there)")
    click.echo(f'\nNext: cd {folder} && crmkit contacts add name="…" email=…')


@click.command()
@click.option(
    "--dir",
    "folder",
    default="demo",
    show_default=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Where to build the demo store.",
)
@click.option("--contact", default="C-1", show_default=True, help="Whose 360° view to show.")
@json_option
def quickstart(folder: Path, contact: str, as_json: bool) -> None:
    """Sync the sample workbook into a demo CRM and show its pipeline and one contact.

    The demo store is rebuilt from scratch each time; your own store is not touched.

    \b
    Example:
        crmkit quickstart
        crmkit --store demo/crm.json deals list
    """
    demo = quickstart_demo(folder, contact=contact)
    if as_json:
        emit_json(demo.as_json())
        return
    summary = ", ".join(f"{n} {sheet.lower()}" for sheet, n in demo.imported.items())
    store, book = demo.store, demo.book
    click.echo(f"Synced the sample workbook {book.path} into the demo store {store.path}: {summary}.\n")
    print_report(demo.pipeline)
    click.echo(f"\n360° view of {contact}:")
    print_contact_view(demo.contact)
    click.echo(f"\nEdit {book.path}, then: crmkit --store {store.path} sync {book.path}")


def register(main: click.Group) -> None:
    main.add_command(init)
    main.add_command(quickstart)
