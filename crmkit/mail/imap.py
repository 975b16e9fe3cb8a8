"""The support inbox over IMAP: fetch new mail, file it, leave the mailbox as configured.

:func:`poll_once` reads what arrived since the last run (for cron);
:func:`poll_idle` stays connected and reacts at once (IMAP IDLE).
:func:`replay_quarantined` files set-aside messages again.

Never twice, never lost: progress is kept in the store per account and folder
(``store.state("imap", "user@host:port/folder")`` holds ``uidvalidity``,
``last_uid`` and ``acted_uid``). Each message is kept on disk, filed, and
``last_uid`` advanced in ONE store transaction, so a run killed at any point
re-reads at most the message it was filing; Message-ID dedupe in
:func:`~crmkit.mail.inbox.file_message` is the second guard (a message
without a Message-ID gets one made from its bytes). The mailbox action
(``\\Seen``, move) follows the commit; ``acted_uid`` records how far it got,
so a run finishes what a killed one left undone. ``commit_every`` > 1 files
that many messages per transaction instead: each commit rewrites the store
file, so on a large backlog that is many times faster, and a kill then
re-reads at most that many messages (still logging none twice).

A message whose filing fails goes to the quarantine and the run goes on. A
store or disk that cannot be written stops the run instead: that is no fault
of the message, and quarantining every message behind it would only make
work for a person.
"""

from __future__ import annotations

import contextlib
import dataclasses
import imaplib
import logging
import signal
import ssl
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from crmkit.config import MailServer, Secret
from crmkit.errors import ConfigError, CrmkitError, NotFoundError, StoreError, StoreLockedError
from crmkit.mail.archive import MailArchive
from crmkit.mail.connection import (
    ImapConnectionError,
    close,
    connect,
    imap_errors,
    mailbox_key,
    same_folder,
    server_name,
    tls_context,
)
from crmkit.mail.filing import (
    PARALLEL_FROM,
    Batch,
    Outcome,
    PollReport,
    Preparer,
    archive_error,
    file_or_quarantine,
    file_prepared,
    file_raw,
    reason,
    synthetic_message_id,
)
from crmkit.mail.inbox import Filed, InboxRules
from crmkit.mail.message import ParsedMessage
from crmkit.store import Store

__all__ = [
    "AFTER_ACTIONS",
    "ImapConnectionError",
    "PollReport",
    "connect",
    "file_raw",
    "mailbox_key",
    "poll_idle",
    "poll_once",
    "replay_quarantined",
    "synthetic_message_id",
    "tls_context",
]

log = logging.getLogger(__name__)

STATE = "imap"
AFTER_ACTIONS = ("seen", "move", "none")
#: RFC 2177: a server may log out a client idle for 30 minutes; IDLE is re-issued before that.
IDLE_RENEW_SECONDS = 25 * 60
_BODY = b"BODY[]"

OnFiled = Callable[[Filed, ParsedMessage], None]
#: ``on_progress(filed, total)``: after each commit, how many of this round's new messages are filed.
OnProgress = Callable[[int, int], None]


#: Messages filed per store transaction. Each commit rewrites the store file, so one per
#: message makes a backlog crawl; a kill re-reads at most this many uncommitted messages.
COMMIT_EVERY = 200
#: Messages fetched per FETCH: one round trip each, and at most this many held in memory.
BATCH = 200


# -- polling ------------------------------------------------------------------------------------


@dataclass
class _Progress:
    uidvalidity: int
    last_uid: int = 0
    acted_uid: int = 0  # the mailbox action was applied to every UID up to here

    def as_state(self) -> dict[str, int]:
        return {"uidvalidity": self.uidvalidity, "last_uid": self.last_uid, "acted_uid": self.acted_uid}


