"""The team's answer to a case: ``crmkit cases reply CASE-12``.

Three steps, each testable alone:

1. :func:`plan_reply` reads the case, its contact and its timeline from the
   store and refuses what must not go out (no contact, no address, an
   opted-out or bounced contact unless forced, an empty text);
2. :func:`build_reply` is pure: from plain data it writes the message's bytes
   with :func:`crmkit.mail.compose.build_message`, so no subject or name can
   add a header. The subject carries the case token, ``In-Reply-To`` names the
   newest mail on the case's timeline and ``References`` the case's mail
   before it (oldest first), so the customer's answer threads back to the case
   by header, and by token when a mail program drops the headers;
3. :func:`reply_to_case` sends it over ``[smtp]`` (:class:`~crmkit.mail.smtp.SMTPSender`),
   and only once the server has taken it logs it, in one transaction: an
   ``email_out`` activity on the case and its contact (with the Message-ID, so
   the copy a poller later finds in the Sent folder is a duplicate), the case
   ``pending`` (from new or open), and ``first_response_at`` when empty.

A refused message, or a connection that broke, logs nothing. A resolved or
closed case keeps its status (a last word after the fact does not re-open
it) unless ``reopen`` asks for ``pending``.
"""

from __future__ import annotations

import mimetypes
import re
import secrets
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import format_datetime
from pathlib import Path
from typing import Any

from crmkit.config import MailServer, Secret, scrub
from crmkit.errors import CrmkitError
from crmkit.mail.archive import MailArchive
from crmkit.mail.compose import (
    AddressError,
    Attachment,
    build_message,
    clean_header_text,
    format_address,
    is_address,
    parse_addresses,
)
from crmkit.mail.inbox import clean_subject
from crmkit.mail.message import Attachment as ParsedAttachment
from crmkit.mail.message import safe_filename
from crmkit.mail.smtp import SendError, SMTPSender
from crmkit.store import Store

__all__ = [
    "EDITOR_MARKER",
    "MAX_ATTACHMENT_BYTES",
    "Reply",
    "ReplyError",
    "ReplyNotSent",
    "ReplyResult",
    "build_reply",
    "editor_text",
    "plan_reply",
    "readable",
    "recipient_of",
    "reply_to_case",
    "text_from_editor",
]

#: At most this much attached to one reply (the files' own sizes; base64 adds a third).
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
#: References keeps the first Message-ID of the thread and the newest ones, this many in all.
MAX_REFERENCES = 10
#: In the file $EDITOR opens: this line and everything below it are left out of the reply.
EDITOR_MARKER = "# ------------------------ >8 ------------------------"
_MAIL_KINDS = ("email_in", "email_out")
_MESSAGE_ID = re.compile(r"<[^<>\s]+@[^<>\s]+>")
_REOPEN_FROM = ("resolved", "closed")


class ReplyError(CrmkitError):
    """A reply that cannot go out as asked (no contact, no address, opted out, empty text)."""


class ReplyNotSent(CrmkitError):
    """The SMTP server did not take the reply (or the line broke): nothing was logged."""

    def __init__(self, message: str, *, uncertain: bool = False) -> None:
        super().__init__(message)
        self.uncertain = uncertain  # handed over, then the line broke: perhaps delivered


@dataclass(frozen=True)
class Reply:
    """One reply, ready to send: its envelope, its headers as logged, and its bytes."""

    case: str
    contact: str
    account: str | None
    sender: str  # the envelope's and From's address
    sender_name: str
    to: str  # the contact's address
    to_header: str  # as the message carries it (a non-ASCII name encoded)
    to_name: str
    subject: str  # as it reads in the message (one line)
    text: str
    message_id: str
    in_reply_to: str | None
    references: tuple[str, ...]
    date: datetime
    attachments: tuple[Attachment, ...]
    data: bytes

    @property
    def to_display(self) -> str:
        """The recipient as people read it: ``Ana Nguyễn <ana@example.com>``."""
        return f"{self.to_name} <{self.to}>" if self.to_name else self.to

    @property
    def utf8(self) -> bool:
        """Does the envelope need SMTPUTF8 (a non-ASCII address)?"""
        return not (self.sender.isascii() and self.to.isascii())


