"""A cheap "nothing changed since the last sync" check, kept beside the store.

Reading a large store just to learn that neither side changed costs more than
the sync of an unchanged workbook should. So after each clean sync crmkit
notes, in a small file beside the store (``.crm.json.synced``), the
workbook's fingerprint and the store file's identity. If both are the same at
the next run, nothing can have changed and the sync stops there. The file is
only a shortcut: when it is missing, damaged or stale, the sync does the full
check, which is always right.
"""

from __future__ import annotations

import contextlib
import json
import os
from pathlib import Path

__all__ = ["SyncStamps"]


def _store_identity(path: Path) -> list[int] | None:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return None
    # The store is replaced, never written in place: a change gives a new
    # inode, change time and usually size and mtime.
    return [st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns]


class SyncStamps:
    """The shortcut file of one store: workbook identity -> (workbook fingerprint, store identity)."""

    def __init__(self, store_path: Path) -> None:
        self.store_path = store_path
        self.path = store_path.with_name(f".{store_path.name}.synced")

    def _load(self) -> dict[str, list[object]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def unchanged(self, book_identity: str, fingerprint: str | None, day: str) -> bool:
        """True when neither the workbook nor the store changed since a clean sync that same day.

        The day matters: an invoice turns overdue with the calendar alone.
        """
        if fingerprint is None:
            return False
        entry = self._load().get(book_identity)
        store = _store_identity(self.store_path)
        return bool(entry) and store is not None and entry == [fingerprint, store, day]

    def record(self, book_identity: str, fingerprint: str | None, day: str) -> None:
        """Note a clean sync (or, with no fingerprint, forget the workbook).

        Call it after the store transaction that saves the sync's state is
        written and before its lock is let go (``storage.after_commit``), so no
        other process's change can slip in between.
        """
        data = self._load()
        store = _store_identity(self.store_path)
        if fingerprint is None or store is None:
            if book_identity not in data:
                return  # nothing to forget (a PostgreSQL store has no file: no shortcut, no stamp file)
            data.pop(book_identity, None)
        else:
            data[book_identity] = [fingerprint, store, day]
        tmp = self.path.with_name(self.path.name + ".tmp")
        with contextlib.suppress(OSError):  # only a shortcut: never fail a sync over it
            tmp.write_text(json.dumps(data), encoding="utf-8")
            os.replace(tmp, self.path)
