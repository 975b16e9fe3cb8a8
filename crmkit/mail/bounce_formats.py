"""The plain-text bounce notices of common mail servers, read from their text. Pure: no I/O.

Each :class:`Format` knows the sentences its server writes at the top of a failure
notice and of a delay notice, and, where the server marks them, the lines that name a
recipient. Recipients are read between that sentence and the copy of the returned
message; a format without a recipient line takes every address written there, less
the bounce's own sender and mail system. The signatures follow what the servers'
sources and documentation say they write, and the detector sets of sisimai and
flufl.bounce (studied, not copied).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

__all__ = ["FORMATS", "Format", "Recipient", "detect", "find_status", "normalise_address", "shorten"]

#: Diagnostic text kept for a recipient.
DIAGNOSTIC_CHARS = 200


@dataclass(frozen=True)
class Recipient:
    """One recipient a report names.

    ``address`` is lower case; ``original`` is the address the report says was first
    given (RFC 3464 Original-Recipient, Postfix's "expanded from"); ``status`` is the
    enhanced status code ("5.1.1") when the report gives one.
    """

    address: str
    original: str | None = None
    status: str | None = None
    diagnostic: str | None = None
    permanent: bool = False


@dataclass(frozen=True)
class Format:
    """A server's plain-text notice: how to know it, and where its recipients are written."""

    name: str
    failure: re.Pattern[str]
    delay: re.Pattern[str] | None = None
    recipient: re.Pattern[str] | None = None


def _rx(pattern: str, flags: int = 0) -> re.Pattern[str]:
    return re.compile(pattern, re.I | re.M | flags)


# Bounded as RFC 5321 bounds them (64 for the local part, 63 a label): a long run of letters
# with no "@" (a body of 20 MB of "x") then costs linear time, not quadratic, and an
# overlong local part is no address at all (the lookbehind stops a match inside one).
_LOCAL_CHARS = r"A-Za-z0-9!#$%&'*+/=?^_`{|}~.\\-"
_ADDRESS = re.compile(
    rf"(?<![{_LOCAL_CHARS}])[{_LOCAL_CHARS}]{{1,64}}@[A-Za-z0-9-]{{1,63}}(?:\.[A-Za-z0-9-]{{1,63}})*\.[A-Za-z]{{2,63}}"
)
_ANGLE = r"<?(?P<address>[^\s<>()\"',;:]+@[^\s<>()\"',;:]+?)>?"
_ENHANCED = re.compile(r"(?<![\d.])([245])\.(\d{1,3})\.(\d{1,3})(?![\d.]*\d)")
_SMTP_CODE = re.compile(r"(?:^|[\s(\[#:])([45])\d\d(?=[\s-])")
_SYSTEM_LOCAL = re.compile(
    r"^(?:mailer-?daemon|postmaster|mail-?daemon|mdaemon|abuse|hostmaster|root)$", re.I
)
#: Lines that belong to a quoted header block of the returned message, not to the notice.
_HEADER_LINE = re.compile(
    r"^\s*(?:>>>\s*)?(?:from|to|cc|bcc|sender|reply-to|return-path|message-id|in-reply-to|references|date"
    r"|subject|received|envelope-to|delivered-to|list-[a-z-]+|x-[a-z0-9-]+|mail from|rcpt from|by)\s*:",
    re.I,
)
_MAIL_FROM = re.compile(r"MAIL\s+FROM\s*:", re.I)
#: Text just before an address that makes it the sender, not a recipient ("mail from x@y").
_SENDER_BEFORE = re.compile(
    r"(?<!generated )(?<!expanded )\b(?:from|sender|by|sent)\s*:?\s*[<\[(\"']?$", re.I
)

#: Where the copy of the returned message (or its headers) begins in a notice.
_RETURNED = _rx(
    r"^[ \t>]*(?:-{2,}.*(?:original message|copy of the message|copy of your message|unsent message"
    r"|undelivered message|returned message|message follows|message headers|header of the original"
    r"|headers of the original|below this line)"
    r"|-+\s*Original Message\s*-+|Original message follows|Below this line is a copy of the message"
    r"|original message headers?:?\s*$|The original message headers? (?:is|are|was|were)"
    r"|Original-Recipient:|Reporting-MTA:|Content-Type: message/rfc822|Return-Path:\s*<"
    r"|Received: from |\+{3,} Attachment|\|?-+ Message text follows|-+RETURNED MAIL FOLLOWS"
    r"|Your message reads"
    r"|A summary of the undelivered message|Original message details|Original message as received)"
)

FORMATS: tuple[Format, ...] = (
    Format(
        "yahoo",
        _rx(
            r"Sorry, we were unable to deliver your message to the following address|^Message from yahoo\.\w+"
            r"|Unable to deliver message to the following address\(es\)"
        ),
        _rx(r"we will continue (?:to )?(?:try|attempt)|message (?:delivery )?(?:is|has been) delayed"),
        _rx(r"^<(?P<address>[^>\s]+@[^>\s]+)>:"),
    ),
    Format(
        "qmail",
        _rx(
            r"This is the qmail-send program"
            r"|I'm afraid I wasn't able to deliver your message to the following"
            r"|we were not able to deliver your message to the following"
        ),
        None,  # qmail sends no delay notices
        _rx(rf"^\s*{_ANGLE}:\s*$|^<(?P<address2>[^>\s]+@[^>\s]+)>:"),
    ),
    Format(
        "postfix",
        _rx(
            r"This is the (?:mail system|Postfix program) at host"
            r"|I'm sorry to have to inform you that your message"
            r" could not\s+be delivered"
        ),
        _rx(
            r"THIS IS A WARNING ONLY"
            r"|Delayed Mail \(still being retried\)"
        ),
        _rx(r"^\s*<(?P<address>[^>\s]+@[^>\s]+)>(?: \(expanded from <(?P<original>[^>\s]+)>\))?:"),
    ),
    Format(
        "exim",
        _rx(
            r"This message was created automatically by mail delivery software"
            r"|A message that you sent could not"
            r"\s+be delivered to (?:one or more|all) of its\s+recipients|The following address\(es\) failed"
        ),
        _rx(
            r"has not yet been delivered to (?:one or more|all) of its\s+recipients"
            r"|No action is required on your"
            r" part|Delivery attempts will continue|Message .{0,80} is delayed"
        ),
        _rx(rf"^ {{1,4}}{_ANGLE}(?::|\s*$|\s+(?:SMTP error|host |retry |mailbox |unrouteable|all relevant))"),
    ),
    Format(
        "office365",
        _rx(
            r"Your message to \S+ couldn't be delivered|Your message couldn't be delivered"
            r"|Your message wasn't delivered to anyone"
        ),
        _rx(r"Delivery is delayed to these recipients|This message hasn't been delivered yet"),
    ),
    Format(
        "exchange",
        _rx(
            r"Delivery has failed to these recipients or (?:groups|distribution lists)"
            r"|Your message did not reach"
            r" some or all of the intended recipients|did not reach the following recipient|The following"
            r" recipient\(s\) could not be reached|Unable to deliver message to the following recipients"
            r"|Delivery to the following recipients failed"
        ),
        _rx(
            r"Delivery is delayed to these recipients|Delivery to the following recipients has been delayed"
            r"|has not (?:yet )?been delivered to the following recipients"
        ),
    ),
    Format(
        "gmail",
        _rx(
            r"Delivery to the following recipients? failed permanently|^\s*Address not found\s*$"
            r"|Your message wasn't"
            r" delivered to \S+ because|The email account that you tried to reach does not exist"
        ),
        _rx(
            r"Delivery to the following recipients? has been delayed|^\s*Message not delivered yet\s*$"
            r"|Delivery incomplete|There was a temporary problem delivering your message|Gmail will retry"
        ),
    ),
    Format(
        "sendmail",
        _rx(
            r"-{3,} ?The following addresses had permanent fatal errors ?-{3,}|-{3,} ?Transcript of session"
            r" follows ?-{3,}|The original message was received at"
        ),
        _rx(
            r"THIS IS A WARNING MESSAGE ONLY|Warning: (?:could not send message|message still undelivered)"
            r"|Will keep trying until message is|\.\.\. Deferred:"
        ),
    ),
    Format(
        "groupwise",
        _rx(
            r"The message that you sent was undeliverable to the following|GroupWise Internet Agent"
            r"|Message could not be delivered to the following recipient"
            r"|The message was undeliverable because"
        ),
        _rx(r"The message that you sent has been delayed|Delivery of the message has been delayed"),
    ),
    Format(
        "lotus",
        _rx(r"Your message\s.{0,400}?\swas not delivered to:|^Failure Reason:|Delivery Failure Report", re.S),
        _rx(r"^Delay Reason:|Delivery Delay Report|has been delayed and will be retried"),
    ),
    # qmail's recipient paragraphs ("<user@host>:") without its greeting, as its clones write them.
    Format("qmail", _rx(r"^<[^>\s@]+@[^>\s]+>:\s*$"), None, _rx(r"^<(?P<address>[^>\s]+@[^>\s]+)>:")),
    Format(
        "smtp32",
        _rx(
            r"^Delivery failed \d+ attempts|^undeliverable to |^Unknown user: "
            r"|^User mailbox exceeds allowed size"
        ),
    ),
)

#: What any other server writes; read only after every named format failed to match.
GENERIC = Format(
    "generic",
    _rx(
        r"could not be delivered|couldn'?t be delivered|undeliverable|undelivered|delivery (?:has )?failed"
        r"|failed to deliver|permanent(?:ly)? (?:fatal )?(?:error|failed|failure)|unknown user|user unknown"
        r"|no such (?:user|mailbox|recipient)|mailbox (?:unavailable|not found|is full)|does not exist"
        r"|not delivered|unable to deliver|recipient address rejected|invalid recipient|failed recipient"
        r"|was not delivered|not a valid (?:user|mailbox|recipient)|address rejected|bounced|returned because"
        r"|has been returned|returning to sender|mail failed|failed addresses|invalid final delivery"
        r"|automatically rejected|was aborted|delivery problems|error was detected|no longer valid"
        r"|^Error-for:"
        r"|was rejected|is unavailable|not accepted|user not found|invalid mailbox"
    ),
    _rx(
        r"this is a warning|warning message only|(?:has been|is) delayed|delivery delay"
        r"|not yet been delivered"
        r"|will (?:continue to )?(?:retry|keep trying|attempt (?:to )?(?:re)?deliver)"
        r"|still (?:being )?(?:retried|trying)"
        r"|not been delivered yet|no action is required|attempts will continue"
    ),
)


def detect(
    text: str, *, exclude: set[str] | frozenset[str] = frozenset()
) -> tuple[str, bool, list[Recipient]] | None:
    """Read a notice: (format name, whether it is a delay notice, recipients), or None.

    ``exclude`` holds addresses that are never a failed recipient: the bounce's own
    From, To and Return-Path.
    """
    text = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith(">"))
    for fmt in (*FORMATS, GENERIC):
        failure = fmt.failure.search(text)
        delay_at = fmt.delay.search(text) if fmt.delay else None
        starts = [m.start() for m in (failure, delay_at) if m is not None]
        if not starts:
            continue
        start = 0 if fmt is GENERIC else _line_start(text, min(starts))
        end = _returned_at(text, start)
        notice = text[start:end]
        delay = delay_at is not None and delay_at.start() < end
        recipients = _recipients(notice, fmt, exclude)
        if recipients:
            return fmt.name, delay, recipients
    return None


