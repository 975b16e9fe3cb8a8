"""The embedded backend: TinyDB JSON files that a command reads only as much of as it needs.

Layout (format 2; ``docs/store-design.md`` says why)::

    crm.json                 the manifest: which files hold each table, index and
                             bookkeeping table, the counters (``_meta``), the counts
    crm.json.d/
      contacts.0.g41.json    records 1-1000 of contacts, as TinyDB JSON
      activities.7.g52.json  activities 1751-2000 (activities go 250 to a file)
      contacts.email.3.g41.json   one bucket of the email index (key -> ids)
      _sync.g40.json         a bookkeeping table (sync state)

Every file is TinyDB JSON (``TinyDB(path)`` opens it). Files under ``crm.json.d``
are never changed once written: a commit writes new files, named by the new
generation, for what it changed, then replaces the manifest in one step. The
manifest is the single commit point: a process killed before it leaves the
old manifest naming the old, whole files; the new files it had written are
removed by the next writer. Superseded files are removed a while later
(readers that read the old manifest may still be reading them; one that misses
a file rereads the manifest).

A record's file follows from its number, an index key's bucket from a hash
of the key, so a look-up opens the manifest, one index bucket and one
segment. A write costs what it changes: one segment of a few hundred KB and a
few buckets, however large the store grows.
"""

from __future__ import annotations

import contextlib
import os
import re
import time
import zlib
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import orjson

from crmkit.errors import StoreError
from crmkit.perf import paused_gc
from crmkit.records.schema import RECORD_TYPES
from crmkit.store.backend import Doc, empty_meta
from crmkit.store.buckets import (
    BUCKET_BYTES,
    EMPTY_DELTA,
    EMPTY_PACKED,
    ParsedFiles,
    bucket_of,
    find_packed,
    ids_of,
    packed,
    split_count,
    unpacked,
)
from crmkit.store.keys import INDEXES
from crmkit.store.storage import AtomicJSONStorage, Tables

__all__ = ["FORMAT", "JsonFilesBackend", "data_folder"]

FORMAT = 2
_GENERATION = re.compile(r"\.g(\d+)\.json$")
MANIFEST = "_manifest"
META = "_meta"
#: Records per segment file. Activities carry mail text (1-2 KB each), so fewer go in a file.
SEGMENT_SIZE = {"activities": 250}
DEFAULT_SEGMENT_SIZE = 1000
#: An index's delta file past this many bytes is merged into its buckets at the next commit.
DELTA_BYTES = 256 * 1024
#: Look-ups in one index bucket after which it is kept as a dict rather than searched as text.
HOT_BUCKET_LOOKUPS = 16
#: How long a superseded file is kept for readers still working from an older manifest.
GRACE_SECONDS = 30.0
#: How many bytes of files to keep parsed in memory between calls (parsed, a segment takes ~4x its bytes).
CACHE_BYTES = 32 * 1024 * 1024


def data_folder(path: Path) -> Path:
    """Where the files of the store ``path`` live: ``crm.json.d`` beside ``crm.json``."""
    return path.with_name(path.name + ".d")


def _file_label(name: str) -> str:
    return name.replace(":", "-")


