"""``crmkit cases reply``: answers sent through a real SMTP server (aiosmtpd, STARTTLS + AUTH on
127.0.0.1), logged on the case, and threaded back by a real poller reading a real Dovecot."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from crmkit.cli import main
from crmkit.config import MailServer, Secret
from crmkit.errors import CrmkitError
from crmkit.mail.inbox import file_message
from crmkit.mail.message import parse_message
from crmkit.mail.reply import (
    EDITOR_MARKER,
    ReplyError,
    ReplyNotSent,
    build_reply,
    editor_text,
    reply_to_case,
    text_from_editor,
    thread_references,
)
from crmkit.store import Store
from crmkit.testing.mailservers import DovecotServer, SMTPServer, find_dovecot

USER, PASSWORD = "support", "smtp-pw-r3ply"
FROM = "Acme Support <support@acme-crm.example>"
NOW = datetime(2026, 3, 2, 10, 0, tzinfo=UTC)
REQUIRE_SERVERS = bool(os.environ.get("CRMKIT_REQUIRE_SERVERS"))


@pytest.fixture(scope="module")
def smtp() -> Iterator[SMTPServer]:
    with SMTPServer(auth={USER: PASSWORD}, require_starttls=True) as server:
        yield server


@pytest.fixture
def server(smtp: SMTPServer) -> Iterator[SMTPServer]:
    smtp.reset()
    yield smtp


def settings(server: SMTPServer, **changes: Any) -> MailServer:
    values: dict[str, Any] = {
        "security": "starttls",
        "user": USER,
        "from_address": FROM,
        "timeout": 5,
        "cafile": server.cafile,
    }
    values = {"host": server.host, "port": server.port, **values, **changes}
    return MailServer("smtp", **values)


def seed(store: Store, **contact: Any) -> dict[str, Any]:
    """A contact who wrote twice about one case (the newest mail last), and the case, open."""
    person = store.add("contacts", {"name": "Ana Nguyễn", "email": "ana@customer.example", **contact})
    case = store.add(
        "cases",
        {"subject": "Re: Printer on fire", "contact": person["id"], "status": "open", "origin": "email"},
    )
    for n, (day, body) in enumerate([(1, "It smokes."), (2, "Still smoking,\nplease hurry.")]):
        store.add(
            "activities",
            {
                "kind": "email_in",
                "subject": "Printer on fire",
                "body": body,
                "date": datetime(2026, 3, day, 8, 0, tzinfo=UTC).isoformat(),
                "sender": "ana@customer.example",
                "message_id": f"<q{n}@customer.example>",
                "case": case["id"],
                "contact": person["id"],
            },
        )
    return case


def body(msg: EmailMessage) -> str:
    """The text part as a reader gets it (the wire's CRLF as newlines)."""
    part = msg.get_body(("plain",))
    assert part is not None
    return str(part.get_content()).replace("\r\n", "\n")


def activities_of(store: Store, case_id: str) -> list[dict[str, Any]]:
    return store.linked("activities", "case", case_id)


# -- the message alone ---------------------------------------------------------------------------


def test_build_reply_writes_a_threaded_message_no_data_can_add_a_header_to() -> None:
    reply = build_reply(
        case_id="CASE-7",
        case_subject="Help\r\nBcc: evil@attacker.example",
        contact_id="C-1",
        contact_name='Eve\r\nCc: spy@attacker.example "x"',
        to="eve@customer.example",
        from_address=FROM,
        text="Hello.\n",
        thread=["<a@x.example>", "not an id", "<b@x.example>"],
        now=NOW,
    )
    from email import message_from_bytes, policy

    msg = message_from_bytes(reply.data, policy=policy.default)
    assert msg["Bcc"] is None and msg["Cc"] is None
    assert msg["Subject"] == "[CASE-7] Re: Help Bcc: evil@attacker.example"
    assert msg["To"].addresses[0].addr_spec == "eve@customer.example"
    assert (msg["In-Reply-To"], msg["References"]) == ("<b@x.example>", "<a@x.example> <b@x.example>")
    assert reply.message_id.endswith(".case-7@acme-crm.example>") and msg["Message-ID"] == reply.message_id
    assert b"\r\nBcc:" not in reply.data and b"\r\nCc:" not in reply.data
    with pytest.raises(ReplyError, match="empty"):
        build_reply(case_id="CASE-7", case_subject="x", contact_id="C-1", contact_name="", to="a@b.example",
                    from_address=FROM, text=" \n\t")  # fmt: skip


def test_references_keep_the_first_and_the_newest_ids() -> None:
    ids = [f"<m{n}@x.example>" for n in range(15)]
    assert thread_references(ids) == (ids[0], *ids[-9:])
    assert thread_references(["<a@x.example>", "<a@x.example>", "<bad id@x>"]) == ("<a@x.example>",)


def test_the_editor_text_quotes_the_customer_below_the_marker_and_the_marker_cuts_it_off() -> None:
    shown = editor_text(
        {"sender": "ana@customer.example", "date": "2026-03-02T08:00:00+00:00", "body": "A\nB"}
    )
    assert shown.splitlines()[2] == EDITOR_MARKER and "> A\n> B" in shown and "ana@customer.example" in shown
    assert text_from_editor("Thanks, fixed.\n\n" + shown) == "Thanks, fixed.\n"
    assert text_from_editor(shown) == ""  # saved untouched: an empty reply


# -- sending through aiosmtpd ------------------------------------------------------------------------


def test_a_reply_goes_out_threaded_is_logged_and_sets_the_first_response_once(
    store: Store, server: SMTPServer, tmp_path: Path
) -> None:
    case = seed(store)
    quote = tmp_path / "quote-1042.pdf"
    quote.write_bytes(b"%PDF-1.4 fake quote\n")
    result = reply_to_case(store, settings(server), Secret(PASSWORD), "CASE-1",
                           "Hi Ana,\n\nthe fix is live.\n", attachments=[quote], now=NOW)  # fmt: skip
    [sent] = server.wait_for(1)
    assert (sent.mail_from, sent.rcpt_tos, sent.login) == (
        "support@acme-crm.example",
        ("ana@customer.example",),
        USER,
    )
    msg = sent.message
    assert msg["Subject"] == "[CASE-1] Re: Printer on fire"
    assert msg["From"].addresses[0].addr_spec == "support@acme-crm.example"
    assert str(msg["To"]) == "Ana Nguyễn <ana@customer.example>"
    assert msg["In-Reply-To"] == "<q1@customer.example>"
    assert msg["References"] == "<q0@customer.example> <q1@customer.example>"
    assert msg["Message-ID"] == result.reply.message_id and msg["Message-ID"].endswith("@acme-crm.example>")
    assert body(msg) == "Hi Ana,\n\nthe fix is live.\n"
    [attached] = list(msg.iter_attachments())
    assert (attached.get_filename(), attached.get_content()) == ("quote-1042.pdf", b"%PDF-1.4 fake quote\n")

    [logged] = store.find_by_message_id(result.reply.message_id)
    assert logged["id"] == result.activity
    assert (logged["kind"], logged["case"], logged["contact"]) == ("email_out", "CASE-1", "C-1")
    assert (logged["subject"], logged["body"]) == (
        "[CASE-1] Re: Printer on fire",
        "Hi Ana,\n\nthe fix is live.",
    )
    assert (logged["sender"], logged["recipients"]) == (
        "support@acme-crm.example",
        "Ana Nguyễn <ana@customer.example>",
    )
    # the shape of every email activity's attachments (the poller's); no archive given: no path
    assert logged["attachments"] == [
        {"name": "quote-1042.pdf", "size": 20, "content_type": "application/pdf", "path": None}
    ]
    assert logged["date"] == NOW.isoformat()
    after = store.get("CASE-1")
    assert (after["status"], after["first_response_at"]) == ("pending", NOW.isoformat())
    assert (result.status_before, result.status) == ("open", "pending") and case["status"] == "open"

    # the copy a poller finds in the Sent folder is the same message: a duplicate, not a second entry
    with store.transaction():
        assert file_message(store, parse_message(sent.data)).action == "duplicate"

    later = NOW + timedelta(hours=3)
    second = reply_to_case(store, settings(server), Secret(PASSWORD), "CASE-1", "One more thing.", now=later)
    again = server.wait_for(2)[1].message
    assert again["In-Reply-To"] == result.reply.message_id  # our first answer is now the newest mail
    assert again["References"].split() == [
        "<q0@customer.example>",
        "<q1@customer.example>",
        result.reply.message_id,
    ]
    assert store.get("CASE-1")["first_response_at"] == NOW.isoformat()  # the first answer's time stays
    assert second.first_response_at == NOW.isoformat()
    assert len([a for a in activities_of(store, "CASE-1") if a["kind"] == "email_out"]) == 2


@pytest.mark.parametrize("status", ["resolved", "closed"])
def test_a_resolved_or_closed_case_keeps_its_status_unless_reopen(
    store: Store, server: SMTPServer, status: str
) -> None:
    seed(store)
    store.update("CASE-1", {"status": status})
    result = reply_to_case(store, settings(server), Secret(PASSWORD), "CASE-1", "Glad it works.", now=NOW)
    assert store.get("CASE-1")["status"] == status and result.notes == [
        f"CASE-1 stays {status} (--reopen makes it pending)"
    ]
    assert store.get("CASE-1")["first_response_at"] == NOW.isoformat()
    reply_to_case(store, settings(server), Secret(PASSWORD), "CASE-1", "Actually…", reopen=True, now=NOW)
    assert store.get("CASE-1")["status"] == "pending"


def test_a_new_case_without_mail_gets_a_reply_without_in_reply_to(store: Store, server: SMTPServer) -> None:
    store.add("contacts", {"name": "Bo", "email": "bo@customer.example"})
    store.add("cases", {"subject": "Called about billing", "contact": "C-1", "origin": "phone"})
    reply_to_case(store, settings(server), Secret(PASSWORD), "CASE-1", "As discussed on the phone…", now=NOW)
    msg = server.wait_for(1)[0].message
    assert msg["Subject"] == "[CASE-1] Re: Called about billing"
    assert msg["In-Reply-To"] is None and msg["References"] is None
    assert store.get("CASE-1")["status"] == "pending"


# -- refusals: nothing sent, nothing logged, the case as it was -------------------------------------


def unchanged(store: Store, server: SMTPServer, before: dict[str, Any], activities: int) -> None:
    after = store.get("CASE-1")
    assert (after["status"], after.get("first_response_at")) == (
        before["status"],
        before.get("first_response_at"),
    )
    assert len(activities_of(store, "CASE-1")) == activities


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"contact": None}, "CASE-1 has no contact to answer"),
        ({"contact_email": None}, "CASE-1's contact C-1 has no email address"),
        ({"opt_out": True}, "has opted out of mail; --force sends anyway"),
        ({"email_status": "bounced"}, "has bounced; --force sends anyway"),
    ],
    ids=["no contact", "no email", "opted out", "bounced"],
)
def test_a_case_without_someone_to_write_to_is_refused(
    store: Store, server: SMTPServer, change: dict[str, Any], message: str
) -> None:
    before = seed(store)
    if "contact" in change:
        store.update("CASE-1", {"contact": ""})
    elif "contact_email" in change:
        store.update("C-1", {"email": ""})
    else:
        store.update("C-1", change)
    with pytest.raises(ReplyError, match=message.replace("'", ".")):
        reply_to_case(store, settings(server), Secret(PASSWORD), "CASE-1", "Hello", now=NOW)
    unchanged(store, server, before, 2)
    if "opt_out" in change or "email_status" in change:
        reply_to_case(store, settings(server), Secret(PASSWORD), "CASE-1", "Hello", force=True, now=NOW)
        assert server.wait_for(1)[0].rcpt_tos == ("ana@customer.example",)
    else:
        assert server.messages == []


