"""``crmkit merge`` and ``crmkit campaigns``: mail-merge campaigns, dry run first."""

from __future__ import annotations

import contextlib
import sys
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import click

from crmkit.cli import App, pass_app
from crmkit.cli.output import counted, emit_json, json_option, print_table
from crmkit.config import resolve_password
from crmkit.errors import CrmkitError
from crmkit.mail.audience import AUDIENCES
from crmkit.mail.connection import tls_context
from crmkit.mail.journal import STATUSES, campaign_summaries, sends_of
from crmkit.mail.merge import (
    PLACEHOLDER_SENDER,
    MergeReport,
    Plan,
    dry_run,
    parse_rate,
    plan_campaign,
    send_campaign,
)
from crmkit.mail.smtp import SMTPSender
from crmkit.mail.template import MergeTemplate
from crmkit.store import Store

__all__ = ["register", "send_plan"]

#: Exit code when the run finished but some recipients failed or are uncertain.
NEEDS_ATTENTION = 3


@click.command()
@click.argument("template", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--name", help="The campaign's name; its journal is kept under it [default: the template's name]."
)
@click.option(
    "--to",
    "audience",
    type=click.Choice(AUDIENCES),
    default="contacts",
    show_default=True,
    help="Write to contacts, leads, or the contacts of deals.",
)
@click.option(
    "--where",
    multiple=True,
    metavar="FIELD=VALUE",
    help="Only records that match (repeatable): stage=won, account.tier=A, deal.stage=proposal.",
)
@click.option("--limit", type=click.IntRange(min=1), help="At most this many recipients.")
@click.option("--send", is_flag=True, help="Send. Without it, a dry run: nothing is sent.")
@click.option(
    "--preview",
    type=click.IntRange(min=0),
    default=3,
    show_default=True,
    help="Dry run: show this many messages in full.",
)
@click.option(
    "--out",
    type=click.Path(file_okay=False, path_type=Path),
    help="Dry run: also write every message to this folder, one .eml file each.",
)
@click.option("--rate", help="At most this fast, e.g. 30/min or 2/s [default: [merge] rate, else no limit].")
@click.option(
    "--per-day", type=click.IntRange(min=1), help="At most this many messages a day, all campaigns."
)
@click.option(
    "--attachments",
    type=click.Path(file_okay=False, path_type=Path),
    help="The folder attachments must lie in [default: [merge] attachments, else the template's].",
)
@click.option(
    "--resend-uncertain", is_flag=True, help="Send again to those a broken connection left uncertain."
)
@click.option("--retry-failed", is_flag=True, help="Try again those the server refused for good.")
@click.option("--quiet", "-q", is_flag=True, help="Print only problems.")
@json_option
@pass_app
def merge(
    app: App,
    template: Path,
    name: str | None,
    audience: str,
    where: tuple[str, ...],
    limit: int | None,
    send: bool,
    preview: int,
    out: Path | None,
    rate: str | None,
    per_day: int | None,
    attachments: Path | None,
    resend_uncertain: bool,
    retry_failed: bool,
    quiet: bool,
    as_json: bool,
) -> None:
    """Send each person in a segment their own message, rendered from TEMPLATE.

    The template is headers (Subject; To, From, Reply-To, Cc, Bcc, Attachment
    optional), a blank line, and a body, with {{ fields }} of each record and
    its account, deal and invoice (Jinja2, sandboxed). A field someone lacks
    is reported before anything is sent. Opted-out, bounced and invalid
    addresses are always skipped.

    Without --send it is a dry run: it shows the first messages and who would
    get one (--out DIR writes every message, one .eml each); no [smtp] is
    needed for it. With --send, every send is journaled under the campaign's name,
    so running it again (after a stop, a kill or a quota) sends only to those
    not sent yet. Exit codes: 0 done, 3 done but some recipients failed or are
    uncertain, 1 nothing could be sent (a template problem, no server).

    \b
    Example:
        crmkit merge offer.txt --where tags=newsletter
        crmkit merge offer.txt --where tags=newsletter --send --rate 30/min
        crmkit merge reminder.txt --to deals --where stage=proposal --send
    """
    if send and out is not None:
        raise click.UsageError("--out writes a dry run's messages; leave it out with --send")
    config = app.config
    store = app.store(must_exist=True)
    loaded = MergeTemplate.load(template)
    smtp = config.smtp
    plan = plan_campaign(
        store,
        loaded,
        name=name or template.stem,
        to=audience,
        where=where,
        limit=limit,
        from_address=smtp.from_address if smtp else None,
        attachments_folder=attachments or config.merge.attachments,
        unsubscribe_address=config.merge.unsubscribe_address,
        unsubscribe_url=config.merge.unsubscribe_url,
        dry_run=not send,
    )
    if not send:
        report, previews = dry_run(store, plan, preview=preview, out=out)
        _print_dry_run(report, previews, as_json=as_json, quiet=quiet, out=out, plan=plan)
        return
    send_plan(
        app,
        store,
        plan,
        rate=rate,
        per_day=per_day,
        resend_uncertain=resend_uncertain,
        retry_failed=retry_failed,
        quiet=quiet,
        as_json=as_json,
    )


