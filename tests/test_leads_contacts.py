"""Lead conversion (with the account match), contact merge and the 360° view."""

from __future__ import annotations

from datetime import date

import pytest

from crmkit.contacts import account_view, contact_view, merge_contacts, restore_contact
from crmkit.errors import CrmkitError, DuplicateError
from crmkit.leads import convert_lead
from crmkit.store import Store


def test_convert_creates_contact_account_and_deal(store: Store) -> None:
    lead = store.add(
        "leads",
        {"name": "Trần Văn Bình", "company": "Hanoi Fresh Foods", "email": "binh@hanoifresh.vn",
         "phone": "+84 24 3999 1234", "source": "referral", "status": "qualified", "owner": "ana"},
    )  # fmt: skip
    note = store.add("activities", {"kind": "call", "subject": "Discovery", "lead": lead["id"]})
    result = convert_lead(store, lead["id"], deal_values={"amount": "250000000", "currency": "VND"})

    assert result.created == ["A-1", "C-1", "D-1"]
    account, contact, deal = store.get("A-1"), store.get("C-1"), store.get("D-1")
    assert (account["name"], account["domain"], account["owner"]) == (
        "Hanoi Fresh Foods",
        "hanoifresh.vn",
        "ana",
    )
    assert (contact["name"], contact["email"], contact["account"]) == (
        "Trần Văn Bình",
        "binh@hanoifresh.vn",
        "A-1",
    )
    assert (deal["account"], deal["contact"], deal["stage"], deal["source"]) == (
        "A-1",
        "C-1",
        "qualification",
        "referral",
    )
    assert (deal["amount"], deal["currency"], deal["title"]) == ("250000000", "VND", "Hanoi Fresh Foods")
    lead = store.get(lead["id"])
    assert lead["status"] == "converted"
    assert (lead["converted_contact"], lead["converted_account"], lead["converted_deal"]) == (
        "C-1",
        "A-1",
        "D-1",
    )
    assert lead["converted_at"]
    assert store.get(note["id"])["contact"] == "C-1"
    assert result.moved_activities == 1


@pytest.mark.parametrize(
    ("company", "email"),
    [
        ("ACME, Inc.", "new.person@other.com"),  # by name, legal form and punctuation ignored
        ("Acme Corporation", "x@other.com"),
        (None, "new.person@acme.com"),  # by email domain
        ("Totally Different Name", "new.person@acme.com"),
    ],
)
def test_convert_matches_existing_account(store: Store, company: str | None, email: str) -> None:
    store.add("accounts", {"name": "Acme", "domain": "acme.com"})
    lead = store.add("leads", {"name": "New Person", "company": company, "email": email})
    result = convert_lead(store, lead["id"], create_deal=False)
    assert result.account is not None and result.account["id"] == "A-1"
    assert store.count("accounts") == 1
    assert result.deal is None and result.created == ["C-1"]


def test_free_mail_domain_never_matches_an_account(store: Store) -> None:
    store.add("accounts", {"name": "Some Gmail User Co", "domain": "gmail.com"})
    lead = store.add("leads", {"name": "Solo", "email": "solo@gmail.com"})
    result = convert_lead(store, lead["id"], create_deal=False)
    assert result.account is None
    assert "account" not in result.contact
    assert store.count("accounts") == 1


def test_convert_reuses_contact_with_same_email(store: Store) -> None:
    existing = store.add("contacts", {"name": "Ana", "email": "ana@acme.com"})
    lead = store.add(
        "leads", {"name": "Ana N.", "email": "ANA@acme.com", "phone": "+1 555 0100", "company": "Acme"}
    )
    result = convert_lead(store, lead["id"])
    assert result.contact["id"] == existing["id"]
    assert result.contact["phone"] == "+1 555 0100" and result.contact["account"] == "A-1"
    assert store.count("contacts") == 1


