"""Getting started: ``crmkit init`` and ``crmkit quickstart``."""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path

import click

from crmkit.cli.output import emit_json, json_option
from crmkit.cli.records import print_contact_view
from crmkit.cli.report import print_report
from crmkit.demo import quickstart as quickstart_demo
from crmkit.project import init_project

__all__ = ["command_as_typed", "register"]


def command_as_typed(argv0: str, *, on_path: str | None, python: str, absolute: bool = False) -> str:
    """How to run this crmkit again from the current folder, for the hints that name a next command.

    ``crmkit`` when that is what the shell finds; else the path it was run by
    (``.venv/bin/crmkit`` from ``make demo``, before the venv is activated), or
    ``python -m crmkit``. Anything else (a test runner) gets plain ``crmkit``.
    ``absolute`` for a hint that is typed in another folder (after a ``cd``).
    """
    run_by = Path(argv0)
    if run_by.name == "__main__.py":
        return f"{shlex.quote(python)} -m crmkit"
    if run_by.stem != "crmkit" or run_by.name == argv0:
        return "crmkit"
    if on_path is not None and Path(on_path).resolve() == run_by.resolve():
        return "crmkit"
    return shlex.quote(str(run_by.absolute()) if absolute else argv0)


def _crmkit(*, absolute: bool = False) -> str:
    return command_as_typed(
        sys.argv[0], on_path=shutil.which("crmkit"), python=sys.executable, absolute=absolute
    )


def _activate_hint(command: str) -> str | None:
    """For a crmkit run from a virtual environment that is not active: how to type just ``crmkit``."""
    activate = Path(sys.executable).parent / "activate"
    if command == "crmkit" or not activate.is_file():
        return None
    shown = Path(os.path.relpath(activate)) if activate.is_relative_to(Path.cwd()) else activate
    return f"(or run `source {shlex.quote(str(shown))}` once, then type just `crmkit`)"


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
    cd = "" if folder == Path() else f"cd {shlex.quote(str(folder))} && "
    crmkit = _crmkit(absolute=bool(cd))
    if isinstance(result.store, str):
        click.echo(f"the store is {result.store}: `{cd}{crmkit} store create` makes its tables")
    click.echo(f'\nNext: {cd}{crmkit} contacts add name="…" email=…')
    if hint := _activate_hint(crmkit):
        click.echo(hint)


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
    crmkit = _crmkit()
    click.echo(f"\nEdit {book.path}, then: {crmkit} --store {store.path} sync {book.path}")
    if hint := _activate_hint(crmkit):
        click.echo(hint)


def register(main: click.Group) -> None:
    main.add_command(init)
    main.add_command(quickstart)
