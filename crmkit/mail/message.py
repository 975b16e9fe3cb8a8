"""A raw email, parsed from bytes into what the CRM needs. Pure: no I/O.

Mail in a support inbox is often broken: undeclared or wrong charsets, bad
MIME, missing headers. :func:`parse_message` never raises on such mail: it
reads what it can and lists what it could not in ``problems``. Charsets
Python knows (windows-1258, koi8-r, gb2312 read as its superset gb18030, ...)
decode as declared; undeclared 8-bit text is tried as UTF-8, then as
windows-1252.
"""

from __future__ import annotations

import email
import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.header import decode_header
from email.message import Message
from email.utils import getaddresses, parseaddr, parsedate_to_datetime
from functools import cached_property
from typing import Any

from crmkit.mail.bounce import Report, addresses_to_mark, classify
from crmkit.mail.text import clean_text, html_to_text, looks_binary, strip_quoted

__all__ = [
    "Attachment",
    "ParsedMessage",
    "automatic_reason",
    "parse_message",
    "safe_filename",
]

#: Attachments larger than this are listed but not kept.
MAX_ATTACHMENT_BYTES = 10 * 1024 * 1024
#: Text bodies are cut here; a 100 MB "text" part is an attack or a mistake.
MAX_TEXT_CHARS = 200_000
#: Longer headers are cut (a References header of a long thread is a few KB).
MAX_HEADER_CHARS = 16_384
#: Python codecs that are not charsets a mail can declare (they turn text into escapes or code).
_NOT_CHARSETS = frozenset(
    {"unicode_escape", "raw_unicode_escape", "unicode-escape", "raw-unicode-escape", "idna", "punycode",
     "base64", "hex", "zlib", "bz2", "rot13", "uu", "quopri"}
)  # fmt: skip
_MSGID = re.compile(r"<[^<>\s]+>")
_SURROGATES = re.compile("[\udc80-\udcff]")
_SURROGATES_ALL = re.compile("[\ud800-\udfff]")
_WHITESPACE = re.compile(r"\s+")
# The forms nearly every From and To header takes: "Name <addr>" with a plain name, or a bare
# address. Anything with quotes, comments, groups or several addresses goes to getaddresses.
_PLAIN_ADDRESS = re.compile(r"[^\s<>@\"(),:;\[\]\\]+@[^\s<>@\"(),:;\[\]\\]+")
_SIMPLE_MAILBOX = re.compile(
    rf"([^<>@\"(),:;\[\]\\]*?)\s*<({_PLAIN_ADDRESS.pattern})>|({_PLAIN_ADDRESS.pattern})"
)
_CHARSET_STAND_INS = {"gb2312": "gb18030", "gbk": "gb18030", "x-gbk": "gb18030", "ks_c_5601-1987": "cp949"}
_AUTO_SENDERS = re.compile(r"^(mailer-daemon|postmaster|no-?reply|do-?not-?reply|bounces?)([+@.-]|$)", re.I)
# Phrases mail systems and auto-responders put in subjects; a person's "Undelivered order #44" is not one.
_AUTO_SUBJECTS = re.compile(
    r"^(auto(matic)?[ -]?(reply|response)\s*:|out of (the )?office\b|abwesenheitsnotiz|"
    r"r[ée]ponse automatique|undelivered mail returned to sender|undeliverable\s*:|"
    r"delivery status notification|mail delivery (failed|system)|returned mail\s*:)",
    re.I,
)


@dataclass(frozen=True)
class Attachment:
    """A file sent with a message; ``data`` is None when it was over the size cap."""

    filename: str  # safe to use as a file name: no folders, no control characters
    content_type: str
    size: int
    data: bytes | None


