"""Mail-merge campaigns sent through a real SMTP server (aiosmtpd, STARTTLS + AUTH) on 127.0.0.1."""

from __future__ import annotations

import json
import os
import signal
import ssl
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email import message_from_bytes, policy
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from storefiles import hand_edit as edit_file

from crmkit.cli import main
from crmkit.config import MailServer, Secret
from crmkit.errors import CrmkitError
from crmkit.mail.archive import MailArchive
from crmkit.mail.imap import poll_once
from crmkit.mail.inbox import InboxRules
from crmkit.mail.journal import CampaignJournal, sends_of
from crmkit.mail.merge import CampaignProblems, MergeReport, parse_rate, plan_campaign, send_campaign
from crmkit.mail.smtp import SMTPSender
from crmkit.mail.template import MergeTemplate
from crmkit.store import Store
from crmkit.testing.mailservers import DovecotServer, ReceivedMessage, SMTPServer, find_dovecot

USER, PASSWORD = "mailer", "smtp-pw-51x"
OFFER = """\
Subject: {{ first_name }}, your offer from {{ account.name | default("us") }}
Content-Type: text/markdown

Dear {{ name }},

**Good news**: {% if deal is defined %}your deal is worth {{ deal.amount | money(deal.currency) }}.{% else %}\
we have an offer for you.{% endif %}

Kind regards
"""


@pytest.fixture(scope="module", params=[False, True], ids=["one-by-one", "pipelining"])
def smtp(request: pytest.FixtureRequest) -> Iterator[SMTPServer]:
    """The server, without and with PIPELINING (RFC 2920): crmkit sends the envelope in one go to the latter."""
    with SMTPServer(auth={USER: PASSWORD}, require_starttls=True, pipelining=request.param) as server:
        yield server


@pytest.fixture
def server(smtp: SMTPServer) -> Iterator[SMTPServer]:
    smtp.reset()
    yield smtp


class Campaign:
    """A folder with a store, a crmkit.toml pointing at the test server, and templates."""

    def __init__(self, folder: Path, server: SMTPServer) -> None:
        self.folder = folder
        self.server = server
        self.store_path = folder / "crm.json"
        self.store = Store(self.store_path)
        self.config_path = folder / "crmkit.toml"
        self.config(extra="")

    def config(self, extra: str, security: str = "starttls") -> None:
        tls = self.server.starttls or self.server.implicit_tls
        self.config_path.write_text(
            f'store = "crm.json"\n[smtp]\nhost = "{self.server.host}"\nport = {self.server.port}\n'
            f'security = "{security}"\nfrom = "Sales <sales@example.com>"\ntimeout = 5\n'
            + (f'user = "{USER}"\n' if self.server.auth else "")
            + (f'cafile = "{self.server.cafile}"\n' if tls else "")
            + extra
        )

    def template(self, text: str, name: str = "offer.txt") -> Path:
        path = self.folder / name
        path.write_text(text, encoding="utf-8")
        return path

    def contacts(self, count: int, **overrides: Callable[[int], Any]) -> list[dict[str, Any]]:
        made = []
        with self.store.transaction():
            for i in range(count):
                values: dict[str, Any] = {"name": f"Nguyễn Thị Hoa {i}", "email": f"hoa{i}@example.com"}
                for key, make in overrides.items():
                    values[key] = make(i)
                made.append(self.store.add("contacts", {k: v for k, v in values.items() if v is not None}))
        return made

    def cli(self, *args: str, password: str = PASSWORD) -> Result:
        env = {"CRMKIT_SMTP_PASSWORD": password, "CRMKIT_CONFIG": str(self.config_path), "CRMKIT_STORE": ""}
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    def sender(self) -> SMTPSender:
        server = MailServer("smtp", self.server.host, self.server.port, security="starttls", user=USER, timeout=5)
        return SMTPSender(server, Secret(PASSWORD), ssl_context=ssl.create_default_context(cafile=str(self.server.cafile)))

    def plan(self, template: Path, name: str = "offer", **options: Any) -> Any:
        return plan_campaign(Store(self.store_path), MergeTemplate.load(template), name=name,
                             from_address="Sales <sales@example.com>", **options)  # fmt: skip

    def entries(self, name: str = "offer") -> dict[str, dict[str, Any]]:
        return {doc["record"]: doc for doc in sends_of(Store(self.store_path), name)}

    def send(self, template: Path, name: str = "offer", **options: Any) -> MergeReport:
        plan_keys = ("to", "where", "limit", "attachments_folder", "unsubscribe_url", "unsubscribe_address")
        plan = plan_campaign(
            Store(self.store_path), MergeTemplate.load(template), name=name,
            from_address="Sales <sales@example.com>", **{k: v for k, v in options.items() if k in plan_keys},
        )  # fmt: skip
        with self.sender() as sender:
            return send_campaign(
                Store(self.store_path), plan, sender, retry_delays=(0.05, 0.1),
                **{k: v for k, v in options.items() if k not in plan_keys},
            )  # fmt: skip


@pytest.fixture
def campaign(tmp_path: Path, server: SMTPServer, monkeypatch: pytest.MonkeyPatch) -> Campaign:
    monkeypatch.delenv("CRMKIT_STORE", raising=False)
    return Campaign(tmp_path, server)


def by_address(messages: list[ReceivedMessage]) -> Counter[str]:
    return Counter(address for m in messages for address in m.rcpt_tos)


# -- dry run ----------------------------------------------------------------------------------------


