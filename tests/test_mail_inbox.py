"""Filing parsed mail into the store, without IMAP: matching, threading, cases, loops."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest

from crmkit.mail.inbox import Filed, InboxRules, case_token, clean_subject, file_message, priority_of
from crmkit.mail.message import parse_message
from crmkit.store import Store

NOW = datetime(2026, 11, 23, 9, 0, tzinfo=UTC)
_counter = 0


def mail(
    sender: str = "Hoa <hoa@saomai.vn>",
    subject: str = "Printer broken",
    body: str = "It is broken.",
    *,
    message_id: str | None = None,
    in_reply_to: str | None = None,
    **headers: str,
) -> bytes:
    global _counter
    _counter += 1
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0700"
    msg["Message-ID"] = message_id or f"<m{_counter}@client.example>"
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    for name, value in headers.items():
        msg[name.replace("_", "-")] = value
    msg.set_content(body)
    return msg.as_bytes()


def file(store: Store, raw: bytes, rules: InboxRules | None = None, now: datetime = NOW) -> Filed:
    with store.transaction():
        # named by content, as the archive names raw messages
        raw_message = f"crm-mail/eml/{hashlib.sha256(raw).hexdigest()}.eml"
        return file_message(store, parse_message(raw), rules=rules, now=now, raw_message=raw_message)


def activities(store: Store, **where: Any) -> list[dict[str, Any]]:
    return [a for a in store.all("activities") if all(a.get(k) == v for k, v in where.items())]


def test_new_conversation_opens_a_case_on_a_new_contact(store: Store) -> None:
    account = store.add("accounts", {"name": "Sao Mai", "domain": "saomai.vn"})
    filed = file(store, mail(subject="URGENT: printer broken"))
    assert filed.action == "new_case" and filed.person == "C-1" and filed.case == "CASE-1"
    contact = store.get("C-1")
    assert (contact["name"], contact["email"], contact["source"], contact["account"]) == (
        "Hoa", "hoa@saomai.vn", "email", account["id"],
    )  # fmt: skip
    case = store.get("CASE-1")
    assert case["subject"] == "URGENT: printer broken" and case["priority"] == "urgent"
    assert (case["contact"], case["account"], case["origin"], case["status"]) == ("C-1", account["id"], "email", "new")
    [activity] = activities(store)
    assert activity["kind"] == "email_in" and activity["case"] == "CASE-1" and activity["contact"] == "C-1"
    assert activity["sender"] == "hoa@saomai.vn" and activity["raw_message"].startswith("crm-mail/eml/")


def test_a_known_contact_and_plus_tags(store: Store) -> None:
    store.add("contacts", {"name": "Ana", "email": "ana@example.com"})
    assert file(store, mail("ana+billing@example.com")).person == "C-1"
    strict = InboxRules(ignore_plus_tags=False)
    assert file(store, mail("ana+other@example.com"), strict).person == "C-2"


def test_a_known_lead_and_unknown_senders_as_leads(store: Store) -> None:
    store.add("leads", {"name": "Lee", "email": "lee@prospect.io"})
    filed = file(store, mail("lee@prospect.io"))
    assert filed.person == "L-1" and store.get(filed.case or "").get("contact") is None
    assert activities(store)[0]["lead"] == "L-1"
    as_lead = file(store, mail("New Person <new@startup.io>"), InboxRules(unknown_sender="lead"))
    lead = store.get(as_lead.person or "")
    assert (lead["id"], lead["name"], lead["source"]) == ("L-2", "New Person", "email")


def test_reply_joins_by_headers_and_reopens_a_resolved_case(store: Store) -> None:
    first = file(store, mail(message_id="<first@client>"))
    reply = file(store, mail(subject="Re: Printer broken", in_reply_to="<first@client>",
                             body="Still broken.\n\nOn Mon, Hoa wrote:\n> It is broken."))  # fmt: skip
    assert (reply.action, reply.case) == ("joined_case", first.case)
    assert activities(store, case=first.case)[-1]["body"] == "Still broken."  # no quoted history
    store.update(first.case or "", {"status": "resolved"})
    again = file(store, mail(in_reply_to="<first@client>", subject="Re: Printer broken"))
    assert again.action == "reopened_case" and store.get(first.case or "")["status"] == "open"
    assert store.count("cases") == 1


def test_reply_to_mail_crmkit_sent_joins_that_case(store: Store) -> None:
    first = file(store, mail())
    store.add(
        "activities",
        {"kind": "email_out", "subject": "[CASE-1] We got it", "case": first.case, "message_id": "<ack-1@crmkit>"},
    )
    reply = file(store, mail("Boss <boss@saomai.vn>", "Re: [CASE-1] We got it", in_reply_to="<ack-1@crmkit>"))
    assert (reply.action, reply.case) == ("joined_case", first.case)


def test_case_token_counts_only_for_someone_on_the_case(store: Store) -> None:
    first = file(store, mail())
    assert first.case == "CASE-1"
    own = file(store, mail(subject="[CASE-1] more details"))
    assert (own.action, own.case) == ("joined_case", "CASE-1")
    stranger = file(store, mail("Mallory <mallory@evil.example>", "[CASE-1] let me in"))
    assert stranger.action == "new_case" and stranger.case == "CASE-2"
    assert store.get("CASE-2")["subject"] == "let me in"


def test_duplicate_message_id_is_filed_once(store: Store) -> None:
    raw = mail(message_id="<same@client>")
    assert file(store, raw).action == "new_case"
    again = file(store, raw)
    assert again.action == "duplicate" and store.count("activities") == 1 and store.count("cases") == 1


def test_bounce_marks_the_address_and_opens_no_case(store: Store) -> None:
    store.add("contacts", {"name": "Gone", "email": "gone@customer.com"})
    msg = EmailMessage()
    msg["From"] = "MAILER-DAEMON@mx.example.com"
    msg["Subject"] = "Undelivered Mail Returned to Sender"
    msg["X-Failed-Recipients"] = "gone@customer.com"
    msg.set_content("could not deliver")
    filed = file(store, msg.as_bytes())
    assert filed.action == "bounce" and filed.case is None and store.count("cases") == 0
    assert store.get("C-1")["email_status"] == "bounced"
    assert store.count("contacts") == 1  # the daemon does not become a contact


@pytest.mark.parametrize(
    "headers",
    [{"Auto_Submitted": "auto-replied"}, {"Precedence": "bulk"}, {"List_Id": "<news.example.com>"}],
)
def test_automatic_mail_is_logged_without_a_case(store: Store, headers: dict[str, str]) -> None:
    store.add("contacts", {"name": "Ana", "email": "ana@example.com"})
    filed = file(store, mail("ana@example.com", "Out of office", **headers))
    assert filed.action == "logged" and filed.case is None and not filed.acknowledge
    assert store.count("cases") == 0 and len(activities(store, contact="C-1")) == 1


def test_automatic_mail_from_strangers_makes_no_contacts(store: Store) -> None:
    file(store, mail("noreply@shop.example", "Your order"))
    assert store.count("contacts") == 0 and store.count("activities") == 1


def test_a_runaway_autoresponder_is_rate_limited(store: Store) -> None:
    rules = InboxRules(max_new_cases=3, acknowledge=True)
    results = [file(store, mail("bot@loop.example", f"Ticket {i}"), rules, NOW + timedelta(minutes=i)) for i in range(10)]
    assert [r.action for r in results].count("new_case") == 3
    assert store.count("cases") == 3 and store.count("activities") == 10  # every message still logged
    assert sum(r.acknowledge for r in results) == 1  # one acknowledgement per sender per day
    later = file(store, mail("bot@loop.example", "Ticket later"), rules, NOW + timedelta(hours=2))
    assert later.action == "new_case"


def test_unsubscribe_sets_opt_out(store: Store) -> None:
    store.add("contacts", {"name": "Ana", "email": "ana@example.com"})
    store.add("activities", {"kind": "email_out", "subject": "November newsletter", "message_id": "<news-1@us>"})
    filed = file(
        store,
        mail("ana@example.com", "Re: November newsletter", "Please unsubscribe me.\n> old", in_reply_to="<news-1@us>"),
    )
    assert filed.action == "unsubscribed" and store.get("C-1")["opt_out"] is True
    assert store.count("cases") == 0
    vi = file(store, mail("ana@example.com", "Hủy đăng ký", "xin cảm ơn"))
    assert vi.action == "unsubscribed"


def test_a_long_message_mentioning_unsubscribe_is_still_a_case(store: Store) -> None:
    body = "I cannot unsubscribe from your other list, and the invoice is also wrong. " * 5
    assert file(store, mail(body=body)).action == "new_case"


def test_mail_from_the_mailbox_itself_is_not_a_customer(store: Store) -> None:
    filed = file(store, mail("support@example.com"), InboxRules(own_addresses=("Support@Example.com",)))
    assert filed.case is None and store.count("contacts") == 0


@pytest.mark.parametrize(
    ("subject", "headers", "expected"),
    [
        ("Printer broken", {}, "normal"),
        ("KHẨN: máy in hỏng", {}, "urgent"),
        ("Printer", {"Importance": "High"}, "high"),
        ("Printer", {"X_Priority": "1 (Highest)"}, "high"),
        ("Printer", {"IMPORTANCE": "low"}, "low"),
        ("Printer", {"X_Priority": "5"}, "low"),
        ("urgently needed?", {}, "normal"),  # a word, not a part of one
    ],
)
def test_priority(subject: str, headers: dict[str, str], expected: str) -> None:
    assert priority_of(parse_message(mail(subject=subject, **headers)), InboxRules()) == expected


def test_subjects_and_tokens() -> None:
    assert clean_subject("Re: RE: Fwd: [CASE-12] Printer") == "Printer"
    assert clean_subject("Trả lời: Máy in") == "Máy in"
    assert clean_subject("  ") == "(no subject)"
    assert case_token("Re: [case-12] x") == "CASE-12" and case_token("CASE-12") is None


def test_everyday_words_are_not_unsubscribes_or_bounces(store: Store) -> None:
    store.add("contacts", {"name": "Ana", "email": "ana@example.com"})
    assert file(store, mail("ana@example.com", "Stop sending me duplicate invoices!")).action == "new_case"
    assert file(store, mail("ana@example.com", "Undelivered order #4411 - where is it?")).action == "new_case"
    assert store.get("C-1").get("opt_out") is False


def test_a_stranger_cannot_mark_someone_bounced(store: Store) -> None:
    store.add("contacts", {"name": "CEO", "email": "ceo@bigcustomer.com"})
    filed = file(store, mail("eve@evil.example", "Need help", X_Failed_Recipients="ceo@bigcustomer.com"))
    assert filed.action == "new_case" and store.get("C-1")["email_status"] == "ok"


def test_plus_tags_do_not_dodge_the_limits(store: Store) -> None:
    store.add("contacts", {"name": "Ana", "email": "ana@cust.com"})
    rules = InboxRules(max_new_cases=3, acknowledge=True)
    results = [file(store, mail(f"ana+{i}@cust.com", f"p{i}"), rules) for i in range(6)]
    assert [r.action for r in results].count("new_case") == 3 and sum(r.acknowledge for r in results) == 1
    assert {r.person for r in results} == {"C-1"}
    new = [file(store, mail(f"bob+{i}@cust.com", f"q{i}"), rules) for i in range(2)]
    assert new[0].person == new[1].person and store.get(new[0].person or "")["email"] == "bob@cust.com"


def test_an_archived_message_is_still_a_duplicate(store: Store) -> None:
    raw = mail(message_id="<arch@x>")
    first = file(store, raw)
    store.archive(first.activity or "")
    again = file(store, raw)
    assert again.action == "duplicate" and store.count("cases") == 1


def test_a_reused_message_id_does_not_swallow_another_message(store: Store) -> None:
    file(store, mail("bob@cust.com", "printer jam", message_id="<1@scanner.local>"))
    other = file(store, mail("carol@other.com", "server down", message_id="<1@scanner.local>"))
    assert other.action == "new_case" and store.count("cases") == 2
    assert any("already used Message-ID" in n for n in other.notes)


@pytest.mark.parametrize(
    "data",
    [
        b"From: ((((((((((((((((((((((((((((((((((((((((((((((((((" * 40 + b"\r\n\r\nx",
        b"From: a@b.c\r\nDate: Fri, 31 Dec 9999 23:59:59 -1200\r\n\r\nx",
        b"From: a@b.c\r\nContent-Type: text/plain; charset=utf-7\r\n\r\n+2AA-",
        b"From: a@b.c\r\nContent-Type: text/plain; charset=unicode_escape\r\n\r\n\\ud800",
    ],
)
def test_hostile_mail_is_filed_not_refused(store: Store, data: bytes) -> None:
    filed = file(store, data)  # storable: the commit below would fail on a lone surrogate
    assert filed.activity is not None
    Store(store.location).get(filed.activity)


def test_the_mail_archive_is_private(tmp_path: Path) -> None:
    from crmkit.mail.archive import MailArchive

    archive = MailArchive(tmp_path / "crm.json")
    reference = archive.keep_raw(b"From: a@b.c\r\n\r\nsecret")
    archive.sync()
    assert archive.read(reference) == b"From: a@b.c\r\n\r\nsecret"
    pack = tmp_path / reference.partition("#")[0]
    assert pack.stat().st_mode & 0o077 == 0 and archive.root.stat().st_mode & 0o077 == 0
    assert pack.parent.stat().st_mode & 0o077 == 0


def test_packed_messages_read_back_byte_for_byte_and_a_cut_tail_harms_no_other(tmp_path: Path) -> None:
    """A kill mid-append leaves a torn last entry; no record points at it, and the pack is never appended to again."""
    import pickle

    from crmkit.errors import CrmkitError
    from crmkit.mail.archive import MailArchive

    raws = [b"From: a@b.c\r\nSubject: %d\r\n\r\n" % n + bytes(range(256)) * n for n in range(5)]
    archive = MailArchive(tmp_path / "crm.json")
    references = [archive.keep_raw(raw) for raw in raws]
    assert archive.keep_raw(raws[2]) == references[2]  # the same message again in one run: kept once
    archive.sync()
    assert [archive.read(r) for r in references] == raws
    pack = tmp_path / references[0].partition("#")[0]
    assert len({r.partition("#")[0] for r in references}) == 1
    whole = pack.read_bytes()
    pack.write_bytes(whole[:-40])  # the last entry cut short, as a kill leaves it
    assert [archive.read(r) for r in references[:4]] == raws[:4]
    with pytest.raises(CrmkitError, match="damaged"):
        archive.read(references[4])

    # another process (the poller's worker, or the next run) keeps in a pack of its own
    worker = pickle.loads(pickle.dumps(archive))
    again = worker.keep_raw(raws[4])
    worker.sync()
    assert again.partition("#")[0] != references[4].partition("#")[0] and archive.read(again) == raws[4]

    # what older releases kept, one .eml each, still reads; a reference out of the archive does not
    old = archive.root / "eml" / "ab" / "abc.eml"
    old.parent.mkdir(parents=True)
    old.write_bytes(raws[1])
    assert archive.read("crm-mail/eml/ab/abc.eml") == raws[1]
    with pytest.raises(CrmkitError, match="not in the mail archive"):
        archive.read("crm.json")


def test_a_kept_attachment_cut_short_is_written_again_whole(tmp_path: Path) -> None:
    """A power loss before the archive's sync can leave an empty or short file under its real name."""
    from crmkit.mail.archive import MailArchive
    from crmkit.mail.message import Attachment

    raw = b"From: a@b.c\r\nSubject: kept\r\n\r\nthe whole message"
    archive = MailArchive(tmp_path / "crm.json")
    attachment = Attachment("scan.pdf", "application/pdf", 9, b"%PDF-data")
    [kept] = archive.keep_attachments(raw, [attachment])
    (tmp_path / kept["path"]).write_bytes(b"%PDF")  # what a power loss right after the create leaves

    again = MailArchive(tmp_path / "crm.json")
    again.keep_attachments(raw, [attachment])
    assert (tmp_path / kept["path"]).read_bytes() == b"%PDF-data"
    assert (tmp_path / kept["path"]).stat().st_mode & 0o077 == 0


def test_threads_sharing_an_archive_keep_whole_entries(tmp_path: Path) -> None:
    """poll --idle files several mailboxes on threads that share one archive."""
    import sys
    import threading

    from crmkit.mail.archive import MailArchive

    archive = MailArchive(tmp_path / "crm.json")
    kept: dict[bytes, str] = {}

    def keep(mailbox: int) -> None:
        for n in range(2000):
            raw = b"From: %d@x.example\r\nSubject: %d\r\n\r\n" % (mailbox, n) + b"body " * (n % 50)
            kept[raw] = archive.keep_raw(raw)
            if n % 50 == 0:
                archive.sync()

    threads = [threading.Thread(target=keep, args=(m,)) for m in range(4)]
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # threads take turns often: an unguarded append would interleave
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(switch)
    archive.sync()
    assert len(kept) == 8000 and all(archive.read(ref) == raw for raw, ref in kept.items())
