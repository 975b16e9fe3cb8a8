"""Filing one parsed message into the store: who sent it, which case it belongs to, what to do.

No IMAP here: :func:`file_message` takes a :class:`~crmkit.mail.message.ParsedMessage`
and changes the store, inside the caller's transaction, so the poller can
commit the filing and its progress together. The rules, in order:

1. a Message-ID already logged is a duplicate: nothing happens;
2. a bounce (RFC 3464 or the plain-text reports of common mail servers, see
   :mod:`crmkit.mail.bounce`) marks the addresses that failed for good; a
   delay notice marks nobody; a spam complaint (ARF) opts the complainer
   out; none of them opens a case or makes a contact;
3. the sender is matched to a contact by address (``+tags`` ignored if
   asked), then to a lead; otherwise a contact (or lead) is made, tied to
   the account whose domain the address is at;
4. automatic mail (RFC 3834: Auto-Submitted, Precedence, List-Id,
   mailer-daemon, noreply, out-of-office) is logged and opens no case; so
   is a request to unsubscribe, which sets ``opt_out``;
5. a reply joins its case: by In-Reply-To/References to any Message-ID on a
   case (mail crmkit sent included), else by a ``[CASE-12]`` token in the
   subject, only when the sender is already on that case; a resolved or
   closed case re-opens;
6. otherwise a new case opens, unless the sender has opened too many lately
   (a runaway auto-responder).
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any

from crmkit.errors import CrmkitError
from crmkit.mail.bounce import Report, addresses_to_mark
from crmkit.mail.message import ParsedMessage, automatic_reason
from crmkit.records.matching import FREE_MAIL_DOMAINS
from crmkit.store import Store

__all__ = ["Filed", "InboxRules", "case_token", "clean_subject", "file_message", "priority_of"]

_CASE_TOKEN = re.compile(r"\[\s*(CASE-\d+)\s*\]", re.I)
_REPLY_PREFIX = re.compile(
    r"^\s*((re|fw|fwd|aw|wg|tr|sv|vs|antw|rif|r|odp|trả lời|chuyển tiếp)\s*(\[\d+\])?\s*:\s*)+", re.I
)
_UNSUBSCRIBE = re.compile(
    r"\b(unsubscribe|opt[ -]?out|remove me from|stop (sending|emailing))\b"
    r"|h(ủy|uỷ) đăng k[ýí]|không nhận (thư|email)",
    re.I,
)
_CLOSED = ("resolved", "closed")
STATE = "mail"


@dataclass(frozen=True)
class InboxRules:
    """How the support inbox files mail; ``[imap]`` settings in crmkit.toml."""

    unknown_sender: str = "contact"  # or "lead": what an unknown sender becomes
    ignore_plus_tags: bool = True  # ana+billing@x.com is ana@x.com
    urgent_keywords: tuple[str, ...] = ("urgent", "asap", "emergency", "khẩn", "gấp", "срочно", "紧急")
    high_keywords: tuple[str, ...] = ("important", "quan trọng", "важно")
    own_addresses: tuple[str, ...] = ()  # the mailbox's own addresses: their mail is never a customer's
    max_new_cases: int = 5  # per sender per window: more is a loop, not a customer
    rate_window: timedelta = timedelta(hours=1)
    acknowledge: bool = False
    ack_window: timedelta = timedelta(hours=24)  # at most one acknowledgement per sender per window
    #: every message is the team's own: the Sent folder's rules (logged as email_out, no case)
    outgoing: bool = False


@dataclass
class Filed:
    """What filing one message did."""

    action: (
        str  # new_case, joined_case, reopened_case, logged, duplicate, bounce, complaint, unsubscribed, sent
    )
    message_id: str | None
    activity: str | None = None
    person: str | None = None  # the contact or lead the message was logged on
    case: str | None = None
    acknowledge: bool = False  # the poller should acknowledge the new case to the sender
    notes: list[str] = field(default_factory=list)
    #: why the message opened no case when a person's mail would have: the rule that held it back
    held: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "action": self.action,
            "held": self.held,
            "message_id": self.message_id,
            "activity": self.activity,
            "person": self.person,
            "case": self.case,
            "acknowledge": self.acknowledge,
            "notes": self.notes,
        }


def clean_subject(subject: str) -> str:
    """A case's subject from a message's: no Re:/Fwd: prefixes and no case token."""
    subject = _CASE_TOKEN.sub("", subject)
    subject = _REPLY_PREFIX.sub("", subject)
    return re.sub(r"\s+", " ", subject).strip() or "(no subject)"


def case_token(subject: str) -> str | None:
    match = _CASE_TOKEN.search(subject)
    return match.group(1).upper() if match else None


def _fold(text: str) -> str:
    return unicodedata.normalize("NFC", text).casefold()


@lru_cache(maxsize=32)
def _keyword_pattern(keywords: tuple[str, ...]) -> re.Pattern[str]:
    """Any of the keywords as a whole word (not "urgently" for "urgent")."""
    alternatives = "|".join(re.escape(_fold(k)) for k in keywords)
    return re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")


def priority_of(parsed: ParsedMessage, rules: InboxRules) -> str:
    """urgent, high, normal or low: from keywords in the subject and text, then the priority headers."""
    words = _fold(f"{parsed.subject}\n{parsed.new_text[:2000]}")

    def has(keywords: tuple[str, ...]) -> bool:
        return bool(keywords) and _keyword_pattern(keywords).search(words) is not None

    if has(rules.urgent_keywords):
        return "urgent"
    headers = {k: v.lower() for k, v in parsed.headers.items()}
    importance = headers.get("importance", "") or headers.get("x-msmail-priority", "")
    x_priority = headers.get("x-priority", "").strip()[:1]
    if headers.get("priority", "") == "urgent":
        return "urgent"
    if importance == "high" or x_priority in ("1", "2") or has(rules.high_keywords):
        return "high"
    if importance == "low" or x_priority in ("4", "5") or headers.get("priority", "") == "non-urgent":
        return "low"
    return "normal"


def _address_key(address: str, rules: InboxRules) -> str:
    local, _, domain = address.lower().rpartition("@")
    if rules.ignore_plus_tags and "+" in local:
        local = local.split("+", 1)[0]
    return f"{local}@{domain}"


def _find_person(store: Store, address: str, rules: InboxRules) -> dict[str, Any] | None:
    candidates = [address]
    key = _address_key(address, rules)
    if key != address:
        candidates.append(key)
    for table in ("contacts", "leads"):
        for candidate in candidates:
            found = store.find_by_email(table, candidate)
            if found:
                return found[0]
    return None


def _new_person(store: Store, parsed: ParsedMessage, rules: InboxRules, actor: str) -> dict[str, Any] | None:
    assert parsed.sender is not None
    local, _, domain = parsed.sender.rpartition("@")
    name = parsed.sender_name.strip() or local
    # with ignore_plus_tags the person is ana@x.com, whatever +tag this mail came through
    data: dict[str, Any] = {"name": name, "email": _address_key(parsed.sender, rules), "source": "email"}
    table = "leads" if rules.unknown_sender == "lead" else "contacts"
    if table == "contacts" and domain not in FREE_MAIL_DOMAINS:
        accounts = store.find_accounts(domain=domain)
        if accounts:
            data["account"] = accounts[0]["id"]  # a new address at a known customer
    elif table == "leads" and domain not in FREE_MAIL_DOMAINS:
        accounts = store.find_accounts(domain=domain)
        if accounts:
            data["company"] = accounts[0].get("name")
    try:
        return store.add(table, data, actor=actor)
    except CrmkitError:
        return None  # an address the schema refuses: the mail is still logged and filed


def _thread_case(store: Store, parsed: ParsedMessage) -> str | None:
    for mid in parsed.thread_ids:
        for activity in store.find_by_message_id(mid):
            if activity.get("case") and store.exists(activity["case"]):
                return str(activity["case"])
    return None


def _token_case(store: Store, parsed: ParsedMessage, person: dict[str, Any] | None) -> str | None:
    """A ``[CASE-12]`` token counts only for a sender already on that case."""
    token = case_token(parsed.subject)
    if token is None or not store.exists(token):
        return None
    case = store.get(token)
    if person is not None and case.get("contact") == person["id"]:
        return token
    sender = parsed.sender
    for activity in store.linked("activities", "case", token):  # by index: a busy store has many
        if sender and activity.get("sender") == sender:
            return token
    return None


def _recent(times: list[str], now: datetime, window: timedelta) -> list[str]:
    return [t for t in times if now - datetime.fromisoformat(t) < window]


def _act_on_report(store: Store, report: Report, filed: Filed, actor: str) -> None:
    """Mark the addresses a bounce says failed for good, or opt out the people who complained.

    Of a recipient's addresses (the one crmkit mailed, Original-Recipient, Final-Recipient),
    the one that is a contact's is marked: that is the address crmkit sent to.
    """
    if report.kind == "delay":
        filed.notes.append(f"delivery delayed ({report.format}): no address marked")
        return
    known = {
        address
        for recipient in report.recipients
        for address in (recipient.address, recipient.original)
        if address and store.find_by_email("contacts", address)
    }
    filed.action = "complaint" if report.kind == "complaint" else "bounce"
    for address in addresses_to_mark(report, known):
        for contact in store.find_by_email("contacts", address):
            if report.kind == "complaint":
                if not contact.get("opt_out"):
                    store.update(contact["id"], {"opt_out": True}, actor=actor)
                filed.notes.append(
                    f"{contact['id']} {address} complained ({report.feedback_type or 'abuse'}): opted out"
                )
            else:
                if contact.get("email_status") != "bounced":
                    store.update(contact["id"], {"email_status": "bounced"}, actor=actor)
                filed.notes.append(f"{contact['id']} {address} bounced")
            filed.person = filed.person or contact["id"]


def file_message(
    store: Store,
    parsed: ParsedMessage,
    *,
    raw_message: str | None = None,
    attachments: list[dict[str, Any]] | None = None,
    rules: InboxRules | None = None,
    now: datetime | None = None,
    actor: str = "poller",
) -> Filed:
    """File one message; see the module docstring. Call it inside a store transaction.

    With ``rules.outgoing`` (the Sent folder) the message is the team's own; so is mail
    from the mailbox's own addresses wherever it is found.
    """
    rules = rules or InboxRules()
    now = now or datetime.now(UTC)
    filed = Filed("logged", parsed.message_id)
    if parsed.message_id:
        same = _same_message(store, parsed, raw_message)
        if same is not None:
            filed.action, filed.activity = "duplicate", same
            return filed
        if store.find_by_message_id(parsed.message_id, archived=True) or store.find_by_message_id(
            parsed.message_id
        ):
            filed.notes.append(f"another message already used Message-ID {parsed.message_id}")
    sender = parsed.sender
    own = {a.lower() for a in rules.own_addresses}
    if rules.outgoing or (sender and sender in own):
        return _file_outgoing(store, parsed, filed, raw_message, attachments, actor, now)
    automatic = automatic_reason(parsed)

    report = parsed.report
    if report is not None:
        # A bounce, a delay notice or a spam complaint: never a case, never a new contact.
        _act_on_report(store, report, filed, actor)
        filed.held = {"failure": "bounce", "delay": "delay notice", "complaint": "complaint"}[report.kind]
        filed.activity = _log(store, parsed, filed, None, raw_message, attachments, actor, now)["id"]
        return filed

    person = _find_person(store, sender, rules) if sender else None
    if person is None and sender and not automatic:
        person = _new_person(store, parsed, rules, actor)
        if person is not None:
            kind = "lead" if person["id"].startswith("L-") else "contact"
            filed.notes.append(f"new {kind} {person['id']}")
    filed.person = person["id"] if person else None

    if sender is None:
        automatic = "no sender address"  # nobody to answer, and no one to tie a case to
    if automatic:
        filed.notes.append(f"automatic mail ({automatic}): no case")
        filed.held = "no sender address" if sender is None else "automatic mail"
        filed.activity = _log(store, parsed, filed, None, raw_message, attachments, actor, now)["id"]
        return filed

    case_id = _thread_case(store, parsed) or _token_case(store, parsed, person)
    if case_id is None and person is not None and _asks_to_unsubscribe(store, parsed):
        filed.action = "unsubscribed"
        if not person.get("opt_out"):
            store.update(person["id"], {"opt_out": True}, actor=actor)
        filed.activity = _log(store, parsed, filed, None, raw_message, attachments, actor, now)["id"]
        return filed

    # one person's +tags count as one sender: the limits must not be dodged by ana+1@, ana+2@...
    state_key = f"sender:{_address_key(sender, rules)}" if sender else ""
    history = {k: v for k, v in (store.state(STATE, state_key) or {}).items() if k != "key"} if sender else {}
    if case_id is not None:
        case = store.get(case_id)
        if case.get("status") in _CLOSED:
            store.update(case_id, {"status": "open"}, actor=actor)
            filed.action = "reopened_case"
        else:
            if case.get("status") == "pending":  # it waited on the customer, who answered
                store.update(case_id, {"status": "open"}, actor=actor)
            filed.action = "joined_case"
        filed.case = case_id
    else:
        opened = _recent(history.get("cases", []), now, rules.rate_window)
        if len(opened) >= rules.max_new_cases:
            filed.notes.append(
                f"{sender} opened {len(opened)} cases within {rules.rate_window}: logged, no new case"
            )
            filed.action, filed.held = "logged", "per-sender limit"
        else:
            case = store.add(
                "cases",
                {
                    "subject": clean_subject(parsed.subject),
                    "contact": person["id"] if person and person["id"].startswith("C-") else None,
                    "account": person.get("account") if person and person["id"].startswith("C-") else None,
                    "origin": "email",
                    "priority": priority_of(parsed, rules),
                    "description": parsed.new_text,
                },
                actor=actor,
            )
            filed.action, filed.case = "new_case", case["id"]
            history["cases"] = [*opened, now.isoformat()]
            acked = _recent([history["ack"]] if history.get("ack") else [], now, rules.ack_window)
            if rules.acknowledge and sender and not acked:
                filed.acknowledge = True
                history["ack"] = now.isoformat()
    if sender and history:
        store.set_state(STATE, state_key, history)
    filed.activity = _log(store, parsed, filed, filed.case, raw_message, attachments, actor, now)["id"]
    return filed


def _file_outgoing(
    store: Store,
    parsed: ParsedMessage,
    filed: Filed,
    raw_message: str | None,
    attachments: list[dict[str, Any]] | None,
    actor: str,
    now: datetime,
) -> Filed:
    """The team's own mail: logged as ``email_out`` on the contact it went to, joined to its case.

    It opens no case and makes no contact. Joined to a case (by In-Reply-To/References, or
    by the case token when the case's contact is among the recipients), it is the team's
    answer: the case's first response time is set once, and a new or open case waits on
    the customer (pending).
    """
    filed.action = "sent"
    recipients = [*parsed.to, *parsed.cc]
    ours: list[str] = []  # every contact it went to, once, in the order of the headers
    for address in recipients:
        ours += [c["id"] for c in store.find_by_email("contacts", address) if c["id"] not in ours]
    case_id = _thread_case(store, parsed)
    token = case_token(parsed.subject)
    if case_id is None and token and store.exists(token) and store.get(token).get("contact") in ours:
        case_id = token
    case = store.get(case_id) if case_id is not None else None
    if case is not None and case.get("contact") in ours:  # the case's own contact first
        ours.insert(0, ours.pop(ours.index(case["contact"])))
    filed.person = ours[0] if ours else None
    if case is not None and case_id is not None:
        filed.case = case_id
        changes: dict[str, Any] = {}
        if not case.get("first_response_at"):
            changes["first_response_at"] = (parsed.date or now).isoformat()
        if case.get("status") in ("new", "open"):
            changes["status"] = "pending"
        if changes:
            store.update(case_id, changes, actor=actor, allow_system=True)
            filed.notes.append(f"answer on {case_id}")
    filed.activity = _log(
        store, parsed, filed, case_id, raw_message, attachments, actor, now, kind="email_out"
    )["id"]
    for other in ours[1:]:  # on each recipient's timeline too; the case counts the answer once
        _log(store, parsed, filed, None, raw_message, attachments, actor, now, kind="email_out", person=other)
    return filed


def _same_message(store: Store, parsed: ParsedMessage, raw_message: str | None) -> str | None:
    """The activity that logged this very message already (archived ones too), if any.

    Message-ID is the key, but some mailers reuse one: only the same bytes, or the
    same sender and subject, count as the same message.
    """
    assert parsed.message_id is not None
    for activity in [
        *store.find_by_message_id(parsed.message_id),
        *store.find_by_message_id(parsed.message_id, archived=True),
    ]:
        if raw_message is not None and activity.get("raw_message") == raw_message:
            return str(activity["id"])
        if activity.get("kind") == "email_in" and (activity.get("sender"), activity.get("subject")) == (
            parsed.sender,
            parsed.subject or "(no subject)",
        ):
            return str(activity["id"])
        if activity.get("kind") == "email_out":
            return str(activity["id"])  # crmkit's own mail coming back (a copy in the inbox)
    return None


def _answers_our_mail(store: Store, parsed: ParsedMessage) -> bool:
    """Does this reply to mail crmkit sent without a case (a campaign)?"""
    for mid in parsed.thread_ids:
        for activity in store.find_by_message_id(mid):
            if activity.get("kind") == "email_out" and not activity.get("case"):
                return True
    return False


def _asks_to_unsubscribe(store: Store, parsed: ParsedMessage) -> bool:
    """A short reply to our mail asking to stop, or a subject that is only that request."""
    if _UNSUBSCRIBE.fullmatch(clean_subject(parsed.subject).strip(" .!")):
        return True
    text = parsed.new_text.strip()
    return len(text) <= 200 and bool(_UNSUBSCRIBE.search(text)) and _answers_our_mail(store, parsed)


def _log(
    store: Store,
    parsed: ParsedMessage,
    filed: Filed,
    case_id: str | None,
    raw_message: str | None,
    attachments: list[dict[str, Any]] | None,
    actor: str,
    now: datetime,
    *,
    kind: str = "email_in",
    person: str | None = None,
) -> dict[str, Any]:
    person = person or filed.person
    data: dict[str, Any] = {
        "kind": kind,
        "subject": parsed.subject or "(no subject)",
        "body": parsed.new_text,
        "date": (parsed.date or now).isoformat(),
        "sender": parsed.sender,
        "recipients": ", ".join([*parsed.to, *parsed.cc]) or None,
        "message_id": parsed.message_id,
        "case": case_id,
        "attachments": attachments or None,
        "raw_message": raw_message,
    }
    if person and person.startswith("L-"):
        data["lead"] = person
    elif person:
        data["contact"] = person
        account = store.get(person).get("account")
        if account:
            data["account"] = account
    values = {k: v for k, v in data.items() if v is not None}
    return store.add("activities", values, allow_system=True, actor=actor)
