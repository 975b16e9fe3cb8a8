"""A campaign's send journal: who was mailed, when, with which Message-ID, and what went wrong.

The journal lives in the store, in two bookkeeping tables: ``_campaigns``
(one document per campaign) and ``_campaign_sends`` (one per campaign and
recipient, keyed ``<campaign>/<record id>``), with the status of each recipient:

* ``queued``: in the campaign, not tried yet;
* ``sending``: handed to the SMTP server, no answer recorded yet;
* ``sent``: accepted (with Message-ID and time, and an ``email_out`` activity);
* ``failed``: refused, with the server's answer;
* ``uncertain``: the connection broke after the message was handed over, so
  it may have been delivered. Resent only when asked.

Committing the store after every message would rewrite the whole store file
each time; instead each step is first appended to a write-ahead file
(``crm-mail/campaigns/<name>.journal``), which costs a microsecond and
survives the process being killed, and the store takes the steps over every
couple of seconds and at the end (:meth:`CampaignJournal.checkpoint`). A run
that starts replays what a killed run left in that file; a recipient left at
``sending`` becomes ``uncertain``. The file is fsynced at every checkpoint, so
a power loss (not a kill) can forget at most the steps since the last one.
One run at a time per campaign: a lock file says who is sending.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import re
from collections.abc import Iterable, Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import orjson

from crmkit.errors import CrmkitError
from crmkit.store import Store
from crmkit.store.store import Checked

__all__ = [
    "CAMPAIGNS",
    "SENDS",
    "STATUSES",
    "CampaignJournal",
    "campaign_summaries",
    "recover_if_idle",
    "sends_of",
    "sent_on",
]

CAMPAIGNS = "campaigns"  # store state table _campaigns
SENDS = "campaign_sends"  # store state table _campaign_sends
STATUSES = ("queued", "sending", "sent", "failed", "uncertain")
ACTOR = "merge"
_NAME = re.compile(r"^[\w][\w .@+-]{0,99}$")


def _key(campaign: str, record_id: str) -> str:
    return f"{campaign}/{record_id}"


def _slug(name: str) -> str:
    readable = re.sub(r"[^\w.-]+", "-", name).strip("-.")[:60] or "campaign"
    return f"{readable}-{hashlib.sha256(name.encode()).hexdigest()[:8]}"


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise CrmkitError(
            f"campaign name {name!r}: use letters, digits, spaces and . @ + - (at most 100 characters)"
        )
    return name


class CampaignJournal:
    """The journal of one campaign, open for one sending run (use it as a context manager)."""

    def __init__(self, store: Store, name: str, *, folder: Path | None = None) -> None:
        self.store = store
        self.name = check_name(name)
        folder = folder or store.path.parent / f"{store.path.stem}-mail" / "campaigns"
        self.wal_path = folder / f"{_slug(name)}.journal"
        self.lock_path = folder / f"{_slug(name)}.lock"
        self._lock_fd: int | None = None
        self._wal_fd: int | None = None
        self._pending: list[dict[str, Any]] = []  # steps written ahead, not yet in the store
        self._checked: dict[int, Checked] = {}  # id(step) -> its activity, validated while idle
        self._to_check: list[dict[str, Any]] = []  # sent steps whose activity is not validated yet
        self._status: dict[str, str] = {}

    # -- the run's lock and the write-ahead file

    def __enter__(self) -> CampaignJournal:
        self.wal_path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise CrmkitError(
                f"campaign {self.name!r} is being sent by another crmkit process; wait for it to finish"
            ) from None
        self._lock_fd = fd
        try:
            self.recover()
            self._wal_fd = os.open(self.wal_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        except BaseException:
            self._lock_fd = None
            os.close(fd)  # closing the file releases the lock
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            if self._wal_fd is not None:
                self.checkpoint()
        finally:
            for fd in (self._wal_fd, self._lock_fd):
                if fd is not None:
                    with contextlib.suppress(OSError):
                        os.close(fd)
            self._wal_fd = self._lock_fd = None

    def recover(self) -> int:
        """Take over what a killed run left: its written-ahead steps, and ``sending`` -> ``uncertain``."""
        steps = list(_read_wal(self.wal_path))
        with self.store.transaction():
            self._fold(steps)
            left = 0
            for doc in sends_of(self.store, self.name):
                if doc.get("status") == "sending":
                    self._set(
                        doc["record"],
                        {
                            **_strip(doc),
                            "status": "uncertain",
                            "answer": "a run stopped while this message was being sent",
                        },
                    )
                    left += 1
        if self.wal_path.exists():
            os.truncate(self.wal_path, 0)
        return left

    # -- steps

    def entry(self, record_id: str) -> dict[str, Any] | None:
        doc = self.store.state(SENDS, _key(self.name, record_id))
        return None if doc is None else _strip(doc)

    def start(self, meta: dict[str, Any], record_ids: Iterable[tuple[str, str]]) -> None:
        """Record the campaign and queue every (record id, address) not in it yet: one commit."""
        now = _now()
        with self.store.transaction():
            saved = self.store.state(CAMPAIGNS, self.name) or {"name": self.name, "created_at": now}
            self.store.set_state(CAMPAIGNS, self.name, {**_strip(saved), **meta, "last_run_at": now})
            for record_id, address in record_ids:
                if self.store.state(SENDS, _key(self.name, record_id)) is None:
                    self._set(record_id, {"address": address, "status": "queued"})

    def _write(self, step: dict[str, Any]) -> None:
        assert self._wal_fd is not None, "open the journal with `with` first"
        os.write(self._wal_fd, orjson.dumps(step) + b"\n")
        self._pending.append(step)
        self._status[step["record"]] = step["status"]

    def sending(self, record_id: str, *, address: str, message_id: str) -> None:
        self._write(
            {
                "record": record_id,
                "status": "sending",
                "address": address,
                "message_id": message_id,
                "at": _now(),
            }
        )

    def sent(
        self, record_id: str, *, activity: dict[str, Any], refused: dict[str, str] | None = None
    ) -> None:
        """Accepted by the server; ``activity`` is the email_out to log on the person's timeline."""
        step = {"record": record_id, "status": "sent", "at": _now(), "activity": activity}
        if refused:
            step["refused"] = refused
        self._write(step)
        self._to_check.append(step)

    def failed(
        self,
        record_id: str,
        *,
        answer: str,
        code: int | None = None,
        temporary: bool = False,
        delivered: list[str] | None = None,
    ) -> None:
        """Refused; ``temporary`` (a 4xx answer) means the next run tries again by itself.

        ``delivered``: other recipients of the message (Cc, Bcc) who got it all the same;
        a retry leaves them out.
        """
        step = {"record": record_id, "status": "failed", "at": _now(), "answer": answer, "code": code}
        self._write({**step, "temporary": temporary, **({"delivered": delivered} if delivered else {})})

    def queued(self, record_id: str) -> None:
        """Back in the queue: the message was never handed over (the server could not be reached)."""
        self._write({"record": record_id, "status": "queued", "at": _now()})

    def uncertain(self, record_id: str, *, answer: str) -> None:
        self._write({"record": record_id, "status": "uncertain", "at": _now(), "answer": answer})

    def prepare(self) -> bool:
        """Validate one sent step's activity ahead of the checkpoint (idle time); False if none is left."""
        if not self._to_check:
            return False
        step = self._to_check.pop()
        self._checked[id(step)] = self.store.check("activities", step["activity"])
        return True

    def checkpoint(self) -> None:
        """Move the steps written ahead into the store (one commit), then empty the file."""
        if not self._pending or self._wal_fd is None:
            return
        os.fsync(self._wal_fd)
        with self.store.transaction():
            self._fold(self._pending)
        os.ftruncate(self._wal_fd, 0)
        self._pending = []
        self._checked = {}
        self._to_check = []

    # -- folding steps into the store (idempotent: a step replayed twice changes nothing more)

    def _set(self, record_id: str, values: dict[str, Any]) -> None:
        self.store.set_state(
            SENDS, _key(self.name, record_id), {"campaign": self.name, "record": record_id, **values}
        )

    def _fold(self, steps: Iterable[dict[str, Any]]) -> None:
        folded: dict[str, dict[str, Any]] = {}  # record -> its entry after this batch's steps
        for step in steps:
            record_id = step["record"]
            if record_id not in folded:
                saved = self.entry(record_id) or {}
                folded[record_id] = {k: v for k, v in saved.items() if k not in ("campaign", "record")}
            entry = folded[record_id]
            if entry.get("status") == "sent":
                continue  # already folded (a replay after a crash between commit and truncate)
            status = step["status"]
            entry["status"] = status
            entry["attempts"] = int(entry.get("attempts", 0)) + (status == "sending")
            if step.get("delivered"):
                entry["delivered"] = sorted({*entry.get("delivered", []), *step["delivered"]})
            for key in ("address", "message_id", "answer", "code", "refused", "temporary"):
                if key in step:
                    entry[key] = step[key]
            entry[f"{status}_at"] = step["at"]
            if status in ("sent", "queued", "sending"):
                for stale in ("answer", "code", "temporary"):
                    entry.pop(stale, None)
            if status == "sent":
                activity = dict(step["activity"])
                checked = self._checked.get(id(step))
                if (
                    not activity.get("contact")
                    and not activity.get("lead")
                    and re.match(r"^[CL]-\d+$", record_id)
                ):
                    # a step written before activities carried their person: the record is the person
                    activity["lead" if record_id.startswith("L-") else "contact"] = record_id
                    checked = None
                for link in ("contact", "lead"):
                    if activity.get(link) and not self.store.exists(activity[link]):
                        del activity[link]  # the person was deleted meanwhile: log the send all the same
                        checked = None
                if checked is not None:
                    entry["activity"] = self.store.add_checked(checked, actor=ACTOR)["id"]
                else:
                    entry["activity"] = self.store.add("activities", activity, actor=ACTOR)["id"]
        for record_id, entry in folded.items():  # one bookkeeping write per person, not per step
            self._set(record_id, entry)

    # -- figures

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(STATUSES, 0)
        for doc in sends_of(self.store, self.name):
            status = self._status.get(doc["record"], doc.get("status"))
            counts[str(status)] = counts.get(str(status), 0) + 1
        return counts


