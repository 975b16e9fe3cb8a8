"""The sync engine: a three-way merge of sheets and the store, field by field.

For each sheet it compares three versions of every field: the sheet's, the
store's, and the *base*, the value both sides agreed on at the end of the last
sync (kept in the store, per workbook and sheet). A field changed on one side
only is copied to the other; a field changed on both sides to different values
is a conflict, resolved by ``on_conflict`` (``fail`` changes neither side).

A run is safe to kill at any point:

1. one store transaction applies the sheet's changes to the store and records
   the ids it gave to new rows in a journal (``pending``);
2. the workbook is written, all at once (adapters replace it atomically);
3. a second store transaction saves the new base and clears the journal.

Killed before 2, the next run still sees the old base, so every store-side
change is still a change to copy, and the journal ties the new rows to the
records already made for them. Killed before 3, both sides already agree.
Nothing is lost and nothing is made twice.

The engine knows nothing of Excel or Google: it talks to a
:class:`~crmkit.sync.source.SheetBook`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from filelock import FileLock, Timeout

from crmkit.config import resolve_sheet_names
from crmkit.errors import CrmkitError, DuplicateError, FieldError, ValidationError
from crmkit.perf import paused_gc
from crmkit.records.fields import (
    DateField,
    DateTimeField,
    DecimalField,
    Field,
    IntField,
    LinesField,
    PercentField,
    RefField,
)
from crmkit.records.output import record_output
from crmkit.records.rules import invoice_status
from crmkit.records.schema import ACCOUNT, CASE, CONTACT, DEAL, INVOICE, LEAD, RecordType, parse_id
from crmkit.store import Store
from crmkit.sync.lines import InvoiceLines
from crmkit.sync.model import (
    CellChange,
    Conflict,
    Formatted,
    InvalidCell,
    SheetChanges,
    SheetRow,
    SheetSummary,
    SheetTable,
    SyncReport,
    column_letter,
)
from crmkit.sync.source import BookChangedError, SheetBook
from crmkit.sync.stamp import SyncStamps
from crmkit.sync.summary import counted, summarize
from crmkit.sync.tabs import blank_tab, find_tab, tab_refusal
from crmkit.sync.values import (
    as_read,
    canon,
    canon_custom,
    cell_value,
    date_from_serial,
    parse_cell,
    row_signature,
)
from crmkit.workbooks import LINES_SHEET, money_format, sheet_columns

# summarize and counted moved to crmkit.sync.summary; callers still import them from here
__all__ = ["ON_CONFLICT", "SYNCED_TYPES", "counted", "summarize", "sync_book"]

ON_CONFLICT = ("fail", "sheet", "store")
# The fields of a base entry, and the mark of a value no sync agreed on yet. An entry
# has a sixth only when some of its cells were invalid: the keys whose base value is
# the store's value that stood in for an invalid cell (see _SheetSync._write_back).
_SIGNATURE, _REVISION, _CLEAN, _VALUES, _STATUS, _INVALID = range(6)
_ABSENT = "\x00absent"
#: The record types a workbook may hold, in the order they are synced (links first).
SYNCED_TYPES: tuple[RecordType, ...] = (ACCOUNT, CONTACT, LEAD, DEAL, INVOICE, CASE)
#: Sheets created when missing; Accounts and Cases are synced only where present.
ALWAYS = frozenset({LEAD.table, CONTACT.table, DEAL.table, INVOICE.table})
#: Fields a cell holds as a number or a date: typed as text, the cell is written back as one.
_TYPED = (DecimalField, IntField, PercentField, DateField, DateTimeField)
STATE = "sync"
_MISSING = object()
#: A field whose cells are not on the sheet yet: the store's value goes there, nothing is an edit.
_NOT_ON_SHEET = object()
#: Called as rows are done: (rows just done, rows in all synced sheets).
Progress = Callable[[int, int], None]


class _DryRun(Exception):
    """Raised inside the store transaction to throw a dry run's changes away."""


class _SheetRefused(Exception):
    """A sheet crmkit must not sync as it is; the reason is reported, nothing is changed."""


@dataclass
class _Column:
    index: int
    header: str
    key: str  # a field name, or "custom:<header>"
    field: Field | None  # None for a custom column
    readonly: bool  # kept by crmkit (totals, timestamps): written, never read


@dataclass
class _Row:
    number: int
    cells: list[Any]
    signature: str
    record_id: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)
    link: str | None = None  # "journal" or "email": how a row without an ID found its record


def _custom_name(key: str) -> str:
    return key[len("custom:") :]


