"""Mail-merge campaigns: render a template for a segment and send each person their own message.

Three steps, each usable alone:

1. :func:`plan_campaign` picks the audience (:mod:`crmkit.mail.audience`),
   renders every message (:mod:`crmkit.mail.template`) and checks addresses and
   attachments. Any problem for any recipient is reported before anything is
   sent.
2. :func:`compose` writes one planned message's bytes (:mod:`crmkit.mail.compose`)
   with its Message-ID, Date and ``List-Unsubscribe`` headers; a dry run shows
   or saves these and stops.
3. :func:`send_campaign` sends over one reused SMTP connection, at a rate and
   within a daily quota, and keeps the campaign's journal
   (:mod:`crmkit.mail.journal`), so that a run stopped at any point can be run
   again: it sends only to those not sent yet, and never twice to anyone.
"""

from __future__ import annotations

import contextlib
import heapq
import re
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import formatdate, parseaddr
from functools import lru_cache
from pathlib import Path
from typing import Any
from urllib.parse import quote

from crmkit.errors import CrmkitError
from crmkit.mail.audience import Audience, Recipient, select_audience, skip_reason
from crmkit.mail.compose import AddressError, Attachment, build_message, format_address, parse_addresses
from crmkit.mail.journal import CAMPAIGNS, CampaignJournal, check_name, recover_if_idle, sends_of, sent_on
from crmkit.mail.smtp import SendError, SMTPSender
from crmkit.mail.template import MergeTemplate, Rendered, RenderError
from crmkit.store import Store

__all__ = [
    "PLACEHOLDER_SENDER",
    "CampaignProblems",
    "MergeReport",
    "Plan",
    "Planned",
    "Rate",
    "compose",
    "dry_run",
    "parse_rate",
    "plan_campaign",
    "send_campaign",
]

#: Attachments larger than this in one message are refused before sending (providers cap at 20-25 MB).
MAX_ATTACHMENT_BYTES = 20 * 1024 * 1024
#: Seconds between the tries of a message answered 4xx, within one run; later runs try again.
RETRY_DELAYS = (2.0, 10.0, 30.0)
#: Seconds between checkpoints of the journal into the store.
CHECKPOINT_EVERY = 2.0
#: The From of a dry run's messages when no sender is set yet (.invalid: it can never be mailed).
PLACEHOLDER_SENDER = "sender-not-set@example.invalid"


