"""A TinyDB storage that several processes can share and a kill cannot tear.

TinyDB's own JSONStorage rewrites the file in place (a crash mid-write leaves
a torn file) and takes no lock (its docs rule out two processes sharing a
file). A cron sync beside the mail poller is exactly that, so this storage:

- replaces the file atomically: the new content goes to a temporary file in
  the same folder, is flushed to disk, then ``os.replace``-d over the old one,
  so a reader or a killed writer only ever sees the old file or the new one;
- takes an exclusive lock (``crm.json.lock`` beside the store) around every
  read-modify-write, in :meth:`AtomicJSONStorage.transaction`;
- batches: inside a transaction, TinyDB's many writes stay in memory and the
  file is written once, when the transaction ends without an error. An error
  throws the transaction's changes away.

Readers take no lock: an atomically replaced file is always whole. The file
is plain TinyDB JSON, so ``TinyDB(path, storage=AtomicJSONStorage)`` opens it.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson
from tinydb.storages import Storage

from crmkit.errors import StoreError, StoreLockedError
from crmkit.files import fsync_dir, remove_temp_leftovers, temp_beside
from crmkit.locks import LockTimeout, exclusive
from crmkit.perf import paused_gc

__all__ = ["AtomicJSONStorage"]

Tables = dict[str, dict[str, Any]]


class AtomicJSONStorage(Storage):
    """TinyDB storage with atomic replacement, a file lock and batched writes."""

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 30.0) -> None:
        self.path = Path(path)
        self.lock_path = self.path.with_name(self.path.name + ".lock")
        self.lock_timeout = lock_timeout
        self._data: Tables | None = None
        self._stamp: tuple[int, int, int, int] | None = None
        # The file we loaded stays open (POSIX): its inode cannot be freed and
        # handed to a newer file, so "same inode" reliably means "same file".
        self._pin: int | None = None
        self._after_commit: list[Callable[[], None]] = []
        self._depth = 0
        self._dirty = False
        #: Goes up each time the content is (re)loaded from disk, so callers
        #: can tell when an index built on the old content is stale.
        self.generation = 0

    # -- TinyDB's Storage interface -------------------------------------

    def read(self) -> Tables | None:
        if self._depth == 0:
            self._refresh()
        return self._data

    def write(self, data: Tables) -> None:
        self._data = data
        if self._depth:
            self._dirty = True
            return
        with self._locked():
            # Outside a transaction the read happened without the lock: refuse
            # to overwrite what another process wrote since.
            if self._stamp is not None and not self.is_current():
                self._stamp = None
                self._data = None
                raise StoreError(
                    f"{self.path} was changed by another process since it was read; "
                    "use storage.transaction() for read-modify-write"
                )
            self._write_file(data)

    def close(self) -> None:
        """Let go of the loaded file."""
        self._unpin()

    def __del__(self) -> None:
        self._unpin()

    # -- transactions ---------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self._depth > 0

    @contextmanager
    def transaction(self) -> Iterator[Tables]:
        """Hold the lock, load the latest file, write once at the end.

        Nested transactions join the outer one. If the block raises, nothing
        is written and the in-memory content is reloaded from disk.
        """
        if self._depth:
            self._depth += 1
            try:
                assert self._data is not None
                yield self._data
            finally:
                self._depth -= 1
            return
        with self._locked():
            remove_temp_leftovers(self.path)  # only a lock holder writes them
            self._refresh()
            self._depth = 1
            self._dirty = False
            try:
                assert self._data is not None
                yield self._data
                if self._dirty:
                    self._write_file(self._data)
                for callback in self._after_commit:
                    callback()
            except BaseException:
                self._stamp = None  # forces a reload: drops half-made changes
                self._data = None
                raise
            finally:
                self._depth = 0
                self._dirty = False
                self._after_commit = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current transaction is written, before its lock is let go."""
        if not self._depth:
            raise StoreError("after_commit needs an open transaction")
        self._after_commit.append(callback)

    # -- files ----------------------------------------------------------

    @contextmanager
    def _locked(self) -> Iterator[None]:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with exclusive(self.lock_path, self.lock_timeout):
                yield
        except LockTimeout:
            raise StoreLockedError(
                f"{self.path} is locked by another crmkit process "
                f"(waited {self.lock_timeout:g} s for {self.lock_path})"
            ) from None

    def _unpin(self) -> None:
        if getattr(self, "_pin", None) is not None:
            with contextlib.suppress(OSError):
                os.close(self._pin)  # type: ignore[arg-type]
            self._pin = None

    def is_current(self) -> bool:
        """True when the file on disk is the one in memory."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return self._stamp is None
        if self._stamp is None or self._pin is None:
            return False  # nothing pinned (Windows): always reload
        return (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size) == self._stamp

    def _refresh(self) -> None:
        if self._data is not None and self.is_current():
            return
        try:
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        except FileNotFoundError:
            self._unpin()
            self._data, self._stamp = {}, None
            self.generation += 1
            return
        except OSError as exc:
            raise StoreError(f"cannot read the store {self.path}: {exc.strerror}") from None
        try:
            st = os.fstat(fd)
            with open(fd, "rb", closefd=False) as fh:
                raw = fh.read()
        except OSError as exc:
            os.close(fd)
            raise StoreError(f"cannot read the store {self.path}: {exc.strerror}") from None
        try:
            data = _parse(raw) if raw.strip() else {}
        except ValueError as exc:
            os.close(fd)
            raise StoreError(f"{self.path} is not a valid store (not JSON: {exc})") from None
        if not isinstance(data, dict):
            os.close(fd)
            raise StoreError(f"{self.path} is not a valid store (expected a JSON object of tables)")
        self._pin_file(fd, st)
        self._data = data
        self.generation += 1

    def _pin_file(self, fd: int, st: os.stat_result) -> None:
        self._unpin()
        self._stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)
        if os.name == "nt":  # an open file cannot be replaced on Windows
            os.close(fd)
        else:
            self._pin = fd

    def _write_file(self, data: Tables) -> None:
        text = orjson.dumps(data)
        tmp = temp_beside(self.path)
        fd = -1
        try:
            fd = os.open(tmp, os.O_RDWR | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0), 0o644)
            view = memoryview(text)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
            with contextlib.suppress(FileNotFoundError):
                os.chmod(tmp, os.stat(self.path).st_mode & 0o777)
            if os.name == "nt":
                os.close(fd)
                fd = -1
            os.replace(tmp, self.path)
        except OSError as exc:
            if fd >= 0:
                os.close(fd)
            tmp.unlink(missing_ok=True)
            raise StoreError(f"cannot write the store {self.path}: {exc.strerror}") from None
        fsync_dir(self.path.parent)
        if fd >= 0:
            self._pin_file(fd, os.fstat(fd))
        else:
            st = os.stat(self.path)
            self._unpin()
            self._stamp = (st.st_dev, st.st_ino, st.st_mtime_ns, st.st_size)


def _parse(raw: bytes) -> Any:
    with paused_gc():
        return orjson.loads(raw)
