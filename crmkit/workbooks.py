"""The Excel workbooks crmkit reads and writes: the template, the sample, reading sheets back.

A crmkit workbook has a README sheet, then one sheet per record type in
:data:`SHEETS` (leads, contacts, accounts, deals, invoices, cases) and an
"Invoice Lines" sheet with one row per invoice line item. Every header comes
from the schema in :mod:`crmkit.records.schema`; nothing here types a field's
label again, so the sheets cannot drift from the records they hold.

:func:`build_template` writes an empty template (or, with ``sample=True``, one
filled with the small demo data set below); :func:`read_workbook` reads the
rows of a workbook back as ``{field name: cell value}``, for the sync to parse.

``python -m crmkit.workbooks [DIRECTORY]`` regenerates the shipped
``workbooks/crmkit-template.xlsx`` and ``workbooks/sample.xlsx``.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any, cast

from openpyxl import Workbook, load_workbook
from openpyxl.comments import Comment
from openpyxl.styles import Alignment, Font, PatternFill
from openpyxl.utils import get_column_letter
from openpyxl.worksheet.datavalidation import DataValidation
from openpyxl.worksheet.worksheet import Worksheet

from crmkit.records.fields import (
    BoolField,
    ChoiceField,
    DateField,
    DecimalField,
    EmailField,
    Field,
    LinesField,
    PercentField,
    RefField,
    TagsField,
)
from crmkit.records.money import MINOR_UNITS
from crmkit.records.rules import invoice_totals
from crmkit.records.schema import ACCOUNT, CASE, CONTACT, DEAL, INVOICE, LEAD, RecordType, header_key

__all__ = [
    "DATA_ROWS",
    "INVOICE_LINES_TABLE",
    "LINES_SHEET",
    "README_WIDTH",
    "SAMPLE_NAME",
    "SHEETS",
    "TEMPLATE_NAME",
    "Sheet",
    "build_template",
    "lines_by_invoice",
    "main",
    "money_format",
    "read_workbook",
    "readme_row_height",
    "sheet_columns",
    "write_sheet",
]

#: The last sheet row that drop-down lists and checks are set up for.
DATA_ROWS = 1000
#: The table name :func:`read_workbook` returns invoice line rows under.
INVOICE_LINES_TABLE = "invoice_lines"
#: File names of the shipped workbooks, in ``workbooks/`` at the repository root.
TEMPLATE_NAME = "crmkit-template.xlsx"
SAMPLE_NAME = "sample.xlsx"

_COMPUTED = ("subtotal", "tax", "total")  # invoice totals, shown read-only


def sheet_columns(rt: RecordType) -> list[Field]:
    """The columns of ``rt``'s sheet, in order.

    "ID" first, then every field a person may set (the invoice ``lines`` go on
    their own sheet instead); an invoice sheet ends with the computed, read-only
    Subtotal, Tax and Total.
    """
    columns = [rt.get_field("id")]
    columns += [f for f in rt.user_fields if not isinstance(f, LinesField)]
    if rt is INVOICE:
        columns += [rt.get_field(name) for name in _COMPUTED]
    return columns


@dataclass(frozen=True)
class Sheet:
    """One data sheet of a workbook: its title, the table its rows go to, its columns.

    ``record_type`` is None for the Invoice Lines sheet, whose rows are line
    items of the invoice named in their Invoice column, not records.
    """

    title: str
    table: str
    columns: tuple[Field, ...]
    record_type: RecordType | None = None
    aliases: Mapping[str, Field] = dataclass_field(default_factory=dict)

    def field_for_header(self, header: str) -> Field | None:
        """The field a header of this sheet means, or None for a custom column."""
        if self.record_type is not None:
            return self.record_type.field_for_header(header)
        key = header_key(header)
        for f in self.columns:
            if key in {header_key(t) for t in (f.name, f.label, *f.aliases)}:
                return f
        return self.aliases.get(key)


_LINES = cast(LinesField, INVOICE.get_field("lines"))


def _lines_sheet() -> Sheet:
    lines = _LINES
    invoice = RefField(
        INVOICE.name,
        INVOICE.name.capitalize(),
        target=INVOICE.table,
        aliases=(f"{INVOICE.name} id",),
        required=True,
        help=f"the ID of the invoice the line belongs to, e.g. {INVOICE.prefix}-1",
    )
    # LinesField's sub-fields declare no aliases; accept the usual short headers.
    aliases = {
        "qty": lines.quantity,
        "price": lines.unit_price,
        "unitcost": lines.unit_price,
        "tax": lines.tax_rate,
        "vat": lines.tax_rate,
        "vatrate": lines.tax_rate,
        "item": lines.description,
    }
    return Sheet(
        title="Invoice Lines",
        table=INVOICE_LINES_TABLE,
        columns=(invoice, lines.description, lines.quantity, lines.unit_price, lines.tax_rate),
        aliases=aliases,
    )


#: The Invoice Lines sheet: Invoice (the invoice's ID), then the sub-fields of the ``lines`` field.
LINES_SHEET = _lines_sheet()
#: The data sheets of a workbook, in order (activities live in crmkit only).
SHEETS: tuple[Sheet, ...] = (
    *(
        Sheet(rt.sheet, rt.table, tuple(sheet_columns(rt)), rt)
        for rt in (LEAD, CONTACT, ACCOUNT, DEAL, INVOICE, CASE)
    ),
    LINES_SHEET,
)


def lines_by_invoice(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Invoice line rows grouped by their invoice id, ready for the ``lines`` field.

    Each line keeps only the sub-fields of :class:`~crmkit.records.fields.LinesField`
    (description, quantity, unit_price, tax_rate), raw; ``lines.parse`` cleans them.
    """
    names = [f.name for f in LINES_SHEET.columns[1:]]
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        invoice = str(row.get(INVOICE.name) or "").strip()
        grouped.setdefault(invoice, []).append({name: row.get(name) for name in names})
    return grouped


