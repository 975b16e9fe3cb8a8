"""crmkit.reports.xlsx: reports written into real .xlsx files, new or grafted into existing ones.

Every workbook is read back with openpyxl (values, number formats, the native
charts and the cells they point at), the existing workbooks are checked part by
part (every zip member but the four a new sheet needs is byte for byte the
same) and, when it is installed, LibreOffice opens each one.
"""

from __future__ import annotations

import os
import posixpath
import re
import shutil
import subprocess
import zipfile
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from xml.etree import ElementTree as ET

import pytest
from openpyxl import Workbook, load_workbook
from openpyxl.chart import BarChart, LineChart, Reference
from openpyxl.styles import Font, PatternFill
from openpyxl.worksheet.worksheet import Worksheet

from crmkit.errors import CrmkitError
from crmkit.reports.model import Chart, Column, Report, Table
from crmkit.reports.xlsx import MARKER, write_report
from crmkit.xlsx.graft import _inline_shared_strings

SHIPPED = Path(__file__).resolve().parent.parent / "workbooks"
SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")
REQUIRE_SERVERS = bool(os.environ.get("CRMKIT_REQUIRE_SERVERS"))
needs_soffice = pytest.mark.skipif(
    SOFFICE is None and not REQUIRE_SERVERS,
    reason="LibreOffice (soffice) is not installed; CRMKIT_REQUIRE_SERVERS=1 makes this an error",
)
# The parts adding a sheet has to change; every other part must stay byte for byte the same.
MAY_CHANGE = {"[Content_Types].xml", "xl/workbook.xml", "xl/_rels/workbook.xml.rels", "xl/styles.xml"}
MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


# -- reports ----------------------------------------------------------------------------------


def pipeline_report() -> Report:
    columns = [
        Column("stage", "Stage"),
        Column("count", "Deals", "int"),
        Column("amount", "Amount", "money"),
        Column("weighted", "Weighted", "money"),
        Column("upside", "Upside", "money"),
    ]
    eur = [
        {"stage": "new", "count": 3, "amount": Decimal("12000.00"), "weighted": Decimal("1200.00")},
        {"stage": "proposal", "count": 2, "amount": Decimal("8000.50"), "weighted": Decimal("4000.25")},
        {"stage": "negotiation", "count": 1, "amount": Decimal("5000"), "weighted": Decimal("4000")},
    ]
    usd = [{"stage": "qualified", "count": 1, "amount": Decimal("999.99"), "weighted": Decimal("199.99")}]
    for row in [*eur, *usd]:
        row["upside"] = row["amount"] - row["weighted"]
    return Report(
        "pipeline",
        "Open pipeline",
        [
            Table(
                "Open deals (EUR)",
                columns,
                eur,
                Chart("stacked_bar", "stage", ("weighted", "upside"), "Open pipeline (EUR)"),
                "EUR",
            ),
            Table(
                "Open deals",
                columns,
                usd,
                Chart("stacked_bar", "stage", ("weighted", "upside"), "Open pipeline"),
                "USD",
            ),
            Table(
                "Total",
                [Column("currency", "Currency"), Column("count", "Deals", "int")],
                [{"currency": "EUR", "count": 6}, {"currency": "USD", "count": 1}],
            ),
        ],
        ["amounts are not converted between currencies"],
    )


def funnel_report() -> Report:
    rows = [
        {"stage": "leads", "reached": 40, "conversion": 0.5, "days": None},
        {"stage": "new", "reached": 20, "conversion": 0.75, "days": 2.5},
        {"stage": "proposal", "reached": 15, "conversion": Decimal("0.4"), "days": 10.25},
        {"stage": "won", "reached": 6, "conversion": None, "days": None},
    ]
    return Report(
        "funnel",
        "Funnel",
        [
            Table(
                "Funnel",
                [
                    Column("stage", "Stage"),
                    Column("reached", "Reached", "int"),
                    Column("conversion", "Conversion", "percent"),
                    Column("days", "Median days", "days"),
                ],
                rows,
                Chart("bar", "stage", ("reached",), "Funnel", horizontal=True),
            )
        ],
    )


def revenue_report() -> Report:
    months = [date(2025, m, 1) for m in range(1, 7)]
    return Report(
        "revenue",
        "Revenue",
        [
            Table(
                "Revenue by month",
                [Column("month", "Month", "date"), Column("revenue", "Revenue", "money")],
                [{"month": m, "revenue": Decimal(1000 * i) + Decimal("0.5")} for i, m in enumerate(months)],
                Chart("line", "month", ("revenue",), "Revenue by month"),
                "EUR",
            ),
            Table(
                "Revenue by owner",
                [Column("owner", "Owner"), Column("revenue", "Revenue", "money")],
                [{"owner": "ana", "revenue": Decimal("10.10")}, {"owner": "bob", "revenue": Decimal("3")}],
                None,
                "EUR",
            ),
        ],
    )


