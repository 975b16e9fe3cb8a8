"""Small helpers for the hot paths."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["paused_gc"]


@contextmanager
def paused_gc() -> Iterator[None]:
    """Pause the cyclic garbage collector while many small acyclic objects are made.

    Reading a store or a workbook makes hundreds of thousands of dicts, lists
    and strings; the collector would rescan the growing heap again and again
    for cycles that JSON and cell values cannot have. Reference counting still
    frees memory as usual.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