# --- Writing --------------------------------------------------------------------

_HEADER_FONT = Font(bold=True, color="FFFFFF")
_HEADER_FILL = PatternFill("solid", fgColor="1F4E78")
_SYSTEM_FILL = PatternFill("solid", fgColor="7F7F7F")  # columns crmkit keeps
_SYSTEM_FONT = Font(italic=True, color="595959")
_MONEY = "#,##0.00"
_LISTS = "_lists"  # hidden sheet for drop-down lists too long to write inline
_DATE = "yyyy-mm-dd"
_TITLE_MAX, _ERROR_MAX = 32, 225  # Excel's limits on a validation's error title and message


def _number_format(f: Field) -> str | None:
    if f is _LINES.quantity:
        return "General"  # a count, not money: 1 or 6.5
    if isinstance(f, DecimalField):
        return _MONEY
    if isinstance(f, DateField):
        return _DATE
    if isinstance(f, PercentField):
        return "0" if f.whole else "General"  # 0..100, never Excel's 0..1 percent
    return None


def money_format(currency: str | None) -> str:
    places = MINOR_UNITS.get((currency or "").upper(), 2)
    return "#,##0" + ("." + "0" * places if places else "")


def _width(f: Field) -> float:
    if f.name == "id":
        return 10
    if isinstance(f, EmailField):
        return 34
    if f.name in ("notes", "description", "title", "subject", "name", "company"):
        return 34
    if isinstance(f, (DateField, DecimalField, PercentField, ChoiceField, RefField)):
        return 14
    if isinstance(f, TagsField):
        return 24
    return 18


def _hint(f: Field, sheet: Sheet) -> str:
    """What a header's comment tells a person about the column."""
    parts: list[str] = []
    if f.name == "id" and sheet.record_type is not None:
        parts.append(
            f"Kept by crmkit, e.g. {sheet.record_type.prefix}-1: leave it blank on new rows "
            "and never change it."
        )
    elif f.system:
        parts.append(f"Computed by crmkit from the {LINES_SHEET.title} sheet; edits are ignored.")
    if f.required:
        parts.append("Required.")
    if f.help:
        parts.append(f.help[0].upper() + f.help[1:] + ".")
    if isinstance(f, RefField) and sheet.record_type is not None:
        parts.append(f"The ID of a record in {f.target}, e.g. {_prefix_of(f.target)}-1.")
    if isinstance(f, PercentField):
        parts.append("A percent from 0 to 100: 10 means 10%.")
    if isinstance(f, TagsField):
        parts.append("Separate tags with commas.")
    if isinstance(f, DateField):
        parts.append("A date, YYYY-MM-DD.")
    return " ".join(parts)


