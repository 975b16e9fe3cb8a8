"""Quotes, invoices from quotes, invoice numbers, recurring invoices, and overdue ones with reminders."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from crmkit.cli import main
from crmkit.config import parse_config
from crmkit.errors import CrmkitError, DuplicateError
from crmkit.invoices.billing import (
    REMINDER_CAMPAIGN,
    invoice_from_quote,
    overdue_invoices,
    period_key,
    quote_from_deal,
    reminder_audience,
    run_recurring,
)
from crmkit.mail.connection import tls_context
from crmkit.mail.merge import MergeReport, plan_campaign, send_campaign
from crmkit.mail.smtp import SMTPSender
from crmkit.mail.template import MergeTemplate
from crmkit.store import Store
from crmkit.testing.mailservers import SMTPServer


class Clock:
    def __init__(self, when: datetime) -> None:
        self.now = when

    def __call__(self) -> datetime:
        return self.now


def lines(*amounts: str) -> list[dict[str, Any]]:
    return [{"description": f"Item {i}", "quantity": "1", "unit_price": a, "tax_rate": "10"} for i, a in enumerate(amounts)]


@pytest.fixture
def store(tmp_path: Path) -> Store:
    store = Store(tmp_path / "crm.json", clock=Clock(datetime(2026, 4, 15, 9, 0, tzinfo=UTC)))
    store.add("accounts", {"name": "Sao Mai", "tier": "A"})
    store.add("contacts", {"name": "Nguyễn Thị Hoa", "email": "hoa@saomai.example", "account": "A-1"})
    store.add("deals", {"title": "Fleet tracking", "amount": "12500000", "currency": "VND", "stage": "proposal",
                        "account": "A-1", "contact": "C-1", "owner": "linh"})  # fmt: skip
    return store


def cli(store: Store, *args: str, config: Path | None = None) -> Any:
    env = {"CRMKIT_CONFIG": str(config) if config else "", "CRMKIT_STORE": ""}
    return CliRunner().invoke(main, ["--store", store.location, *args], env=env, catch_exceptions=False)


# -- quotes and invoices from them -------------------------------------------------------------------


def test_a_deal_makes_a_quote_and_the_quote_becomes_one_invoice_with_its_lines(store: Store) -> None:
    quote = quote_from_deal(store, "D-1")
    assert (quote["number"], quote["status"], quote["currency"], quote["account"]) == (
        "QUO-2026-0001", "draft", "VND", "A-1")  # fmt: skip
    assert quote["total"] == "12500000" and quote["valid_until"] == "2026-05-15"
    invoice, made = invoice_from_quote(store, quote["number"])
    assert made and invoice["number"] == "INV-2026-0001" and invoice["quote"] == quote["id"]
    assert (invoice["deal"], invoice["contact"], invoice["owner"]) == ("D-1", "C-1", "linh")
    assert invoice["lines"] == quote["lines"] and invoice["total"] == "12500000"
    again, made_again = invoice_from_quote(store, quote["id"])  # asking twice makes nothing new
    assert not made_again and again["id"] == invoice["id"] and store.count("invoices") == 1
    assert store.get(quote["id"])["status"] == "invoiced" and store.get(quote["id"])["invoice"] == invoice["id"]


def test_quotes_from_the_command_line_with_lines_and_refusals(store: Store) -> None:
    made = json.loads(cli(store, "deals", "quote", "D-1", "--line", "Setup|1|1500000", "--line",
                          "Licence|12|990000|10", "--json").output)  # fmt: skip
    # 1,500,000 + 12 x 990,000 = 13,380,000; tax 10% of 11,880,000 = 1,188,000
    assert (made["subtotal"], made["tax"], made["total"]) == ("13380000", "1188000", "14568000")
    result = cli(store, "quotes", "invoice", made["id"])
    assert result.exit_code == 0 and "Made invoice I-1 INV-2026-0001" in result.output
    assert "Already invoiced as I-1" in cli(store, "quotes", "invoice", made["id"]).output
    declined = quote_from_deal(store, "D-1")
    store.update(declined["id"], {"status": "declined"})
    with pytest.raises(CrmkitError, match="declined"):
        invoice_from_quote(store, declined["id"])
    bad = cli(store, "deals", "quote", "D-1", "--line", "no price")
    assert bad.exit_code == 2 and "description|quantity|unit price" in bad.output


# -- numbers ------------------------------------------------------------------------------------------


def test_number_patterns_come_from_the_config_and_a_failed_add_skips_no_number(store: Store, tmp_path: Path) -> None:
    config = tmp_path / "crmkit.toml"
    config.write_text('[invoices]\nnumber_pattern = "F{year}{month}-{seq:03}"\nquote_pattern = "Q{seq}"\n')
    added = cli(store, "invoices", "add", "account=A-1", "issue_date=2026-04-02", config=config)
    assert added.exit_code == 0, added.output
    refused = cli(store, "invoices", "add", "account=A-1", "amount_paid=lots", config=config)
    assert refused.exit_code == 1
    cli(store, "invoices", "add", "account=A-1", "issue_date=2026-04-20", config=config)
    cli(store, "invoices", "add", "account=A-1", "issue_date=2026-05-01", config=config)  # a new month
    assert [i["number"] for i in Store(store.location).all("invoices")] == ["F202604-001", "F202604-002", "F202605-001"]
    assert json.loads(cli(store, "deals", "quote", "D-1", "--json", config=config).output)["number"] == "Q1"
    config.write_text('[invoices]\nnumber_pattern = "INV-{year}"\n')
    assert "needs {seq}" in cli(store, "invoices", "list", config=config).output


ADD_MANY = """
import sys
from crmkit.store import Store
store = Store(sys.argv[1], lock_timeout=60)
for _ in range(int(sys.argv[2])):
    store.add("invoices", {"account": "A-1", "issue_date": "2026-04-15"})
