"""The store: records in a TinyDB JSON file, one table per record type.

Layout (a contract scripts rely on): one TinyDB table per record type, named
``leads``, ``contacts``, ``accounts``, ``deals``, ``invoices``, ``cases`` and
``activities``; each document holds the record's ``id`` (``C-12``, whose
number is also its TinyDB document id), its fields by name in their JSON form
(Decimal as text, dates as ISO 8601), ``custom`` for columns the schema does
not know, and ``created_at``/``updated_at``/``archived_at``. Tables whose names
start with ``_`` are crmkit's own bookkeeping (id sequences, sync state).

Every change goes through :class:`Store`, which validates it against the
schema, applies the record rules, refuses duplicates and keeps in-memory
indexes (by id, email, phone, invoice number, company name and domain) so
that look-ups never scan the file. Writes happen in transactions: one lock,
one load, one atomic write, however many records change.
"""

from __future__ import annotations

import difflib
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from crmkit.errors import CrmkitError, DuplicateError, FieldError, NotFoundError, StoreError, ValidationError
from crmkit.records.fields import RefField, decimal_to_json
from crmkit.records.matching import company_key, domain_key, email_key
from crmkit.records.query import Condition, matches
from crmkit.records.rules import apply_rules
from crmkit.records.schema import (
    INVOICE,
    RECORD_TYPES,
    RecordType,
    parse_id,
    record_type,
)
from crmkit.records.stored import StoredProblem, stored_problems, without_problems
from crmkit.store.backend import Backend
from crmkit.store.keys import LINKS, UNIQUE_KEY

__all__ = ["Checked", "Store"]

Doc = dict[str, Any]
#: Names each record a hand edit broke, once (a CLI run prints it on stderr).
log = logging.getLogger("crmkit.store")


