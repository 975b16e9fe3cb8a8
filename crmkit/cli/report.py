"""``crmkit report ...``: pipeline, funnel, forecast, revenue and cases, as tables, JSON or a workbook."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import click

from crmkit.cli import App, pass_app
from crmkit.cli.output import emit_json, example, json_option
from crmkit.reports import Report, cases, forecast, funnel, pipeline, revenue
from crmkit.reports.model import NUMERIC_KINDS, text_value
from crmkit.reports.text import layout

__all__ = ["print_report", "register"]


def print_report(report: Report, *, width: int | None = None) -> None:
    """A report as a person reads it in a terminal: each table under its title, as wide as the
    terminal (``COLUMNS``) allows: long text is cut, a wide table split into blocks, numbers kept whole."""
    width = width or shutil.get_terminal_size().columns
    click.echo(report.title)
    for table in report.tables:
        click.echo(f"\n{table.title}")
        rows = [
            [text_value(row.get(c.key), c.kind, table.currency or row.get("currency")) for c in table.columns]
            for row in table.rows
        ]
        numeric = [c.kind in NUMERIC_KINDS for c in table.columns]
        for line in layout([c.label for c in table.columns], rows, numeric, width):
            click.echo(line)
    for note in report.notes:
        click.echo(f"\n({note})")


def _output(report: Report, as_json: bool, xlsx: Path | None, sheet: str) -> None:
    if xlsx is not None:
        from crmkit.reports.xlsx import write_report

        write_report(report, xlsx, sheet=sheet)
    if as_json:
        emit_json(report.as_json())
    else:
        print_report(report)
        if xlsx is not None:
            click.echo(f"\nwritten to {xlsx}, sheet {sheet!r}, with its charts")


def _command(name: str, help_text: str, make: Callable[..., Report], **extra: click.Option) -> click.Command:
    @click.command(name, help=help_text)
    @click.option(
        "--xlsx",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Also write it, with native charts, into this workbook (new, or its Reports sheet).",
    )
    @click.option("--sheet", default="Reports", show_default=True, help="The sheet --xlsx writes.")
    @json_option
    @pass_app
    def command(app: App, xlsx: Path | None, sheet: str, as_json: bool, **options: object) -> None:
        _output(make(app.store(must_exist=True), **options), as_json, xlsx, sheet)

    for option in extra.values():
        command.params.insert(0, option)
    return command


@click.group()
def report() -> None:
    """Reports on the store: where the money is, and where support is behind.

    Each prints tables; --json prints them for scripts; --xlsx FILE also writes
    them into a workbook with a native chart (a new file, or a Reports sheet
    added to an existing one, whose other sheets stay as they are). Money is
    summed exactly and never mixed across currencies: one table per currency.

    \b
    Example:
        crmkit report pipeline
        crmkit report forecast --by quarter --xlsx forecast.xlsx
        crmkit report revenue --json
    """


report.add_command(
    _command(
        "pipeline",
        "Open deals per pipeline and stage: count, amount, weighted amount."
        + example("crmkit report pipeline", "crmkit report pipeline --xlsx pipeline.xlsx"),
        lambda store: pipeline(store),
    )
)
report.add_command(
    _command(
        "funnel",
        "Leads and deals reaching each stage, conversion rates, median days per stage."
        + example("crmkit report funnel", "crmkit report funnel --json"),
        lambda store: funnel(store),
    )
)
report.add_command(
    _command(
        "forecast",
        "Deals by month or quarter of close date: closed won, commit, best case, pipeline; raw and weighted."
        + example("crmkit report forecast", "crmkit report forecast --by quarter --xlsx forecast.xlsx"),
        lambda store, by: forecast(store, by=by),
        by=click.Option(
            ["--by"],
            type=click.Choice(["month", "quarter"]),
            default="month",
            show_default=True,
            help="Group close dates by month or quarter.",
        ),
    )
)
report.add_command(
    _command(
        "revenue",
        "Money received on invoices by month, owner, lead source, region and tier."
        + example("crmkit report revenue", "crmkit report revenue --xlsx crm.xlsx --sheet Revenue"),
        lambda store: revenue(store),
    )
)
report.add_command(
    _command(
        "cases",
        "Open cases by priority and age, oldest first."
        + example("crmkit report cases", "crmkit report cases --json"),
        lambda store: cases(store),
    )
)


def register(main: click.Group) -> None:
    main.add_command(report)
