"""Bounces and spam complaints: which addresses a report from a mail system names. Pure: no I/O.

:func:`classify` reads a message and says whether it is a delivery failure, a
delay notice or a spam complaint, which format it came in and which recipients
it names; :func:`addresses_to_mark` then picks, for each permanently failed (or
complaining) recipient, the address crmkit should mark.

Formats read, in this order:

* ARF spam complaints (RFC 5965, ``message/feedback-report``), anywhere in the message;
* RFC 3464 delivery status notifications, also nested in ``multipart/mixed`` or in a
  forwarded ``message/rfc822``;
* the plain-text notices of qmail, Exim, Postfix, Sendmail, Exchange, Office 365,
  Gmail, Yahoo, GroupWise, Lotus Notes and others (:mod:`crmkit.mail.bounce_formats`),
  read only from mail that comes from a mail system, never from a person's message
  that quotes one;
* the ``X-Failed-Recipients`` header, on mail from a mail system.

A temporary problem (``Action: delayed``, a 4.x.x status, a warning notice) never
marks an address: its recipients come back with ``permanent=False`` and a report
with no permanent failure is of kind ``"delay"``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Collection, Iterator
from dataclasses import dataclass
from email.header import decode_header, make_header
from email.message import Message
from email.parser import HeaderParser
from email.utils import getaddresses, parseaddr
from typing import Literal

from crmkit.mail import bounce_formats
from crmkit.mail.bounce_formats import Recipient, find_status, normalise_address, shorten
from crmkit.mail.text import html_to_text

__all__ = [
    "MAX_SCAN_CHARS",
    "Recipient",
    "Report",
    "addresses_to_mark",
    "classify",
    "pick_address",
]

Kind = Literal["failure", "delay", "complaint"]

#: Text read from one message; a bounce's notice is at its top, and a 50 MB "bounce" is an attack.
MAX_SCAN_CHARS = 64_000
#: MIME parts looked at in one message.
MAX_PARTS = 200
#: How deep forwarded messages are opened.
MAX_DEPTH = 3

#: ARF feedback types that are a recipient's complaint. ``auth-failure`` (a DMARC report) and
#: ``not-spam`` are not.
_COMPLAINT_TYPES = {"abuse", "fraud", "virus", "other", "opt-out", "unsubscribe"}
_DSN_TYPES = {"message/delivery-status", "message/global-delivery-status"}
_ARF_TYPES = {"message/feedback-report"}
_FAILED_ACTIONS = ("fail", "error", "undeliver", "bounce", "reject")
_NOT_FAILED_ACTIONS = ("delivered", "relayed", "expanded")

_SYSTEM_SENDER = re.compile(
    r"^(?:mailer[-_.]?daemon|postmaster|mail[-_.]?daemon|mdaemon|mail[-_.]?delivery[-_.]?(?:system"
    r"|subsystem)?"
    r"|maildeliverysystem|mail\.delivery\.system|ndr|bounces?|nobody|root|smtp[-_]?gateway)$",
    re.I,
)
_SYSTEM_NAME = re.compile(
    r"mail delivery|delivery subsystem|mailer[- ]daemon|postmaster|system administrator|mail administrator"
    r"|mail ?server|mail system|smtp|mail gateway",
    re.I,
)
_BOUNCE_SUBJECT = re.compile(
    r"undeliver|undelivered|not delivered|non[- ]?deliver|delivery (?:status|notification|failure|failed"
    r"|report|problem|has failed|incomplete|delayed|delay)|failure notice|returned mail"
    r"|return(?:ed)? to sender"
    r"|mail delivery failed|delivery failure|could not send|couldn't be delivered|delayed mail"
    r"|warning: could not"
    r"|mail system error|message status|failed delivery|unable to deliver|rejected|nicht zustellbar"
    r"|could not be delivered|mail failed|failed mail",
    re.I,
)
_REPLY_SUBJECT = re.compile(r"^\s*(?:re|fwd?|aw|wg|tr|sv|vs|rif|r)\s*(?:\[\d+\])?\s*:", re.I)
_FIELD = re.compile(r"^([A-Za-z][A-Za-z0-9-]*)[ \t]*:[ \t]*(.*)$")


@dataclass(frozen=True)
class Report:
    """What a bounce or a complaint says.

    ``kind`` is ``"failure"`` when at least one recipient failed permanently, ``"delay"``
    when its recipients only had temporary problems, and ``"complaint"`` for an ARF spam
    report, whose ``recipients`` are the complaining addresses. ``format`` names the
    detector that read it (``"rfc3464"``, ``"arf"``, ``"postfix"``, ...).
    """

    kind: Kind
    format: str
    recipients: tuple[Recipient, ...] = ()
    feedback_type: str | None = None

    @property
    def failed(self) -> tuple[Recipient, ...]:
        """The recipients that failed permanently: the ones to mark bounced."""
        return tuple(r for r in self.recipients if r.permanent)


def classify(msg: Message) -> Report | None:
    """The bounce or complaint ``msg`` is, or None for any other mail. Never raises."""
    try:
        if not _might_be_report(msg):
            return None
        return _classify(msg, 0)
    except Exception:  # a report nobody can read marks nobody; it must not stop the poller
        return None


#: Words in a raw From header that a mail system's sender has (a person's rarely does).
_SYSTEM_HINT = re.compile(
    r"mailer|daemon|postmaster|deliver|bounce|ndr|nobody|root|smtp|system|gateway|administrator"
    r"|mail ?server",
    re.I,
)
#: Content types that make a message (or a part of it) a report, or carry one.
_REPORT_PARTS = ("multipart/report", "message/", "text/rfc822-headers")


def _might_be_report(msg: Message) -> bool:
    """A cheap look at raw headers and part types before any decoding: most mail is a person's.

    Every message the poller files passes here; only those with a hint of a mail system
    (or a report part anywhere) are read by the detectors, which decode headers and text.
    """
    if msg.get("X-Failed-Recipients") is not None or str(msg.get("Return-Path", "")).replace(" ", "") == "<>":
        return True
    if _SYSTEM_HINT.search(str(msg.get("From", ""))):
        return True
    subject = str(msg.get("Subject", ""))
    if "=?" in subject:
        subject = _header(msg, "Subject")
    if _BOUNCE_SUBJECT.search(subject):
        return True
    for part in itertools.islice(msg.walk(), MAX_PARTS):
        ctype = part.get("Content-Type")
        if ctype is not None and str(ctype).lower().lstrip().startswith(_REPORT_PARTS):
            return True
    return False


def pick_address(recipient: Recipient, mailed: Collection[str] | None = None) -> str:
    """The address to mark for ``recipient``.

    The address crmkit itself mailed (``mailed``, from the campaign journal) comes first,
    then the Original-Recipient the report gives, then the Final-Recipient.
    """
    if mailed:
        wanted = {m.strip().lower() for m in mailed}
        for candidate in (recipient.original, recipient.address):
            if candidate and candidate in wanted:
                return candidate
    return recipient.original or recipient.address


def addresses_to_mark(report: Report | None, mailed: Collection[str] | None = None) -> tuple[str, ...]:
    """The addresses ``report`` asks crmkit to act on: bounced ones, or complaining ones to opt out.

    A delay marks nobody. For a complaint whose reporter names several addresses (some
    hash or rewrite them), the ones crmkit mailed are kept when ``mailed`` knows any.
    """
    if report is None or report.kind == "delay":
        return ()
    chosen = report.recipients if report.kind == "complaint" else report.failed
    picked = list(dict.fromkeys(pick_address(r, mailed) for r in chosen))
    if report.kind == "complaint" and mailed:
        wanted = {m.strip().lower() for m in mailed}
        known = [a for a in picked if a in wanted]
        picked = known or picked
    return tuple(picked)


def _classify(msg: Message, depth: int) -> Report | None:
    parts = list(itertools.islice(msg.walk(), MAX_PARTS))
    report = _arf(parts)
    if report is not None:
        return report
    dsn = _dsn(parts)
    # A readable report says what happened to each recipient: when none failed or waits
    # (a success report), its text is not read again by guesswork.
    if dsn or (any(p.get_content_type() in _DSN_TYPES for p in parts) and not _dsn_unreadable(parts)):
        return _report("rfc3464", dsn)
    if _from_mail_system(msg):
        text = _notice_text(msg)
        found = bounce_formats.detect(text, exclude=_own_addresses(msg))
        failed_header = _x_failed_recipients(msg)
        if found is not None:
            name, delay, recipients = found
            if failed_header and not delay:
                recipients = _merge(recipients, failed_header)
            return _report(name, recipients, delay=delay)
        if failed_header:
            return _report("x-failed-recipients", failed_header)
    if depth < MAX_DEPTH:
        # A bounce someone forwarded as an attachment.
        for part in parts[1:]:
            if part.get_content_type() == "message/rfc822":
                inner = part.get_payload()
                if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                    found_inner = _classify(inner[0], depth + 1)
                    if found_inner is not None:
                        return found_inner
    return None


def _report(name: str, recipients: list[Recipient], *, delay: bool = False) -> Report | None:
    if not recipients:
        return None
    if delay:
        recipients = [_temporary(r) for r in recipients]
    kind: Kind = "failure" if any(r.permanent for r in recipients) else "delay"
    return Report(kind=kind, format=name, recipients=tuple(recipients))


def _temporary(r: Recipient) -> Recipient:
    return Recipient(r.address, r.original, r.status, r.diagnostic, permanent=False)


def _merge(recipients: list[Recipient], more: list[Recipient]) -> list[Recipient]:
    seen = {r.address for r in recipients}
    return recipients + [r for r in more if r.address not in seen]


# --- ARF (RFC 5965) -----------------------------------------------------------------------


def _arf(parts: list[Message]) -> Report | None:
    for index, part in enumerate(parts):
        if part.get_content_type() not in _ARF_TYPES:
            continue
        fields = [f for block in _blocks(part) for f in block]
        feedback = next((v.strip().lower() for k, v in fields if k == "feedback-type"), "abuse")
        feedback = feedback.split()[0] if feedback.split() else "abuse"
        if feedback not in _COMPLAINT_TYPES:
            return None
        addresses = [
            normalise_address(v) for k, v in fields if k in ("original-rcpt-to", "removal-recipient")
        ]
        found = [a for a in addresses if a]
        if not found:
            found = _original_to(parts[index + 1 :])
        recipients = tuple(Recipient(a) for a in dict.fromkeys(found))
        return Report(kind="complaint", format="arf", recipients=recipients, feedback_type=feedback)
    return None


def _original_to(parts: list[Message]) -> list[str]:
    """The To of the reported message (the part after the feedback report)."""
    for part in parts:
        ctype = part.get_content_type()
        headers: Message | None = None
        if ctype == "message/rfc822":
            inner = part.get_payload()
            if isinstance(inner, list) and inner and isinstance(inner[0], Message):
                headers = inner[0]
        elif ctype in ("text/rfc822-headers", "message/rfc822-headers"):
            headers = HeaderParser().parsestr(_decoded(part))
        if headers is not None:
            values = [str(v) for v in headers.get_all("To", [])]
            return [a for _, raw in getaddresses(values) if (a := normalise_address(raw))]
    return []


# --- RFC 3464 -----------------------------------------------------------------------------


def _dsn(parts: list[Message]) -> list[Recipient]:
    recipients: list[Recipient] = []
    for part in parts:
        if part.get_content_type() in _DSN_TYPES:
            blocks = _blocks(part)
        elif part.get_content_type() == "text/plain" and _looks_like_dsn_text(part):
            # Some servers put the report fields in a text part of a multipart/mixed.
            blocks = _blocks(part)
        else:
            continue
        for block in blocks:
            recipient = _dsn_recipient(dict(reversed(block)))
            if recipient is not None and recipient.address not in {r.address for r in recipients}:
                recipients.append(recipient)
    return recipients


def _dsn_unreadable(parts: list[Message]) -> bool:
    """True when the report part names no recipient at all (empty or broken), so the text is read instead."""
    for part in parts:
        if part.get_content_type() in _DSN_TYPES:
            for block in _blocks(part):
                if any(name in ("final-recipient", "original-recipient") for name, _ in block):
                    return False
    return True


def _looks_like_dsn_text(part: Message) -> bool:
    text = _decoded(part)[:4000]
    return bool(re.search(r"^Final-Recipient\s*:", text, re.I | re.M)) and bool(
        re.search(r"^(?:Action|Status)\s*:", text, re.I | re.M)
    )


def _dsn_recipient(fields: dict[str, str]) -> Recipient | None:
    final = normalise_address(fields.get("final-recipient", "")) or normalise_address(
        fields.get("x-actual-recipient", "")
    )
    original = normalise_address(fields.get("original-recipient", ""))
    address = final or original
    if not address:
        return None
    action = (fields.get("action", "").strip().lower().split() or [""])[0]
    diagnostic = fields.get("diagnostic-code", "")
    status = find_status(fields.get("status", "")) or find_status(diagnostic)
    if action.startswith(_NOT_FAILED_ACTIONS):
        return None
    if action.startswith("delay"):
        permanent = False
    elif action.startswith(_FAILED_ACTIONS):
        permanent = status is None or status.startswith("5")
    elif status:
        permanent = status.startswith("5")
    else:
        return None
    if status and status.startswith("2"):
        return None
    text = re.sub(r"^\s*[A-Za-z0-9-]+\s*;\s*", "", diagnostic)
    return Recipient(address, original, status, shorten(text) or None, permanent)


def _blocks(part: Message) -> list[list[tuple[str, str]]]:
    """The field blocks of a report part, each a list of (lower-case name, value)."""
    payload = part.get_payload()
    if isinstance(payload, list) and payload:
        messages = [p for p in payload if isinstance(p, Message)]
        return [[(str(k).lower(), str(v)) for k, v in block.items()] for block in messages]
    blocks: list[list[tuple[str, str]]] = []
    current: list[tuple[str, str]] = []
    for line in _decoded(part).splitlines():
        if not line.strip():
            if current:
                blocks.append(current)
            current = []
        elif line[:1] in " \t" and current:
            name, value = current[-1]
            current[-1] = (name, f"{value} {line.strip()}")
        elif match := _FIELD.match(line):
            current.append((match.group(1).lower(), match.group(2).strip()))
    if current:
        blocks.append(current)
    return blocks


# --- Plain-text notices ---------------------------------------------------------------------


def _from_mail_system(msg: Message) -> bool:
    """Mail a mail system sent: a mailer-daemon or postmaster, an empty Return-Path, or a bounce's subject.

    A person's message that quotes or forwards a bounce as text is none of these.
    """
    if (
        msg.get_content_type() == "multipart/report"
        or str(msg.get("Return-Path", "")).replace(" ", "") == "<>"
    ):
        return True
    name, address = parseaddr(_header(msg, "From"))
    local = address.rpartition("@")[0] if "@" in address else address
    if _SYSTEM_SENDER.match(local.strip('"')) or (name and _SYSTEM_NAME.search(name)):
        return True
    subject = _header(msg, "Subject")
    return bool(_BOUNCE_SUBJECT.search(subject)) and not _REPLY_SUBJECT.match(subject)


def _own_addresses(msg: Message) -> set[str]:
    """Addresses in the bounce's own headers: the sender we are, and the reporting system."""
    values = [_header(msg, name) for name in ("From", "To", "Cc", "Return-Path", "Sender", "Reply-To")]
    return {a for _, raw in getaddresses(values) if (a := normalise_address(raw))}