def _prefix_of(table: str) -> str:
    for sheet in SHEETS:
        if sheet.table == table and sheet.record_type is not None:
            return sheet.record_type.prefix
    return table[:1].upper()


def _cell_value(f: Field, value: Any) -> Any:
    """The cell value of a clean field value: numbers and dates stay themselves."""
    if value is None:
        return None
    if isinstance(f, BoolField):
        return "yes" if value else "no"
    if isinstance(f, TagsField):
        return f.format(value)
    if isinstance(value, (str, int, Decimal, float, date)):
        return value
    return f.format(value)


def _list_validation(wb: Workbook, field_name: str, choices: Sequence[str]) -> DataValidation:
    literal = ",".join(choices)
    if len(literal) <= 250 and not any("," in c or '"' in c for c in choices):
        formula = f'"{literal}"'
    else:
        # Excel caps a literal list at 255 characters; longer lists live on a hidden sheet.
        lists = wb[_LISTS] if _LISTS in wb.sheetnames else wb.create_sheet(_LISTS)
        lists.sheet_state = "hidden"
        column = 1 if lists.cell(row=1, column=1).value is None else lists.max_column + 1
        for row, choice in enumerate(choices, start=1):
            lists.cell(row=row, column=column, value=choice)
        letter = get_column_letter(column)
        formula = f"'{_LISTS}'!${letter}$1:${letter}${len(choices)}"
    error = f"Pick one of: {', '.join(choices)}"
    return DataValidation(
        type="list",
        formula1=formula,
        allow_blank=True,
        showErrorMessage=True,
        errorTitle=f"Not a valid {field_name}"[:_TITLE_MAX],
        error=error if len(error) <= _ERROR_MAX else "Pick a value from the drop-down list.",
    )


def write_sheet(
    wb: Workbook, sheet: Sheet, rows: Sequence[Mapping[str, Any]], currencies: Mapping[str, str]
) -> None:
    ws: Worksheet = wb.create_sheet(sheet.title)
    ncols = len(sheet.columns)
    last = get_column_letter(ncols)
    for col, f in enumerate(sheet.columns, start=1):
        letter = get_column_letter(col)
        cell = ws.cell(row=1, column=col, value=f.label)
        cell.font = _HEADER_FONT
        cell.fill = _SYSTEM_FILL if f.system else _HEADER_FILL
        cell.alignment = Alignment(vertical="center")
        hint = _hint(f, sheet)
        if hint:
            cell.comment = Comment(hint, "crmkit", width=260, height=90)
        dim = ws.column_dimensions[letter]
        values = [_cell_value(f, row.get(f.name)) for row in rows]
        longest = max((len(str(v)) for v in values if v is not None), default=0)
        dim.width = min(max(_width(f), len(f.label) + 4, longest + 2), 60)
        fmt = _number_format(f)
        if fmt:
            dim.number_format = fmt  # the column's style: new cells typed there take it
        if f.system:
            dim.font = _SYSTEM_FONT
        cells = f"{letter}2:{letter}{DATA_ROWS}"
        validation: DataValidation | None = None
        if isinstance(f, ChoiceField):
            validation = _list_validation(wb, f.label, f.choices)
        elif isinstance(f, BoolField):
            validation = _list_validation(wb, f.label, ("yes", "no"))
        elif f.system and f.name != "id":
            validation = DataValidation(
                type="custom",
                formula1="FALSE",
                showErrorMessage=True,
                errorTitle=f"{f.label} is computed"[:_TITLE_MAX],
                error=_hint(f, sheet),
            )
        if validation is not None:
            validation.add(cells)
            ws.add_data_validation(validation)
        for row_number, (row, value) in enumerate(zip(rows, values, strict=True), start=2):
            if value is None:
                continue
            cell = ws.cell(row=row_number, column=col, value=value)
            if fmt == _MONEY:
                # Per row, money shows its currency's decimals: none for VND.
                currency = row.get("currency") or currencies.get(str(row.get(INVOICE.name)))
                cell.number_format = money_format(currency)
            elif fmt:
                cell.number_format = fmt
            if f.system:
                cell.font = _SYSTEM_FONT
    ws.freeze_panes = "A2"
    ws.auto_filter.ref = f"A1:{last}{len(rows) + 1}"
    ws.print_title_rows = "1:1"
    ws.page_setup.orientation = "landscape"
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0