def test_an_empty_text_sends_nothing(store: Store, server: SMTPServer) -> None:
    before = seed(store)
    with pytest.raises(ReplyError, match="the reply is empty: nothing was sent"):
        reply_to_case(store, settings(server), Secret(PASSWORD), "CASE-1", "  \n\n", now=NOW)
    unchanged(store, server, before, 2)
    assert server.messages == []


@pytest.mark.parametrize(
    ("fault", "message"),
    [
        ("refuse", "not sent, nothing logged: every recipient refused: 550"),
        ("data", "not sent, nothing logged: the SMTP server answered 554"),
        ("mail", "not sent, nothing logged: the SMTP server answered MAIL FROM with 451"),
        ("drop", "may have been delivered, so nothing was logged"),
        ("login", "not sent, nothing logged: the SMTP server 127.0.0.1"),
        ("down", "not sent, nothing logged: cannot reach the SMTP server"),
    ],
)
def test_a_refusal_or_a_broken_line_logs_nothing_and_leaves_the_case(
    store: Store, server: SMTPServer, fault: str, message: str
) -> None:
    before = seed(store)
    smtp_settings, password = settings(server), Secret(PASSWORD)
    if fault == "refuse":
        server.refuse.add("ana@customer.example")
    elif fault == "data":
        server.fail_next(1, 554, at="DATA")
    elif fault == "mail":
        server.fail_next(2, 451, at="MAIL")
    elif fault == "drop":
        server.drop_after(1, before_reply=True)
    elif fault == "login":
        password = Secret("wrong-pw-9x")
    else:
        smtp_settings = settings(server, port=_closed_port())
    with pytest.raises(ReplyNotSent, match=message) as raised:
        reply_to_case(store, smtp_settings, password, "CASE-1", "The fix is live.", now=NOW)
    assert (
        "\n" not in str(raised.value)
        and PASSWORD not in str(raised.value)
        and "wrong-pw" not in str(raised.value)
    )
    assert raised.value.uncertain == (fault == "drop")
    unchanged(store, server, before, 2)
    assert not [a for a in activities_of(store, "CASE-1") if a["kind"] == "email_out"]
    for got in server.messages:  # the dropped line's message reached the server, and is not logged
        assert store.find_by_message_id(str(got.message["Message-ID"])) == []
    assert len(server.messages) == (1 if fault == "drop" else 0)


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# -- the command -----------------------------------------------------------------------------------