def test_a_dry_run_sends_nothing_shows_the_first_messages_and_counts_the_skipped(campaign: Campaign) -> None:
    campaign.contacts(6, opt_out=lambda i: i == 2, email_status=lambda i: "bounced" if i == 4 else None)
    template = campaign.template(OFFER)
    result = campaign.cli("merge", str(template), "--preview", "2", "--out", str(campaign.folder / "out"))
    assert result.exit_code == 0, result.output
    assert "Dear Nguyễn Thị Hoa 0" in result.output and "Subject: Nguyễn, your offer from us" in result.output
    assert "4 messages to send; skipped 2 (bounced 1, opted out 1)" in result.output
    assert "Nothing was sent" in result.output
    # --out writes every message of the run, not only the two previewed
    written = sorted((campaign.folder / "out").iterdir())
    assert [p.name for p in written] == ["C-1.eml", "C-2.eml", "C-4.eml", "C-6.eml"]
    assert "4 messages written to" in result.output
    last = message_from_bytes(written[-1].read_bytes(), policy=policy.default)
    assert (str(last["To"]), str(last["From"])) == ("Nguyễn Thị Hoa 5 <hoa5@example.com>", "Sales <sales@example.com>")
    assert "Dear Nguyễn Thị Hoa 5" in last.get_body(("plain",)).get_content()
    time.sleep(0.2)
    assert campaign.server.messages == []
    assert sends_of(Store(campaign.store_path), "offer") == []  # a dry run journals nothing
    data = json.loads(campaign.cli("merge", str(template), "--json").output)
    assert (data["dry_run"], data["recipients"], data["skipped"]) == (True, 4, {"opted out": 1, "bounced": 1})
    assert [p["record"] for p in data["preview"]] == ["C-1", "C-2", "C-4"]


def test_a_dry_run_needs_no_sender_and_says_so_in_one_line(campaign: Campaign) -> None:
    campaign.contacts(2)
    campaign.config_path.write_text('store = "crm.json"\n')  # a new project: no [smtp] yet
    template = campaign.template(OFFER)
    result = campaign.cli("merge", str(template), "--out", str(campaign.folder / "out"))
    assert result.exit_code == 0, result.output
    notice = [line for line in result.stderr.splitlines() if "sender-not-set@example.invalid" in line]
    assert len(notice) == 1 and "[smtp] from" in notice[0] and "From:" in notice[0]
    assert "From: sender-not-set@example.invalid" in result.stdout
    assert "2 messages to send" in result.stdout and "2 messages written to" in result.stdout
    eml = message_from_bytes((campaign.folder / "out" / "C-2.eml").read_bytes(), policy=policy.default)
    assert str(eml["From"]) == "sender-not-set@example.invalid"
    data = json.loads(campaign.cli("merge", str(template), "--json").stdout)  # stdout stays JSON
    assert data["recipients"] == 2
    sending = campaign.cli("merge", str(template), "--send")
    assert sending.exit_code == 1 and "no sender" in sending.output and "Traceback" not in sending.output
    with_from = campaign.template("From: Ana <ana@example.com>\n" + OFFER, "signed.txt")
    signed = campaign.cli("merge", str(with_from))
    assert signed.exit_code == 0 and "sender-not-set" not in signed.output
    time.sleep(0.2)
    assert campaign.server.messages == []


def test_a_mistyped_template_field_is_refused_with_a_suggestion(campaign: Campaign) -> None:
    campaign.contacts(2, phone=lambda i: "0901 234 567" if i else None)
    campaign.store.add("deals", {"title": "A", "contact": "C-1", "amount": "10", "stage": "proposal"})
    typo = campaign.template("Subject: Hi\n\nDear {{ nmae }}, {{ deal.amuont }}\n", "typo.txt")
    result = campaign.cli("merge", str(typo))
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert "C-1 (hoa0@example.com): no value for nmae (did you mean name?)" in result.output
    blank = campaign.template("Subject: Hi\n\nCall {{ phone }} or {{ deal.amuont }}\n", "blank.txt")
    result = campaign.cli("merge", str(blank))
    # C-1 has no phone (no hint: a real field, blank) and a deal whose amount is mistyped
    assert "C-1 (hoa0@example.com): no value for phone\n" in result.output
    blank = campaign.template("Subject: Hi\n\n{{ deal.amuont }}\n", "deal.txt")
    result = campaign.cli("merge", str(blank), "--where", "deal.stage=proposal")
    assert "no value for deal.amuont (did you mean deal.amount?)" in result.output


def test_one_message_reads_in_the_singular(campaign: Campaign) -> None:
    campaign.contacts(1)
    result = campaign.cli("merge", str(campaign.template(OFFER)), "--out", str(campaign.folder / "out"))
    assert "1 message to send." in result.output and "1 message written to" in result.output


# -- the segment and what each person gets ----------------------------------------------------------


def hand_edit(store_path: Path, changes: dict[str, dict[str, Any]]) -> None:
    """Change records in their JSON files, as a person with a text editor (or an old crmkit) might."""
    for record_id, values in changes.items():
        edit_file(store_path, "contacts", record_id, lambda doc, values=values: doc.update(values))


def test_a_segment_of_hundreds_skips_opted_out_bounced_and_invalid_addresses(campaign: Campaign) -> None:
    made = campaign.contacts(
        320,
        opt_out=lambda i: i % 10 == 4,
        email_status=lambda i: "bounced" if i % 15 == 7 else None,
        tags=lambda i: ["newsletter"] if i % 2 == 0 else None,
        email=lambda i: None if i % 41 == 0 else f"hoa{i}@example.com",
    )
    hand_edit(campaign.store_path, {"C-6": {"email": "not an address"}, "C-10": {"email": "a@x.example, b@y.example"}})
    template = campaign.template(OFFER)
    report = campaign.send(template, where=["tags=newsletter"])
    expected = {
        doc["email"] for i, doc in enumerate(made)
        if i % 2 == 0 and i % 10 != 4 and i % 15 != 7 and i % 41 != 0
    }  # fmt: skip
    received = by_address(campaign.server.wait_for(len(expected)))
    assert set(received) == expected and set(received.values()) == {1}
    assert report.sent == len(expected) and not report.failed and not report.uncertain
    # C-6 and C-10 (hand-edited bad addresses) are not in this segment; the next one has them
    assert report.skipped == {
        "opted out": sum(1 for i in range(0, 320, 2) if i % 10 == 4),
        "bounced": sum(1 for i in range(0, 320, 2) if i % 15 == 7 and i % 10 != 4),
        "no email address": sum(1 for i in range(0, 320, 2) if i % 41 == 0 and i % 15 != 7 and i % 10 != 4),
    }
    campaign.server.clear()
    hand_edit(campaign.store_path, {"C-6": {"tags": ["vip"]}, "C-10": {"tags": ["vip"]}, "C-3": {"tags": ["vip"]}})
    report = campaign.send(template, name="vip", where=["tags=vip"])
    assert report.skipped == {"not a valid email address": 2} and report.sent == 1
    assert by_address(campaign.server.wait_for(1)) == {"hoa2@example.com": 1}


