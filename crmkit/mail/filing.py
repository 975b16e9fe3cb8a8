"""Filing raw messages: keep their bytes, parse them, log them in the store; or set them aside.

Filing a message has two halves. :func:`prepare` parses the bytes and keeps
them (and the attachments) in the archive: no store, and named by content, so
doing it twice is harmless. :func:`file_prepared` then logs the message in the
store, inside the caller's transaction. :func:`file_raw` does both for one
message.

A large backlog is prepared in a second process (:class:`Preparer`) while
this one files the previous batch: parsing is most of the work and the
store's half cannot run in parallel, so on two cores the two halves overlap.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from crmkit.errors import CrmkitError, StoreError
from crmkit.mail.archive import MailArchive
from crmkit.mail.inbox import Filed, InboxRules, file_message
from crmkit.mail.message import ParsedMessage, parse_message
from crmkit.mail.prepare_worker import PreparerProcess
from crmkit.plural import counted
from crmkit.store import Store

__all__ = [
    "ACTOR",
    "PARALLEL_FROM",
    "Batch",
    "Outcome",
    "PollReport",
    "Prepared",
    "Preparer",
    "archive_error",
    "file_or_quarantine",
    "file_prepared",
    "file_raw",
    "prepare",
    "prepare_all",
    "quarantine",
    "reason",
    "synthetic_message_id",
]

log = logging.getLogger(__name__)

ACTOR = "poller"
#: A round with at least this many messages is prepared in a second process: below it,
#: starting that process (an interpreter and crmkit's mail modules, about 0.1 s) costs
#: more than it saves.
PARALLEL_FROM = 400


# -- the report ---------------------------------------------------------------------------------


@dataclass
class PollReport:
    """What one poll (or replay) did."""

    mailbox: str  # user@host:port/folder
    uidvalidity: int | None = None
    last_uid: int = 0
    uidvalidity_changed: bool = False
    counts: dict[str, int] = field(default_factory=dict)  # per filing action, and "quarantined"
    held: dict[str, int] = field(default_factory=dict)  # messages that opened no case, per rule
    mailbox_actions: dict[str, int] = field(default_factory=dict)  # "seen" / "moved": messages
    filed: list[Filed] = field(default_factory=list)
    quarantined: list[str] = field(default_factory=list)  # quarantine ids

    @property
    def messages(self) -> int:
        return sum(self.counts.values())

    @property
    def needs_attention(self) -> bool:
        """Some messages were quarantined: a person should look (exit code 3)."""
        return bool(self.quarantined)

    def add(self, filed: Filed) -> None:
        self.filed.append(filed)
        self.counts[filed.action] = self.counts.get(filed.action, 0) + 1
        if filed.held:
            self.held[filed.held] = self.held.get(filed.held, 0) + 1

    def add_quarantined(self, qid: str) -> None:
        if qid not in self.quarantined:
            self.quarantined.append(qid)
        self.counts["quarantined"] = self.counts.get("quarantined", 0) + 1

    def merge(self, other: PollReport) -> None:
        """Add a later round's results (``poll_idle`` reports every round together)."""
        for filed in other.filed:
            self.add(filed)
        for qid in other.quarantined:
            self.add_quarantined(qid)
        for action, n in other.mailbox_actions.items():
            self.mailbox_actions[action] = self.mailbox_actions.get(action, 0) + n
        self.uidvalidity = other.uidvalidity or self.uidvalidity
        self.last_uid = max(self.last_uid, other.last_uid)
        self.uidvalidity_changed = self.uidvalidity_changed or other.uidvalidity_changed

    def summary(self) -> str:
        """One line for people: how many messages, what became of them, and what held cases back."""
        parts = ", ".join(_counted(n, action) for action, n in sorted(self.counts.items()))
        line = f"{self.mailbox}: {_counted(self.messages, 'message')}" + (f" ({parts})" if parts else "")
        if self.held:
            most_first = sorted(self.held.items(), key=lambda kv: (-kv[1], kv[0]))
            reasons = ", ".join(f"{rule} {n}" for rule, n in most_first)
            line += f"; no case: {reasons}"
        if self.mailbox_actions:
            line += "; " + ", ".join(f"{n} {a}" for a, n in sorted(self.mailbox_actions.items()))
        return line

    def as_json(self) -> dict[str, Any]:
        return {
            "mailbox": self.mailbox,
            "uidvalidity": self.uidvalidity,
            "last_uid": self.last_uid,
            "uidvalidity_changed": self.uidvalidity_changed,
            "messages": self.messages,
            "counts": dict(sorted(self.counts.items())),
            "held": dict(sorted(self.held.items())),
            "mailbox_actions": self.mailbox_actions,
            "filed": [f.as_json() for f in self.filed],
            "quarantined": self.quarantined,
        }