class _SheetSync:
    """Plans and applies the sync of one sheet, inside the store transaction."""

    def __init__(
        self,
        store: Store,
        rt: RecordType,
        table: SheetTable | None,
        *,
        title: str | None = None,
        base: dict[str, Any],
        pending: dict[str, Any],
        on_conflict: str,
        actor: str,
        today: date,
        progress: Callable[[int], None] | None,
        read_back: Callable[[Any], Any] = as_read,
        lines_table: SheetTable | None = None,
        lines_title: str | None = None,
        lines_cache: dict[str, Any] | None = None,
    ) -> None:
        self.store = store
        self.rt = rt
        self.table = table
        # The base, compact: each record's entry is [row signature, record
        # revision, clean?, agreed values in the order of `keys`, invoice status].
        self.base_keys: list[str] = list(base.get("keys", []))
        self.base: dict[str, list[Any]] = dict(base.get("rows", {}))
        self.keys: list[str] = []
        self.pending = pending
        self.on_conflict = on_conflict
        self.actor = actor
        self.today = today
        self.progress = progress
        self.read_back = read_back  # how the workbook will hand back a value crmkit writes
        # the tab's own title; ``title`` names the tab to create when there is none
        self.title = table.title if table else title or rt.sheet
        # The base was agreed with another tab ([sheet_names] now names a different one): its
        # rows say nothing about what was deleted here, so nothing is archived this time and
        # records missing from this tab are added to it.
        saved_tab = str(base.get("tab", rt.sheet))
        self.switched_tab = (
            bool(base.get("rows")) and saved_tab.strip().casefold() != self.title.strip().casefold()
        )
        self.serial_dates = table is not None and table.serial_dates
        self.summary = SheetSummary(self.title)
        self.changes = SheetChanges(self.title)
        self.new_base: dict[str, Any] = {}
        self.new_ids: dict[str, Any] = {}
        self.columns: list[_Column] = []
        self.id_column = -1
        self.lines: InvoiceLines | None = (
            InvoiceLines(lines_table, self.summary, lines_cache or {}, lines_title or LINES_SHEET.title)
            if rt is INVOICE
            else None
        )

    # -- columns and cells ------------------------------------------------

    def _map_columns(self) -> None:
        if self.table is None:
            headers = [f.label for f in sheet_columns(self.rt)]
            self.changes.create_headers = headers
            self.table = SheetTable(self.title, headers, [])
        used: set[str] = set()
        for index, header in enumerate(self.table.headers):
            if header is None or not str(header).strip():
                continue
            text = str(header).strip()
            f = self.rt.field_for_header(text)
            key = f.name if f is not None else f"custom:{text}"
            if key in used or isinstance(f, LinesField):
                self.summary.notes.append(
                    f"column {column_letter(index)} ({text}) repeats another column; ignored"
                )
                continue
            used.add(key)
            if f is not None and f.name == "id":
                self.id_column = index
            elif f is not None:
                self.columns.append(_Column(index, text, f.name, f, f.system))
            else:
                self.columns.append(_Column(index, text, key, None, False))
        if self.lines is not None:
            self.columns.append(_Column(-1, LINES_SHEET.title, "lines", INVOICE.get_field("lines"), False))
        if self.id_column < 0 and self.base:
            raise _SheetRefused(
                f"{self.title} has no ID column any more; it was synced before, so crmkit leaves the sheet "
                "alone rather than treat every row as new (put the ID header back)"
            )
        if self.id_column < 0:
            # Without an ID column rows cannot be tied to records: add one.
            self.id_column = len(self.table.headers)
            self.changes.cells.append(CellChange(1, self.id_column, "ID"))
            self.summary.notes.append(f"added an ID column ({column_letter(self.id_column)})")

    def _invalid(self, row: _Row, column: _Column | None, value: Any, problem: str) -> None:
        index = column.index if column else self.id_column
        header = column.header if column else "ID"
        self.summary.invalid.append(
            InvalidCell(self.title, row.number, column_letter(index), header, value, problem)
        )
        if column is not None:
            row.invalid.add(column.key)

    def _column(self, key: str) -> _Column | None:
        return next((c for c in self.columns if c.key == key), None)

    def _read_row(self, sheet_row: SheetRow) -> _Row | None:
        cells = list(sheet_row.cells)
        row = _Row(sheet_row.number, cells, row_signature(cells))
        raw_id = sheet_row.cell(self.id_column)
        if raw_id is not None and str(raw_id).strip():
            text = str(raw_id).strip()
            prefix = self.rt.prefix + "-"
            digits = text[len(prefix) :]
            if text.startswith(prefix) and digits.isdigit() and not digits.startswith("0"):
                row.record_id = text  # the usual, well-formed id: no need to parse it
            else:
                try:
                    rt, number = parse_id(text)
                except CrmkitError:
                    rt, number = None, 0
                if rt is not self.rt:
                    self._invalid(row, None, raw_id, f"not a {self.rt.name} id ({self.rt.prefix}-…)")
                    return None
                row.record_id = f"{rt.prefix}-{number}"
        known = self.base.get(row.record_id) if row.record_id else None
        if known and known[_CLEAN] and known[_SIGNATURE] == row.signature:
            row.values = self._agreed(known)  # nobody touched the row: skip parsing it
            self._add_lines(row)
            return row
        for column in self.columns:
            if column.readonly or column.key == "lines":
                continue
            raw = sheet_row.cell(column.index)
            if self.serial_dates and column.field is not None:
                raw = date_from_serial(column.field, raw)
            if column.field is None:
                row.values[column.key] = canon_custom(raw)
                continue
            try:
                row.values[column.key] = parse_cell(column.field, raw)
            except FieldError as exc:
                self._invalid(row, column, raw, exc.problem)
                continue
            if isinstance(column.field, RefField) and row.values[column.key] is not None:
                row.values[column.key] = self._resolve_ref(row, column, raw, row.values[column.key])
        self._add_lines(row)
        return row

    def _add_lines(self, row: _Row) -> None:
        if self.lines is None:
            return
        if self.lines.created:
            # A new lines tab (a first sync, or [sheet_names] pointing at a new tab) says
            # nothing about any invoice's lines: the store's go onto it.
            row.values["lines"] = _NOT_ON_SHEET
            return
        if not self.lines.readable:
            row.invalid.add("lines")  # reported once as a note; the store's lines stay as they are
            return
        group = self.lines.group_for(
            row.record_id, row.cells[self._number_index()] if self._number_index() >= 0 else None
        )
        if group is None:
            row.values["lines"] = None
        elif group.invalid:
            row.invalid.add("lines")  # its cells are reported on the lines sheet
        else:
            row.values["lines"] = group.value

    def _number_index(self) -> int:
        column = self._column("number")
        return column.index if column else -1

    def _resolve_ref(self, row: _Row, column: _Column, raw: Any, value: str) -> Any:
        assert isinstance(column.field, RefField)
        try:
            return self.store.lookup(column.field.target, value)["id"]
        except CrmkitError as exc:
            self._invalid(row, column, raw, str(exc))
            return None

    def _store_values(self, doc: dict[str, Any]) -> dict[str, Any]:
        out = record_output(doc, today=self.today)
        custom = out.get("custom") or {}
        values: dict[str, Any] = {}
        for column in self.columns:
            if column.field is None:
                values[column.key] = canon_custom(custom.get(column.header))
            else:
                values[column.key] = canon(column.field, out.get(column.key))
        return values

    def _agreed(self, entry: list[Any]) -> dict[str, Any]:
        """The values a base entry holds, by column key (fields still in conflict left out)."""
        return {k: v for k, v in zip(self.keys, entry[_VALUES], strict=True) if v != _ABSENT}

    def _entry(
        self,
        signature: str,
        doc: dict[str, Any],
        clean: bool,
        values: dict[str, Any],
        stand_ins: Iterable[str] = (),
    ) -> list[Any]:
        status = _invoice_status_today(doc, self.today) if self.rt is INVOICE else None
        entry = [signature, doc.get("_rev"), clean, [values.get(k, _ABSENT) for k in self.keys], status]
        if stand_ins:
            entry.append(sorted(stand_ins))
        return entry

    def _rekey_base(self) -> None:
        """Entries saved under another set of columns (one was added or removed) are re-ordered."""
        self.keys = [c.key for c in self.columns if not c.readonly]
        if self.base_keys == self.keys:
            return
        for record_id, entry in self.base.items():
            old = {k: v for k, v in zip(self.base_keys, entry[_VALUES], strict=False)}
            # a different set of columns is a different row: never take the shortcut on it
            self.base[record_id] = [
                None,
                entry[_REVISION],
                False,
                [old.get(k, _ABSENT) for k in self.keys],
                None,
            ]
            if stand_ins := [k for k in _stand_ins(entry) if k in self.keys]:
                self.base[record_id].append(stand_ins)

    def _writable(self, row: _Row) -> set[str]:
        """The columns a person edits, less the row's invalid cells."""
        return {c.key for c in self.columns if not c.readonly} - row.invalid

    # -- the sheet, row by row ----------------------------------------------

    def run(self) -> None:
        self._map_columns()
        self._rekey_base()
        assert self.table is not None
        rows: list[_Row] = []
        for sheet_row in self.table.rows:
            row = self._read_row(sheet_row)
            if row is not None:
                rows.append(row)
        on_sheet: dict[str, int] = {}
        for row in rows:
            if row.record_id is None:
                continue
            if row.record_id in on_sheet:
                self._invalid(
                    row, None, row.record_id, f"ID {row.record_id} is also on row {on_sheet[row.record_id]}"
                )
                row.record_id = None
                row.link = "skip"
            else:
                on_sheet[row.record_id] = row.number
        self._link_journal([r for r in rows if r.record_id is None and r.link is None], on_sheet)
        for row in rows:
            if row.record_id is None and row.link is None:
                self._link(row, on_sheet)
        for done, row in enumerate(rows, start=1):
            if row.link == "skip":
                continue
            if row.record_id is None:
                self._create(row)
            else:
                self._merge_row(row)
            if self.progress and done % 500 == 0:
                self.progress(500)
        self._archive_deleted(on_sheet, rows)
        self._append_new(on_sheet)

    def _link_journal(self, rows: list[_Row], on_sheet: dict[str, int]) -> None:
        """Tie rows without an ID to the records an interrupted run made for them.

        The journal names each such row by its number, its title and its cells.
        Rows may have moved since (a person inserted or deleted rows above
        them), so a row is matched by title, first to an entry with the very
        same cells, then to the next entry with its title in row order, which
        inserting or deleting other rows does not change.
        """
        entries = sorted(
            (
                (int(number), entry)
                for number, entry in self.pending.items()
                if entry[0] not in on_sheet and self.store.exists(entry[0])
            ),
            key=lambda item: item[0],
        )
        if not entries:
            return
        free: dict[Any, list[list[Any]]] = {}
        for _, entry in entries:
            free.setdefault(entry[1], []).append(entry)

        def claim(row: _Row, entry: list[Any]) -> None:
            free[entry[1]].remove(entry)
            row.record_id, row.link = entry[0], "journal"
            self.new_ids[str(row.number)] = [*entry[:2], row.signature]  # still owed if this run dies too
            on_sheet[entry[0]] = row.number

        for same_cells in (True, False):
            for row in rows:
                if row.record_id is not None:
                    continue
                candidates = free.get(self._journal_key(row), [])
                if same_cells:
                    candidates = [e for e in candidates if len(e) > 2 and e[2] == row.signature]
                if candidates:
                    claim(row, candidates[0])

    def _link(self, row: _Row, on_sheet: dict[str, int]) -> None:
        """Tie a row without an ID to its record by email (importing a list twice makes no duplicates)."""
        email = row.values.get("email")
        if not email or self.rt not in (CONTACT, LEAD):
            return
        # an archived record too: a row deleted once and pasted back is the same person
        matches = self.store.find_by_email(self.rt.table, email) or self.store.find_by_email(
            self.rt.table, email, archived=True
        )
        if not matches:
            return
        match = matches[0]["id"]
        column = self._column("email")
        if match in on_sheet:
            self._invalid(
                row, column, email, f"same email as {match} on row {on_sheet[match]}; merge the rows"
            )
            row.link = "skip"
            return
        row.record_id, row.link = match, "email"
        on_sheet[match] = row.number

    def _journal_key(self, row: _Row) -> Any:
        """What ties a new row to the record made for it by a run that died before writing its ID.

        The row's title (name, deal title) rather than all its cells, so that a
        person can go on filling in the row meanwhile.
        """
        return row.values.get(self.rt.title_field) or row.signature

    def _apply(self, record_id: str | None, changes: dict[str, Any], row: _Row) -> dict[str, Any] | None:
        """Save changes to the store, dropping (and reporting) the values it refuses."""
        data = dict(changes)
        while True:
            payload = {(_custom_name(k) if k.startswith("custom:") else k): v for k, v in data.items()}
            try:
                if record_id is None:
                    return self.store.add(self.rt.table, payload, actor=self.actor)
                return self.store.update(record_id, payload, actor=self.actor)
            except ValidationError as exc:
                refused = [e for e in exc.errors]
            except DuplicateError as exc:
                refused = [FieldError(exc.field or "id", data.get(exc.field or ""), str(exc))]
            dropped = False
            for error in refused:
                column = self._column(error.field)
                raw = row.cells[column.index] if column and column.index < len(row.cells) else error.value
                problem = error.problem
                if column is None:  # reported on the ID cell: say which field, and why it is missing
                    labels = {f.name: f.label for f in sheet_columns(self.rt)}
                    label = labels.get(error.field, error.field)
                    problem = f"{label} {problem}, and the sheet has no {label} column"
                self._invalid(row, column, raw, problem)
                if error.field in data:
                    del data[error.field]
                    dropped = True
            if not dropped:
                return None  # the record itself is refused (a required field is empty)

    def _create(self, row: _Row) -> None:
        values = {
            k: v
            for k, v in row.values.items()
            if v not in (None, False) and v is not _NOT_ON_SHEET and k not in row.invalid
        }
        if not any(not k.startswith("custom:") for k in values):
            self._invalid(
                row,
                self._column(self.rt.title_field),
                None,
                f"a new {self.rt.name} needs a {self.rt.title_field}",
            )
            return
        doc = self._apply(None, values, row)
        if doc is None:
            return
        row.record_id = doc["id"]
        self.summary.store_added.append(doc["id"])
        self.new_ids[str(row.number)] = [doc["id"], self._journal_key(row), row.signature]
        self._write_back(row, doc, agreed=self._writable(row), base=None)

    def _untouched(self, row: _Row) -> bool:
        """Neither side changed this row since the last sync: nothing to do."""
        known = self.base.get(row.record_id or "")
        if row.link is not None or not known or not known[_CLEAN] or known[_SIGNATURE] != row.signature:
            return False
        doc = self.store.peek(row.record_id or "")
        if doc is None or known[_REVISION] is None or known[_REVISION] != doc.get("_rev"):
            return False
        if self.rt is not INVOICE:
            return True
        # an invoice's lines live on their own sheet, and its status can turn
        # overdue with the calendar alone
        return (
            "lines" not in row.invalid
            and row.values.get("lines") == self._agreed(known).get("lines")
            and known[_STATUS] == _invoice_status_today(doc, self.today)
        )

    def _merge_row(self, row: _Row) -> None:
        assert row.record_id is not None
        if self._untouched(row):
            self.new_base[row.record_id] = self.base[row.record_id]
            return
        if not self.store.exists(row.record_id):
            # An ID this store never gave out (a workbook from elsewhere): keep it.
            values = {
                k: v
                for k, v in row.values.items()
                if v not in (None, False) and v is not _NOT_ON_SHEET and k not in row.invalid
            }
            values["id"] = row.record_id
            doc = self._apply_new_with_id(values, row)
            if doc is not None:
                self.summary.store_added.append(doc["id"])
                self._write_back(row, doc, agreed=self._writable(row), base=None)
            return
        doc = self.store.get(row.record_id)
        if doc.get("archived_at") and row.link != "email":
            self.summary.notes.append(
                f"{row.record_id} (row {row.number}) is archived in crmkit; row left as is"
            )
            if row.record_id in self.base:
                self.new_base[row.record_id] = self.base[row.record_id]
            return
        stored = self._store_values(doc)
        known = self.base.get(row.record_id)
        base_values: dict[str, Any] = self._agreed(known) if known else {}
        stand_ins = _stand_ins(known)
        to_store: dict[str, Any] = {}
        agreed: set[str] = set()
        for column in self.columns:
            key = column.key
            if column.readonly or key in row.invalid:
                continue
            sheet_value = row.values.get(key)
            store_value = stored.get(key)
            if sheet_value is _NOT_ON_SHEET:
                agreed.add(key)  # the store's value is written to the sheet in _write_back
                continue
            base_value = base_values.get(key, _MISSING)
            if sheet_value == store_value:
                agreed.add(key)
                continue
            if base_value is _MISSING:
                if row.link in ("email", "journal"):  # a new row's cells are edits
                    side = "store" if sheet_value not in (None, False) else "sheet"
                elif sheet_value in (None, False):
                    side = "sheet"
                elif store_value in (None, False):
                    side = "store"
                else:
                    side = self._conflict(row, column, sheet_value, store_value, None, "none")
            elif key in stand_ins:
                # The cell was invalid at the last sync and the store's value only stood in
                # for it: a valid value there now is the person's edit, to keep unless the
                # store changed the field meanwhile too.
                if store_value == base_value:
                    side = "store"
                else:
                    side = self._conflict(row, column, sheet_value, store_value, base_value, "invalid")
            elif sheet_value == base_value:
                side = "sheet"
            elif store_value == base_value:
                side = "store"
            else:
                side = self._conflict(row, column, sheet_value, store_value, base_value, "agreed")
            if side == "store":
                to_store[key] = sheet_value
                agreed.add(key)
            elif side == "sheet":
                agreed.add(key)  # the store's value goes to the sheet in _write_back
        if doc.get("archived_at"):
            doc = self.store.restore(doc["id"])  # an archived contact re-imported by email
            self.summary.store_updated.append(doc["id"])
        if to_store:
            updated = self._apply(doc["id"], to_store, row)
            if updated is not None and updated != doc:
                self.summary.store_updated.append(doc["id"])
                doc = updated
            agreed -= row.invalid
        self._write_back(row, doc, agreed=agreed, base=base_values, stand_ins=stand_ins)

    def _apply_new_with_id(self, values: dict[str, Any], row: _Row) -> dict[str, Any] | None:
        payload = {(_custom_name(k) if k.startswith("custom:") else k): v for k, v in values.items()}
        try:
            return self.store.add(self.rt.table, payload, allow_system=True, actor=self.actor)
        except (ValidationError, DuplicateError) as exc:
            self._invalid(row, None, row.record_id, str(exc))
            return None

    def _conflict(
        self, row: _Row, column: _Column, sheet_value: Any, store_value: Any, base_value: Any, base: str
    ) -> str:
        resolution = {"fail": "none", "sheet": "sheet", "store": "store"}[self.on_conflict]
        assert row.record_id is not None
        self.summary.conflicts.append(
            Conflict(
                self.title,
                row.number,
                row.record_id,
                column.header,
                sheet_value,
                store_value,
                resolution,
                base_value=base_value,
                base=base,
            )
        )
        # "sheet wins" copies the sheet's value into the store; "store wins" the reverse.
        return {"none": "none", "sheet": "store", "store": "sheet"}[resolution]

    def _write_back(
        self,
        row: _Row,
        doc: dict[str, Any],
        *,
        agreed: set[str],
        base: dict[str, Any] | None,
        stand_ins: frozenset[str] = frozenset(),
    ) -> None:
        """Put the store's final values into the row where they differ; remember the new base.

        A cell is written even when its value agrees where it holds a number or a date
        as text (so that sums and date filters count it), and a money cell where its
        row's currency changed (it takes the new currency's format; a changed amount in
        the same currency keeps its cell's format).
        """
        stored = self._store_values(doc)
        currency = self._currency(doc)
        # Only a currency both sides agree on now: one still in conflict would rewrite the
        # cell's format at every sync.
        recurrency = (
            base is not None
            and "currency" in base
            and "currency" in agreed
            and base["currency"] != stored.get("currency")
        )
        cells = list(row.cells)
        wrote = False
        if row.link is not None or not _same_id(row.cells, self.id_column, doc["id"]):
            self._set(cells, row.number, self.id_column, doc["id"])
            self.summary.ids_written += 1
        for column in self.columns:
            key = column.key
            if key in row.invalid or not (column.readonly or key in agreed):
                continue
            current = (
                row.values.get(key)
                if not column.readonly
                else _readonly_value(column, row, serial_dates=self.serial_dates)
            )
            if key == "lines":
                # a new currency: the unit prices take its format too
                if stored[key] != current or (recurrency and stored[key]):
                    assert self.lines is not None
                    self.lines.write(doc["id"], doc.get("number"), stored[key], currency)
                    wrote = True
                continue
            value = _cell(column.field, stored[key], currency)
            raw = row.cells[column.index] if column.index < len(row.cells) else None
            if isinstance(value, Formatted) and not recurrency and _is_number(raw):
                # A changed amount in an unchanged currency keeps the format its cell has: a
                # person's own (a currency symbol, say) is theirs to keep.
                value = value.value
            # only a value typed since the last sync: a cell that keeps turning what crmkit
            # writes into text (formatted as plain text) is not written again and again
            typed = not column.readonly and (base is None or base.get(key, _MISSING) != current)
            if (
                stored[key] != current
                or (recurrency and isinstance(value, Formatted))
                or (typed and _typed_as_text(column.field, raw, value))
            ):
                self._set(cells, row.number, column.index, value)
                wrote = True
        if wrote:
            self.summary.sheet_updated.append(doc["id"])
        values = {k: stored[k] for k in agreed}
        kept: set[str] = set()
        if base:  # keep the old base of a field still in conflict, so it stays one
            for k, v in base.items():
                if k not in agreed and k not in values:
                    values[k] = v
                    if k in stand_ins:
                        kept.add(k)
        # An invalid cell without a base yet (a new row's): the store's value stands in
        # for it, so that once the cell is fixed its value is the sheet's edit.
        for k in row.invalid:
            if k in stored and k not in values and k in self.keys:
                values[k] = stored[k]
                kept.add(k)
        clean = not row.invalid and agreed >= {c.key for c in self.columns if not c.readonly}
        signature = row_signature(cells) if cells != row.cells else row.signature
        self.new_base[doc["id"]] = self._entry(signature, doc, clean, values, kept)

    def _currency(self, doc: dict[str, Any]) -> str:
        return str(doc.get("currency") or self.store.default_currency)

    def _set(self, cells: list[Any], row: int, column: int, value: Any) -> None:
        self.changes.cells.append(CellChange(row, column, value))
        while len(cells) <= column:
            cells.append(None)
        cells[column] = self.read_back(value)

    def _archive_deleted(self, on_sheet: dict[str, int], rows: list[_Row]) -> None:
        gone = [
            record_id
            for record_id in self.base
            if record_id not in on_sheet and record_id not in self.new_base
        ]
        if not gone or self.switched_tab:
            return
        if any(cell.header == "ID" for cell in self.summary.invalid):
            # A mistyped ID must not read as a deleted row.
            self.summary.problems.append(
                f"{counted(len(gone), 'record')} missing from the sheet were not archived: "
                "fix the invalid IDs first"
            )
            for record_id in gone:
                self.new_base[record_id] = self.base[record_id]
            return
        if not rows and self.changes.create_headers is None:
            # A sheet emptied all at once is more likely an accident than a decision.
            self.summary.problems.append(
                f"the sheet has no rows left; {counted(len(gone), 'record')} not archived "
                "(delete fewer rows at a time)"
            )
            for record_id in gone:
                self.new_base[record_id] = self.base[record_id]
            return
        if self.changes.create_headers is not None:
            return  # the whole sheet is missing: it is re-created below, nothing is archived
        for record_id in gone:
            if self.store.exists(record_id) and not self.store.get(record_id).get("archived_at"):
                self.store.archive(record_id)
                self.summary.store_archived.append(record_id)

    def _append_new(self, on_sheet: dict[str, int]) -> None:
        assert self.table is not None
        skip = set(on_sheet) | set(self.new_base) | set(self.base)
        if self.changes.create_headers is not None or self.switched_tab:
            skip = set(on_sheet) | set(self.new_base)
        width = max([self.id_column, *(c.index for c in self.columns)]) + 1
        for record_id in self.store.ids(self.rt.table):
            if record_id in skip:
                continue
            doc = self.store.get(record_id)
            stored = self._store_values(doc)
            currency = self._currency(doc)
            cells: list[Any] = [None] * width
            cells[self.id_column] = doc["id"]
            for column in self.columns:
                if column.key == "lines":
                    if self.lines is not None and stored["lines"]:
                        self.lines.write(doc["id"], doc.get("number"), stored["lines"], currency)
                    continue
                cells[column.index] = _cell(column.field, stored[column.key], currency)
            self.changes.append.append(cells)
            self.summary.sheet_added.append(doc["id"])
            signature = row_signature([self.read_back(c) for c in cells])
            self.new_base[doc["id"]] = self._entry(signature, doc, True, {k: stored[k] for k in self.keys})


