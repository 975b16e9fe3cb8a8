"""The Invoice Lines sheet: each invoice's line items, one row per line, synced with the Invoices sheet.

An invoice's lines are one field in the store but many rows on their own tab, tied
to their invoice by its id or number; the Invoices sheet's sync reads and writes them
through :class:`InvoiceLines`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from crmkit.errors import CrmkitError, FieldError
from crmkit.records.fields import Field, LinesField
from crmkit.records.schema import INVOICE, parse_id
from crmkit.sync.model import (
    CellChange,
    Formatted,
    InvalidCell,
    SheetChanges,
    SheetRow,
    SheetSummary,
    SheetTable,
    column_letter,
)
from crmkit.sync.values import cell_value, parse_cell, row_signature
from crmkit.workbooks import LINES_SHEET, money_format

__all__ = ["InvoiceLines", "LineGroup", "invoice_key"]


@dataclass
class LineGroup:
    rows: list[int] = field(default_factory=list)
    raw: list[dict[str, Any]] = field(default_factory=list)
    value: Any = None
    invalid: bool = False


class InvoiceLines:
    """The Invoice Lines sheet: line items grouped by invoice, read and written for the Invoices sheet."""

    def __init__(
        self,
        table: SheetTable | None,
        summary: SheetSummary,
        cache: dict[str, Any],
        title: str = LINES_SHEET.title,
    ) -> None:
        self.summary = summary  # the Invoices sheet's: its lines are reported with it
        # group key -> [signature of its raw cells, parsed lines], from the last sync
        self.cache = cache
        self.new_cache: dict[str, Any] = {}
        self.changes = SheetChanges(table.title if table else title)
        #: The tab is made this sync: no invoice's lines are on it yet, none were deleted.
        self.created = table is None
        if table is None:
            headers = [f.label for f in LINES_SHEET.columns]
            self.changes.create_headers = headers
            table = SheetTable(title, headers, [])
        self.table = table
        self.index: dict[str, int] = {}
        for position, header in enumerate(table.headers):
            f = LINES_SHEET.field_for_header(str(header)) if header else None
            if f is not None and f.name not in self.index:
                self.index[f.name] = position
        self.groups: dict[str, LineGroup] = {}
        self._next_row = max((r.number for r in table.rows), default=1) + 1
        #: Lines can be read from the tab (it has an Invoice column).
        self.readable = INVOICE.name in self.index
        if not self.readable:
            self.summary.notes.append(
                f"{table.title} has no {INVOICE.name.capitalize()} column; lines not synced"
            )
            return
        self._read()

    def _read(self) -> None:
        lines_field = INVOICE.get_field("lines")
        assert isinstance(lines_field, LinesField)
        subfields: dict[str, Field] = {
            f.name: f
            for f in (
                lines_field.description,
                lines_field.quantity,
                lines_field.unit_price,
                lines_field.tax_rate,
            )
        }
        positions = {name: self.index.get(name) for name in subfields}
        rows_of: dict[str, list[SheetRow]] = {}
        for sheet_row in self.table.rows:
            key = invoice_key(sheet_row.cell(self.index[INVOICE.name]))
            if key is None:
                continue
            group = self.groups.setdefault(key, LineGroup())
            group.rows.append(sheet_row.number)
            rows_of.setdefault(key, []).append(sheet_row)
            group.raw.append(
                {name: sheet_row.cell(at) if at is not None else None for name, at in positions.items()}
            )
        for key, group in self.groups.items():
            signature = row_signature([list(line.values()) for line in group.raw])
            cached = self.cache.get(key)
            if cached and cached[0] == signature:
                group.value = cached[1]  # nobody touched these lines
                self.new_cache[key] = cached
                continue
            try:
                group.value = parse_cell(lines_field, group.raw)
                self.new_cache[key] = [signature, group.value]
                continue
            except FieldError:
                group.invalid = True
            # find the very cells to report (the common case above skips this)
            for sheet_row in rows_of[key]:
                for name, f in subfields.items():
                    at = positions[name]
                    raw = sheet_row.cell(at) if at is not None else None
                    try:
                        f.parse(raw)
                    except FieldError as exc:
                        cell = InvalidCell(
                            self.table.title,
                            sheet_row.number,
                            column_letter(at or 0),
                            f.label,
                            raw,
                            exc.problem,
                        )
                        self.summary.invalid.append(cell)
            if not any(i.sheet == self.table.title and i.row in group.rows for i in self.summary.invalid):
                self.summary.notes.append(f"{self.table.title} rows {group.rows}: lines refused")

    def group_for(self, record_id: str | None, number: Any) -> LineGroup | None:
        for key in (record_id, invoice_key(number)):
            if key and key in self.groups:
                return self.groups[key]
        return None

    def write(
        self, record_id: str, number: Any, lines: list[dict[str, Any]] | None, currency: str | None = None
    ) -> None:
        """Make the sheet's rows for this invoice show ``lines``: rewrite, add or clear rows.

        Rows keep the invoice reference people typed (id or number); new rows get the id.
        Unit prices are money, in the invoice's currency's format.
        """
        if INVOICE.name not in self.index:
            return
        group = self.group_for(record_id, number) or LineGroup()
        lines = lines or []
        names = ("description", "quantity", "unit_price", "tax_rate")
        lines_field = INVOICE.get_field("lines")
        assert isinstance(lines_field, LinesField)
        for position, line in enumerate(lines):
            values: dict[str, Any] = {n: (Decimal(line[n]) if n != "description" else line[n]) for n in names}
            # as on the main sheets: a number a double cannot hold goes in as text
            values["quantity"] = cell_value(lines_field.quantity, line["quantity"])
            price = cell_value(lines_field.unit_price, line["unit_price"])
            values["unit_price"] = (
                Formatted(price, money_format(currency)) if isinstance(price, Decimal) else price
            )
            if position < len(group.rows):
                row = group.rows[position]
            else:
                row = self._next_row
                self._next_row += 1
                values[INVOICE.name] = record_id
            for name, value in values.items():
                if name in self.index:
                    self.changes.cells.append(CellChange(row, self.index[name], value))
        for row in group.rows[len(lines) :]:
            for name in (INVOICE.name, *names):
                if name in self.index:
                    self.changes.cells.append(CellChange(row, self.index[name], None))


def invoice_key(value: Any) -> str | None:
    if value is None or not str(value).strip():
        return None
    text = str(value).strip()
    try:
        rt, number = parse_id(text)
        if rt is INVOICE:
            return f"{rt.prefix}-{number}"
    except CrmkitError:
        pass
    return text.casefold()
