"""Folders a test server's unprivileged user (Dovecot's, PostgreSQL's) must be able to reach."""

from __future__ import annotations

import stat
import tempfile
from pathlib import Path

__all__ = ["let_others_traverse"]


def let_others_traverse(folder: Path, who: str) -> None:
    """Let ``who`` (an unprivileged user) reach ``folder`` through a 0700 temp dir (pytest's).

    Only search permission (o+x) is added, and only below the system temp dir; elsewhere a
    closed parent is an error the caller has to fix.
    """
    temp = Path(tempfile.gettempdir()).resolve()
    for parent in folder.resolve().parents:
        mode = parent.stat().st_mode
        if mode & stat.S_IXOTH:
            continue
        if parent == temp or temp not in parent.parents:
            raise RuntimeError(f"{who} cannot reach {folder}: {parent} is closed to them")
        parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)