class _Poller:
    """Fetches and files a folder's new mail on a connected client; shared by once and IDLE."""

    def __init__(
        self,
        store: Store,
        server: MailServer,
        *,
        rules: InboxRules,
        archive: MailArchive,
        after: str,
        move_to: str | None,
        batch: int,
        commit_every: int,
        on_filed: OnFiled | None,
        stop: threading.Event | None = None,
        on_progress: OnProgress | None = None,
    ) -> None:
        if after not in AFTER_ACTIONS:
            raise ConfigError(f"after must be one of {', '.join(AFTER_ACTIONS)} (got {after!r})")
        if after == "move" and not move_to:
            raise ConfigError('[imap] after = "move" needs move_to, the folder to move filed mail to')
        if batch < 1 or commit_every < 1:
            raise ValueError("batch and commit_every must be at least 1")
        if after == "move" and move_to is not None and same_folder(move_to, server.folder):
            # every move would make a new message in the folder polled: a loop, not a filing
            raise ConfigError(f"move_to must be another folder than the one polled ({move_to})")
        self.store = store
        self.server = server
        self.rules = rules
        self.archive = archive
        self.after = after
        self.move_to = move_to
        self.batch = batch
        self.commit_every = commit_every
        self.on_filed = on_filed
        self.on_progress = on_progress
        self.stop = stop or threading.Event()
        self.key = mailbox_key(server)

    def report(self) -> PollReport:
        return PollReport(self.key)

    def open(self, client: Any, report: PollReport) -> _Progress:
        """SELECT the folder, load the progress (reset when UIDVALIDITY changed), finish old actions."""
        folder = self.server.folder
        try:
            info = client.select_folder(folder)
        except imaplib.IMAP4.abort:
            raise
        except imaplib.IMAP4.error:
            folders = ", ".join(sorted(str(f[2]) for f in client.list_folders()))
            key = "sent_folder" if self.rules.outgoing else "folder"
            raise CrmkitError(
                f"{server_name(self.server)}: folder {folder!r} not found (there: {folders}); "
                f"set [imap] {key}"
            ) from None
        uidvalidity = int(info[b"UIDVALIDITY"])
        saved = self.store.state(STATE, self.key) or {}
        progress = _Progress(uidvalidity)
        if saved.get("uidvalidity") == uidvalidity:
            progress.last_uid = int(saved.get("last_uid", 0))
            progress.acted_uid = int(saved.get("acted_uid", progress.last_uid))
        elif saved:
            # The folder's UIDs now mean other messages (recreated, restored): read it all again;
            # Message-ID dedupe keeps what was filed from being logged twice.
            log.warning(
                "%s: UIDVALIDITY changed (%s -> %s): reading the folder again",
                self.key,
                saved.get("uidvalidity"),
                uidvalidity,
            )
            report.uidvalidity_changed = True
            self.store.set_state(STATE, self.key, progress.as_state())
        report.uidvalidity, report.last_uid = uidvalidity, progress.last_uid
        if self.after == "move" and self.move_to and not client.folder_exists(self.move_to):
            client.create_folder(self.move_to)
        self._catch_up(client, progress, report)
        return progress

    def _bodies(self, client: Any, chunk: list[int], fetched: dict[int, Any]) -> list[tuple[int, bytes]]:
        """Each UID's bytes. A message expunged meanwhile is missing from the answer; one a
        server left out for another reason is asked for again, alone, before it is passed over."""
        missing = [uid for uid in chunk if fetched.get(uid, {}).get(_BODY) is None]
        if missing:
            still_there = set(client.search(["UID", ",".join(map(str, missing))]))
            for uid in sorted(still_there):
                again = client.fetch([uid], ["BODY.PEEK[]"]).get(uid, {}).get(_BODY)
                if again is not None:
                    fetched.setdefault(uid, {})[_BODY] = again
                else:
                    log.warning(
                        "%s: the server did not return UID %s; passed over", server_name(self.server), uid
                    )
        return [(uid, fetched[uid][_BODY]) for uid in chunk if fetched.get(uid, {}).get(_BODY) is not None]

    def _catch_up(self, client: Any, progress: _Progress, report: PollReport) -> None:
        """Apply the mailbox action a killed run filed messages without."""
        if self.after == "none" or progress.acted_uid >= progress.last_uid:
            return
        uids = client.search(["UID", f"{progress.acted_uid + 1}:{progress.last_uid}"])
        self._act(client, [u for u in uids if progress.acted_uid < u <= progress.last_uid], progress, report)

    def round(
        self, client: Any, progress: _Progress, report: PollReport, *, until_empty: bool = False
    ) -> None:
        """File every message past ``last_uid``, a batch (one FETCH) at a time."""
        while not self.stop.is_set():
            found = client.search(["UID", f"{progress.last_uid + 1}:*"])
            # "n:*" always matches the highest UID, even one below n
            uids = sorted(u for u in found if u > progress.last_uid)
            if not uids:
                return
            with Preparer(self.archive, parallel=len(uids) >= PARALLEL_FROM) as preparer:
                self._file_uids(client, uids, progress, report, preparer)
            if self.stop.is_set() or not until_empty:
                return

    def _file_uids(
        self, client: Any, uids: list[int], progress: _Progress, report: PollReport, preparer: Preparer
    ) -> None:
        """File ``uids`` a FETCH at a time, fetching the next batch while this one is filed.

        A thread fetches batch k+1 and hands it to the preparer while this thread files batch
        k, so the network, the parsing and the store overlap. The connection is never used by
        both at once: the mailbox action on batch k waits until that fetch is done.
        """
        chunks = [uids[i : i + self.batch] for i in range(0, len(uids), self.batch)]

        def fetch(chunk: list[int]) -> tuple[list[tuple[int, bytes]], Batch]:
            answer = client.fetch(chunk, ["BODY.PEEK[]"])  # PEEK: reading does not set \Seen
            messages = self._bodies(client, chunk, answer)
            return messages, preparer.submit([raw for _, raw in messages])

        filed = 0
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="crmkit-fetch") as fetcher:
            pending: Future[tuple[list[tuple[int, bytes]], Batch]] | None = fetcher.submit(fetch, chunks[0])
            for number in range(len(chunks)):
                assert pending is not None
                messages, batch = pending.result()
                pending = None
                if number + 1 < len(chunks) and not self.stop.is_set():
                    pending = fetcher.submit(fetch, chunks[number + 1])
                done, filed = self._file_batch(messages, batch.outcomes(), progress, report, filed, len(uids))
                if pending is not None:
                    futures.wait([pending])  # the connection is free again (its errors come at .result())
                self._act(client, done, progress, report)
                if self.stop.is_set():
                    return

    def _file_batch(
        self,
        messages: list[tuple[int, bytes]],
        outcomes: list[Outcome],
        progress: _Progress,
        report: PollReport,
        filed: int,
        total: int,
    ) -> tuple[list[int], int]:
        """File one FETCH's messages, ``commit_every`` per transaction: (their UIDs filed, filed so far)."""
        done: list[int] = []
        for first in range(0, len(messages), self.commit_every):
            if self.stop.is_set():
                break
            group = messages[first : first + self.commit_every]
            self._file_group(group, outcomes[first : first + self.commit_every], progress, report)
            done += [uid for uid, _ in group]
            filed += len(group)
            if self.on_progress is not None:
                self.on_progress(filed, total)
        return done, filed

    def _file_group(
        self, group: list[tuple[int, bytes]], outcomes: list[Outcome], progress: _Progress, report: PollReport
    ) -> None:
        """File messages and move progress past them in one transaction; after a failure, one by one."""
        if len(group) > 1:
            try:
                with self.store.transaction():
                    results = []
                    for outcome in outcomes:
                        if isinstance(outcome, BaseException):
                            raise outcome
                        results.append((file_prepared(self.store, outcome, rules=self.rules), outcome.parsed))
                    advanced = self._advance(progress, group[-1][0])
                    self.archive.sync()  # the files, durable before the records that point at them
            except StoreError:
                raise
            except OSError as exc:
                raise archive_error(self.archive, exc) from None
            except Exception:
                pass  # all of them rolled back: file them one at a time, to set the culprit aside
            else:
                for filed, _ in results:
                    report.add(filed)
                self._committed(progress, advanced, report, results)
                return
        for (uid, raw), outcome in zip(group, outcomes, strict=True):
            self._file_one(uid, raw, progress, report, outcome)

    def _file_one(
        self, uid: int, raw: bytes, progress: _Progress, report: PollReport, outcome: Outcome | None = None
    ) -> None:
        advanced: list[_Progress] = []
        result = file_or_quarantine(
            self.store,
            self.archive,
            raw,
            rules=self.rules,
            origin=f"imap://{self.key} uid {uid} uidvalidity {progress.uidvalidity}",
            report=report,
            in_transaction=lambda: advanced.append(self._advance(progress, uid)),
            prepared=outcome,
        )
        if result is None:  # quarantined: move past it all the same
            with self.store.transaction():
                advanced.append(self._advance(progress, uid))
        self._committed(progress, advanced[-1], report, [result] if result else [])

    def _advance(self, progress: _Progress, uid: int) -> _Progress:
        """Save progress past ``uid`` (call it inside the filing's transaction); the new progress."""
        saved = self.store.state(STATE, self.key) or {}
        last = uid
        if saved.get("uidvalidity") == progress.uidvalidity:
            last = max(uid, int(saved.get("last_uid", 0)))  # never back: another poller may be ahead
        acted = last if self.after == "none" else progress.acted_uid
        advanced = _Progress(progress.uidvalidity, last, acted)
        self.store.set_state(STATE, self.key, advanced.as_state())
        return advanced

    def _committed(
        self,
        progress: _Progress,
        advanced: _Progress,
        report: PollReport,
        results: list[tuple[Filed, ParsedMessage]],
    ) -> None:
        progress.last_uid, progress.acted_uid = advanced.last_uid, advanced.acted_uid
        report.last_uid = progress.last_uid
        on_filed = self.on_filed
        if on_filed is None:
            return
        for filed, parsed in results:
            try:
                on_filed(filed, parsed)
            except Exception as exc:  # e.g. an acknowledgement that could not be sent: the mail is filed
                log.warning("%s: after filing %s: %s", self.key, filed.message_id, reason(exc))

    def _act(self, client: Any, uids: list[int], progress: _Progress, report: PollReport) -> None:
        if self.after == "none" or not uids:
            return
        if self.after == "seen":
            client.add_flags(uids, [b"\\Seen"], silent=True)
            done = "seen"
        else:
            assert self.move_to is not None
            _move(client, uids, self.move_to)
            done = "moved"
        report.mailbox_actions[done] = report.mailbox_actions.get(done, 0) + len(uids)
        progress.acted_uid = max(progress.acted_uid, *uids)
        self.store.set_state(STATE, self.key, progress.as_state())


