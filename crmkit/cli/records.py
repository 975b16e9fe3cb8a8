"""Record commands: ``crmkit contacts list|show|add|update|archive|restore`` and friends.

One group per record type, built from the schema, plus ``leads convert`` and
``contacts merge``. Values are given as ``field=value``; columns the schema
does not know become custom fields.
"""

from __future__ import annotations

from datetime import date
from typing import Any

import click

from crmkit.cli import App, pass_app
from crmkit.cli.output import (
    counted,
    emit_json,
    example,
    format_value,
    json_option,
    print_lines,
    print_record,
    print_stage_history,
    print_table,
)
from crmkit.contacts import account_view, contact_view, merge_contacts, restore_contact
from crmkit.leads import convert_lead
from crmkit.records.assignments import AssignmentSyntaxError, parse_assignments, parse_line_spec
from crmkit.records.output import record_output
from crmkit.records.query import parse_condition
from crmkit.records.rules import invoice_status_reason
from crmkit.records.schema import DEAL, INVOICE, QUOTE, RECORD_TYPES, RecordType

__all__ = ["print_account_view", "print_contact_view", "register"]

#: Each type's examples in its commands' help: values that work in a new store (tests run them), and
#: the record the add example makes, for show, update, archive and restore.
EXAMPLES: dict[str, dict[str, str]] = {
    "leads": {
        "add": 'name="Trần Văn Bình" company="Hanoi Fresh Foods" email=binh@hanoifresh.vn status=qualified',
        "update": "L-1 status=contacted rating=hot",
        "list": "--where status=qualified --where rating=hot",
    },
    "contacts": {
        "add": 'name="Nguyễn Thị Hoa" email=hoa@saomai.vn title=COO tags="vip, logistics"',
        "update": 'hoa@saomai.vn phone="+84 90 123 4567" owner=ana',
        "list": "--where tags=vip --json",
    },
    "accounts": {
        "add": 'name="Sao Mai Logistics" domain=saomai.vn tier=A region=South',
        "update": '"Sao Mai Logistics" tier=B owner=ana',
        "list": "--where tier=A --where region=South",
    },
    "deals": {
        "add": 'title="Cold-chain routing" amount=42000 close_date=2026-12-15 stage=proposal',
        "update": "D-1 stage=negotiation",
        "list": "--where stage=negotiation --where owner!=ana",
    },
    "quotes": {
        "add": '--line "Setup|1|1500|10" --line "Licences|12|99|10" valid_until=2026-12-31',
        "update": "Q-1 status=sent",
        "list": "--where status=sent",
    },
    "invoices": {
        "add": '--line "Setup|1|1500|10" --line "Licences|12|99|10" due_date=2027-01-15',
        "update": "I-1 amount_paid=1500",
        "list": "--where status=draft --json",
    },
    "cases": {
        "add": 'subject="Cannot log in" priority=high origin=email description="Reset link expired"',
        "update": "CASE-1 status=resolved",
        "list": "--where status=new --where priority=high",
    },
    "activities": {
        "add": 'kind=call subject="Intro call" date="2026-12-04 10:15" body="Wants a demo"',
        "update": 'ACT-1 body="Demo booked for Friday"',
        "list": "--where kind=call",
    },
}


def _assignments(rt: RecordType, items: tuple[str, ...], lines: tuple[str, ...]) -> dict[str, Any]:
    try:
        data = parse_assignments(rt, items)
        if lines:
            data["lines"] = [parse_line_spec(text) for text in lines]
    except AssignmentSyntaxError as exc:
        raise click.UsageError(str(exc)) from None
    return data


def _line_option(rt: RecordType) -> Any:
    if rt not in (INVOICE, QUOTE):
        return lambda f: f
    return click.option(
        "--line",
        "lines",
        multiple=True,
        metavar="DESC|QTY|PRICE[|TAX%]",
        help=f"{_a(rt.name).capitalize()} line, e.g. 'Consulting|10|150|10'. Repeat for more lines; "
        "replaces all lines.",
    )


def _force_option(rt: RecordType, text: str) -> Any:
    """``--force`` for the types whose email or phone must be their own (leads, contacts) only."""
    if not {"email", "phone"} & set(rt.unique_keys):
        return lambda f: f
    return click.option("--force", is_flag=True, help=text)


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _today() -> date:
    return date.today()


