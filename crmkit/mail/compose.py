"""A message's bytes, written directly: headers that data cannot break, and MIME bodies.

A campaign writes thousands of messages, and :class:`email.message.EmailMessage`
takes over a millisecond for each (its header objects parse every value again),
about as long as handing the message to a local server. The few shapes a
campaign needs (text, text with an HTML alternative, either with attachments)
are simple enough to write here, in a few tens of microseconds; tests read every
shape back with the standard library's strict parser.

Safety lives here too: a header value can never hold a line break (a
control character in it becomes a space), so no value can add a header;
non-ASCII text goes out as RFC 2047 encoded words; display names are quoted
or encoded, so a comma or an ``@`` in a name never makes another address.
Text that only looks like an encoded word (``=?utf-8?q?...?=``) is itself
encoded, so what a reader sees is what was written.
"""

from __future__ import annotations

import base64
import binascii
import email.errors
import email.policy
import mimetypes
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote

__all__ = [
    "AddressError",
    "Attachment",
    "build_message",
    "clean_header_text",
    "encode_words",
    "format_address",
    "is_address",
    "parse_addresses",
]

# Control characters (C0, DEL, C1, the Unicode line and paragraph separators) and spaces, in runs.
_CONTROLS = re.compile(r"[\x00-\x20\x7f-\x9f\u2028\u2029]+")
_SPECIALS = re.compile(r'[()<>@,;:\\".\[\]]')
# One address: a local part and a domain, no spaces, no brackets, no second @, no control characters.
_NOT_IN_ADDRESS = r"\s\x00-\x1f\x7f-\x9f@<>(),;:\"\\\[\]"
_ADDRESS = re.compile(rf"[^{_NOT_IN_ADDRESS}]+@[^{_NOT_IN_ADDRESS}]+\.[^{_NOT_IN_ADDRESS}.]+")
_MAX_ADDRESS = 254  # RFC 5321 4.5.3.1.3: a path holds at most 256 characters, the brackets included
# A display name in quotes and an address in brackets: what format_address and templates write.
_QUOTED_ADDRESS = re.compile(r'"((?:[^"\\]|\\.)*)" <([^<>\s]*)>')
_MAX_LINE = 78
_MAX_WORD_BYTES = 39  # 39 bytes -> 52 base64 characters -> encoded words of 64: "Reply-To: " + 64 < 78
# Headers of free text: encoded words wherever plain text would be misread or too long to fold.
_UNSTRUCTURED = frozenset({"subject", "comments", "keywords"})
# Headers build_message writes itself.
_OWN_HEADERS = frozenset({"mime-version", "content-type", "content-transfer-encoding"})
_CONTENT_TYPE = re.compile(r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*/[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]*")


class AddressError(ValueError):
    """An address header that does not hold proper addresses."""


@dataclass(frozen=True)
class Attachment:
    """A file to attach: its name as the recipient sees it, and its bytes."""

    filename: str
    data: bytes
    content_type: str | None = None  # guessed from the name when None


def clean_header_text(text: str) -> str:
    """``text`` on one line: each run of line breaks, other control characters and spaces becomes
    one space, and whitespace at either end goes.

    This is exactly what a reader of the header gets back: ``build_message``
    writes a cleaned value so that it decodes to the cleaned value itself.
    """
    return _CONTROLS.sub(" ", text).strip()


def is_address(text: str) -> bool:
    """Is ``text`` exactly one plain address (``ana@example.com``, non-ASCII allowed)?"""
    return len(text) <= _MAX_ADDRESS and bool(_ADDRESS.fullmatch(text))  # not match: "$" takes a "\n"


def encode_words(text: str) -> str:
    """``text`` as RFC 2047 encoded words (UTF-8, base64), each at most 64 characters."""
    words = []
    chunk = bytearray()
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > _MAX_WORD_BYTES:
            words.append(chunk)
            chunk = bytearray()
        chunk += encoded
    if chunk or not words:
        words.append(chunk)
    return " ".join(f"=?utf-8?b?{base64.b64encode(bytes(word)).decode('ascii')}?=" for word in words)


def _fold(name: str, value: str) -> str:
    """``Name: value`` folded at spaces to lines of about 78 characters (RFC 5322 2.2.3).

    The first word stays on the first line (a line break right after the colon
    would read back as a leading space), and ``value`` must be cleaned (single
    spaces), so that no line holds only whitespace.
    """
    line = f"{name}: {value}"
    if len(line) <= _MAX_LINE:
        return line
    lines: list[str] = []
    current = f"{name}:"
    for number, word in enumerate(value.split(" ")):
        if number and len(current) + 1 + len(word) > _MAX_LINE:
            lines.append(current)
            current = ""
        current += " " + word
    lines.append(current)
    return "\r\n".join(lines)


def _fits(folded: str) -> bool:
    return all(len(line) <= _MAX_LINE for line in folded.split("\r\n"))


def _looks_encoded(text: str) -> bool:
    """Would a reader take part of ``text`` for an encoded word?"""
    return "=?" in text


def _header(name: str, value: str) -> str:
    value = clean_header_text(value)
    if not value.isascii():
        return _fold(name, encode_words(value))
    if name.lower() in _UNSTRUCTURED or name.lower().startswith("x-"):
        folded = _fold(name, value)
        if _looks_encoded(value) or not _fits(folded):
            return _fold(name, encode_words(value))
        return folded
    return _fold(name, value)  # structured (Date, Message-ID, List-Unsubscribe...): ASCII as it is


def _display_name(name: str) -> str:
    """``name`` as a display name: as it is, in quotes, or (non-ASCII, or too long to fold) encoded."""
    name = clean_header_text(name)
    if name.isascii() and not _looks_encoded(name):
        shown = name
        if _SPECIALS.search(name):
            shown = '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
        if all(len(word) <= 64 for word in shown.split(" ")):  # folds like encoded words do
            return shown
    return encode_words(name)


def format_address(name: str, address: str) -> str:
    """``Name <address>`` with the name quoted or encoded as needed; ``address`` alone without a name."""
    if not is_address(address):
        raise AddressError(f"not an email address: {address!r}")
    name = clean_header_text(name)
    return f"{_display_name(name)} <{address}>" if name else address


def parse_addresses(text: str) -> list[tuple[str, str]]:
    """The (name, address) pairs of an address header's text; raises AddressError on anything else.

    Read strictly (RFC 5322, with the standard library's modern parser): a
    quoted name alone (``"eve@example.com"``) is a name without an address,
    not an address, and text the parser has to guess at is refused.
    """
    text = clean_header_text(text)
    if not text:
        return []
    if is_address(text):
        return [("", text)]
    quoted = _QUOTED_ADDRESS.fullmatch(text)
    if quoted and is_address(quoted.group(2)):
        return [(re.sub(r"\\(.)", r"\1", quoted.group(1)), quoted.group(2))]
    return list(_parse_address_list(text))


@lru_cache(maxsize=256)  # a campaign's From is the same text for everyone
def _parse_address_list(text: str) -> tuple[tuple[str, str], ...]:
    try:
        header = email.policy.default.header_factory("To", text)
    except Exception as exc:  # the parser raises more than HeaderParseError on some text ("ana@")
        raise AddressError(f"not a proper address list: {text!r}") from exc
    for defect in header.defects:
        if not isinstance(defect, email.errors.ObsoleteHeaderDefect):  # "Dr. Ana" is obsolete but fine
            raise AddressError(f"not a proper address list: {text!r} ({defect})")
    pairs = []
    for found in header.addresses:
        if not is_address(found.addr_spec):
            raise AddressError(f"not an email address: {found.addr_spec or text!r}")
        pairs.append((found.display_name, found.addr_spec))
    if not pairs:
        raise AddressError(f"no address in {text!r}")
    return tuple(pairs)


def _text_body(text: str) -> tuple[str, bytes]:
    """The transfer encoding and bytes of a text part: 7bit when it can be, else quoted-printable."""
    data = re.sub(r"\r\n|\r|\n", "\r\n", text).encode("utf-8")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.isascii() and b"\x00" not in data and max(map(len, data.split(b"\r\n"))) <= 900:
        return "7bit", data  # RFC 2045 2.7: no NUL, lines of at most 998
    return "quoted-printable", binascii.b2a_qp(data, istext=True)


def _text_part(text: str, subtype: str) -> bytes:
    encoding, body = _text_body(text)
    head = f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
    return head.encode("ascii") + body


def _safe_filename(filename: str) -> str:
    """``filename`` as an attachment's name: one line, no folders, no quotes, backslashes or brackets.

    (Readers take ``filename="<x>"`` for ``x``, as if it were a message id.)
    """
    name = clean_header_text(filename).replace('"', "'")
    name = name.translate({ord(char): "_" for char in "\\/<>"})
    return name if name.strip(". ") else "attachment"


def _filename_params(filename: str) -> list[str]:
    """The Content-Disposition parameters naming the file: quoted when plain ASCII, else RFC 2231."""
    name = _safe_filename(filename)
    if name.isascii() and not _looks_encoded(name) and len(name) <= 900:
        return [f'filename="{name}"']
    pieces = [""]
    for char in name:  # RFC 2231 continuations of whole characters, on lines of at most 78
        encoded = quote(char, safe="")
        if len(pieces[-1]) + len(encoded) > 54:
            pieces.append("")
        pieces[-1] += encoded
    if len(pieces) == 1:
        return [f"filename*=utf-8''{pieces[0]}"]
    pieces[0] = "utf-8''" + pieces[0]
    return [f"filename*{n}*={piece}" for n, piece in enumerate(pieces)]


def _attachment_part(attachment: Attachment) -> bytes:
    content_type = attachment.content_type or (
        mimetypes.guess_type(attachment.filename)[0] or "application/octet-stream"
    )
    if not _CONTENT_TYPE.fullmatch(content_type):
        raise ValueError(f"not a content type: {content_type!r}")
    disposition = "; ".join(["Content-Disposition: attachment", *_filename_params(attachment.filename)])
    if len(disposition) > _MAX_LINE:  # each parameter on a line of its own
        disposition = disposition.replace("; ", ";\r\n ")
    lines = base64.encodebytes(attachment.data).replace(b"\n", b"\r\n")
    head = f"Content-Type: {content_type}\r\n{disposition}\r\nContent-Transfer-Encoding: base64\r\n\r\n"
    return head.encode("ascii") + lines


def _multipart(subtype: str, parts: Sequence[bytes]) -> bytes:
    boundary = f"==crmkit-{secrets.token_hex(12)}"
    out = [f'Content-Type: multipart/{subtype};\r\n boundary="{boundary}"\r\n\r\n'.encode("ascii")]
    for part in parts:
        out.append(f"--{boundary}\r\n".encode("ascii"))
        out.append(part)
        # the line break before a boundary belongs to the boundary (RFC 2046 5.1.1), not to the
        # part: one more, so that a part's text reads back with its last line break
        out.append(b"\r\n")
    out.append(f"--{boundary}--\r\n".encode("ascii"))
    return b"".join(out)


def build_message(
    headers: Iterable[tuple[str, str]],
    text: str,
    *,
    html: str | None = None,
    attachments: Sequence[Attachment] = (),
) -> bytes:
    """The bytes of a message: ``headers`` in order (values are made safe here), then the body.

    Address headers must already be formatted (:func:`format_address`); their
    values are cleaned like any other, and encoded words are left to the names.
    """
    lines = []
    for name, value in headers:
        if not re.fullmatch(r"[A-Za-z0-9-]+", name):
            raise ValueError(f"not a header name: {name!r}")
        if name.lower() in _OWN_HEADERS:
            raise ValueError(f"{name} is written by build_message itself")
        if name.lower() in _ADDRESS_HEADERS:
            lines.append(_fold(name, clean_header_text(value)))
        else:
            lines.append(_header(name, value))
    lines.append("MIME-Version: 1.0")
    body = _text_part(text, "plain")
    if html is not None:
        body = _multipart("alternative", [body, _text_part(html, "html")])
    if attachments:
        body = _multipart("mixed", [body, *(_attachment_part(a) for a in attachments)])
    return "\r\n".join(lines).encode("utf-8") + b"\r\n" + body


_ADDRESS_HEADERS = frozenset({"from", "to", "cc", "bcc", "reply-to", "sender"})