def test_each_person_gets_their_own_message_with_names_and_related_records_intact(campaign: Campaign) -> None:
    store = campaign.store
    account = store.add("accounts", {"name": "Công ty Sao Mai", "tier": "A"})
    hoa = store.add("contacts", {"name": "Nguyễn Thị Hoa", "email": "hoa@saomai.vn", "account": account["id"]})
    store.add("contacts", {"name": "Ana Lima", "email": "ana@example.com"})
    store.add("deals", {"title": "Máy in", "contact": hoa["id"], "amount": "12500000", "currency": "VND",
                        "stage": "proposal"})  # fmt: skip
    report = campaign.send(campaign.template(OFFER))
    assert report.sent == 2
    got = {m.rcpt_tos[0]: m.message for m in campaign.server.wait_for(2)}
    hoa_mail = got["hoa@saomai.vn"]
    assert str(hoa_mail["To"]) == "Nguyễn Thị Hoa <hoa@saomai.vn>"
    assert str(hoa_mail["Subject"]) == "Nguyễn, your offer from Công ty Sao Mai"
    assert str(hoa_mail["From"]) == "Sales <sales@example.com>"
    plain = hoa_mail.get_body(("plain",)).get_content()
    html = hoa_mail.get_body(("html",)).get_content()
    assert "Dear Nguyễn Thị Hoa," in plain and "12,500,000 VND" in plain
    assert "<strong>Good news</strong>" in html and "Nguyễn Thị Hoa" in html
    assert "we have an offer for you" in got["ana@example.com"].get_body(("plain",)).get_content()
    # a proper Message-ID and Date, and a way out (RFC 2369)
    assert hoa_mail["Message-ID"].endswith("@example.com>") and hoa_mail["Date"].datetime is not None
    assert hoa_mail["List-Unsubscribe"] == "<mailto:sales@example.com?subject=unsubscribe>"
    # every send is on the person's timeline, with the Message-ID a reply will carry
    [logged] = [a for a in Store(campaign.store_path).all("activities") if a.get("contact") == hoa["id"]]
    assert (logged["kind"], logged["message_id"]) == ("email_out", hoa_mail["Message-ID"])
    assert logged["subject"] == "Nguyễn, your offer from Công ty Sao Mai"


def test_data_can_never_add_a_header_or_a_recipient(campaign: Campaign) -> None:
    campaign.contacts(3, name=lambda i: ["Eve, eve@evil.example", "eve@evil.example", "Bob \"Boss\" <x@evil.example>"][i])
    hand_edit(campaign.store_path, {"C-1": {"name": "Joe\r\nBcc: eve@evil.example"}})
    template = campaign.template(
        "Subject: Hello {{ name }}\nTo: {{ name }} <{{ email }}>\nReply-To: {{ name }} <{{ email }}>\n\nHi {{ name }}\n"
    )
    report = campaign.send(template)
    assert report.sent == 3
    messages = campaign.server.wait_for(3)
    assert sorted(m.rcpt_tos for m in messages) == [("hoa0@example.com",), ("hoa1@example.com",), ("hoa2@example.com",)]
    for received in messages:
        msg = received.message
        assert "Bcc" not in msg and "evil" not in str(msg["To"].addresses[0].addr_spec)
        assert len(msg["To"].addresses) == 1 and len(msg["Reply-To"].addresses) == 1
        assert [k for k in msg if k.lower() == "bcc"] == []
        assert not msg.defects
    subjects = sorted(str(m.message["Subject"]) for m in messages)
    assert "Hello Joe Bcc: eve@evil.example" in subjects


def test_a_field_missing_for_anyone_is_reported_and_nothing_is_sent(campaign: Campaign) -> None:
    campaign.contacts(4)
    campaign.store.add("deals", {"title": "A", "contact": "C-2", "amount": "10", "stage": "proposal"})
    template = campaign.template("Subject: Your deal\n\nIt is worth {{ deal.amount }}, {{ phone }}.\n")
    with pytest.raises(CampaignProblems) as caught:
        campaign.send(template)
    problems = caught.value.problems
    assert len(problems) == 4
    assert problems[0].startswith("C-1 (hoa0@example.com): no value for deal")
    assert "C-2 (hoa1@example.com): no value for phone" in problems
    result = campaign.cli("merge", str(template), "--send")
    assert result.exit_code == 1 and "4 problems, nothing was sent" in result.output
    time.sleep(0.2)
    assert campaign.server.messages == [] and sends_of(Store(campaign.store_path), "offer") == []


def test_each_person_gets_their_own_attachment_and_paths_must_stay_in_the_folder(campaign: Campaign) -> None:
    campaign.contacts(3)
    invoices = campaign.folder / "invoices"
    invoices.mkdir()
    for i in range(3):
        campaign.store.add("invoices", {"number": f"INV-{i}", "contact": f"C-{i + 1}", "status": "sent",
                                        "due_date": "2026-12-01", "currency": "EUR"})  # fmt: skip
        (invoices / f"INV-{i}.pdf").write_bytes(b"%PDF-1.4 invoice " + str(i).encode() * 100)
    (campaign.folder / "brochure.pdf").write_bytes(b"%PDF brochure")
    template = campaign.template(
        "Subject: Invoice {{ invoice.number }}\nAttachment: invoices/{{ invoice.number }}.pdf\n"
        "Attachment: brochure.pdf\n\nDue {{ invoice.due_date | date }}.\n"
    )
    report = campaign.send(template)
    assert report.sent == 3
    for received in campaign.server.wait_for(3):
        msg = received.message
        number = str(msg["Subject"]).split()[-1]
        files = {part.get_filename(): part.get_content() for part in msg.iter_attachments()}
        assert files == {f"{number}.pdf": (invoices / f"{number}.pdf").read_bytes(), "brochure.pdf": b"%PDF brochure"}
        assert "Due 01 December 2026." in msg.get_body(("plain",)).get_content()
    # a missing file, or a path from data that leaves the folder, stops the campaign before sending
    campaign.server.clear()
    (invoices / "INV-1.pdf").unlink()
    (campaign.folder.parent / "secret.txt").write_text("secret")
    edit_file(campaign.store_path, "invoices", "INV-3", lambda doc: doc.update(number="../../secret.txt#"))
    template = campaign.template("Subject: x\nAttachment: invoices/{{ invoice.number | replace('#', '') }}\n\nx\n", "x.txt")
    with pytest.raises(CampaignProblems) as caught:
        campaign.send(template, name="again")
    assert any("C-2" in p and "not found" in p for p in caught.value.problems)
    assert any("C-3" in p and "outside the attachment folder" in p for p in caught.value.problems)
    time.sleep(0.2)
    assert campaign.server.messages == []