@dataclass
class ReplyResult:
    """What :func:`reply_to_case` did: the message, and what changed on the case."""

    reply: Reply
    sent: bool
    activity: str | None = None
    status_before: str | None = None
    status: str | None = None  # the case's status after the reply (unchanged on a dry run)
    first_response_at: str | None = None
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        reply = self.reply
        return {
            "case": reply.case,
            "sent": self.sent,
            "dry_run": not self.sent,
            "activity": self.activity,
            "contact": reply.contact,
            "from": reply.sender,
            "to": reply.to,
            "subject": reply.subject,
            "message_id": reply.message_id,
            "in_reply_to": reply.in_reply_to,
            "references": list(reply.references),
            "attachments": [_listed(a) for a in reply.attachments],
            "status_before": self.status_before,
            "status": self.status,
            "first_response_at": self.first_response_at,
            "notes": self.notes,
        }


# -- the pure part: a message from plain data ------------------------------------------------------


def _ascii_domain(domain: str) -> str:
    try:
        return domain.encode("idna").decode("ascii") if domain else "crmkit.invalid"
    except UnicodeError:
        return "crmkit.invalid"


def new_message_id(case_id: str, sender: str) -> str:
    """A fresh Message-ID on the sender's own domain, naming the case for people reading logs."""
    return f"<{secrets.token_hex(10)}.{case_id.lower()}@{_ascii_domain(sender.rpartition('@')[2])}>"


def thread_references(earlier: Sequence[str]) -> tuple[str, ...]:
    """References from the thread's Message-IDs, oldest first: proper ids only, each once, at most
    :data:`MAX_REFERENCES` (the first, which names the thread, and the newest)."""
    ids = list(dict.fromkeys(mid for mid in earlier if _MESSAGE_ID.fullmatch(mid)))
    if len(ids) > MAX_REFERENCES:
        ids = [ids[0], *ids[-(MAX_REFERENCES - 1) :]]
    return tuple(ids)


def build_reply(
    *,
    case_id: str,
    case_subject: str,
    contact_id: str,
    contact_name: str,
    to: str,
    from_address: str,
    text: str,
    thread: Sequence[str] = (),
    attachments: Sequence[Attachment] = (),
    account: str | None = None,
    now: datetime | None = None,
    message_id: str | None = None,
) -> Reply:
    """The reply to ``case_id``, written; ``thread`` is the case's Message-IDs, oldest first.

    Nothing here reads the store or the network. Raises :class:`ReplyError` for an
    empty text or an address that is not one.
    """
    if not text.strip():
        raise ReplyError("the reply is empty: nothing was sent")
    try:
        senders = parse_addresses(from_address)
    except AddressError as exc:
        raise ReplyError(f"[smtp] from: {exc}") from None
    if len(senders) != 1:
        raise ReplyError("[smtp] from must be one address")
    sender_name, sender = senders[0]
    if not is_address(to):
        raise ReplyError(f"{contact_id}'s email {to!r} is not an address to write to")
    date = now or datetime.now(UTC)
    if date.tzinfo is None:
        date = date.replace(tzinfo=UTC)
    references = thread_references(thread)
    parent = references[-1] if references else None
    subject = clean_header_text(f"[{case_id}] Re: {clean_subject(case_subject)}")
    message_id = message_id or new_message_id(case_id, sender)
    to_header = format_address(contact_name, to)
    headers = [
        ("From", format_address(sender_name, sender)),
        ("To", to_header),
        ("Subject", subject),
        ("Date", format_datetime(date)),
        ("Message-ID", message_id),
    ]
    if parent is not None:
        headers += [("In-Reply-To", parent), ("References", " ".join(references))]
    data = build_message(headers, text, attachments=attachments)
    return Reply(
        case=case_id,
        contact=contact_id,
        account=account,
        sender=sender,
        sender_name=clean_header_text(sender_name),
        to=to,
        to_header=to_header,
        to_name=clean_header_text(contact_name),
        subject=subject,
        text=text,
        message_id=message_id,
        in_reply_to=parent,
        references=references,
        date=date,
        attachments=tuple(attachments),
        data=data,
    )