def _print_list(rt: RecordType, docs: list[dict[str, Any]], *, archived: bool = False) -> None:
    if not docs:
        click.echo(f"No {rt.table}.")
        return
    columns = rt.list_columns
    headers = [rt.by_name[c].label for c in columns]
    if archived:  # which of the rows are archived, and since when
        headers.append("Archived")
    rows = []
    for doc in docs:
        out = record_output(doc, today=_today())
        row = [format_value(rt, c, out.get(c)) for c in columns]
        if archived:
            row.append(str(doc.get("archived_at") or "")[:10])
        rows.append(row)
    print_table(rows, headers)


def _print_show(rt: RecordType, doc: dict[str, Any]) -> None:
    """One record for people: a deal's stage history and an invoice's lines as readable blocks."""
    if rt in (INVOICE, QUOTE):
        shown = {}
        if rt is INVOICE:
            shown["status"] = invoice_status_reason(INVOICE.load(doc), _today())
        print_record(rt, doc, skip=lambda name: name == "lines", shown=shown)
        print_lines(rt, doc)
    elif rt is DEAL:
        print_record(rt, doc, skip=lambda name: name == "stage_history")
        print_stage_history(doc.get("stage_history"))
    else:
        print_record(rt, doc)


def _record_group(rt: RecordType) -> click.Group:
    @click.group(
        name=rt.table,
        help=f"List, show, add and change {rt.table}."
        + example(f"crmkit {rt.table} add {EXAMPLES[rt.table]['add']}", f"crmkit {rt.table} list --json"),
    )
    def group() -> None:
        pass

    @group.command("list")
    @click.option(
        "--where", "-w", multiple=True, metavar="FIELD=VALUE", help="Filter: =, != or ~ (contains)."
    )
    @click.option("--archived", is_flag=True, help="Include archived records.")
    @click.option("--limit", type=click.IntRange(min=1), help="Show at most this many.")
    @json_option
    @pass_app
    def list_(app: App, where: tuple[str, ...], archived: bool, limit: int | None, as_json: bool) -> None:
        store = app.store(must_exist=True)
        conditions = [parse_condition(rt, w) for w in where]
        docs = store.find(rt.table, conditions, archived=archived, limit=limit)
        if as_json:
            emit_json([record_output(d, today=_today()) for d in docs])
        else:
            _print_list(rt, docs, archived=archived)

    examples = EXAMPLES[rt.table]
    list_.help = f"List {rt.table}, filtered with --where." + example(
        f"crmkit {rt.table} list {examples['list']}", f"crmkit {rt.table} list --archived --limit 20"
    )

    if rt.table not in ("contacts", "accounts"):

        @group.command("show")
        @click.argument("record_id")
        @json_option
        @pass_app
        def show(app: App, record_id: str, as_json: bool) -> None:
            store = app.store(must_exist=True)
            doc = record_output(store.lookup(rt.table, record_id), today=_today())
            if as_json:
                emit_json(doc)
            else:
                _print_show(rt, doc)

        show.help = f"Show one {rt.name} by id." + example(f"crmkit {rt.table} show {rt.prefix}-1")

    @group.command("add")
    @click.argument("values", nargs=-1, metavar="FIELD=VALUE...")
    @_force_option(rt, f"Add even if the email or phone is already on another {rt.name}.")
    @_line_option(rt)
    @json_option
    @pass_app
    def add(
        app: App, values: tuple[str, ...], as_json: bool, lines: tuple[str, ...] = (), force: bool = False
    ) -> None:
        doc = app.store().add(rt.table, _assignments(rt, values, lines), force=force)
        if as_json:
            emit_json(record_output(doc, today=_today()))
        else:
            click.echo(f"Added {doc['id']} {rt.title_of(doc)}")

    fields_help = ", ".join(f.name for f in rt.user_fields)
    add.help = f"Add {_a(rt.name)}. Fields: {fields_help}." + example(
        f"crmkit {rt.table} add {examples['add']}"
    )

    @group.command("update")
    @click.argument("record_id")
    @click.argument("values", nargs=-1, metavar="FIELD=VALUE...")
    @_force_option(rt, f"Allow an email or phone that another {rt.name} has.")
    @_line_option(rt)
    @json_option
    @pass_app
    def update(
        app: App,
        record_id: str,
        values: tuple[str, ...],
        as_json: bool,
        lines: tuple[str, ...] = (),
        force: bool = False,
    ) -> None:
        data = _assignments(rt, values, lines)
        if not data:
            raise click.UsageError("nothing to change: give FIELD=VALUE")
        doc = app.store(must_exist=True).update(record_id, data, type_name=rt.table, force=force)
        if as_json:
            emit_json(record_output(doc, today=_today()))
        else:
            click.echo(f"Updated {doc['id']} {rt.title_of(doc)}")

    update.help = f"Change fields of {_a(rt.name)}; FIELD= (empty) clears one." + example(
        f"crmkit {rt.table} update {examples['update']}"
    )

    @group.command("archive")
    @click.argument("record_id")
    @pass_app
    def archive(app: App, record_id: str) -> None:
        doc = app.store(must_exist=True).archive(record_id, type_name=rt.table)
        click.echo(f"Archived {doc['id']} {rt.title_of(doc)}")

    archive.help = (
        f"Hide {_a(rt.name)} from lists and syncs; nothing is deleted, `restore` brings it back."
        + example(f"crmkit {rt.table} archive {rt.prefix}-1")
    )

    if rt.table == "contacts":
        return group  # contacts have their own restore (a merged contact)

    @group.command("restore")
    @click.argument("record_id")
    @_force_option(rt, "Restore even if its email or phone is now on another record.")
    @pass_app
    def restore(app: App, record_id: str, force: bool = False) -> None:
        doc = app.store(must_exist=True).restore(record_id, type_name=rt.table, force=force)
        click.echo(f"Restored {doc['id']} {rt.title_of(doc)}")

    restore.help = f"Bring an archived {rt.name} back." + example(f"crmkit {rt.table} restore {rt.prefix}-1")

    return group