"""


def test_two_processes_adding_invoices_at_once_never_take_the_same_number(store: Store) -> None:
    processes = [
        subprocess.Popen([sys.executable, "-c", ADD_MANY, store.location, "25"], stderr=subprocess.PIPE)
        for _ in range(2)
    ]
    for process in processes:
        _, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
    numbers = sorted(i["number"] for i in Store(store.location).all("invoices"))
    assert numbers == [f"INV-2026-{n:04d}" for n in range(1, 51)]  # none shared, none skipped


# -- recurring invoices ----------------------------------------------------------------------------------


def test_recurring_invoices_issue_each_period_once_however_often_they_run(store: Store) -> None:
    store.add("invoices", {"account": "A-1", "contact": "C-1", "issue_date": "2026-01-31", "due_date": "2026-02-14",
                           "lines": lines("100"), "currency": "EUR", "status": "sent", "schedule": "monthly"})  # fmt: skip
    store.add("invoices", {"account": "A-1", "issue_date": "2025-11-15", "lines": lines("900"), "currency": "EUR",
                           "status": "sent", "schedule": "quarterly"})  # fmt: skip
    store.add("invoices", {"account": "A-1", "issue_date": "2026-01-10", "lines": lines("5"), "schedule": "monthly",
                           "status": "draft"})  # a draft does not repeat  # fmt: skip
    run = run_recurring(store, today=date(2026, 4, 15))
    issued = [(i.source, i.period) for i in run.issued]
    # monthly from Jan 31: Feb 28, Mar 31 (Apr 30 is not due yet); quarterly from Nov 15: Feb 15
    assert issued == [("I-1", "2026-02"), ("I-1", "2026-03"), ("I-2", "2026-Q1")]
    feb = store.get(run.issued[0].invoice)
    assert (feb["issue_date"], feb["due_date"], feb["total"], feb["status"]) == ("2026-02-28", "2026-03-14", "110.00", "overdue")
    assert feb["lines"] == store.get("I-1")["lines"] and feb["recurring_of"] == "I-1"
    again = run_recurring(store, today=date(2026, 4, 15))  # the same day: nothing twice
    assert again.issued == [] and again.already == 3
    store.update(run.issued[1].invoice, {"status": "void"})  # a voided copy still counts as issued
    later = run_recurring(store, today=date(2026, 5, 20))
    assert [(i.source, i.period) for i in later.issued] == [("I-1", "2026-04"), ("I-2", "2026-Q2")]
    assert period_key(date(2026, 11, 3), "yearly") == "2026"


RUN_RECURRING = """
import sys
from datetime import date
from crmkit.invoices.billing import run_recurring
from crmkit.store import Store
print(len(run_recurring(Store(sys.argv[1], lock_timeout=60), today=date(2026, 12, 31)).issued))
"""


def test_two_recurring_runs_at_once_issue_nothing_twice(store: Store) -> None:
    for day in range(1, 13):
        store.add("invoices", {"account": "A-1", "issue_date": f"2026-01-{day:02d}", "lines": lines("10"),
                               "status": "sent", "schedule": "monthly"})  # fmt: skip
    processes = [
        subprocess.Popen([sys.executable, "-c", RUN_RECURRING, store.location], stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    issued = [int(p.communicate(timeout=120)[0]) for p in processes]
    assert sorted(issued) == [0, 12 * 11]  # one run did it all, the other found it done
    copies = Counter((i["recurring_of"], i["period"]) for i in Store(store.location).all("invoices") if i.get("recurring_of"))
    assert len(copies) == 12 * 11 and set(copies.values()) == {1}


# -- overdue invoices and reminders ---------------------------------------------------------------------


def test_overdue_invoices_are_listed_and_marked(store: Store) -> None:
    store.add("invoices", {"contact": "C-1", "issue_date": "2026-03-01", "due_date": "2026-03-31",
                           "lines": lines("1000"), "amount_paid": "100", "currency": "USD", "status": "sent"})  # fmt: skip
    store.add("invoices", {"contact": "C-1", "issue_date": "2026-03-01", "due_date": "2026-03-31",
                           "lines": lines("50"), "amount_paid": "55", "currency": "USD", "status": "sent"})  # paid  # fmt: skip
    store.add("invoices", {"contact": "C-1", "issue_date": "2026-04-10", "due_date": "2026-05-10",
                           "lines": lines("70"), "currency": "USD", "status": "sent"})  # not due yet  # fmt: skip
    # the first is partly paid in the store: only a run after its due date makes it overdue
    assert store.get("I-1")["status"] == "overdue"  # the store's clock is already past it
    found = overdue_invoices(store)
    assert [(d["id"], d["balance"], d["days_overdue"]) for d in found] == [("I-1", "1000.00", 15)]
    table = cli(store, "invoices", "overdue")
    assert "INV-2026-0001" in table.output and "1,000.00 USD" in table.output


def test_reminders_go_once_per_invoice_per_interval(store: Store, tmp_path: Path) -> None:
    for amount in ("300", "400"):
        store.add("invoices", {"contact": "C-1", "issue_date": "2026-03-01", "due_date": "2026-03-31",
                               "lines": lines(amount), "currency": "USD", "status": "sent"})  # fmt: skip
    template = tmp_path / "reminder.txt"
    template.write_text("Subject: Invoice {{ invoice.number }} is overdue\n\n"
                        "Dear {{ first_name }}, {{ invoice.total | money(invoice.currency) }} was due on "
                        "{{ invoice.due_date | date('%d/%m/%Y') }}.\n")  # fmt: skip
    with SMTPServer() as smtp:
        config = tmp_path / "crmkit.toml"
        config.write_text(f'[smtp]\nhost = "{smtp.host}"\nport = {smtp.port}\nsecurity = "plain"\n'
                          'from = "Billing <billing@example.com>"\n')  # fmt: skip
        dry = cli(store, "invoices", "overdue", "--remind", str(template), config=config)
        assert dry.exit_code == 0 and "2 messages to send" in dry.output and smtp.messages == []
        sent = json.loads(cli(store, "invoices", "overdue", "--remind", str(template), "--send", "--json",
                              config=config).output)  # fmt: skip
        assert sent["sent"] == 2
        got = sorted(str(m.message["Subject"]) for m in smtp.wait_for(2))
        assert got == ["Invoice INV-2026-0001 is overdue", "Invoice INV-2026-0002 is overdue"]
        body = smtp.messages[0].message.get_body(("plain",)).get_content()
        assert "was due on 31/03/2026" in body and "Dear Nguyễn" in body
        again = json.loads(cli(store, "invoices", "overdue", "--remind", str(template), "--send", "--json",
                               config=config).output)  # fmt: skip
        assert (again["sent"], again["already_sent"]) == (0, 2) and len(smtp.messages) == 2


def remind(store: Store, template: Path, smtp: SMTPServer, every: int = 7) -> MergeReport:
    """What `crmkit invoices overdue --remind TEMPLATE --send --every N` does, as the store's clock says."""
    server = parse_config(Path("crmkit.toml"), {"smtp": {"host": smtp.host, "port": smtp.port, "security": "plain",
                                                         "from": "billing@example.com"}}).smtp  # fmt: skip
    assert server is not None
    audience = reminder_audience(store, overdue_invoices(store), today=store.clock().date(), every_days=every)
    plan = plan_campaign(store, MergeTemplate.load(template), name=REMINDER_CAMPAIGN, audience=audience,
                         from_address="billing@example.com", one_template=False)  # fmt: skip
    with SMTPSender(server, None, ssl_context=tls_context(server)) as sender:
        return send_campaign(store, plan, sender)