def readable(reply: Reply) -> str:
    """The reply as a person reads it (a dry run's output): the headers that matter, then the text."""
    lines = [
        f"From: {reply.sender_name} <{reply.sender}>" if reply.sender_name else f"From: {reply.sender}",
        f"To: {reply.to_display}",
        f"Subject: {reply.subject}",
        f"Message-ID: {reply.message_id}",
    ]
    if reply.in_reply_to:
        lines += [f"In-Reply-To: {reply.in_reply_to}", f"References: {' '.join(reply.references)}"]
    if reply.attachments:
        listed = ", ".join(f"{a.filename} ({len(a.data)} bytes)" for a in reply.attachments)
        lines.append(f"Attachments: {listed}")
    return "\n".join(lines) + "\n\n" + reply.text.rstrip() + "\n"


def editor_text(last_message: dict[str, Any] | None) -> str:
    """What $EDITOR opens: room for the reply, the marker, and the customer's last message quoted."""
    lines = ["", "", EDITOR_MARKER, "# Write the reply above this line; it and all below it are left out."]
    if last_message is not None:
        who = last_message.get("sender") or "the customer"
        when = str(last_message.get("date") or "")[:16].replace("T", " ")
        lines.append(f"# On {when}, {who} wrote:" if when else f"# {who} wrote:")
        lines += [f"> {line}".rstrip() for line in str(last_message.get("body") or "").splitlines()]
    return "\n".join(lines) + "\n"


def text_from_editor(edited: str) -> str:
    """The reply in what the editor saved: everything above the marker line, trailing blanks gone."""
    kept = []
    for line in edited.splitlines():
        if line.strip() == EDITOR_MARKER:
            break
        kept.append(line)
    return "\n".join(kept).rstrip() + "\n" if any(line.strip() for line in kept) else ""


# -- the store: what the reply answers -------------------------------------------------------------


def _moment(activity: dict[str, Any]) -> datetime:
    try:
        moment = datetime.fromisoformat(str(activity.get("date") or ""))
    except ValueError:
        return datetime.min.replace(tzinfo=UTC)
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def case_mail(store: Store, case_id: str) -> list[dict[str, Any]]:
    """The mail on the case's timeline (in and out), oldest first: by date, then as it was filed."""
    mail = [a for a in store.linked("activities", "case", case_id) if a.get("kind") in _MAIL_KINDS]
    return sorted(mail, key=lambda a: (_moment(a), int(str(a["id"]).rsplit("-", 1)[1])))


def last_customer_message(store: Store, case_id: str) -> dict[str, Any] | None:
    """The newest mail the customer sent on the case (what $EDITOR quotes)."""
    received = [a for a in case_mail(store, case_id) if a.get("kind") == "email_in"]
    return received[-1] if received else None


def _attachment(path: Path) -> Attachment:
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ReplyError(f"attachment {path}: {exc.strerror or exc}") from None
    return Attachment(path.name, data, mimetypes.guess_type(path.name)[0])


