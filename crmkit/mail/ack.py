"""The automatic acknowledgement of a new case, as RFC 3834 asks an auto-responder to behave.

It goes only where :mod:`crmkit.mail.inbox` decided (never to automatic mail,
at most once per sender per window), answers the message it acknowledges
(In-Reply-To, References), says ``Auto-Submitted: auto-replied`` so that other
responders do not answer it, and carries the case token in the subject so a
reply finds its case. Once sent it is logged on the case with its
Message-ID, so a reply to it threads by header too.
"""

from __future__ import annotations

from datetime import UTC, datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

from crmkit.mail.inbox import clean_subject
from crmkit.mail.message import ParsedMessage
from crmkit.store import Store

__all__ = ["acknowledgement", "record_sent"]


def acknowledgement(
    case_id: str, parsed: ParsedMessage, *, from_address: str, now: datetime | None = None
) -> EmailMessage:
    """The acknowledgement of ``parsed``, which opened ``case_id``."""
    # From, never Reply-To: the once-per-window rule counts senders, and a Reply-To
    # would let anyone aim acknowledgements at a third party
    recipient = parsed.sender
    if not recipient:
        raise ValueError("a message without a sender cannot be acknowledged")
    domain = parseaddr(from_address)[1].rpartition("@")[2] or "crmkit.invalid"
    msg = EmailMessage()
    msg["From"] = from_address
    msg["To"] = recipient
    msg["Subject"] = f"[{case_id}] Re: {clean_subject(parsed.subject)}"
    msg["Date"] = format_datetime(now or datetime.now(UTC))
    msg["Message-ID"] = make_msgid("ack", domain=domain)
    msg["Auto-Submitted"] = "auto-replied"
    msg["X-Auto-Response-Suppress"] = "All"  # Exchange: no out-of-office answers to this
    if parsed.message_id:
        msg["In-Reply-To"] = parsed.message_id
        msg["References"] = " ".join([*parsed.references, parsed.message_id][-10:])
    msg.set_content(
        f"Thank you for your message. We have opened case {case_id} and will answer as soon as we can.\n\n"
        f"To add to it, reply to this message and keep [{case_id}] in the subject.\n"
    )
    return msg


def record_sent(store: Store, case_id: str, msg: EmailMessage, *, contact: str | None, actor: str) -> str:
    """Log a message crmkit sent on its case; returns the activity id."""
    values = {
        "kind": "email_out",
        "subject": str(msg["Subject"]),
        "body": msg.get_content() if not msg.is_multipart() else None,
        "date": datetime.now(UTC).isoformat(),
        "sender": parseaddr(str(msg["From"]))[1],
        "recipients": str(msg["To"]),
        "message_id": str(msg["Message-ID"]),
        "case": case_id,
        "contact": contact if contact and contact.startswith("C-") else None,
    }
    return str(store.add("activities", {k: v for k, v in values.items() if v}, actor=actor)["id"])