def _invoice_status_today(doc: Mapping[str, Any], today: date) -> str:
    """The status an invoice shows today, from its stored document (cheaply: no full load)."""
    due = doc.get("due_date")
    return invoice_status(
        {
            "status": doc.get("status"),
            "total": Decimal(doc.get("total") or 0),
            "amount_paid": Decimal(doc.get("amount_paid") or 0),
            "due_date": date.fromisoformat(due) if due else None,
        },
        today,
    )


def _readonly_value(column: _Column, row: _Row, *, serial_dates: bool) -> Any:
    raw = row.cells[column.index] if column.index < len(row.cells) else None
    if column.field is None:
        return canon_custom(raw)
    if serial_dates:
        raw = date_from_serial(column.field, raw)
    try:
        return parse_cell(column.field, raw)
    except FieldError:
        return _MISSING  # whatever is there is not what crmkit keeps: rewrite it


def _cell(field: Field | None, value: Any, currency: str | None) -> Any:
    """What to write into a cell for a stored value: money as a number in its currency's format."""
    out = cell_value(field, value)
    if isinstance(field, DecimalField) and isinstance(out, Decimal):
        return Formatted(out, money_format(currency))
    return out


def _is_number(raw: Any) -> bool:
    return isinstance(raw, (int, float, Decimal)) and not isinstance(raw, bool)