class CampaignProblems(CrmkitError):
    """Some messages cannot be made; nothing was sent. ``problems`` lists each (record id first)."""

    def __init__(self, problems: list[str]) -> None:
        shown = "\n  ".join(problems[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        counted = f"{len(problems)} problem{'' if len(problems) == 1 else 's'}"
        super().__init__(f"{counted}, nothing was sent:\n  {shown}{more}")
        self.problems = problems


@dataclass(frozen=True)
class Rate:
    """At most ``count`` messages per ``seconds``, spread evenly."""

    count: int
    seconds: float

    @property
    def interval(self) -> float:
        return self.seconds / self.count


_UNITS = {
    "s": 1.0,
    "sec": 1.0,
    "second": 1.0,
    "m": 60.0,
    "min": 60.0,
    "minute": 60.0,
    "h": 3600.0,
    "hour": 3600.0,
    "d": 86400.0,
    "day": 86400.0,
}


def parse_rate(text: str) -> Rate:
    """``30/min``, ``2/s``, ``500/hour`` or ``10000/day``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*([a-z]+?)s?\s*", text.lower())
    if not match or match.group(2) not in _UNITS or int(match.group(1)) < 1:
        raise CrmkitError(
            f"rate {text!r}: write a count per unit, such as 30/min, 2/s, 500/hour or 10000/day"
        )
    return Rate(int(match.group(1)), _UNITS[match.group(2)])


@dataclass
class Planned:
    """One recipient's message, rendered and checked, ready to be written and sent."""

    recipient: Recipient
    rendered: Rendered
    headers: list[tuple[str, str]]  # From, To, Cc, Reply-To, Subject, X-...; Date and Message-ID come later
    envelope_from: str
    envelope_to: list[str]  # To, Cc and Bcc
    attachments: list[Path]
    utf8: bool  # an address needs SMTPUTF8

    @property
    def to_header(self) -> str:
        return dict(self.headers).get("To", "")


@dataclass
class Plan:
    name: str
    template: MergeTemplate
    audience: Audience
    messages: list[Planned]
    domain: str  # for Message-IDs
    unsubscribe: list[str]  # List-Unsubscribe URIs; {record}, {email} and {campaign} filled per person
    one_click: bool
    placeholder_sender: bool = False  # a dry run without a sender: From is PLACEHOLDER_SENDER


@dataclass
class MergeReport:
    """What a run did (or, dry, would do)."""

    campaign: str
    dry_run: bool
    recipients: int = 0  # in the audience, to be mailed
    sent: int = 0
    already_sent: int = 0
    failed: list[dict[str, Any]] = field(default_factory=list)
    uncertain: list[dict[str, Any]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    remaining: int = 0  # not tried yet (a quota or a stop)
    stopped: str | None = None  # why the run ended before everyone was tried
    error: bool = False  # stopped by a failure (the server went away), not by the quota

    @property
    def needs_attention(self) -> bool:
        return bool(self.failed or self.uncertain)

    def as_json(self) -> dict[str, Any]:
        return {
            "campaign": self.campaign,
            "dry_run": self.dry_run,
            "recipients": self.recipients,
            "sent": self.sent,
            "already_sent": self.already_sent,
            "failed": self.failed,
            "uncertain": self.uncertain,
            "skipped": self.skipped,
            "remaining": self.remaining,
            "stopped": self.stopped,
            "error": self.error,
        }


# -- planning -----------------------------------------------------------------------------------


def _attachment_path(folder: Path, name: str) -> Path:
    """``name`` inside ``folder``; raises CrmkitError for a file outside it, missing, or not a file."""
    root = folder.resolve()
    try:
        path = (root / name).resolve()
        if not path.is_relative_to(root):
            raise CrmkitError(f"attachment {name} is outside the attachment folder {root}")
        if not path.is_file():
            raise CrmkitError(f"attachment {name} not found in {root}")
    except OSError as exc:  # a name too long, a loop of links...
        raise CrmkitError(f"attachment {name[:100]}: {exc.strerror or exc}") from None
    return path


def _addresses(header: str, value: str) -> list[tuple[str, str]]:
    try:
        return list(_parsed_addresses(value))
    except AddressError as exc:
        raise CrmkitError(f"{header}: {exc}") from None


@lru_cache(maxsize=1024)
def _parsed_addresses(value: str) -> tuple[tuple[str, str], ...]:
    return tuple(parse_addresses(value))  # the same From (or Cc) in every message: parsed once


def _plan_one(
    person: Recipient, rendered: Rendered, *, from_header: str, attachments_folder: Path
) -> Planned:
    headers: list[tuple[str, str]] = []
    envelope_to: list[str] = []
    sender = _addresses("From", rendered.headers.get("From", from_header))
    if len(sender) != 1:
        raise CrmkitError("From: must be one address")
    headers.append(("From", format_address(*sender[0])))
    to_text = rendered.headers.get("To")
    to = _addresses("To", to_text) if to_text else [(person.name, person.email or "")]
    for header, pairs in (("To", to), ("Cc", None), ("Bcc", None), ("Reply-To", None)):
        if pairs is None:
            value = rendered.headers.get(header)
            pairs = _addresses(header, value) if value else []
        if not pairs:
            continue
        if header != "Reply-To":
            envelope_to.extend(address for _, address in pairs)
        if header != "Bcc":  # Bcc recipients are in the envelope only
            headers.append((header, ", ".join(format_address(n, a) for n, a in pairs)))
    headers.append(("Subject", rendered.headers.get("Subject", "")))
    headers.extend((key, value) for key, value in rendered.headers.items() if key.lower().startswith("x-"))
    paths = [_attachment_path(attachments_folder, name) for name in rendered.attachments]
    size = sum(path.stat().st_size for path in paths)
    if size > MAX_ATTACHMENT_BYTES:
        raise CrmkitError(f"attachments of {size / 1e6:.1f} MB (at most {MAX_ATTACHMENT_BYTES / 1e6:.0f} MB)")
    envelope_to = list(dict.fromkeys(envelope_to))
    addresses = [sender[0][1], *envelope_to]
    return Planned(
        recipient=person,
        rendered=rendered,
        headers=headers,
        envelope_from=sender[0][1],
        envelope_to=envelope_to,
        attachments=paths,
        utf8=not all(address.isascii() for address in addresses),
    )


def plan_campaign(
    store: Store,
    template: MergeTemplate,
    *,
    name: str,
    to: str = "contacts",
    where: Sequence[str] = (),
    limit: int | None = None,
    from_address: str | None = None,
    attachments_folder: Path | None = None,
    unsubscribe_address: str | None = None,
    unsubscribe_url: str | None = None,
    audience: Audience | None = None,
    one_template: bool = True,
    dry_run: bool = False,
) -> Plan:
    """Pick the audience and render every message; raises :class:`CampaignProblems` if any fails.

    ``audience`` replaces the segment (``to``, ``where``, ``limit``): invoice
    reminders pass their own, one recipient per invoice. ``one_template``: the
    campaign's name belongs to the first template file it was sent from
    (reminders, whose journal spans templates, pass False).

    ``from_address`` is used when the template has no From (crmkit.toml's
    ``[smtp] from``). Attachments are looked up in ``attachments_folder``
    (default: the template's folder) and must lie inside it. With neither,
    sending is refused; a ``dry_run`` plan uses :data:`PLACEHOLDER_SENDER`
    instead (and says so in ``placeholder_sender``), so a campaign can be
    tried before crmkit.toml has an [smtp] table.
    """
    check_name(name)
    placeholder = not template.header("From") and not from_address
    if placeholder and not dry_run:
        raise CrmkitError('no sender: give the template a From header, or set [smtp] from = "Name <a@b>"')
    if placeholder:
        from_address = PLACEHOLDER_SENDER
    saved = store.state(CAMPAIGNS, name)
    if one_template and saved and saved.get("template") and saved["template"] != template_key(template):
        raise CrmkitError(
            f"campaign {name!r} was sent from {saved['template']}, not {template_key(template)}: "
            "give this template its own --name (a template edited in place is fine)"
        )
    folder = attachments_folder or Path(template.name).parent
    recover_if_idle(store, name)  # what a killed run sent counts as sent
    sent = {
        doc["record"]: str(doc.get("address") or "")
        for doc in sends_of(store, name)
        if doc.get("status") == "sent"
    }
    if audience is None:
        audience = select_audience(store, to=to, where=where, limit=limit, sent=sent)
    else:
        audience.already_sent = [p for p in audience.recipients if p.key in sent]
        audience.recipients = [p for p in audience.recipients if p.key not in sent]
    messages: list[Planned] = []
    problems: list[str] = []
    for person in audience.recipients:
        try:
            rendered = template.render(person.context)
            messages.append(
                _plan_one(person, rendered, from_header=from_address or "", attachments_folder=folder)
            )
        except (RenderError, CrmkitError) as exc:
            about = f"{person.key}, " if person.key != person.record_id else ""  # e.g. the invoice reminded
            problems.append(f"{about}{person.record_id} ({person.email}): {exc}")
    if problems:
        raise CampaignProblems(problems)
    sender = messages[0].envelope_from if messages else parseaddr(from_address or "")[1]
    domain = _ascii_domain(sender.rpartition("@")[2])
    unsubscribe = [f"mailto:{_mailto(unsubscribe_address or sender)}?subject=unsubscribe"]
    if unsubscribe_url:
        unsubscribe.append(unsubscribe_url)
    return Plan(
        name,
        template,
        audience,
        messages,
        domain,
        unsubscribe,
        one_click=bool(unsubscribe_url),
        placeholder_sender=placeholder,
    )


def template_key(template: MergeTemplate) -> str:
    """How a campaign's journal names its template: the file's full path."""
    return str(Path(template.name).resolve())


def _ascii_domain(domain: str) -> str:
    """A domain as headers carry it: IDNA (``xn--``) for an internationalised one."""
    try:
        return domain.encode("idna").decode("ascii") if domain else "crmkit.invalid"
    except UnicodeError:
        return "crmkit.invalid"


def _mailto(address: str) -> str:
    """An address in a mailto: URI (RFC 6068): the local part percent-encoded, the domain IDNA."""
    local, _, domain = address.rpartition("@")
    return f"{quote(local, safe='.-_+')}@{_ascii_domain(domain)}"


def new_message_id(plan: Plan, record_id: str) -> str:
    return f"<{secrets.token_hex(8)}.{record_id}@{plan.domain}>"


def compose(plan: Plan, message: Planned, *, message_id: str, now: datetime | None = None) -> bytes:
    """The bytes of one planned message, with its Date, Message-ID and unsubscribe headers."""
    person = message.recipient
    fill = {
        "record": quote(person.record_id),
        "email": quote(person.email or ""),
        "campaign": quote(plan.name),
    }
    links = [
        uri.replace("{record}", fill["record"])
        .replace("{email}", fill["email"])
        .replace("{campaign}", fill["campaign"])
        for uri in plan.unsubscribe
    ]
    headers = [
        *message.headers,
        ("Date", formatdate((now or datetime.now(UTC)).timestamp(), usegmt=True)),
        ("Message-ID", message_id),
        ("List-Unsubscribe", ", ".join(f"<{link}>" for link in links)),
    ]
    if plan.one_click:
        headers.append(("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"))  # RFC 8058
    attachments = [Attachment(path.name, _read(path)) for path in message.attachments]
    return build_message(headers, message.rendered.text, html=message.rendered.html, attachments=attachments)


_FILE_CACHE: dict[Path, tuple[float, bytes]] = {}
_FILE_CACHE_BYTES = 32 * 1024 * 1024


def _read(path: Path) -> bytes:
    """A file's bytes, read once per run for a brochure every message carries (not per-person files)."""
    mtime = path.stat().st_mtime
    cached = _FILE_CACHE.get(path)
    if cached is None or cached[0] != mtime:
        cached = (mtime, path.read_bytes())
        if sum(len(data) for _, data in _FILE_CACHE.values()) + len(cached[1]) > _FILE_CACHE_BYTES:
            _FILE_CACHE.clear()
        _FILE_CACHE[path] = cached
    return cached[1]


def dry_run(
    store: Store, plan: Plan, *, preview: int = 3, out: Path | None = None
) -> tuple[MergeReport, list[tuple[str, bytes]]]:
    """What sending would do, and the first ``preview`` messages as (record id, bytes); sends nothing.

    With ``out``, every message of the run is also written there, one ``<record id>.eml`` each.
    """
    report = MergeReport(plan.name, dry_run=True, recipients=len(plan.messages))
    report.skipped = plan.audience.skipped_by_reason()
    report.already_sent = len(plan.audience.already_sent)
    previews = []
    for number, message in enumerate(plan.messages):
        if out is None and number >= preview:
            break
        record_id = message.recipient.key
        data = compose(plan, message, message_id=new_message_id(plan, record_id))
        if number < preview:
            previews.append((record_id, data))
        if out is not None:
            _write_eml(out, record_id, data)
    return report, previews


def _write_eml(folder: Path, record_id: str, data: bytes) -> None:
    try:
        folder.mkdir(parents=True, exist_ok=True)
        (folder / f"{record_id}.eml").write_bytes(data)
    except OSError as exc:
        raise CrmkitError(f"cannot write {record_id}.eml to {folder}: {exc.strerror or exc}") from None


# -- sending ------------------------------------------------------------------------------------


@dataclass(order=True)
class _Retry:
    due: float
    order: int
    message: Planned = field(compare=False)
    attempt: int = field(compare=False)


def send_campaign(
    store: Store,
    plan: Plan,
    sender: SMTPSender,
    *,
    rate: Rate | None = None,
    per_day: int | None = None,
    resend_uncertain: bool = False,
    retry_failed: bool = False,
    retry_delays: Sequence[float] = RETRY_DELAYS,
    on_progress: Callable[[int], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> MergeReport:
    """Send the planned messages that the journal says are still to send; the run's report.

    Already sent: never again. ``uncertain`` (perhaps delivered): only with
    ``resend_uncertain``, with the same Message-ID. Failed: permanently
    refused ones only with ``retry_failed``; temporary (4xx) ones are tried
    again by every run. ``on_progress(n)`` is called after each message.
    """
    report = MergeReport(plan.name, dry_run=False, recipients=len(plan.messages))
    report.skipped = plan.audience.skipped_by_reason()
    report.already_sent = len(plan.audience.already_sent)
    with CampaignJournal(store, plan.name) as journal:
        journal.start(
            {"template": template_key(plan.template), "subject": plan.template.header("Subject")},
            [(m.recipient.key, m.recipient.email or "") for m in plan.messages],
        )
        run = _Run(store, plan, sender, journal, report, rate, per_day, retry_delays, on_progress, sleep)
        todo: list[Planned] = []
        for message in plan.messages:
            record_id = message.recipient.key
            entry = journal.entry(record_id) or {}
            status = entry.get("status")
            if status == "sent":  # by a run that was still going when this one was planned
                report.already_sent += 1
                continue
            if status == "uncertain" and not resend_uncertain:
                report.uncertain.append(_problem(message, entry.get("answer", ""), earlier=True))
                continue
            if status == "failed" and not (retry_failed or entry.get("temporary")):
                report.failed.append(
                    _problem(message, entry.get("answer", ""), entry.get("code"), earlier=True)
                )
                continue
            if entry.get("message_id"):  # tried before, perhaps delivered: the same Message-ID again
                run.first_ids[record_id] = entry["message_id"]
            if entry.get("delivered"):  # a Cc or Bcc who has it already
                run.delivered[record_id] = set(entry["delivered"])
            todo.append(message)
        try:
            run.go(todo)
        except CrmkitError as exc:  # the server went away: report how far the run got
            report.stopped = str(exc)
            report.error = True
            report.remaining = len(run.queue) + run.retrying
    return report


def _problem(
    message: Planned, answer: str, code: int | None = None, *, earlier: bool = False
) -> dict[str, Any]:
    """A failed or uncertain recipient; ``earlier``: left so by an earlier run, not tried again now."""
    return {
        "record": message.recipient.key,
        "address": message.recipient.email,
        "answer": answer,
        "code": code,
        "earlier": earlier,
    }


class _Run:
    """One sending run: the queue, retries, the rate, the quota and the checkpoints."""

    def __init__(
        self,
        store: Store,
        plan: Plan,
        sender: SMTPSender,
        journal: CampaignJournal,
        report: MergeReport,
        rate: Rate | None,
        per_day: int | None,
        retry_delays: Sequence[float],
        on_progress: Callable[[int], None] | None,
        sleep: Callable[[float], None],
    ) -> None:
        self.store, self.plan, self.sender, self.journal, self.report = store, plan, sender, journal, report
        self.rate, self.retry_delays, self.on_progress, self.sleep = rate, retry_delays, on_progress, sleep
        self.left_today = None if per_day is None else per_day - sent_on(store, datetime.now(UTC).date())
        self.next_slot = 0.0
        self.last_checkpoint = time.monotonic()
        self.last_error: dict[str, tuple[str, int | None]] = {}
        self.first_ids: dict[str, str] = {}  # record id -> the Message-ID it was (perhaps) sent with
        self.delivered: dict[str, set[str]] = {}  # record id -> Cc/Bcc addresses that have it already
        self.composed: dict[str, tuple[str, bytes]] = {}  # record id -> (Message-ID, bytes), made ahead
        self.queue: list[Planned] = []
        self.retrying = 0

    def go(self, todo: list[Planned]) -> None:
        retries: list[_Retry] = []
        queue = self.queue = list(reversed(todo))
        order = 0
        while queue or retries:
            self.retrying = len(retries)
            if self.left_today is not None and self.left_today <= 0:
                self.report.stopped = "the daily quota is reached: run again tomorrow to go on"
                self.report.remaining = len(queue) + len(retries)
                return
            now = time.monotonic()
            if retries and (retries[0].due <= now or not queue):
                item = heapq.heappop(retries)
                if item.due > now:
                    self.journal.checkpoint()
                    self.sleep(item.due - now)
                message, attempt = item.message, item.attempt
            else:
                message, attempt = queue.pop(), 0
            outcome = self._send(message)
            if outcome == "temporary" and attempt < len(self.retry_delays):
                order += 1
                due = time.monotonic() + self.retry_delays[attempt]
                heapq.heappush(retries, _Retry(due, order, message, attempt + 1))
                continue
            if outcome == "temporary":  # tried enough for this run; the next run tries again
                answer, code = self.last_error[message.recipient.key]
                self.report.failed.append(_problem(message, answer, code))
            if self.on_progress is not None:
                self.on_progress(1)
            if time.monotonic() - self.last_checkpoint > CHECKPOINT_EVERY:
                self.journal.checkpoint()
                self.last_checkpoint = time.monotonic()
        self.retrying = 0

    def _wait_for_slot(self) -> None:
        if self.rate is None:
            return
        now = time.monotonic()
        if self.next_slot > now:
            self.sleep(self.next_slot - now)
        self.next_slot = max(now, self.next_slot) + self.rate.interval

    def _compose(self, message: Planned) -> tuple[str, bytes]:
        record_id = message.recipient.key
        made = self.composed.pop(record_id, None)
        if made is None:
            message_id = self.first_ids.setdefault(record_id, new_message_id(self.plan, record_id))
            made = (message_id, compose(self.plan, message, message_id=message_id))
        return made

    def _idle(self) -> None:
        """Work done while the server answers a command (the wait is otherwise idle): write the
        next message, else validate a journaled send's activity ahead of the checkpoint."""
        # an error (an attachment gone) is left for the message's own turn, where it is reported
        with contextlib.suppress(Exception):
            if self.queue and not self.composed:
                upcoming = self.queue[-1]
                self.composed[upcoming.recipient.key] = self._compose(upcoming)
            else:
                self.journal.prepare()

    def _still_wanted(self, message: Planned) -> str | None:
        """Why this person must not be mailed now (opted out or bounced since the plan), if so."""
        doc = self.store.peek(message.recipient.record_id)
        return "no longer in the store" if doc is None else skip_reason(doc)

    def _send(self, message: Planned) -> str:
        """Send one message, journal the outcome; sent, failed, uncertain, skipped or temporary."""
        person = message.recipient
        record_id = person.key
        reason = self._still_wanted(message)
        if reason is not None:
            self.composed.pop(record_id, None)  # made ahead for nobody: let the next be made
            self.report.skipped[reason] = self.report.skipped.get(reason, 0) + 1
            return "skipped"
        try:
            message_id, data = self._compose(message)
        except OSError as exc:  # an attachment deleted or unreadable since the plan
            answer = f"not sent: cannot read an attachment ({exc.strerror or exc})"
            self.journal.failed(record_id, answer=answer)
            self.report.failed.append(_problem(message, answer))
            return "failed"
        recipients = [r for r in message.envelope_to if r not in self.delivered.get(record_id, ())]
        self._wait_for_slot()
        self.journal.sending(record_id, address=person.email or "", message_id=message_id)
        for attempt in range(3):
            try:
                refused = self.sender.deliver(
                    message.envelope_from,
                    recipients,
                    data,
                    utf8=message.utf8,
                    while_waiting=self._idle,
                )
            except SendError as exc:
                if exc.uncertain:
                    self.journal.uncertain(record_id, answer=str(exc))
                    self.report.uncertain.append(_problem(message, str(exc)))
                    self._count()
                    return "uncertain"
                if exc.code is None and attempt < 2:  # never handed over: connect again and resend
                    self.sleep(0.5 * (attempt + 1))
                    continue
                return self._refused(message, exc)
            except CrmkitError:  # the server could not be reached: nothing was handed over
                self.journal.queued(record_id)
                raise
            break
        else:  # pragma: no cover - the loop always returns or breaks
            raise AssertionError
        self._count()
        if person.email in refused:  # the others (Cc, Bcc) got it: a retry leaves them out
            answer = refused[person.email]
            code = int(answer[:3])
            got_it = [r for r in recipients if r not in refused]
            self.delivered.setdefault(record_id, set()).update(got_it)
            self.journal.failed(
                record_id, answer=answer, code=code, temporary=400 <= code < 500, delivered=got_it
            )
            self.last_error[record_id] = (answer, code)
            if 400 <= code < 500:
                return "temporary"
            self.report.failed.append(_problem(message, answer, code))
            return "failed"
        self.journal.sent(record_id, activity=self._activity(message, message_id), refused=refused or None)
        self.report.sent += 1
        return "sent"

    def _refused(self, message: Planned, exc: SendError) -> str:
        record_id = message.recipient.key
        if exc.code is None:  # the connection would not stay up: stop, the next run goes on
            self.journal.queued(record_id)
            self.queue.append(message)  # counted as remaining
            raise CrmkitError(f"sending stopped: {exc}") from None
        self.journal.failed(record_id, answer=str(exc), code=exc.code, temporary=exc.temporary)
        self.last_error[record_id] = (str(exc), exc.code)
        if exc.temporary:
            return "temporary"
        self.report.failed.append(_problem(message, str(exc), exc.code))
        return "failed"

    def _count(self) -> None:
        if self.left_today is not None:
            self.left_today -= 1

    def _activity(self, message: Planned, message_id: str) -> dict[str, Any]:
        person = message.recipient.record_id
        return {
            "lead" if person.upper().startswith("L-") else "contact": person,
            "kind": "email_out",
            "subject": message.rendered.headers.get("Subject"),
            "body": message.rendered.text,
            "date": datetime.now(UTC).isoformat(timespec="seconds"),
            "sender": message.envelope_from,
            "recipients": message.to_header,
            "message_id": message_id,
        }
