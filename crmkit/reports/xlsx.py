"""A report in a workbook: a ``Reports`` sheet of its tables, each with a native Excel chart.

:func:`write_report` writes a :class:`~crmkit.reports.model.Report` into an
.xlsx file:

* a new file is written with openpyxl: one sheet holding the report;
* into an existing workbook the sheet is *grafted* (:func:`crmkit.xlsx.graft_sheet`,
  the same part-level writer as the sync's): it is built alone in a scratch
  workbook with openpyxl, then its parts (the worksheet, its drawing and
  charts) are added to the existing zip. Every other part of the workbook is
  copied byte for byte; only ``[Content_Types].xml``, the workbook part, its
  relationships, ``docProps/app.xml`` and ``styles.xml`` change, and styles.xml
  only by appending. openpyxl never saves the user's workbook: it would rewrite
  every sheet and drop what it does not know.

The sheet holds the report's title and notes, then each table under the one
before (a bold title row, a bold header row, the rows, a blank row), with
number formats by column kind, and the table's chart to the right of it: a
real chart over the table's cells (stacked columns, horizontal bars for a
funnel, a line), not a picture.

crmkit marks the sheets it writes with a hidden sheet-scoped defined name
(:data:`MARKER`). Writing again replaces crmkit's sheet of that name (its old
parts are removed); a sheet of that name crmkit did not write is never
overwritten: :class:`~crmkit.errors.CrmkitError` says so instead. The file is
always written beside the target and moved over it, so a failure leaves the
old workbook as it was.
"""

from __future__ import annotations

import io
import math
import re
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

from openpyxl import Workbook
from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.chart.data_source import AxDataSource, NumRef, StrRef
from openpyxl.chart.marker import Marker
from openpyxl.styles import Alignment, Font
from openpyxl.utils import get_column_letter
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.worksheet import Worksheet

from crmkit.errors import CrmkitError
from crmkit.files import replace_file
from crmkit.records.money import MINOR_UNITS
from crmkit.reports.model import Chart, Column, Report, Table
from crmkit.workbooks import money_format
from crmkit.xlsx import Package, SheetEntry, Styles, WorkbookError, graft_sheet, sheet_entries
from crmkit.xlsx.package import attrs

__all__ = ["MARKER", "write_report"]

#: The hidden, sheet-scoped defined name on every sheet crmkit writes a report into.
MARKER = "crmkit_report"

NUMBER_FORMATS = {
    "money": "#,##0.00",  # for a currency with two decimals; see money_format()
    "percent": "0.0%",
    "int": "#,##0",
    "days": '0.0" d"',  # the unit stays with the number, as in the terminal
    "date": "yyyy-mm-dd",
}
_DATETIME_FORMAT = "yyyy-mm-dd hh:mm"
_AXIS_FORMATS = {"money": "#,##0", "percent": "0%", "int": "#,##0", "days": "0"}
_NUMERIC = frozenset({"money", "percent", "int", "days"})

_CHART_WIDTH_CM = 16.0
_CHART_HEIGHT_CM = 7.5
_CHART_ROWS = 16  # rows of the default height (15 pt) a chart covers, and a little more
_MIN_WIDTH, _MAX_WIDTH = 8, 60
_MAX_TEXT = 32_767  # characters Excel keeps in a cell
_ILLEGAL_XML_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")
_BAD_SHEET_CHARS = set("[]:*?/\\")

# A number is set off from a text column to its right (an age ran into the contact beside it).
_NUMBER_ALIGNMENT = Alignment(horizontal="right", indent=1)
_INDENT_CHARS = 2  # about the width of that indent
_TITLE_FONT = Font(bold=True, size=14)
_BOLD = Font(bold=True)
_NOTE_FONT = Font(italic=True)


