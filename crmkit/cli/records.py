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
from crmkit.cli.output import emit_json, format_value, json_option, print_record, print_table
from crmkit.contacts import contact_view, merge_contacts
from crmkit.leads import convert_lead
from crmkit.records.assignments import AssignmentSyntaxError, parse_assignments, parse_line_spec
from crmkit.records.output import record_output
from crmkit.records.query import parse_condition
from crmkit.records.schema import INVOICE, RECORD_TYPES, RecordType

__all__ = ["print_contact_view", "register"]


def _assignments(rt: RecordType, items: tuple[str, ...], lines: tuple[str, ...]) -> dict[str, Any]:
    try:
        data = parse_assignments(rt, items)
        if lines:
            data["lines"] = [parse_line_spec(text) for text in lines]
    except AssignmentSyntaxError as exc:
        raise click.UsageError(str(exc)) from None
    return data


def _line_option(rt: RecordType) -> Any:
    if rt is not INVOICE:
        return lambda f: f
    return click.option(
        "--line",
        "lines",
        multiple=True,
        metavar="DESC|QTY|PRICE[|TAX%]",
        help="An invoice line, e.g. 'Consulting|10|150|10'. Repeat for more lines; replaces all lines.",
    )


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def _today() -> date:
    return date.today()


def _print_list(rt: RecordType, docs: list[dict[str, Any]]) -> None:
    if not docs:
        click.echo(f"No {rt.table}.")
        return
    columns = rt.list_columns
    rows = []
    for doc in docs:
        out = record_output(doc, today=_today())
        rows.append([format_value(rt, c, out.get(c)) for c in columns])
    print_table(rows, [rt.by_name[c].label for c in columns])


def _record_group(rt: RecordType) -> click.Group:
    @click.group(name=rt.table, help=f"List, show, add and change {rt.table}.")
    def group() -> None:
        pass

    example_field = rt.title_field

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
            _print_list(rt, docs)

    list_.help = (
        f"List {rt.table}, filtered with --where.\n\n\b\nExample:\n"
        f"    crmkit {rt.table} list --where owner=ana --json"
    )

    if rt.table != "contacts":

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
                print_record(rt, doc)

        show.help = f"Show one {rt.name} by id.\n\n\b\nExample:\n    crmkit {rt.table} show {rt.prefix}-1"

    @group.command("add")
    @click.argument("values", nargs=-1, metavar="FIELD=VALUE...")
    @click.option(
        "--force", is_flag=True, help="Add even if the email or phone is already on another record."
    )
    @_line_option(rt)
    @json_option
    @pass_app
    def add(
        app: App, values: tuple[str, ...], force: bool, as_json: bool, lines: tuple[str, ...] = ()
    ) -> None:
        doc = app.store().add(rt.table, _assignments(rt, values, lines), force=force)
        if as_json:
            emit_json(record_output(doc, today=_today()))
        else:
            click.echo(f"Added {doc['id']} {rt.title_of(doc)}")

    fields_help = ", ".join(f.name for f in rt.user_fields)
    add.help = (
        f"Add {_a(rt.name)}. Fields: {fields_help}.\n\n\b\nExample:\n"
        f'    crmkit {rt.table} add {example_field}="…" owner=ana'
    )

    @group.command("update")
    @click.argument("record_id")
    @click.argument("values", nargs=-1, metavar="FIELD=VALUE...")
    @click.option("--force", is_flag=True, help="Allow an email or phone that another record has.")
    @_line_option(rt)
    @json_option
    @pass_app
    def update(
        app: App,
        record_id: str,
        values: tuple[str, ...],
        force: bool,
        as_json: bool,
        lines: tuple[str, ...] = (),
    ) -> None:
        data = _assignments(rt, values, lines)
        if not data:
            raise click.UsageError("nothing to change: give FIELD=VALUE")
        doc = app.store(must_exist=True).update(record_id, data, type_name=rt.table, force=force)
        if as_json:
            emit_json(record_output(doc, today=_today()))
        else:
            click.echo(f"Updated {doc['id']} {rt.title_of(doc)}")

    update.help = (
        f"Change fields of {_a(rt.name)}; FIELD= (empty) clears one.\n\n\b\nExample:\n"
        f"    crmkit {rt.table} update {rt.prefix}-1 owner=binh"
    )

    @group.command("archive")
    @click.argument("record_id")
    @pass_app
    def archive(app: App, record_id: str) -> None:
        """Hide a record from lists and syncs; nothing is deleted."""
        doc = app.store(must_exist=True).archive(record_id, type_name=rt.table)
        click.echo(f"Archived {doc['id']} {rt.title_of(doc)}")

    @group.command("restore")
    @click.argument("record_id")
    @click.option(
        "--force", is_flag=True, help="Restore even if its email or phone is now on another record."
    )
    @pass_app
    def restore(app: App, record_id: str, force: bool) -> None:
        """Bring an archived record back."""
        doc = app.store(must_exist=True).restore(record_id, type_name=rt.table, force=force)
        click.echo(f"Restored {doc['id']} {rt.title_of(doc)}")

    return group


def print_contact_view(view: dict[str, Any]) -> None:
    contact_type = RECORD_TYPES["contacts"]
    print_record(contact_type, view, skip=lambda name: name == "related")
    related = view["related"]
    if related["account"]:
        account = related["account"]
        click.echo(f"\nAccount: {account['id']} {account['name']}")
    for table in ("deals", "invoices", "cases", "leads", "activities"):
        docs = related[table]
        if not docs:
            continue
        rt = RECORD_TYPES[table]
        click.echo(f"\n{rt.sheet} ({len(docs)}):")
        _print_list(rt, docs)


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
            crmkit contacts show ana@example.com --json
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
            crmkit contacts merge C-1 C-7
        """
        result = merge_contacts(app.store(must_exist=True), keep, other)
        if as_json:
            emit_json(result.as_json())
            return
        moved = ", ".join(f"{n} {t}" for t, n in result.moved.items()) or "nothing linked"
        click.echo(f"Merged {result.merged['id']} into {result.kept['id']} ({moved} moved)")


#: Commands added to a record type's group by the invoice work (filled in by register).


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
            crmkit leads convert L-3 --amount 12000 --close-date 2026-12-31
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
        elif rt.table == "leads":
            _leads_extras(group)
        elif rt.table == "cases":
            from crmkit.cli.cases import cases_extras

            cases_extras(group)
        elif rt.table in ("deals", "quotes", "invoices"):
            from crmkit.cli.invoices import deals_extras, invoices_extras, quotes_extras

            extras = {"deals": deals_extras, "quotes": quotes_extras, "invoices": invoices_extras}
            extras[rt.table](group)
        main.add_command(group)