#: The text views show this many of the newest activities; --json has them all.
TIMELINE_SHOWN = 25


def _print_related(view: dict[str, Any], tables: tuple[str, ...], where: str) -> None:
    related = view["related"]
    for table in tables:
        docs = related[table]
        if table == "leads" and not docs:
            continue  # only a converted lead's contact has one
        rt = RECORD_TYPES[table]
        if table == "activities":
            if not docs:
                click.echo("\nTimeline: no activity yet")
                continue
            click.echo(f"\nTimeline ({counted(len(docs), 'activity', 'activities')}, newest first):")
            _print_list(rt, docs[:TIMELINE_SHOWN])
            if len(docs) > TIMELINE_SHOWN:
                older = len(docs) - TIMELINE_SHOWN
                click.echo(f"… and {older} older: crmkit activities list --where {where}")
            continue
        click.echo(f"\n{rt.sheet} ({len(docs)}):" if docs else f"\n{rt.sheet}: none")
        if docs:
            _print_list(rt, docs)


def print_contact_view(view: dict[str, Any]) -> None:
    print_record(RECORD_TYPES["contacts"], view, skip=lambda name: name == "related")
    account = view["related"]["account"]
    click.echo(f"\nAccount: {account['id']} {account['name']}" if account else "\nAccount: none")
    _print_related(view, ("deals", "invoices", "cases", "leads", "activities"), f"contact={view['id']}")


def print_account_view(view: dict[str, Any]) -> None:
    print_record(RECORD_TYPES["accounts"], view, skip=lambda name: name == "related")
    tables = ("contacts", "deals", "quotes", "invoices", "cases", "activities")
    _print_related(view, tables, f"account={view['id']}")


def _accounts_extras(group: click.Group) -> None:
    @group.command("show")
    @click.argument("id_or_name")
    @json_option
    @pass_app
    def show(app: App, id_or_name: str, as_json: bool) -> None:
        """The 360° view of an account: contacts, deals, quotes, invoices, cases and timeline.

        \b
        Example:
            crmkit accounts show A-1
            crmkit accounts show "Sao Mai Logistics" --json
        """
        view = account_view(app.store(must_exist=True), id_or_name, today=_today())
        if as_json:
            emit_json(view)
        else:
            print_account_view(view)


