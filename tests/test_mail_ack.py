"""Acknowledgements of new cases, sent through a real SMTP server (aiosmtpd) on 127.0.0.1."""

from __future__ import annotations

import ssl
from collections.abc import Iterator
from email.message import EmailMessage

import pytest

from crmkit.config import MailServer, Secret
from crmkit.errors import CrmkitError
from crmkit.mail.ack import acknowledgement, record_sent
from crmkit.mail.inbox import InboxRules, file_message
from crmkit.mail.message import automatic_reason, parse_message
from crmkit.mail.smtp import SendError, SMTPSender
from crmkit.store import Store
from crmkit.testing.mailservers import SMTPServer

FROM = "Support <support@example.com>"


@pytest.fixture(scope="module")
def smtp() -> Iterator[SMTPServer]:
    with SMTPServer(auth={"support": "s3cret"}, require_starttls=True) as server:
        yield server


def sender(smtp: SMTPServer, password: str = "s3cret") -> SMTPSender:
    server = MailServer("smtp", smtp.host, smtp.port, security="starttls", user="support", timeout=5)
    return SMTPSender(server, Secret(password), ssl_context=ssl.create_default_context(cafile=str(smtp.cafile)))


def customer_mail() -> bytes:
    msg = EmailMessage()
    msg["From"] = "Nguyễn Thị Hoa <hoa@saomai.vn>"
    msg["To"] = "support@example.com"
    msg["Subject"] = "Máy in hỏng"
    msg["Message-ID"] = "<q1@saomai.vn>"
    msg["References"] = "<older@saomai.vn>"
    msg.set_content("Máy in lại hỏng.")
    return msg.as_bytes()


def test_a_new_case_is_acknowledged_and_a_reply_to_it_threads(store: Store, smtp: SMTPServer) -> None:
    smtp.clear()
    parsed = parse_message(customer_mail())
    with store.transaction():
        filed = file_message(store, parsed, rules=InboxRules(acknowledge=True))
    assert filed.acknowledge and filed.case == "CASE-1"
    ack = acknowledgement("CASE-1", parsed, from_address=FROM)
    with sender(smtp) as out:
        assert out.send(ack) == {}
    record_sent(store, "CASE-1", ack, contact=filed.person, actor="poller")
    [received] = smtp.wait_for(1)
    got = received.message
    assert received.login == "support" and received.rcpt_tos == ("hoa@saomai.vn",)
    assert str(got["Subject"]) == "[CASE-1] Re: Máy in hỏng"
    assert got["Auto-Submitted"] == "auto-replied"
    assert got["In-Reply-To"] == "<q1@saomai.vn>" and got["References"] == "<older@saomai.vn> <q1@saomai.vn>"
    # an acknowledgement is itself automatic mail: no responder (ours included) answers it
    assert automatic_reason(parse_message(received.data)) == "Auto-Submitted: auto-replied"
    # the customer answers the acknowledgement from another address: it threads by header
    reply = EmailMessage()
    reply["From"] = "boss@saomai.vn"
    reply["Subject"] = "Re: [CASE-1] Re: Máy in hỏng"
    reply["In-Reply-To"] = str(got["Message-ID"])
    reply.set_content("Any news?")
    with store.transaction():
        joined = file_message(store, parse_message(reply.as_bytes()))
    assert (joined.action, joined.case) == ("joined_case", "CASE-1")


def test_a_wrong_password_is_one_line_without_the_password(smtp: SMTPServer) -> None:
    with pytest.raises(CrmkitError) as caught, sender(smtp, "hunter2-wrong") as out:
        out.send(acknowledgement("CASE-9", parse_message(customer_mail()), from_address=FROM))
    assert "refused the login of support" in str(caught.value) and "hunter2" not in str(caught.value)


def test_a_refused_recipient_is_a_send_error(smtp: SMTPServer) -> None:
    smtp.refuse.add("hoa@saomai.vn")
    try:
        with pytest.raises(SendError) as caught, sender(smtp) as out:
            out.send(acknowledgement("CASE-9", parse_message(customer_mail()), from_address=FROM))
        assert caught.value.code == 550 and not caught.value.temporary
    finally:
        smtp.refuse.discard("hoa@saomai.vn")


def test_a_dropped_connection_is_opened_again(smtp: SMTPServer) -> None:
    smtp.clear()
    ack = acknowledgement("CASE-9", parse_message(customer_mail()), from_address=FROM)
    with sender(smtp) as out:
        out.send(ack)
        smtp.drop_after(1, before_reply=False)  # the server hangs up after the next message
        del ack["Message-ID"]
        ack["Message-ID"] = "<second@example.com>"
        out.send(ack)
        del ack["Message-ID"]
        ack["Message-ID"] = "<third@example.com>"
        out.send(ack)  # finds the connection gone, opens a new one
    assert [m.message["Message-ID"] for m in smtp.wait_for(3)][-1] == "<third@example.com>"


def test_header_injection_through_a_subject_is_impossible() -> None:
    parsed = parse_message(customer_mail())
    parsed.subject = "hello\r\nBcc: everyone@example.com"
    ack = acknowledgement("CASE-1", parsed, from_address=FROM)
    assert ack["Bcc"] is None
    assert b"\r\nBcc:" not in ack.as_bytes() and b"\nBcc:" not in ack.as_bytes()