def test_a_reminder_waits_its_interval_from_the_last_one_whatever_the_calendar(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 4, 4, 9, 0, tzinfo=UTC))
    store = Store(tmp_path / "crm.json", clock=clock)
    store.add("contacts", {"name": "Hoa", "email": "hoa@example.com"})
    store.add("invoices", {"contact": "C-1", "issue_date": "2026-03-01", "due_date": "2026-03-31",
                           "lines": lines("300"), "status": "sent"})  # fmt: skip
    template = tmp_path / "r.txt"
    template.write_text("Subject: Invoice {{ invoice.number }} is overdue\n\nPlease pay.\n")
    with SMTPServer() as smtp:
        sent = []
        for day in range(4, 20):  # cron, daily
            clock.now = datetime(2026, 4, day, 9, 0, tzinfo=UTC)
            if remind(store, template, smtp).sent:
                sent.append(day)
        assert sent == [4, 11, 18]  # every 7 days from the first, not by calendar weeks
        assert len(smtp.messages) == 3


# -- found in review: each of these failed before its fix ---------------------------------------------


def test_an_archived_invoice_keeps_its_number_for_good(store: Store) -> None:
    first = store.add("invoices", {"lines": lines("10"), "issue_date": "2026-04-01"})
    store.archive(first["id"])
    second = Store(store.location).add("invoices", {"lines": lines("10"), "issue_date": "2026-04-02"})
    assert (first["number"], second["number"]) == ("INV-2026-0001", "INV-2026-0002")
    Store(store.location).restore(first["id"])  # no number clash to refuse it
    with pytest.raises(DuplicateError):
        store.add("invoices", {"number": "INV-2026-0001", "lines": lines("1")})
    store.archive(first["id"])
    with pytest.raises(DuplicateError):  # an archived record's number is still taken
        Store(store.location).add("invoices", {"number": "INV-2026-0001", "lines": lines("1")})