def recipient_of(store: Store, case_id: str, *, force: bool = False) -> tuple[dict[str, Any], dict[str, Any]]:
    """The case and the contact a reply to it goes to; :class:`ReplyError` when there is none to
    write to (no contact, no address), or one who must not be written to unless ``force``."""
    case = store.lookup("cases", case_id)
    case_id = case["id"]
    contact_id = case.get("contact")
    if not contact_id:
        raise ReplyError(
            f"{case_id} has no contact to answer (set one: crmkit cases update {case_id} contact=C-…)"
        )
    contact = store.get(contact_id)
    address = str(contact.get("email") or "").strip()
    if not address:
        raise ReplyError(f"{case_id}'s contact {contact_id} has no email address")
    if not force:
        if contact.get("opt_out"):
            raise ReplyError(
                f"{case_id}'s contact {contact_id} ({address}) has opted out of mail; --force sends anyway"
            )
        if contact.get("email_status") == "bounced":
            raise ReplyError(
                f"{case_id}'s contact {contact_id} ({address}) has bounced; --force sends anyway"
            )
    return case, contact


def plan_reply(
    store: Store,
    case_id: str,
    text: str,
    *,
    from_address: str,
    attachments: Sequence[Path] = (),
    force: bool = False,
    now: datetime | None = None,
) -> Reply:
    """The reply to a case, checked and written but not sent; see the module docstring.

    Raises :class:`ReplyError` (one line naming the record to look at) when it must not go out.
    """
    case, contact = recipient_of(store, case_id, force=force)
    case_id, contact_id = case["id"], contact["id"]
    address = str(contact["email"]).strip()
    if not text.strip():
        raise ReplyError("the reply is empty: nothing was sent")
    files = [_attachment(Path(p)) for p in attachments]
    size = sum(len(a.data) for a in files)
    if size > MAX_ATTACHMENT_BYTES:
        raise ReplyError(f"attachments of {size / 1e6:.1f} MB (at most {MAX_ATTACHMENT_BYTES / 1e6:.0f} MB)")
    thread = [str(a["message_id"]).strip() for a in case_mail(store, case_id) if a.get("message_id")]
    return build_reply(
        case_id=case_id,
        case_subject=str(case.get("subject") or ""),
        contact_id=contact_id,
        contact_name=str(contact.get("name") or ""),
        to=address,
        from_address=from_address,
        text=text,
        thread=thread,
        attachments=files,
        account=case.get("account") or contact.get("account"),
        now=now,
    )


# -- sending, then logging -------------------------------------------------------------------------


def _listed(attachment: Attachment) -> dict[str, Any]:
    return {
        "filename": attachment.filename,
        "size": len(attachment.data),
        "content_type": attachment.content_type or "application/octet-stream",
    }


def _scrubbed(text: str, password: Secret | None) -> str:
    return " ".join(scrub(text, password).split())  # a server echoing it back must not leak it


def send_reply(sender: SMTPSender, reply: Reply, password: Secret | None = None) -> None:
    """Hand the reply to the server; raises :class:`ReplyNotSent` unless it took it.

    A line that broke before the message was handed over is tried once more
    (nothing was delivered); one that broke after is not (perhaps delivered).
    """
    for attempt in (1, 2):
        try:
            sender.deliver(reply.sender, [reply.to], reply.data, utf8=reply.utf8)
            return
        except SendError as exc:
            if exc.code is None and not exc.uncertain and attempt == 1:
                continue
            if exc.uncertain:
                raise ReplyNotSent(
                    f"{reply.case}: {_scrubbed(str(exc), password)}: it may have been delivered, so nothing "
                    f"was logged (look in the Sent folder for {reply.message_id} before sending again)",
                    uncertain=True,
                ) from None
            raise ReplyNotSent(
                f"{reply.case}: not sent, nothing logged: {_scrubbed(str(exc), password)}"
            ) from None
        except CrmkitError as exc:  # the server could not be reached or refused the login
            raise ReplyNotSent(
                f"{reply.case}: not sent, nothing logged: {_scrubbed(str(exc), password)}"
            ) from None