def _jsonable(value: Any) -> Any:
    """A custom field's value in a form JSON keeps (cells may hold dates or Decimals)."""
    if isinstance(value, Decimal):
        return decimal_to_json(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return str(value)


def _deep(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _deep(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_deep(v) for v in value]
    return value


def _copy(doc: Doc) -> Doc:
    """A copy callers may change freely: nested lists and dicts are copied too."""
    copied = dict(doc)
    for key, value in doc.items():
        if isinstance(value, (dict, list)):
            copied[key] = _deep(value)
    return copied


class _Joined(AbstractContextManager["Store"]):
    """An open transaction, joined: nothing to set up or commit here."""

    __slots__ = ("store",)

    def __init__(self, store: Store) -> None:
        self.store = store

    def __enter__(self) -> Store:
        return self.store

    def __exit__(self, *exc: object) -> None:
        return None


class Store:
    """Records of every type in one TinyDB file.

    ``actor`` is recorded in stage histories (who made a change): ``cli:ana``,
    ``sync:book.xlsx``, ``poller``. ``clock`` returns the current UTC time.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        default_currency: str = "USD",
        actor: str | None = None,
        lock_timeout: float = 30.0,
        clock: Callable[[], datetime] | None = None,
        numbering: Mapping[str, str] | None = None,
        password: str | Callable[[], str | None] | None = None,
        local_folder: str | os.PathLike[str] | None = None,
    ) -> None:
        # password and local_folder matter to a PostgreSQL store only (``path`` a postgresql:// URL):
        # a password, or what gives it, when the URL has none; and the folder for local side files
        self.backend: Backend = open_backend(
            path, lock_timeout=lock_timeout, password=password, local_folder=local_folder
        )
        self.default_currency = default_currency
        #: how new invoice and quote numbers look, by table (crmkit.toml [invoices])
        self.numbering = {**NUMBER_PATTERNS, **(numbering or {})}
        self.actor = actor or f"cli:{_user()}"
        self.clock = clock or (lambda: datetime.now(UTC))
        self._reported: set[tuple[str, str]] = set()

    @property
    def path(self) -> Path:
        """The store's file; side files (mail archive, journals, sync lock) go beside it.

        For a PostgreSQL store, a name in its local folder (``FOLDER/DBNAME.postgresql``)
        that is never created itself: only the side files are.
        """
        local = getattr(self.backend, "path", None)
        return local if isinstance(local, Path) else Path(self.backend.location)

    @property
    def location(self) -> str:
        """Where the store is, for messages: its file, or its URL without the password."""
        return self.backend.location

    @property
    def lock_timeout(self) -> float:
        return self.backend.lock_timeout

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` once the current transaction is committed, before its lock is let go."""
        self.backend.after_commit(callback)

    def close(self) -> None:
        self.backend.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    # -- transactions and raw access ------------------------------------

    def transaction(self) -> AbstractContextManager[Store]:
        """Group changes: one lock and one commit for all of them; nothing is kept if the block raises.

        Inside an open transaction this joins it, at the cost of a plain object: the poller
        opens one per message and per store call within its batch's, thousands a second.
        """
        if self.backend.in_transaction:
            return _Joined(self)
        return self._transaction()

    @contextmanager
    def _transaction(self) -> Iterator[Store]:
        with self.backend.transaction():
            yield self

    def _meta(self) -> Doc:
        return self.backend.meta()

    def _put(self, rt: RecordType, number: int, doc: Doc, old: Doc | None) -> None:
        meta = self._meta()
        meta["revision"] = int(meta.get("revision", 0)) + 1
        doc["_rev"] = meta["revision"]  # lets a sync skip records nobody changed
        self.backend.put(rt.table, number, doc, old)

    def create(self) -> None:
        """Write the store with an empty table for every record type (keeps existing records)."""
        self.backend.create([rt.table for rt in RECORD_TYPES.values()])

    def exists_on_disk(self) -> bool:
        """True once the store has been created."""
        return self.backend.exists()

    @property
    def revision(self) -> int:
        """Goes up with every change to a record: a cheap "has anything changed?" check."""
        return int(self._meta().get("revision", 0))

    def state(self, name: str, key: str) -> dict[str, Any] | None:
        """crmkit's own bookkeeping document ``key`` in the table ``_name`` (e.g. sync state)."""
        return self.backend.state(name, key)

    def states(self, name: str) -> list[dict[str, Any]]:
        """Every bookkeeping document of the table ``_name`` (copies), in the order they were made."""
        return [dict(doc) for doc in self.backend.states(name)]

    def set_state(self, name: str, key: str, value: dict[str, Any] | None) -> None:
        """Save (or, with None, drop) a bookkeeping document; joins or opens a transaction."""
        with self.transaction():
            self.backend.set_state(name, key, value)

    # -- reading ----------------------------------------------------------
    #
    # Every record handed out is checked first (crmkit.records.stored): one a hand edit broke
    # (``"email": 5``, no ``id``) is named once and read without its bad values, so no list,
    # view, report or sync stumbles on it. A TinyDB file crmkit wrote, unchanged, needs no check.

    def _sound(self, rt: RecordType, doc: Doc, number: int | None) -> Doc | None:
        problems = stored_problems(rt, doc, number)
        if not problems:
            return doc
        self._report(rt, doc, number, problems)
        return without_problems(rt, doc, problems, number)

    def _stored(self, rt: RecordType, number: int) -> Doc | None:
        doc = self.backend.get(rt.table, number)
        vouched = getattr(self.backend, "vouched", None)
        if doc is None or (vouched is not None and vouched(rt.table, number)):
            return doc
        return self._sound(rt, doc, number)

    def _records(self, rt: RecordType) -> Iterator[Doc]:
        """Every document of a type, archived too, checked; one with no id nor known number is left out."""
        scan_checked = getattr(self.backend, "scan_checked", None)
        if scan_checked is not None:
            for number, doc, vouched in scan_checked(rt.table):
                sound = doc if vouched else self._sound(rt, doc, number)
                if sound is not None:
                    yield sound
            return
        for doc in self.backend.scan(rt.table):
            sound = self._sound(rt, doc, None)
            if sound is not None:
                yield sound

    def _report(self, rt: RecordType, doc: Doc, number: int | None, problems: list[StoredProblem]) -> None:
        file_of = getattr(self.backend, "file_of", None)
        where = file_of(rt.table, number) if file_of is not None and number is not None else self.location
        record = f"{rt.prefix}-{number}" if number is not None else str(doc.get("id"))
        for problem in problems:
            if problem.field != "id":
                text = f"{record}: {problem.field} {problem.value!r} {problem.problem}; read as empty"
            elif number is None:
                title = doc.get(rt.title_field) or "untitled"
                text = f"a record ({title}) whose id {problem.problem}; left out"
            else:
                shown = "has no id" if problem.value is None else f"has the id {problem.value!r}"
                text = f"record number {number} {shown}; read as {record}"
            if (rt.table, text) not in self._reported:
                self._reported.add((rt.table, text))
                log.warning("warning: %s: %s %s", where, rt.table, text)

    def get(self, record_id: str) -> Doc:
        """The record with this id (archived ones too); NotFoundError if none."""
        rt, number = parse_id(record_id)
        doc = self._stored(rt, number)
        if doc is None:
            raise NotFoundError(f"no {rt.name} {rt.prefix}-{number}")
        return _copy(doc)

    def exists(self, record_id: str) -> bool:
        rt, number = parse_id(record_id)
        return self.backend.get(rt.table, number) is not None

    def all(self, type_name: str, *, archived: bool = False) -> Iterator[Doc]:
        """Every record of a type in id order; archived ones only when asked."""
        rt = record_type(type_name)
        for doc in self._records(rt):
            if archived or not doc.get("archived_at"):
                yield _copy(doc)

    def find(
        self,
        type_name: str,
        conditions: Iterable[Condition] = (),
        *,
        archived: bool = False,
        limit: int | None = None,
    ) -> list[Doc]:
        """Records of a type that meet every condition, in id order.

        A condition on a field the schema does not know is on a custom field; if
        no record of the type has that custom field, it is taken for a typo and
        refused (naming the closest field) rather than matching nothing.
        """
        conds = list(conditions)
        rt = record_type(type_name)
        unknown = {
            c.field
            for c in conds
            if c.field not in rt.by_name
            and c.field not in ("id", "created_at", "updated_at", "archived_at")
            and c.value not in (None, "")  # region= asks for records without one: all of them, then
        }
        if unknown:
            seen = {key for doc in self._records(rt) for key in (doc.get("custom") or {})}
            for name in sorted(unknown - seen):
                hint = difflib.get_close_matches(name, [f.name for f in rt.fields] + sorted(seen), n=1)
                suggestion = f" (did you mean {hint[0]}?)" if hint else ""
                raise CrmkitError(f"no {rt.name} has a field {name!r}{suggestion}")
        found: list[Doc] = []
        for doc in self._candidates(rt, conds, archived):
            if matches(doc, conds):
                found.append(doc)
                if limit is not None and len(found) >= limit:
                    break
        return found

    def _candidates(self, rt: RecordType, conds: list[Condition], archived: bool) -> Iterable[Doc]:
        """The records a find must look at: by a link's index when a condition names one, else all."""
        for cond in conds:
            if cond.op == "=" and cond.field in LINKS.get(rt.table, ()) and isinstance(cond.value, str):
                try:
                    target, number = parse_id(cond.value)
                except Exception:
                    continue  # not an id (a name, say): the scan below decides
                key = f"{target.prefix}-{number}"
                ids = self.backend.lookup(rt.table, f"link:{cond.field}", key)
                if archived:
                    ids += self.backend.lookup(rt.table, f"link:{cond.field}", key, archived=True)
                return [self.get(i) for i in sorted(ids, key=lambda i: int(i.rsplit("-", 1)[1]))]
        return self.all(rt.table, archived=archived)

    def ids(self, type_name: str, *, archived: bool = False) -> list[str]:
        """The ids of a type's records, in order, without copying the records."""
        rt = record_type(type_name)
        return [doc["id"] for doc in self._records(rt) if archived or not doc.get("archived_at")]

    def each(self, type_name: str, *, archived: bool = False) -> Iterator[Mapping[str, Any]]:
        """Like :meth:`all`, but the stored documents themselves (for reports): never change them."""
        for doc in self._records(record_type(type_name)):
            if archived or not doc.get("archived_at"):
                yield doc

    def peek(self, record_id: str) -> Mapping[str, Any] | None:
        """The stored document itself, not a copy, for hot read-only paths: never change it."""
        rt, number = parse_id(record_id)
        return self._stored(rt, number)

    def count(self, type_name: str, *, archived: bool = False) -> int:
        active, archived_count = self.backend.count(record_type(type_name).table)
        return active + archived_count if archived else active

    def find_by_email(self, type_name: str, email: str, *, archived: bool = False) -> list[Doc]:
        """Active records with this address (any case), by index; archived ones with ``archived``."""
        return self._by_index(record_type(type_name).table, "email", email_key(email), archived)

    def linked(self, type_name: str, field: str, record_id: str, *, archived: bool = False) -> list[Doc]:
        """Records of a type whose link ``field`` names ``record_id``, in id order, by index.

        For the links in :data:`~crmkit.store.keys.LINKS` (a contact's deals, cases,
        timeline, an account's contacts ...), which the backend keeps indexed.
        """
        table = record_type(type_name).table
        if field not in LINKS.get(table, ()):
            raise CrmkitError(f"{type_name} are not indexed by {field!r}")
        found = self._by_index(table, f"link:{field}", record_id, archived)
        return sorted(found, key=lambda d: int(d["id"].rsplit("-", 1)[1]))

    def find_by_message_id(self, message_id: str, *, archived: bool = False) -> list[Doc]:
        """Activities (mail in or out) that carry this Message-ID, by index."""
        return self._by_index("activities", "message_id", message_id.strip(), archived)

    def find_accounts(self, *, name: str | None = None, domain: str | None = None) -> list[Doc]:
        """Active accounts whose name (legal form ignored) or domain matches."""
        found: dict[str, Doc] = {}
        if name:
            for doc in self._by_index("accounts", "name", company_key(name)):
                found[doc["id"]] = doc
        if domain:
            for doc in self._by_index("accounts", "domain", domain_key(domain)):
                found[doc["id"]] = doc
        return sorted(found.values(), key=lambda d: int(d["id"].split("-")[1]))

    def _by_index(self, table: str, name: str, key: str, archived: bool = False) -> list[Doc]:
        if not key:
            return []
        return [self.get(record_id) for record_id in self.backend.lookup(table, name, key, archived=archived)]

    def lookup(self, type_name: str, text: str) -> Doc:
        """A record by id, or by what people call it: email, account name or domain."""
        rt = record_type(type_name)
        text = text.strip()
        candidates: list[Doc]
        try:
            id_type, _ = parse_id(text)
        except Exception:
            id_type = None
        if id_type is rt:
            return self.get(text)
        if rt.table in ("contacts", "leads") and "@" in text:
            candidates = self.find_by_email(rt.table, text)
        elif rt.table == "accounts":
            candidates = self.find_accounts(name=text) or self.find_accounts(domain=text)
        elif rt.table in ("invoices", "quotes"):
            candidates = self._by_index(rt.table, "number", text.casefold())
        else:
            candidates = []
        if not candidates and rt.table in ("contacts", "leads") and "@" in text:
            candidates = self.find_by_email(rt.table, text, archived=True)
        if not candidates:
            raise NotFoundError(f"no {rt.name} matches {text!r}")
        if len(candidates) > 1:
            ids = ", ".join(d["id"] for d in candidates)
            raise NotFoundError(f"{text!r} matches several {rt.table} ({ids}); use an id")
        return candidates[0]

    # -- writing ----------------------------------------------------------

    def add(
        self,
        type_name: str,
        values: Mapping[str, Any],
        *,
        force: bool = False,
        allow_system: bool = False,
        actor: str | None = None,
    ) -> Doc:
        """Validate and save a new record; returns it with its new id.

        A contact or lead whose email or phone is already on another one is
        refused with :class:`DuplicateError` unless ``force``.
        ``allow_system`` lets an import set ids and timestamps.
        """
        rt = record_type(type_name)
        with self.transaction():
            return self._add(rt, values, force=force, allow_system=allow_system, actor=actor)

    def add_many(
        self,
        type_name: str,
        rows: Iterable[Mapping[str, Any]],
        *,
        force: bool = False,
        allow_system: bool = False,
        actor: str | None = None,
    ) -> list[Doc]:
        """Add many records in one transaction: all of them, or none on an error."""
        rt = record_type(type_name)
        with self.transaction():
            return [self._add(rt, row, force=force, allow_system=allow_system, actor=actor) for row in rows]

    def update(
        self,
        record_id: str,
        values: Mapping[str, Any],
        *,
        type_name: str | None = None,
        force: bool = False,
        allow_system: bool = False,
        actor: str | None = None,
    ) -> Doc:
        """Change some fields of a record; an empty value clears a field.

        With ``type_name``, ``record_id`` may also be what people call the
        record (an email, an account name). Returns the record as saved;
        nothing is written when nothing changes.
        """
        with self.transaction():
            record_id = self._ref(record_id, type_name)
            return self._update(record_id, values, force=force, allow_system=allow_system, actor=actor)

    def _ref(self, record_id: str, type_name: str | None) -> str:
        if type_name is None:
            return record_id
        return self.lookup(type_name, record_id)["id"]

    def archive(self, record_id: str, *, type_name: str | None = None) -> Doc:
        """Hide a record from lists and syncs without destroying it; restorable.

        With ``type_name``, ``record_id`` may also be what people call the
        record (an email, an account name), and must be of that type.
        """
        with self.transaction():
            record_id = self._ref(record_id, type_name)
            rt, number = parse_id(record_id)
            old = self.get(record_id)
            if old.get("archived_at"):
                return old
            doc = {**old, "archived_at": self._now_text(), "updated_at": self._now_text()}
            self._put(rt, number, doc, old)
            return _copy(doc)

    def restore(self, record_id: str, *, type_name: str | None = None, force: bool = False) -> Doc:
        """Bring an archived record back (refused if its email is now taken, unless ``force``)."""
        with self.transaction():
            record_id = self._ref(record_id, type_name)
            rt, number = parse_id(record_id)
            old = self.get(record_id)
            if not old.get("archived_at"):
                return old
            doc = {k: v for k, v in old.items() if k != "archived_at"}
            doc["updated_at"] = self._now_text()
            if not force:
                self._check_unique(rt, rt.load(doc), doc["id"])
            self._put(rt, number, doc, old)
            return _copy(doc)

    # -- the work behind add and update -------------------------------------

    def _now_text(self) -> str:
        return self.clock().astimezone(UTC).isoformat(timespec="seconds")

    def check(self, type_name: str, values: Mapping[str, Any], *, allow_system: bool = False) -> Checked:
        """Validate a new record's values now, to add them later with :meth:`add_checked`.

        For callers with idle time before they can commit (a campaign waiting on
        its mail server): the schema checks run then, and the add is quicker.
        Raises :class:`ValidationError` as :meth:`add` would.
        """
        rt = record_type(type_name)
        clean, custom = rt.validate(values, allow_system=allow_system)
        return Checked(rt, clean, custom)

    def add_checked(self, checked: Checked, *, force: bool = False, actor: str | None = None) -> Doc:
        """Save a record whose values :meth:`check` validated; as :meth:`add` otherwise."""
        with self.transaction():
            return self._insert(
                checked.rt, dict(checked.clean), dict(checked.custom), force=force, actor=actor
            )

    def _add(
        self, rt: RecordType, values: Mapping[str, Any], *, force: bool, allow_system: bool, actor: str | None
    ) -> Doc:
        clean, custom = rt.validate(values, allow_system=allow_system)
        return self._insert(rt, clean, custom, force=force, actor=actor)

    def _insert(
        self, rt: RecordType, clean: dict[str, Any], custom: dict[str, Any], *, force: bool, actor: str | None
    ) -> Doc:
        wanted_id = clean.pop("id", None)
        self._resolve_refs(rt, clean)
        record = apply_rules(
            rt,
            None,
            clean,
            now=self.clock(),
            actor=actor or self.actor,
            default_currency=self.default_currency,
        )
        counter: tuple[str, int] | None = None
        if rt.table in self.numbering and not record.get("number"):
            record["number"], counter = self._next_number(rt, record.get("issue_date") or self.clock().date())
        if not force:
            self._check_unique(rt, record, wanted_id or "")
        number = self._claim_number(rt, wanted_id)
        record_id = f"{rt.prefix}-{number}"
        now = self._now_text()
        doc: Doc = {"id": record_id}
        doc.update(rt.dump({k: v for k, v in record.items() if v is not None and k != "id"}))
        doc.setdefault("created_at", now)
        doc.setdefault("updated_at", now)
        if custom:
            doc["custom"] = {k: _jsonable(v) for k, v in custom.items() if v not in (None, "")}
            if not doc["custom"]:
                del doc["custom"]
        self._put(rt, number, doc, None)
        if counter is not None:  # only once the record is in: a refused one takes no number
            self._meta().setdefault("numbers", {})[counter[0]] = counter[1]
        return _copy(doc)

    def _update(
        self, record_id: str, values: Mapping[str, Any], *, force: bool, allow_system: bool, actor: str | None
    ) -> Doc:
        rt, number = parse_id(record_id)
        old = self.get(record_id)
        clean, custom = rt.validate(values, allow_system=allow_system)
        clean.pop("id", None)
        self._resolve_refs(rt, clean)
        before = rt.load({k: v for k, v in old.items() if k != "custom"})
        record = apply_rules(
            rt,
            before,
            clean,
            now=self.clock(),
            actor=actor or self.actor,
            default_currency=self.default_currency,
        )
        if not force:
            self._check_unique(rt, record, old["id"])
        doc: Doc = {"id": old["id"]}
        doc.update(
            rt.dump({k: v for k, v in record.items() if v is not None and k in rt.by_name and k != "id"})
        )
        merged_custom = dict(old.get("custom") or {})
        for key, value in custom.items():
            if value in (None, ""):
                merged_custom.pop(key, None)
            else:
                merged_custom[key] = _jsonable(value)
        if merged_custom:
            doc["custom"] = merged_custom
        if {k: v for k, v in doc.items() if k not in ("updated_at", "_rev")} == {
            k: v for k, v in old.items() if k not in ("updated_at", "_rev")
        }:
            return old
        if "updated_at" not in clean:
            doc["updated_at"] = self._now_text()
        self._put(rt, number, doc, old)
        return _copy(doc)

    def _claim_number(self, rt: RecordType, wanted_id: str | None) -> int:
        """A record number never used before in this table (ids are never reused)."""
        sequences = self._meta()["sequences"]
        if wanted_id:
            id_type, number = parse_id(wanted_id)
            if id_type is not rt:
                raise ValidationError(
                    rt.name, [FieldError("id", wanted_id, f"is not a {rt.name} id ({rt.prefix}-…)")]
                )
            if self.backend.get(rt.table, number) is not None:
                raise DuplicateError(f"{wanted_id} already exists", wanted_id)
        else:
            number = int(sequences.get(rt.table, 0)) + 1
            while self.backend.get(rt.table, number) is not None:  # a document added by plain TinyDB
                number += 1
        sequences[rt.table] = max(number, int(sequences.get(rt.table, 0)))
        return number

    def _next_number(self, rt: RecordType, issued: date) -> tuple[str, tuple[str, int]]:
        """The next number of its pattern (e.g. ``INV-{year}-{seq:04}``), and its counter's new value.

        The counter is kept per value of the pattern's other fields (per year for
        the default); the caller saves it once the record is added (so a refused
        record skips no number). A number already taken, by an archived record
        too, is passed over, never reused. Concurrent processes take turns on the
        store's lock, so none gets the same.
        """
        pattern = self.numbering[rt.table]
        scope = f"{rt.table}:{format_number(pattern, issued, 0)}"
        seq = int(self._meta().get("numbers", {}).get(scope, 0))
        if rt is INVOICE and format_number(pattern, issued, 7) == format_number(
            NUMBER_PATTERNS["invoices"], issued, 7
        ):
            # the counters of stores written before [invoices] existed
            seq = max(seq, int(self._meta().get("invoice_numbers", {}).get(str(issued.year), 0)))
        while True:
            seq += 1
            number = format_number(pattern, issued, seq)
            key = number.casefold()
            taken = self.backend.lookup(rt.table, "number", key) or self.backend.lookup(
                rt.table, "number", key, archived=True
            )
            if not taken:
                return number, (scope, seq)

    def _check_unique(self, rt: RecordType, record: Mapping[str, Any], record_id: str) -> None:
        for field_name in rt.unique_keys:
            value = record.get(field_name)
            if not value:
                continue
            key = UNIQUE_KEY[field_name](str(value))
            others = [i for i in self.backend.lookup(rt.table, field_name, key) if i != record_id]
            if not others and field_name == "number":  # an archived invoice keeps its number for good
                others = [
                    i for i in self.backend.lookup(rt.table, field_name, key, archived=True) if i != record_id
                ]
            if others:
                other = self.get(others[0])
                raise DuplicateError(
                    f"{rt.name} {other['id']} ({rt.title_of(other)}) already has {field_name} "
                    f"{other.get(field_name, value)}; "
                    f"merge them, or force to add anyway",
                    other["id"],
                    field_name,
                )

    def _resolve_refs(self, rt: RecordType, clean: dict[str, Any]) -> None:
        """Turn each link given by name or email into an id; check ids exist."""
        errors: list[FieldError] = []
        for name, value in clean.items():
            f = rt.by_name[name]
            if not isinstance(f, RefField) or value is None:
                continue
            target = RECORD_TYPES[f.target]
            number = 0
            try:
                id_type, number = parse_id(value)
            except Exception:
                id_type = None
            try:
                if id_type is not None and id_type is not target:
                    raise NotFoundError(
                        f"is a {id_type.name} id; expected a {target.name} ({target.prefix}-…)"
                    )
                if id_type is target and self.backend.get(target.table, number) is not None:
                    clean[name] = f"{target.prefix}-{number}"  # an id that exists: no copy to look it up
                    continue
                clean[name] = self.lookup(target.table, value)["id"]
            except NotFoundError as exc:
                errors.append(FieldError(name, value, str(exc)))
        if errors:
            raise ValidationError(rt.name, errors)


@dataclass(frozen=True)
class Checked:
    """A new record's values, validated by :meth:`Store.check`, waiting for :meth:`Store.add_checked`."""

    rt: RecordType
    clean: dict[str, Any]
    custom: dict[str, Any]


#: The default look of new numbers; crmkit.toml's [invoices] number_pattern / quote_pattern change them.
NUMBER_PATTERNS = {"invoices": "INV-{year}-{seq:04}", "quotes": "QUO-{year}-{seq:04}"}


def format_number(pattern: str, issued: date, seq: int) -> str:
    """``INV-{year}-{seq:04}`` -> ``INV-2026-0007``; ``{month}`` is the two-digit month."""
    return pattern.format(year=issued.year, month=f"{issued.month:02d}", seq=seq)


def _user() -> str:
    try:
        import getpass  # only when a write needs the actor's name

        return getpass.getuser()
    except Exception:  # no login name in some containers and cron environments
        return os.environ.get("USER", "unknown")


def open_backend(
    location: str | os.PathLike[str],
    *,
    lock_timeout: float = 30.0,
    password: str | Callable[[], str | None] | None = None,
    local_folder: str | os.PathLike[str] | None = None,
) -> Backend:
    """The backend for a store's location: a PostgreSQL URL, or the path of a TinyDB store."""
    from crmkit.locations import STORE_URL_SCHEMES, is_store_url

    if not isinstance(location, str) and str(location).lower().startswith(("postgresql:", "postgres:")):
        # Path("postgresql://...") has lost a slash: it would make a TinyDB store named like the URL
        raise StoreError(f"a store URL must be given as text, not as a file path ({STORE_URL_SCHEMES[0]}...)")
    if is_store_url(location):
        from crmkit.store.postgres import PostgresBackend

        return PostgresBackend(
            str(location), lock_timeout=lock_timeout, password=password, local_folder=local_folder
        )
    from crmkit.store.jsonfiles import JsonFilesBackend

    return JsonFilesBackend(location, lock_timeout=lock_timeout)
