"""``crmkit poll`` end to end: mail APPENDed to a real Dovecot, read over IMAP, filed into the store.

Each test has its own Dovecot user (so its own mailbox), store and crmkit.toml; one Dovecot
serves the module. What the poller did is read back the way a person would: ``crmkit cases
list --json``, ``crmkit contacts show ID --json``, ``crmkit activities list --json``.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result
from imapclient import IMAPClient

from crmkit.cli import main
from crmkit.config import MailServer, Secret
from crmkit.mail import filing
from crmkit.mail.archive import MailArchive
from crmkit.mail.imap import PollReport, mailbox_key, poll_idle, poll_once, synthetic_message_id
from crmkit.mail.inbox import InboxRules
from crmkit.store import Store
from crmkit.testing.mailservers import DovecotServer, SMTPServer, find_dovecot

REQUIRE_SERVERS = bool(os.environ.get("CRMKIT_REQUIRE_SERVERS"))
pytestmark = pytest.mark.skipif(
    find_dovecot() is None and not REQUIRE_SERVERS,
    reason="dovecot is not installed (apt-get install dovecot-imapd); CRMKIT_REQUIRE_SERVERS=1 makes this an error",
)

PASSWORD = "imap-pw-7f3k9"  # every test user's; CRMKIT_IMAP_PASSWORD, set with monkeypatch
_users = itertools.count(1)
_ids = itertools.count(1)


# -- messages -----------------------------------------------------------------------------------


def mail(
    sender: str,
    subject: str,
    body: str = "Hello, something is wrong.",
    *,
    message_id: str | None = "",
    in_reply_to: str | None = None,
    references: str | None = None,
    headers: dict[str, str] | None = None,
) -> bytes:
    """A message's bytes; a fresh Message-ID unless one is given (None: no Message-ID at all)."""
    msg = EmailMessage()
    msg["From"] = sender
    msg["To"] = "support@example.com"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 23 Nov 2026 10:00:00 +0000"
    if message_id == "":
        message_id = f"<m{next(_ids)}@test.example>"
    if message_id is not None:
        msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
    if references:
        msg["References"] = references
    for name, value in (headers or {}).items():
        msg[name] = value
    msg.set_content(body)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))  # as IMAP serves it: CRLF


def message_id_of(raw: bytes) -> str:
    """The Message-ID the poller files a message under (its own, or one made from its bytes)."""
    for line in raw.split(b"\n\n", 1)[0].splitlines():
        if line.lower().startswith(b"message-id:"):
            return line.split(b":", 1)[1].strip().decode()
    return synthetic_message_id(raw)


# -- one test's mailbox, store and config ------------------------------------------------------