# -- reading workbooks back ---------------------------------------------------------------------


def title_rows(ws: Worksheet) -> dict[str, int]:
    """The row of each bold text in column A (the report's and the tables' titles, a few headers)."""
    return {
        str(cell.value): cell.row
        for cell in ws["A"]
        if isinstance(cell.value, str) and cell.font and cell.font.b
    }


def row_values(ws: Worksheet, row: int, width: int) -> list[Any]:
    return [ws.cell(row, column).value for column in range(1, width + 1)]


def ref_values(wb: Any, ref: str) -> list[Any]:
    """The values of the cells a chart formula like ``'Reports'!$B$5:$B$8`` points at."""
    sheet, cells = ref.replace("$", "").rsplit("!", 1)
    ws = wb[sheet.strip("'").replace("''", "'")]
    found = ws[cells]
    if not isinstance(found, tuple):
        return [found.value]
    return [cell.value for row in found for cell in (row if isinstance(row, tuple) else (row,))]


def series_refs(series: Any) -> tuple[str, str, str]:
    """(categories, values, title) formulas of a chart series."""
    cat = series.cat.strRef or series.cat.numRef
    return cat.f, series.val.numRef.f, series.tx.strRef.f


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def assert_untouched(before: dict[str, bytes], path: Path) -> dict[str, bytes]:
    after = members(path)
    for name, data in before.items():
        if name not in MAY_CHANGE:
            assert name in after, f"{name} was removed"
            assert after[name] == data, f"{name} changed"
    return after


def reachable(package: dict[str, bytes]) -> set[str]:
    """The parts the package's relationships lead to, from its root."""
    seen: set[str] = set()
    todo = [""]
    while todo:
        part = todo.pop()
        folder, name = posixpath.split(part)
        rels = posixpath.join(folder, "_rels", f"{name}.rels")
        if rels not in package:
            continue
        for rel in ET.fromstring(package[rels]):
            if rel.get("TargetMode") == "External":
                continue
            target = rel.get("Target") or ""
            found = target.lstrip("/") if target.startswith("/") else posixpath.join(folder, target)
            found = posixpath.normpath(found)
            assert found in package, f"{rels} points at {found}, which is not there"
            if found not in seen:
                seen.add(found)
                todo.append(found)
    return seen


def style_lists(data: bytes) -> dict[str, list[bytes]]:
    root = ET.fromstring(data)
    out = {}
    for tag in ("numFmts", "fonts", "fills", "borders", "cellStyleXfs", "cellXfs", "cellStyles", "dxfs"):
        el = root.find(f"{MAIN}{tag}")
        out[tag] = [ET.tostring(child) for child in el] if el is not None else []
    return out


def assert_styles_appended(before: bytes, after: bytes) -> None:
    """Every style list of ``after`` starts with the entries of ``before``, at the same indexes."""
    old, new = style_lists(before), style_lists(after)
    for tag, entries in old.items():
        assert new[tag][: len(entries)] == entries, tag
    for tag in ("cellStyleXfs", "cellStyles", "dxfs"):
        assert new[tag] == old[tag], tag


def snapshot(path: Path, skip: str = "Reports") -> dict[str, Any]:
    """What each sheet but ``skip`` holds and how it looks, as openpyxl reads it."""
    wb = load_workbook(path)
    out: dict[str, Any] = {}
    for ws in wb.worksheets:
        if ws.title == skip:
            continue
        cells = [
            (
                cell.coordinate,
                cell.value,
                cell.number_format,
                cell.font.b,
                cell.font.i,
                cell.font.sz,
                cell.font.color.rgb if cell.font.color is not None else None,
                cell.fill.fill_type,
                cell.fill.fgColor.rgb,
                cell.alignment.wrap_text,
                cell.comment.text if cell.comment else None,
            )
            for row in ws.iter_rows()
            for cell in row
        ]
        out[ws.title] = {
            "cells": cells,
            "widths": {k: d.width for k, d in ws.column_dimensions.items()},
            "freeze": ws.freeze_panes,
            "validations": len(ws.data_validations.dataValidation),
            "charts": [type(chart).__name__ for chart in ws._charts],
            "print_titles": ws.print_title_rows,
            "filter": ws.auto_filter.ref,
            "names": sorted((name, d.attr_text) for name, d in ws.defined_names.items()),
        }
    return out


