"""A sheet as the sync reads it: its columns, its rows parsed into field values, and its base.

Reading is apart from merging (:mod:`crmkit.sync.sheets`) so that each stays short: here
a header becomes a field, a cell a value (or an invalid cell, reported), an ID cell a
record, and the saved base is lined up with the sheet's columns.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import date
from typing import Any

from crmkit.errors import CrmkitError, FieldError
from crmkit.records.fields import Field, LinesField, RefField
from crmkit.records.output import record_output
from crmkit.records.schema import INVOICE, RecordType, parse_id
from crmkit.store import Store
from crmkit.sync.base import CLEAN, SIGNATURE, agreed_values, base_entry, invoice_status_today, rekeyed
from crmkit.sync.lines import InvoiceLines
from crmkit.sync.merge import NOT_ON_SHEET
from crmkit.sync.model import (
    CellChange,
    InvalidCell,
    SheetChanges,
    SheetRow,
    SheetSummary,
    SheetTable,
    column_letter,
)
from crmkit.sync.values import as_read, canon, canon_custom, date_from_serial, parse_cell, row_signature
from crmkit.workbooks import LINES_SHEET, sheet_columns

__all__ = ["Column", "SheetReader", "SheetRefused", "SyncRow", "custom_name"]


class SheetRefused(Exception):
    """A sheet crmkit must not sync as it is; the reason is reported, nothing is changed."""


@dataclass
class Column:
    """A column of the sheet that crmkit syncs (the ID column aside)."""

    index: int
    header: str
    key: str  # a field name, or "custom:<header>"
    field: Field | None  # None for a custom column
    readonly: bool  # kept by crmkit (totals, timestamps): written, never read


@dataclass
class SyncRow:
    """A row of the sheet as the sync reads it: its cells, its record and its parsed values."""

    number: int
    cells: list[Any]
    signature: str
    record_id: str | None = None
    values: dict[str, Any] = field(default_factory=dict)
    invalid: set[str] = field(default_factory=set)
    link: str | None = None  # "journal" or "email": how a row without an ID found its record


def custom_name(key: str) -> str:
    """The store's name of a custom field, from its column key."""
    return key[len("custom:") :]


class SheetReader:
    """One sheet as its sync sees it: its columns, its rows read into field values, and its base.

    :class:`~crmkit.sync.sheets.SheetSync` builds on it to merge and write back.
    """

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
        self.columns: list[Column] = []
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
                self.columns.append(Column(index, text, f.name, f, f.system))
            else:
                self.columns.append(Column(index, text, key, None, False))
        if self.lines is not None:
            self.columns.append(Column(-1, LINES_SHEET.title, "lines", INVOICE.get_field("lines"), False))
        if self.id_column < 0 and self.base:
            raise SheetRefused(
                f"{self.title} has no ID column any more; it was synced before, so crmkit leaves the sheet "
                "alone rather than treat every row as new (put the ID header back)"
            )
        if self.id_column < 0:
            # Without an ID column rows cannot be tied to records: add one.
            self.id_column = len(self.table.headers)
            self.changes.cells.append(CellChange(1, self.id_column, "ID"))
            self.summary.notes.append(f"added an ID column ({column_letter(self.id_column)})")

    def _invalid(self, row: SyncRow, column: Column | None, value: Any, problem: str) -> None:
        index = column.index if column else self.id_column
        header = column.header if column else "ID"
        self.summary.invalid.append(
            InvalidCell(self.title, row.number, column_letter(index), header, value, problem)
        )
        if column is not None:
            row.invalid.add(column.key)

    def _column(self, key: str) -> Column | None:
        return next((c for c in self.columns if c.key == key), None)

    def _read_row(self, sheet_row: SheetRow) -> SyncRow | None:
        cells = list(sheet_row.cells)
        row = SyncRow(sheet_row.number, cells, row_signature(cells))
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
        if known and known[CLEAN] and known[SIGNATURE] == row.signature:
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

    def _add_lines(self, row: SyncRow) -> None:
        if self.lines is None:
            return
        if self.lines.created:
            # A new lines tab (a first sync, or [sheet_names] pointing at a new tab) says
            # nothing about any invoice's lines: the store's go onto it.
            row.values["lines"] = NOT_ON_SHEET
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

    def _resolve_ref(self, row: SyncRow, column: Column, raw: Any, value: str) -> Any:
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
        return agreed_values(self.keys, entry)

    def _entry(
        self,
        signature: str,
        doc: dict[str, Any],
        clean: bool,
        values: dict[str, Any],
        stood_in: Iterable[str] = (),
    ) -> list[Any]:
        status = invoice_status_today(doc, self.today) if self.rt is INVOICE else None
        return base_entry(self.keys, signature, doc.get("_rev"), clean, values, status, stood_in)

    def _rekey_base(self) -> None:
        """Entries saved under another set of columns (one was added or removed) are re-ordered."""
        self.keys = [c.key for c in self.columns if not c.readonly]
        self.base = rekeyed(self.base, self.base_keys, self.keys)

    def _writable(self, row: SyncRow) -> set[str]:
        """The columns a person edits, less the row's invalid cells."""
        return {c.key for c in self.columns if not c.readonly} - row.invalid