def _line_start(text: str, at: int) -> int:
    return text.rfind("\n", 0, at) + 1


def _returned_at(text: str, start: int) -> int:
    # The first line of the notice is never the start of the returned message.
    first_end = text.find("\n", start)
    match = _RETURNED.search(text, first_end + 1 if first_end >= 0 else len(text))
    return match.start() if match else len(text)


def _recipients(notice: str, fmt: Format, exclude: set[str] | frozenset[str]) -> list[Recipient]:
    found: list[tuple[str, str | None, int]] = []
    if fmt.recipient is not None:
        for match in fmt.recipient.finditer(notice):
            groups = match.groupdict()
            raw = groups.get("address") or groups.get("address2") or ""
            address = normalise_address(raw)
            if address:
                found.append((address, normalise_address(groups.get("original") or ""), match.end()))
    if not found:
        offset = 0
        for line in notice.splitlines(keepends=True):
            if not _HEADER_LINE.match(line) and not _MAIL_FROM.search(line):
                for match in _ADDRESS.finditer(line):
                    if _SENDER_BEFORE.search(line[: match.start()]):
                        continue
                    address = normalise_address(match.group(0))
                    if address:
                        found.append((address, None, offset + match.end()))
            offset += len(line)
    windows: dict[str, list[str]] = {}
    originals: dict[str, str | None] = {}
    for index, (address, original, end) in enumerate(found):
        local = address.partition("@")[0]
        if address in exclude or _SYSTEM_LOCAL.match(local):
            continue
        following = [e for a, _, e in found[index + 1 :] if a != address]
        windows.setdefault(address, []).append(
            notice[end : min([end + 400, *[f - 1 for f in following[:1]]])]
        )
        originals[address] = originals.get(address) or original
    recipients: list[Recipient] = []
    for address, texts in windows.items():
        # A notice may name a recipient twice, the second time with the server's answer.
        status = next((s for s in map(find_status, texts) if s), None)
        code = status[0] if status else next((c for c in map(_smtp_class, texts) if c), None)
        if code == "2":
            continue
        diagnostic = shorten(texts[0].strip(" :>\t\r\n")) or None
        recipients.append(Recipient(address, originals[address], status, diagnostic, permanent=code != "4"))
    return recipients


def _smtp_class(text: str) -> str | None:
    match = _SMTP_CODE.search(text)
    return match.group(1) if match else None


def find_status(text: str) -> str | None:
    """The first enhanced status code (RFC 3463, "5.1.1") in ``text``."""
    match = _ENHANCED.search(text or "")
    return ".".join(match.groups()) if match else None


def normalise_address(value: str) -> str | None:
    """An address as text, lower case, from "rfc822; <A@B.example>", "A@B.example" and the like."""
    value = (value or "").strip()
    if ";" in value:
        kind, _, rest = value.partition(";")
        if "@" not in kind:
            value = rest.strip()
    match = _ADDRESS.search(value.replace("\\@", "@"))
    if not match:
        return None
    address = re.sub(r"^(?:smtp|rfc822)[=:]", "", match.group(0).strip(".'`").lower())
    local = address.partition("@")[0]
    if not local or ".." in local or local.startswith(".") or len(address) > 254:
        return None
    return address


def shorten(text: str, limit: int = DIAGNOSTIC_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join((text or "").split())
    return flat if len(flat) <= limit else flat[: limit - 1].rstrip() + "…"