def write_report(report: Report, path: Path, *, sheet: str = "Reports") -> None:
    """Write ``report`` into the workbook ``path``: a new file, or sheet ``sheet`` of an existing one.

    An existing workbook keeps every other part as it was. Raises
    :class:`CrmkitError` when ``sheet`` is not a valid sheet name, when
    ``path`` is not an .xlsx workbook, or when it already has a sheet
    ``sheet`` that crmkit did not write.
    """
    path = Path(path)
    _check_sheet_name(sheet)
    if path.is_dir():
        raise CrmkitError(f"{path} is a directory, not a workbook")
    suffix = path.suffix.lower()
    # A macro workbook (.xlsm) of the team's takes a report sheet; a new file is always plain .xlsx.
    if suffix != ".xlsx" and not (suffix == ".xlsm" and path.exists()):
        raise CrmkitError(
            f"{path}: a report is written as an Excel workbook, so the file name must end in .xlsx"
        )
    book = build_workbook(report, sheet)
    if not path.exists():
        _save_new(path, book)
        return
    scratch = io.BytesIO()
    book.save(scratch)
    replace_file(path, lambda tmp: _graft_into(path, scratch.getvalue(), sheet, tmp))


# --------------------------------------------------------------------------------------------
# The sheet, with openpyxl


def build_workbook(report: Report, sheet: str = "Reports") -> Workbook:
    """A workbook of one sheet, ``sheet``, holding ``report`` with its charts (not saved)."""
    book = Workbook()
    ws = book.active
    assert isinstance(ws, Worksheet)
    ws.title = sheet
    ws.defined_names.add(DefinedName(MARKER, attr_text=f"{_quote_sheet(sheet)}!$A$1", hidden=True))
    # printed: landscape, one page wide, so a table and the chart beside it stay together
    ws.page_setup.orientation = "landscape"
    ws.page_setup.fitToWidth = 1
    ws.page_setup.fitToHeight = 0
    ws.sheet_properties.pageSetUpPr.fitToPage = True
    ws.cell(1, 1, _text(report.title or report.name)).font = _TITLE_FONT
    row = 2
    for note in report.notes:
        ws.cell(row, 1, _text(note)).font = _NOTE_FONT
        row += 1
    row += 1
    widths: dict[int, int] = {}
    for table in report.tables:
        row = _write_table(ws, table, row, widths)
    for column, width in widths.items():
        ws.column_dimensions[get_column_letter(column)].width = max(_MIN_WIDTH, min(_MAX_WIDTH, width + 2))
    return book


def _write_table(ws: Worksheet, table: Table, top: int, widths: dict[int, int]) -> int:
    """Write ``table`` from row ``top``; the row the next table starts at."""
    columns = _columns(table)
    title = table.title
    if table.currency and table.currency not in title:
        title = f"{title} ({table.currency})"
    ws.cell(top, 1, _text(title)).font = _BOLD
    header = top + 1
    for j, column in enumerate(columns, start=1):
        label = column.label
        if column.kind == "money" and table.currency and table.currency not in label:
            label = f"{label} ({table.currency})"
        cell = ws.cell(header, j, _text(label))
        cell.font = _BOLD
        if column.kind in _NUMERIC:
            cell.alignment = _NUMBER_ALIGNMENT
        pad = _INDENT_CHARS if column.kind in _NUMERIC else 0
        widths[j] = max(widths.get(j, 0), len(label) + pad)
    for i, values in enumerate(table.rows, start=header + 1):
        currency = table.currency or _row_currency(values)  # a Total table has a row per currency
        for j, column in enumerate(columns, start=1):
            value = _cell_value(values.get(column.key), column.kind)
            if value is None:
                continue
            cell = ws.cell(i, j)
            cell.value = value
            if isinstance(value, str):
                cell.data_type = "s"  # text is text, even when it starts with "="
            elif isinstance(value, datetime) and value.time() != datetime.min.time():
                cell.number_format = _DATETIME_FORMAT
            elif isinstance(value, date):
                cell.number_format = NUMBER_FORMATS["date"]
            elif column.kind == "money" and not isinstance(value, bool):
                cell.number_format = money_format(currency)  # VND 0 decimals, USD 2, KWD 3
            elif column.kind in _NUMERIC and not isinstance(value, bool):
                cell.number_format = NUMBER_FORMATS[column.kind]
            pad = 0
            if column.kind in _NUMERIC:
                cell.alignment = _NUMBER_ALIGNMENT
                pad = _INDENT_CHARS
            widths[j] = max(widths.get(j, 0), _shown_width(value, column.kind, currency) + pad)
    last = header + len(table.rows)
    after = last + 2
    if table.chart is not None and table.rows:
        ws.add_chart(
            _chart(ws, table, table.chart, columns, header, last),
            f"{get_column_letter(len(columns) + 2)}{top}",
        )
        after = max(after, top + _CHART_ROWS + 1)
    return after