# -- the journal: stop, kill, run again ----------------------------------------------------------------

KILLED_RUN = """
import sys
from crmkit.cli import main
sys.argv = ["crmkit", "merge", sys.argv[1], "--send", "--rate", "80/s"]
main()
"""


def test_a_run_killed_mid_campaign_then_run_again_mails_everyone_exactly_once(campaign: Campaign) -> None:
    campaign.contacts(150)
    template = campaign.template(OFFER)
    env = {**os.environ, "CRMKIT_SMTP_PASSWORD": PASSWORD, "CRMKIT_CONFIG": str(campaign.config_path)}
    env.pop("CRMKIT_STORE", None)
    kills = 0
    for target in (20, 55, 90):
        process = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(template)], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
        deadline = time.monotonic() + 30
        while len(campaign.server.messages) < target and process.poll() is None and time.monotonic() < deadline:
            time.sleep(0.005)
        process.send_signal(signal.SIGKILL)
        _, err = process.communicate()
        assert process.returncode == -signal.SIGKILL, err
        kills += 1
    received_before = len(campaign.server.messages)
    assert 90 <= received_before < 150, "the kills did not land mid-run"
    result = campaign.cli("merge", str(template), "--send", "--json")
    report = json.loads(result.output)
    counts = by_address(campaign.server.messages)
    assert max(counts.values()) == 1, "someone got the message twice"
    missing = {f"hoa{i}@example.com" for i in range(150)} - set(counts)
    uncertain = {item["address"] for item in report["uncertain"]}
    assert missing <= uncertain and len(uncertain) <= kills  # at most the message in flight at each kill
    assert result.exit_code == (3 if uncertain else 0)
    store = Store(campaign.store_path)
    sent = [doc for doc in sends_of(store, "offer") if doc["status"] == "sent"]
    assert len(sent) == 150 - len(uncertain)
    logged = Counter(a["message_id"] for a in store.all("activities"))
    assert set(logged.values()) == {1} and len(logged) == len(sent)  # one timeline entry per send
    # asked for, the uncertain ones are sent again, with the Message-ID they were first sent with
    if uncertain:
        first_ids = {doc["address"]: doc["message_id"] for doc in sends_of(store, "offer") if doc["status"] == "uncertain"}
        campaign.server.clear()
        again = campaign.cli("merge", str(template), "--send", "--resend-uncertain")
        assert again.exit_code == 0, again.output
        resent = campaign.server.wait_for(len(uncertain))
        assert {m.rcpt_tos[0]: str(m.message["Message-ID"]) for m in resent} == first_ids


def test_the_journal_replayed_twice_after_a_crash_logs_each_send_once(campaign: Campaign) -> None:
    campaign.contacts(3)
    store = Store(campaign.store_path)
    journal = CampaignJournal(store, "replay")
    with journal:
        journal.start({}, [("C-1", "hoa0@example.com"), ("C-2", "hoa1@example.com"), ("C-3", "hoa2@example.com")])
        for record_id in ("C-1", "C-2", "C-3"):
            journal.sending(record_id, address="x@example.com", message_id=f"<{record_id}@t>")
        journal.sent("C-1", activity={"kind": "email_out", "subject": "s", "message_id": "<C-1@t>"})
        journal.failed("C-2", answer="550 no such user", code=550)
        written_ahead = journal.wal_path.read_bytes()
        journal._wal_fd and os.close(journal._wal_fd)  # a kill: nothing folded, the file stays
        journal._wal_fd = None
    # a crash after the store took the steps over but before the file was emptied: replay it again
    for _ in range(2):
        journal.wal_path.write_bytes(written_ahead)
        with CampaignJournal(Store(campaign.store_path), "replay") as again:
            assert again.counts() == {"queued": 0, "sending": 0, "sent": 1, "failed": 1, "uncertain": 1}
    store = Store(campaign.store_path)
    assert [a["message_id"] for a in store.all("activities")] == ["<C-1@t>"]
    entries = {doc["record"]: doc for doc in sends_of(store, "replay")}
    assert entries["C-2"]["answer"] == "550 no such user"
    assert entries["C-3"]["status"] == "uncertain" and entries["C-3"]["message_id"] == "<C-3@t>"


def test_one_run_at_a_time_per_campaign(campaign: Campaign) -> None:
    first, second = CampaignJournal(Store(campaign.store_path), "solo"), CampaignJournal(Store(campaign.store_path), "solo")
    with first, pytest.raises(CrmkitError, match="another crmkit"), second:
        pass


# -- what the server says -----------------------------------------------------------------------------