def test_a_refused_add_inside_a_transaction_takes_no_number(store: Store) -> None:
    store.add("invoices", {"lines": lines("1"), "issue_date": "2026-04-01"})
    with store.transaction():
        with pytest.raises(DuplicateError):
            store.add("invoices", {"id": "I-1", "lines": lines("1"), "issue_date": "2026-04-01"}, allow_system=True)
        second = store.add("invoices", {"lines": lines("1"), "issue_date": "2026-04-01"})
    assert second["number"] == "INV-2026-0002"


def test_changing_a_schedule_never_bills_a_period_twice(store: Store) -> None:
    store.add("invoices", {"issue_date": "2026-01-15", "lines": lines("100"), "status": "sent", "schedule": "monthly"})
    run = run_recurring(store, today=date(2026, 4, 20))
    assert [i.period for i in run.issued] == ["2026-02", "2026-03", "2026-04"]
    store.update("I-1", {"schedule": "quarterly"})
    assert run_recurring(store, today=date(2026, 4, 20)).issued == []  # Q2 has its April copy
    later = run_recurring(store, today=date(2026, 7, 20))
    assert [(i.period, store.get(i.invoice)["issue_date"]) for i in later.issued] == [("2026-Q3", "2026-07-15")]
    leap = store.add("invoices", {"issue_date": "2024-02-29", "lines": lines("5"), "status": "sent",
                                  "schedule": "yearly"})  # fmt: skip
    yearly = run_recurring(store, today=date(2028, 3, 1))
    assert [store.get(i.invoice)["issue_date"] for i in yearly.issued if i.source == leap["id"]] == [
        "2025-02-28", "2026-02-28", "2027-02-28", "2028-02-29"]  # fmt: skip