@dataclass
class ParsedMessage:
    """What the CRM reads from one message."""

    message_id: str | None
    in_reply_to: list[str]
    references: list[str]
    sender: str | None  # the address, lower-cased
    sender_name: str
    to: list[str]
    cc: list[str]
    reply_to: str | None
    date: datetime | None  # aware, UTC
    subject: str
    text: str
    attachments: list[Attachment] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)  # lower-cased names, first value
    content_type: str = "text/plain"
    problems: list[str] = field(default_factory=list)
    #: what a bounce or a spam complaint says (crmkit.mail.bounce), None for other mail
    report: Report | None = None

    @property
    def bounced(self) -> list[str]:
        """Recipients a delivery report says failed for good (the Original-Recipient where given)."""
        if self.report is None or self.report.kind != "failure":
            return []
        return list(addresses_to_mark(self.report))

    @cached_property
    def new_text(self) -> str:
        """The text without the quoted history of a reply."""
        return strip_quoted(self.text)

    @property
    def thread_ids(self) -> list[str]:
        """Message-IDs this message answers: In-Reply-To first, then References, newest first."""
        seen: list[str] = []
        for mid in [*self.in_reply_to, *reversed(self.references)]:
            if mid not in seen:
                seen.append(mid)
        return seen


def safe_filename(name: str | None, fallback: str) -> str:
    """A file name that cannot leave its folder or surprise a shell: the last path part, cleaned."""
    if not name:
        return fallback
    name = unicodedata.normalize("NFC", name)
    name = re.split(r"[\\/]", name)[-1]
    name = "".join(ch for ch in name if ch.isprintable() and ch not in '<>:"|?*').strip().strip(".")
    if not name:
        return fallback
    stem, dot, ext = name.rpartition(".")
    if len(name.encode()) > 150:  # file systems allow 255 bytes; leave room for a prefix
        keep = ext[:20] if dot else ""
        stem = (stem if dot else name).encode()[: 150 - len(keep.encode()) - 1].decode("utf-8", "ignore")
        name = f"{stem}.{keep}" if keep else stem
    return name


def _first_values(msg: Message) -> dict[str, Any]:
    """Each header's first value by lower-cased name, gathered once per message part."""
    cached = msg.__dict__.get("_crmkit_first_values")
    if cached is None:
        cached = {}
        for key, value in msg.raw_items():
            cached.setdefault(key.lower(), value)
        msg.__dict__["_crmkit_first_values"] = cached
    return cached


def _raw_header(msg: Message, name: str, problems: list[str]) -> str:
    """A header's text as sent: undeclared 8-bit bytes decoded, RFC 2047 encoded words left as they are."""
    value = _first_values(msg).get(name.lower())
    if value is None:
        return ""
    text = value if isinstance(value, str) else str(value)
    if len(text) > MAX_HEADER_CHARS:  # decoding encoded words is quadratic in the standard library
        text = text[:MAX_HEADER_CHARS]
        problems.append(f"{name} header cut at {MAX_HEADER_CHARS} characters")
    if _SURROGATES.search(text):  # raw 8-bit bytes: no charset was declared for them
        text = _undeclared(text.encode("ascii", "surrogateescape"), _message_charsets(msg), name, problems)
    return clean_text(_WHITESPACE.sub(" ", text)).strip()


def _message_charsets(msg: Message) -> list[str]:
    """The charsets the message's parts declare: the likeliest for its undeclared 8-bit headers."""
    cached = msg.__dict__.get("_crmkit_charsets")
    if cached is None:
        cached = []
        try:
            for part in msg.walk():
                charset = part.get_content_charset()
                if charset and charset not in cached and charset not in ("us-ascii", "ascii"):
                    cached.append(charset)
        except Exception:
            pass
        msg.__dict__["_crmkit_charsets"] = cached
    return cached  # type: ignore[no-any-return]