class Folder:
    """A TinyDB store and a crmkit.toml whose [smtp] is the test server."""

    def __init__(self, folder: Path, server: SMTPServer, extra: str = "") -> None:
        self.folder = folder
        self.server = server
        self.store_path = folder / "crm.json"
        self.config_path = folder / "crmkit.toml"
        self.config_path.write_text(
            f'[smtp]\nhost = "{server.host}"\nport = {server.port}\nsecurity = "starttls"\nuser = "{USER}"\n'
            f'from = "{FROM}"\ncafile = "{server.cafile}"\ntimeout = 5\n{extra}'
        )
        store = Store(self.store_path)
        seed(store)
        store.close()

    def cli(
        self, *args: str, code: int = 0, password: str = PASSWORD, env: dict[str, str] | None = None
    ) -> Result:
        result = CliRunner().invoke(
            main,
            ["--store", str(self.store_path), "--config", str(self.config_path), *args],
            env={"CRMKIT_SMTP_PASSWORD": password, "CRMKIT_STORE": "", **(env or {})},
        )
        assert result.exit_code == code, (result.output, result.exception)
        return result

    def store(self) -> Store:
        return Store(self.store_path)


@pytest.fixture
def folder(tmp_path: Path, server: SMTPServer) -> Folder:
    return Folder(tmp_path, server)