def book_with_chart(path: Path) -> Path:
    """A workbook openpyxl writes with styles, a date, a shared string or two and its own line chart."""
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = "Data"
    ws.append(["Month", "Sales", "Note"])
    for cell in ws[1]:
        cell.font = Font(bold=True, color="FFFFFF")
        cell.fill = PatternFill("solid", fgColor="1F4E78")
    for m in range(1, 7):
        ws.append([date(2024, m, 1), m * 100.25, "ok" if m % 2 else "check"])
        ws.cell(m + 1, 1).number_format = "mmm yyyy"
        ws.cell(m + 1, 2).number_format = "#,##0.000"
    chart = LineChart()
    chart.title = "Sales"
    chart.add_data(Reference(ws, min_col=2, min_row=1, max_row=7), titles_from_data=True)
    chart.set_categories(Reference(ws, min_col=1, min_row=2, max_row=7))
    ws.add_chart(chart, "E2")
    other = wb.create_sheet("Other")
    other["A1"] = "untouched"
    other["A1"].font = Font(italic=True, size=20)
    wb.save(path)
    return path


def soffice_converts(path: Path, out: Path) -> Path:
    """Convert ``path`` to PDF with LibreOffice headless, in a profile of its own; the PDF."""
    assert SOFFICE is not None, "LibreOffice (soffice) is required: CRMKIT_REQUIRE_SERVERS is set"
    out.mkdir(parents=True, exist_ok=True)
    result = subprocess.run(
        [
            SOFFICE,
            f"-env:UserInstallation={(out / 'lo-profile').as_uri()}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(out),
            str(path),
        ],
        capture_output=True,
        timeout=180,
    )
    assert result.returncode == 0, result.stderr
    pdf = out / f"{path.stem}.pdf"
    assert pdf.exists(), result.stdout + result.stderr
    assert pdf.read_bytes().startswith(b"%PDF")
    return pdf


# -- a new workbook -----------------------------------------------------------------------------


def test_new_workbook_pipeline_tables_formats_and_stacked_charts(tmp_path: Path) -> None:
    path = tmp_path / "report.xlsx"
    write_report(pipeline_report(), path)
    wb = load_workbook(path)
    assert wb.sheetnames == ["Reports"]
    ws = wb["Reports"]
    assert ws["A1"].value == "Open pipeline" and ws["A1"].font.b
    assert ws["A2"].value == "amounts are not converted between currencies"
    titles = title_rows(ws)
    eur, usd, total = titles["Open deals (EUR)"], titles["Open deals (USD)"], titles["Total"]
    assert eur < usd < total
    assert row_values(ws, eur + 1, 5) == ["Stage", "Deals", "Amount (EUR)", "Weighted (EUR)", "Upside (EUR)"]
    assert all(ws.cell(eur + 1, c).font.b for c in range(1, 6))
    assert row_values(ws, eur + 2, 5) == ["new", 3, 12000, 1200, 10800]
    assert row_values(ws, eur + 3, 5) == ["proposal", 2, 8000.5, 4000.25, 4000.25]
    assert row_values(ws, eur + 5, 5) == [None] * 5  # a blank row after each table
    assert row_values(ws, usd + 1, 3) == ["Stage", "Deals", "Amount (USD)"]
    assert row_values(ws, usd + 2, 5) == ["qualified", 1, 999.99, 199.99, 800]
    assert row_values(ws, total + 1, 2) == ["Currency", "Deals"]
    assert row_values(ws, total + 3, 2) == ["USD", 1]
    assert ws.cell(eur + 2, 2).number_format == "#,##0"
    assert ws.cell(eur + 2, 3).number_format == "#,##0.00"
    assert ws.cell(eur + 2, 1).number_format == "General"
    assert ws.column_dimensions["A"].width >= len("negotiation")
    assert ws.column_dimensions["D"].width >= len("Weighted (EUR)")

    charts = ws._charts
    assert [type(c) for c in charts] == [BarChart, BarChart]
    for chart, top, rows in ((charts[0], eur, 3), (charts[1], usd, 1)):
        assert chart.grouping == "stacked" and chart.overlap == 100 and chart.type == "col"
        assert len(chart.series) == 2
        assert chart.anchor._from.row == top - 1 and chart.anchor._from.col == 6  # right of the table
        for series, column in zip(chart.series, (4, 5), strict=True):
            cat, val, tx = series_refs(series)
            assert ref_values(wb, cat) == [ws.cell(r, 1).value for r in range(top + 2, top + 2 + rows)]
            assert ref_values(wb, val) == [ws.cell(r, column).value for r in range(top + 2, top + 2 + rows)]
            assert ref_values(wb, tx) == [ws.cell(top + 1, column).value]
    # The first chart is taller than its table: the next table starts below it.
    assert usd > eur + 15
    assert ws.defined_names[MARKER].attr_text == "'Reports'!$A$1"


