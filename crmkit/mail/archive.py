"""Where mail is kept on disk, beside the store: raw messages, attachments, and the quarantine.

``crm.json`` keeps its mail in ``crm-mail/``:

* ``packs/<time>-<pid>-<tag>.pack``: every message as received, appended to a
  pack file of the process that kept it. Each entry is a line
  ``crmkit-pack <sha256> <length>`` then the message's bytes, unchanged, then a
  newline. An activity's ``raw_message`` names its entry as
  ``crm-mail/packs/NAME.pack#OFFSET``; ``crmkit activities eml`` writes it out as
  an .eml file (:meth:`MailArchive.read` reads it, checking its digest).
  Older stores named ``eml/ab/<sha256>.eml`` files instead, which read as before.
* ``attachments/<sha256 prefix>/<n>-<safe name>``: the files, under names
  crmkit makes (never a path from the mail);
* ``quarantine/<id>.eml`` and ``<id>.json``: messages that could not be
  filed, with why and where they came from, until replayed.

Why packs: creating a file is the dear part of keeping a small message, and
making ten thousand files durable needs a flush of the whole system; appending
to one file and flushing it once per batch costs a fraction of that (issue 14).
A pack is only appended to, by one process; an entry a kill cut short is at the
end of a pack nobody writes to again, and no record points at it, because the
poller makes the pack durable (:meth:`MailArchive.sync`) before it commits the
records that point into it. Attachments, still files of their own, are written
once, straight to their name; a file a kill cut short has the wrong size, and
the next keep rewrites it whole. Quarantine notes, which change, are replaced
through a temporary name.
"""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from crmkit.errors import CrmkitError
from crmkit.files import fsync_dir, temp_beside
from crmkit.mail.message import Attachment

if TYPE_CHECKING:
    from crmkit.store import Store

__all__ = ["MailArchive", "QuarantinedMessage", "export_messages", "kept_message", "raw_digest"]


def raw_digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


PACK_MAGIC = b"crmkit-pack"
#: A pack past this size is closed and the next message starts a new one.
PACK_BYTES = 256 * 1024 * 1024


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
        self._start()

    def _start(self) -> None:
        self._unsynced = False  # files written and not yet flushed (attachments)
        self._folders: set[Path] = set()  # made already: one mkdir per folder, not per file
        self._pack: IO[bytes] | None = None  # this process's pack, open for appending
        self._pack_path: Path | None = None
        self._pack_unsynced = False
        self._pack_new = False  # made since the last sync: its folder entry must be flushed too
        self._kept: dict[str, str] = {}  # digest -> reference, for what this process kept
        # poll --idle files several mailboxes on threads that share one archive: an entry's
        # header, bytes and offset must come from one writer at a time
        self._pack_lock = threading.Lock()

    def __getstate__(self) -> dict[str, Any]:
        """What a worker process needs: where the archive is, not this process's open pack."""
        return {"root": str(self.root)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.root = Path(state["root"])
        self._start()

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
        """Make everything kept since the last call durable (before records point at it)."""
        with self._pack_lock:
            self._sync_pack()
        if self._unsynced:  # attachment files: many small ones, so one flush of them all
            os.sync()
            self._unsynced = False

    def _sync_pack(self) -> None:
        if self._pack is not None and self._pack_unsynced:
            self._pack.flush()
            os.fsync(self._pack.fileno())
            if self._pack_new and self._pack_path is not None:
                fsync_dir(self._pack_path.parent)
                self._pack_new = False
            self._pack_unsynced = False

    def close(self) -> None:
        """Close this process's pack (a new keep opens another)."""
        with self._pack_lock:
            self._close_pack()

    def _close_pack(self) -> None:
        if self._pack is not None:
            self._sync_pack()
            self._pack.close()
            self._pack = None

    def relative(self, path: Path) -> str:
        """How records name a kept file: relative to the store's folder, so the pair can move together."""
        return str(path.relative_to(self.root.parent))

    def _open_pack(self) -> IO[bytes]:
        if self._pack is not None and self._pack.tell() < PACK_BYTES:
            return self._pack
        self._close_pack()
        folder = self.root / "packs"
        self._folder(folder)
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        path = folder / f"{stamp}-{os.getpid()}-{secrets.token_hex(3)}.pack"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND, 0o600)
        self._pack = os.fdopen(fd, "ab", buffering=1024 * 1024)
        self._pack_path, self._pack_new = path, True
        return self._pack

    def keep_raw(self, raw: bytes) -> str:
        """Keep a message's bytes; returns the reference records name it by (see the module doc)."""
        digest = raw_digest(raw)
        with self._pack_lock:
            return self._append(raw, digest)

    def _append(self, raw: bytes, digest: str) -> str:
        kept = self._kept.get(digest)
        if kept is not None:  # the same message again in this run (a batch filed one by one)
            return kept
        pack = self._open_pack()
        assert self._pack_path is not None
        offset = pack.tell()
        pack.write(b"%s %s %d\n" % (PACK_MAGIC, digest.encode(), len(raw)))
        pack.write(raw)
        pack.write(b"\n")
        self._pack_unsynced = True
        reference = f"{self.relative(self._pack_path)}#{offset}"
        self._kept[digest] = reference
        return reference

    def read(self, reference: str) -> bytes:
        """A kept message's bytes, by the reference an activity has (a pack entry or an .eml)."""
        path_text, _, offset_text = reference.partition("#")
        path = self.root.parent / path_text
        if not path.resolve().is_relative_to(self.root.resolve()):  # a hand-edited record
            raise CrmkitError(f"{reference}: not in the mail archive {self.root}")
        try:
            if not offset_text:
                return path.read_bytes()
            with self._pack_lock:
                if self._pack is not None and self._pack_path == path:
                    self._pack.flush()
            with path.open("rb") as fh:
                fh.seek(int(offset_text))
                magic, digest, length = fh.readline().split()
                raw = fh.read(int(length))
        except (OSError, ValueError) as exc:
            raise CrmkitError(f"cannot read the kept message {reference}: {exc}") from None
        if magic != PACK_MAGIC or raw_digest(raw) != digest.decode():
            raise CrmkitError(f"the kept message {reference} is damaged (its digest does not match)")
        return raw

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


def kept_message(store: Store, archive: MailArchive, activity_id: str) -> bytes:
    """The message an email activity logged, as it was received or sent (an .eml's bytes)."""
    activity = store.get(activity_id)
    reference = activity.get("raw_message")
    if not reference:
        raise CrmkitError(f"{activity['id']} kept no message (a note, a call, or mail logged by hand)")
    return archive.read(str(reference))


def export_messages(
    store: Store, archive: MailArchive, activity_ids: list[str] | None, folder: Path
) -> list[Path]:
    """Write each activity's message to ``folder`` as ``<id>.eml`` (None: every activity that kept one)."""
    if activity_ids is None:
        activity_ids = [str(a["id"]) for a in store.all("activities", archived=True) if a.get("raw_message")]
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for activity_id in activity_ids:
        data = kept_message(store, archive, activity_id)
        path = folder / f"{store.get(activity_id)['id']}.eml"
        path.write_bytes(data)
        written.append(path)
    return written