def recover_if_idle(store: Store, name: str) -> None:
    """Take over what a killed run of ``name`` left, unless a run is sending now (then leave it)."""
    journal = CampaignJournal(store, name)
    if not journal.wal_path.exists():
        return
    with contextlib.suppress(CrmkitError), journal:
        pass


def sent_on(store: Store, day: date) -> int:
    """Messages handed to the server on ``day`` (UTC), every campaign: what a daily quota counts."""
    prefix = day.isoformat()
    count = 0
    for doc in store.states(SENDS):
        handed_over = doc.get("status") in ("sent", "uncertain", "sending")
        if handed_over and str(doc.get("sending_at", "")).startswith(prefix):
            count += 1
    return count


def sends_of(store: Store, campaign: str) -> list[dict[str, Any]]:
    """Every recipient's journal entry of ``campaign``."""
    return [doc for doc in store.states(SENDS) if doc.get("campaign") == campaign]


def campaign_summaries(store: Store) -> list[dict[str, Any]]:
    """Every campaign with its counts by status, oldest first."""
    counts: dict[str, dict[str, int]] = {}
    for doc in store.states(SENDS):
        by_status = counts.setdefault(str(doc.get("campaign")), dict.fromkeys(STATUSES, 0))
        by_status[str(doc.get("status"))] = by_status.get(str(doc.get("status")), 0) + 1
    out = []
    for doc in sorted(store.states(CAMPAIGNS), key=lambda d: str(d.get("created_at"))):
        name = str(doc.get("key"))
        out.append({**_strip(doc), "name": name, "counts": counts.get(name, dict.fromkeys(STATUSES, 0))})
    return out


def _strip(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in doc.items() if k != "key"}


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _read_wal(path: Path) -> Iterator[dict[str, Any]]:
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return
    for line in data.split(b"\n"):
        if not line.strip():
            continue
        try:
            step = orjson.loads(line)
        except orjson.JSONDecodeError:
            continue  # the last line of a run killed mid-write
        if isinstance(step, dict) and step.get("record") and step.get("status") in STATUSES:
            yield step
