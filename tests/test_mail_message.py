"""Parsing mail from bytes: charsets, broken MIME, bounces, automatic mail, safe file names."""

from __future__ import annotations

import base64
import unicodedata
from datetime import UTC, datetime
from email.message import EmailMessage

import pytest

from crmkit.mail import message as message_module
from crmkit.mail.message import automatic_reason, parse_message, safe_filename
from crmkit.mail.text import html_to_text, strip_quoted


def raw(*lines: str | bytes) -> bytes:
    return b"\r\n".join(line.encode() if isinstance(line, str) else line for line in lines)


def test_a_plain_message() -> None:
    parsed = parse_message(
        raw(
            "From: Nguyen Thi Hoa <Hoa@SaoMai.vn>",
            "To: support@example.com, Ops <ops@example.com>",
            "Cc: boss@example.com",
            "Subject: Printer broken",
            "Date: Mon, 23 Nov 2026 10:00:00 +0700",
            "Message-ID: <abc@saomai.vn>",
            "In-Reply-To: <ack-1@crmkit>",
            "References: <first@x> <ack-1@crmkit>",
            "",
            "It is broken again.",
        )
    )
    assert (parsed.sender, parsed.sender_name) == ("hoa@saomai.vn", "Nguyen Thi Hoa")
    assert parsed.to == ["support@example.com", "ops@example.com"] and parsed.cc == ["boss@example.com"]
    assert parsed.date == datetime(2026, 11, 23, 3, 0, tzinfo=UTC)
    assert parsed.message_id == "<abc@saomai.vn>" and parsed.thread_ids == ["<ack-1@crmkit>", "<first@x>"]
    assert parsed.text == "It is broken again." and parsed.problems == []
    assert automatic_reason(parsed) is None


@pytest.mark.parametrize(
    ("charset", "text"),
    [
        ("windows-1258", "Máy in bị hỏng, xin hãy giúp"),
        ("koi8-r", "Принтер сломался"),
        ("gb2312", "打印机坏了"),
        ("utf-8", "Nguyễn Thị Hoa: máy in hỏng ✓"),
    ],
)
def test_charsets_in_headers_and_bodies(charset: str, text: str) -> None:
    encoded_subject = base64.b64encode(encode(text, charset)).decode()
    body = encode(text, charset)
    data = raw(
        "From: someone@example.com",
        f"Subject: =?{charset}?B?{encoded_subject}?=",
        "Message-ID: <m@example.com>",
        "MIME-Version: 1.0",
        f"Content-Type: text/plain; charset={charset}",
        "Content-Transfer-Encoding: 8bit",
        "",
        body,
    )
    parsed = parse_message(data)
    assert parsed.subject == text and parsed.text == text and not parsed.problems


def encode(text: str, charset: str) -> bytes:
    """Text in a charset as mail clients write it: windows-1258 puts Vietnamese tone marks apart."""
    if charset != "windows-1258":
        return text.encode(charset)
    out = b""
    for ch in text:
        try:
            out += ch.encode(charset)
        except UnicodeEncodeError:
            base, *marks = unicodedata.normalize("NFD", ch)
            letter = unicodedata.normalize("NFC", base + "".join(m for m in marks if m in "\u0302\u0306\u031b"))
            tones = "".join(m for m in marks if m not in "\u0302\u0306\u031b")
            out += letter.encode(charset) + tones.encode(charset)
    return out


def test_rfc2231_file_names_and_unsafe_ones() -> None:
    data = raw(
        "From: a@example.com",
        "Message-ID: <m@x>",
        "MIME-Version: 1.0",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: text/plain; charset=utf-8",
        "",
        "see attached",
        "--b",
        "Content-Type: application/pdf",
        "Content-Disposition: attachment; filename*=utf-8''H%C3%B3a%20%C4%91%C6%A1n%20th%C3%A1ng%2011.pdf",
        "Content-Transfer-Encoding: base64",
        "",
        base64.b64encode(b"%PDF-1.4 fake").decode(),
        "--b",
        "Content-Type: application/octet-stream",
        'Content-Disposition: attachment; filename="../../etc/passwd"',
        "",
        "root:x:0:0",
        "--b",
        "Content-Type: image/png",
        "Content-Transfer-Encoding: base64",
        "",
        base64.b64encode(b"\x89PNG").decode(),
        "--b--",
    )
    parsed = parse_message(data)
    names = [a.filename for a in parsed.attachments]
    assert names == ["Hóa đơn tháng 11.pdf", "passwd", "attachment-3.png"]
    assert parsed.attachments[0].data == b"%PDF-1.4 fake" and parsed.attachments[0].size == 13
    assert parsed.text == "see attached"