def _row_currency(row: dict[str, Any]) -> str | None:
    currency = row.get("currency")
    return currency.upper() if isinstance(currency, str) and currency.upper() in MINOR_UNITS else None


def _columns(table: Table) -> list[Column]:
    """The table's columns, then any column its chart needs that the table does not show."""
    columns = list(table.columns)
    if table.chart is None:
        return columns
    known = {c.key for c in columns}
    for n, key in enumerate((table.chart.categories, *table.chart.series)):
        if key in known:
            continue
        known.add(key)
        values = [row.get(key) for row in table.rows if row.get(key) is not None]
        if n == 0:
            kind = "date" if values and all(isinstance(v, date) for v in values) else "text"
        elif any(isinstance(v, Decimal) for v in values) and table.currency:
            kind = "money"
        elif all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            kind = "int"
        else:
            kind = "days"
        columns.append(Column(key, key.replace("_", " ").capitalize(), kind))
    return columns


def _chart(
    ws: Worksheet, table: Table, spec: Chart, columns: list[Column], header: int, last: int
) -> BarChart | LineChart:
    index = {c.key: j for j, c in enumerate(columns, start=1)}
    kinds = {c.key: c.kind for c in columns}
    chart: BarChart | LineChart
    if spec.kind == "line":
        chart = LineChart()
    elif spec.kind in ("bar", "stacked_bar"):
        chart = BarChart()
        chart.type = "bar" if spec.horizontal else "col"
        if spec.kind == "stacked_bar":
            chart.grouping = "stacked"
            chart.overlap = 100
        if spec.horizontal:
            chart.x_axis.scaling.orientation = "maxMin"  # the first category (widest) on top
            chart.y_axis.crosses = "max"  # and the value axis still along the bottom
    else:
        raise ValueError(f"unknown chart kind {spec.kind!r} in table {table.title!r}")
    title = spec.title or table.title
    if table.currency and table.currency not in title and any(kinds[k] == "money" for k in spec.series):
        title = f"{title} ({table.currency})"
    chart.title = title
    chart.width, chart.height = _CHART_WIDTH_CM, _CHART_HEIGHT_CM
    for key in spec.series:
        column = index[key]
        chart.add_data(Reference(ws, min_col=column, min_row=header, max_row=last), titles_from_data=True)
    categories = Reference(ws, min_col=index[spec.categories], min_row=header + 1, max_row=last)
    text_categories = kinds[spec.categories] == "text"
    for series in chart.series:
        if isinstance(chart, LineChart):  # a line of one point (one month) is only its marker
            series.marker = Marker(symbol="circle", size=7)
        series.cat = (
            AxDataSource(strRef=StrRef(f=str(categories)))
            if text_categories
            else AxDataSource(numRef=NumRef(f=str(categories)))
        )
    axis_format = _AXIS_FORMATS.get(kinds[spec.series[0]]) if spec.series else None
    if axis_format:
        chart.y_axis.number_format = axis_format
    # openpyxl leaves <c:delete> out, which recent Excel and LibreOffice read as "no axis".
    chart.x_axis.delete = False
    chart.y_axis.delete = False
    if len(spec.series) > 1:
        assert chart.legend is not None
        chart.legend.position = "b"
    else:
        chart.legend = None
    return chart