def _undeclared(data: bytes, charsets: list[str], name: str, problems: list[str]) -> str:
    """Undeclared 8-bit bytes: UTF-8, else the first of the message's own charsets that fits, else cp1252."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    for charset in charsets:
        charset = _CHARSET_STAND_INS.get(charset.lower(), charset)
        try:
            return data.decode(charset)
        except (LookupError, UnicodeDecodeError):
            continue
    problems.append(f"undeclared 8-bit {name} read as windows-1252")
    return data.decode("cp1252", errors="replace")


def _decode_words(text: str, problems: list[str]) -> str:
    """RFC 2047 encoded words (``=?utf-8?B?...?=``) decoded; unknown charsets read as UTF-8."""
    if "=?" not in text:
        return text
    try:
        parts = decode_header(text)
    except Exception:
        problems.append("unreadable encoded words in a header")
        return text
    out = []
    for chunk, charset in parts:
        if isinstance(chunk, str):
            out.append(chunk)
        else:
            out.append(_decode_bytes(chunk, charset or "ascii", problems))
    return "".join(out)


def _header(msg: Message, name: str, problems: list[str]) -> str:
    raw = _raw_header(msg, name, problems)
    if not raw:  # most of the headers asked for are absent
        return ""
    return clean_text(unicodedata.normalize("NFC", _decode_words(raw, problems)))


def _split_addresses(raw: str) -> list[tuple[str, str]]:
    """(display name, address) pairs, as getaddresses gives them; one plain mailbox without it."""
    simple = _SIMPLE_MAILBOX.fullmatch(raw)
    if simple is not None:
        if simple.group(3) is not None:
            return [("", simple.group(3))]
        return [(" ".join(simple.group(1).split()), simple.group(2))]
    return getaddresses([raw])


def _addresses(msg: Message, name: str, problems: list[str]) -> list[tuple[str, str]]:
    # split the addresses first: a decoded display name may hold a comma
    raw = _raw_header(msg, name, problems)
    if not raw:
        return []
    pairs = []
    try:
        found = _split_addresses(raw)
    except Exception:  # deeply nested comments blow the parser's recursion
        problems.append(f"unreadable {name} header")
        return []
    for display, address in found:
        address = address.strip().strip("<>").lower()
        if "@" in address:
            name_text = clean_text(unicodedata.normalize("NFC", _decode_words(display, problems))).strip()
            pairs.append((name_text, address))
    return pairs


def _message_ids(value: str) -> list[str]:
    return _MSGID.findall(value)


def _decode(payload: bytes, charset: str | None, problems: list[str]) -> str:
    # NFC: windows-1258 (Vietnamese) spells tone marks as combining characters
    return unicodedata.normalize("NFC", _decode_bytes(payload, charset, problems))


def _decode_bytes(payload: bytes, charset: str | None, problems: list[str]) -> str:
    text = _decode_charset(payload, charset, problems)
    if _SURROGATES_ALL.search(text):  # utf-7 and friends can spell lone surrogates: not storable
        text = text.encode("utf-8", "replace").decode("utf-8")
        problems.append("invalid characters replaced")
    return text


def _decode_charset(payload: bytes, charset: str | None, problems: list[str]) -> str:
    if charset and charset.lower().replace("_", "-") in {c.replace("_", "-") for c in _NOT_CHARSETS}:
        problems.append(f"{charset!r} is not a charset")
        charset = None
    if charset:
        charset = _CHARSET_STAND_INS.get(charset.lower(), charset)
        try:
            return payload.decode(charset)
        except LookupError:
            problems.append(f"unknown charset {charset!r}")
        except UnicodeDecodeError:
            # one bad byte costs one character, not the whole part (read as cp1252 it was mojibake)
            problems.append(f"text is not valid {charset}: bad bytes replaced")
            return payload.decode(charset, errors="replace")
    try:
        return payload.decode("utf-8")
    except UnicodeDecodeError:
        if _mostly_utf8(payload):
            problems.append("text is not valid utf-8: bad bytes replaced")
            return payload.decode("utf-8", errors="replace")
        if charset is None:
            problems.append("undeclared 8-bit text read as windows-1252")
        return payload.decode("cp1252", errors="replace")


def _mostly_utf8(payload: bytes) -> bool:
    """True when the bytes are UTF-8 but for a few bad ones (a cut or a stray byte), not another charset.

    Text in a single-byte charset read as UTF-8 turns nearly every non-ASCII byte into
    U+FFFD; UTF-8 with one stray byte keeps its many valid multi-byte characters.
    """
    text = payload.decode("utf-8", errors="replace")
    bad = text.count("\ufffd")
    good = sum(1 for ch in text if ord(ch) > 0x7F) - bad
    return good >= 4 * bad


def _decode_part(part: Message) -> bytes | None:
    """A leaf part's payload, transfer encoding undone; None when there is none to read."""
    try:
        payload = part.get_payload(decode=True)
    except Exception:
        return None
    return payload if isinstance(payload, bytes) else None