def send_plan(
    app: App, store: Store, plan: Plan, *, rate: str | None, quiet: bool, as_json: bool, **options: Any
) -> None:
    """Send a planned campaign over [smtp] (a progress bar in a terminal), print its report, and exit
    1 when the server went away, 3 when some recipients failed or are uncertain."""
    config = app.config
    smtp = config.smtp
    if smtp is None:
        raise CrmkitError(
            'sending needs an [smtp] table in crmkit.toml: host = "smtp.example.com", '
            'from = "Sales <sales@example.com>" (the password: CRMKIT_SMTP_PASSWORD or password_command)'
        )
    password = resolve_password(smtp) if smtp.user else None
    speed = rate or config.merge.rate
    show_bar = not (quiet or as_json) and sys.stderr.isatty()
    bar: Any = (
        click.progressbar(length=len(plan.messages), label="sending", file=sys.stderr)
        if show_bar
        else contextlib.nullcontext()
    )
    options.setdefault("per_day", None)
    options["per_day"] = options["per_day"] or config.merge.per_day
    with SMTPSender(smtp, password, ssl_context=tls_context(smtp)) as sender, bar:
        report = send_campaign(
            store,
            plan,
            sender,
            rate=parse_rate(speed) if speed else None,
            on_progress=bar.update if show_bar else None,
            **options,
        )
    _print_report(report, as_json=as_json, quiet=quiet)
    if report.error:
        sys.exit(1)
    if report.needs_attention:
        sys.exit(NEEDS_ATTENTION)


def _skipped(report: MergeReport) -> str:
    if not report.skipped:
        return ""
    reasons = ", ".join(f"{reason} {count}" for reason, count in sorted(report.skipped.items()))
    return f"; skipped {sum(report.skipped.values())} ({reasons})"


def _readable(data: bytes) -> str:
    """A message as a person reads it: decoded headers, the text part, attachment names."""
    msg = message_from_bytes(data, policy=policy.default)
    lines = [f"{key}: {msg[key]}" for key in ("From", "To", "Cc", "Reply-To", "Subject") if msg[key]]
    files = [part.get_filename() for part in msg.iter_attachments()]  # type: ignore[attr-defined]
    if files:
        lines.append("Attachments: " + ", ".join(str(f) for f in files))
    body = msg.get_body(("plain",))  # type: ignore[attr-defined]
    text = body.get_content() if body is not None else ""
    return "\n".join(lines) + "\n\n" + text.rstrip() + "\n"


def _print_dry_run(
    report: MergeReport,
    previews: list[tuple[str, bytes]],
    *,
    as_json: bool,
    quiet: bool,
    out: Path | None,
    plan: Plan | None = None,
) -> None:
    if plan is not None and plan.placeholder_sender:  # on stderr: --json output stays JSON
        click.echo(
            f"no sender set: these messages are from {PLACEHOLDER_SENDER}; before --send, set "
            '[smtp] from = "Name <you@example.com>" in crmkit.toml or give the template a From: header',
            err=True,
        )
    if as_json:
        data: dict[str, Any] = report.as_json()
        data["preview"] = [{"record": record_id, "message": _readable(raw)} for record_id, raw in previews]
        emit_json(data)
        return
    if not quiet:
        for number, (record_id, raw) in enumerate(previews, start=1):
            click.echo(f"--- {number}/{len(previews)}: {record_id} " + "-" * 40)
            click.echo(_readable(raw))
    to_send = report.recipients  # those already sent are counted apart
    already = f"; {report.already_sent} already sent" if report.already_sent else ""
    click.echo(
        f"dry run of campaign {report.campaign!r}: "
        f"{counted(to_send, 'message')} to send{already}{_skipped(report)}."
    )
    if out is not None:
        click.echo(f"{counted(to_send, 'message')} written to {out}, one .eml each")
    click.echo("Nothing was sent; add --send to send.")