def _move(client: Any, uids: list[int], folder: str) -> None:
    if client.has_capability("MOVE"):
        client.move(uids, folder)
        return
    client.copy(uids, folder)
    client.add_flags(uids, [b"\\Deleted"], silent=True)
    if client.has_capability("UIDPLUS"):
        client.uid_expunge(uids)  # only these messages, not others a person marked deleted
    # Without UIDPLUS an EXPUNGE would also remove what a person marked deleted: the
    # copies stay flagged \Deleted for the person's mail client to expunge.


def poll_once(
    store: Store,
    server: MailServer,
    password: Secret,
    *,
    rules: InboxRules,
    archive: MailArchive,
    after: str = "seen",
    move_to: str | None = None,
    batch: int = BATCH,
    commit_every: int = COMMIT_EVERY,
    ssl_context: ssl.SSLContext | None = None,
    on_filed: OnFiled | None = None,
    on_progress: OnProgress | None = None,
    sent_folder: str | None = None,
) -> PollReport:
    """Connect, file every message that arrived since the last run, apply ``after``, log out.

    ``after``: "seen" flags each filed message \\Seen, "move" moves it to
    ``move_to``, "none" leaves the mailbox untouched. Messages are fetched
    ``batch`` at a time (one FETCH). ``commit_every`` messages are filed per
    store transaction (default :data:`COMMIT_EVERY`): each commit rewrites the
    store file, so more is much faster on a backlog, and a kill re-reads at most
    that many uncommitted messages (none is logged twice either way). ``on_filed(filed, parsed)`` runs after
    each message is committed (acknowledgements); ``on_progress(filed, total)`` after each commit (a
    progress bar). ``sent_folder``: then read that folder too, as the team's own mail (logged as
    ``email_out``, joined to cases, never flagged or moved), with its own checkpoint. Raises
    :class:`~crmkit.errors.CrmkitError` (one line, never the password) when the
    server cannot be reached or refuses; what was filed before stays filed.
    """
    poller = _Poller(
        store,
        server,
        rules=rules,
        archive=archive,
        after=after,
        move_to=move_to,
        batch=batch,
        commit_every=commit_every,
        on_filed=on_filed,
        on_progress=on_progress,
    )
    report = poller.report()
    sent = _sent_poller(poller, sent_folder)
    client = connect(server, password, ssl_context=ssl_context)
    try:
        with imap_errors(server_name(server), password):
            progress = poller.open(client, report)
            poller.round(client, progress, report)
            if sent is not None:
                _read_sent(sent, client, report)
    finally:
        close(client)
    return report