def test_refused_recipients_are_failed_the_others_are_sent_and_a_rerun_does_not_retry_them(
    campaign: Campaign,
) -> None:
    campaign.contacts(5)
    campaign.server.refuse.update({"hoa1@example.com", "boss@example.com"})
    # every message also goes to a Cc the server refuses: it reaches the others all the same
    template = campaign.template("Subject: Hi\nCc: Boss <boss@example.com>\n\nHi\n")
    result = campaign.cli("merge", str(template), "--send", "--json")
    assert result.exit_code == 3
    report = json.loads(result.output)
    assert report["sent"] == 4
    [failed] = report["failed"]
    assert failed["record"] == "C-2" and failed["code"] == 550 and "Recipient address rejected" in failed["answer"]
    received = by_address(campaign.server.wait_for(4))
    assert set(received) == {"hoa0@example.com", "hoa2@example.com", "hoa3@example.com", "hoa4@example.com"}
    entries = {doc["record"]: doc for doc in sends_of(Store(campaign.store_path), "offer")}
    assert entries["C-4"]["status"] == "sent" and "550" in entries["C-4"]["refused"]["boss@example.com"]
    campaign.server.clear()
    campaign.server.refuse.clear()
    again = json.loads(campaign.cli("merge", str(template), "--send", "--json").output)
    assert again["sent"] == 0 and again["already_sent"] == 4 and [f["record"] for f in again["failed"]] == ["C-2"]
    retried = json.loads(campaign.cli("merge", str(template), "--send", "--json", "--retry-failed").output)
    assert retried["sent"] == 1
    assert by_address(campaign.server.wait_for(1)) == {"hoa1@example.com": 1, "boss@example.com": 1}


def test_temporary_refusals_are_retried_with_back_off(campaign: Campaign) -> None:
    campaign.contacts(3)
    campaign.server.fail_next(2, 451, at="RCPT")
    report = campaign.send(campaign.template(OFFER))
    assert report.sent == 3 and not report.failed
    assert by_address(campaign.server.wait_for(3)) == {f"hoa{i}@example.com": 1 for i in range(3)}
    # refused for longer than the run's tries: failed for now, and the next run tries again by itself
    campaign.server.clear()
    campaign.contacts(1, email=lambda i: "late@example.com")
    campaign.server.fail_next(10, 452, at="RCPT")
    report = campaign.send(campaign.template(OFFER))
    assert [f["record"] for f in report.failed] == ["C-4"] and report.failed[0]["code"] == 452
    campaign.server.fail_next(0)
    report = campaign.send(campaign.template(OFFER))
    assert report.sent == 1 and by_address(campaign.server.wait_for(1)) == {"late@example.com": 1}


def test_a_connection_broken_after_handing_a_message_over_makes_it_uncertain_and_the_run_goes_on(
    campaign: Campaign,
) -> None:
    campaign.contacts(6)
    campaign.server.drop_after(3, before_reply=True)  # the 3rd message is kept, its 250 never sent
    report = campaign.send(campaign.template(OFFER))
    assert [u["record"] for u in report.uncertain] == ["C-3"]
    assert report.sent == 5
    assert by_address(campaign.server.wait_for(6)) == {f"hoa{i}@example.com": 1 for i in range(6)}
    again = campaign.send(campaign.template(OFFER))
    assert again.sent == 0 and [u["record"] for u in again.uncertain] == ["C-3"]


def test_a_connection_dropped_between_messages_is_opened_again(campaign: Campaign) -> None:
    campaign.contacts(5)
    campaign.server.drop_after(2, before_reply=False)  # 250 sent, then the connection is gone
    report = campaign.send(campaign.template(OFFER))
    assert report.sent == 5 and not report.uncertain
    assert by_address(campaign.server.wait_for(5)) == {f"hoa{i}@example.com": 1 for i in range(5)}


def test_a_wrong_password_sends_nothing_and_loses_nothing(campaign: Campaign) -> None:
    campaign.contacts(3)
    template = campaign.template(OFFER)
    result = campaign.cli("merge", str(template), "--send", password="wrong-pw")
    assert result.exit_code == 1 and "refused the login of mailer" in result.output and "wrong-pw" not in result.output
    assert {doc["status"] for doc in sends_of(Store(campaign.store_path), "offer")} == {"queued"}
    assert campaign.cli("merge", str(template), "--send").exit_code == 0
    assert by_address(campaign.server.wait_for(3)) == {f"hoa{i}@example.com": 1 for i in range(3)}


def test_non_ascii_addresses_use_smtputf8(campaign: Campaign) -> None:
    campaign.contacts(2, email=lambda i: ["hòa@ví-dụ.example", "ana@example.com"][i])
    report = campaign.send(campaign.template(OFFER))
    assert report.sent == 2
    got = {m.rcpt_tos[0]: m for m in campaign.server.wait_for(2)}
    assert got["hòa@ví-dụ.example"].smtputf8 and not got["ana@example.com"].smtputf8
    assert b"\r\nTo: =?utf-8?b?" in got["hòa@ví-dụ.example"].data  # the name encoded, the address as it is
    assert "<hòa@ví-dụ.example>\r\n".encode() in got["hòa@ví-dụ.example"].data


# -- pace -------------------------------------------------------------------------------------------------


def test_a_daily_quota_spreads_a_campaign_and_a_rerun_goes_on_within_it(campaign: Campaign) -> None:
    campaign.contacts(12)
    template = campaign.template(OFFER)
    first = campaign.send(template, per_day=5)
    assert (first.sent, first.remaining) == (5, 7) and "quota" in (first.stopped or "")
    assert campaign.send(template, per_day=5).sent == 0  # the same day: the quota is spent
    # another campaign the same day counts against the same quota
    assert campaign.send(template, name="other", per_day=5).sent == 0
    later = campaign.send(template, per_day=10)  # e.g. the next day's allowance
    assert later.sent == 5 and later.already_sent == 5
    assert set(by_address(campaign.server.messages).values()) == {1}


def test_the_rate_spaces_messages(campaign: Campaign) -> None:
    campaign.contacts(6)
    started = time.monotonic()
    report = campaign.send(campaign.template(OFFER), rate=parse_rate("20/s"))
    assert report.sent == 6 and time.monotonic() - started >= 5 * 0.05 * 0.9
    assert parse_rate("30/min").interval == 2.0 and parse_rate("500/hours").count == 500
    with pytest.raises(CrmkitError, match="30/min"):
        parse_rate("fast")


