"""What people read from the record commands: 360° views, a deal's history, an invoice's lines and
status, archived rows, restoring a merged contact, and counts that read right."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from crmkit.cli import main
from crmkit.cli.output import counted

Run = Callable[..., Result]


@pytest.fixture
def crm(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Run:
    """The CLI in a new project (``crmkit init``) with the README tour's account, contact, deal and invoice."""
    monkeypatch.delenv("CRMKIT_STORE", raising=False)
    monkeypatch.delenv("CRMKIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)

    def run(*args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(main, list(args), catch_exceptions=False)
        assert result.exit_code == code, result.output
        return result

    run("init", "acme-crm", "--currency", "USD")
    monkeypatch.chdir(tmp_path / "acme-crm")
    run("accounts", "add", "name=Sao Mai Logistics", "domain=saomai.vn", "tier=A", "region=South")
    run(
        "contacts",
        "add",
        "name=Nguyễn Thị Hoa",
        "email=hoa@saomai.vn",
        "account=saomai.vn",
        "tags=vip, logistics",
    )
    run("deals", "add", "title=Cold-chain routing", "account=A-1", "contact=hoa@saomai.vn", "amount=42000",
        "close_date=2026-12-15")  # fmt: skip
    run("deals", "update", "D-1", "stage=negotiation")
    run("invoices", "add", "account=A-1", "--line", "Setup|1|1500|10", "--line", "Licences|12|99|10")
    return run


def test_contact_360_shows_its_accounts_invoices_and_says_when_there_is_no_activity(crm: Run) -> None:
    text = crm("contacts", "show", "hoa@saomai.vn").stdout
    assert "\nAccount: A-1 Sao Mai Logistics\n" in text
    assert "\nInvoices (1):\n" in text and "INV-" in text  # made out to the account, not to Hoa
    assert "\nCases: none\n" in text
    assert text.endswith("\nTimeline: no activity yet\n")
    view = json.loads(crm("contacts", "show", "C-1", "--json").stdout)
    assert [i["id"] for i in view["related"]["invoices"]] == ["I-1"]
    assert view["related"]["activities"] == []

    crm("invoices", "add", "contact=C-1", "--line", "Support|1|100")  # hers too, once
    crm("activities", "add", "kind=call", "subject=Intro call", "contact=C-1", "date=2026-12-01 09:00")
    crm("activities", "add", "kind=note", "subject=Sent the contract", "contact=C-1", "date=2026-12-03 09:00")
    view = json.loads(crm("contacts", "show", "C-1", "--json").stdout)
    assert [i["id"] for i in view["related"]["invoices"]] == ["I-1", "I-2"]
    text = crm("contacts", "show", "C-1").stdout
    assert "\nInvoices (2):\n" in text
    timeline = text.split("\nTimeline (2 activities, newest first):\n")[1]
    assert timeline.index("Sent the contract") < timeline.index("Intro call")


def test_account_360_shows_contacts_deals_invoices_and_their_timeline(crm: Run) -> None:
    text = crm("accounts", "show", "A-1").stdout
    for section in ("Contacts (1):", "Deals (1):", "Quotes: none", "Invoices (1):", "Cases: none"):
        assert f"\n{section}\n" in text, section
    assert text.endswith("\nTimeline: no activity yet\n")
    crm("activities", "add", "kind=call", "subject=Call with Hoa", "contact=C-1", "date=2026-12-01 09:00")
    crm("activities", "add", "kind=note", "subject=Renewal terms", "account=A-1", "date=2026-12-02 09:00")
    view = json.loads(crm("accounts", "show", "Sao Mai Logistics", "--json").stdout)
    assert view["id"] == "A-1" and view["name"] == "Sao Mai Logistics"
    related = view["related"]
    assert [d["id"] for d in related["contacts"]] == ["C-1"]
    assert [d["id"] for d in related["deals"]] == ["D-1"] and [d["id"] for d in related["invoices"]] == [
        "I-1"
    ]
    assert [a["subject"] for a in related["activities"]] == ["Renewal terms", "Call with Hoa"]
    assert "Timeline (2 activities, newest first):" in crm("accounts", "show", "A-1").stdout


def test_deal_show_gives_one_line_per_stage_change(crm: Run) -> None:
    text = crm("deals", "show", "D-1").stdout
    assert "[{" not in text and "'stage'" not in text
    history = text.split("\nStage history:\n")[1].splitlines()
    assert len(history) == 2
    assert re.fullmatch(r"  \d{4}-\d\d-\d\d \d\d:\d\d  opened in prospecting  \(\S+\)", history[0])
    assert re.fullmatch(r"  \d{4}-\d\d-\d\d \d\d:\d\d  prospecting → negotiation  \(\S+\)", history[1])
    assert "(cli:" not in text  # who, as people call them
    deal = json.loads(crm("deals", "show", "D-1", "--json").stdout)
    assert [(h["from"], h["stage"]) for h in deal["stage_history"]] == [
        (None, "prospecting"),
        ("prospecting", "negotiation"),
    ]  # --json as it was


def test_invoice_show_lists_its_lines_and_says_why_it_has_its_status(crm: Run) -> None:
    text = crm("invoices", "show", "I-1").stdout
    assert "Status:     draft (not sent yet, nothing received)\n" in text
    assert "line(s)" not in text
    lines = text.split("\nLines (2):\n")[1].splitlines()
    assert lines == [
        "Description  Qty  Unit price  Tax %  Amount",
        "-----------  ---  ----------  -----  --------",
        "Setup        1    1,500.00    10     1,500.00",
        "Licences     12   99.00       10     1,188.00",
    ]
    crm("invoices", "update", "I-1", "amount_paid=1000")
    assert re.search(r"Status: +partly_paid \(1,000\.00 of 2,956\.80 USD received, due \d{4}-\d\d-\d\d\)\n",
                     crm("invoices", "show", "I-1").stdout)  # fmt: skip
    crm("invoices", "update", "I-1", "amount_paid=2956.80")  # paid in full while still a draft
    assert "Status:      paid (2,956.80 of 2,956.80 USD received)\n" in crm("invoices", "show", "I-1").stdout
    invoice = json.loads(crm("invoices", "show", "I-1", "--json").stdout)
    assert invoice["status"] == "paid"
    assert invoice["lines"][1] == {"description": "Licences", "quantity": "12", "unit_price": "99",
                                   "tax_rate": "10"}  # fmt: skip
    assert [
        i["id"] for i in json.loads(crm("invoices", "list", "--where", "status=paid", "--json").stdout)
    ] == ["I-1"]


def test_a_merged_contact_is_restored_only_with_unlink(crm: Run) -> None:
    crm("contacts", "add", "name=Hoa N.", "email=hoa.n@saomai.vn")
    crm("activities", "add", "kind=call", "subject=First call", "contact=C-2")
    crm("activities", "add", "kind=call", "subject=Second call", "contact=C-2")
    crm("deals", "add", "title=Warehouse sensors", "contact=C-2")
    assert (
        crm("contacts", "merge", "C-1", "C-2").stdout == "Merged C-2 into C-1 (1 deal, 2 activities moved)\n"
    )

    refused = crm("contacts", "restore", "C-2", code=1)
    assert refused.stderr == (
        "Error: C-2 was merged into C-1; restore it with --unlink to make it a contact of its own again "
        "(what moved to C-1 stays there)\n"
    )
    listed = crm("contacts", "list", "--archived").stdout.splitlines()
    assert listed[0].split()[-1] == "Archived"
    rows = {row.split()[0]: row for row in listed[2:]}
    assert re.search(r"  \d{4}-\d\d-\d\d$", rows["C-2"]) and not re.search(r"\d\d$", rows["C-1"])
    assert "Archived" not in crm("contacts", "list").stdout
    as_json = {c["id"]: c for c in json.loads(crm("contacts", "list", "--archived", "--json").stdout)}
    assert as_json["C-2"]["archived_at"] and as_json["C-1"]["archived_at"] is None

    assert crm("contacts", "restore", "hoa.n@saomai.vn", "--unlink").stdout == "Restored C-2 Hoa N.\n"
    restored = json.loads(crm("contacts", "show", "C-2", "--json").stdout)
    assert restored["merged_into"] is None and restored["archived_at"] is None
    assert [d["id"] for d in restored["related"]["deals"]] == []  # what moved stays with C-1


def test_counted_reads_right() -> None:
    assert [counted(n, "deal") for n in (0, 1, 2)] == ["0 deals", "1 deal", "2 deals"]
    assert counted(1, "activity", "activities") == "1 activity"
    assert counted(3, "activity", "activities") == "3 activities"