def _kept(reply: Reply, archive: MailArchive | None) -> tuple[str | None, list[dict[str, Any]] | None]:
    """The sent message and its files kept as the poller keeps mail it files: (.eml path, attachments)."""
    files = [
        ParsedAttachment(
            filename=safe_filename(a.filename, f"attachment-{n}"),
            content_type=a.content_type or "application/octet-stream",
            size=len(a.data),
            data=a.data,
        )
        for n, a in enumerate(reply.attachments, start=1)
    ]
    if archive is None:
        return None, [{"name": f.filename, "content_type": f.content_type, "size": f.size, "path": None}
                      for f in files] or None  # fmt: skip
    raw_path = archive.keep_raw(reply.data)
    kept = archive.keep_attachments(reply.data, files)
    archive.sync()  # durable before the activity that points at them is committed
    return raw_path, kept or None


def record_reply(
    store: Store,
    reply: Reply,
    *,
    reopen: bool = False,
    actor: str | None = None,
    archive: MailArchive | None = None,
) -> ReplyResult:
    """Log a sent reply: the activity, the case's status and first response, in one transaction.

    With ``archive``, the message as sent and its attachments are kept there first, and the
    activity points at them, as it does for mail the poller files.
    """
    result = ReplyResult(reply, sent=True)
    raw_path, attachments = _kept(reply, archive)
    with store.transaction():
        case = store.get(reply.case)
        status = case.get("status") or "new"
        result.status_before = result.status = status
        activity = {
            "kind": "email_out",
            "subject": reply.subject,
            "body": reply.text,
            "date": reply.date.isoformat(),
            "sender": reply.sender,
            "recipients": reply.to_display,
            "message_id": reply.message_id,
            "case": reply.case,
            "contact": reply.contact,
            "account": reply.account,
            "attachments": attachments,
            "raw_message": raw_path,
        }
        added = store.add(
            "activities", {k: v for k, v in activity.items() if v is not None}, allow_system=True, actor=actor
        )
        result.activity = str(added["id"])
        changes: dict[str, Any] = {}
        if status in ("new", "open") or (reopen and status in _REOPEN_FROM):
            changes["status"] = "pending"
        elif status in _REOPEN_FROM:
            result.notes.append(f"{reply.case} stays {status} (--reopen makes it pending)")
        if not case.get("first_response_at"):
            changes["first_response_at"] = reply.date
        if changes:
            case = store.update(reply.case, changes, allow_system=True, actor=actor)
        result.status = case.get("status") or status
        result.first_response_at = case.get("first_response_at")
    return result


def reply_to_case(
    store: Store,
    smtp_settings: MailServer,
    password: Secret | None,
    case_id: str,
    text: str,
    *,
    attachments: Sequence[Path] = (),
    force: bool = False,
    reopen: bool = False,
    dry_run: bool = False,
    now: datetime | None = None,
    sender: SMTPSender | None = None,
    actor: str | None = None,
    archive: MailArchive | None = None,
) -> ReplyResult:
    """Answer a case over ``[smtp]`` and log the answer on it; see the module docstring.

    ``dry_run`` writes the message and sends and logs nothing. ``sender`` is an
    open connection to reuse (else one is opened on ``smtp_settings``). Raises
    :class:`ReplyError` before anything is sent, :class:`ReplyNotSent` when the
    server did not take it (nothing logged). ``archive``: keep the sent message there.
    """
    if not smtp_settings.from_address:
        raise ReplyError('replying needs [smtp] from = "Support <support@example.com>" in crmkit.toml')
    reply = plan_reply(
        store,
        case_id,
        text,
        from_address=smtp_settings.from_address,
        attachments=attachments,
        force=force,
        now=now,
    )
    if dry_run:
        status = store.get(reply.case).get("status")
        return ReplyResult(reply, sent=False, status_before=status, status=status)
    if sender is not None:
        send_reply(sender, reply, password)
    else:
        from crmkit.mail.connection import tls_context

        with SMTPSender(smtp_settings, password, ssl_context=tls_context(smtp_settings)) as opened:
            send_reply(opened, reply, password)
    try:
        return record_reply(store, reply, reopen=reopen, actor=actor, archive=archive)
    except CrmkitError as exc:
        raise CrmkitError(
            f"{reply.case}: the reply went out as {reply.message_id} but could not be logged: {exc}"
        ) from None