def test_new_workbook_funnel_is_a_horizontal_bar_chart_widest_first(tmp_path: Path) -> None:
    path = tmp_path / "funnel.xlsx"
    write_report(funnel_report(), path, sheet="Funnel")
    wb = load_workbook(path)
    ws = wb["Funnel"]
    top = title_rows(ws)["Funnel"]
    assert top == 3 and ws["A1"].value == "Funnel"  # the report's title, then the table's
    assert row_values(ws, top + 2, 4) == ["leads", 40, 0.5, None]
    assert row_values(ws, top + 4, 4) == ["proposal", 15, 0.4, 10.25]
    assert ws.cell(top + 2, 3).number_format == "0.0%"
    assert ws.cell(top + 3, 4).number_format == '0.0" d"'  # days keep their unit
    (chart,) = ws._charts
    assert isinstance(chart, BarChart)
    assert chart.type == "bar" and chart.grouping == "clustered"
    assert chart.x_axis.scaling.orientation == "maxMin" and chart.y_axis.crosses == "max"
    assert chart.legend is None and len(chart.series) == 1
    cat, val, _ = series_refs(chart.series[0])
    assert ref_values(wb, cat) == ["leads", "new", "proposal", "won"]
    assert ref_values(wb, val) == [40, 20, 15, 6]
    assert "Funnel" in cat


def test_new_workbook_revenue_is_a_line_over_real_dates(tmp_path: Path) -> None:
    path = tmp_path / "revenue.xlsx"
    write_report(revenue_report(), path)
    wb = load_workbook(path)
    ws = wb["Reports"]
    top = title_rows(ws)["Revenue by month (EUR)"]
    assert ws.cell(top + 2, 1).value == datetime(2025, 1, 1)
    assert ws.cell(top + 2, 1).number_format == "yyyy-mm-dd"
    assert ws.cell(top + 7, 2).value == 5000.5
    (chart,) = ws._charts
    assert isinstance(chart, LineChart)
    cat, val, tx = series_refs(chart.series[0])
    assert ref_values(wb, cat) == [datetime(2025, m, 1) for m in range(1, 7)]
    assert ref_values(wb, val) == [1000 * i + 0.5 for i in range(6)]
    assert ref_values(wb, tx) == ["Revenue (EUR)"]
    assert chart.series[0].cat.numRef is not None  # dates are numbers
    owner = title_rows(ws)["Revenue by owner (EUR)"]
    assert owner >= top + 17  # below the chart
    assert row_values(ws, owner + 2, 2) == ["ana", 10.1]


def test_values_are_written_as_what_they_are(tmp_path: Path) -> None:
    path = tmp_path / "odd.xlsx"
    table = Table(
        "Odd values",
        [
            Column("name", "Name"),
            Column("amount", "Amount", "money"),
            Column("share", "Share", "percent"),
            Column("when", "When", "date"),
        ],
        [
            {
                "name": '=HYPERLINK("http://x")',
                "amount": Decimal("NaN"),
                "share": float("inf"),
                "when": "2025-03-04",
            },
            {"name": "bell\x07 ok", "amount": "12.30", "share": 0.125, "when": datetime(2025, 3, 4, 13, 30)},
        ],
    )
    write_report(Report("odd", "Odd", [table]), path)
    ws = load_workbook(path)["Reports"]
    top = title_rows(ws)["Odd values"]
    first, second = top + 2, top + 3
    assert ws.cell(first, 1).value == '=HYPERLINK("http://x")' and ws.cell(first, 1).data_type == "s"
    assert ws.cell(first, 2).value is None and ws.cell(first, 3).value is None
    assert ws.cell(first, 4).value == datetime(2025, 3, 4)
    assert ws.cell(second, 1).value == "bell ok"
    assert ws.cell(second, 2).value == 12.3 and ws.cell(second, 2).number_format == "#,##0.00"
    assert ws.cell(second, 4).number_format == "yyyy-mm-dd hh:mm"
    with zipfile.ZipFile(path) as zf:
        assert "<f>" not in zf.read("xl/worksheets/sheet1.xml").decode()


def test_a_chart_key_that_is_not_a_column_gets_a_column(tmp_path: Path) -> None:
    """The chart needs its cells: a category key the table does not show is written beside it."""
    path = tmp_path / "extra.xlsx"
    table = Table(
        "Deals",
        [Column("stage", "Stage"), Column("amount", "Amount", "money")],
        [{"stage": "new", "label": "sales: new", "amount": Decimal(5)}],
        Chart("bar", "label", ("amount",)),
        "EUR",
    )
    write_report(Report("x", "X", [table]), path)
    wb = load_workbook(path)
    ws = wb["Reports"]
    top = title_rows(ws)["Deals (EUR)"]
    assert row_values(ws, top + 1, 3) == ["Stage", "Amount (EUR)", "Label"]
    cat, val, _ = series_refs(ws._charts[0].series[0])
    assert ref_values(wb, cat) == ["sales: new"] and ref_values(wb, val) == [5]