def test_safe_filename() -> None:
    assert safe_filename("..\\..\\Windows\\evil.exe", "x") == "evil.exe"
    assert safe_filename("a\x00b\nc.txt", "x") == "abc.txt"
    assert safe_filename("...", "fallback.bin") == "fallback.bin"
    assert safe_filename(None, "fallback.bin") == "fallback.bin"
    long = safe_filename("ệ" * 200 + ".pdf", "x")
    assert long.endswith(".pdf") and len(long.encode()) <= 150


def test_big_attachments_are_listed_not_kept(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(message_module, "MAX_ATTACHMENT_BYTES", 10)
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content("hi")
    msg.add_attachment(b"x" * 11, maintype="application", subtype="zip", filename="big.zip")
    [attachment] = parse_message(msg.as_bytes()).attachments
    assert (attachment.filename, attachment.size, attachment.data) == ("big.zip", 11, None)


def test_html_only_mail_becomes_text() -> None:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg.set_content(
        "<html><head><style>p{color:red}</style></head><body><p>Hello <b>team</b>,</p>"
        "<p>the <a href='x'>portal</a> is down.</p><div class='gmail_quote'>old stuff</div></body></html>",
        subtype="html",
    )
    parsed = parse_message(msg.as_bytes())
    assert parsed.text.startswith("Hello team,\n\nthe portal is down.")
    assert "color" not in parsed.text


def test_malformed_mail_is_read_as_far_as_it_goes() -> None:
    data = raw(
        b"From: =?bogus-charset?Q?Ana?= <ana@example.com",
        b"Subject: caf\xe9 au lait",  # undeclared 8-bit, not UTF-8
        b"Date: yesterday-ish",
        b"MIME-Version: 1.0",
        b'Content-Type: multipart/mixed; boundary="never-closed"',
        b"",
        b"--never-closed",
        b"Content-Type: text/plain; charset=x-unknown-charset",
        b"",
        b"na\xefve text",
    )
    parsed = parse_message(data)
    assert parsed.sender == "ana@example.com"
    assert parsed.subject == "café au lait"
    assert parsed.text == "naïve text"
    assert parsed.message_id is None and parsed.date is None
    problems = " | ".join(parsed.problems)
    assert "no Message-ID" in problems and "unreadable Date" in problems and "unknown charset" in problems


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\x00\x01\x02garbage without headers",
        b"From: \r\n\r\n",
        b"Content-Type: multipart/mixed\r\n\r\nno boundary at all",
        b"Content-Transfer-Encoding: base64\r\nFrom: a@b.c\r\n\r\n!!!not base64!!!",
        b"From: a@b.c\r\nContent-Type: text/plain; charset=\"utf-8\r\n\r\n\xff\xfe",
    ],
)
def test_garbage_never_raises(data: bytes) -> None:
    parsed = parse_message(data)
    assert isinstance(parsed.text, str)


def test_delivery_status_notification_names_the_bounced_address() -> None:
    data = raw(
        "From: Mail Delivery System <MAILER-DAEMON@mx.example.com>",
        "To: support@example.com",
        "Subject: Undelivered Mail Returned to Sender",
        "Message-ID: <dsn-1@mx.example.com>",
        "Auto-Submitted: auto-replied",
        "MIME-Version: 1.0",
        'Content-Type: multipart/report; report-type=delivery-status; boundary="r"',
        "",
        "--r",
        "Content-Type: text/plain",
        "",
        "I'm sorry to have to inform you that your message could not be delivered.",
        "--r",
        "Content-Type: message/delivery-status",
        "",
        "Reporting-MTA: dns; mx.example.com",
        "",
        "Final-Recipient: rfc822; Gone@Customer.com",
        "Action: failed",
        "Status: 5.1.1",
        "",
        "Final-Recipient: rfc822; slow@customer.com",
        "Action: delayed",
        "Status: 4.4.1",
        "--r--",
    )
    parsed = parse_message(data)
    assert parsed.bounced == ["gone@customer.com"]
    assert automatic_reason(parsed) is not None


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("Auto-Submitted: auto-replied", "Auto-Submitted: auto-replied"),
        ("AUTO-SUBMITTED: Auto-Generated", "Auto-Submitted: auto-generated"),
        ("Precedence: bulk", "Precedence: bulk"),
        ("List-Id: <news.example.com>", "mailing list (List-Id)"),
        ("X-Autoreply: yes", "x-autoreply header"),
        ("Auto-Submitted: no", None),
    ],
)
def test_automatic_mail_is_recognised(header: str, expected: str | None) -> None:
    parsed = parse_message(raw("From: a@example.com", header, "Subject: hello", "", "body"))
    assert automatic_reason(parsed) == expected