def test_one_click_unsubscribe_is_offered_when_configured(campaign: Campaign) -> None:
    campaign.contacts(1)
    campaign.config(
        '[merge]\nunsubscribe_url = "https://example.com/u?c={campaign}&r={record}&e={email}"\n'
        'unsubscribe_address = "optout@example.com"\n'
    )
    result = campaign.cli("merge", str(campaign.template(OFFER)), "--send", "--name", "Spring sale")
    assert result.exit_code == 0, result.output
    [received] = campaign.server.wait_for(1)
    assert received.message["List-Unsubscribe"] == (
        "<mailto:optout@example.com?subject=unsubscribe>, "
        "<https://example.com/u?c=Spring%20sale&r=C-1&e=hoa0%40example.com>"
    )
    assert received.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    listed = json.loads(campaign.cli("campaigns", "list", "--json").output)
    assert [(c["name"], c["counts"]["sent"]) for c in listed] == [("Spring sale", 1)]
    shown = json.loads(campaign.cli("campaigns", "show", "Spring sale", "--json").output)
    assert shown[0]["status"] == "sent" and shown[0]["message_id"] == received.message["Message-ID"]


# -- replies come back through the support inbox ----------------------------------------------------


@pytest.mark.skipif(
    find_dovecot() is None and not os.environ.get("CRMKIT_REQUIRE_SERVERS"),
    reason="dovecot is not installed (apt-get install dovecot-imapd)",
)
def test_replies_to_a_campaign_come_back_onto_the_contacts_timeline_and_unsubscribe_them(
    campaign: Campaign, tmp_path_factory: pytest.TempPathFactory
) -> None:
    campaign.contacts(2)
    template = campaign.template(OFFER)
    assert campaign.send(template).sent == 2
    sent = {m.rcpt_tos[0]: m.message for m in campaign.server.wait_for(2)}

    def reply(person: str, text: str) -> bytes:
        original = sent[person]
        return (
            f"From: {person}\r\nTo: sales@example.com\r\nSubject: Re: offer\r\n"
            f"Message-ID: <reply-{person}>\r\nIn-Reply-To: {original['Message-ID']}\r\n"
            f"References: {original['Message-ID']}\r\n\r\n{text}\r\n\r\n> Dear ...\r\n"
        ).encode()

    with DovecotServer(tmp_path_factory.mktemp("imap")) as dovecot:
        dovecot.add_user("sales", "imap-pw")
        dovecot.append("sales", "INBOX", reply("hoa0@example.com", "Yes please, call me on Monday."))
        dovecot.append("sales", "INBOX", reply("hoa1@example.com", "Unsubscribe"))
        server = MailServer("imap", dovecot.host, dovecot.ssl_port, security="ssl", user="sales", timeout=10)
        report = poll_once(
            Store(campaign.store_path), server, Secret("imap-pw"), rules=InboxRules(),
            archive=MailArchive(campaign.store_path), after="none",
            ssl_context=ssl.create_default_context(cafile=str(dovecot.cafile)),
        )  # fmt: skip
    assert report.messages == 2
    store = Store(campaign.store_path)
    timeline = [(a["kind"], a.get("message_id")) for a in store.all("activities") if a.get("contact") == "C-1"]
    assert timeline == [("email_out", sent["hoa0@example.com"]["Message-ID"]), ("email_in", "<reply-hoa0@example.com>")]
    assert store.get("C-2")["opt_out"] is True and not store.get("C-1").get("opt_out")
    # the next campaign leaves out the person who asked to stop
    campaign.server.clear()
    later = campaign.send(template, name="next")
    assert later.sent == 1 and later.skipped == {"opted out": 1}
    assert by_address(campaign.server.wait_for(1)) == {"hoa0@example.com": 1}


# -- connections ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["ssl", "plain"])
def test_implicit_tls_and_a_plain_local_relay_work_too(tmp_path: Path, mode: str) -> None:
    with SMTPServer(implicit_tls=mode == "ssl", auth={USER: PASSWORD} if mode == "ssl" else None) as relay:
        campaign = Campaign(tmp_path, relay)
        campaign.config("", security=mode)
        campaign.contacts(2)
        result = campaign.cli("merge", str(campaign.template(OFFER)), "--send")
        assert result.exit_code == 0, result.output
        assert by_address(relay.wait_for(2)) == {"hoa0@example.com": 1, "hoa1@example.com": 1}
        assert {m.login for m in relay.messages} == ({USER} if mode == "ssl" else {None})


def test_a_certificate_that_cannot_be_verified_sends_nothing(campaign: Campaign) -> None:
    campaign.contacts(2)
    # the test server's certificate is signed by a throwaway CA the system does not trust
    campaign.config_path.write_text(campaign.config_path.read_text().replace(f'cafile = "{campaign.server.cafile}"\n', ""))
    result = campaign.cli("merge", str(campaign.template(OFFER)), "--send")
    assert result.exit_code == 1 and "TLS with the SMTP server" in result.output
    time.sleep(0.2)
    assert campaign.server.messages == []
    assert {doc["status"] for doc in sends_of(Store(campaign.store_path), "offer")} == {"queued"}


# -- found in review: each of these failed before its fix -------------------------------------------


def test_a_temporary_refusal_of_the_person_is_retried_without_mailing_the_cc_again(campaign: Campaign) -> None:
    campaign.contacts(1)
    template = campaign.template("Subject: Hi\nCc: Boss <boss@example.com>\n\nHi\n")
    campaign.server.fail_next(1, 451, at="RCPT")  # the person's own address, once; the Cc is taken
    assert campaign.send(template).sent == 1
    assert by_address(campaign.server.wait_for(2)) == {"boss@example.com": 1, "hoa0@example.com": 1}
    # refused for longer than a run tries: the next run tries again, still without the Cc
    campaign.server.clear()
    campaign.contacts(1, email=lambda i: "late@example.com")
    campaign.server.fail_next(6, 451, at="RCPT")  # both RCPTs of each of the run's three tries
    first = campaign.send(template)
    entry = campaign.entries()["C-2"]
    assert (entry["status"], entry["temporary"], entry["code"]) == ("failed", True, 451), (first.as_json(), entry)
    campaign.server.fail_next(0)
    assert campaign.send(template).sent == 1
    assert by_address(campaign.server.messages) == {"late@example.com": 1, "boss@example.com": 1}