def _print_report(report: MergeReport, *, as_json: bool, quiet: bool) -> None:
    if as_json:
        emit_json(report.as_json())
        return
    for item in report.failed:
        if not item.get("earlier"):
            click.echo(f"failed: {item['record']} <{item['address']}>: {item['answer']}", err=True)
    for item in report.uncertain:
        if not item.get("earlier"):
            click.echo(
                f"uncertain: {item['record']} <{item['address']}>: {item['answer']} "
                "(perhaps delivered; --resend-uncertain sends again)",
                err=True,
            )
    failed_before = sum(1 for item in report.failed if item.get("earlier"))
    uncertain_before = sum(1 for item in report.uncertain if item.get("earlier"))
    if failed_before or uncertain_before:
        click.echo(
            f"left from earlier runs: {failed_before} failed (--retry-failed tries again), "
            f"{uncertain_before} uncertain (--resend-uncertain); "
            f"crmkit campaigns show {report.campaign!r} --status failed lists them",
            err=True,
        )
    if report.stopped:
        again = "; run again to go on" if report.error else ""
        click.echo(f"stopped: {report.stopped} ({report.remaining} left{again})", err=True)
    if not quiet:
        already = f", {report.already_sent} sent before" if report.already_sent else ""
        click.echo(
            f"campaign {report.campaign!r}: sent {report.sent}{already}, failed {len(report.failed)}, "
            f"uncertain {len(report.uncertain)}{_skipped(report)}"
        )


@click.group()
def campaigns() -> None:
    """Mail-merge campaigns and their journals.

    \b
    Example:
        crmkit campaigns list
        crmkit campaigns show offer-2026-12 --status failed
    """


@campaigns.command("list")
@json_option
@pass_app
def list_campaigns(app: App, as_json: bool) -> None:
    """Every campaign, with how many recipients are sent, failed, uncertain or still queued.

    \b
    Example:
        crmkit campaigns list
        crmkit campaigns list --json
    """
    summaries = campaign_summaries(app.store(must_exist=True))
    if as_json:
        emit_json(summaries)
        return
    print_table(
        [
            [s["name"], str(s.get("created_at", "")), *(str(s["counts"].get(k, 0)) for k in STATUSES)]
            for s in summaries
        ],
        ["Campaign", "Created", *(k.capitalize() for k in STATUSES)],
    )


@campaigns.command("show")
@click.argument("name")
@click.option("--status", type=click.Choice(STATUSES), help="Only recipients with this status.")
@json_option
@pass_app
def show_campaign(app: App, name: str, status: str | None, as_json: bool) -> None:
    """The journal of campaign NAME: each recipient's status, Message-ID and the server's answer.

    \b
    Example:
        crmkit campaigns show offer-2026-12
        crmkit campaigns show offer-2026-12 --status uncertain --json
    """
    store = app.store(must_exist=True)
    if not any(s["name"] == name for s in campaign_summaries(store)):
        raise CrmkitError(f"no campaign {name!r} (crmkit campaigns list shows them)")
    entries = [
        {k: v for k, v in doc.items() if k not in ("key", "campaign")}
        for doc in sends_of(store, name)
        if status is None or doc.get("status") == status
    ]
    if as_json:
        emit_json(entries)
        return
    print_table(
        [
            [
                e["record"],
                str(e.get("address", "")),
                str(e.get("status")),
                str(e.get("message_id", "")),
                str(e.get("answer", "")),
            ]
            for e in entries
        ],
        ["Record", "Address", "Status", "Message-ID", "Answer"],
        max_width=50,
    )


def register(main: click.Group) -> None:
    main.add_command(merge)
    main.add_command(campaigns)
