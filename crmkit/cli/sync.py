"""``crmkit sync``: make a workbook and the store agree."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import click

from crmkit.cli import App, pass_app
from crmkit.cli.output import emit_json, json_option
from crmkit.project import WORKBOOK_NAME
from crmkit.sync import ON_CONFLICT, open_book, sync_book
from crmkit.sync.engine import summarize

__all__ = ["register"]

#: Exit code when the sync finished but conflicts or invalid cells need a person.
NEEDS_ATTENTION = 3


@click.command()
@click.argument("workbook")
@click.option(
    "--on-conflict",
    type=click.Choice(ON_CONFLICT),
    default="fail",
    show_default=True,
    help="A field changed on both sides: fail (change neither, report, exit 3), "
    "or let the sheet or the store win.",
)
@click.option(
    "--credentials",
    type=click.Path(dir_okay=False),
    help="Google service-account key file for a gsheet: workbook "
    "[default: [sheets] credentials in crmkit.toml, or GOOGLE_APPLICATION_CREDENTIALS].",
)
@click.option(
    "--create",
    is_flag=True,
    help="Start a new workbook from crmkit's template when WORKBOOK does not exist "
    "(without it, a missing file is an error: a typo must not start a second workbook).",
)
@click.option("--dry-run", is_flag=True, help="Show what would change on each side; write nothing.")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems (for cron).")
@json_option
@pass_app
def sync(
    app: App,
    workbook: str,
    on_conflict: str,
    credentials: str | None,
    create: bool,
    dry_run: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Two-way sync of WORKBOOK's Leads, Contacts, Deals and Invoices sheets (and Invoice Lines,
    Accounts and Cases where present) with the store.

    A field changed on one side since the last sync is copied to the other; one
    changed on both sides is a conflict. Rows deleted from a sheet archive their
    records; invalid cells are reported with sheet, row and column and left as
    typed. Exit codes: 0 in sync, 3 done but conflicts or invalid cells need a
    person, 1 failed (nothing half-written).

    WORKBOOK is an .xlsx file, or a Google spreadsheet as gsheet:KEY (or its
    URL), shared with the service account whose key --credentials names. A
    workbook that does not exist is an error, unless --create is given or it is
    the crm.xlsx that `crmkit init` made beside crmkit.toml. crmkit writes only
    its own sheets: everything else in the workbook is kept byte for byte.

    \b
    Example:
        crmkit sync crm.xlsx --dry-run
        crmkit sync team.xlsx --create
        crmkit sync crm.xlsx --on-conflict sheet --quiet
        crmkit sync gsheet:1BxiMVs0XRA5nFMdKvBdBZjgmUUqptlbs74OgvE2upms --credentials key.json
    """
    create = create or _is_init_workbook(app, workbook)
    book = open_book(workbook, sheets=app.config.sheets, credentials=credentials, create=create)
    bar = _ProgressBar(enabled=not (quiet or as_json) and sys.stderr.isatty())
    try:
        report = sync_book(
            app.store(),
            book,
            on_conflict=on_conflict,
            dry_run=dry_run,
            progress=bar.advance,
            sheet_names=app.config.sheet_names,
        )
    finally:
        bar.close()
    if as_json:
        emit_json(report.as_json())
    else:
        if not quiet:
            for line in summarize(report):
                click.echo(line)
        for conflict in report.conflicts:
            click.echo(f"conflict: {conflict}", err=True)
        for cell in report.invalid:
            click.echo(f"invalid: {cell}", err=True)
        for sheet in report.sheets:
            for problem in sheet.problems:
                click.echo(f"problem: {sheet.sheet}: {problem}", err=True)
    if report.needs_attention:
        sys.exit(NEEDS_ATTENTION)


def _is_init_workbook(app: App, workbook: str) -> bool:
    """Whether ``workbook`` is the crm.xlsx `crmkit init` puts beside crmkit.toml."""
    config = app.config.path
    if config is None:
        return False
    return Path(workbook).resolve() == (config.parent / WORKBOOK_NAME).resolve()


class _ProgressBar:
    """A bar on stderr for large workbooks in a terminal; nothing under cron or with --json."""

    MIN_ROWS = 2000

    def __init__(self, *, enabled: bool) -> None:
        self.enabled = enabled
        self.bar: Any = None

    def advance(self, rows: int, total: int) -> None:
        if not self.enabled or total < self.MIN_ROWS:
            return
        if self.bar is None:
            self.bar = click.progressbar(length=total, label="Syncing rows", file=sys.stderr)
            self.bar.__enter__()
        self.bar.update(rows)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)


def register(main: click.Group) -> None:
    main.add_command(sync)
