"""Replacing files atomically: the temporary file beside the target, and its leftovers.

The store and the workbook are both written the same way: to a temporary file
in the same folder (so the final rename cannot cross file systems), flushed to
disk, then renamed over the old file. A process killed before the rename
leaves only the temporary file, which the next writer, holding the lock,
removes.
"""

from __future__ import annotations

import os
import re
import secrets
from pathlib import Path

__all__ = ["fsync_dir", "remove_temp_leftovers", "temp_beside"]


def temp_beside(path: Path) -> Path:
    """A fresh temporary name next to ``path``: ``.crm.json.<pid>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}.tmp")


def remove_temp_leftovers(path: Path) -> None:
    """Remove temporary files :func:`temp_beside` made for ``path`` (call it holding the lock)."""
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.\d+\.[0-9a-f]{{8}}\.tmp$")
    for stale in path.parent.glob(f".{path.name}.*.tmp"):
        if pattern.match(stale.name):
            stale.unlink(missing_ok=True)


def fsync_dir(folder: Path) -> None:
    """Make a rename in ``folder`` durable (POSIX); a no-op where folders can't be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