def test_a_perhaps_delivered_message_keeps_its_message_id_on_every_later_try(campaign: Campaign) -> None:
    campaign.contacts(1)
    template = campaign.template("Subject: Hi\n\nHi\n")
    campaign.server.drop_after(1, before_reply=True)
    assert [u["record"] for u in campaign.send(template).uncertain] == ["C-1"]
    first_id = str(campaign.server.wait_for(1)[0].message["Message-ID"])
    campaign.server.fail_next(10, 451, at="RCPT")
    assert campaign.send(template, resend_uncertain=True).failed[0]["code"] == 451
    campaign.server.fail_next(0)
    campaign.send(template)  # a temporary failure is tried again by itself
    assert [str(m.message["Message-ID"]) for m in campaign.server.messages] == [first_id, first_id]


def test_an_attachment_gone_during_the_run_fails_that_person_only(campaign: Campaign) -> None:
    campaign.contacts(3)
    for i in (1, 2, 3):
        (campaign.folder / f"C-{i}.pdf").write_bytes(b"%PDF " + bytes([48 + i]) * 50)
    plan = campaign.plan(campaign.template("Subject: Hi\nAttachment: {{ id }}.pdf\n\nHi\n"))
    (campaign.folder / "C-2.pdf").unlink()  # tidied away while the campaign runs
    with campaign.sender() as sender:
        report = send_campaign(Store(campaign.store_path), plan, sender)
    assert by_address(campaign.server.wait_for(2)) == {"hoa0@example.com": 1, "hoa2@example.com": 1}
    assert report.sent == 2 and [f["record"] for f in report.failed] == ["C-2"]
    assert "cannot read an attachment" in report.failed[0]["answer"]
    assert {k: v["status"] for k, v in campaign.entries().items()} == {"C-1": "sent", "C-2": "failed", "C-3": "sent"}


def test_a_run_the_server_stops_reports_what_it_sent_and_the_next_run_goes_on(campaign: Campaign) -> None:
    import threading

    campaign.contacts(6)
    template = campaign.template(OFFER)

    def go_away_after_two() -> None:
        campaign.server.wait_for(2)
        campaign.server.fail_next(100, 421, at="MAIL")  # "closing": it will not talk for a while

    threading.Thread(target=go_away_after_two, daemon=True).start()
    result = campaign.cli("merge", str(template), "--send", "--json", "--rate", "20/s")
    report = json.loads(result.output)
    assert result.exit_code == 1 and report["error"] is True and "421" in report["stopped"]
    assert report["sent"] >= 2 and report["sent"] + report["remaining"] == 6
    campaign.server.fail_next(0)
    again = json.loads(campaign.cli("merge", str(template), "--send", "--json").output)
    assert (again["sent"], again["already_sent"]) == (6 - report["sent"], report["sent"])
    assert by_address(campaign.server.messages) == {f"hoa{i}@example.com": 1 for i in range(6)}


def test_a_sender_on_an_internationalised_domain_gets_ascii_message_ids(campaign: Campaign) -> None:
    campaign.contacts(1)
    campaign.send(campaign.template("Subject: Hi\nFrom: Verkauf <verkauf@müller.example>\n\nHi\n"))
    [got] = campaign.server.wait_for(1)
    assert str(got.message["Message-ID"]).endswith("@xn--mller-kva.example>")
    assert got.message["List-Unsubscribe"] == "<mailto:verkauf@xn--mller-kva.example?subject=unsubscribe>"
    assert campaign.entries()["C-1"]["message_id"] == str(got.message["Message-ID"])


def test_a_journal_that_cannot_open_lets_go_of_the_campaign(campaign: Campaign) -> None:
    from crmkit.errors import StoreLockedError

    holder = Store(campaign.store_path)
    journal = CampaignJournal(Store(campaign.store_path, lock_timeout=0.2), "offer")
    with holder.transaction(), pytest.raises(StoreLockedError), journal:  # another process holds the store
        pass
    with CampaignJournal(Store(campaign.store_path), "offer") as journal:
        assert journal.counts()["sent"] == 0


def test_reruns_with_other_segments_never_mail_an_address_twice(campaign: Campaign) -> None:
    campaign.store.add("contacts", {"name": "Ana", "email": "ana@example.com", "tags": ["a"]})
    campaign.store.add("contacts", {"name": "Ana L.", "email": "ana@example.com", "tags": ["b"]}, force=True)
    template = campaign.template("Subject: Hi\n\nHi\n")
    assert campaign.send(template, where=["tags=a"]).sent == 1
    second = campaign.send(template, where=["tags=b"])
    assert second.sent == 0 and second.skipped == {"address already in this campaign": 1}
    assert by_address(campaign.server.messages) == {"ana@example.com": 1}


def test_someone_who_opts_out_while_a_campaign_runs_is_not_mailed(campaign: Campaign) -> None:
    campaign.contacts(3)
    plan = campaign.plan(campaign.template("Subject: Hi\n\nHi\n"))
    Store(campaign.store_path).update("C-3", {"opt_out": True})  # the poller files an "unsubscribe"
    with campaign.sender() as sender:
        report = send_campaign(Store(campaign.store_path), plan, sender)
    assert report.sent == 2 and report.skipped == {"opted out": 1}
    assert by_address(campaign.server.wait_for(2)) == {"hoa0@example.com": 1, "hoa1@example.com": 1}


def test_limit_works_through_a_segment_run_after_run(campaign: Campaign) -> None:
    campaign.contacts(5, opt_out=lambda i: i == 1)
    template = campaign.template("Subject: Hi\n\nHi\n")
    assert [campaign.send(template, limit=2).sent for _ in range(3)] == [2, 2, 0]
    assert by_address(campaign.server.messages) == {f"hoa{i}@example.com": 1 for i in (0, 2, 3, 4)}