def test_cli_reply_with_a_message_and_an_attachment_prints_json_for_scripts(folder: Folder) -> None:
    (folder.folder / "steps.txt").write_text("1. unplug\n2. plug in\n")
    result = folder.cli("cases", "reply", "CASE-1", "-m", "See the steps attached.", "--attach",
                        str(folder.folder / "steps.txt"), "--json")  # fmt: skip
    data = json.loads(result.stdout)
    [sent] = folder.server.wait_for(1)
    assert data["sent"] is True and data["dry_run"] is False
    assert (data["case"], data["to"], data["status_before"], data["status"]) == (
        "CASE-1",
        "ana@customer.example",
        "open",
        "pending",
    )
    assert data["message_id"] == sent.message["Message-ID"] and data["in_reply_to"] == "<q1@customer.example>"
    assert data["attachments"] == [{"filename": "steps.txt", "size": 21, "content_type": "text/plain"}]
    assert [a.get_filename() for a in sent.message.iter_attachments()] == ["steps.txt"]
    [logged] = folder.store().find_by_message_id(data["message_id"])
    assert (
        logged["id"] == data["activity"]
        and data["first_response_at"] == folder.store().get("CASE-1")["first_response_at"]
    )
    # kept beside the store as the poller keeps mail: the message as sent, and its file
    store_folder = folder.store().path.parent
    kept = folder.cli("activities", "eml", logged["id"]).stdout_bytes
    assert kept == sent.data  # byte for byte what the server was given
    [attachment] = logged["attachments"]
    assert attachment["name"] == "steps.txt"
    assert (store_folder / attachment["path"]).read_bytes() == sent.message.get_payload()[1].get_payload(decode=True)