#: How each filing action reads after a number (the summary line).
_NOUNS = {
    "message": ("message", "messages"),
    "new_case": ("new case", "new cases"),
    "joined_case": ("joined a case", "joined cases"),
    "reopened_case": ("reopened a case", "reopened cases"),
    "bounce": ("bounce", "bounces"),
    "complaint": ("complaint", "complaints"),
    "duplicate": ("duplicate", "duplicates"),
}


def _counted(n: int, what: str) -> str:
    one, many = _NOUNS.get(what, (what.replace("_", " "), what.replace("_", " ")))
    return counted(n, one, many)


# -- preparing: parse and keep ------------------------------------------------------------------


def synthetic_message_id(raw: bytes) -> str:
    """A stable Message-ID for a message that has none, so re-reading it is still a duplicate."""
    return f"<{hashlib.sha256(raw).hexdigest()}@crmkit>"


@dataclass
class Prepared:
    """A message parsed and kept in the archive, ready to be logged in the store."""

    parsed: ParsedMessage
    raw_path: str  # how records name the kept .eml
    attachments: list[dict[str, Any]]  # as kept, for the activity


def prepare(archive: MailArchive, raw: bytes) -> Prepared:
    """Parse a message and keep its bytes and attachments (not yet durable: see ``archive.sync``).

    Raises OSError when the archive cannot be written; parsing itself never raises.
    """
    parsed = parse_message(raw)
    if parsed.message_id is None:
        parsed.message_id = synthetic_message_id(raw)
    # Files first, outside any store transaction: they are named by their content, so a
    # message kept twice (a rerun after a kill) is kept once.
    raw_path = archive.keep_raw(raw)
    attachments = archive.keep_attachments(raw, parsed.attachments)
    return Prepared(parsed, raw_path, attachments)


def file_prepared(
    store: Store,
    prepared: Prepared,
    *,
    rules: InboxRules,
    in_transaction: Callable[[], None] | None = None,
    sync: MailArchive | None = None,
) -> Filed:
    """Log a prepared message in one store transaction (joining the caller's, if one is open).

    ``in_transaction`` runs inside it, after the filing; ``sync`` is the archive to make
    durable before the commit (a caller filing many messages at once syncs once itself).
    """
    with store.transaction():
        filed = file_message(
            store,
            prepared.parsed,
            raw_message=prepared.raw_path,
            attachments=prepared.attachments,
            rules=rules,
            now=store.clock(),
            actor=ACTOR,
        )
        if in_transaction is not None:
            in_transaction()
        if sync is not None:
            sync.sync()
    return filed


def file_raw(
    store: Store,
    archive: MailArchive,
    raw: bytes,
    *,
    rules: InboxRules,
    in_transaction: Callable[[], None] | None = None,
    sync_archive: bool = True,
) -> tuple[Filed, ParsedMessage]:
    """Keep a message's bytes and attachments and file it, in one store transaction.

    ``in_transaction`` runs inside that transaction, after the filing: the
    poller advances its progress there, so both are committed or neither.
    The kept files are made durable before the records pointing at them are
    committed; a caller filing many messages in one transaction passes
    ``sync_archive=False`` and calls ``archive.sync()`` once before its commit.
    Raises whatever the filing raised (nothing is written to the store then).
    """
    prepared = prepare(archive, raw)
    sync = archive if sync_archive else None
    filed = file_prepared(store, prepared, rules=rules, in_transaction=in_transaction, sync=sync)
    return filed, prepared.parsed