class JsonFilesBackend:
    """A Store's documents in TinyDB JSON files: a manifest and immutable segments."""

    def __init__(self, path: str | os.PathLike[str], *, lock_timeout: float = 30.0) -> None:
        self.storage = AtomicJSONStorage(path, lock_timeout=lock_timeout)
        self.path = self.storage.path
        self.folder = data_folder(self.path)
        self.location = str(self.path)
        self.lock_timeout = lock_timeout
        self._cache = ParsedFiles(CACHE_BYTES)
        self._seen_generation = -1
        self._manifest: Doc = {}
        # what the open transaction changed, written at its end
        self._segments: dict[tuple[str, int], dict[str, Doc]] = {}
        # changed index keys (table, index) -> {"active"|"archived": {key: ids}}: the overlay
        self._deltas: dict[tuple[str, str], Doc] = {}
        self._states: dict[tuple[str, int], dict[str, Doc]] = {}
        # key -> doc id, per bucket: of changed buckets by (name, number), of files by file name
        self._state_keys: dict[tuple[str, int], dict[str, str]] = {}
        self._file_keys: dict[str, dict[str, str]] = {}
        self._bucket_hits: dict[str, int] = {}
        self._hot_buckets: dict[str, Doc] = {}
        self._changed = False
        # Hand edits: the checksum of each file as read or written, by name, and whether each
        # segment the open transaction changes started from a file crmkit wrote (see vouched)
        self._sums: dict[str, int] = {}
        self._base_vouched: dict[tuple[str, int], bool] = {}
        self._absorbing = False
        #: what the last upgrade of a format-1 store did (crmkit store upgrade reports it)
        self.upgraded: dict[str, Any] | None = None

    # -- the manifest -------------------------------------------------------

    def _data(self) -> Tables:
        data = self.storage.read()
        assert data is not None
        if self.storage.generation != self._seen_generation:
            self._seen_generation = self.storage.generation
            self._state_keys = {}
            manifest = data.get(MANIFEST, {}).get("1")
            self._manifest = manifest if isinstance(manifest, dict) else _new_manifest()
            named = _named_files(self._manifest)
            self._cache.keep_only(named)
            self._file_keys = {f: keys for f, keys in self._file_keys.items() if f in named}
            self._hot_buckets = {f: b for f, b in self._hot_buckets.items() if f in named}
            self._bucket_hits = {f: n for f, n in self._bucket_hits.items() if f in named}
            self._sums = {f: n for f, n in self._sums.items() if f in named}
            if not self.storage.in_transaction and _loose_tables(data):
                # a store in the old one-file format, or records plain TinyDB added to crm.json
                self._absorb_now()
                return self._data()
        return data

    def mark_changed(self) -> None:
        """Have the open transaction commit even if no document changed (an upgrade)."""
        self._changed = True

    def _man(self) -> Doc:
        self._data()
        return self._manifest

    def exists(self) -> bool:
        return self.path.exists()

    def meta(self) -> Doc:
        data = self._data()
        meta_table = data.get(META)
        if not isinstance(meta_table, dict) or "1" not in meta_table:
            if not self.storage.in_transaction:
                return empty_meta()
            meta_table = data.setdefault(META, {})
            meta_table["1"] = empty_meta()
        meta = meta_table["1"]
        meta.setdefault("sequences", {})
        return meta

    # -- transactions -------------------------------------------------------

    @property
    def in_transaction(self) -> bool:
        return self.storage.in_transaction

    def after_commit(self, callback: Callable[[], None]) -> None:
        self.storage.after_commit(callback)

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.storage.in_transaction:  # joins the open one: nothing to set up (the poller nests a lot)
            yield
            return
        with self.storage.transaction() as data:
            try:
                self._data()
                self._remove_leftovers()
                if _loose_tables(data):
                    self._absorb(data)
                yield
                if self._changed:
                    expired = self._commit(data)
                    self.storage.after_commit(lambda: self._unlink(expired))
            except BaseException:
                self._seen_generation = -1
                raise
            finally:
                self._segments, self._deltas, self._states, self._state_keys = {}, {}, {}, {}
                self._base_vouched = {}
                self._changed = False

    def create(self, tables: list[str]) -> None:
        with self.transaction():
            data = self._data()
            manifest = data.setdefault(MANIFEST, {}).setdefault("1", _new_manifest())
            self._manifest = manifest
            for table in tables:
                _table_entry(manifest, table)
            self.meta()
            self._changed = True
            self.storage.write(data)

    # -- records --------------------------------------------------------------

    def _segment_docs(self, table: str, segment: int) -> dict[str, Doc]:
        docs = self._segments.get((table, segment))
        if docs is not None:
            return docs
        entry = self._man().get("tables", {}).get(table)
        if entry is None:
            return {}
        name = entry["segments"].get(str(segment))
        if name is None:
            return {}
        loaded = self._load(name)
        docs = loaded.get(table, {}) if isinstance(loaded, dict) else {}
        return docs  # type: ignore[no-any-return]

    def _size(self, table: str) -> int:
        entry = self._man().get("tables", {}).get(table)
        if entry is not None:
            return int(entry["size"])
        return SEGMENT_SIZE.get(table, DEFAULT_SEGMENT_SIZE)

    def get(self, table: str, number: int) -> Doc | None:
        if number < 1:
            return None
        return self._segment_docs(table, (number - 1) // self._size(table)).get(str(number))

    def put(self, table: str, number: int, doc: Doc, old: Doc | None) -> None:
        data = self._data()
        manifest = data.setdefault(MANIFEST, {}).setdefault("1", self._manifest or _new_manifest())
        self._manifest = manifest
        entry = _table_entry(manifest, table)
        segment = (number - 1) // int(entry["size"])
        docs = self._segments.get((table, segment))
        if docs is None:
            self._base_vouched[(table, segment)] = not self._absorbing and self._segment_vouched(
                table, segment
            )
            docs = dict(self._segment_docs(table, segment))
            self._segments[(table, segment)] = docs
        docs[str(number)] = doc
        if old is None:
            entry["archived" if doc.get("archived_at") else "active"] += 1
        elif bool(old.get("archived_at")) != bool(doc.get("archived_at")):
            entry["archived" if old.get("archived_at") else "active"] -= 1
            entry["archived" if doc.get("archived_at") else "active"] += 1
        doc_id = doc["id"]
        for name, keys_of in INDEXES.get(table, {}).items():
            before = ("archived" if old.get("archived_at") else "active", keys_of(old)) if old else ("", [])
            after = ("archived" if doc.get("archived_at") else "active", keys_of(doc))
            if before == after:
                continue
            for key in before[1]:
                ids = self._ids(table, name, key, before[0])
                if doc_id in ids:
                    self._set_ids(table, name, key, before[0], [i for i in ids if i != doc_id])
            for key in after[1]:
                ids = self._ids(table, name, key, after[0])
                if doc_id not in ids:
                    self._set_ids(table, name, key, after[0], [*ids, doc_id])
        self._changed = True
        self.storage.write(data)

    def scan(self, table: str) -> Iterator[Doc]:
        entry = self._man().get("tables", {}).get(table)
        segments = {int(s) for s in entry["segments"]} if entry else set()
        segments |= {s for (t, s) in self._segments if t == table}
        for segment in sorted(segments):
            docs = self._segments.get((table, segment))
            if docs is None:
                docs = self._segment_docs(table, segment)
            for key in sorted(docs, key=int):
                yield docs[key]

    # -- hand edits ----------------------------------------------------------------
    #
    # Every segment crmkit writes has its checksum in the manifest (``sums``): a file whose
    # bytes still match holds only what crmkit's fields wrote, and the Store skips checking
    # its records. A file edited by hand (or absorbed from plain TinyDB, or of a store older
    # than the checksums) does not match, and each of its records is checked as it is read.

    def _segment_vouched(self, table: str, segment: int) -> bool:
        base = self._base_vouched.get((table, segment))
        if base is not None:
            return base
        entry = self._man().get("tables", {}).get(table)
        name = entry["segments"].get(str(segment)) if entry else None
        if name is None:
            return True  # no file: nothing to doubt
        expected = entry.get("sums", {}).get(str(segment))
        if expected is None:
            return False
        self._load(name)
        return self._sums.get(name) == expected

    def vouched(self, table: str, number: int) -> bool:
        """True when the record's file is byte for byte as crmkit wrote it: its values need no check."""
        return number >= 1 and self._segment_vouched(table, (number - 1) // self._size(table))

    def scan_checked(self, table: str) -> Iterator[tuple[int, Doc, bool]]:
        """Like :meth:`scan`, with each document's number and whether :meth:`vouched` holds for it."""
        entry = self._man().get("tables", {}).get(table)
        segments = {int(s) for s in entry["segments"]} if entry else set()
        segments |= {s for (t, s) in self._segments if t == table}
        for segment in sorted(segments):
            vouched = self._segment_vouched(table, segment)
            docs = self._segments.get((table, segment))
            if docs is None:
                docs = self._segment_docs(table, segment)
            for key in sorted(docs, key=int):
                yield int(key), docs[key], vouched

    def file_of(self, table: str, number: int) -> str:
        """The file holding a record, for messages that send a person to it."""
        entry = self._man().get("tables", {}).get(table)
        name = entry["segments"].get(str((number - 1) // int(entry["size"]))) if entry else None
        return str(self.folder / name) if name else self.location

    def _vouch(self, manifest: Doc, table: str, segment: int, name: str, docs: dict[str, Doc]) -> None:
        """Record a written segment's checksum, unless it holds records that were never checked."""
        from crmkit.records.stored import stored_problems

        sums = _table_entry(manifest, table).setdefault("sums", {})
        rt = RECORD_TYPES.get(table)
        sound = self._base_vouched.get((table, segment), True) or rt is None
        if not sound and rt is not None:  # from a doubted file: vouch once every record is checked
            sound = not any(stored_problems(rt, doc, int(key)) for key, doc in docs.items())
        if sound:
            sums[str(segment)] = self._sums[name]
        else:
            sums.pop(str(segment), None)

    def count(self, table: str) -> tuple[int, int]:
        entry = self._man().get("tables", {}).get(table)
        if entry is None:
            return 0, 0
        return int(entry["active"]), int(entry["archived"])

    # -- indexes ---------------------------------------------------------------

    def _index_files(self, table: str, index: str) -> tuple[list[str | None], str | None]:
        """An index's bucket files (a power of two of them) and its delta file."""
        entry = self._man().get("indexes", {}).get(f"{table} {index}")
        if entry is None:
            return [None], None
        return entry["buckets"], entry.get("delta")

    def _bucket(self, table: str, index: str, number: int, files: list[str | None]) -> Doc:
        """A bucket as stored: each side one text of lines, a key and its ids (see buckets.packed)."""
        name = files[number]
        if name is None:
            return EMPTY_PACKED
        return self._load(name)["_index"]["1"]  # type: ignore[no-any-return]

    def _delta(self, table: str, index: str) -> Doc:
        """Keys changed since the buckets were last written, with their whole id lists ([] = none left).

        New mail touches keys spread over every bucket of a hashed index; writing the
        changes to one small delta file, merged into the buckets once it grows past
        DELTA_BYTES, keeps each commit's writes in proportion to what it changed.
        """
        changed = self._deltas.get((table, index))
        if changed is not None:
            return changed
        _, name = self._index_files(table, index)
        if name is None:
            return EMPTY_DELTA
        return self._load(name)["_index"]["1"]  # type: ignore[no-any-return]

    def _ids(self, table: str, index: str, key: str, side: str) -> list[str]:
        delta = self._delta(table, index)[side]
        if key in delta:
            return delta[key]  # type: ignore[no-any-return]
        files, _ = self._index_files(table, index)
        number = bucket_of(key, len(files))
        name = files[number]
        if name is None:
            return []
        unpacked_bucket = self._hot_buckets.get(name)
        if unpacked_bucket is not None:
            return ids_of(unpacked_bucket[side].get(key))
        bucket = self._bucket(table, index, number, files)
        # A bucket looked up again and again (the poller's message ids) is worth a dict;
        # a command's one look-up is cheaper as a search of the packed text.
        self._bucket_hits[name] = hits = self._bucket_hits.get(name, 0) + 1
        if hits >= HOT_BUCKET_LOOKUPS:
            self._hot_buckets[name] = unpacked(bucket)
        return find_packed(bucket[side], key)

    def _unpacked_copy(self, table: str, index: str, number: int, files: list[str | None]) -> Doc:
        """A bucket as dicts to change: a copy of its hot form if it has one (a dict copy is cheap)."""
        hot = self._hot_buckets.get(files[number] or "")
        if hot is not None:
            return {side: dict(hot[side]) for side in ("active", "archived")}
        return unpacked(self._bucket(table, index, number, files))

    def _set_ids(self, table: str, index: str, key: str, side: str, ids: list[str]) -> None:
        delta = self._deltas.get((table, index))
        if delta is None:
            base = self._delta(table, index)
            delta = {"active": dict(base["active"]), "archived": dict(base["archived"])}
            self._deltas[(table, index)] = delta
        delta[side][key] = ids

    def lookup(self, table: str, index: str, key: str, *, archived: bool = False) -> list[str]:
        if index not in INDEXES.get(table, {}):
            raise StoreError(f"{table} have no index {index!r}")
        return list(self._ids(table, index, key, "archived" if archived else "active"))

    # -- bookkeeping ---------------------------------------------------------------

    def _state_files(self, name: str) -> list[str | None]:
        entry = self._man().get("states", {}).get(name)
        return entry["files"] if entry else [None]

    def _state_bucket(self, name: str, number: int, files: list[str | None]) -> dict[str, Doc]:
        changed = self._states.get((name, number))
        if changed is not None:
            return changed
        file = files[number]
        if file is None:
            return {}
        return self._load(file).get(f"_{name}", {})  # type: ignore[no-any-return]

    def _bucket_keys(self, name: str, number: int, files: list[str | None]) -> dict[str, str]:
        keys = self._state_keys.get((name, number))
        if keys is not None:
            return keys
        file = files[number]
        if file is None:
            return {}
        keys = self._file_keys.get(file)
        if keys is None:
            docs = self._state_bucket(name, number, files)
            keys = {str(doc.get("key")): doc_id for doc_id, doc in docs.items()}
            self._file_keys[file] = keys
        return keys

    def state(self, name: str, key: str) -> Doc | None:
        files = self._state_files(name)
        number = bucket_of(key, len(files))
        doc_id = self._bucket_keys(name, number, files).get(key)
        return None if doc_id is None else self._state_bucket(name, number, files).get(doc_id)

    def states(self, name: str) -> list[Doc]:
        files = self._state_files(name)
        docs: dict[str, Doc] = {}
        for number in range(len(files)):
            docs.update(self._state_bucket(name, number, files))
        return [docs[doc_id] for doc_id in sorted(docs, key=int)]

    def set_state(self, name: str, key: str, value: Mapping[str, Any] | None) -> None:
        data = self._data()
        files = self._state_files(name)
        number = bucket_of(key, len(files))
        bucket = self._states.get((name, number))
        if bucket is None:
            keys = dict(self._bucket_keys(name, number, files))
            bucket = dict(self._state_bucket(name, number, files))
            self._states[(name, number)], self._state_keys[(name, number)] = bucket, keys
        keys = self._state_keys[(name, number)]
        found = keys.get(key)
        if value is None:
            if found is not None:
                bucket.pop(found, None)
                del keys[key]
        else:
            if found is None:
                manifest = data.setdefault(MANIFEST, {}).setdefault("1", self._manifest or _new_manifest())
                self._manifest = manifest
                entry = manifest.setdefault("states", {}).setdefault(name, {"files": [None], "next": 1})
                found = str(entry["next"])
                entry["next"] += 1
                keys[key] = found
            bucket[found] = {**value, "key": key}
        self._changed = True
        self.storage.write(data)

    # -- files -------------------------------------------------------------------

    def _load(self, name: str) -> Any:
        cached = self._cache.get(name)
        if cached is not None:
            return cached
        path = self.folder / name
        try:
            raw = path.read_bytes()
        except FileNotFoundError:
            if self.storage.in_transaction or self.storage.is_current():
                raise StoreError(f"{self.path}: {path} is missing; the store is damaged") from None
            # superseded long enough ago to be removed: this process read an older manifest
            raise StoreError(
                f"{self.path} changed while it was being read ({name} of an older version is gone); run again"
            ) from None
        except OSError as exc:
            raise StoreError(f"cannot read {path}: {exc.strerror}") from None
        self._sums[name] = zlib.adler32(raw)
        try:
            with paused_gc():
                value = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise StoreError(f"{path} is not valid JSON ({exc}); the store is damaged") from None
        self._cache.put(name, value, len(raw))
        return value

    def _write(self, name: str, content: Any) -> int:
        raw = orjson.dumps(content)
        path = self.folder / name
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_BINARY", 0), 0o644)
        try:
            view = memoryview(raw)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        self._cache.put(name, content, len(raw))
        self._sums[name] = zlib.adler32(raw)
        return len(raw)

    def _commit(self, data: Tables) -> list[str]:
        """Write what the transaction changed as new files and point the manifest at them.

        Returns the superseded files whose grace period is over, to remove once committed.
        """
        manifest = data.setdefault(MANIFEST, {}).setdefault("1", self._manifest or _new_manifest())
        generation = int(manifest.get("generation", 0)) + 1
        manifest["generation"] = generation
        manifest["format"] = FORMAT
        retired: list[str] = []
        try:
            self.folder.mkdir(exist_ok=True)
            for (table, segment), docs in sorted(self._segments.items()):
                entry = _table_entry(manifest, table)
                name = f"{table}.{segment}.g{generation}.json"
                self._write(name, {table: docs})
                self._vouch(manifest, table, segment, name, docs)
                old = entry["segments"].get(str(segment))
                entry["segments"][str(segment)] = name
                if old:
                    retired.append(old)
            for table, index in sorted(self._deltas):
                retired += self._commit_index(manifest, table, index, generation)
            for name in sorted({n for (n, _) in self._states}):
                retired += self._commit_states(manifest, name, generation)
        except OSError as exc:
            raise StoreError(f"cannot write the store {self.folder}: {exc.strerror}") from None
        from crmkit.files import fsync_dir

        fsync_dir(self.folder)
        now = time.time()
        waiting = manifest.get("retired", [])
        expired = [name for name, at in waiting if now - at >= GRACE_SECONDS]
        manifest["retired"] = [[name, at] for name, at in waiting if now - at < GRACE_SECONDS]
        manifest["retired"] += [[name, now] for name in retired]
        self._manifest = manifest
        self.storage.write(data)
        return expired

    def _commit_states(self, manifest: Doc, name: str, generation: int) -> list[str]:
        entry = manifest["states"][name]
        files: list[str | None] = list(entry["files"])
        changed = {n: docs for (t, n), docs in self._states.items() if t == name}
        encoded = {n: orjson.dumps(docs) for n, docs in changed.items()}
        retired: list[str] = []
        if any(len(raw) > BUCKET_BYTES and len(changed[n]) > 1 for n, raw in encoded.items()):
            merged: dict[str, Doc] = {}
            for number in range(len(files)):
                merged.update(changed.get(number) or self._state_bucket(name, number, files))
            count = split_count(len(files), len(orjson.dumps(merged)), len(merged))
            if count > len(files):
                changed = {n: {} for n in range(count)}
                for doc_id, doc in merged.items():
                    changed[bucket_of(str(doc.get("key")), count)][doc_id] = doc
                retired, files = [f for f in files if f], [None] * count
        for number, docs in sorted(changed.items()):
            file = f"_{name}.{number}.g{generation}.json"
            self._write(file, {f"_{name}": docs})
            if files[number] and files[number] not in retired:
                retired.append(files[number])  # type: ignore[arg-type]
            files[number] = file
        entry["files"] = files
        return retired

    def _commit_index(self, manifest: Doc, table: str, index: str, generation: int) -> list[str]:
        """Write the index's delta; past DELTA_BYTES, merge it into the buckets (splitting them if big)."""
        files, old_delta = self._index_files(table, index)
        files = list(files)
        delta = self._deltas[(table, index)]
        label = f"{table}.{_file_label(index)}"
        retired = [old_delta] if old_delta else []
        raw = orjson.dumps({"_index": {"1": delta}})
        if len(raw) <= DELTA_BYTES:
            name = f"{label}.delta.g{generation}.json"
            self._write(name, {"_index": {"1": delta}})
            manifest.setdefault("indexes", {})[f"{table} {index}"] = {"buckets": files, "delta": name}
            return retired
        changed: dict[int, Doc] = {}
        for side in ("active", "archived"):
            for key, ids in delta[side].items():
                number = bucket_of(key, len(files))
                bucket = changed.get(number)
                if bucket is None:
                    bucket = self._unpacked_copy(table, index, number, files)
                    changed[number] = bucket
                if ids:
                    bucket[side][key] = ids
                else:
                    bucket[side].pop(key, None)
        texts = {n: packed(b) for n, b in changed.items()}
        if any(
            len(p["active"]) + len(p["archived"]) > BUCKET_BYTES
            and len(changed[n]["active"]) + len(changed[n]["archived"]) > 1
            for n, p in texts.items()
        ):
            merged: Doc = {"active": {}, "archived": {}}
            total = 0
            for number in range(len(files)):
                bucket = changed.get(number) or self._unpacked_copy(table, index, number, files)
                stored = texts.get(number) or self._bucket(table, index, number, files)
                total += len(stored["active"]) + len(stored["archived"])
                for side in ("active", "archived"):
                    merged[side].update(bucket[side])
            count = split_count(len(files), total, len(merged["active"]) + len(merged["archived"]))
            if count > len(files):
                changed = {n: {"active": {}, "archived": {}} for n in range(count)}
                for side in ("active", "archived"):
                    for key, ids in merged[side].items():
                        changed[bucket_of(key, count)][side][key] = ids
                texts = {n: packed(b) for n, b in changed.items()}
                retired += [f for f in files if f]
                files = [None] * count
        for number, bucket in sorted(texts.items()):
            name = f"{label}.{number}.g{generation}.json"
            self._write(name, {"_index": {"1": bucket}})
            old_name = files[number]
            if old_name in self._hot_buckets and number in changed:
                # a bucket the poller looks up all the time stays unpacked under its new name:
                # unpacking it again after every merge was most of a poll into a big store
                self._hot_buckets[name] = changed[number]
                self._bucket_hits[name] = HOT_BUCKET_LOOKUPS
            if old_name and old_name not in retired:
                retired.append(old_name)
            files[number] = name
        manifest.setdefault("indexes", {})[f"{table} {index}"] = {"buckets": files, "delta": None}
        return retired

    def _unlink(self, names: list[str]) -> None:
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.folder / name)

    def _remove_leftovers(self) -> None:
        """Remove what a writer killed before its commit wrote; we hold the lock.

        Only files of a generation after the manifest's: nothing committed is ever touched.
        """
        try:
            present = os.listdir(self.folder)
        except FileNotFoundError:
            return
        generation = int(self._manifest.get("generation", 0))
        self._unlink([name for name in present if _generation_of(name) > generation])

    # -- the old one-file format ------------------------------------------------------

    def _absorb_now(self) -> None:
        with self.transaction():
            pass

    def _absorb(self, data: Tables) -> None:
        """Move tables found in crm.json itself (format 1, or plain TinyDB inserts) into segment files.

        A format-1 store is first copied to ``crm.json.v1-backup``. Numbers are kept; a
        document plain TinyDB added under a number already taken gets the next free one.
        """
        from crmkit.store.upgrade import absorb_loose_tables

        self._absorbing = True  # plain TinyDB's documents: checked as they are read, never vouched for
        try:
            absorb_loose_tables(self, data)
        finally:
            self._absorbing = False

    def close(self) -> None:
        self.storage.close()


def _new_manifest() -> Doc:
    return {"format": FORMAT, "generation": 0, "tables": {}, "indexes": {}, "states": {}, "retired": []}


def _table_entry(manifest: Doc, table: str) -> Doc:
    tables = manifest.setdefault("tables", {})
    entry = tables.get(table)
    if entry is None:
        entry = {
            "size": SEGMENT_SIZE.get(table, DEFAULT_SEGMENT_SIZE),
            "segments": {},
            "active": 0,
            "archived": 0,
        }
        tables[table] = entry
    return entry  # type: ignore[no-any-return]


def _named_files(manifest: Doc) -> set[str]:
    names: set[str] = set()
    for entry in manifest.get("tables", {}).values():
        names.update(entry["segments"].values())
    for entry in manifest.get("indexes", {}).values():
        names.update(f for f in entry["buckets"] if f)
        if entry.get("delta"):
            names.add(entry["delta"])
    for entry in manifest.get("states", {}).values():
        names.update(f for f in entry["files"] if f)
    return names


def _generation_of(name: str) -> int:
    match = _GENERATION.search(name)
    return int(match.group(1)) if match else -1


def _loose_tables(data: Tables) -> list[str]:
    """Tables crm.json holds itself that belong in segment files."""
    return [t for t in data if t in RECORD_TYPES or (t.startswith("_") and t not in (MANIFEST, META))]