def _disposition_and_filename(part: Message, problems: list[str]) -> tuple[str, str | None]:
    headers = _first_values(part)
    ctype_header = headers.get("content-type")
    if headers.get("content-disposition") is None and (
        ctype_header is None or "name" not in str(ctype_header).lower()
    ):
        return "", None  # most parts: nothing for the standard library's slow parameter parser
    try:
        disposition = (part.get_content_disposition() or "").lower()
    except Exception:
        disposition = ""
    filename = None
    try:
        filename = part.get_filename()
        if filename:  # Outlook sends RFC 2047 encoded words in file names, too
            filename = unicodedata.normalize("NFC", _decode_words(filename, problems))
    except Exception:
        problems.append("an attachment's file name could not be read")
    return disposition, filename


def _walk(msg: Message, problems: list[str]) -> tuple[str, str, list[Attachment]]:
    """The plain text, the HTML and the attachments of a message."""
    plain: list[str] = []
    html: list[str] = []
    attachments: list[Attachment] = []
    for part in msg.walk():
        if part.is_multipart():
            continue
        ctype = part.get_content_type()
        disposition, filename = _disposition_and_filename(part, problems)
        is_text = ctype.startswith("text/")
        payload = _decode_part(part) if is_text else None
        binary = payload is not None and looks_binary(payload)
        if binary:
            problems.append(f"a {ctype} part holds binary data: kept as an attachment")
        if binary or disposition == "attachment" or filename or not ctype.startswith(("text/", "message/")):
            if ctype.startswith("multipart/"):
                continue
            data = payload if is_text else _decode_part(part)
            if data is None:
                raw = part.get_payload()
                data = raw.encode("utf-8", "surrogateescape") if isinstance(raw, str) else b""
            fallback = f"attachment-{len(attachments) + 1}{_extension(ctype)}"
            attachments.append(
                Attachment(
                    filename=safe_filename(filename, fallback),
                    content_type=ctype,
                    size=len(data),
                    data=data if len(data) <= MAX_ATTACHMENT_BYTES else None,
                )
            )
            continue
        if not is_text:
            continue  # a message/* part shown inline: its text is not the message's
        if payload is None:
            problems.append("a text part could not be decoded")
            continue
        text = _decode(payload, part.get_content_charset(), problems)
        (html if ctype == "text/html" else plain).append(text)
    return "\n\n".join(plain), "\n\n".join(html), attachments


def _extension(ctype: str) -> str:
    return {
        "application/pdf": ".pdf",
        "image/png": ".png",
        "image/jpeg": ".jpg",
        "image/gif": ".gif",
        "message/rfc822": ".eml",
        "message/delivery-status": ".txt",
        "text/calendar": ".ics",
    }.get(ctype, ".bin")


