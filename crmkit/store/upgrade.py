"""Moving a store written in the one-file format (1) into format 2's segment files.

Format 1 kept every table in ``crm.json`` itself. The first process that opens
such a store with this release, or ``crmkit store upgrade``, copies the file to
``crm.json.v1-backup``, writes each table's documents into segment files and
replaces ``crm.json`` with the manifest, all under the store's lock, in one
commit: a kill at any moment leaves either the old file or the upgraded store.

The same path takes in tables plain TinyDB added to ``crm.json`` of a format-2
store (``TinyDB("crm.json").table("contacts").insert(...)``): their documents
join the segments, and a number already taken gets the next free one.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from crmkit.errors import StoreError
from crmkit.files import fsync_dir
from crmkit.records.schema import RECORD_TYPES
from crmkit.store.storage import Tables

if TYPE_CHECKING:
    from crmkit.store.jsonfiles import JsonFilesBackend

__all__ = ["UpgradeResult", "absorb_loose_tables", "backup_path", "check_layout", "upgrade_store"]


@dataclass
class UpgradeResult:
    """What ``crmkit store upgrade`` did: from which format, the backup, the documents moved per table."""

    path: Path
    upgraded: bool
    from_format: int
    to_format: int
    backup: Path | None = None
    tables: dict[str, int] = field(default_factory=dict)

    def as_json(self) -> dict[str, object]:
        return {
            "store": str(self.path),
            "upgraded": self.upgraded,
            "from_format": self.from_format,
            "to_format": self.to_format,
            "backup": str(self.backup) if self.backup else None,
            "tables": self.tables,
        }


def upgrade_store(path: Path, *, lock_timeout: float = 30.0) -> UpgradeResult:
    """Bring the TinyDB store at ``path`` to the current format now (opening it would do the same)."""
    from crmkit.store.jsonfiles import FORMAT, JsonFilesBackend

    if not path.is_file():
        raise StoreError(f"no store at {path}")
    backend = JsonFilesBackend(path, lock_timeout=lock_timeout)
    try:
        with backend.transaction():
            pass  # taking in the tables crm.json holds itself is what a transaction does first
        done = backend.upgraded
    finally:
        backend.close()
    if done is None:
        return UpgradeResult(path, False, FORMAT, FORMAT)
    backup = done.get("backup")
    return UpgradeResult(
        path, True, int(done["from_format"]), FORMAT, Path(backup) if backup else None, dict(done["tables"])
    )


def backup_path(path: Path) -> Path:
    """Where the format-1 file is kept: ``crm.json.v1-backup`` (``.2``, ``.3`` ... if taken)."""
    candidate = path.with_name(path.name + ".v1-backup")
    n = 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.name}.v1-backup.{n}")
    return candidate


def check_layout(path: Path, data: Tables) -> None:
    """Refuse a file that is JSON but not a store, naming what is wrong; fill in missing ids."""
    for table, docs in data.items():
        if not isinstance(docs, dict):
            raise StoreError(f"{path}: table {table!r} is not a JSON object of documents")
        rt = RECORD_TYPES.get(table)
        for key, doc in docs.items():
            if not isinstance(doc, dict):
                raise StoreError(f"{path}: document {key!r} of table {table!r} is not a JSON object")
            if rt is None:
                continue
            if not key.isdigit():
                raise StoreError(f"{path}: document id {key!r} of table {table!r} is not a number")
            doc.setdefault("id", f"{rt.prefix}-{int(key)}")  # a document added by plain TinyDB


def absorb_loose_tables(backend: JsonFilesBackend, data: Tables) -> None:
    """Move the record and bookkeeping tables ``crm.json`` holds itself into segment files.

    Called inside the backend's transaction, which commits the result.
    """
    from crmkit.store.jsonfiles import MANIFEST, _loose_tables

    loose = _loose_tables(data)
    check_layout(backend.path, {t: data[t] for t in loose})
    first_format = MANIFEST not in data
    upgraded: dict[str, Any] = {"from_format": 1 if first_format else 2, "tables": {}}
    if first_format:
        backup = backup_path(backend.path)
        # Copied whole under a working name first, then renamed: a run killed mid-copy must
        # not leave a backup that looks complete and is not (the next run, under the same
        # lock, writes the working name over).
        partial = backend.path.with_name(backend.path.name + ".v1-backup.partial")
        shutil.copy2(backend.path, partial)
        with open(partial, "rb+") as fh:
            os.fsync(fh.fileno())
        os.rename(partial, backup)
        fsync_dir(backup.parent)
        upgraded["backup"] = str(backup)
    meta = backend.meta()
    sequences = meta.setdefault("sequences", {})
    for table in loose:
        docs = data[table]
        if table in RECORD_TYPES:
            rt = RECORD_TYPES[table]
            for key in sorted(docs, key=int):
                doc = docs[key]
                number = int(key)
                if not first_format and backend.get(table, number) is not None:
                    number = max(int(sequences.get(table, 0)), _last_number(backend, table)) + 1
                    doc["id"] = f"{rt.prefix}-{number}"
                backend.put(table, number, doc, None)
                sequences[table] = max(number, int(sequences.get(table, 0)))
        else:
            name = table[1:]
            for key in sorted(docs, key=lambda k: (not k.isdigit(), int(k) if k.isdigit() else 0, k)):
                doc = docs[key]
                backend.set_state(name, str(doc.get("key", key)), doc)
        upgraded["tables"][table] = len(docs)
        del data[table]
    backend.upgraded = upgraded
    backend.mark_changed()


def _last_number(backend: JsonFilesBackend, table: str) -> int:
    last = 0
    for doc in backend.scan(table):
        last = max(last, int(str(doc.get("id", "0")).rsplit("-", 1)[-1] or 0))
    return last
