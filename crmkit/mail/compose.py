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
"""

from __future__ import annotations

import base64
import binascii
import mimetypes
import re
import secrets
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from email.utils import getaddresses
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

_CONTROLS = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]+")
_SPECIALS = re.compile(r'[()<>@,;:\\".\[\]]')
# One address: a local part and a domain, no spaces, no brackets, no second @.
_ADDRESS = re.compile(r"^[^\s@<>(),;:\"\\\[\]]+@[^\s@<>(),;:\"\\\[\]]+\.[^\s@<>(),;:\"\\\[\].]+$")
_MAX_LINE = 78


class AddressError(ValueError):
    """An address header that does not hold proper addresses."""


@dataclass(frozen=True)
class Attachment:
    """A file to attach: its name as the recipient sees it, and its bytes."""

    filename: str
    data: bytes
    content_type: str | None = None  # guessed from the name when None


def clean_header_text(text: str) -> str:
    """``text`` on one line: line breaks and other control characters become one space."""
    return _CONTROLS.sub(" ", text).strip()


def is_address(text: str) -> bool:
    """Is ``text`` exactly one plain address (``ana@example.com``, non-ASCII allowed)?"""
    return bool(_ADDRESS.match(text))


def encode_words(text: str) -> str:
    """``text`` as RFC 2047 encoded words (UTF-8, base64), each at most 75 characters."""
    words = []
    chunk = bytearray()
    for char in text:
        encoded = char.encode("utf-8")
        if len(chunk) + len(encoded) > 45:  # 45 bytes -> 60 base64 characters -> 72 with the markers
            words.append(chunk)
            chunk = bytearray()
        chunk += encoded
    if chunk or not words:
        words.append(chunk)
    return " ".join(f"=?utf-8?b?{base64.b64encode(bytes(word)).decode('ascii')}?=" for word in words)


def _fold(name: str, value: str) -> str:
    """``Name: value`` folded at spaces to lines of about 78 characters (RFC 5322 2.2.3)."""
    line = f"{name}: {value}"
    if len(line) <= _MAX_LINE:
        return line
    lines: list[str] = []
    current = f"{name}:"
    for word in value.split(" "):
        if current.strip() and len(current) + 1 + len(word) > _MAX_LINE:
            lines.append(current)
            current = ""
        current += " " + word
    lines.append(current)
    return "\r\n".join(lines)


def _header(name: str, value: str) -> str:
    value = clean_header_text(value)
    return _fold(name, value if value.isascii() else encode_words(value))


def _display_name(name: str) -> str:
    name = clean_header_text(name)
    if not name.isascii():
        return encode_words(name)
    if _SPECIALS.search(name) or name != name.strip():
        return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return name


def format_address(name: str, address: str) -> str:
    """``Name <address>`` with the name quoted or encoded as needed; ``address`` alone without a name."""
    if not is_address(address):
        raise AddressError(f"not an email address: {address!r}")
    name = clean_header_text(name)
    return f"{_display_name(name)} <{address}>" if name else address


def parse_addresses(text: str) -> list[tuple[str, str]]:
    """The (name, address) pairs of an address header's text; raises AddressError on anything else."""
    text = clean_header_text(text)
    if not text:
        return []
    pairs = []
    for name, address in getaddresses([text]):
        if not is_address(address):
            raise AddressError(f"not an email address: {address or text!r}")
        pairs.append((name, address))
    if not pairs:
        raise AddressError(f"no address in {text!r}")
    return pairs


def _text_body(text: str) -> tuple[str, bytes]:
    """The transfer encoding and bytes of a text part: 7bit when it can be, else quoted-printable."""
    data = re.sub(r"\r\n|\r|\n", "\r\n", text).encode("utf-8")
    if not data.endswith(b"\r\n"):
        data += b"\r\n"
    if data.isascii() and max(map(len, data.split(b"\r\n"))) <= 900:
        return "7bit", data
    return "quoted-printable", binascii.b2a_qp(data, istext=True)


def _text_part(text: str, subtype: str) -> bytes:
    encoding, body = _text_body(text)
    head = f"Content-Type: text/{subtype}; charset=utf-8\r\nContent-Transfer-Encoding: {encoding}\r\n\r\n"
    return head.encode("ascii") + body


def _filename_params(filename: str) -> str:
    filename = clean_header_text(filename).replace('"', "'").replace("\\", "_") or "attachment"
    if filename.isascii():
        return f'filename="{filename}"'
    fallback = filename.encode("ascii", "replace").decode("ascii").replace("?", "_")
    return f"filename=\"{fallback}\"; filename*=utf-8''{quote(filename, safe='')}"


def _attachment_part(attachment: Attachment) -> bytes:
    content_type = attachment.content_type or (
        mimetypes.guess_type(attachment.filename)[0] or "application/octet-stream"
    )
    params = _filename_params(attachment.filename)
    lines = base64.encodebytes(attachment.data).replace(b"\n", b"\r\n")
    head = (
        f"Content-Type: {content_type}\r\n"
        f"Content-Disposition: attachment; {params}\r\n"
        "Content-Transfer-Encoding: base64\r\n\r\n"
    )
    return head.encode("ascii") + lines


def _multipart(subtype: str, parts: Sequence[bytes]) -> bytes:
    boundary = f"==crmkit-{secrets.token_hex(12)}"
    out = [f'Content-Type: multipart/{subtype}; boundary="{boundary}"\r\n\r\n'.encode("ascii")]
    for part in parts:
        out.append(f"--{boundary}\r\n".encode("ascii"))
        out.append(part)
        if not part.endswith(b"\r\n"):
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