@pytest.mark.parametrize(
    ("sender", "subject"),
    [
        ("noreply@shop.example", "Your order"),
        ("no-reply@shop.example", "Your order"),
        ("postmaster@example.com", "hello"),
        ("person@example.com", "Out of Office: back Monday"),
        ("person@example.com", "Automatic reply: holiday"),
    ],
)
def test_automatic_senders_and_subjects(sender: str, subject: str) -> None:
    parsed = parse_message(raw(f"From: {sender}", f"Subject: {subject}", "", "x"))
    assert automatic_reason(parsed) is not None


def test_reply_text_without_quoted_history() -> None:
    text = "Thanks, that fixed it.\n\nOn Mon, 23 Nov 2026 at 10:00, Support <support@example.com>\nwrote:\n> Try again"
    assert strip_quoted(text) == "Thanks, that fixed it."
    assert strip_quoted("Cảm ơn!\n\nVào Th 2, 23 thg 11 lúc 10:00 Hoa <hoa@saomai.vn> đã viết:\n> cũ") == "Cảm ơn!"
    assert strip_quoted("Done\n\n-----Original Message-----\nFrom: x\nSent: y") == "Done"
    assert strip_quoted("ok\n> quoted\nmore") == "ok\nmore"
    assert strip_quoted("> only quoted") == "> only quoted"  # never empty


def test_html_to_text_lists_and_breaks() -> None:
    assert html_to_text("<ul><li>one</li><li>two</li></ul>a<br>b") == "- one\n\n- two\n\na\nb"
    assert html_to_text("<p>a&nbsp;&amp;&lt;b</p>") == "a &<b"


def test_raw_utf8_headers_as_smtputf8_clients_send_them() -> None:
    parsed = parse_message(
        "From: Nguyễn Thị Hoa <hoa@saomai.vn>\r\nSubject: Máy in hỏng\r\n\r\nxin giúp".encode()
    )
    assert (parsed.sender_name, parsed.subject, parsed.text) == ("Nguyễn Thị Hoa", "Máy in hỏng", "xin giúp")
    assert not [p for p in parsed.problems if "windows-1252" in p]


def test_encoded_word_file_names_as_outlook_sends_them() -> None:
    data = raw(
        "From: a@example.com",
        'Content-Type: multipart/mixed; boundary="b"',
        "",
        "--b",
        "Content-Type: text/plain",
        "",
        "x",
        "--b",
        'Content-Type: application/pdf; name="=?utf-8?B?SMOzYSDEkcahbi5wZGY=?="',
        'Content-Disposition: attachment; filename="=?utf-8?B?SMOzYSDEkcahbi5wZGY=?="',
        "",
        "pdf",
        "--b--",
    )
    assert [a.filename for a in parse_message(data).attachments] == ["Hóa đơn.pdf"]


def test_a_comma_in_an_encoded_display_name_does_not_split_the_address() -> None:
    parsed = parse_message(raw("From: =?utf-8?Q?Nguy=E1=BB=85n=2C_Hoa?= <hoa@saomai.vn>", "", "x"))
    assert (parsed.sender_name, parsed.sender) == ("Nguyễn, Hoa", "hoa@saomai.vn")


def test_an_empty_return_path_is_automatic_mail() -> None:
    parsed = parse_message(raw("Return-Path: <>", "From: notify@shop.example", "Subject: Your parcel", "", "x"))
    assert automatic_reason(parsed) == "empty Return-Path (a bounce or notification)"
