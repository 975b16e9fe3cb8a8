"""``crmkit store copy``: move a CRM between stores (TinyDB files, PostgreSQL), verified.

Everything a store holds is copied as it is: every record table (archived
records too, under their own numbers), the counters (id sequences, invoice and
quote number counters, the revision) and crmkit's bookkeeping tables (sync
state, the poller's progress, campaign journals). So the copy goes on where
the source stopped: the next contact gets the same id, the next invoice the
same number.

The source is read inside one of its transactions, so no crmkit writer changes
it meanwhile and the copy is of one moment; the destination is written in one
transaction, so a copy that fails leaves it as it was. A destination that
already holds records or bookkeeping is refused (a copy never merges two
CRMs); ``force`` replaces it: a PostgreSQL database is emptied in the same
transaction, a TinyDB store's files are moved aside first
(``crm.json.replaced-<time>``, itself an openable store).

Then the destination is read back and each table's count and checksum
(sha256 over the canonical JSON of each document in number order, of each
bookkeeping document in creation order) compared with the source's. A
mismatch is a :class:`CopyMismatchError`.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson

from crmkit.errors import StoreError
from crmkit.records.schema import RECORD_TYPES
from crmkit.store.backend import Backend, Doc
from crmkit.store.store import Store

__all__ = ["CopyMismatchError", "CopyResult", "TableSum", "checksums", "copy_store"]

META = "_meta"


class CopyMismatchError(StoreError):
    """The destination read back differs from the source."""


@dataclass(frozen=True)
class TableSum:
    """How many documents a table holds and the sha256 of their canonical JSON."""

    count: int
    sha256: str


@dataclass
class CopyResult:
    """What ``copy_store`` copied, with each table's count and checksum (the same on both sides)."""

    source: str
    destination: str
    tables: dict[str, TableSum] = field(default_factory=dict)
    replaced: str | None = None  # where a TinyDB destination's old files went (force)
    seconds: float = 0.0

    def as_json(self) -> dict[str, Any]:
        return {
            "source": self.source,
            "destination": self.destination,
            "verified": True,
            "replaced": self.replaced,
            "seconds": round(self.seconds, 3),
            "tables": {name: {"count": s.count, "sha256": s.sha256} for name, s in self.tables.items()},
        }


def _canonical(doc: Any) -> bytes:
    return orjson.dumps(doc, option=orjson.OPT_SORT_KEYS) + b"\n"


def _sum(docs: Iterable[Doc]) -> TableSum:
    digest = hashlib.sha256()
    count = 0
    for doc in docs:
        digest.update(_canonical(doc))
        count += 1
    return TableSum(count, digest.hexdigest())


def _record_tables() -> list[str]:
    return [rt.table for rt in RECORD_TYPES.values()]


def _state_names(backend: Backend) -> list[str]:
    """The bookkeeping tables a backend holds; the Backend protocol has no call for it."""
    names = getattr(backend, "state_names", None)
    if names is not None:
        return list(names())
    manifest = getattr(backend, "_man", None)  # the TinyDB files: the manifest names them
    if manifest is not None:
        return sorted(manifest().get("states", {}))
    raise StoreError(f"cannot list the bookkeeping tables of {backend.location}")


def checksums(store: Store) -> dict[str, TableSum]:
    """Each record table's, the counters' and each bookkeeping table's count and checksum."""
    backend = store.backend
    sums = {table: _sum(backend.scan(table)) for table in _record_tables()}
    sums[META] = _sum([backend.meta()])
    for name in _state_names(backend):
        sums[f"_{name}"] = _sum(backend.states(name))
    return sums


def _held(store: Store) -> int:
    """Records and bookkeeping documents in a store: zero for a new or freshly created one."""
    backend = store.backend
    held = sum(sum(backend.count(table)) for table in _record_tables())
    return held + sum(len(backend.states(name)) for name in _state_names(backend))


