"""Replacing files atomically: the temporary file beside the target, and its leftovers.

The store and the workbook are both written the same way: to a temporary file
in the same folder (so the final rename cannot cross file systems), flushed to
disk, then renamed over the old file. A process killed before the rename
leaves only the temporary file, which the next writer, holding the lock,
removes.
"""

from __future__ import annotations

import contextlib
import os
import re
import stat
from collections.abc import Callable
from pathlib import Path

__all__ = ["fsync_dir", "remove_temp_leftovers", "replace_file", "temp_beside"]


def replace_file(path: Path, write: Callable[[Path], object]) -> None:
    """Have ``write`` fill a temporary file, then put it in ``path``'s place in one step.

    A symlink is followed: its target is replaced and the link stays a link. The
    file keeps its permissions and, where this process may set them, its owner
    and group; a new file gets the mode a new file gets here (0666 less the umask).
    """
    real = Path(os.path.realpath(path))
    tmp = temp_beside(real)
    try:
        before = real.stat() if real.exists() else None
        write(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        if before is not None:
            os.chmod(tmp, stat.S_IMODE(before.st_mode))
            with contextlib.suppress(PermissionError):
                os.chown(tmp, before.st_uid, before.st_gid)
        else:
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, real)
    finally:
        tmp.unlink(missing_ok=True)
    fsync_dir(real.parent)


def temp_beside(path: Path) -> Path:
    """A fresh temporary name next to ``path``: ``.crm.json.<pid>.<random>.tmp``."""
    return path.with_name(f".{path.name}.{os.getpid()}.{os.urandom(4).hex()}.tmp")


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
