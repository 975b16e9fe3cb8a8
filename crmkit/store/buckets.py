"""Hashed buckets of an index or a bookkeeping table, and the cache of parsed files.

Pure helpers for :mod:`crmkit.store.jsonfiles`: which bucket a key falls in, how an
index bucket is packed into one text per side (so reading it is a string copy, not
thousands of objects), when a table of buckets should split, and a byte-bounded cache.
"""

from __future__ import annotations

import zlib
from collections import OrderedDict
from typing import Any

__all__ = [
    "BUCKET_BYTES",
    "EMPTY_DELTA",
    "EMPTY_PACKED",
    "ParsedFiles",
    "bucket_of",
    "find_packed",
    "ids_of",
    "packed",
    "split_count",
    "unpacked",
]

Doc = dict[str, Any]

#: A bucket past this many bytes of JSON makes its table of buckets split into more.
BUCKET_BYTES = 256 * 1024


def bucket_of(key: str, buckets: int) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) & (buckets - 1)


class ParsedFiles:
    """Parsed files by name, least recently used dropped first past a byte budget."""

    def __init__(self, budget: int) -> None:
        self.budget = budget
        self.used = 0
        self.entries: OrderedDict[str, tuple[Any, int]] = OrderedDict()

    def get(self, name: str) -> Any | None:
        entry = self.entries.get(name)
        if entry is None:
            return None
        self.entries.move_to_end(name)
        return entry[0]

    def put(self, name: str, value: Any, size: int) -> None:
        self.entries[name] = (value, size)
        self.used += size
        while self.used > self.budget and len(self.entries) > 1:
            _, (_, dropped) = self.entries.popitem(last=False)
            self.used -= dropped

    def keep_only(self, names: set[str]) -> None:
        for name in [n for n in self.entries if n not in names]:
            self.used -= self.entries.pop(name)[1]


EMPTY_DELTA: Doc = {"active": {}, "archived": {}}  # shared: never changed
EMPTY_PACKED: Doc = {"active": "", "archived": ""}


def _escape_key(key: str) -> str:
    return key.replace("%", "%25").replace("\t", "%09").replace("\n", "%0A")


def _unescape_key(key: str) -> str:
    return key.replace("%0A", "\n").replace("%09", "\t").replace("%25", "%")


def packed(bucket: Doc) -> Doc:
    """A bucket's keys as one text per side: a line per key, holding the key, a tab and its ids.

    Each line starts with a newline, and tabs, newlines and ``%`` in keys are escaped
    as ``%09``, ``%0A`` and ``%25``, so a look-up finds ``"\\n" + key + "\\t"``.

    Parsing a bucket of 100 KB as a JSON object of lists makes thousands of Python
    objects (about 1.5 ms); as one string it is a copy (tens of microseconds), and a
    look-up is one ``str.find``. A poll looks up message ids spread over every
    bucket, so this is what keeps it from slowing down as the store grows.
    """
    out: Doc = {}
    for side in ("active", "archived"):
        lines = [
            f"{_escape_key(key)}\t{ids if isinstance(ids, str) else ' '.join(ids)}"
            for key, ids in bucket[side].items()
            if ids
        ]
        out[side] = "\n" + "\n".join(lines) + "\n" if lines else ""
    return out


def unpacked(bucket: Doc) -> Doc:
    """A packed bucket as dicts of key -> its ids as one space-separated text (split when asked).

    A bucket of a big store holds thousands of keys and the poller unpacks the ones it
    looks up most: splitting every id list up front, and unescaping keys that hold no
    escape, was most of that cost.
    """
    out: Doc = {}
    for side in ("active", "archived"):
        text = bucket[side]
        pairs = [line.split("\t", 1) for line in text.split("\n") if line]
        if "%" in text:
            out[side] = {_unescape_key(key): ids for key, ids in pairs}
        else:
            out[side] = dict(pairs)
    return out


def ids_of(ids: str | list[str] | None) -> list[str]:
    """The ids of an unpacked entry (a text) or a changed one (a list)."""
    if not ids:
        return []
    return ids.split(" ") if isinstance(ids, str) else list(ids)


def find_packed(text: str, key: str) -> list[str]:
    needle = f"\n{_escape_key(key)}\t"
    start = text.find(needle)
    if start < 0:
        return []
    start += len(needle)
    return text[start : text.index("\n", start)].split(" ")


def split_count(buckets: int, total_bytes: int, entries: int) -> int:
    """Buckets enough for each to be about half of BUCKET_BYTES (a power of two, no more than entries)."""
    count = buckets
    while total_bytes / count > BUCKET_BYTES / 2 and count * 2 <= entries:
        count *= 2
    return count