def test_convert_twice_or_disqualified_is_refused(store: Store) -> None:
    lead = store.add("leads", {"name": "A", "company": "Acme"})
    convert_lead(store, lead["id"])
    with pytest.raises(CrmkitError, match="already converted into C-1"):
        convert_lead(store, lead["id"])
    bad = store.add("leads", {"name": "B", "company": "Beta", "status": "disqualified"})
    with pytest.raises(CrmkitError, match="disqualified"):
        convert_lead(store, bad["id"])
    assert store.count("accounts") == 1  # nothing was half made
    assert convert_lead(store, bad["id"], force=True).account is not None
    with pytest.raises(CrmkitError, match="not a lead id"):
        convert_lead(store, "C-1")


def test_failed_conversion_changes_nothing(store: Store) -> None:
    lead = store.add("leads", {"name": "A", "company": "Acme"})
    with pytest.raises(CrmkitError):
        convert_lead(store, lead["id"], deal_values={"close_date": "someday"})
    assert store.count("accounts") == 0 and store.count("contacts") == 0
    assert store.get(lead["id"])["status"] == "new"


def _crm(store: Store) -> None:
    store.add("accounts", {"name": "Acme", "domain": "acme.com"})
    store.add("contacts", {"name": "Ana", "email": "ana@acme.com", "account": "A-1", "tags": "vip"})
    store.add("contacts", {"name": "Ana Nguyen", "email": "ana.n@gmail.com", "phone": "+1 555 0100",
                           "title": "CTO", "tags": "partner, vip", "Shoe size": "38", "opt_out": "yes"})  # fmt: skip
    store.add("deals", {"title": "D1", "contact": "C-1", "account": "A-1", "amount": "100"})
    store.add("deals", {"title": "D2", "contact": "C-2", "amount": "200"})
    store.add("cases", {"subject": "Help", "contact": "C-2"})
    store.add("invoices", {"contact": "C-2", "issue_date": "2026-01-01", "status": "sent",
                           "lines": [{"description": "x", "unit_price": 10}]})  # fmt: skip
    store.add("activities", {"kind": "note", "subject": "old", "contact": "C-2", "date": "2026-01-01"})
    store.add("activities", {"kind": "call", "subject": "new", "contact": "C-1", "date": "2026-02-01"})


def test_merge_moves_everything_and_archives_the_other(store: Store) -> None:
    _crm(store)
    result = merge_contacts(store, "C-1", "C-2")
    assert result.moved == {"deals": 1, "invoices": 1, "cases": 1, "activities": 1}
    kept = store.get("C-1")
    assert kept["email"] == "ana@acme.com"  # the kept contact's values win
    assert (kept["phone"], kept["title"], kept["opt_out"]) == ("+1 555 0100", "CTO", True)
    assert kept["tags"] == ["vip", "partner"] and kept["custom"] == {"Shoe size": "38"}
    other = store.get("C-2")
    assert other["merged_into"] == "C-1" and other["archived_at"]
    assert all(d["contact"] == "C-1" for d in store.all("deals"))
    assert [d["id"] for d in store.all("contacts")] == ["C-1"]
    with pytest.raises(CrmkitError, match="already merged"):
        merge_contacts(store, "C-1", "C-2")
    with pytest.raises(CrmkitError, match="into itself"):
        merge_contacts(store, "C-1", "C-1")
    with pytest.raises(CrmkitError, match="not a contact id"):
        merge_contacts(store, "C-1", "D-1")


def test_360_view(store: Store) -> None:
    _crm(store)
    view = contact_view(store, "ANA.N@gmail.com", today=date(2026, 6, 1))
    assert view["id"] == "C-2" and view["name"] == "Ana Nguyen"
    related = view["related"]
    assert related["account"] is None
    assert [d["title"] for d in related["deals"]] == ["D2"]
    assert [c["subject"] for c in related["cases"]] == ["Help"]
    assert related["invoices"][0]["status"] == "overdue"  # due 2026-01-31, nothing paid
    merge_contacts(store, "C-1", "C-2")
    view = contact_view(store, "C-1", today=date(2026, 6, 1))
    assert view["related"]["account"]["name"] == "Acme"
    assert [d["title"] for d in view["related"]["deals"]] == ["D1", "D2"]
    assert [a["subject"] for a in view["related"]["activities"]] == ["new", "old"]  # newest first