def _typed_as_text(field: Field | None, raw: Any, value: Any) -> bool:
    """A number or date column's cell holds its value as text, where it can hold the real thing."""
    plain = value.value if isinstance(value, Formatted) else value
    return (
        isinstance(field, _TYPED)
        and isinstance(raw, str)
        and plain is not None
        and not isinstance(plain, str)  # an amount beyond a double stays text
    )


def _stand_ins(entry: list[Any] | None) -> frozenset[str]:
    """The keys of a base entry whose value only stood in for a cell that was invalid."""
    return frozenset(entry[_INVALID]) if entry is not None and len(entry) > _INVALID else frozenset()


def _same_id(cells: list[Any], index: int, record_id: str) -> bool:
    value = cells[index] if index < len(cells) else None
    return value is not None and str(value).strip() == record_id


def sync_book(
    store: Store,
    book: SheetBook,
    *,
    on_conflict: str = "fail",
    dry_run: bool = False,
    progress: Progress | None = None,
    today: date | None = None,
    sheet_names: Mapping[str, str] | None = None,
) -> SyncReport:
    """Make the workbook and the store agree; see the module docstring for the rules.

    ``sheet_names`` maps crmkit's sheet titles (``"Deals"``) to the workbook's own tab
    names (``"CRM Deals"``), as ``[sheet_names]`` in crmkit.toml does; the sync state stays
    under crmkit's titles, so renaming a tab this way loses nothing.
    """
    if on_conflict not in ON_CONFLICT:
        raise CrmkitError(f"on_conflict must be one of {', '.join(ON_CONFLICT)} (got {on_conflict!r})")
    tabs = resolve_sheet_names(sheet_names)
    today = today or date.today()
    earlier: list[SyncReport] = []
    with _sync_lock(store):
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                report = _sync(
                    store,
                    book,
                    on_conflict=on_conflict,
                    dry_run=dry_run,
                    progress=progress,
                    today=today,
                    tabs=tabs,
                )
            except BookChangedError as exc:
                # People edit a shared sheet while it syncs. The store already holds this
                # attempt's changes and the journal its new rows, so reading again and
                # planning again is safe; it only must not go on for ever.
                if attempt == _ATTEMPTS or exc.report is None:
                    raise
                earlier.append(exc.report)
                continue
            for before in earlier:
                _carry_store_side(before, report)
            return report
    raise AssertionError("unreachable")


