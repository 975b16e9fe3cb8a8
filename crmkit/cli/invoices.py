"""Invoice work on the command line: ``deals quote``, ``quotes invoice``, ``invoices run-recurring``,
``invoices overdue`` (with ``--remind``) and ``invoices render``."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

import click

from crmkit.cli import App, pass_app
from crmkit.cli.invoice_render import add_render_command
from crmkit.cli.merge import _print_dry_run, send_plan
from crmkit.cli.output import emit_json, json_option, print_table
from crmkit.invoices.billing import (
    REMINDER_CAMPAIGN,
    invoice_from_quote,
    overdue_invoices,
    quote_from_deal,
    reminder_audience,
    run_recurring,
)
from crmkit.mail.merge import dry_run, plan_campaign
from crmkit.mail.template import MergeTemplate
from crmkit.records.money import format_money
from crmkit.records.output import record_output

__all__ = ["deals_extras", "invoices_extras", "quotes_extras"]


def _money(doc: dict[str, Any]) -> str:
    return format_money(Decimal(str(doc.get("total") or 0)), doc.get("currency"))


def _line(text: str) -> dict[str, Any]:
    parts = [p.strip() for p in text.split("|")]
    if not 3 <= len(parts) <= 4 or not parts[0]:
        raise click.BadParameter(
            f"{text!r}: write description|quantity|unit price[|tax %]", param_hint="--line"
        )
    return {
        "description": parts[0],
        "quantity": parts[1],
        "unit_price": parts[2],
        "tax_rate": parts[3] if len(parts) == 4 else "0",
    }


def deals_extras(group: click.Group) -> None:
    @group.command("quote")
    @click.argument("deal_id")
    @click.option(
        "--line",
        "lines",
        multiple=True,
        metavar="DESC|QTY|PRICE[|TAX%]",
        help="A line of the quote (repeatable) [default: the deal's title at its amount].",
    )
    @click.option("--valid-until", type=click.DateTime(["%Y-%m-%d"]), help="[default: 30 days from today]")
    @json_option
    @pass_app
    def quote(app: App, deal_id: str, lines: tuple[str, ...], valid_until: Any, as_json: bool) -> None:
        """Make a draft quote for a deal, for its account and contact, in its currency.

        \b
        Example:
            crmkit deals quote D-1
            crmkit deals quote D-1 --line "Setup|1|1500" --line "Licence|12|99|20"
        """
        made = quote_from_deal(
            app.store(must_exist=True),
            deal_id,
            lines=[_line(t) for t in lines],
            valid_until=valid_until.date() if valid_until else None,
        )
        if as_json:
            emit_json(record_output(made))
            return
        click.echo(f"Quote {made['id']} {made['number']}: {_money(made)}, valid until {made['valid_until']}")


def quotes_extras(group: click.Group) -> None:
    @group.command("invoice")
    @click.argument("quote_id")
    @json_option
    @pass_app
    def invoice(app: App, quote_id: str, as_json: bool) -> None:
        """Turn a quote into an invoice with its lines (once: asking again shows that invoice).

        QUOTE_ID is its id or its number (QUO-2026-0001).

        \b
        Example:
            crmkit quotes invoice Q-1
        """
        made, new = invoice_from_quote(app.store(must_exist=True), quote_id)
        if as_json:
            emit_json({"invoice": record_output(made), "created": new})
            return
        verb = "Made invoice" if new else "Already invoiced as"
        click.echo(f"{verb} {made['id']} {made['number']}: {_money(made)}")


def invoices_extras(group: click.Group) -> None:
    @group.command("run-recurring")
    @click.option("--date", "today", type=click.DateTime(["%Y-%m-%d"]), help="As if today were this day.")
    @json_option
    @pass_app
    def recurring(app: App, today: Any, as_json: bool) -> None:
        """Issue the recurring invoices that are due, each period exactly once (cron: daily).

        An invoice with "Repeats" (schedule) monthly, quarterly or yearly gets a
        copy for each later period, dated like it. Safe to run twice the same day,
        or from two machines at once.

        \b
        Example:
            crmkit invoices run-recurring
            crmkit invoices run-recurring --date 2027-06-30 --json
        """
        run = run_recurring(app.store(must_exist=True), today=today.date() if today else None)
        if as_json:
            emit_json(run.as_json())
            return
        for item in run.issued:
            click.echo(f"issued {item.invoice} {item.number} for {item.period} (repeats {item.source})")
        for note in run.notes:
            click.echo(note, err=True)
        click.echo(f"{len(run.issued)} issued, {run.already} issued before")

    @group.command("overdue")
    @click.option("--no-mark", is_flag=True, help="Only list; do not set their status to overdue.")
    @click.option(
        "--remind",
        "template",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Mail each overdue invoice's contact this mail-merge template ({{ invoice.number }} ...).",
    )
    @click.option(
        "--every",
        type=click.IntRange(min=1),
        default=7,
        show_default=True,
        help="At most one reminder per invoice per this many days.",
    )
    @click.option("--send", is_flag=True, help="With --remind: send (without it, a dry run).")
    @click.option("--rate", help="With --remind: at most this fast, e.g. 30/min.")
    @click.option("--quiet", "-q", is_flag=True, help="Print only problems.")
    @json_option
    @pass_app
    def overdue(
        app: App,
        no_mark: bool,
        template: Path | None,
        every: int,
        send: bool,
        rate: str | None,
        quiet: bool,
        as_json: bool,
    ) -> None:
        """List unpaid invoices past their due date and mark them overdue; --remind mails their contacts.

        Reminders go through the mail-merge machinery (a dry run unless --send;
        the campaign "overdue reminders" journals them), so each invoice gets at
        most one reminder per --every days, counted from its last one, however
        often this runs.

        \b
        Example:
            crmkit invoices overdue --no-mark
            crmkit invoices overdue --remind reminder.txt     # a dry run; --send mails (cron: daily)
        """
        store = app.store(must_exist=True)
        found = overdue_invoices(store, mark=not no_mark)
        if template is None:
            if as_json:
                emit_json(
                    [
                        {**record_output(d), "balance": d["balance"], "days_overdue": d["days_overdue"]}
                        for d in found
                    ]
                )
                return
            print_table(
                [
                    [
                        d["id"],
                        d.get("number", ""),
                        str(d.get("due_date", "")),
                        str(d["days_overdue"]),
                        format_money(Decimal(d["balance"]), d.get("currency")),
                        str(d.get("contact") or d.get("account") or ""),
                    ]
                    for d in found
                ],
                ["Invoice", "Number", "Due", "Days late", "Balance", "Bill to"],
            )
            return
        config = app.config
        smtp = config.smtp
        plan = plan_campaign(
            store,
            MergeTemplate.load(template),
            name=REMINDER_CAMPAIGN,
            from_address=smtp.from_address if smtp else None,
            audience=reminder_audience(store, found, today=store.clock().date(), every_days=every),
            one_template=False,  # a final notice may follow a friendly reminder in the same journal
            attachments_folder=config.merge.attachments,
            unsubscribe_address=config.merge.unsubscribe_address,
            unsubscribe_url=config.merge.unsubscribe_url,
        )
        if not send:
            report, previews = dry_run(store, plan)
            _print_dry_run(report, previews, as_json=as_json, quiet=quiet, out=None)
            return
        send_plan(app, store, plan, rate=rate, quiet=quiet, as_json=as_json)

    add_render_command(group)  # the printable invoice
