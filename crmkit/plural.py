"""A count with its noun in the right number, for every message crmkit prints."""

from __future__ import annotations

__all__ = ["counted"]


def counted(n: int, one: str, many: str | None = None) -> str:
    """``1 deal``, ``2 deals``, ``0 activities`` (give ``many`` where adding an s is wrong)."""
    return f"{n} {one if n == 1 else many or one + 's'}"
