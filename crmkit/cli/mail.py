"""``crmkit poll``: turn the support inbox into cases."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import click

from crmkit.cli import App, pass_app
from crmkit.cli.output import emit_json, json_option, print_table
from crmkit.mail.archive import MailArchive
from crmkit.mail.imap import PollReport, replay_quarantined
from crmkit.mail.mailboxes import poll_mailboxes_idle, poll_mailboxes_once
from crmkit.mail.settings import acknowledger, all_poll_settings, inbox_rules

__all__ = ["register"]

#: Exit code when the poll finished but some messages were quarantined.
NEEDS_ATTENTION = 3


@click.command()
@click.option("--once", "mode", flag_value="once", default=True, help="File what arrived, then stop (cron).")
@click.option(
    "--idle", "mode", flag_value="idle", help="Stay connected; file mail as it arrives (IMAP IDLE)."
)
@click.option("--quarantine", "list_quarantine", is_flag=True, help="List quarantined messages.")
@click.option("--replay", metavar="ID|all", help="File quarantined messages again; release those that file.")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems (for cron).")
@json_option
@pass_app
def poll(app: App, mode: str, list_quarantine: bool, replay: str | None, quiet: bool, as_json: bool) -> None:
    """Read the [imap] mailbox of crmkit.toml: log every message as an activity and open or update cases.

    A new conversation opens a case; a reply joins its case (by its headers, or
    by a [CASE-12] token in the subject from someone already on the case). Each
    message is filed once, however often the poller is stopped or killed. A
    message that cannot be filed is quarantined (its .eml kept beside the
    store) and the run goes on. Exit codes: 0 done, 3 done but messages were
    quarantined (a person should look), 1 failed (what was filed stays filed).

    \b
    Example:
        crmkit poll --quiet            # from cron, every few minutes
        crmkit poll --idle             # or stay connected
        crmkit poll --quarantine
        crmkit poll --replay all
    """
    if list_quarantine and replay:
        raise click.UsageError("--quarantine lists, --replay files again: give one of them")
    archive = MailArchive(app.store_path)
    if list_quarantine:
        _print_quarantine(archive, as_json)
        return
    if replay:
        report = replay_quarantined(
            app.store(must_exist=True), archive, replay, rules=inbox_rules(app.config)
        )
        _print_report(report, quiet=quiet, as_json=as_json)
    else:
        mailboxes = all_poll_settings(app.config)
        store = app.store(must_exist=True)
        with acknowledger(app.config, store) as on_filed:
            if mode == "idle":

                def show_round(report: PollReport) -> None:
                    _print_report(report, quiet=quiet, as_json=False, json_line=as_json)

                location = app.store_location
                results = poll_mailboxes_idle(
                    store, mailboxes, archive=archive, on_filed=on_filed, on_round=show_round,
                    open_store=lambda: app.open_store(location),
                )  # fmt: skip
            else:
                with _progress_bar(enabled=not (as_json or quiet)) as on_progress:
                    results = poll_mailboxes_once(
                        store, mailboxes, archive=archive, on_filed=on_filed, on_progress=on_progress
                    )
                if as_json and len(mailboxes) > 1:
                    emit_json([r.as_json() for r in results.reports])
                else:
                    for report in results.reports:
                        _print_report(report, quiet=quiet, as_json=as_json)
        for failure in results.failures:
            click.echo(f"Error: {failure}", err=True)
        if results.failures:
            sys.exit(1)
        if results.needs_attention:
            sys.exit(NEEDS_ATTENTION)
        return
    if report.needs_attention:
        sys.exit(NEEDS_ATTENTION)


#: A poll of fewer new messages than this finishes too soon for a progress bar to help.
PROGRESS_FROM = 200


@contextmanager
def _progress_bar(*, enabled: bool) -> Iterator[Callable[[int, int], None] | None]:
    """A progress bar on stderr for a long poll, only on a terminal (never under cron or --json)."""
    if not enabled or not sys.stderr.isatty():
        yield None
        return
    bar: Any = None
    shown = 0

    def advance(filed: int, total: int) -> None:
        nonlocal bar, shown
        if bar is None:
            if total < PROGRESS_FROM:
                return
            bar = click.progressbar(length=total, label="filing", file=sys.stderr).__enter__()
        bar.update(filed - shown)
        shown = filed

    try:
        yield advance
    finally:
        if bar is not None:
            bar.__exit__(None, None, None)


def _print_report(report: PollReport, *, quiet: bool, as_json: bool, json_line: bool = False) -> None:
    if as_json:
        emit_json(report.as_json())
        return
    if json_line:  # --idle --json: one object per round, one per line
        click.echo(json.dumps(report.as_json(), ensure_ascii=False))
        return
    if not quiet:
        click.echo(report.summary())
    for qid in report.quarantined:
        click.echo(f"quarantined: {qid} (crmkit poll --quarantine shows why)", err=True)


def _print_quarantine(archive: MailArchive, as_json: bool) -> None:
    items = archive.quarantined()
    if as_json:
        emit_json([item.as_json() for item in items])
        return
    if not items:
        click.echo("The quarantine is empty.")
        return
    print_table(
        [[item.id, item.reason, item.origin, item.at] for item in items],
        ["ID", "Reason", "Origin", "When"],
        max_width=60,
    )


def register(main: click.Group) -> None:
    main.add_command(poll)
