"""Polling several mailboxes (``[[imap]]``: support@ and sales@), each with its own checkpoint.

``--once`` polls them one after another; a mailbox that fails (a server down, a
refused login) does not keep the others from being polled, and the failures are
reported together at the end. ``--idle`` keeps one connection per mailbox, each in
its own thread with its own :class:`~crmkit.store.Store` (writers take turns on
the store's lock as separate processes do); SIGTERM or Ctrl-C stops them all after
the message each is filing.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from crmkit.config import resolve_password
from crmkit.errors import CrmkitError
from crmkit.mail.archive import MailArchive
from crmkit.mail.imap import OnFiled, OnProgress, PollReport, poll_idle, poll_once
from crmkit.mail.settings import PollSettings
from crmkit.store import Store

__all__ = ["MailboxesResult", "poll_mailboxes_idle", "poll_mailboxes_once"]


@dataclass
class MailboxesResult:
    """Each mailbox's report, and one line per mailbox that failed."""

    reports: list[PollReport] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def needs_attention(self) -> bool:
        return any(r.needs_attention for r in self.reports)


def _options(settings: PollSettings) -> dict[str, Any]:
    return {
        "rules": settings.rules,
        "after": settings.after,
        "move_to": settings.move_to,
        "sent_folder": settings.sent_folder,
    }


def poll_mailboxes_once(
    store: Store,
    mailboxes: list[PollSettings],
    *,
    archive: MailArchive,
    on_filed: OnFiled | None = None,
    on_progress: OnProgress | None = None,
) -> MailboxesResult:
    """Poll each mailbox once, in turn; one that fails is reported and the rest are polled."""
    result = MailboxesResult()
    for settings in mailboxes:
        try:
            password = resolve_password(settings.server)
            report = poll_once(
                store,
                settings.server,
                password,
                archive=archive,
                on_filed=on_filed,
                on_progress=on_progress,
                **_options(settings),
            )
        except CrmkitError as exc:
            if len(mailboxes) == 1:
                raise
            result.failures.append(str(exc))
            continue
        result.reports.append(report)
    return result


def poll_mailboxes_idle(
    store: Store,
    mailboxes: list[PollSettings],
    *,
    archive: MailArchive,
    open_store: Callable[[], Store],
    on_filed: OnFiled | None = None,
    on_round: Callable[[PollReport], None] | None = None,
    stop: threading.Event | None = None,
) -> MailboxesResult:
    """Stay connected to every mailbox until SIGTERM, Ctrl-C or ``stop``.

    One mailbox is polled in this thread on ``store``; several get a thread each, each
    with a Store of its own from ``open_store``. A mailbox whose server cannot be used
    at all (a refused login, a missing folder) stops them all: that is a configuration
    to fix, not a network blip to wait out.
    """
    stop = stop or threading.Event()
    if len(mailboxes) == 1:
        settings = mailboxes[0]
        report = poll_idle(
            store,
            settings.server,
            resolve_password(settings.server),
            archive=archive,
            on_filed=on_filed,
            on_round=on_round,
            stop=stop,
            **_options(settings),
        )
        return MailboxesResult([report])
    result = MailboxesResult()
    lock = threading.Lock()  # the hooks print and acknowledge: one mailbox at a time

    def locked(hook: Callable[..., None] | None) -> Callable[..., None] | None:
        if hook is None:
            return None

        def call(*args: Any) -> None:
            with lock:
                hook(*args)

        return call

    def run(settings: PollSettings) -> None:
        try:
            password = resolve_password(settings.server)
            report = poll_idle(
                open_store(),
                settings.server,
                password,
                archive=archive,  # content-named files: two threads keeping one message keep it once
                on_filed=locked(on_filed),
                on_round=locked(on_round),
                stop=stop,
                **_options(settings),
            )
        except CrmkitError as exc:
            with lock:
                result.failures.append(str(exc))
            stop.set()
            return
        with lock:
            result.reports.append(report)

    threads = [threading.Thread(target=run, args=(s,), name=f"poll {s.server.user}") for s in mailboxes]
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: stop.set())
    try:
        for thread in threads:
            thread.start()
        while any(t.is_alive() for t in threads):
            try:
                for thread in threads:
                    thread.join(timeout=0.2)
            except KeyboardInterrupt:
                stop.set()
    finally:
        stop.set()
        for thread in threads:
            thread.join()
        signal.signal(signal.SIGTERM, previous)
    return result