def _set_aside(path: Path) -> Path:
    """Move a TinyDB store's manifest and folder aside, under its lock; where they went."""
    from filelock import FileLock, Timeout

    from crmkit.store.jsonfiles import data_folder

    aside = path.with_name(f"{path.name}.replaced-{time.strftime('%Y%m%dT%H%M%S')}")
    try:
        with FileLock(str(path.with_name(path.name + ".lock")), timeout=30):
            if data_folder(path).exists():
                os.replace(data_folder(path), data_folder(aside))
            os.replace(path, aside)
    except Timeout:
        raise StoreError(f"{path} is locked by another crmkit process; try again") from None
    return aside


def _copy_table(source: Backend, destination: Backend, table: str) -> Iterator[Doc]:
    for doc in source.scan(table):
        number = int(str(doc["id"]).rsplit("-", 1)[1])
        destination.put(table, number, doc, None)
        yield doc


def copy_store(source: Store, destination: Store, *, force: bool = False) -> CopyResult:
    """Copy every table, the counters and the bookkeeping from ``source`` to ``destination``, verified.

    ``destination`` must be empty (no records, no bookkeeping) unless ``force``, which
    replaces what it holds. Raises :class:`CopyMismatchError` if the destination read back
    differs from the source.
    """
    started = time.monotonic()
    src, dst = source.backend, destination.backend
    if src.location == dst.location:
        raise StoreError(f"{src.location} is both the source and the destination")
    if not source.exists_on_disk():
        raise StoreError(f"no store at {src.location} to copy")
    result = CopyResult(src.location, dst.location)
    from crmkit.store.jsonfiles import JsonFilesBackend

    if force and isinstance(dst, JsonFilesBackend) and dst.exists() and _held(destination):
        result.replaced = str(_set_aside(dst.path))
    sums: dict[str, TableSum] = {}
    with src.transaction(), dst.transaction():
        held = _held(destination)
        if held:
            clear = getattr(dst, "clear", None)
            if not force or clear is None:
                raise StoreError(
                    f"{dst.location} already holds a CRM ({held} records and bookkeeping documents); "
                    "copy into an empty store, or pass --force to replace it"
                )
            clear()
        dst.create(_record_tables())
        for table in _record_tables():
            sums[table] = _sum(_copy_table(src, dst, table))
        meta = orjson.loads(orjson.dumps(src.meta()))  # a copy: the source's is live
        target = dst.meta()
        target.clear()
        target.update(meta)
        sums[META] = _sum([meta])
        for name in _state_names(src):
            docs = src.states(name)
            for doc in docs:
                dst.set_state(name, str(doc["key"]), {k: v for k, v in doc.items() if k != "key"})
            sums[f"_{name}"] = _sum(docs)
        mark_changed = getattr(dst, "mark_changed", None)
        if mark_changed is not None:
            mark_changed()  # the TinyDB files commit the counters alone only when told
    result.seconds = time.monotonic() - started
    result.tables = sums
    _verify(result, checksums(destination))
    for table in _record_tables():
        if sum(dst.count(table)) != sums[table].count:
            raise CopyMismatchError(
                f"copy to {dst.location} does not match {src.location}: {table} counts "
                f"{sum(dst.count(table))} documents, {sums[table].count} were copied"
            )
    return result


def _verify(result: CopyResult, found: dict[str, TableSum]) -> None:
    wrong = []
    for name in sorted(set(result.tables) | set(found)):
        want, got = result.tables.get(name), found.get(name)
        if want == got:
            continue
        if want is None or got is None or want.count != got.count:
            wrong.append(f"{name} has {got.count if got else 0} documents, not {want.count if want else 0}")
        else:
            wrong.append(f"{name} checksum {got.sha256[:12]} is not {want.sha256[:12]}")
    if wrong:
        raise CopyMismatchError(
            f"copy to {result.destination} does not match {result.source}: {'; '.join(wrong)}; "
            "the destination is left as written: look at it, or copy again with --force"
        )