def test_cli_reply_from_a_file_says_what_it_did(folder: Folder) -> None:
    (folder.folder / "answer.txt").write_text("Dear Ana,\n\nfixed.\n", encoding="utf-8")
    result = folder.cli("cases", "reply", "case-1", "--file", str(folder.folder / "answer.txt"))
    [sent] = folder.server.wait_for(1)
    assert result.stdout.startswith("Sent CASE-1 reply to ana@customer.example (<")
    assert result.stdout.rstrip().endswith("logged as ACT-3, case pending")
    assert body(sent.message) == "Dear Ana,\n\nfixed.\n"


def test_cli_dry_run_prints_the_message_and_sends_and_logs_nothing(folder: Folder) -> None:
    result = folder.cli("cases", "reply", "CASE-1", "-m", "Checking…", "--dry-run", password="")
    assert "Subject: [CASE-1] Re: Printer on fire" in result.stdout and "Checking…" in result.stdout
    assert "In-Reply-To: <q1@customer.example>" in result.stdout
    assert "dry run: nothing was sent to ana@customer.example." in result.stdout
    data = json.loads(folder.cli("cases", "reply", "CASE-1", "-m", "Checking…", "--dry-run", "--json").stdout)
    assert (data["sent"], data["activity"], data["status"]) == (False, None, "open")
    assert "To: Ana Nguyễn <ana@customer.example>" in data["message"]
    store = folder.store()
    assert store.get("CASE-1")["status"] == "open" and len(activities_of(store, "CASE-1")) == 2
    assert folder.server.messages == []


def test_cli_refusals_are_one_line_and_exit_1(folder: Folder) -> None:
    empty = folder.cli("cases", "reply", "CASE-1", "-m", "   ", code=1)
    assert empty.stderr == "Error: the reply is empty: nothing was sent\n"
    folder.cli("contacts", "update", "C-1", "opt_out=yes")
    opted = folder.cli("cases", "reply", "CASE-1", "-m", "Hello", code=1)
    assert opted.stderr == (
        "Error: CASE-1's contact C-1 (ana@customer.example) has opted out of mail; --force sends anyway\n"
    )
    folder.cli("contacts", "update", "C-1", "opt_out=no")
    folder.server.refuse.add("ana@customer.example")
    refused = folder.cli("cases", "reply", "CASE-1", "-m", "Hello", code=1)
    assert refused.stderr.startswith("Error: CASE-1: not sent, nothing logged: every recipient refused: 550")
    assert refused.stderr.count("\n") == 1 and PASSWORD not in refused.output
    wrong = folder.cli("cases", "reply", "CASE-1", "-m", "Hello", code=1, password="wrong-pw-9x")
    assert "refused the login of support" in wrong.stderr and "wrong-pw-9x" not in wrong.output
    missing = folder.cli("cases", "reply", "CASE-9", "-m", "Hello", code=1)
    assert missing.stderr == "Error: no case CASE-9\n"
    both = folder.cli("cases", "reply", "CASE-1", "-m", "x", "--file", str(folder.config_path), code=2)
    assert "not both" in both.stderr
    neither = folder.cli("cases", "reply", "CASE-1", code=2)  # no terminal for an editor under a test
    assert "give the reply with -m TEXT or --file PATH" in neither.stderr
    assert folder.server.messages == [] and len(activities_of(folder.store(), "CASE-1")) == 2