def archive_error(archive: MailArchive, exc: OSError) -> CrmkitError:
    """The mail folder cannot be written (disk full, permissions): no message can be filed."""
    return CrmkitError(f"cannot keep mail in {archive.root}: {exc.strerror or exc}")


def reason(exc: BaseException) -> str:
    return " ".join(f"{type(exc).__name__}: {exc}".split())[:300]


def file_or_quarantine(
    store: Store,
    archive: MailArchive,
    raw: bytes,
    *,
    rules: InboxRules,
    origin: str,
    report: PollReport,
    in_transaction: Callable[[], None] | None = None,
    prepared: Prepared | BaseException | None = None,
) -> tuple[Filed, ParsedMessage] | None:
    """File one message; on failure set it aside and return None. Store and disk errors stop the run.

    ``prepared``: what :class:`Preparer` made of ``raw`` already (or the error it met).
    """
    try:
        if prepared is None:
            prepared = prepare(archive, raw)
        if isinstance(prepared, BaseException):
            raise prepared
        filed = file_prepared(store, prepared, rules=rules, in_transaction=in_transaction, sync=archive)
    except OSError as exc:
        raise archive_error(archive, exc) from None
    except StoreError:  # the store cannot be read or written: no message can be filed
        raise
    except Exception as exc:  # a bug or an unforeseen message: set it aside, go on
        quarantine(archive, raw, exc, origin, report)
        return None
    report.add(filed)
    return filed, prepared.parsed


def quarantine(archive: MailArchive, raw: bytes, exc: BaseException, origin: str, report: PollReport) -> None:
    item = archive.quarantine(raw, reason=reason(exc), origin=origin)
    log.warning("quarantined %s as %s: %s", origin, item.id, item.reason)
    report.add_quarantined(item.id)


# -- preparing a backlog in a second process ----------------------------------------------------

Outcome = Prepared | Exception


def prepare_all(archive: MailArchive, raws: Sequence[bytes]) -> list[Outcome]:
    """Each message prepared, or the error preparing it met (so one bad message fails alone)."""
    outcomes: list[Outcome] = []
    for raw in raws:
        try:
            outcomes.append(prepare(archive, raw))
        except Exception as exc:
            outcomes.append(exc)
    return outcomes


class Batch:
    """Messages handed to a :class:`Preparer`; :meth:`outcomes` waits for them, in order."""

    def __init__(self, preparer: Preparer, raws: Sequence[bytes], sent: bool) -> None:
        self._preparer = preparer
        self._raws = raws
        self._sent = sent  # to the worker; otherwise prepared here, when asked

    def outcomes(self) -> list[Outcome]:
        if self._sent:
            outcomes = self._preparer._receive()
            if outcomes is not None:  # the worker made its files durable before it answered
                return outcomes
        return prepare_all(self._preparer.archive, self._raws)


class Preparer:
    """Prepares batches of messages in order, in a worker process when ``parallel``.

    The worker (:mod:`crmkit.mail.prepare_worker`) is only a helper: if it cannot
    start or dies, what it had not answered is prepared here instead, so a poll
    never fails for it. A context manager: leaving it stops the worker.
    """

    def __init__(self, archive: MailArchive, *, parallel: bool) -> None:
        self.archive = archive
        self._worker: PreparerProcess | None = None
        if parallel and (os.cpu_count() or 1) > 1:
            self._worker = PreparerProcess.start(archive)

    def submit(self, raws: Sequence[bytes]) -> Batch:
        sent = False
        if self._worker is not None:
            sent = self._worker.send(list(raws))
            if not sent:
                self._lost()
        return Batch(self, raws, sent)

    def _receive(self) -> list[Outcome] | None:
        if self._worker is None:
            return None
        outcomes = self._worker.receive()
        if outcomes is None:
            self._lost()
        return outcomes

    def _lost(self) -> None:
        """The worker died: what it had not answered, and the rest, is prepared here."""
        log.warning("the mail preparing process stopped; going on without it")
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def close(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def __enter__(self) -> Preparer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