def _readme_lines() -> list[str]:
    titles = ", ".join(sheet.title for sheet in SHEETS)
    computed = ", ".join(INVOICE.get_field(name).label for name in _COMPUTED)
    id_label = INVOICE.get_field("id").label
    return [
        "crmkit workbook",
        "",
        f"Each sheet holds one kind of record ({titles}); one row is one record, "
        "and row 1 holds the column headers. Keep the headers as they are.",
        f"The {id_label} column is managed by crmkit: leave it blank on rows you add and never change "
        "it; crmkit fills it in. Link records by ID (A-1, C-2).",
        f"Columns with a grey header ({id_label}, {computed}) are kept by crmkit; "
        "what you type there is ignored.",
        f"Invoice line items go on the {LINES_SHEET.title} sheet, one row per line, with the invoice's "
        f"ID (e.g. {INVOICE.prefix}-1) in the {LINES_SHEET.columns[0].label} column. "
        f"{_LINES.tax_rate.label} is a percent: 10 means 10%.",
        "Columns you add to a sheet are kept as custom fields of its records.",
        "Dates are YYYY-MM-DD; probability is 0 to 100; amounts are plain numbers in the row's currency.",
        "Hover over a header to see what the column takes; choice columns offer a drop-down list.",
        "When you are done editing, run `crmkit sync` to bring your changes into crmkit.",
    ]


#: The README column's width, in characters: narrower than a portrait A4 or Letter page at 100%
#: even in a wide fallback font (LibreOffice, without Calibri or Carlito, does not shrink a lone
#: wrapped column to fit the page).
README_WIDTH = 75
_LINE_POINTS = 15.0  # a line of 11 pt text
_TITLE_POINTS = 24.0


def readme_row_height(text: str, width: int = README_WIDTH) -> float:
    """The height, in points, that shows all of ``text`` wrapped in a column ``width`` characters wide.

    Neither Excel nor LibreOffice grows a row for wrapped text it did not lay
    out itself, so without a height the lines print over the next row. The
    count errs on the generous side: a column ``width`` characters wide holds
    about 1.2 times as many characters of prose (digits, by which the width
    is counted, are wider than most letters), counted here as 1.1, and words
    wrap whole.
    """
    per_line = max(1, int(width * 1.1))
    lines = 0
    for paragraph in text.split("\n"):
        words, length = paragraph.split(), 0
        lines += 1
        for word in words:
            if length and length + 1 + len(word) > per_line:
                lines += 1
                length = 0
            length += (1 if length else 0) + len(word)
    return lines * _LINE_POINTS + 3


def _write_readme(wb: Workbook) -> None:
    ws: Worksheet = wb.active
    ws.title = "README"
    for row, text in enumerate(_readme_lines(), start=1):
        cell = ws.cell(row=row, column=1, value=text or None)
        cell.alignment = Alignment(wrap_text=True, vertical="top")
        ws.row_dimensions[row].height = readme_row_height(text) if text else _LINE_POINTS / 2
    ws["A1"].font = Font(bold=True, size=14)
    ws.row_dimensions[1].height = _TITLE_POINTS
    ws.column_dimensions["A"].width = README_WIDTH
    # printed: portrait, one page wide, whatever the printer's paper
    ws.page_setup.orientation = "portrait"
    ws.page_margins.left = ws.page_margins.right = 0.6
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.print_area = f"A1:A{ws.max_row}"


