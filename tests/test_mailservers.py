"""The real mail servers the IMAP poller and mail-merge tests run against (crmkit.testing.mailservers).

These prove the servers are real protocol implementations: imapclient and smtplib talk to them
over plain, STARTTLS and implicit TLS with certificate verification, and the fault injection
(refused recipients, temporary failures, dropped connections) reaches the client as it would
from a real server.
"""

from __future__ import annotations

import os
import smtplib
import ssl
import threading
import time
from collections.abc import Iterator
from email.message import EmailMessage
from pathlib import Path
from typing import Literal

import pytest
from imapclient import IMAPClient
from imapclient.exceptions import LoginError

from crmkit.testing import mailservers
from crmkit.testing.mailservers import DovecotServer, SMTPServer, find_dovecot

REQUIRE_SERVERS = bool(os.environ.get("CRMKIT_REQUIRE_SERVERS"))
needs_dovecot = pytest.mark.skipif(
    find_dovecot() is None and not REQUIRE_SERVERS,
    reason="dovecot is not installed (apt-get install dovecot-imapd); CRMKIT_REQUIRE_SERVERS=1 makes this an error",
)


def raw_message(n: int, subject: str = "Hello") -> bytes:
    return (
        f"From: lead{n}@example.com\r\nTo: alice@example.com\r\nSubject: {subject} {n}\r\n"
        f"Message-ID: <{n}.{subject.lower()}@example.com>\r\n\r\nBody number {n}\r\n"
    ).encode()


# --------------------------------------------------------------------------------------------
# Dovecot


@pytest.fixture(scope="module")
def dovecot(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DovecotServer]:
    server = DovecotServer(tmp_path_factory.mktemp("dovecot"))
    server.add_user("alice", "alice-pw")
    server.add_user("bob@example.com", "bob-pw")
    with server:
        yield server


def assert_login_refused(dovecot: DovecotServer, user: str, password: str) -> None:
    client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
    with client, pytest.raises(LoginError):
        client.login(user, password)


@needs_dovecot
@pytest.mark.parametrize("tls", ["plain", "starttls", "ssl"])
def test_dovecot_login_with_verified_certificate(dovecot: DovecotServer, tls: str) -> None:
    context = ssl.create_default_context(cafile=str(dovecot.cafile))
    if tls == "ssl":
        client = IMAPClient(dovecot.host, port=dovecot.ssl_port, ssl=True, ssl_context=context, timeout=10)
    else:
        client = IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10)
        assert b"STARTTLS" in client.capabilities()
        if tls == "starttls":
            client.starttls(context)
    with client:
        if tls != "plain":
            cert = client.socket().getpeercert()
            assert ("IP Address", "127.0.0.1") in cert["subjectAltName"]
        client.login("alice", "alice-pw")
        assert b"IDLE" in client.capabilities()
        assert client.select_folder("INBOX")[b"EXISTS"] >= 0

    with IMAPClient(dovecot.host, port=dovecot.port, ssl=False, timeout=10) as client:
        client.login("bob@example.com", "bob-pw")


@needs_dovecot
def test_dovecot_certificate_is_really_checked(dovecot: DovecotServer) -> None:
    untrusting = ssl.create_default_context()  # the system CAs do not know the test CA
    with pytest.raises(ssl.SSLCertVerificationError):
        IMAPClient(dovecot.host, port=dovecot.ssl_port, ssl=True, ssl_context=untrusting, timeout=10)


@needs_dovecot
def test_dovecot_refuses_a_wrong_password_and_unknown_user(dovecot: DovecotServer) -> None:
    assert_login_refused(dovecot, "alice", "wrong")
    assert_login_refused(dovecot, "mallory", "alice-pw")
    started = time.monotonic()
    dovecot.connect("alice").logout()  # no auth penalty delay after the failures
    assert time.monotonic() - started < 1.0


@needs_dovecot
def test_dovecot_sees_users_added_and_changed_while_running(dovecot: DovecotServer) -> None:
    assert_login_refused(dovecot, "carol", "carol-pw")
    dovecot.add_user("carol", "carol-pw")
    dovecot.connect("carol").logout()
    dovecot.add_user("carol", "carol-pw2")
    dovecot.connect("carol").logout()
    assert_login_refused(dovecot, "carol", "carol-pw")


@needs_dovecot
def test_dovecot_append_200_and_fetch_them_in_one_batch(dovecot: DovecotServer) -> None:
    with dovecot.connect("alice") as client:
        client.create_folder("Batch")
        sent = [raw_message(n, "Batch") for n in range(200)]
        for raw in sent:
            client.append("Batch", raw)
        client.select_folder("Batch", readonly=True)
        uids = client.search("ALL")
        assert len(uids) == 200
        fetched = client.fetch(uids, ["RFC822", "FLAGS"])
    assert [fetched[uid][b"RFC822"] for uid in sorted(uids)] == sent