class Inbox:
    """A Dovecot user of its own, a store, and a crmkit.toml whose [imap] reads that user's mail."""

    def __init__(
        self,
        dovecot: DovecotServer,
        folder: Path,
        security: str,
        imap_keys: dict[str, Any],
        smtp_keys: dict[str, Any] | None = None,
    ) -> None:
        self.dovecot = dovecot
        self.appended: list[bytes] = []  # every message APPENDed, in order
        self.user = f"user{next(_users)}"
        dovecot.add_user(self.user, PASSWORD)
        folder.mkdir(parents=True)
        self.store_path = folder / "crm.json"
        Store(self.store_path).create()
        self.archive = MailArchive(self.store_path)
        self.folder = str(imap_keys.get("folder", "INBOX"))
        self.server = MailServer(
            "imap",
            dovecot.host,
            dovecot.ssl_port if security == "ssl" else dovecot.port,
            security=security,
            user=self.user,
            folder=self.folder,
            timeout=10,
            cafile=dovecot.cafile,
        )
        keys = {
            "host": dovecot.host,
            "port": self.server.port,
            "security": security,
            "user": self.user,
            "cafile": str(dovecot.cafile),
            "timeout": 10,
            **imap_keys,
        }
        self.config_path = folder / "crmkit.toml"
        lines = ["[imap]"] + [f"{k} = {json.dumps(v)}" for k, v in keys.items() if v is not None]
        if smtp_keys:
            lines += ["[smtp]"] + [f"{k} = {json.dumps(v)}" for k, v in smtp_keys.items()]
        self.config_path.write_text("\n".join(lines) + "\n", encoding="utf-8")

    def append(self, *raws: bytes, folder: str | None = None) -> list[int]:
        """APPEND over one connection; the new UIDs."""
        folder = folder or self.folder
        with self.dovecot.connect(self.user) as client:
            if not client.folder_exists(folder):
                client.create_folder(folder)
            uids = []
            for raw in raws:
                self.appended.append(raw)
                answer = client.append(folder, raw)
                uids.append(int(answer.split(b"]")[0].split()[-1]))  # [APPENDUID validity uid]
            return uids

    def cli(self, *args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(
            main, ["--store", str(self.store_path), "--config", str(self.config_path), *args]
        )
        assert result.exit_code == code, (result.output, result.exception)
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self.cli(*args, "--json").stdout)

    def poll(self, *args: str, code: int = 0) -> dict[str, Any]:
        return json.loads(self.cli("poll", *args, "--json", code=code).stdout)

    def idle_until(self, condition: Callable[[], bool], timeout: float = 20.0) -> tuple[int, str, str]:
        """``crmkit poll --idle`` in its own process until ``condition`` holds, then SIGTERM: (code, out, err)."""
        process = subprocess.Popen(
            [sys.executable, "-m", "crmkit", "--store", str(self.store_path), "--config", str(self.config_path),
             "poll", "--idle"],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        try:
            wait_until(condition, timeout=timeout)
            process.send_signal(signal.SIGTERM)
            out, err = process.communicate(timeout=timeout)
        finally:
            if process.poll() is None:
                process.kill()
        return process.returncode, out, err

    def poll_lib(self, **options: Any) -> PollReport:
        return poll_once(
            Store(self.store_path),
            self.server,
            Secret(PASSWORD),
            rules=options.pop("rules", InboxRules()),
            archive=self.archive,
            **options,
        )

    def activities(self, **where: str) -> list[dict[str, Any]]:
        args = [f"--where={k}={v}" for k, v in where.items()]
        return list(self.json("activities", "list", *args))

    def progress(self) -> dict[str, Any]:
        return Store(self.store_path).state("imap", mailbox_key(self.server)) or {}


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    with DovecotServer(tmp_path_factory.mktemp("dovecot")) as server:
        yield server


@pytest.fixture
def make_inbox(
    dovecot: DovecotServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Callable[..., Inbox]:
    monkeypatch.setenv("CRMKIT_IMAP_PASSWORD", PASSWORD)
    monkeypatch.delenv("CRMKIT_STORE", raising=False)
    count = itertools.count(1)

    def make(security: str = "ssl", smtp: dict[str, Any] | None = None, **imap_keys: Any) -> Inbox:
        return Inbox(dovecot, tmp_path / f"crm{next(count)}", security, imap_keys, smtp)

    return make


@pytest.fixture
def inbox(make_inbox: Callable[..., Inbox]) -> Inbox:
    return make_inbox()


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out waiting")
        time.sleep(0.05)


# -- filing: cases, threads, senders --------------------------------------------------------


def test_a_new_conversation_opens_a_case_and_logs_an_activity_on_a_new_contact(inbox: Inbox) -> None:
    inbox.append(mail("Ana Nguyen <ana@acme.example>", "Printer is on fire", "URGENT: smoke everywhere"))
    report = inbox.poll()
    assert report["counts"] == {"new_case": 1} and report["quarantined"] == []
    [case] = inbox.json("cases", "list")
    assert (case["subject"], case["contact"], case["origin"], case["priority"]) == (
        "Printer is on fire",
        "C-1",
        "email",
        "urgent",
    )
    view = inbox.json("contacts", "show", "C-1")
    assert (view["name"], view["email"], view["source"]) == ("Ana Nguyen", "ana@acme.example", "email")
    [activity] = view["related"]["activities"]
    assert activity["kind"] == "email_in" and activity["case"] == case["id"]
    assert activity["sender"] == "ana@acme.example" and activity["body"] == "URGENT: smoke everywhere"
    # kept as received, and given back byte for byte as an .eml
    eml = inbox.cli("activities", "eml", activity["id"]).stdout_bytes
    assert eml.startswith(b"From: Ana Nguyen") and eml == inbox.appended[0]
    assert activity["raw_message"].startswith("crm-mail/packs/")
    assert inbox.poll()["messages"] == 0  # nothing new: nothing filed twice


def test_every_logged_message_comes_back_out_as_an_eml(inbox: Inbox, tmp_path: Path) -> None:
    inbox.append(*[mail(f"p{n}@eml.example", f"Question {n}") for n in range(3)])
    inbox.poll()
    ids = [a["id"] for a in inbox.activities()]
    out = tmp_path / "out"
    assert inbox.cli("activities", "eml", *ids[:2], "--out", str(out)).stdout.strip() == f"2 messages written to {out}"
    assert sorted(p.name for p in out.iterdir()) == sorted(f"{i}.eml" for i in ids[:2])
    inbox.cli("activities", "eml", "--all", "--out", str(out))
    assert {(out / f"{i}.eml").read_bytes() for i in ids} == set(inbox.appended)
    one = tmp_path / "one.eml"
    inbox.cli("activities", "eml", ids[0], "--out", str(one))
    assert one.read_bytes() == (out / f"{ids[0]}.eml").read_bytes()
    note = inbox.json("activities", "add", "kind=note", "subject=Called back", "contact=C-1")
    error = inbox.cli("activities", "eml", note["id"], code=1).stderr
    assert error.strip() == f"Error: {note['id']} kept no message (a note, a call, or mail logged by hand)"
    assert "give activity ids, or --all" in inbox.cli("activities", "eml", code=2).stderr


def test_replies_thread_by_headers_and_by_case_token_only_for_people_on_the_case(inbox: Inbox) -> None:
    inbox.append(mail("ana@acme.example", "Invoice is wrong", message_id="<first@acme.example>"))
    inbox.poll()
    inbox.append(
        mail("ana@acme.example", "Re: Invoice is wrong", in_reply_to="<first@acme.example>"),
        mail("bo@acme.example", "Re: Re: Invoice", references="<x@y> <first@acme.example>"),
        mail("ana@acme.example", "More on [CASE-1]"),  # the token, from someone on the case
        mail("mallory@evil.example", "Re: [CASE-1] let me in"),  # a stranger guessing a number
    )
    report = inbox.poll()
    assert [f["action"] for f in report["filed"]] == ["joined_case", "joined_case", "joined_case", "new_case"]
    cases = {c["id"]: c for c in inbox.json("cases", "list")}
    assert set(cases) == {"CASE-1", "CASE-2"}
    mallory = inbox.json("contacts", "show", "mallory@evil.example")
    assert cases["CASE-2"]["contact"] == mallory["id"]
    assert len(inbox.activities(case="CASE-1")) == 4 and len(inbox.activities(case="CASE-2")) == 1


def test_a_reply_to_a_resolved_case_reopens_it(inbox: Inbox) -> None:
    inbox.append(mail("ana@acme.example", "Login fails", message_id="<login@acme.example>"))
    inbox.poll()
    inbox.cli("cases", "update", "CASE-1", "status=resolved")
    inbox.append(
        mail("ana@acme.example", "Re: Login fails", "Still broken", in_reply_to="<login@acme.example>")
    )
    assert inbox.poll()["counts"] == {"reopened_case": 1}
    assert inbox.json("cases", "show", "CASE-1")["status"] == "open"


def test_unknown_senders_become_contacts_of_known_accounts_or_leads_when_configured(
    make_inbox: Callable[..., Inbox],
) -> None:
    contacts = make_inbox()
    contacts.cli("accounts", "add", "name=Acme Corp", "domain=acme.example")
    contacts.append(mail("New Person <new@acme.example>", "Hello"), mail("x@gmail.com", "Hi"))
    contacts.poll()
    assert contacts.json("contacts", "show", "new@acme.example")["account"] == "A-1"
    assert contacts.json("contacts", "show", "x@gmail.com")["account"] is None
    assert [c["account"] for c in contacts.json("cases", "list")] == ["A-1", None]

    leads = make_inbox(unknown_sender="lead")
    leads.cli("accounts", "add", "name=Acme Corp", "domain=acme.example")
    leads.append(mail("Lee <lee@acme.example>", "Pricing?"))
    assert leads.poll()["filed"][0]["person"] == "L-1"
    [lead] = leads.json("leads", "list")
    assert (lead["email"], lead["company"]) == ("lee@acme.example", "Acme Corp")
    assert leads.json("contacts", "list") == []
    assert [a["lead"] for a in leads.activities()] == ["L-1"]


def test_new_cases_are_acknowledged_over_smtp_once_per_sender_and_replies_to_them_thread(
    make_inbox: Callable[..., Inbox],
) -> None:
    with SMTPServer() as smtp:
        inbox = make_inbox(
            acknowledge=True,
            smtp={
                "host": smtp.host,
                "port": smtp.port,
                "security": "plain",
                "from": "Support <help@ex.example>",
            },
        )
        inbox.append(
            mail("Ana <ana@acme.example>", "Broken screen", message_id="<screen@acme.example>"),
            mail("ana@acme.example", "And the keyboard"),  # a second case the same day: no second note
            mail("ooo@acme.example", "Out of office", headers={"Auto-Submitted": "auto-replied"}),
        )
        report = inbox.poll()
        assert [f["acknowledge"] for f in report["filed"]] == [True, False, False]
        [sent] = smtp.wait_for(1)
    ack = sent.message
    assert sent.rcpt_tos == ("ana@acme.example",)
    assert ack["Subject"] == "[CASE-1] Re: Broken screen" and ack["Auto-Submitted"] == "auto-replied"
    assert ack["In-Reply-To"] == "<screen@acme.example>"
    [logged] = [a for a in inbox.activities(case="CASE-1") if a["kind"] == "email_out"]
    assert logged["message_id"] == ack["Message-ID"]
    inbox.append(mail("bo@acme.example", "Re: [CASE-1] Re: Broken screen", in_reply_to=ack["Message-ID"]))
    assert inbox.poll()["filed"][0]["case"] == "CASE-1"  # a colleague answering the note joins the case


def bounce(recipient: str) -> bytes:
    return (
        "From: Mail Delivery System <MAILER-DAEMON@mx.example>\r\n"
        "To: support@example.com\r\nSubject: Undelivered Mail Returned to Sender\r\n"
        "Message-ID: <bounce1@mx.example>\r\nMIME-Version: 1.0\r\n"
        'Content-Type: multipart/report; report-type=delivery-status; boundary="B"\r\n\r\n'
        "--B\r\nContent-Type: text/plain\r\n\r\nI could not deliver your message.\r\n"
        "--B\r\nContent-Type: message/delivery-status\r\n\r\n"
        "Reporting-MTA: dns; mx.example\r\n\r\n"
        f"Final-Recipient: rfc822; {recipient}\r\nAction: failed\r\nStatus: 5.1.1\r\n"
        "--B--\r\n"
    ).encode()


def test_a_bounce_marks_the_address_bounced_and_opens_no_case(inbox: Inbox) -> None:
    inbox.cli("contacts", "add", "name=Gone", "email=gone@old.example")
    inbox.append(bounce("gone@old.example"))
    assert inbox.poll()["counts"] == {"bounce": 1}
    assert inbox.json("contacts", "show", "C-1")["email_status"] == "bounced"
    assert inbox.json("cases", "list") == []


def test_auto_replies_are_logged_without_a_case_and_a_runaway_responder_is_rate_limited(
    make_inbox: Callable[..., Inbox],
) -> None:
    inbox = make_inbox(max_new_cases_per_hour=3)
    inbox.append(
        mail("ana@acme.example", "Out of office", headers={"Auto-Submitted": "auto-replied"}),
        mail("ben@acme.example", "Out of the office until Monday"),
        # a responder without any of those signs, answering each of our messages with a new one
        *[mail("robot@loop.example", f"Ticket {n} received", "We got it.") for n in range(6)],
    )
    report = inbox.poll()
    assert report["counts"] == {"logged": 5, "new_case": 3}
    assert [c["subject"] for c in inbox.json("cases", "list")] == [f"Ticket {n} received" for n in range(3)]
    assert len(inbox.activities()) == 8


def test_a_request_to_unsubscribe_sets_opt_out(inbox: Inbox) -> None:
    inbox.cli("contacts", "add", "name=Ann", "email=ann@shop.example")
    # a reply to campaign mail crmkit sent (logged with its Message-ID, no case)
    inbox.cli("activities", "add", "kind=email_out", "subject=Our spring offers", "message_id=<spring-1@shop>")
    inbox.append(
        mail("ann@shop.example", "Re: Our spring offers", "Please unsubscribe me.", in_reply_to="<spring-1@shop>")
    )
    assert inbox.poll()["counts"] == {"unsubscribed": 1}
    assert inbox.json("contacts", "show", "C-1")["opt_out"] is True
    assert inbox.json("cases", "list") == []


def test_attachments_with_hostile_names_are_kept_inside_the_archive_under_safe_names(
    inbox: Inbox, tmp_path: Path
) -> None:
    parts = [
        ('filename="../../etc/passwd"', b"root:x:0:0"),
        ('filename="C:\\\\Windows\\\\evil.exe"', b"MZ\x90\x00"),
        ("filename*=UTF-8''%E1%BA%A2nh%20ch%E1%BB%A5p%20m%C3%A0n%20h%C3%ACnh.png", b"\x89PNG"),
        ("filename*0*=UTF-8''%D0%BE%D1%82%D1%87%D0%B5%D1%82; filename*1=.pdf", b"%PDF"),
        ('filename="/dev/null"', b"null"),
    ]
    body = b"".join(
        b"--P\r\nContent-Type: application/octet-stream\r\nContent-Disposition: attachment; "
        + header.encode()
        + b"\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        + base64.b64encode(data)
        + b"\r\n"
        for header, data in parts
    )
    raw = (
        b"From: ana@acme.example\r\nTo: support@example.com\r\nSubject: files\r\n"
        b'Message-ID: <files@acme.example>\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="P"\r\n\r\n'
        b"--P\r\nContent-Type: text/plain\r\n\r\nSee attached.\r\n" + body + b"--P--\r\n"
    )
    inbox.append(raw)
    inbox.poll()
    [activity] = inbox.activities()
    names = [a["name"] for a in activity["attachments"]]
    assert names == ["passwd", "evil.exe", "Ảnh chụp màn hình.png", "отчет.pdf", "null"]
    folder = inbox.archive.root / "attachments"
    for kept, (_, data) in zip(activity["attachments"], parts, strict=True):
        path = (inbox.store_path.parent / kept["path"]).resolve()
        assert path.is_relative_to(folder.resolve()) and path.read_bytes() == data
    assert not (tmp_path / "etc").exists()
    assert all(p.is_relative_to(folder) for p in tmp_path.rglob("*evil.exe"))


def malformed_corpus() -> list[bytes]:
    huge = b"".join(b"%06d " % n + b"x" * 90 + b"\r\n" for n in range(30_000))  # ~3 MB of text
    return [
        # broken MIME: a boundary that never closes, a part cut off in its headers
        b"From: broken@corpus.example\r\nSubject: broken MIME\r\nMessage-ID: <broken@corpus.example>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="XYZ"\r\n\r\n'
        b"--XYZ\r\nContent-Type: text/plain\r\n\r\nfirst part\r\n--XY\r\nContent-Type: text/ht",
        # a charset nobody knows, and one that lies
        b"From: charset@corpus.example\r\nSubject: bad charset\r\nMessage-ID: <cs1@corpus.example>\r\n"
        b'Content-Type: text/plain; charset="x-no-such-charset"\r\n\r\ncaf\xe9 cr\xe8me\r\n',
        b"From: charset@corpus.example\r\nSubject: lying charset\r\nMessage-ID: <cs2@corpus.example>\r\n"
        b'Content-Type: text/plain; charset="utf-8"\r\n\r\ncaf\xe9 \xff\xfe\r\n',
        # Vietnamese windows-1258 and Russian koi8-r, declared
        b"From: =?windows-1258?Q?Nguy=EA=DEn?= <vn@corpus.example>\r\nSubject: =?utf-8?B?4bqibmggbOG7l2k=?=\r\n"
        b'Message-ID: <vn@corpus.example>\r\nContent-Type: text/plain; charset="windows-1258"\r\n\r\nTi\xea\xecng Vi\xea\xf2t\r\n',
        b"From: ru@corpus.example\r\nSubject: koi8\r\nMessage-ID: <ru@corpus.example>\r\n"
        b'Content-Type: text/plain; charset="koi8-r"\r\n\r\n\xf0\xd2\xc9\xd7\xc5\xd4\r\n',
        # no headers at all, and no Message-ID
        b"just a line of text, no headers\r\n",
        b"From: nomid@corpus.example\r\nSubject: no Message-ID\r\n\r\nwho am I\r\n",
        # 8-bit garbage in headers and body, a bad date, a 5,000-character header
        b"From: \xff\xfe\x80 <garbage@corpus.example>\r\nSubject: \x81\x82\x83 \xc3\x28\r\nDate: yesterday-ish\r\n"
        b"Message-ID: <garbage@corpus.example>\r\nX-Long: "
        + b"a" * 5000
        + b"\r\n\r\n"
        + bytes(range(128, 256))
        + b"\r\n",
        # a huge part
        b"From: huge@corpus.example\r\nSubject: huge\r\nMessage-ID: <huge@corpus.example>\r\n"
        b'MIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary="H"\r\n\r\n--H\r\nContent-Type: text/plain\r\n\r\n'
        + huge
        + b"\r\n--H--\r\n",
        mail("normal@corpus.example", "A normal message after all that"),
    ]


def test_a_malformed_message_corpus_never_stops_the_run(inbox: Inbox) -> None:
    corpus = malformed_corpus()
    inbox.append(*corpus)
    report = inbox.poll()
    assert report["quarantined"] == [] and report["messages"] == len(corpus)
    assert report["filed"][-1]["action"] == "new_case"
    counts = Counter(a["message_id"] for a in inbox.activities())
    assert counts == Counter(message_id_of(raw) for raw in corpus)
    subjects = {a["message_id"]: a["subject"] for a in inbox.activities()}
    assert subjects["<vn@corpus.example>"] == "Ảnh lỗi"
    vietnamese = inbox.json("contacts", "show", "vn@corpus.example")
    assert vietnamese["name"] == "Nguyễn"
    assert vietnamese["related"]["activities"][0]["body"] == "Tiếng Việt"
    assert inbox.poll()["messages"] == 0


# -- never lost: the quarantine --------------------------------------------------------------


def test_a_message_that_cannot_be_filed_is_quarantined_and_replayed_once_fixed(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = filing.file_message

    def buggy(store: Store, parsed: Any, **kwargs: Any) -> Any:  # a bug only this message meets
        if "POISON" in parsed.subject:
            raise KeyError("boom")
        return real(store, parsed, **kwargs)

    monkeypatch.setattr(filing, "file_message", buggy)
    inbox.append(mail("a@x.example", "one"), mail("b@x.example", "POISON pill"), mail("c@x.example", "three"))
    report = inbox.poll(code=3)
    assert report["counts"] == {"new_case": 2, "quarantined": 1}
    [item] = inbox.json("poll", "--quarantine")
    assert item["id"] == report["quarantined"][0] and "KeyError" in item["reason"]
    assert f"{mailbox_key(inbox.server)} uid 2" in item["origin"]
    listing = inbox.cli("poll", "--quarantine").stdout
    assert item["id"] in listing and "KeyError" in listing
    assert inbox.poll()["messages"] == 0  # progress moved past it: not re-read

    inbox.cli("poll", "--replay", item["id"], code=3)  # still broken: stays quarantined
    monkeypatch.setattr(filing, "file_message", real)  # the bug fixed
    replayed = inbox.poll("--replay", "all")
    assert replayed["counts"] == {"new_case": 1}
    assert inbox.json("poll", "--quarantine") == []
    assert [c["subject"] for c in inbox.json("cases", "list")] == ["one", "three", "POISON pill"]
    assert "no quarantined message nope" in inbox.cli("poll", "--replay", "nope", code=1).stderr


def test_grouped_commits_file_everything_and_still_set_a_failing_message_aside(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = filing.file_message

    def buggy(store: Store, parsed: Any, **kwargs: Any) -> Any:
        if "POISON" in parsed.subject:
            raise ValueError("cannot file this one")
        return real(store, parsed, **kwargs)

    monkeypatch.setattr(filing, "file_message", buggy)
    raws = [mail("ana@x.example", "first", message_id="<g1@x.example>")]
    raws += [mail("ana@x.example", f"Re: first {n}", in_reply_to="<g1@x.example>") for n in range(5)]
    raws += [mail("bo@x.example", "POISON"), *[mail(f"p{n}@x.example", f"later {n}") for n in range(5)]]
    inbox.append(*raws)
    report = inbox.poll_lib(commit_every=4, batch=5)  # groups of 4 within fetches of 5
    assert report.counts == {"new_case": 6, "joined_case": 5, "quarantined": 1}
    assert [f.action for f in report.filed][:6] == ["new_case"] + [
        "joined_case"
    ] * 5  # threads within a group
    assert report.last_uid == len(raws) and inbox.progress()["last_uid"] == len(raws)
    assert Counter(a["message_id"] for a in inbox.activities()) == Counter(
        message_id_of(raw) for raw in raws if b"POISON" not in raw
    )


# -- never twice: kills and UIDVALIDITY ------------------------------------------------------


#: The poller with messages filed in groups, as a process to kill (the CLI files them one by one).
GROUPED_POLL = """
import sys
from crmkit.config import load_config, resolve_password
from crmkit.mail.archive import MailArchive
from crmkit.mail.imap import poll_once
from crmkit.mail.settings import poll_settings
from crmkit.store import Store
settings = poll_settings(load_config(sys.argv[2]))
poll_once(Store(sys.argv[1]), settings.server, resolve_password(settings.server), rules=settings.rules,
          archive=MailArchive(sys.argv[1]), batch=20, commit_every=int(sys.argv[3]))
"""


@pytest.mark.parametrize("commit_every", [1, 8])
def test_a_poller_killed_at_random_moments_then_run_again_logs_each_message_exactly_once(
    inbox: Inbox, commit_every: int
) -> None:
    rng = random.Random(5 + commit_every)
    raws: list[bytes] = []
    # 300 messages: room for several kills even when a loaded machine lets a run go on well past
    # its target before the kill lands (with 200 a loaded CI run fitted too few)
    for n in range(300):
        if n % 20 == 19:
            raws.append(mail(f"c{n}@kill.example", f"no id {n}", message_id=None))
        elif n > 20 and n % 4 == 0:
            parent = message_id_of(raws[rng.randrange(n)])
            raws.append(mail(f"c{n % 50}@kill.example", f"Re: thread {n}", in_reply_to=parent))
        else:
            raws.append(mail(f"c{n % 50}@kill.example", f"Question {n}"))
    uids = inbox.append(*raws)
    # the CLI commits 100 messages at a time, too coarse for kills to land between commits of
    # 200 messages; the library call below is the same code with a finer grain
    command = [
        sys.executable, "-c", GROUPED_POLL, str(inbox.store_path), str(inbox.config_path), str(commit_every)
    ]  # fmt: skip
    partial = 0
    while partial < 4:
        # Kill once the run is a random number of messages in, plus a random few milliseconds: the
        # moment falls anywhere in a message's filing, its transaction, or the mailbox action.
        before = inbox.progress().get("last_uid", 0)
        if before >= uids[-1] - 40:
            break  # too near the end to land another kill mid-run
        target = before + rng.randint(3, 20)
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        wait_until(
            lambda p=process, t=target: p.poll() is not None or inbox.progress().get("last_uid", 0) >= t
        )
        time.sleep(rng.uniform(0, 0.02))
        process.send_signal(signal.SIGKILL)
        _, err = process.communicate()
        assert process.returncode in (-signal.SIGKILL, 0), err
        if process.returncode == 0:  # finished before the kill
            break
        if before < inbox.progress().get("last_uid", 0) < uids[-1]:
            partial += 1
    assert partial >= 3, "the kills did not land mid-run: the test proves nothing"
    inbox.poll()
    counts = Counter(a["message_id"] for a in inbox.activities())
    assert counts == Counter(message_id_of(raw) for raw in raws)  # each exactly once
    assert inbox.progress()["last_uid"] == uids[-1]
    assert inbox.json("poll", "--quarantine") == []


# -- a backlog: prepared in a second process -----------------------------------------------------


def backlog(count: int) -> list[bytes]:
    """``count`` messages: new conversations, replies, some without a Message-ID, some with a file."""
    raws: list[bytes] = []
    for n in range(count):
        if n % 37 == 5:
            raws.append(mail(f"b{n % 40}@backlog.example", f"no id {n}", message_id=None))
        elif n % 9 == 4:
            msg = EmailMessage()
            msg["From"], msg["To"], msg["Subject"] = f"b{n % 40}@backlog.example", "support@example.com", f"scan {n}"
            msg["Message-ID"] = f"<scan{n}@backlog.example>"
            msg.set_content("See the scan.")
            msg.add_attachment(f"%PDF-1.4 scan {n}".encode(), maintype="application", subtype="pdf",
                               filename=f"scan-{n}.pdf")  # fmt: skip
            raws.append(msg.as_bytes())
        elif n > 10 and n % 3 == 0:
            raws.append(mail(f"b{n % 40}@backlog.example", f"Re: q {n}", in_reply_to=message_id_of(raws[n // 2])))
        else:
            raws.append(mail(f"b{n % 40}@backlog.example", f"Question {n}"))
    return raws


def workers_started(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """The preparing processes the poll starts (recorded as they start; they run unchanged)."""
    started: list[Any] = []
    real = filing.PreparerProcess.start

    def start(archive: MailArchive) -> Any:
        worker = real(archive)
        started.append(worker)
        return worker

    monkeypatch.setattr(filing.PreparerProcess, "start", start)
    return started


def test_a_backlog_is_prepared_in_a_second_process_and_each_message_filed_once(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    raws = backlog(filing.PARALLEL_FROM + 50)
    real = filing.file_message

    def buggy(store: Store, parsed: Any, **kwargs: Any) -> Any:  # a bug only this message meets
        if parsed.subject == "Question 302":
            raise KeyError("boom")
        return real(store, parsed, **kwargs)

    monkeypatch.setattr(filing, "file_message", buggy)
    started = workers_started(monkeypatch)
    uids = inbox.append(*raws)
    report = inbox.poll(code=3)
    assert len(started) == 1 and started[0] is not None  # the backlog went through the worker
    assert report["messages"] == len(raws) and report["counts"]["quarantined"] == 1
    assert started[0]._process.poll() is not None  # and it is gone once the poll is done
    counts = Counter(a["message_id"] for a in inbox.activities())
    assert counts == Counter(message_id_of(raw) for raw in raws if b"Question 302" not in raw)
    scans = [a for a in inbox.activities() if a["subject"].startswith("scan ")]
    assert len(scans) == len([raw for raw in raws if b"scan-" in raw])
    for activity in scans:  # kept by the worker, under the names the activity gives
        [kept] = activity["attachments"]
        assert kept["name"] == f"{activity['subject'].replace(' ', '-')}.pdf"
        kept_bytes = (inbox.store_path.parent / kept["path"]).read_bytes()
        assert kept_bytes == f"%PDF-1.4 {activity['subject']}".encode()
        eml = inbox.cli("activities", "eml", activity["id"]).stdout_bytes  # kept by the worker too
        [appended] = [raw for raw in raws if f"Subject: {activity['subject']}\n".encode() in raw]
        assert eml.replace(b"\r\n", b"\n") == appended.replace(b"\r\n", b"\n")
    assert inbox.progress()["last_uid"] == uids[-1]
    assert inbox.poll()["messages"] == 0


def test_a_preparing_process_that_dies_mid_poll_costs_nothing(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    raws = backlog(filing.PARALLEL_FROM + 100)
    started = workers_started(monkeypatch)
    real_send = filing.PreparerProcess.send
    sent: list[int] = []

    def send(self: Any, value: Any) -> bool:
        sent.append(1)
        if len(sent) == 4:  # the archive, then two batches: killed with the third in hand
            self._process.kill()
            self._process.wait()
        return real_send(self, value)

    monkeypatch.setattr(filing.PreparerProcess, "send", send)
    inbox.append(*raws)
    report = inbox.poll()
    assert len(started) == 1 and report["messages"] == len(raws)
    assert "the mail preparing process stopped" in caplog.text
    counts = Counter(a["message_id"] for a in inbox.activities())
    assert counts == Counter(message_id_of(raw) for raw in raws)  # each exactly once


def _children(pid: int) -> list[int]:
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def test_a_poller_killed_while_its_worker_prepares_leaves_no_worker_and_loses_nothing(inbox: Inbox) -> None:
    raws = backlog(filing.PARALLEL_FROM + 100)
    uids = inbox.append(*raws)
    command = [sys.executable, "-c", GROUPED_POLL, str(inbox.store_path), str(inbox.config_path), "8"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    workers: list[int] = []

    def midway() -> bool:
        workers.extend(w for w in _children(process.pid) if w not in workers)
        return process.poll() is not None or inbox.progress().get("last_uid", 0) >= uids[len(uids) // 3]

    wait_until(midway, timeout=30)
    process.send_signal(signal.SIGKILL)
    _, err = process.communicate()
    assert "Traceback" not in err.decode(), err
    assert process.returncode == -signal.SIGKILL, "the poll ended before the kill: the test proves nothing"
    assert workers, "no preparing process was seen"
    wait_until(lambda: not any(Path(f"/proc/{w}").exists() for w in workers))  # it ended with its stdin
    assert uids[0] < inbox.progress()["last_uid"] < uids[-1]
    inbox.poll()
    counts = Counter(a["message_id"] for a in inbox.activities())
    assert counts == Counter(message_id_of(raw) for raw in raws)
    assert inbox.json("poll", "--quarantine") == []


def test_a_changed_uidvalidity_reads_the_folder_again_without_logging_anything_twice(
    make_inbox: Callable[..., Inbox],
) -> None:
    inbox = make_inbox(folder="Support")
    raws = [mail(f"u{n}@v.example", f"Question {n}") for n in range(4)]
    raws.append(mail("anon@v.example", "No Message-ID here", message_id=None))
    inbox.append(*raws)
    first = inbox.poll()
    assert first["counts"] == {"new_case": 5}
    with inbox.dovecot.connect(inbox.user) as client:
        client.delete_folder("Support")
    inbox.append(*raws, mail("late@v.example", "A new one"))
    again = inbox.poll()
    assert again["uidvalidity_changed"] and again["uidvalidity"] != first["uidvalidity"]
    assert again["counts"] == {"duplicate": 5, "new_case": 1}
    counts = Counter(a["message_id"] for a in inbox.activities())
    assert set(counts.values()) == {1} and len(counts) == 6
    assert len(inbox.json("cases", "list")) == 6


# -- the mailbox afterwards ------------------------------------------------------------------


def flags_by_folder(inbox: Inbox) -> dict[str, list[tuple[bytes, ...]]]:
    found = {}
    with inbox.dovecot.connect(inbox.user) as client:
        for folder in ("INBOX", "Filed"):
            if client.folder_exists(folder):
                client.select_folder(folder, readonly=True)
                flags = client.get_flags(client.search("ALL")).values()
                found[folder] = [tuple(sorted(set(f) - {b"\\Recent"})) for f in flags]
    return found


@pytest.mark.parametrize("after", ["seen", "move", "move without MOVE", "none"])
def test_the_mailbox_is_left_as_configured(
    make_inbox: Callable[..., Inbox], after: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if after == "move without MOVE":  # an older server: COPY, \Deleted, UID EXPUNGE
        real = IMAPClient.has_capability
        monkeypatch.setattr(IMAPClient, "has_capability", lambda self, c: c != "MOVE" and real(self, c))
    action = after.split()[0]
    inbox = make_inbox(after=action, move_to="Filed" if action == "move" else None)
    inbox.append(mail("a@x.example", "one"), mail("b@x.example", "two"))
    report = inbox.poll()
    assert report["messages"] == 2
    expected = {
        "seen": ({"seen": 2}, {"INBOX": [(b"\\Seen",)] * 2}),
        "move": ({"moved": 2}, {"INBOX": [], "Filed": [(), ()]}),
        "none": ({}, {"INBOX": [(), ()]}),  # BODY.PEEK: not even \Seen
    }[action]
    assert (report["mailbox_actions"], flags_by_folder(inbox)) == expected


def test_a_mailbox_action_a_killed_run_left_undone_is_finished_by_the_next_run(inbox: Inbox) -> None:
    uids = inbox.append(mail("a@x.example", "one"), mail("b@x.example", "two"))
    inbox.poll_lib(after="none")
    Store(inbox.store_path).set_state(
        "imap", mailbox_key(inbox.server), {**inbox.progress(), "acted_uid": uids[0] - 1}
    )  # as if killed after filing, before flagging
    report = inbox.poll_lib(after="seen")
    assert (report.messages, report.mailbox_actions) == (0, {"seen": 2})
    assert flags_by_folder(inbox) == {"INBOX": [(b"\\Seen",)] * 2}


# -- IDLE ------------------------------------------------------------------------------------


def test_idle_files_a_message_appended_while_it_waits_and_survives_a_dropped_connection(
    inbox: Inbox, caplog: pytest.LogCaptureFixture
) -> None:
    inbox.append(mail("early@x.example", "before we started"))
    stop = threading.Event()
    rounds: list[PollReport] = []
    results: list[PollReport] = []

    def run() -> None:
        results.append(
            poll_idle(
                Store(inbox.store_path),
                inbox.server,
                Secret(PASSWORD),
                rules=InboxRules(),
                archive=inbox.archive,
                on_round=rounds.append,
                stop=stop,
                renew_every=1.0,  # re-issued IDLE several times in this test
                backoff=(0.1, 1.0),
            )
        )

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_until(lambda: len(rounds) == 1)
        time.sleep(1.5)  # idling, past one renewal
        appended = time.monotonic()
        inbox.append(mail("late@x.example", "while it waits"))
        wait_until(lambda: len(rounds) == 2)
        assert time.monotonic() - appended < 3
        doveadm = shutil.which("doveadm")
        if doveadm:  # the server drops the connection: the poller reconnects and goes on
            kicked = subprocess.run(
                [doveadm, "-c", str(inbox.dovecot.config_path), "kick", inbox.user], capture_output=True
            )
            assert kicked.returncode == 0, kicked.stderr
            time.sleep(0.3)
            dropped = time.monotonic()
            inbox.append(mail("after@x.example", "after the drop"))
            wait_until(lambda: len(rounds) == 3)
            assert time.monotonic() - dropped < 3
            assert "connection lost" in caplog.text and "reconnecting in 0.1 s" in caplog.text
    finally:
        stop.set()
        thread.join(10)
    assert not thread.is_alive()
    [total] = results
    assert total.counts == {"new_case": len(rounds)}
    assert {c["subject"] for c in inbox.json("cases", "list")} >= {"before we started", "while it waits"}


def test_idle_from_the_command_line_stops_cleanly_on_sigterm(inbox: Inbox) -> None:
    inbox.append(mail("a@x.example", "hello"))
    code, out, err = inbox.idle_until(lambda: inbox.progress().get("last_uid") == 1, timeout=10)
    assert code == 0, err
    assert f"{mailbox_key(inbox.server)}: 1 message (1 new case); 1 seen" in out


# -- connections: TLS, passwords, errors ----------------------------------------------------


def test_idle_against_a_server_that_never_answered_gives_up_after_a_few_tries(
    make_inbox: Callable[..., Inbox],
) -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    inbox = make_inbox(port=port)
    started = time.monotonic()
    process = subprocess.run(
        [sys.executable, "-m", "crmkit", "--store", str(inbox.store_path), "--config", str(inbox.config_path),
         "poll", "--idle"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert process.returncode == 1, process.stderr
    last = process.stderr.strip().splitlines()[-1]
    assert last.startswith("Error: ") and "cannot reach the server" in last and "gave up after 4 tries" in last
    assert time.monotonic() - started < 30  # 1 + 2 + 4 s of back-off, not for ever


@pytest.mark.parametrize("security", ["ssl", "starttls"])
def test_ssl_and_starttls_verify_the_certificate(make_inbox: Callable[..., Inbox], security: str) -> None:
    inbox = make_inbox(security)
    inbox.append(mail("a@x.example", f"over {security}"))
    assert inbox.poll()["counts"] == {"new_case": 1}

    untrusting = make_inbox(security, cafile=None)  # the system CAs do not know the test CA
    untrusting.append(mail("a@x.example", "never read"))
    error = untrusting.cli("poll", code=1).stderr
    assert "TLS certificate could not be verified" in error and "cafile" in error
    assert len(error.strip().splitlines()) == 1


def test_plain_imap_only_when_configured(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox("plain")
    inbox.append(mail("a@x.example", "over plain IMAP"))
    assert inbox.poll()["counts"] == {"new_case": 1}


def test_a_wrong_password_is_one_clean_line_without_the_password(
    inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRMKIT_IMAP_PASSWORD", "hunter2-not-it")
    result = inbox.cli("poll", code=1)
    assert result.stderr.startswith("Error: IMAP ") and "login refused" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and result.stdout == ""
    assert "hunter2" not in result.output and PASSWORD not in result.output
    # only the answer's RFC 5530 code: the free text of an answer to LOGIN may quote what was sent
    assert "login refused ([AUTHENTICATIONFAILED])" in result.stderr


def test_connection_and_folder_errors_are_one_line(make_inbox: Callable[..., Inbox], tmp_path: Path) -> None:
    missing = make_inbox(folder="Nope")
    error = missing.cli("poll", code=1).stderr
    assert "folder 'Nope' not found" in error and "INBOX" in error

    refused = make_inbox(port=1)
    error = refused.cli("poll", code=1).stderr
    assert "cannot reach the server (Connection refused)" in error

    bare = tmp_path / "bare.toml"
    bare.write_text('store = "crm1/crm.json"\n')
    result = CliRunner().invoke(main, ["--config", str(bare), "poll"])
    assert result.exit_code == 1
    assert "no [imap] table" in result.stderr and 'host = "imap.example.com"' in result.stderr


def test_idle_waits_for_a_store_held_by_another_process(inbox: Inbox, caplog: pytest.LogCaptureFixture) -> None:
    inbox.append(mail("patient@x.example", "while the store is busy"))
    Store(inbox.store_path).count("contacts")  # the store exists before anyone holds it
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from filelock import FileLock; lock = FileLock(sys.argv[1]); lock.acquire(); "
         "print('held', flush=True); time.sleep(2.5)", str(inbox.store_path) + ".lock"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
    stop = threading.Event()
    rounds: list[PollReport] = []
    thread = threading.Thread(
        target=poll_idle,
        args=(Store(inbox.store_path, lock_timeout=0.3), inbox.server, Secret(PASSWORD)),
        kwargs={
            "rules": InboxRules(),
            "archive": inbox.archive,
            "on_round": rounds.append,
            "stop": stop,
            "backoff": (0.2, 0.5),
        },
    )
    thread.start()
    try:
        wait_until(lambda: any(r.counts.get("new_case") for r in rounds), timeout=15)
        assert thread.is_alive()  # waited for the store instead of giving up
    finally:
        stop.set()
        thread.join(timeout=10)
        holder.wait(timeout=10)
    assert any("reconnecting" in r.getMessage() for r in caplog.records)
    assert [a["subject"] for a in inbox.activities()] == ["while the store is busy"]


def test_a_message_expunged_by_another_client_mid_run_is_passed_over_and_the_rest_filed(inbox: Inbox) -> None:
    uids = inbox.append(*(mail(f"c{n}@gone.example", f"Question {n}") for n in range(5)))
    expunged: list[int] = []

    def another_client_deletes_the_third(filed: Any, parsed: Any) -> None:
        if expunged:
            return
        with inbox.dovecot.connect(inbox.user) as client:
            client.select_folder(inbox.folder)
            client.delete_messages([uids[2]])
            client.expunge()
        expunged.append(uids[2])

    report = inbox.poll_lib(after="none", batch=1, commit_every=1, on_filed=another_client_deletes_the_third)
    assert expunged == [uids[2]] and report.last_uid == uids[-1]
    subjects = sorted(a["subject"] for a in inbox.activities())
    assert subjects == ["Question 0", "Question 1", "Question 3", "Question 4"]
    assert inbox.poll()["messages"] == 0  # nothing left behind, nothing filed twice


# -- progress and reasons (issue 14) ---------------------------------------------------------------

BOUNCES = Path(__file__).parent / "fixtures" / "bounces"


def test_the_summary_counts_what_each_rule_held_back(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox(max_new_cases_per_hour=1)
    inbox.append(
        mail("flood@x.example", "first"),
        mail("flood@x.example", "second"),
        mail("flood@x.example", "third"),
        mail("robot@x.example", "Automatic reply: away", headers={"Auto-Submitted": "auto-replied"}),
        (BOUNCES / "own--postfix-plain-failure.eml").read_bytes(),
        (BOUNCES / "own--arf-to-of-original.eml").read_bytes(),
    )
    data = inbox.poll()
    assert data["counts"]["new_case"] == 1
    assert data["held"] == {"per-sender limit": 2, "automatic mail": 1, "bounce": 1, "complaint": 1}
    assert [f["held"] for f in data["filed"]][:3] == [None, "per-sender limit", "per-sender limit"]
    inbox.append(mail("flood@x.example", "fourth"), mail("robot@x.example", "Auto: again",
                                                       headers={"Auto-Submitted": "auto-generated"}))  # fmt: skip
    out = inbox.cli("poll").stdout
    assert "2 messages (2 logged); no case: automatic mail 1, per-sender limit 1" in out


def test_a_long_poll_shows_a_progress_bar_on_a_terminal_only(inbox: Inbox) -> None:
    import os
    import pty

    inbox.append(*[mail(f"p{i}@x.example", f"message {i}") for i in range(250)])
    env = {**os.environ, "COLUMNS": "100"}
    argv = [sys.executable, "-m", "crmkit", "--store", str(inbox.store_path), "--config", str(inbox.config_path),
            "poll"]  # fmt: skip
    leader, follower = pty.openpty()
    try:
        done = subprocess.run(argv, stdout=subprocess.PIPE, stderr=follower, env=env, timeout=120, check=False)
        os.close(follower)
        shown = b""
        while True:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the terminal closed: everything was read
                break
            if not chunk:
                break
            shown += chunk
    finally:
        os.close(leader)
    assert done.returncode == 0
    assert b"filing" in shown and (b"250/250" in shown.replace(b" ", b"") or b"100%" in shown)
    assert b"250 messages (250 new cases)" in done.stdout
    # under cron (no terminal) or with --json: no bar, nothing on stderr
    inbox.append(*[mail(f"q{i}@x.example", f"again {i}") for i in range(250)])
    quiet = subprocess.run(argv, capture_output=True, env=env, timeout=120, check=False)
    assert quiet.returncode == 0 and quiet.stderr == b""


# -- the team's own mail: the Sent folder (issue 14) ---------------------------------------------


def test_the_sent_folder_puts_the_teams_answers_on_the_timeline(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox(sent_folder="Sent", own_addresses=["support@example.com"])
    inbox.append(mail("Ana <ana@customer.example>", "Printer on fire", message_id="<q1@customer.example>"))
    missing = inbox.cli("poll", code=1).stderr  # the inbox is filed all the same
    assert "folder 'Sent' not found" in missing and "set [imap] sent_folder" in missing
    with inbox.dovecot.connect(inbox.user) as client:
        client.create_folder("Sent")
    assert inbox.poll()["counts"] == {}
    [case] = inbox.json("cases", "list")
    assert case["status"] == "new"
    answer = mail("Ben <ben@example.com>", f"[{case['id']}] Re: Printer on fire", "Unplug it, please.",
                  message_id="<a1@example.com>", in_reply_to="<q1@customer.example>")  # fmt: skip
    answer = answer.replace(b"To: support@example.com", b"To: ana@customer.example")
    stranger = mail("Ben <ben@example.com>", "Quote", "Hello vendor", message_id="<v1@example.com>")
    stranger = stranger.replace(b"To: support@example.com", b"To: sales@vendor.example")
    inbox.append(answer, stranger, folder="Sent")
    second = inbox.poll()
    assert second["counts"] == {"sent": 2}
    assert second["held"] == {}
    [logged, other] = [f for f in second["filed"]]
    assert (logged["action"], logged["case"]) == ("sent", case["id"]) and other["case"] is None
    case = inbox.json("cases", "show", case["id"])
    assert case["status"] == "pending" and case["first_response_at"].startswith("2026-11-23T10:00")
    activity = inbox.json("activities", "show", logged["activity"])
    assert (activity["kind"], activity["contact"], activity["case"]) == ("email_out", case["contact"], case["id"])
    assert inbox.json("contacts", "list", "--where", "email=sales@vendor.example") == []  # no contact made
    assert len(inbox.json("cases", "list")) == 1
    # the Sent folder is never flagged or moved, and a second poll finds nothing new there
    with inbox.dovecot.connect(inbox.user) as client:
        client.select_folder("Sent", readonly=True)
        assert all(b"\\Seen" not in flags for flags in client.get_flags(client.search(["ALL"])).values())
    assert inbox.poll()["counts"] == {}
    # the customer answers the team's message: it joins the case, which waits on the team again
    inbox.append(mail("ana@customer.example", "Re: Printer on fire", "Done, thanks",
                      in_reply_to="<a1@example.com>"))  # fmt: skip
    assert inbox.poll()["counts"] == {"joined_case": 1}
    assert inbox.json("cases", "show", case["id"])["status"] == "open"


def test_the_teams_mail_to_several_contacts_is_on_each_timeline_and_counted_once_on_the_case(
    make_inbox: Callable[..., Inbox],
) -> None:
    inbox = make_inbox(sent_folder="Sent", own_addresses=["support@example.com"])
    with inbox.dovecot.connect(inbox.user) as client:
        client.create_folder("Sent")
    inbox.append(mail("Ana <ana@customer.example>", "Printer on fire", message_id="<q2@customer.example>"))
    inbox.poll()
    [case] = inbox.json("cases", "list")
    inbox.cli("contacts", "add", "name=Carl", "email=carl@customer.example")
    inbox.cli("contacts", "add", "name=Dee", "email=dee@customer.example")
    answer = mail("Ben <ben@example.com>", "Re: Printer on fire", "Unplug it, please.",
                  message_id="<a2@example.com>", in_reply_to="<q2@customer.example>")  # fmt: skip
    answer = answer.replace(
        b"To: support@example.com", b"To: carl@customer.example, ana@customer.example\r\nCc: Dee <dee@customer.example>"
    )
    inbox.append(answer, folder="Sent")
    assert inbox.poll()["counts"] == {"sent": 1}
    logged = [a for a in inbox.activities() if a["kind"] == "email_out"]
    by_contact = {inbox.json("contacts", "show", a["contact"])["email"]: a for a in logged}
    assert sorted(by_contact) == ["ana@customer.example", "carl@customer.example", "dee@customer.example"]
    assert by_contact["ana@customer.example"]["case"] == case["id"]  # the case's contact, though not first
    assert by_contact["carl@customer.example"].get("case") is None is by_contact["dee@customer.example"].get("case")
    timeline = inbox.json("cases", "show", case["id"])
    assert timeline["status"] == "pending"
    assert inbox.poll()["counts"] == {}  # read again: nothing logged twice


def test_idle_reads_the_sent_folder_too(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox(sent_folder="Sent", own_addresses=["support@example.com"])
    with inbox.dovecot.connect(inbox.user) as client:
        client.create_folder("Sent")
    inbox.append(mail("Ana <ana@customer.example>", "Login fails", message_id="<q3@customer.example>"))
    answer = mail("Ben <ben@example.com>", "Re: Login fails", "Reset it here.",
                  message_id="<a3@example.com>", in_reply_to="<q3@customer.example>")  # fmt: skip
    inbox.append(answer.replace(b"To: support@example.com", b"To: ana@customer.example"), folder="Sent")

    def answered() -> bool:
        return any(a["kind"] == "email_out" for a in inbox.activities())

    code, _, err = inbox.idle_until(answered)
    assert code == 0, err
    [case] = inbox.json("cases", "list")
    assert case["status"] == "pending" and case["first_response_at"]


def test_sent_folder_must_be_another_folder(make_inbox: Callable[..., Inbox]) -> None:
    inbox = make_inbox(sent_folder="INBOX")
    result = inbox.cli("poll", code=1)
    assert "sent_folder must name another folder" in result.stderr


# -- several mailboxes: [[imap]] (issue 14) ------------------------------------------------------


def _two_mailboxes(inbox: Inbox, dovecot: DovecotServer, *, sales_password: str = PASSWORD) -> str:
    """Rewrite the inbox's crmkit.toml as [[imap]] for its user and a new sales user; the sales user."""
    sales = f"sales{next(_users)}"
    dovecot.add_user(sales, sales_password)
    text = inbox.config_path.read_text()
    body = text.split("[imap]\n", 1)[1]
    second = body.replace(f'"{inbox.user}"', f'"{sales}"')
    inbox.config_path.write_text(f"[[imap]]\n{body}\n[[imap]]\n{second}")
    return sales


def test_several_mailboxes_each_with_its_own_checkpoint(inbox: Inbox, dovecot: DovecotServer) -> None:
    sales = _two_mailboxes(inbox, dovecot)
    inbox.append(mail("ana@customer.example", "support question"))
    dovecot.append(sales, "INBOX", mail("bo@prospect.example", "price list please"))
    data = json.loads(inbox.cli("poll", "--json").stdout)
    assert [d["mailbox"].split("@")[0] for d in data] == [inbox.user, sales]
    assert [d["counts"] for d in data] == [{"new_case": 1}, {"new_case": 1}]
    assert sorted(c["subject"] for c in inbox.json("cases", "list")) == ["price list please", "support question"]
    dovecot.append(sales, "INBOX", mail("bo@prospect.example", "and a demo"))
    again = json.loads(inbox.cli("poll", "--json").stdout)
    assert [d["counts"] for d in again] == [{}, {"new_case": 1}]  # each kept its own place
    out = inbox.cli("poll").stdout.splitlines()
    assert len(out) == 2 and all("0 messages" in line for line in out)


def test_a_failing_mailbox_does_not_stop_the_others(inbox: Inbox, dovecot: DovecotServer) -> None:
    sales = _two_mailboxes(inbox, dovecot, sales_password="another-password")  # CRMKIT_IMAP_PASSWORD is wrong
    inbox.append(mail("ana@customer.example", "still filed"))
    result = inbox.cli("poll", code=1)
    assert f"{inbox.user}@" in result.stdout and "1 message (1 new case)" in result.stdout
    assert f"{sales}@" in result.stderr and "login refused" in result.stderr
    assert [c["subject"] for c in inbox.json("cases", "list")] == ["still filed"]


def test_idle_on_several_mailboxes_files_both_and_stops_on_sigterm(inbox: Inbox, dovecot: DovecotServer) -> None:
    sales = _two_mailboxes(inbox, dovecot)
    inbox.append(mail("ana@customer.example", "while idle, support"))
    dovecot.append(sales, "INBOX", mail("bo@prospect.example", "while idle, sales"))
    code, out, err = inbox.idle_until(lambda: len(Store(inbox.store_path).ids("cases")) == 2)
    assert code == 0, err
    assert f"{inbox.user}@" in out and f"{sales}@" in out
