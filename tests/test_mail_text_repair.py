"""Real mail that used to be quarantined or turned into mojibake is filed with what it says.

Issue 14, part 1: control characters in the text, one bad byte in a part, undeclared 8-bit
headers in the message's own charset, binary data labelled text/plain. Each message is
parsed and then filed into a real store, as the poller does, and must not be refused.
"""

from __future__ import annotations

import json
import struct
import zlib

from crmkit.mail.inbox import file_message
from crmkit.mail.message import parse_message
from crmkit.store import Store


def raw(*lines: str | bytes) -> bytes:
    return b"\r\n".join(line.encode() if isinstance(line, str) else line for line in lines)


HEAD = ("From: Ana <ana@customer.example>", "To: support@example.com", "Date: Mon, 23 Nov 2026 10:00:00 +0000")


def _filed_text(store: Store, data: bytes) -> tuple[str, str]:
    parsed = parse_message(data)
    with store.transaction():
        filed = file_message(store, parsed)
    activity = store.get(filed.activity or "")
    return activity.get("subject", ""), activity.get("body", "")


def test_control_characters_are_cleaned_not_refused(store: Store) -> None:
    data = raw(*HEAD, "Subject: Report\x1b[31m red", "Message-ID: <cc@x>", "Content-Type: text/plain; charset=utf-8",
               "", "Page one\x0cPage two\x00 with a NUL, an ESC \x1b[2J and a bell \x07.", "Tab\tkept.")  # fmt: skip
    parsed = parse_message(data)
    assert parsed.subject == "Report\ufffd[31m red"
    assert parsed.text == "Page one\nPage two with a NUL, an ESC \ufffd[2J and a bell \ufffd.\nTab\tkept."
    subject, body = _filed_text(store, data)
    assert subject == parsed.subject and "Page two with a NUL" in body and "\x00" not in body


def test_one_bad_byte_costs_one_character_not_the_body() -> None:
    russian = "Профессиональная поддержка нужна срочно, спасибо."
    body = russian.encode("utf-8")
    broken = body[:20] + b"\xff" + body[20:]
    parsed = parse_message(raw(*HEAD, "Subject: x", "Content-Type: text/plain; charset=utf-8", "", broken))
    assert parsed.text.replace("\ufffd", "") == russian
    assert parsed.text.count("\ufffd") == 1
    assert any("bad bytes replaced" in p for p in parsed.problems)


def test_undeclared_utf8_with_a_stray_byte_stays_utf8_and_cp1252_stays_cp1252() -> None:
    text = "Grüße aus München, schöne Grüße an das Team"
    stray = text.encode("utf-8") + b"\x92"
    assert parse_message(raw(*HEAD, "Subject: x", "", stray)).text.startswith(text)
    cp1252 = "café crème – déjà vu".encode("cp1252")
    assert parse_message(raw(*HEAD, "Subject: x", "", cp1252)).text == "café crème – déjà vu"


def test_an_undeclared_8bit_subject_is_read_in_the_messages_own_charset() -> None:
    subject = "关于发票的问题"
    data = raw(*HEAD, b"Subject: " + subject.encode("gb2312"), "Content-Type: text/plain; charset=gb2312",
               "", "正文".encode("gb2312"))  # fmt: skip
    parsed = parse_message(data)
    assert parsed.subject == subject
    assert parsed.text == "正文"


def _png() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\x00\x00")) + chunk(b"IEND", b"")


def test_a_png_sent_as_text_plain_is_kept_as_an_attachment(store: Store) -> None:
    import base64

    data = raw(*HEAD, "Subject: screenshot", "Message-ID: <png@x>", "MIME-Version: 1.0",
               'Content-Type: multipart/mixed; boundary="b"', "", "--b", "Content-Type: text/plain", "",
               "See the picture.", "--b", "Content-Type: text/plain", "Content-Transfer-Encoding: base64", "",
               base64.b64encode(_png()).decode(), "--b--")  # fmt: skip
    parsed = parse_message(data)
    assert parsed.text == "See the picture."
    assert [a.data for a in parsed.attachments] == [_png()]
    assert any("binary data" in p for p in parsed.problems)
    _, body = _filed_text(store, data)
    assert body.startswith("See the picture.")


def test_binary_is_told_from_text_with_a_flaw() -> None:
    import random

    from crmkit.mail.text import looks_binary

    noise = random.Random(3).randbytes(4096).replace(b"\x89PNG", b"....")
    assert looks_binary(noise)
    assert looks_binary(b"%PDF-1.7\n%\xe2\xe3\xcf\xd3\n")
    letter = ("Dear team,\nthe invoice is attached.\n" * 40).encode() + b"\x00\x0c\x1b"
    assert not looks_binary(letter)


def test_messages_an_earlier_release_quarantined_for_their_text_are_filed_by_replay(tmp_path) -> None:
    """Issue 14: --replay files what the new code can (these were quarantined for control characters)."""
    from click.testing import CliRunner

    from crmkit.cli import main
    from crmkit.mail.archive import MailArchive

    store_path = tmp_path / "crm.json"
    Store(store_path).create()
    archive = MailArchive(store_path)
    form_feed = raw(*HEAD, "Subject: Report", "Message-ID: <ff@x>", "", "Page one\x0cPage two")
    png = raw(*HEAD, "Subject: pic", "Message-ID: <png2@x>", "Content-Type: text/plain", "", _png())
    for data in (form_feed, png):
        archive.quarantine(data, reason="activity body: contains control characters", origin="imap://old")
    result = CliRunner().invoke(main, ["--store", str(store_path), "poll", "--replay", "all", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["counts"] == {"new_case": 2}
    assert archive.quarantined() == []
    bodies = sorted(a.get("body", "") for a in Store(store_path).all("activities"))
    assert "Page one\nPage two" in bodies