def _sample_rows() -> dict[str, list[dict[str, Any]]]:
    """The sample data as written: invoices carry their computed totals."""
    from crmkit.sample_data import SAMPLE  # only the sample workbook needs it

    rows = {table: [dict(r) for r in table_rows] for table, table_rows in SAMPLE.items()}
    lines = lines_by_invoice(SAMPLE[INVOICE_LINES_TABLE])
    for invoice in rows[INVOICE.table]:
        clean = _LINES.parse(lines.get(invoice["id"], []))
        invoice.update(invoice_totals(clean, invoice["currency"]))
    return rows


def build_template(path: str | Path, *, sample: bool = False) -> Path:
    """Write a crmkit workbook to ``path`` and return the path.

    A README sheet, then every sheet of :data:`SHEETS` with its schema headers
    (bold, frozen, filtered), drop-down lists for choice and yes/no columns and
    number formats for money, dates and percents. ``sample=True`` fills the
    sheets with the sample data (:data:`crmkit.sample_data.SAMPLE`).
    """
    target = Path(path)
    data = _sample_rows() if sample else {}
    currencies = {str(inv["id"]): inv["currency"] for inv in data.get(INVOICE.table, [])}
    wb = Workbook()
    wb.properties.creator = "crmkit"
    wb.properties.title = "crmkit workbook"
    _write_readme(wb)
    for sheet in SHEETS:
        write_sheet(wb, sheet, data.get(sheet.table, []), currencies)
    if _LISTS in wb.sheetnames:
        wb.move_sheet(_LISTS, offset=len(wb.sheetnames))
    target.parent.mkdir(parents=True, exist_ok=True)
    wb.save(target)
    return target


# --- Reading --------------------------------------------------------------------


def _is_blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _read_value(f: Field | None, value: Any) -> Any:
    if isinstance(f, DateField) and isinstance(value, datetime) and value.time() == time(0):
        return value.date()
    return value


def read_workbook(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """The rows of every sheet of :data:`SHEETS` that ``path`` has, by table name.

    Each row maps field names (headers matched with the schema's
    ``field_for_header``; unknown headers keep their text) to raw cell values,
    plus its 1-based sheet row number under ``"_row"``. Empty rows and columns
    without a header are skipped; when two headers mean the same field the
    later one is kept under its own text. Midnight datetimes in date columns
    become dates. Invoice line rows come under ``"invoice_lines"``.
    """
    wb = load_workbook(Path(path), read_only=True, data_only=True)
    try:
        titles = {title.strip().casefold(): title for title in wb.sheetnames}
        out: dict[str, list[dict[str, Any]]] = {}
        for sheet in SHEETS:
            title = titles.get(sheet.title.casefold())
            if title is None:
                continue
            out[sheet.table] = _read_sheet(wb[title], sheet)
        return out
    finally:
        wb.close()


def _read_sheet(ws: Any, sheet: Sheet) -> list[dict[str, Any]]:
    rows = ws.iter_rows(values_only=True)
    header = next(rows, None) or ()
    columns: list[tuple[int, str, Field | None]] = []
    seen: set[str] = set()
    for index, text in enumerate(header):
        if _is_blank(text):
            continue
        label = str(text).strip()
        f = sheet.field_for_header(label)
        if f is not None and f.name not in seen:
            key = f.name
        else:  # a custom column, or a second column for a field: kept under its header
            f = None
            key = label if label not in seen else f"{label} ({get_column_letter(index + 1)})"
        seen.add(key)
        columns.append((index, key, f))
    out: list[dict[str, Any]] = []
    for number, values in enumerate(rows, start=2):
        row: dict[str, Any] = {}
        for index, key, f in columns:
            value = values[index] if index < len(values) else None
            row[key] = None if _is_blank(value) else _read_value(f, value)
        if all(v is None for v in row.values()):
            continue
        row["_row"] = number
        out.append(row)
    return out


# --- Command line -----------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Regenerate the template and the sample workbook in ``workbooks/`` (or a given directory)."""
    args = list(sys.argv[1:] if argv is None else argv)
    directory = Path(args[0]) if args else Path(__file__).resolve().parent.parent / "workbooks"
    for name, sample in ((TEMPLATE_NAME, False), (SAMPLE_NAME, True)):
        written = build_template(directory / name, sample=sample)
        print(f"wrote {written}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
