"""The sync of one sheet with the store, row by row, inside the store transaction.

:class:`SheetSync` ties each row read by :class:`~crmkit.sync.reader.SheetReader` to its
record (by ID, by the journal of an interrupted run, or by email), merges each field
three ways (the decisions are :func:`~crmkit.sync.merge.merge_field`'s), saves what the
sheet changed to the store, and plans the cells to write back and the new base. The
engine writes the workbook.
"""

from __future__ import annotations

from typing import Any

from crmkit.errors import DuplicateError, FieldError, ValidationError
from crmkit.records.schema import CONTACT, INVOICE, LEAD
from crmkit.sync.base import CLEAN, REVISION, SIGNATURE, STATUS, invoice_status_today, stand_ins
from crmkit.sync.cells import is_number, readonly_value, same_id, typed_as_text, written_cell
from crmkit.sync.merge import NO_BASE, NOT_ON_SHEET, Conflicting, Side, merge_field
from crmkit.sync.model import CellChange, Conflict, Formatted
from crmkit.sync.reader import Column, SheetReader, SyncRow, custom_name
from crmkit.sync.summary import counted
from crmkit.sync.values import row_signature
from crmkit.workbooks import sheet_columns

__all__ = ["SheetSync"]


class SheetSync(SheetReader):
    """Plans and applies the sync of one sheet, inside the store transaction."""

    # -- the sheet, row by row ----------------------------------------------

    def run(self) -> None:
        self._map_columns()
        self._rekey_base()
        assert self.table is not None
        rows: list[SyncRow] = []
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

    def _link_journal(self, rows: list[SyncRow], on_sheet: dict[str, int]) -> None:
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

        def claim(row: SyncRow, entry: list[Any]) -> None:
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

    def _link(self, row: SyncRow, on_sheet: dict[str, int]) -> None:
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

    def _journal_key(self, row: SyncRow) -> Any:
        """What ties a new row to the record made for it by a run that died before writing its ID.

        The row's title (name, deal title) rather than all its cells, so that a
        person can go on filling in the row meanwhile.
        """
        return row.values.get(self.rt.title_field) or row.signature

    def _apply(self, record_id: str | None, changes: dict[str, Any], row: SyncRow) -> dict[str, Any] | None:
        """Save changes to the store, dropping (and reporting) the values it refuses."""
        data = dict(changes)
        while True:
            payload = {(custom_name(k) if k.startswith("custom:") else k): v for k, v in data.items()}
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

    def _create(self, row: SyncRow) -> None:
        values = {
            k: v
            for k, v in row.values.items()
            if v not in (None, False) and v is not NOT_ON_SHEET and k not in row.invalid
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

    def _untouched(self, row: SyncRow) -> bool:
        """Neither side changed this row since the last sync: nothing to do."""
        known = self.base.get(row.record_id or "")
        if row.link is not None or not known or not known[CLEAN] or known[SIGNATURE] != row.signature:
            return False
        doc = self.store.peek(row.record_id or "")
        if doc is None or known[REVISION] is None or known[REVISION] != doc.get("_rev"):
            return False
        if self.rt is not INVOICE:
            return True
        # an invoice's lines live on their own sheet, and its status can turn
        # overdue with the calendar alone
        return (
            "lines" not in row.invalid
            and row.values.get("lines") == self._agreed(known).get("lines")
            and known[STATUS] == invoice_status_today(doc, self.today)
        )

    def _merge_row(self, row: SyncRow) -> None:
        assert row.record_id is not None
        if self._untouched(row):
            self.new_base[row.record_id] = self.base[row.record_id]
            return
        if not self.store.exists(row.record_id):
            # An ID this store never gave out (a workbook from elsewhere): keep it.
            values = {
                k: v
                for k, v in row.values.items()
                if v not in (None, False) and v is not NOT_ON_SHEET and k not in row.invalid
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
        stood_in = stand_ins(known)
        to_store: dict[str, Any] = {}
        agreed: set[str] = set()
        for column in self.columns:
            key = column.key
            if column.readonly or key in row.invalid:
                continue
            sheet_value = row.values.get(key)
            outcome = merge_field(
                sheet_value,
                stored.get(key),
                base_values.get(key, NO_BASE),
                new_row=row.link in ("email", "journal"),
                stood_in=key in stood_in,
            )
            if isinstance(outcome, Conflicting):
                winner = self._conflict(row, column, sheet_value, stored.get(key), outcome)
                if winner is None:
                    continue  # neither side changes; the field stays a conflict
                outcome = winner
            if outcome == "sheet":
                to_store[key] = sheet_value
            agreed.add(key)  # whichever side won, _write_back puts the store's final value in the sheet
        if doc.get("archived_at"):
            doc = self.store.restore(doc["id"])  # an archived contact re-imported by email
            self.summary.store_updated.append(doc["id"])
        if to_store:
            updated = self._apply(doc["id"], to_store, row)
            if updated is not None and updated != doc:
                self.summary.store_updated.append(doc["id"])
                doc = updated
            agreed -= row.invalid
        self._write_back(row, doc, agreed=agreed, base=base_values, stood_in=stood_in)

    def _apply_new_with_id(self, values: dict[str, Any], row: SyncRow) -> dict[str, Any] | None:
        payload = {(custom_name(k) if k.startswith("custom:") else k): v for k, v in values.items()}
        try:
            return self.store.add(self.rt.table, payload, allow_system=True, actor=self.actor)
        except (ValidationError, DuplicateError) as exc:
            self._invalid(row, None, row.record_id, str(exc))
            return None

    def _conflict(
        self, row: SyncRow, column: Column, sheet_value: Any, store_value: Any, conflict: Conflicting
    ) -> Side | None:
        """Report a conflict; the side ``on_conflict`` makes win, None when neither does ("fail")."""
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
                base_value=conflict.base_value,
                base=conflict.base,
            )
        )
        return {"none": None, "sheet": "sheet", "store": "store"}[resolution]

    def _write_back(
        self,
        row: SyncRow,
        doc: dict[str, Any],
        *,
        agreed: set[str],
        base: dict[str, Any] | None,
        stood_in: frozenset[str] = frozenset(),
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
        if row.link is not None or not same_id(row.cells, self.id_column, doc["id"]):
            self._set(cells, row.number, self.id_column, doc["id"])
            self.summary.ids_written += 1
        for column in self.columns:
            key = column.key
            if key in row.invalid or not (column.readonly or key in agreed):
                continue
            current = (
                row.values.get(key)
                if not column.readonly
                else readonly_value(
                    column.field,
                    row.cells[column.index] if column.index < len(row.cells) else None,
                    serial_dates=self.serial_dates,
                )
            )
            if key == "lines":
                # a new currency: the unit prices take its format too
                if stored[key] != current or (recurrency and stored[key]):
                    assert self.lines is not None
                    self.lines.write(doc["id"], doc.get("number"), stored[key], currency)
                    wrote = True
                continue
            value = written_cell(column.field, stored[key], currency)
            raw = row.cells[column.index] if column.index < len(row.cells) else None
            if isinstance(value, Formatted) and not recurrency and is_number(raw):
                # A changed amount in an unchanged currency keeps the format its cell has: a
                # person's own (a currency symbol, say) is theirs to keep.
                value = value.value
            # only a value typed since the last sync: a cell that keeps turning what crmkit
            # writes into text (formatted as plain text) is not written again and again
            typed = not column.readonly and (base is None or base.get(key, NO_BASE) != current)
            if (
                stored[key] != current
                or (recurrency and isinstance(value, Formatted))
                or (typed and typed_as_text(column.field, raw, value))
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
                    if k in stood_in:
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

    def _archive_deleted(self, on_sheet: dict[str, int], rows: list[SyncRow]) -> None:
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
                cells[column.index] = written_cell(column.field, stored[column.key], currency)
            self.changes.append.append(cells)
            self.summary.sheet_added.append(doc["id"])
            signature = row_signature([self.read_back(c) for c in cells])
            self.new_base[doc["id"]] = self._entry(signature, doc, True, {k: stored[k] for k in self.keys})
