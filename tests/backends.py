"""Telling the two store backends apart in tests that run on both (the `store` fixture)."""

from __future__ import annotations

from crmkit.store import Store


def on_tinydb(store: Store) -> bool:
    """True when the store is TinyDB files (a test may then also look at them)."""
    from crmkit.store.jsonfiles import JsonFilesBackend

    return isinstance(store.backend, JsonFilesBackend)