def _cell_value(value: Any, kind: str) -> Any:
    """``value`` as openpyxl writes it into a cell of a ``kind`` column, or ``None`` for no value."""
    if value is None:
        return None
    if isinstance(value, bool):
        return value
    if isinstance(value, Decimal):
        return value if value.is_finite() else None
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, int):
        return value
    if isinstance(value, datetime):
        return value.replace(tzinfo=None) if value.tzinfo is not None else value
    if isinstance(value, date):
        return value
    text = str(value)
    if kind == "date":
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    elif kind in _NUMERIC:
        try:
            number = Decimal(text)
        except ArithmeticError:
            pass
        else:
            return number if number.is_finite() else None
    return _text(text)


def _text(value: str) -> str:
    """Text a cell can hold: no XML-illegal characters, at most Excel's 32,767 characters."""
    return _ILLEGAL_XML_RE.sub("", str(value))[:_MAX_TEXT]


def _shown_width(value: Any, kind: str, currency: str | None = None) -> int:
    """About how many characters ``value`` shows as in a ``kind`` column."""
    if isinstance(value, str):
        return max((len(line) for line in value.splitlines()), default=0)
    if isinstance(value, datetime):
        return 16
    if isinstance(value, date):
        return 10
    if isinstance(value, bool):
        return 5
    if kind == "percent":
        return len(f"{float(value) * 100:.1f}%")
    if kind == "money":
        return len(f"{float(value):,.{MINOR_UNITS.get(currency or '', 2)}f}")
    if kind == "days":
        return len(f"{float(value):.1f} d")
    if kind == "int":
        return len(f"{value:,}") if isinstance(value, int) else len(str(value))
    return len(str(value))


def _check_sheet_name(sheet: str) -> None:
    if (
        not sheet
        or len(sheet) > 31
        or any(ch in _BAD_SHEET_CHARS for ch in sheet)
        or sheet.startswith("'")
        or sheet.endswith("'")
        or _ILLEGAL_XML_RE.search(sheet)
        or sheet.casefold() == "history"
    ):
        raise CrmkitError(
            f"{sheet!r} is not a sheet name Excel accepts: 1 to 31 characters, none of [ ] : * ? / \\, "
            "not starting or ending with ', and not History"
        )


def _quote_sheet(sheet: str) -> str:
    return "'" + sheet.replace("'", "''") + "'"


# --------------------------------------------------------------------------------------------
# Writing the file


def _save_new(path: Path, book: Workbook) -> None:
    if not path.parent.is_dir():
        raise CrmkitError(f"cannot write {path}: the folder {path.parent} does not exist")
    replace_file(path, lambda tmp: book.save(tmp))


def _graft_into(path: Path, scratch: bytes, sheet: str, target: Path) -> None:
    """Write workbook ``path`` with the scratch workbook's sheet grafted in as ``sheet`` to ``target``."""
    try:
        with Package(path) as package:
            entries = sheet_entries(package)
            existing = next((e for e in entries if e.name.casefold() == sheet.casefold()), None)
            if existing is not None:
                _check_ours(package, existing)
            styles = Styles(package)
            graft_sheet(package, styles, scratch, sheet, marker=MARKER, replace=existing)
            styles.save()
            package.write(target)
    except WorkbookError as exc:
        raise CrmkitError(f"cannot add a report sheet to {path}: {exc}") from None


def _check_ours(package: Package, entry: SheetEntry) -> None:
    if entry.kind != "worksheet":
        raise CrmkitError(
            f"{package.path} has a sheet named {entry.name!r} that is not a worksheet; "
            "crmkit will not replace it"
        )
    text = package.text(package.workbook)
    for m in re.finditer(r"<(?:\w+:)?definedName\b([^>]*)>", text):
        found = attrs(m[1])
        if (found.get("name") or "").casefold() == MARKER and found.get("localSheetId") == str(entry.index):
            return
    raise CrmkitError(
        f"{package.path} already has a sheet named {entry.name!r} that crmkit did not write; "
        "crmkit will not overwrite it: rename that sheet, or write the report to another sheet (--sheet)"
    )