#: Reads of a workbook that keeps changing while it is synced, before giving up.
_ATTEMPTS = 3


def _carry_store_side(before: SyncReport, report: SyncReport) -> None:
    """Count in ``report`` what an attempt cut short by a changed workbook did to the store."""
    for old in before.sheets:
        new = next((s for s in report.sheets if s.sheet == old.sheet), None)
        if new is None:
            continue
        for mine, theirs in (
            (new.store_added, old.store_added),
            (new.store_updated, old.store_updated),
            (new.store_archived, old.store_archived),
        ):
            mine[:0] = [i for i in theirs if i not in mine]
        new.notes.append("the workbook changed while it was synced; read it again and synced the rest")


@contextmanager
def _sync_lock(store: Store) -> Iterator[None]:
    """One sync at a time per store: a cron job and a person may start one together.

    A PostgreSQL store is shared by machines, so its lock is the database's (an advisory lock).
    """
    exclusive = getattr(store.backend, "exclusive", None)
    if exclusive is not None:
        busy = f"another sync of {store.location} is still running (on this machine or another)"
        with exclusive("sync", timeout=store.lock_timeout * 4, busy=busy):
            yield
        return
    lock = FileLock(str(store.path) + ".sync.lock", timeout=store.lock_timeout * 4)
    try:
        with lock:
            yield
    except Timeout:
        raise CrmkitError(f"another sync of {store.path} is still running ({lock.lock_file})") from None