def test_cli_reply_in_the_editor_quotes_the_customer_and_an_untouched_file_sends_nothing(
    folder: Folder, monkeypatch: pytest.MonkeyPatch
) -> None:
    from crmkit.cli import cases

    monkeypatch.setattr(cases, "_is_terminal", lambda: True)
    seen = folder.folder / "seen.txt"
    editor = folder.folder / "editor.py"
    editor.write_text(
        "import pathlib, sys\n"
        "path = pathlib.Path(sys.argv[1])\n"
        "text = path.read_text()\n"
        f"pathlib.Path({str(seen)!r}).write_text(text)\n"
        "path.write_text('Thanks Ana, on its way.\\n' + text)\n"
    )
    editor_cmd = f"{sys.executable} {editor}"
    folder.cli("cases", "reply", "CASE-1", env={"EDITOR": editor_cmd, "VISUAL": ""})
    shown = seen.read_text()
    assert EDITOR_MARKER in shown and "> Still smoking,\n> please hurry." in shown
    msg = folder.server.wait_for(1)[0].message
    assert body(msg) == "Thanks Ana, on its way.\n"  # the quote stays out

    untouched = folder.folder / "untouched.py"
    untouched.write_text("import sys\n")
    result = folder.cli("cases", "reply", "CASE-1", code=1,
                        env={"EDITOR": f"{sys.executable} {untouched}", "VISUAL": ""})  # fmt: skip
    assert result.stderr == "Error: the reply is empty: nothing was sent\n"
    assert len(folder.server.messages) == 1

    # a contact who must not be written to is refused before the editor opens, not after
    seen.unlink()
    folder.cli("contacts", "update", "C-1", "opt_out=yes")
    refused = folder.cli("cases", "reply", "CASE-1", code=1, env={"EDITOR": editor_cmd, "VISUAL": ""})
    assert "has opted out of mail" in refused.stderr and not seen.exists()


def test_cli_reply_help_has_an_example(folder: Folder) -> None:
    help_text = folder.cli("cases", "reply", "--help").stdout
    assert "Example:" in help_text and "crmkit cases reply CASE-12" in help_text


# -- end to end with the poller and a real Dovecot -----------------------------------------------------

IMAP_PASSWORD = "imap-pw-r3ply"


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    if find_dovecot() is None and not REQUIRE_SERVERS:
        pytest.skip(
            "dovecot is not installed (apt-get install dovecot-imapd); CRMKIT_REQUIRE_SERVERS=1 makes this an error"
        )
    with DovecotServer(tmp_path_factory.mktemp("dovecot")) as running:
        yield running


def customer_mail(subject: str, body: str, message_id: str, in_reply_to: str | None = None) -> bytes:
    msg = EmailMessage()
    msg["From"] = "Ana Nguyen <ana@customer.example>"
    msg["To"] = "support@acme-crm.example"
    msg["Subject"] = subject
    msg["Date"] = "Mon, 02 Mar 2026 09:00:00 +0000"
    msg["Message-ID"] = message_id
    if in_reply_to:
        msg["In-Reply-To"] = in_reply_to
        msg["References"] = in_reply_to
    msg.set_content(body)
    return msg.as_bytes(policy=msg.policy.clone(linesep="\r\n"))