def test_sheet_names_excel_refuses_are_errors(tmp_path: Path) -> None:
    for name in ("", "a" * 32, "Q1/Q2", "'quoted'", "History"):
        with pytest.raises(CrmkitError, match="sheet name"):
            write_report(funnel_report(), tmp_path / "x.xlsx", sheet=name)
    assert not list(tmp_path.iterdir())


def test_a_sheet_name_with_a_quote_is_quoted_in_the_chart_formulas(tmp_path: Path) -> None:
    path = tmp_path / "q.xlsx"
    write_report(funnel_report(), path, sheet="Ana's report")
    wb = load_workbook(path)
    cat, _, _ = series_refs(wb["Ana's report"]._charts[0].series[0])
    assert cat.startswith("'Ana''s report'!")
    assert ref_values(wb, cat) == ["leads", "new", "proposal", "won"]
    write_report(pipeline_report(), path, sheet="ana's REPORT")  # the same sheet, as Excel compares names
    assert load_workbook(path).sheetnames == ["ana's REPORT"]


# -- an existing workbook -----------------------------------------------------------------------


@pytest.mark.parametrize("shipped", ["sample.xlsx", "crmkit-template.xlsx"])
def test_grafted_into_a_shipped_workbook_the_rest_stays_the_same(shipped: str, tmp_path: Path) -> None:
    path = tmp_path / shipped
    shutil.copy(SHIPPED / shipped, path)
    before = members(path)
    looks = snapshot(path)
    names = load_workbook(path).sheetnames

    write_report(pipeline_report(), path)

    after = assert_untouched(before, path)
    assert_styles_appended(before["xl/styles.xml"], after["xl/styles.xml"])
    assert snapshot(path) == looks
    wb = load_workbook(path)
    assert wb.sheetnames == [*names, "Reports"]
    ws = wb["Reports"]
    top = title_rows(ws)["Open deals (EUR)"]
    assert row_values(ws, top + 2, 5) == ["new", 3, 12000, 1200, 10800]
    assert ws.cell(top + 2, 3).number_format == "#,##0.00"
    assert ws.cell(top + 2, 2).number_format == "#,##0"
    assert ws.cell(top + 1, 3).font.b and ws["A1"].font.b and ws["A1"].font.sz == 14
    assert not ws.cell(top + 2, 1).font.b
    assert [type(c) for c in ws._charts] == [BarChart, BarChart]
    cat, val, _ = series_refs(ws._charts[0].series[0])
    assert ref_values(wb, cat) == ["new", "proposal", "negotiation"]
    assert ref_values(wb, val) == [1200, 4000.25, 4000]
    # The other sheets' defined names (filters, print titles) still point at their sheets.
    assert wb["Leads"].print_title_rows == "$1:$1" and wb["Leads"].auto_filter.ref.startswith("A1:J")
    with zipfile.ZipFile(path) as zf:
        assert zf.testzip() is None
        assert "xl/sharedStrings.xml" not in zf.namelist() or "xl/sharedStrings.xml" in before
        sheet = zf.read(next(n for n in zf.namelist() if n not in before and n.startswith("xl/worksheets/s")))
        assert b't="s"' not in sheet and b"inlineStr" in sheet


def test_grafted_beside_a_chart_of_its_own_keeps_it(tmp_path: Path) -> None:
    path = book_with_chart(tmp_path / "mine.xlsx")
    before = members(path)
    looks = snapshot(path)
    assert looks["Data"]["charts"] == ["LineChart"]

    write_report(revenue_report(), path)

    after = assert_untouched(before, path)
    assert_styles_appended(before["xl/styles.xml"], after["xl/styles.xml"])
    assert "xl/charts/chart1.xml" in after and after["xl/charts/chart1.xml"] == before["xl/charts/chart1.xml"]
    assert snapshot(path) == looks
    wb = load_workbook(path)
    assert wb.sheetnames == ["Data", "Other", "Reports"]
    (theirs,) = wb["Data"]._charts
    cat, val, _ = series_refs(theirs.series[0])
    assert ref_values(wb, val) == [m * 100.25 for m in range(1, 7)]
    ws = wb["Reports"]
    (line,) = ws._charts
    cat, val, _ = series_refs(line.series[0])
    assert ref_values(wb, cat) == [datetime(2025, m, 1) for m in range(1, 7)]
    assert ws.cell(title_rows(ws)["Revenue by month (EUR)"] + 2, 1).number_format == "yyyy-mm-dd"


