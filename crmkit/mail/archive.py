"""Where mail is kept on disk, beside the store: raw messages, attachments, and the quarantine.

``crm.json`` keeps its mail in ``crm-mail/``:

* ``eml/ab/<sha256>.eml``: every message as received, named by its content, so
  keeping one twice is a no-op;
* ``attachments/<sha256 prefix>/<n>-<safe name>``: the files, under names
  crmkit makes (never a path from the mail);
* ``quarantine/<id>.eml`` and ``<id>.json``: messages that could not be
  filed, with why and where they came from, until replayed.

Kept messages and attachments are named by what they hold, so they are
written once, straight to their name (a create is the dear part of a small
file on most disks; a temporary name and a rename would double it). A file a
kill or a power loss cut short has the wrong size, and the next keep rewrites
it whole, through a temporary name. Making thousands of small files durable
one by one costs two fsyncs each; instead :meth:`MailArchive.sync` flushes them
all at once, and the poller calls it before it commits the batch of records
that point at them. Quarantine notes, which change, are always replaced through
a temporary name.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from crmkit.files import fsync_dir, temp_beside
from crmkit.mail.message import Attachment

__all__ = ["MailArchive", "QuarantinedMessage", "raw_digest"]


def raw_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


@dataclass(frozen=True)
class QuarantinedMessage:
    """A message set aside because it could not be filed."""

    id: str
    path: Path  # the .eml
    reason: str
    origin: str  # where it came from, e.g. "imap://support@mail.example.com/INBOX uid 42"
    at: str

    def as_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "path": str(self.path),
            "reason": self.reason,
            "origin": self.origin,
            "at": self.at,
        }


class MailArchive:
    """The mail folder of one store."""

    def __init__(self, store_path: str | os.PathLike[str]) -> None:
        store_path = Path(store_path)
        self.root = store_path.parent / f"{store_path.stem}-mail"
        self._unsynced = False
        self._folders: set[Path] = set()  # made already: one mkdir per folder, not per file

    def _folder(self, folder: Path) -> None:
        if folder not in self._folders:
            # private: mail and its attachments are for the CRM's users, not every local account
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)  # parents= gives parents 0o777
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            self._folders.add(folder)

    def _keep(self, path: Path, data: bytes) -> None:
        """Write a file named by its content, unless it is there already, whole."""
        self._folder(path.parent)
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            if path.stat().st_size != len(data):  # cut short by a kill or a power loss
                self._write(path, data)
            return
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
        except BaseException:
            path.unlink(missing_ok=True)
            raise
        self._unsynced = True

    def _write(self, path: Path, data: bytes, *, durable: bool = False) -> None:
        self._folder(path.parent)
        tmp = temp_beside(path)
        try:
            with os.fdopen(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb") as fh:
                fh.write(data)
                if durable:
                    fh.flush()
                    os.fsync(fh.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        if durable:
            fsync_dir(path.parent)
        else:
            self._unsynced = True

    def sync(self) -> None:
        """Make every file written since the last call durable (before records point at them)."""
        if self._unsynced:
            os.sync()
            self._unsynced = False

    def relative(self, path: Path) -> str:
        """How records name a kept file: relative to the store's folder, so the pair can move together."""
        return str(path.relative_to(self.root.parent))

    def keep_raw(self, raw: bytes) -> str:
        """Keep a message's bytes; returns the path records refer to it by."""
        digest = raw_digest(raw)
        path = self.root / "eml" / digest[:2] / f"{digest}.eml"
        self._keep(path, raw)
        return self.relative(path)

    def keep_attachments(self, raw: bytes, attachments: list[Attachment]) -> list[dict[str, Any]]:
        """Keep a message's attachments under names crmkit chooses; describe each for the activity."""
        folder = self.root / "attachments" / raw_digest(raw)[:16]
        kept: list[dict[str, Any]] = []
        for number, attachment in enumerate(attachments, start=1):
            entry: dict[str, Any] = {
                "name": attachment.filename,
                "content_type": attachment.content_type,
                "size": attachment.size,
                "path": None,
            }
            if attachment.data is not None:
                path = folder / f"{number}-{attachment.filename}"
                self._keep(path, attachment.data)
                entry["path"] = self.relative(path)
            kept.append(entry)
        return kept

    def quarantine(self, raw: bytes, *, reason: str, origin: str) -> QuarantinedMessage:
        """Set a message aside with why; the same message quarantined twice is kept once."""
        qid = raw_digest(raw)[:16]
        path = self.root / "quarantine" / f"{qid}.eml"
        at = datetime.now(UTC).isoformat(timespec="seconds")
        if not path.exists():
            self._write(path, raw, durable=True)
        note = {"reason": reason, "origin": origin, "at": at}
        note_bytes = json.dumps(note, ensure_ascii=False, indent=1).encode()
        self._write(path.with_suffix(".json"), note_bytes, durable=True)
        return QuarantinedMessage(qid, path, reason, origin, at)

    def quarantined(self) -> list[QuarantinedMessage]:
        folder = self.root / "quarantine"
        items = []
        for path in sorted(folder.glob("*.eml")) if folder.is_dir() else []:
            try:
                note = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                note = {}
            items.append(
                QuarantinedMessage(
                    path.stem, path, note.get("reason", "?"), note.get("origin", "?"), note.get("at", "?")
                )
            )
        return items

    def release(self, item: QuarantinedMessage) -> None:
        """Forget a quarantined message once it has been filed."""
        item.path.unlink(missing_ok=True)
        item.path.with_suffix(".json").unlink(missing_ok=True)