def test_end_to_end_the_customer_writes_the_team_replies_and_the_answer_threads_back(
    dovecot: DovecotServer, server: SMTPServer, tmp_path: Path
) -> None:
    dovecot.add_user("helpdesk", IMAP_PASSWORD)
    with dovecot.connect("helpdesk") as client:
        client.create_folder("Sent")
    imap = (
        f'[imap]\nhost = "{dovecot.host}"\nport = {dovecot.ssl_port}\nsecurity = "ssl"\nuser = "helpdesk"\n'
        f'cafile = "{dovecot.cafile}"\ntimeout = 10\nsent_folder = "Sent"\n'
    )
    store_path = tmp_path / "crm.json"
    Store(store_path).create()
    config = tmp_path / "crmkit.toml"
    config.write_text(
        f'[smtp]\nhost = "{server.host}"\nport = {server.port}\nsecurity = "starttls"\nuser = "{USER}"\n'
        f'from = "{FROM}"\ncafile = "{server.cafile}"\ntimeout = 5\n' + imap
    )
    env = {"CRMKIT_SMTP_PASSWORD": PASSWORD, "CRMKIT_IMAP_PASSWORD": IMAP_PASSWORD, "CRMKIT_STORE": ""}

    def cli(*args: str, json_out: bool = True) -> Any:
        result = CliRunner().invoke(
            main,
            ["--store", str(store_path), "--config", str(config), *args, *(["--json"] if json_out else [])],
            env=env,
        )
        assert result.exit_code == 0, (result.output, result.exception)
        return json.loads(result.stdout) if json_out else result

    def case_mail() -> list[tuple[str, str]]:
        return [(a["kind"], a["message_id"]) for a in cli("activities", "list", "--where", "case=CASE-1")]

    dovecot.append(
        "helpdesk", "INBOX", customer_mail("Printer on fire", "It smokes.", "<fire@customer.example>")
    )
    assert cli("poll")["counts"] == {"new_case": 1}
    sent = cli("cases", "reply", "CASE-1", "-m", "Please unplug it; a technician is on the way.")
    assert sent["in_reply_to"] == "<fire@customer.example>" and sent["status"] == "pending"
    [received] = server.wait_for(1)

    # the copy a mail program keeps in Sent is the message already logged: a duplicate, nothing twice
    dovecot.append("helpdesk", "Sent", received.data)
    assert [f["action"] for f in cli("poll")["filed"]] == ["duplicate"]
    assert case_mail() == [("email_in", "<fire@customer.example>"), ("email_out", sent["message_id"])]
    [case] = cli("cases", "list")
    assert (case["status"], case["first_response_at"]) == ("pending", sent["first_response_at"])

    # the customer answers from a mail program that drops the case token: the header alone threads it
    answer = customer_mail(
        "Re: Printer", "Unplugged, thanks.", "<thanks@customer.example>", received.message["Message-ID"]
    )
    dovecot.append("helpdesk", "INBOX", answer)
    [filed] = cli("poll")["filed"]
    assert (filed["action"], filed["case"]) == ("joined_case", "CASE-1")
    [case] = cli("cases", "list")
    assert case["status"] == "open"  # it waited on the customer, who answered
    assert case["first_response_at"] == sent["first_response_at"]
    assert case_mail()[-1] == ("email_in", "<thanks@customer.example>")

    # the team calls it resolved; the customer writes back to our answer: the case re-opens
    cli("cases", "update", "CASE-1", "status=resolved", json_out=False)
    again = customer_mail("Re: [CASE-1] Re: Printer on fire", "It smokes again!", "<again@customer.example>",
                          sent["message_id"])  # fmt: skip
    dovecot.append("helpdesk", "INBOX", again)
    [filed] = cli("poll")["filed"]
    assert (filed["action"], filed["case"]) == ("reopened_case", "CASE-1")
    assert [c["status"] for c in cli("cases", "list")] == ["open"]


def test_errors_are_crmkit_errors() -> None:
    assert issubclass(ReplyError, CrmkitError) and issubclass(ReplyNotSent, CrmkitError)