@needs_dovecot
def test_dovecot_uidvalidity_uidnext_and_append_helper(dovecot: DovecotServer) -> None:
    first = dovecot.append("alice", "Uids", raw_message(1, "Uids"), flags=[r"\Seen"])
    assert first is not None  # Dovecot has UIDPLUS: APPEND answers with the new UID
    with dovecot.connect("alice", tls="ssl") as client:
        info = client.select_folder("Uids", readonly=True)
        assert isinstance(info[b"UIDVALIDITY"], int) and info[b"UIDVALIDITY"] > 0
        assert info[b"UIDNEXT"] == first + 1
        status = client.folder_status("Uids", ["UIDVALIDITY", "UIDNEXT", "MESSAGES"])
        assert status[b"UIDVALIDITY"] == info[b"UIDVALIDITY"]
        uid = client.search("ALL")[0]
        assert uid == first
        assert rb"\Seen" in client.get_flags([uid])[uid]
    second = dovecot.append("alice", "Uids", raw_message(2, "Uids"))
    assert second == first + 1


@needs_dovecot
def test_dovecot_idle_sees_a_message_appended_by_another_connection(dovecot: DovecotServer) -> None:
    with dovecot.connect("alice", tls="starttls") as watcher:
        watcher.create_folder("Idle")
        watcher.select_folder("Idle")
        watcher.idle()
        try:
            appender = threading.Timer(0.2, dovecot.append, ("alice", "Idle", raw_message(1, "Idle")))
            appender.start()
            started = time.monotonic()
            responses = watcher.idle_check(timeout=10)
            appender.join()
        finally:
            watcher.idle_done()
    assert (1, b"EXISTS") in responses
    assert time.monotonic() - started < 5


def test_dovecot_missing_binary_is_a_clear_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(mailservers, "find_dovecot", lambda: None)
    with pytest.raises(RuntimeError, match="apt-get install dovecot-imapd"):
        DovecotServer(tmp_path / "imap").start()


# --------------------------------------------------------------------------------------------
# SMTP


def email_to(*recipients: str, subject: str = "Hi") -> EmailMessage:
    message = EmailMessage()
    message["From"] = "sales@example.com"
    message["To"] = ", ".join(recipients)
    message["Subject"] = subject
    message.set_content("Hello from the campaign\n")
    return message


def test_smtp_starttls_and_auth_with_verified_certificate() -> None:
    with SMTPServer(auth={"mailer": "s3cret"}, require_starttls=True) as server:
        context = ssl.create_default_context(cafile=str(server.cafile))
        with smtplib.SMTP(server.host, server.port, timeout=10) as client:
            with pytest.raises(smtplib.SMTPException):
                client.login("mailer", "s3cret")  # no AUTH before STARTTLS
            client.starttls(context=context)
            with pytest.raises(smtplib.SMTPAuthenticationError):
                client.login("mailer", "wrong")
            client.login("mailer", "s3cret")
            client.send_message(email_to("ann@example.com"), to_addrs=["ann@example.com"])
        with (
            smtplib.SMTP(server.host, server.port, timeout=10) as client,
            pytest.raises(ssl.SSLCertVerificationError),
        ):
            client.starttls(context=ssl.create_default_context())
    [received] = server.messages
    assert received.mail_from == "sales@example.com"
    assert received.rcpt_tos == ("ann@example.com",)
    assert received.login == "mailer"
    assert received.message["Subject"] == "Hi"
    assert received.message.get_content().rstrip() == "Hello from the campaign"


def test_smtp_auth_is_required_before_mail() -> None:
    with (
        SMTPServer(auth={"mailer": "s3cret"}, starttls=True) as server,
        smtplib.SMTP(server.host, server.port, timeout=10) as client,
    ):
        client.starttls(context=ssl.create_default_context(cafile=str(server.cafile)))
        with pytest.raises(smtplib.SMTPSenderRefused) as refused:
            client.send_message(email_to("ann@example.com"))
        assert refused.value.smtp_code == 530
    assert server.messages == []