def _x_failed_recipients(msg: Message) -> list[Recipient]:
    values = [str(v) for v in msg.get_all("X-Failed-Recipients", [])]
    found = [normalise_address(raw) for _, raw in getaddresses(values)]
    return [Recipient(a, permanent=True) for a in dict.fromkeys(found) if a]


def _notice_text(msg: Message) -> str:
    """The text a mail system wrote: text parts outside the returned message, capped."""
    inline: list[str] = []
    attached: list[str] = []
    size = 0
    for part in _text_parts(msg, 0):
        text = _decoded(part)
        if part.get_content_type() == "text/html":
            text = html_to_text(text[:MAX_SCAN_CHARS])
        attachment = part.get_filename() is not None or str(
            part.get("Content-Disposition", "")
        ).lower().startswith("attachment")
        (attached if attachment else inline).append(text)
        size += len(text)
        if size >= MAX_SCAN_CHARS:
            break
    return "\n\n".join(inline or attached)[:MAX_SCAN_CHARS]


def _text_parts(part: Message, depth: int) -> Iterator[Message]:
    ctype = part.get_content_type()
    if depth > 10 or (depth and ctype.startswith("message/")):
        return
    if part.is_multipart():
        payload = part.get_payload()
        for child in payload[:MAX_PARTS] if isinstance(payload, list) else []:
            if isinstance(child, Message):
                yield from _text_parts(child, depth + 1)
    elif part.get_content_maintype() == "text" and ctype != "text/rfc822-headers":
        yield part


def _decoded(part: Message) -> str:
    """A part's text, decoded with its charset and replacement, at most MAX_SCAN_CHARS of it."""
    payload = part.get_payload(decode=True)
    if not isinstance(payload, bytes):
        raw = part.get_payload()
        return raw[:MAX_SCAN_CHARS] if isinstance(raw, str) else ""
    payload = payload[: MAX_SCAN_CHARS * 4]
    charset = part.get_content_charset() or "utf-8"
    try:
        return payload.decode(charset, "replace")[:MAX_SCAN_CHARS]
    except (LookupError, UnicodeError):
        return payload.decode("latin-1")[:MAX_SCAN_CHARS]


def _header(msg: Message, name: str) -> str:
    value = msg.get(name)
    if value is None:
        return ""
    try:
        return str(make_header(decode_header(str(value))))[:2000]
    except Exception:  # an undecodable encoded-word: read it as it came
        return str(value)[:2000]