def automatic_reason(parsed: ParsedMessage) -> str | None:
    """Why a message was sent by a machine (RFC 3834 and common practice), or None for a person's mail.

    Such mail is logged but opens no case, and is never answered automatically.
    """
    headers = parsed.headers
    auto = headers.get("auto-submitted", "").lower()
    if auto and auto != "no":
        return f"Auto-Submitted: {auto}"
    precedence = headers.get("precedence", "").lower()
    if precedence in ("bulk", "junk", "list", "auto_reply"):
        return f"Precedence: {precedence}"
    if headers.get("list-id"):
        return "mailing list (List-Id)"
    if headers.get("return-path", "").replace(" ", "") == "<>":
        return "empty Return-Path (a bounce or notification)"
    for name in ("x-autoreply", "x-autorespond", "x-auto-response-suppress"):
        value = headers.get(name, "").lower()
        if value and (name != "x-auto-response-suppress" or "all" in value or "oof" in value):
            return f"{name} header"
    if parsed.sender and _AUTO_SENDERS.match(parsed.sender.split("@")[0]):
        return f"sent by {parsed.sender}"
    if _AUTO_SUBJECTS.match(parsed.subject):
        return f"automatic subject {parsed.subject[:40]!r}"
    if parsed.content_type == "multipart/report":
        return "delivery report"
    return None


def parse_message(raw: bytes) -> ParsedMessage:
    """Everything the CRM reads from a message's bytes; never raises on malformed mail."""
    problems: list[str] = []
    # compat32, the default policy, is about seven times faster than policy.default here;
    # headers are decoded by hand (_raw_header, _decode_words)
    msg = email.message_from_bytes(raw)
    problems += [f"MIME: {type(d).__name__}" for d in getattr(msg, "defects", [])][:5]
    headers: dict[str, str] = {}
    for name in ("auto-submitted", "precedence", "list-id", "x-autoreply", "x-autorespond",
                 "x-auto-response-suppress", "importance", "x-priority", "priority", "x-msmail-priority",
                 "list-unsubscribe", "return-path"):  # fmt: skip
        value = _header(msg, name, problems)
        if value:
            headers[name] = value
    senders = _addresses(msg, "From", problems) or _addresses(msg, "Sender", problems)
    sender_name, sender = senders[0] if senders else ("", None)
    if sender is None:
        fallback = parseaddr(_header(msg, "Return-Path", problems))[1].lower()
        sender = fallback if "@" in fallback else None
        if sender is None:
            problems.append("no sender address")
    message_id = next(iter(_message_ids(_header(msg, "Message-ID", problems))), None)
    if message_id is None:
        problems.append("no Message-ID")
    date = None
    date_text = _header(msg, "Date", problems)
    if date_text:
        try:
            date = parsedate_to_datetime(date_text)
            date = (date if date.tzinfo else date.replace(tzinfo=UTC)).astimezone(UTC)
            if not 1970 <= date.year <= 9000:
                problems.append(f"implausible Date {date_text[:40]!r}")
                date = None
        except Exception:  # parsedate_to_datetime raises TypeError, ValueError, OverflowError...
            date = None
            problems.append(f"unreadable Date {date_text[:40]!r}")
    plain, html, attachments = _walk(msg, problems)
    if len(html) > 4 * MAX_TEXT_CHARS:
        html = html[: 4 * MAX_TEXT_CHARS]
        problems.append(f"HTML cut at {4 * MAX_TEXT_CHARS} characters")
    text = plain if plain.strip() else html_to_text(html) if html else ""
    if len(text) > MAX_TEXT_CHARS:
        text = text[:MAX_TEXT_CHARS]
        problems.append(f"text cut at {MAX_TEXT_CHARS} characters")
    reply_to = _addresses(msg, "Reply-To", problems)
    try:
        content_type = msg.get_content_type()
    except Exception:
        content_type = "text/plain"
    parsed = ParsedMessage(
        message_id=message_id,
        in_reply_to=_message_ids(_header(msg, "In-Reply-To", problems)),
        references=_message_ids(_header(msg, "References", problems)),
        sender=sender,
        sender_name=sender_name,
        to=[a for _, a in _addresses(msg, "To", problems)],
        cc=[a for _, a in _addresses(msg, "Cc", problems)],
        reply_to=reply_to[0][1] if reply_to else None,
        date=date,
        subject=_header(msg, "Subject", problems),
        text=clean_text(text).strip(),
        attachments=attachments,
        headers=headers,
        content_type=content_type,
        problems=problems,
    )
    parsed.report = classify(msg)  # never raises: a report nobody can read marks nobody
    return parsed
