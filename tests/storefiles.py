"""Reading and hand-editing a TinyDB store's files the way a person or a script could.

crm.json is the manifest; each record lives in the segment file the manifest names
for its table and number (``crm.json.d/contacts.0.g7.json``), as plain TinyDB JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any


def manifest(store_path: Path) -> dict[str, Any]:
    return json.loads(store_path.read_text())["_manifest"]["1"]  # type: ignore[no-any-return]


def segment_file(store_path: Path, table: str, number: int) -> Path:
    entry = manifest(store_path)["tables"][table]
    name = entry["segments"][str((number - 1) // entry["size"])]
    return store_path.with_name(store_path.name + ".d") / name


def stored(store_path: Path, record_id: str, table: str) -> dict[str, Any]:
    """The document as it is on disk."""
    number = int(record_id.rsplit("-", 1)[1])
    return json.loads(segment_file(store_path, table, number).read_text())[table][str(number)]  # type: ignore[no-any-return]


def hand_edit(store_path: Path, table: str, record_id: str, change: Callable[[dict[str, Any]], object]) -> None:
    """Change a record in its file with a text editor, behind crmkit's back."""
    number = int(record_id.rsplit("-", 1)[1])
    path = segment_file(store_path, table, number)
    data = json.loads(path.read_text())
    change(data[table][str(number)])
    path.write_text(json.dumps(data))


def hand_delete(store_path: Path, table: str, record_id: str) -> None:
    number = int(record_id.rsplit("-", 1)[1])
    path = segment_file(store_path, table, number)
    data = json.loads(path.read_text())
    del data[table][str(number)]
    path.write_text(json.dumps(data))