def test_merge_contacts_that_share_an_email(store: Store) -> None:
    store.add("contacts", {"name": "Ana", "email": "ana@example.com"})
    store.add("contacts", {"name": "Ana N", "email": "ANA@example.com", "phone": "+1 555 0100"}, force=True)
    result = merge_contacts(store, "C-1", "C-2")
    assert result.kept["phone"] == "+1 555 0100"
    assert store.find_by_email("contacts", "ana@example.com")[0]["id"] == "C-1"


def test_linked_records_follow_every_change_of_the_link(store: Store) -> None:
    store.add("contacts", {"name": "Ana", "email": "ana@acme.com"})
    store.add("contacts", {"name": "Bo", "email": "bo@acme.com"})
    for n in range(3):
        store.add("activities", {"kind": "note", "subject": f"n{n}", "contact": "C-1"})
    assert [a["subject"] for a in store.linked("activities", "contact", "C-1")] == ["n0", "n1", "n2"]
    store.update("ACT-2", {"contact": "C-2"})  # the index, built above, moves it
    assert [a["id"] for a in store.linked("activities", "contact", "C-1")] == ["ACT-1", "ACT-3"]
    assert [a["id"] for a in store.linked("activities", "contact", "C-2")] == ["ACT-2"]
    store.archive("ACT-1")
    assert [a["id"] for a in store.linked("activities", "contact", "C-1")] == ["ACT-3"]
    assert [a["id"] for a in store.linked("activities", "contact", "C-1", archived=True)] == ["ACT-1"]
    with pytest.raises(CrmkitError, match="not indexed by 'title'"):
        store.linked("activities", "title", "C-1")


def test_360_view_holds_the_accounts_invoices_and_the_account_view_its_whole_timeline(store: Store) -> None:
    _crm(store)
    store.add("invoices", {"account": "A-1", "lines": [{"description": "Licences", "unit_price": 99}]})
    store.add("invoices", {"account": "A-1", "contact": "C-1", "lines": [{"description": "Setup", "unit_price": 5}]})
    store.add("activities", {"kind": "note", "subject": "renewal", "account": "A-1", "date": "2026-03-01"})
    view = contact_view(store, "C-1", today=date(2026, 6, 1))
    assert [i["id"] for i in view["related"]["invoices"]] == ["I-2", "I-3"]  # the account's, and hers, once
    assert [i["id"] for i in contact_view(store, "C-2")["related"]["invoices"]] == ["I-1"]  # no account

    account = account_view(store, "acme.com", today=date(2026, 6, 1))
    assert account["id"] == "A-1" and account["name"] == "Acme"
    related = account["related"]
    assert [c["id"] for c in related["contacts"]] == ["C-1"]
    assert [d["id"] for d in related["deals"]] == ["D-1"] and related["quotes"] == []
    assert [i["id"] for i in related["invoices"]] == ["I-2", "I-3"] and related["cases"] == []
    # on the account itself and on its contacts, newest first; C-2 is nobody's at Acme
    assert [a["subject"] for a in related["activities"]] == ["renewal", "new"]


def test_restoring_a_merged_contact_needs_unlink(store: Store) -> None:
    _crm(store)
    merge_contacts(store, "C-1", "C-2")
    with pytest.raises(CrmkitError, match=r"^C-2 was merged into C-1; restore it with --unlink"):
        restore_contact(store, "C-2")
    assert store.get("C-2")["archived_at"] and store.get("C-2")["merged_into"] == "C-1"
    with pytest.raises(DuplicateError, match="already has phone"):  # the merge gave C-1 her phone
        restore_contact(store, "C-2", unlink=True)
    assert store.get("C-2")["merged_into"] == "C-1"  # all or nothing
    restored = restore_contact(store, "ana.n@gmail.com", unlink=True, force=True)
    assert restored["id"] == "C-2" and "archived_at" not in restored and "merged_into" not in restored
    assert [d["id"] for d in store.all("contacts")] == ["C-1", "C-2"]
    assert store.get("D-2")["contact"] == "C-1"  # what moved stays moved
    store.archive("C-2")
    assert "archived_at" not in restore_contact(store, "C-2", force=True)  # unlinked now: no --unlink needed