def _sync(
    store: Store,
    book: SheetBook,
    *,
    on_conflict: str,
    dry_run: bool,
    progress: Progress | None,
    today: date,
    tabs: Mapping[str, str],
) -> SyncReport:
    report = SyncReport(book=book.display_name, dry_run=dry_run)
    stamps = SyncStamps(store.path)
    fingerprint = _fingerprint(book, tabs)
    if stamps.unchanged(book.identity, fingerprint, today.isoformat()):
        report.skipped_unchanged = True
        return report
    state = store.state(STATE, book.identity) or {}
    if (
        fingerprint is not None
        and state.get("fingerprint") == fingerprint
        and state.get("store_revision") == store.revision
        and not any(state.get("pending", {}).values())
        and not state.get("needs_attention")  # problems are reported again until fixed
        and state.get("day") == today.isoformat()  # invoices turn overdue with the calendar
    ):
        report.skipped_unchanged = True
        return report
    if not dry_run:
        book.check_writable()
    tables = book.read()
    actor = f"sync:{book.display_name}"
    total = sum(len(t.rows) for rt in SYNCED_TYPES if (t := find_tab(tables, tabs[rt.sheet])) is not None)
    step = (lambda n: progress(n, total)) if progress is not None else None
    plans: list[_SheetSync] = []
    keep: dict[str, Any] = {}  # the base of sheets left alone this time
    kept_pending: dict[str, Any] = {}  # and their journal, still owed
    lines_tab = find_tab(tables, tabs[LINES_SHEET.title])

    def leave_alone(rt: RecordType, title: str, problem: str) -> None:
        summary = SheetSummary(title)
        summary.problems.append(problem)
        report.sheets.append(summary)
        keep[rt.sheet] = state.get("sheets", {}).get(rt.sheet, {})
        if pending := state.get("pending", {}).get(rt.sheet):
            kept_pending[rt.sheet] = pending

    try:
        with store.transaction(), paused_gc():
            for rt in SYNCED_TYPES:
                table = find_tab(tables, tabs[rt.sheet])
                if table is None and rt.table not in ALWAYS:
                    continue
                title = table.title if table is not None else tabs[rt.sheet]
                refusal = None
                if table is not None:
                    refusal = tab_refusal(rt.sheet, table, sheet_columns(rt), rt.field_for_header)
                if refusal is None and rt is INVOICE and lines_tab is not None:
                    refusal = tab_refusal(
                        LINES_SHEET.title, lines_tab, LINES_SHEET.columns, LINES_SHEET.field_for_header
                    )
                    if refusal is not None:
                        refusal += f" ({rt.sheet} are synced only with their lines)"
                if refusal is not None:
                    leave_alone(rt, title, refusal)
                    continue
                plan = _SheetSync(
                    store,
                    rt,
                    None if table is None or blank_tab(table) else table,
                    title=title,
                    base=state.get("sheets", {}).get(rt.sheet, {}),
                    pending=state.get("pending", {}).get(rt.sheet, {}),
                    on_conflict=on_conflict,
                    actor=actor,
                    today=today,
                    progress=step,
                    read_back=book.read_back,
                    lines_table=None if lines_tab is None or blank_tab(lines_tab) else lines_tab,
                    lines_title=lines_tab.title if lines_tab is not None else tabs[LINES_SHEET.title],
                    lines_cache=state.get("lines", {}),
                )
                try:
                    plan.run()
                except _SheetRefused as refused:
                    leave_alone(rt, plan.title, str(refused))
                    continue
                plans.append(plan)
                report.sheets.append(plan.summary)
            if dry_run:
                raise _DryRun
            writes = [p.changes for p in plans if p.changes]
            writes += [p.lines.changes for p in plans if p.lines is not None and p.lines.changes]
            if writes:
                journal = {**kept_pending, **{p.rt.sheet: p.new_ids for p in plans if p.new_ids}}
                store.set_state(STATE, book.identity, {**state, "pending": journal})
            else:  # nothing goes to the workbook: the new base can be saved right away
                _save_base(store, book, fingerprint, plans, report, keep, kept_pending, today, state)
                note = None if report.needs_attention else fingerprint
                store.after_commit(lambda: stamps.record(book.identity, note, today.isoformat()))
    except _DryRun:
        return report
    if writes:
        try:
            book.write(writes)
        except BookChangedError as exc:
            exc.report = report
            raise
        report.book_written = True
        written = _fingerprint(book, tabs)
        with store.transaction():
            _save_base(store, book, written, plans, report, keep, kept_pending, today, state)
            note = None if report.needs_attention else written
            store.after_commit(lambda: stamps.record(book.identity, note, today.isoformat()))
    return report


def _fingerprint(book: SheetBook, tabs: Mapping[str, str]) -> str | None:
    """The workbook's fingerprint, and which tabs are synced: a changed [sheet_names] is a change."""
    fingerprint = book.fingerprint()
    mapped = sorted((sheet, tab) for sheet, tab in tabs.items() if tab != sheet)
    if fingerprint is None or not mapped:
        return fingerprint
    return f"{fingerprint}|{mapped!r}"


def _save_base(
    store: Store,
    book: SheetBook,
    fingerprint: str | None,
    plans: list[_SheetSync],
    report: SyncReport,
    keep: dict[str, Any],
    kept_pending: dict[str, Any],
    today: date,
    previous: Mapping[str, Any],
) -> None:
    store.set_state(
        STATE,
        book.identity,
        {
            "fingerprint": fingerprint,
            "store_revision": store.revision,
            "sheets": {
                **keep,
                **{p.rt.sheet: {"keys": p.keys, "rows": p.new_base, "tab": p.title} for p in plans},
            },
            "lines": next(
                (p.lines.new_cache for p in plans if p.lines is not None), previous.get("lines", {})
            ),
            "pending": kept_pending,
            "needs_attention": report.needs_attention,
            "day": today.isoformat(),
        },
    )