def _contacts_extras(group: click.Group) -> None:
    @group.command("show")
    @click.argument("id_or_email")
    @json_option
    @pass_app
    def show(app: App, id_or_email: str, as_json: bool) -> None:
        """The 360° view of a contact: account, deals, invoices, cases and timeline.

        \b
        Example:
            crmkit contacts show C-1
            crmkit contacts show hoa@saomai.vn --json
        """
        view = contact_view(app.store(must_exist=True), id_or_email, today=_today())
        if as_json:
            emit_json(view)
        else:
            print_contact_view(view)

    @group.command("merge")
    @click.argument("keep")
    @click.argument("other")
    @json_option
    @pass_app
    def merge(app: App, keep: str, other: str, as_json: bool) -> None:
        """Merge contact OTHER into KEEP, moving every deal, case, invoice and activity.

        OTHER is archived and points to KEEP; nothing is deleted.

        \b
        Example:
            crmkit contacts merge C-1 C-2
        """
        result = merge_contacts(app.store(must_exist=True), keep, other)
        if as_json:
            emit_json(result.as_json())
            return
        moved = ", ".join(counted(n, RECORD_TYPES[t].name, t) for t, n in result.moved.items())
        click.echo(
            f"Merged {result.merged['id']} into {result.kept['id']} ({moved or 'nothing linked'} moved)"
        )

    @group.command("restore")
    @click.argument("id_or_email")
    @click.option("--force", is_flag=True, help="Restore even if its email or phone is on another contact.")
    @click.option(
        "--unlink", is_flag=True, help="Restore a merged contact as one of its own (clears its merged into)."
    )
    @pass_app
    def restore(app: App, id_or_email: str, force: bool, unlink: bool) -> None:
        """Bring an archived contact back; one merged into another is refused unless --unlink.

        \b
        Example:
            crmkit contacts restore C-1
        """
        doc = restore_contact(app.store(must_exist=True), id_or_email, unlink=unlink, force=force)
        click.echo(f"Restored {doc['id']} {RECORD_TYPES['contacts'].title_of(doc)}")


def _leads_extras(group: click.Group) -> None:
    @group.command("convert")
    @click.argument("lead_id")
    @click.option("--deal/--no-deal", "create_deal", default=True, help="Also open a deal [default: yes].")
    @click.option("--title", help="The deal's title [default: the company].")
    @click.option("--amount", help="The deal's amount.")
    @click.option("--currency", help="The deal's currency [default: default_currency].")
    @click.option("--close-date", help="The deal's expected close date (YYYY-MM-DD).")
    @click.option("--force", is_flag=True, help="Convert a disqualified lead too.")
    @json_option
    @pass_app
    def convert(
        app: App,
        lead_id: str,
        create_deal: bool,
        title: str | None,
        amount: str | None,
        currency: str | None,
        close_date: str | None,
        force: bool,
        as_json: bool,
    ) -> None:
        """Turn a lead into a contact, an account (matched, not duplicated) and a deal.

        The account is matched by company name, then by email domain.

        \b
        Example:
            crmkit leads convert L-1 --amount 12000 --close-date 2026-12-31
        """
        deal_values = {"title": title, "amount": amount, "currency": currency, "close_date": close_date}
        result = convert_lead(
            app.store(must_exist=True), lead_id, create_deal=create_deal, deal_values=deal_values, force=force
        )
        if as_json:
            emit_json(result.as_json())
            return
        parts = [f"contact {result.contact['id']}"]
        if result.account:
            parts.append(f"account {result.account['id']} {result.account['name']}")
        if result.deal:
            parts.append(f"deal {result.deal['id']}")
        created = ", ".join(result.created) or "none"
        click.echo(f"Converted {result.lead['id']} into {', '.join(parts)} (new: {created})")


def register(main: click.Group, name: str | None = None) -> None:
    """Add the record commands to ``main``: all of them, or only ``name``'s group.

    The billing commands (quotes, invoices, deal quotes) bring templates and mail
    along, so they load only for the groups that have them.
    """
    for rt in RECORD_TYPES.values():
        if name is not None and rt.table != name:
            continue
        group = _record_group(rt)
        if rt.table == "contacts":
            _contacts_extras(group)
        elif rt.table == "accounts":
            _accounts_extras(group)
        elif rt.table == "leads":
            _leads_extras(group)
        elif rt.table == "cases":
            from crmkit.cli.cases import cases_extras

            cases_extras(group)
        elif rt.table == "activities":
            from crmkit.cli.eml import activities_extras

            activities_extras(group)
        elif rt.table in ("deals", "quotes", "invoices"):
            from crmkit.cli.invoices import deals_extras, invoices_extras, quotes_extras

            extras = {"deals": deals_extras, "quotes": quotes_extras, "invoices": invoices_extras}
            extras[rt.table](group)
        main.add_command(group)