def test_writing_again_replaces_crmkits_sheet_and_only_it(tmp_path: Path) -> None:
    path = book_with_chart(tmp_path / "mine.xlsx")
    original = members(path)
    looks = snapshot(path)
    write_report(pipeline_report(), path)
    first = members(path)
    write_report(pipeline_report(), path)
    # The styles appended the first time are found and reused: styles.xml is as it was.
    assert members(path)["xl/styles.xml"] == first["xl/styles.xml"]

    write_report(funnel_report(), path)

    after = assert_untouched(original, path)
    assert snapshot(path) == looks
    assert_styles_appended(first["xl/styles.xml"], after["xl/styles.xml"])
    wb = load_workbook(path)
    assert wb.sheetnames == ["Data", "Other", "Reports"]
    ws = wb["Reports"]
    assert ws["A1"].value == "Funnel"
    assert "Open deals (EUR)" not in title_rows(ws)
    assert [(type(c), c.type) for c in ws._charts] == [(BarChart, "bar")]
    assert len(wb["Data"]._charts) == 1
    # The first report's parts are gone: nothing left over, nothing pointing nowhere.
    new = set(after) - set(original)
    assert sum(name.startswith("xl/worksheets/sheet") for name in new) == 1
    assert sum(name.startswith("xl/charts/chart") for name in new) == 1
    assert reachable(after) == {n for n in after if not n.endswith(".rels")} - {"[Content_Types].xml"}
    content_types = after["[Content_Types].xml"].decode()
    for name in after:
        if name.endswith(".xml") and not name.startswith("[") and "docProps" not in name:
            assert f'PartName="/{name}"' in content_types, name
    for part in re.findall(r'PartName="/([^"]+)"', content_types):
        assert part in after, part
    defined = re.findall(rf'<definedName name="{MARKER}"[^>]*>', after["xl/workbook.xml"].decode())
    assert len(defined) == 1 and 'localSheetId="2"' in defined[0]


def test_a_workbook_crmkit_wrote_new_takes_a_second_report(tmp_path: Path) -> None:
    path = tmp_path / "reports.xlsx"
    write_report(pipeline_report(), path)
    write_report(revenue_report(), path)
    wb = load_workbook(path)
    assert wb.sheetnames == ["Reports"]
    assert wb["Reports"]["A1"].value == "Revenue"
    assert [type(c) for c in wb["Reports"]._charts] == [LineChart]
    write_report(funnel_report(), path, sheet="Funnel")
    assert load_workbook(path).sheetnames == ["Reports", "Funnel"]


