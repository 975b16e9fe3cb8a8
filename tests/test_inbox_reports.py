"""Bounces, delay notices and spam complaints filed by the poller's rules, on a real store.

Every message of ``tests/fixtures/bounces`` (real bounces from many mail servers, see its
README) is filed into a store whose contacts include the addresses involved: a failure
marks exactly the failed addresses ``bounced``, a delay marks nobody, a complaint opts the
complainer out, and none of them opens a case or makes a contact.
"""

from __future__ import annotations

import json
from pathlib import Path

from crmkit.mail.inbox import file_message
from crmkit.mail.message import parse_message
from crmkit.store import Store

FIXTURES = Path(__file__).parent / "fixtures" / "bounces"
MANIFEST: dict[str, dict] = json.loads((FIXTURES / "manifest.json").read_text())


def _involved(expected: dict) -> set[str]:
    return {*expected.get("failed", ()), *expected.get("delay_recipients", ()), *expected.get("complainants", ())}


def test_every_fixture_filed_by_the_rules(store: Store) -> None:
    people = sorted({a for e in MANIFEST.values() if "known_miss" not in e for a in _involved(e)})
    with store.transaction():
        ids = {a: store.add("contacts", {"name": a.split("@")[0], "email": a}, force=True)["id"] for a in people}
    problems = []
    for name, expected in sorted(MANIFEST.items()):
        if "known_miss" in expected:
            continue
        for address in _involved(expected):  # each message starts from unmarked people
            store.update(ids[address], {"email_status": "", "opt_out": False})
        contacts_before = store.count("contacts")
        with store.transaction():
            filed = file_message(store, parse_message((FIXTURES / name).read_bytes()))
        kind = expected["kind"]
        if kind and store.count("contacts") != contacts_before:  # nor a contact of the mail system
            problems.append(f"{name} ({kind}) made a contact")
        bounced = {a for a in _involved(expected) if store.get(ids[a]).get("email_status") == "bounced"}
        opted_out = {a for a in _involved(expected) if store.get(ids[a]).get("opt_out")}
        want_action = {"failure": "bounce", "complaint": "complaint"}.get(kind or "")
        if kind == "failure" and bounced != set(expected["failed"]):
            problems.append(f"{name}: bounced {sorted(bounced)}, expected {expected['failed']}")
        if kind != "failure" and bounced:
            problems.append(f"{name} ({kind}): marked {sorted(bounced)} bounced")
        if kind == "complaint" and opted_out != set(expected["complainants"]):
            problems.append(f"{name}: opted out {sorted(opted_out)}, expected {expected['complainants']}")
        if kind in ("failure", "delay", "complaint") and filed.case is not None:
            problems.append(f"{name} ({kind}) opened or joined case {filed.case}")
        if want_action and filed.action != want_action:
            problems.append(f"{name}: action {filed.action}, expected {want_action}")
    assert problems == []


def test_the_address_crmkit_mailed_is_marked_not_the_forwarded_one(store: Store) -> None:
    """Original-Recipient rosa@example.org was forwarded to a Final-Recipient: rosa bounced."""
    raw = (FIXTURES / "own--rfc3464-original-final.eml").read_bytes()
    parsed = parse_message(raw)
    assert parsed.report is not None and parsed.report.kind == "failure"
    finals = {r.address for r in parsed.report.recipients} - {"rosa@example.org"}
    rosa = store.add("contacts", {"name": "Rosa", "email": "rosa@example.org"})["id"]
    others = [store.add("contacts", {"name": f"F{i}", "email": a})["id"] for i, a in enumerate(sorted(finals))]
    with store.transaction():
        filed = file_message(store, parsed)
    assert filed.action == "bounce" and filed.person == rosa
    assert store.get(rosa)["email_status"] == "bounced"
    assert others and all(store.get(i).get("email_status") != "bounced" for i in others)