def test_printed_line_amounts_add_up_to_the_subtotal(store: Store) -> None:
    from crmkit.invoices.render import render_invoice_html

    two = [{"description": f"Part {i}", "quantity": "1", "unit_price": "0.125", "tax_rate": "0"} for i in (1, 2)]
    invoice = store.add("invoices", {"account": "A-1", "lines": two, "currency": "USD", "status": "sent"})
    assert (invoice["subtotal"], invoice["total"]) == ("0.26", "0.26")  # each line rounded, then added
    html = render_invoice_html(store, invoice["id"])
    assert html.count("0.13 USD") >= 2 and "0.26 USD" in html


# -- found in a second review ---------------------------------------------------------------------------


def test_a_schedule_made_shorter_never_bills_months_a_longer_period_covered(store: Store) -> None:
    store.add("invoices", {"issue_date": "2026-01-15", "lines": lines("300"), "status": "sent", "schedule": "quarterly"})
    assert [i.period for i in run_recurring(store, today=date(2026, 7, 20)).issued] == ["2026-Q2", "2026-Q3"]
    store.update("I-1", {"schedule": "monthly"})
    assert run_recurring(store, today=date(2026, 9, 20)).issued == []  # Jan to Sep are billed
    assert [i.period for i in run_recurring(store, today=date(2026, 10, 20)).issued] == ["2026-10"]


def test_a_copy_re_dated_by_hand_still_bills_its_own_period(store: Store) -> None:
    store.add("invoices", {"issue_date": "2026-01-15", "lines": lines("100"), "status": "sent", "schedule": "monthly"})
    [feb] = run_recurring(store, today=date(2026, 2, 20)).issued
    store.update(feb.invoice, {"issue_date": "2026-03-02"})  # it went out late
    assert [i.period for i in run_recurring(store, today=date(2026, 3, 20)).issued] == ["2026-03"]


def test_reminders_may_change_template_in_one_journal(tmp_path: Path) -> None:
    clock = Clock(datetime(2026, 4, 15, 9, 0, tzinfo=UTC))
    store = Store(tmp_path / "crm.json", clock=clock)
    store.add("contacts", {"name": "Hoa", "email": "hoa@example.com"})
    store.add("invoices", {"contact": "C-1", "issue_date": "2026-03-01", "due_date": "2026-03-31",
                           "lines": lines("300"), "status": "sent"})  # fmt: skip
    friendly, final = tmp_path / "reminder.txt", tmp_path / "final-notice.txt"
    friendly.write_text("Subject: Invoice {{ invoice.number }} is overdue\n\nPlease pay.\n")
    final.write_text("Subject: Final notice: {{ invoice.number }}\n\nPay now.\n")
    with SMTPServer() as smtp:
        assert remind(store, friendly, smtp).sent == 1  # as `invoices overdue --remind` does, on April 15
        clock.now = datetime(2026, 5, 15, 9, 0, tzinfo=UTC)
        assert remind(store, final, smtp).sent == 1  # a month later, the final notice, in the same journal
        assert [str(m.message["Subject"]) for m in smtp.wait_for(2)][-1] == "Final notice: INV-2026-0001"
        config = tmp_path / "crmkit.toml"  # and the command line takes another template too
        config.write_text(f'[smtp]\nhost = "{smtp.host}"\nport = {smtp.port}\nsecurity = "plain"\n'
                          'from = "Billing <billing@example.com>"\n')  # fmt: skip
        for template in (friendly, final):
            result = cli(store, "invoices", "overdue", "--remind", str(template), "--send", config=config)
            assert result.exit_code == 0, result.output