def test_another_template_under_a_campaign_name_in_use_is_refused(campaign: Campaign) -> None:
    campaign.contacts(2)
    (campaign.folder / "spring").mkdir()
    (campaign.folder / "autumn").mkdir()
    spring = campaign.template("Subject: Spring sale\n\nSpring\n", "spring/offer.txt")
    autumn = campaign.template("Subject: Autumn sale\n\nAutumn\n", "autumn/offer.txt")
    assert campaign.cli("merge", str(spring), "--send").exit_code == 0
    refused = campaign.cli("merge", str(autumn), "--send")
    assert refused.exit_code == 1 and "its own --name" in refused.output
    assert campaign.cli("merge", str(autumn), "--send", "--name", "autumn").exit_code == 0
    spring.write_text("Subject: Spring sale (fixed)\n\nSpring\n")  # edited in place: the same campaign
    assert campaign.cli("merge", str(spring), "--send").exit_code == 0
    assert by_address(campaign.server.messages) == {"hoa0@example.com": 2, "hoa1@example.com": 2}


def test_odd_templates_and_data_are_reported_not_crashed_on(campaign: Campaign) -> None:
    campaign.contacts(1, title=lambda i: "x" * 300)
    bom = campaign.folder / "bom.txt"
    bom.write_bytes("\ufeffSubject: Olá\n\nOlá\n".encode())  # as Windows editors save UTF-8
    assert campaign.cli("merge", str(bom)).exit_code == 0
    long_name = campaign.template("Subject: Hi\nAttachment: {{ title }}.pdf\n\nHi\n", "long.txt")
    result = campaign.cli("merge", str(long_name))
    assert result.exit_code == 1 and "1 problem, nothing was sent" in result.output and "File name too long" in result.output


def test_deals_without_a_contact_are_counted_as_skipped(campaign: Campaign) -> None:
    [contact] = campaign.contacts(1)
    campaign.store.add("deals", {"title": "D", "contact": contact["id"], "amount": "5", "stage": "proposal"})
    campaign.store.add("deals", {"title": "No contact", "amount": "5", "stage": "proposal"})
    result = campaign.cli("merge", str(campaign.template(OFFER)), "--to", "deals", "--json")
    data = json.loads(result.output)
    assert (data["recipients"], data["skipped"]) == (1, {"deal without a contact": 1})
    assert "your deal is worth 5.00" in data["preview"][0]["message"]


def test_account_and_deal_filters_and_the_dry_run_after_a_send(campaign: Campaign) -> None:
    """Found in a walk through the README: account.x never matched; the dry run counted sent ones twice."""
    campaign.store.add("accounts", {"name": "Acme", "tier": "A"})
    campaign.store.add("accounts", {"name": "Bolt", "tier": "B"})
    campaign.contacts(3, account=lambda i: ["A-1", "A-2", "A-1"][i])
    campaign.store.add("deals", {"title": "D", "contact": "C-2", "stage": "proposal", "amount": "5"})
    template = campaign.template(OFFER)
    tier_a = json.loads(campaign.cli("merge", str(template), "--where", "account.tier=A", "--json").output)
    assert tier_a["recipients"] == 2 and [p["record"] for p in tier_a["preview"]] == ["C-1", "C-3"]
    proposal = json.loads(campaign.cli("merge", str(template), "--where", "deal.stage=proposal", "--json").output)
    assert [p["record"] for p in proposal["preview"]] == ["C-2"]
    assert campaign.cli("merge", str(template), "--where", "account.tier=A", "--send").exit_code == 0
    again = campaign.cli("merge", str(template), "--where", "account.tier=A")
    assert "0 messages to send; 2 already sent" in again.output
    misuse = campaign.cli("merge", str(template), "--send", "--out", str(campaign.folder / "x"))
    assert misuse.exit_code == 2 and "--out" in misuse.output


def test_failures_left_by_an_earlier_run_are_told_apart_from_new_ones(campaign: Campaign) -> None:
    campaign.contacts(2)
    campaign.server.refuse.add("hoa1@example.com")
    template = campaign.template(OFFER)
    first = campaign.cli("merge", str(template), "--send")
    assert first.exit_code == 3 and "failed: C-2 <hoa1@example.com>: every recipient refused" in first.output
    again = campaign.cli("merge", str(template), "--send")
    assert "failed: C-2" not in again.output
    assert "left from earlier runs: 1 failed (--retry-failed tries again)" in again.output
    data = json.loads(campaign.cli("merge", str(template), "--send", "--json").output)
    assert [(f["record"], f["earlier"]) for f in data["failed"]] == [("C-2", True)]


def test_a_journal_written_before_activities_named_their_person_is_still_logged_on_them(campaign: Campaign) -> None:
    """Found in review: the journal format of an earlier crmkit, left by a kill, recovered after an upgrade."""
    import orjson

    [person] = campaign.contacts(1)
    journal = CampaignJournal(campaign.store, "offer")
    with journal:
        journal.start({}, [(person["id"], person["email"])])
    activity = {"kind": "email_out", "subject": "Hi", "message_id": "<m1@x>", "sender": "s@example.com"}
    steps = [{"record": person["id"], "status": "sending", "address": person["email"], "message_id": "<m1@x>",
              "at": "2026-01-01T00:00:00+00:00"},
             {"record": person["id"], "status": "sent", "at": "2026-01-01T00:00:01+00:00", "activity": activity}]  # fmt: skip
    journal.wal_path.write_bytes(b"".join(orjson.dumps(step) + b"\n" for step in steps))
    with CampaignJournal(Store(campaign.store_path), "offer"):
        pass
    [entry] = sends_of(Store(campaign.store_path), "offer")
    assert Store(campaign.store_path).get(entry["activity"])["contact"] == person["id"]


def test_a_typo_in_an_account_or_deal_filter_is_refused(campaign: Campaign) -> None:
    campaign.store.add("accounts", {"name": "Acme", "tier": "A"})
    campaign.contacts(1, account=lambda i: "A-1")
    campaign.store.add("deals", {"title": "D", "contact": "C-1", "stage": "won", "amount": "1"})
    template = campaign.template(OFFER)
    for where, hint in (("deal.stge=won", "stage"), ("account.tierr=A", "tier")):
        result = campaign.cli("merge", str(template), "--where", where)
        assert result.exit_code == 1 and f"did you mean {hint}?" in result.output