def _sent_poller(poller: _Poller, sent_folder: str | None) -> _Poller | None:
    """A poller for the team's Sent folder beside ``poller``'s: same store, its own checkpoint."""
    if not sent_folder:
        return None
    return _Poller(
        poller.store,
        dataclasses.replace(poller.server, folder=sent_folder),
        rules=dataclasses.replace(poller.rules, outgoing=True),
        archive=poller.archive,
        after="none",  # the team's sent mail is theirs: never flagged or moved
        move_to=None,
        batch=poller.batch,
        commit_every=poller.commit_every,
        on_filed=None,
        stop=poller.stop,
    )


def _read_sent(sent: _Poller, client: Any, into: PollReport) -> None:
    """File what is new in the Sent folder (selecting it on ``client``) into ``into``'s counts."""
    report = sent.report()
    progress = sent.open(client, report)
    sent.round(client, progress, report, until_empty=True)
    for filed in report.filed:
        into.add(filed)
    for qid in report.quarantined:
        into.add_quarantined(qid)


def poll_idle(
    store: Store,
    server: MailServer,
    password: Secret,
    *,
    rules: InboxRules,
    archive: MailArchive,
    after: str = "seen",
    move_to: str | None = None,
    batch: int = BATCH,
    commit_every: int = COMMIT_EVERY,
    ssl_context: ssl.SSLContext | None = None,
    on_filed: OnFiled | None = None,
    on_round: Callable[[PollReport], None] | None = None,
    stop: threading.Event | None = None,
    renew_every: float = IDLE_RENEW_SECONDS,
    backoff: tuple[float, float] = (1.0, 300.0),
    sent_folder: str | None = None,
    first_tries: int = 4,
) -> PollReport:
    """Stay connected and file mail as it arrives (IMAP IDLE), until SIGTERM, Ctrl-C or ``stop``.

    IDLE is re-issued every ``renew_every`` seconds, before servers drop an
    idle client. A broken connection is retried after ``backoff[0]``
    seconds, doubling up to ``backoff[1]``, for ever once a connection has
    worked; a server never reached raises after ``first_tries`` tries. ``batch`` and ``commit_every`` as
    for :func:`poll_once`. A refused login, an unverifiable
    certificate or a missing folder are not retried: they raise. Returns
    every round's results together; ``on_round`` sees each round that filed
    something. ``sent_folder`` is read as for :func:`poll_once` each time the
    inbox wakes the poller, and at least every ``renew_every`` seconds.
    """
    stop = stop or threading.Event()
    poller = _Poller(
        store,
        server,
        rules=rules,
        archive=archive,
        after=after,
        move_to=move_to,
        batch=batch,
        commit_every=commit_every,
        on_filed=on_filed,
        stop=stop,
    )
    total = poller.report()
    sent = _sent_poller(poller, sent_folder)
    delay = backoff[0]
    failed_first = 0  # tries before the first connection that worked
    connected_once = False

    def first_connection_failed(exc: ImapConnectionError) -> None:
        # A server that never answered is more likely a wrong host or port than a blip:
        # say so after a few tries rather than retry for ever under a service manager.
        nonlocal failed_first
        failed_first += 1
        if not connected_once and failed_first >= first_tries:
            raise CrmkitError(f"{exc}; gave up after {failed_first} tries (it never answered)") from None

    with _stop_on_sigterm(stop), contextlib.suppress(KeyboardInterrupt):
        while not stop.is_set():
            try:
                client = connect(server, password, ssl_context=ssl_context)
            except ImapConnectionError as exc:
                first_connection_failed(exc)
                log.warning("%s; trying again in %g s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, backoff[1])
                continue
            try:
                with imap_errors(server_name(server), password):
                    progress = poller.open(client, total)
                    connected_once = True
                    delay = backoff[0]  # connected and selected: a later failure starts the back-off over
                    _idle_loop(poller, client, progress, total, on_round, renew_every, sent)
            except (ImapConnectionError, StoreLockedError) as exc:
                if isinstance(exc, ImapConnectionError):
                    first_connection_failed(exc)
                # a long sync or import may hold the store: wait for it as for a broken connection
                log.warning("%s; reconnecting in %g s", exc, delay)
                stop.wait(delay)
                delay = min(delay * 2, backoff[1])
            finally:
                close(client)
    return total


def _idle_loop(
    poller: _Poller,
    client: Any,
    progress: _Progress,
    total: PollReport,
    on_round: Callable[[PollReport], None] | None,
    renew_every: float,
    sent: _Poller | None = None,
) -> None:
    while not poller.stop.is_set():
        # Until a search finds nothing new: mail that arrives while we file is announced in
        # answers imapclient does not hand back, so only a fresh search is sure to see it.
        report = poller.report()
        poller.round(client, progress, report, until_empty=True)
        if sent is not None:  # then back to the inbox, to IDLE on it
            _read_sent(sent, client, report)
            progress = poller.open(client, report)
        total.merge(report)
        if on_round is not None and report.messages:
            on_round(report)
        if poller.stop.is_set():
            return
        client.idle()
        try:
            _wait_for_news(client, poller.stop, renew_every)
        except BaseException:  # Ctrl-C: leave IDLE if the connection still works, keep the interrupt
            with contextlib.suppress(Exception):
                client.idle_done()
            raise
        client.idle_done()


def _wait_for_news(client: Any, stop: threading.Event, renew_every: float) -> None:
    """Return on any untagged response, when IDLE is due for renewal, or on ``stop``."""
    deadline = time.monotonic() + renew_every
    while not stop.is_set():
        left = deadline - time.monotonic()
        if left <= 0:
            return
        step = min(left, 1.0)  # wake every second to notice ``stop``
        started = time.monotonic()
        if client.idle_check(timeout=step):
            return
        if time.monotonic() - started < step / 2:
            # Woke early with nothing: the server closed the connection (imapclient swallows the
            # EOF). Leaving IDLE will raise and reconnect if so.
            return


@contextlib.contextmanager
def _stop_on_sigterm(stop: threading.Event) -> Iterator[None]:
    """SIGTERM finishes the message being filed, then stops (signals reach the main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# -- the quarantine -----------------------------------------------------------------------------


def replay_quarantined(store: Store, archive: MailArchive, which: str, *, rules: InboxRules) -> PollReport:
    """File quarantined messages again (``which``: an id, or "all"); release those that now file.

    Those that fail again stay in the quarantine with the new reason.
    """
    items = archive.quarantined()
    if which != "all":
        items = [item for item in items if item.id == which]
        if not items:
            raise NotFoundError(f"no quarantined message {which}: `crmkit poll --quarantine` lists them")
    report = PollReport("quarantine")
    for item in items:
        raw = item.path.read_bytes()
        if file_or_quarantine(store, archive, raw, rules=rules, origin=item.origin, report=report):
            archive.release(item)
    return report