@pytest.mark.parametrize("name", ["Reports", "reports"])
def test_a_users_own_reports_sheet_is_refused(name: str, tmp_path: Path) -> None:
    path = tmp_path / "theirs.xlsx"
    wb = Workbook()
    ws = wb.active
    assert ws is not None
    ws.title = name
    ws["A1"] = "my own numbers"
    wb.save(path)
    before = path.read_bytes()
    with pytest.raises(CrmkitError, match="did not write"):
        write_report(pipeline_report(), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["theirs.xlsx"]  # no temporary file left


def test_a_file_that_is_not_a_workbook_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "notes.xlsx"
    path.write_text("just text")
    with pytest.raises(CrmkitError, match=r"not an \.xlsx"):
        write_report(pipeline_report(), path)
    assert path.read_text() == "just text"
    with pytest.raises(CrmkitError, match="does not exist"):
        write_report(pipeline_report(), tmp_path / "missing" / "r.xlsx")


def test_the_file_keeps_its_permissions(tmp_path: Path) -> None:
    path = book_with_chart(tmp_path / "mine.xlsx")
    path.chmod(0o640)
    write_report(funnel_report(), path)
    assert path.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.xlsx"]


def prefixed(path: Path) -> Path:
    """Rewrite an openpyxl workbook's workbook.xml and styles.xml with an ``x:`` main-namespace prefix
    (as the Open XML SDK writes them) and a BOM on styles.xml."""
    data = members(path)

    def prefix(text: str) -> str:
        text = text.replace(
            'xmlns="http://schemas.openxmlformats.org/spreadsheetml/2006/main"',
            'xmlns:x="http://schemas.openxmlformats.org/spreadsheetml/2006/main"',
        )
        return re.sub(r"<(/?)(?![\w.-]+:)([A-Za-z]\w*)", r"<\1x:\2", text)

    data["xl/workbook.xml"] = prefix(data["xl/workbook.xml"].decode()).encode()
    data["xl/styles.xml"] = b"\xef\xbb\xbf" + prefix(data["xl/styles.xml"].decode()).encode()
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in data.items():
            zf.writestr(name, content)
    return path


def test_a_workbook_with_prefixed_xml_takes_the_sheet(tmp_path: Path) -> None:
    path = prefixed(book_with_chart(tmp_path / "sdk.xlsx"))
    before = members(path)
    looks = snapshot(path)
    write_report(pipeline_report(), path)
    after = assert_untouched(before, path)
    assert snapshot(path) == looks
    assert_styles_appended(before["xl/styles.xml"][3:], after["xl/styles.xml"][3:])
    assert b'<x:sheet name="Reports"' in after["xl/workbook.xml"]
    wb = load_workbook(path)
    ws = wb["Reports"]
    top = title_rows(ws)["Open deals (EUR)"]
    assert ws.cell(top + 2, 3).number_format == "#,##0.00" and ws.cell(top + 1, 1).font.b
    write_report(funnel_report(), path)  # and crmkit's marker is found again
    assert load_workbook(path).sheetnames == ["Data", "Other", "Reports"]


def test_a_workbook_without_styles_gets_the_reports_styles(tmp_path: Path) -> None:
    path = tmp_path / "bare.xlsx"
    wb = Workbook()
    wb.active["A1"] = "plain"  # type: ignore[index]
    wb.save(path)
    data = members(path)
    del data["xl/styles.xml"]
    data["xl/_rels/workbook.xml.rels"] = re.sub(
        rb"<Relationship[^>]*/styles\"[^>]*/>", b"", data["xl/_rels/workbook.xml.rels"]
    )
    data["[Content_Types].xml"] = re.sub(
        rb'<Override PartName="/xl/styles.xml"[^>]*/>', b"", data["[Content_Types].xml"]
    )
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, content in data.items():
            zf.writestr(name, content)
    before = members(path)
    write_report(funnel_report(), path)
    assert_untouched(before, path)
    ws = load_workbook(path)["Reports"]
    top = title_rows(ws)["Funnel"]
    assert ws.cell(top + 2, 3).number_format == "0.0%" and ws.cell(top + 1, 1).font.b
    assert load_workbook(path)["Sheet"]["A1"].value == "plain"


def test_shared_string_cells_become_inline_strings() -> None:
    xml = '<sheetData><row r="1"><c r="A1" s="2" t="s"><v>1</v></c><c r="B1" t="n"><v>1</v></c></row></sheetData>'
    out = _inline_shared_strings(xml, ["zero", "a < b & c"])
    assert '<c r="A1" s="2" t="inlineStr"><is><t xml:space="preserve">a &lt; b &amp; c</t></is></c>' in out
    assert '<c r="B1" t="n"><v>1</v></c>' in out


# -- LibreOffice and an openpyxl round trip -----------------------------------------------------


def written(kind: str, tmp_path: Path) -> Path:
    if kind == "new":
        path = tmp_path / "new.xlsx"
        write_report(pipeline_report(), path)
        write_report(funnel_report(), path, sheet="Funnel")
    elif kind == "sample":
        path = tmp_path / "sample.xlsx"
        shutil.copy(SHIPPED / "sample.xlsx", path)
        write_report(pipeline_report(), path)
    else:
        path = book_with_chart(tmp_path / "mine.xlsx")
        write_report(revenue_report(), path)
        write_report(funnel_report(), path)
    return path


@pytest.mark.parametrize("kind", ["new", "sample", "own-chart"])
def test_charts_survive_an_openpyxl_round_trip(kind: str, tmp_path: Path) -> None:
    path = written(kind, tmp_path)
    charts = {ws.title: [type(c) for c in ws._charts] for ws in load_workbook(path).worksheets}
    assert any(charts.values())
    again = tmp_path / "again.xlsx"
    load_workbook(path).save(again)
    wb = load_workbook(again)
    assert {ws.title: [type(c) for c in ws._charts] for ws in wb.worksheets} == charts
    for ws in wb.worksheets:
        for chart in ws._charts:
            for series in chart.series:
                _, val, _ = series_refs(series)
                assert all(isinstance(v, (int, float)) for v in ref_values(wb, val))


@pytest.mark.slow
@needs_soffice
@pytest.mark.parametrize("kind", ["new", "sample", "own-chart"])
def test_libreoffice_opens_the_workbook(kind: str, tmp_path: Path) -> None:
    path = written(kind, tmp_path)
    pdf = soffice_converts(path, tmp_path / "pdf")
    assert pdf.stat().st_size > 1000


# -- what a newcomer saw (issue 15) -------------------------------------------------------------


def crmkit(*args: str) -> Any:
    from click.testing import CliRunner

    from crmkit.cli import main

    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def deals_in_three_currencies(tmp_path: Path) -> Path:
    from crmkit.store import Store

    store = Store(tmp_path / "crm.json")
    for amount, currency in (("42000", "USD"), ("185000000", "VND"), ("1250.5", "KWD")):
        store.add("deals", {"title": currency, "stage": "proposal", "amount": amount, "currency": currency})
    return store.path


def test_the_total_table_gives_each_currency_its_own_decimals(tmp_path: Path) -> None:
    store = deals_in_three_currencies(tmp_path)
    path = tmp_path / "board.xlsx"
    result = crmkit("--store", str(store), "report", "pipeline", "--xlsx", str(path))
    assert result.exit_code == 0, result.output
    ws = load_workbook(path)["Reports"]
    total = title_rows(ws)["Total"]
    formats = {
        ws.cell(row, 1).value: (ws.cell(row, 3).number_format, ws.cell(row, 4).number_format)
        for row in range(total + 2, total + 5)
    }
    assert formats == {
        "KWD": ("#,##0.000", "#,##0.000"),
        "USD": ("#,##0.00", "#,##0.00"),
        "VND": ("#,##0", "#,##0"),
    }
    vnd = title_rows(ws)["Open deals (VND)"]
    assert ws.cell(vnd + 2, 2).number_format == "#,##0"  # Amount (VND)


def test_revenue_of_a_single_month_is_drawn_with_a_marker(tmp_path: Path) -> None:
    table = Table(
        "By month",
        [Column("key", "Month"), Column("revenue", "Revenue", "money")],
        [{"key": "2026-09", "revenue": Decimal("5000")}],
        Chart("line", "key", ("revenue",), "Revenue by month"),
        "USD",
    )
    path = tmp_path / "revenue.xlsx"
    write_report(Report("revenue", "Revenue", [table]), path)
    (chart,) = load_workbook(path)["Reports"]._charts
    assert isinstance(chart, LineChart)
    marker = chart.series[0].marker
    assert marker is not None and marker.symbol not in (None, "none") and (marker.size or 0) >= 5


def test_case_ages_keep_their_unit_and_room(tmp_path: Path) -> None:
    from crmkit.reports import cases
    from crmkit.store import Store

    store = Store(tmp_path / "crm.json")
    store.add("contacts", {"name": "Ana", "email": "ana@example.com"})
    store.add("cases", {"subject": "Printer on fire", "contact": "C-1", "priority": "high"})
    now = datetime.fromisoformat(store.get("CASE-1")["created_at"]) + timedelta(days=123, hours=10)
    path = tmp_path / "cases.xlsx"
    write_report(cases(store, now=now), path)
    ws = load_workbook(path)["Reports"]
    top = title_rows(ws)["Oldest first"]
    headers = row_values(ws, top + 1, 7)
    age = ws.cell(top + 2, headers.index("Age") + 1)
    assert age.value == 123.4 and age.number_format == '0.0" d"'
    assert age.alignment.horizontal == "right" and age.alignment.indent >= 1  # set off from Contact
    letter = age.column_letter
    assert ws.column_dimensions[letter].width >= len("123.4 d") + 2


@pytest.mark.slow
@needs_soffice
def test_case_ages_print_apart_from_the_contact_beside_them(tmp_path: Path) -> None:
    from crmkit.reports import cases
    from crmkit.store import Store

    store = Store(tmp_path / "crm.json")
    store.add("contacts", {"name": "Ana", "email": "ana@example.com"})
    store.add("cases", {"subject": "Printer on fire", "contact": "C-1", "priority": "high"})
    now = datetime.fromisoformat(store.get("CASE-1")["created_at"]) + timedelta(days=1234)
    path = tmp_path / "cases.xlsx"
    write_report(cases(store, now=now), path)
    pdf = soffice_converts(path, tmp_path / "pdf")
    text = subprocess.run(["pdftotext", "-layout", str(pdf), "-"], capture_output=True, text=True).stdout
    assert re.search(r"1,?234\.0 d\s+C-1", text), text


@pytest.mark.parametrize("name", ["out.csv", "out", "out.xls", "out.xlsm", "out.ods"])
def test_a_report_file_not_named_xlsx_is_refused_in_one_line(tmp_path: Path, name: str) -> None:
    store = deals_in_three_currencies(tmp_path)
    result = crmkit("--store", str(store), "report", "pipeline", "--xlsx", str(tmp_path / name))
    assert result.exit_code == 1
    assert len(result.output.strip().splitlines()) == 1 and ".xlsx" in result.output, result.output
    assert not (tmp_path / name).exists()
    upper = crmkit("--store", str(store), "report", "pipeline", "--xlsx", str(tmp_path / "OUT.XLSX"))
    assert upper.exit_code == 0, upper.output
