"""An exclusive lock on a file beside the store, cheap to import.

The store takes it around every read-modify-write. On POSIX it is ``flock`` on
a lock file that stays in place (the kernel lets go when the holder exits or is
killed, so a crashed process never leaves the store locked). Elsewhere it is
the ``filelock`` package, imported only there: its import costs a reading
command about 20 ms, a tenth of a whole ``crmkit contacts show``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["LockTimeout", "exclusive"]


class LockTimeout(Exception):
    """Another process held the lock for longer than the timeout."""


@contextmanager
def exclusive(path: Path, timeout: float, poll: float = 0.005) -> Iterator[None]:
    """Hold an exclusive lock on ``path`` (created if missing), waiting at most ``timeout`` s.

    Polls every ``poll`` s rather than blocking, so a waiter can give up on time,
    and a short poll keeps a process that releases and retakes the lock from
    starving the one waiting.
    """
    try:
        import fcntl
    except ImportError:  # Windows
        from filelock import FileLock, Timeout

        try:
            with FileLock(str(path), timeout=timeout, poll_interval=poll):
                yield
        except Timeout:
            raise LockTimeout(str(path)) from None
        return
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() >= deadline:
                    raise LockTimeout(str(path)) from None
                time.sleep(poll)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