def test_smtp_implicit_tls_with_auth_login() -> None:
    with SMTPServer(implicit_tls=True, auth={"mailer": "s3cret"}) as server:
        context = ssl.create_default_context(cafile=str(server.cafile))
        with smtplib.SMTP_SSL(server.host, server.port, context=context, timeout=10) as client:
            client.ehlo()
            assert set(client.esmtp_features["auth"].split()) == {"LOGIN", "PLAIN"}
            client.user, client.password = "mailer", "s3cret"
            client.auth("LOGIN", client.auth_login, initial_response_ok=False)  # login() picks PLAIN
            client.send_message(email_to("ann@example.com"))
    assert [(m.rcpt_tos, m.login) for m in server.messages] == [(("ann@example.com",), "mailer")]


def test_smtp_refused_recipient_is_refused_alone() -> None:
    with (
        SMTPServer(refuse={"gone@example.com"}) as server,
        smtplib.SMTP(server.host, server.port, timeout=10) as client,
    ):
        with pytest.raises(smtplib.SMTPRecipientsRefused) as refused:
            client.sendmail(
                "sales@example.com", ["gone@example.com"], email_to("gone@example.com").as_bytes()
            )
        assert list(refused.value.recipients) == ["gone@example.com"]
        assert refused.value.recipients["gone@example.com"][0] == 550

        rejected = client.sendmail(
            "sales@example.com",
            ["ann@example.com", "GONE@example.com", "bo@example.com"],
            email_to("ann@example.com").as_bytes(),
        )
    assert list(rejected) == ["GONE@example.com"]
    assert [m.rcpt_tos for m in server.messages] == [("ann@example.com", "bo@example.com")]


@pytest.mark.parametrize(
    ("at", "error"),
    [("DATA", smtplib.SMTPDataError), ("MAIL", smtplib.SMTPSenderRefused)],
)
def test_smtp_temporary_failure_then_success(
    at: Literal["MAIL", "DATA"], error: type[smtplib.SMTPResponseException]
) -> None:
    with SMTPServer() as server, smtplib.SMTP(server.host, server.port, timeout=10) as client:
        server.fail_next(1, at=at)
        with pytest.raises(error) as failed:
            client.send_message(email_to("ann@example.com"))
        assert failed.value.smtp_code == 451
        client.rset()
        client.send_message(email_to("ann@example.com", subject="Retry"))
    assert [m.message["Subject"] for m in server.messages] == ["Retry"]


def test_smtp_drop_before_reply_leaves_the_send_uncertain() -> None:
    with SMTPServer() as server:
        server.drop_after(2)
        with smtplib.SMTP(server.host, server.port, timeout=10) as client:
            client.send_message(email_to("ann@example.com", subject="One"))
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.send_message(email_to("bo@example.com", subject="Two"))
        # the client saw a failure, yet the server kept the message: a resend would duplicate it
        assert [m.message["Subject"] for m in server.messages] == ["One", "Two"]
        with smtplib.SMTP(server.host, server.port, timeout=10) as client:  # reconnecting works
            client.send_message(email_to("cy@example.com", subject="Three"))
    assert len(server.messages) == 3


def test_smtp_drop_after_reply_breaks_the_next_command() -> None:
    with SMTPServer() as server:
        server.drop_after(1, before_reply=False)
        with smtplib.SMTP(server.host, server.port, timeout=10) as client:
            client.send_message(email_to("ann@example.com", subject="One"))
            with pytest.raises(smtplib.SMTPServerDisconnected):
                client.send_message(email_to("bo@example.com", subject="Two"))
        assert [m.message["Subject"] for m in server.messages] == ["One"]


def test_smtp_utf8_addresses() -> None:
    with SMTPServer() as server, smtplib.SMTP(server.host, server.port, timeout=10) as client:
        client.send_message(email_to("josé@exämple.com", subject="Olá"))
    [received] = server.messages
    assert received.smtputf8
    assert received.rcpt_tos == ("josé@exämple.com",)
    assert received.message["To"] == "josé@exämple.com"
    assert received.message["Subject"] == "Olá"


def test_smtp_without_smtputf8_refuses_utf8_addresses() -> None:
    with (
        SMTPServer(smtputf8=False) as server,
        smtplib.SMTP(server.host, server.port, timeout=10) as client,
        pytest.raises(smtplib.SMTPNotSupportedError),
    ):
        client.send_message(email_to("josé@exämple.com"))


def test_smtp_wait_for_messages_sent_from_a_thread() -> None:
    with SMTPServer() as server:

        def send() -> None:
            with smtplib.SMTP(server.host, server.port, timeout=10) as client:
                for n in range(3):
                    client.send_message(email_to(f"lead{n}@example.com", subject=str(n)))

        sender = threading.Thread(target=send)
        sender.start()
        received = server.wait_for(3)
        sender.join()
    assert sorted(m.message["Subject"] for m in received) == ["0", "1", "2"]
    with pytest.raises(TimeoutError):
        server.wait_for(4, timeout=0.1)
