"""The small interface a :class:`~crmkit.store.Store` keeps its documents behind.

``Store`` holds every rule (validation, numbering, duplicates, links); a backend
only keeps documents, the indexes of :mod:`crmkit.store.keys`, the counters and
crmkit's bookkeeping documents, and makes a transaction all-or-nothing. Two
backends implement it: TinyDB JSON files (the embedded default) and PostgreSQL.

Documents are addressed by table and record number (``C-12`` is number 12 of
``contacts``). What ``get`` and ``scan`` return is the stored document itself,
for speed: the Store copies it before handing it out and never changes it.

Every change happens inside :meth:`Backend.transaction`, which, like the old
single-file store, serialises writers (a file lock; a row lock in PostgreSQL),
starts from the latest committed state and commits once at the end, or not at
all when the block raises. Reads outside a transaction see the latest commit.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import AbstractContextManager
from typing import Any, Protocol

__all__ = ["Backend", "Doc", "empty_meta"]

Doc = dict[str, Any]

#: The version of the documents' own shape (fields, ``_meta``), not of a backend's files.
SCHEMA_VERSION = 1


def empty_meta() -> Doc:
    """The counters of a new store: id sequences per table, the revision, number counters."""
    return {"schema_version": SCHEMA_VERSION, "sequences": {}}


class Backend(Protocol):
    """Where a Store's documents live."""

    #: Shown in messages: the store's file, or its URL without the password.
    location: str
    #: How long a writer waits for another one, in seconds.
    lock_timeout: float

    def transaction(self) -> AbstractContextManager[None]:
        """Serialise with other writers, start from the latest commit, commit once at the end.

        Nested transactions join the outer one. If the block raises, nothing is
        committed and the backend forgets the changes made in it.
        """
        ...

    @property
    def in_transaction(self) -> bool: ...

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current transaction is committed, before its lock is let go."""
        ...

    def create(self, tables: list[str]) -> None:
        """Make sure the store exists with these (possibly empty) tables; inside a transaction."""
        ...

    def exists(self) -> bool:
        """True when the store has been created (a typo must not look like an empty CRM)."""
        ...

    # -- records ----------------------------------------------------------

    def get(self, table: str, number: int) -> Doc | None:
        """The stored document, or None. Never change it."""
        ...

    def put(self, table: str, number: int, doc: Doc, old: Doc | None) -> None:
        """Save a document (``old`` is what it replaces, for the indexes); inside a transaction."""
        ...

    def scan(self, table: str) -> Iterator[Doc]:
        """Every document of a table, archived ones too, in record-number order. Never change them."""
        ...

    def count(self, table: str) -> tuple[int, int]:
        """How many active and how many archived documents the table has."""
        ...

    def lookup(self, table: str, index: str, key: str, *, archived: bool = False) -> list[str]:
        """Ids of the active (or, with ``archived``, archived) documents with this index key."""
        ...

    # -- counters and bookkeeping -------------------------------------------

    def meta(self) -> Doc:
        """The counters (``sequences``, ``revision``, ``numbers``); change them only in a transaction."""
        ...

    def state(self, name: str, key: str) -> Doc | None:
        """crmkit's bookkeeping document ``key`` of the table ``_name``, or None. Never change it."""
        ...

    def states(self, name: str) -> list[Doc]:
        """Every bookkeeping document of ``_name``, in the order they were made."""
        ...

    def set_state(self, name: str, key: str, value: Mapping[str, Any] | None) -> None:
        """Save (or, with None, drop) a bookkeeping document; inside a transaction."""
        ...

    def close(self) -> None:
        """Let go of files and connections."""
        ...
