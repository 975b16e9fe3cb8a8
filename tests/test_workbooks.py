"""The template and sample workbooks: real .xlsx files written and read back with openpyxl."""

from __future__ import annotations

import shutil
import subprocess
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from openpyxl import load_workbook

from crmkit.records.fields import (
    BoolField,
    ChoiceField,
    DateField,
    DecimalField,
    LinesField,
    PercentField,
)
from crmkit.records.rules import invoice_totals
from crmkit.records.schema import ACTIVITY, DEAL, DEAL_STAGES, INVOICE, RECORD_TYPES
from crmkit.sample_data import (
    SAMPLE,
    SAMPLE_ACCOUNTS,
    SAMPLE_CONTACTS,
    SAMPLE_INVOICE_LINES,
    SAMPLE_INVOICES,
    SAMPLE_LEADS,
)
from crmkit.workbooks import (
    DATA_ROWS,
    INVOICE_LINES_TABLE,
    LINES_SHEET,
    SAMPLE_NAME,
    SHEETS,
    TEMPLATE_NAME,
    build_template,
    lines_by_invoice,
    main,
    read_workbook,
    sheet_columns,
)

SHIPPED = Path(__file__).resolve().parent.parent / "workbooks"
LINES = INVOICE.get_field("lines")
assert isinstance(LINES, LinesField)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_template(tmp_path_factory.mktemp("wb") / "template.xlsx")


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_template(tmp_path_factory.mktemp("wb") / "sample.xlsx", sample=True)


def headers(path: Path) -> dict[str, list[Any]]:
    wb = load_workbook(path, read_only=True)
    try:
        return {ws.title: [c.value for c in next(ws.iter_rows(max_row=1))] for ws in wb.worksheets}
    finally:
        wb.close()


def validations(ws: Any) -> dict[str, Any]:
    """Each data validation of ``ws`` by the first cell range it covers."""
    out = {}
    for dv in ws.data_validations.dataValidation:
        for cells in dv.sqref.ranges:
            out[cells.coord] = dv
    return out


# --- SHEETS and sheet_columns -------------------------------------------------------


def test_sheets_are_the_record_types_in_order_then_invoice_lines() -> None:
    assert [s.table for s in SHEETS] == [
        "leads",
        "contacts",
        "accounts",
        "deals",
        "invoices",
        "cases",
        INVOICE_LINES_TABLE,
    ]
    assert [s.title for s in SHEETS[:-1]] == [RECORD_TYPES[s.table].sheet for s in SHEETS[:-1]]
    assert SHEETS[-1] is LINES_SHEET and LINES_SHEET.title == "Invoice Lines"
    assert ACTIVITY.table not in {s.table for s in SHEETS}


def test_sheet_columns_are_id_then_user_fields() -> None:
    for sheet in SHEETS[:-1]:
        rt = sheet.record_type
        assert rt is not None
        columns = sheet_columns(rt)
        assert list(sheet.columns) == columns
        assert columns[0].label == "ID" and columns[0].name == "id"
        user = [f for f in columns[1:] if not f.system]
        assert user == [f for f in rt.user_fields if not isinstance(f, LinesField)]
        assert not any(isinstance(f, LinesField) for f in columns)


def test_invoice_sheet_ends_with_read_only_totals() -> None:
    columns = sheet_columns(INVOICE)
    assert [f.name for f in columns[-3:]] == ["subtotal", "tax", "total"]
    assert all(f.system for f in columns[-3:])
    assert [f.label for f in columns[-3:]] == [
        INVOICE.get_field(n).label for n in ("subtotal", "tax", "total")
    ]


def test_invoice_lines_columns_come_from_the_lines_field() -> None:
    assert [f.label for f in LINES_SHEET.columns] == [
        "Invoice",
        "Description",
        "Quantity",
        "Unit price",
        "Tax rate",
    ]
    assert LINES_SHEET.columns[1:] == (LINES.description, LINES.quantity, LINES.unit_price, LINES.tax_rate)
    assert LINES_SHEET.field_for_header("Qty") is LINES.quantity
    assert LINES_SHEET.field_for_header("unit_price") is LINES.unit_price
    assert LINES_SHEET.field_for_header("Invoice ID") is LINES_SHEET.columns[0]
    assert LINES_SHEET.field_for_header("Colour") is None


# --- The written file -------------------------------------------------------------------


def test_template_headers_are_the_schema_labels(template: Path) -> None:
    found = headers(template)
    assert list(found) == ["README", *(s.title for s in SHEETS)]
    for sheet in SHEETS:
        assert found[sheet.title] == [f.label for f in sheet.columns]


def test_template_has_no_data_rows(template: Path) -> None:
    wb = load_workbook(template)
    for sheet in SHEETS:
        assert wb[sheet.title].max_row == 1
    assert read_workbook(template) == {s.table: [] for s in SHEETS}


def test_readme_sheet_explains_the_workbook(template: Path) -> None:
    wb = load_workbook(template)
    assert wb.sheetnames[0] == "README"
    text = " ".join(str(c.value) for c in wb["README"]["A"] if c.value)
    assert "ID column is managed by crmkit" in text
    assert "custom fields" in text
    assert "crmkit sync" in text


def test_header_row_is_bold_filled_frozen_and_filtered(template: Path) -> None:
    wb = load_workbook(template)
    for sheet in SHEETS:
        ws = wb[sheet.title]
        assert ws.freeze_panes == "A2"
        last = ws.cell(row=1, column=len(sheet.columns)).column_letter
        assert ws.auto_filter.ref == f"A1:{last}1"
        for cell in ws[1]:
            assert cell.font.bold
            assert cell.fill.fill_type == "solid"
        for f, cell in zip(sheet.columns, ws[1], strict=True):
            width = ws.column_dimensions[cell.column_letter].width
            assert width >= len(f.label), (sheet.title, f.label, width)


def test_every_choice_column_has_its_schema_choices_as_a_drop_down(template: Path) -> None:
    wb = load_workbook(template)
    checked = set()
    for sheet in SHEETS:
        ws = wb[sheet.title]
        by_range = validations(ws)
        for col, f in enumerate(sheet.columns, start=1):
            letter = ws.cell(row=1, column=col).column_letter
            dv = by_range.get(f"{letter}2:{letter}{DATA_ROWS}")
            if isinstance(f, ChoiceField):
                assert dv is not None, (sheet.title, f.label)
                assert dv.type == "list" and dv.allow_blank
                assert dv.formula1.strip('"').split(",") == list(f.choices)
                checked.add(f.name)
            elif isinstance(f, BoolField):
                assert dv is not None and dv.formula1 == '"yes,no"'
    assert {"stage", "status", "rating", "priority", "tier", "source", "origin"} <= checked
    assert {"forecast_category", "email_status"} <= checked


def test_deal_stage_offers_exactly_the_schema_stages(template: Path) -> None:
    ws = load_workbook(template)[DEAL.sheet]
    letter = ws.cell(row=1, column=[f.name for f in sheet_columns(DEAL)].index("stage") + 1).column_letter
    assert ws[f"{letter}1"].value == DEAL.get_field("stage").label
    dv = validations(ws)[f"{letter}2:{letter}{DATA_ROWS}"]
    assert dv.formula1 == '"' + ",".join(DEAL_STAGES) + '"'


def test_computed_invoice_totals_refuse_typing(template: Path) -> None:
    ws = load_workbook(template)[INVOICE.sheet]
    by_range = validations(ws)
    for col, f in enumerate(sheet_columns(INVOICE), start=1):
        if f.system and f.name != "id":
            letter = ws.cell(row=1, column=col).column_letter
            dv = by_range[f"{letter}2:{letter}{DATA_ROWS}"]
            assert dv.type == "custom" and dv.formula1 == "FALSE"


def test_columns_carry_number_formats(template: Path) -> None:
    wb = load_workbook(template)
    for sheet in SHEETS:
        ws = wb[sheet.title]
        for col, f in enumerate(sheet.columns, start=1):
            fmt = ws.column_dimensions[ws.cell(row=1, column=col).column_letter].number_format
            if isinstance(f, DecimalField) and f is not LINES.quantity:
                assert fmt == "#,##0.00", (sheet.title, f.label)
            elif isinstance(f, DateField):
                assert fmt == "yyyy-mm-dd"
            elif isinstance(f, PercentField) and f.whole:
                assert fmt == "0"


def test_sample_cells_are_real_numbers_and_dates(sample: Path) -> None:
    wb = load_workbook(sample)
    ws = wb[DEAL.sheet]
    labels = [c.value for c in ws[1]]
    amount = labels.index(DEAL.get_field("amount").label) + 1
    close = labels.index(DEAL.get_field("close_date").label) + 1
    currency = labels.index(DEAL.get_field("currency").label) + 1
    for row in range(2, ws.max_row + 1):
        assert isinstance(ws.cell(row=row, column=amount).value, (int, float))
        assert ws.cell(row=row, column=close).is_date
        fmt = ws.cell(row=row, column=amount).number_format
        assert fmt == ("#,##0" if ws.cell(row=row, column=currency).value == "VND" else "#,##0.00")
    assert ws.auto_filter.ref == f"A1:{ws.cell(row=1, column=ws.max_column).column_letter}{ws.max_row}"


# --- Sample data ---------------------------------------------------------------------------


def test_sample_has_the_promised_shape() -> None:
    assert list(SAMPLE) == [s.table for s in SHEETS]
    assert [len(SAMPLE[t]) for t in ("accounts", "contacts", "leads", "deals", "invoices", "cases")] == [
        5,
        8,
        4,
        6,
        3,
        3,
    ]
    assert {d["stage"] for d in SAMPLE["deals"]} >= {"won", "lost"}
    assert {d["currency"] for d in SAMPLE["deals"]} == {"USD", "VND"}
    assert all(d["close_date"].year == 2026 for d in SAMPLE["deals"])
    assert {i["status"] for i in SAMPLE_INVOICES} <= {"draft", "sent"}
    assert any(a["domain"] == "saomai.vn" and a["name"] == "Sao Mai Logistics" for a in SAMPLE_ACCOUNTS)
    assert any(c["name"] == "Nguyễn Thị Hoa" for c in SAMPLE_CONTACTS)
    hanoi = [lead for lead in SAMPLE_LEADS if lead["company"] == "Hanoi Fresh Foods"]
    assert len(hanoi) == 1 and hanoi[0]["status"] == "qualified"
    assert hanoi[0]["email"].endswith("@hanoifresh.vn")
    grouped = lines_by_invoice(SAMPLE_INVOICE_LINES)
    assert set(grouped) == {i["id"] for i in SAMPLE_INVOICES}
    assert all(1 <= len(lines) <= 3 for lines in grouped.values())


@pytest.mark.parametrize("sheet", SHEETS[:-1], ids=lambda s: s.table)
def test_sample_rows_validate_against_the_schema(sheet: Any) -> None:
    rt = sheet.record_type
    ids = [row["id"] for row in SAMPLE[sheet.table]]
    assert len(set(ids)) == len(ids)
    for row in SAMPLE[sheet.table]:
        clean, custom = rt.validate(row, allow_system=True)
        assert custom == {}, row["id"]
        assert clean == row, "sample values are clean values already"
        rt.check_required({**{f.name: f.default for f in rt.user_fields}, **clean})
        assert row["id"].startswith(f"{rt.prefix}-")


def test_sample_references_point_at_sample_records() -> None:
    known = {row["id"] for table in SAMPLE.values() for row in table if "id" in row}
    for sheet in SHEETS:
        for row in SAMPLE[sheet.table]:
            for f in sheet.columns:
                if f.kind == "ref" and row.get(f.name) is not None:
                    assert row[f.name] in known, (sheet.table, f.name, row[f.name])


def test_sample_invoices_validate_with_their_lines() -> None:
    grouped = lines_by_invoice(SAMPLE_INVOICE_LINES)
    for invoice in SAMPLE_INVOICES:
        clean, custom = INVOICE.validate({**invoice, "lines": grouped[invoice["id"]]}, allow_system=True)
        assert custom == {}
        assert len(clean["lines"]) == len(grouped[invoice["id"]])
        totals = invoice_totals(clean["lines"], invoice["currency"])
        if invoice["currency"] == "VND":
            assert totals["total"] == totals["total"].to_integral_value()


# --- Reading back ----------------------------------------------------------------------------


def test_read_workbook_returns_the_sample_back(sample: Path) -> None:
    data = read_workbook(sample)
    assert list(data) == [s.table for s in SHEETS]
    for sheet in SHEETS:
        rows = data[sheet.table]
        assert [r["_row"] for r in rows] == list(range(2, len(SAMPLE[sheet.table]) + 2))
        for expected, got in zip(SAMPLE[sheet.table], rows, strict=True):
            for key, value in expected.items():
                f = sheet.field_for_header(key)
                assert f is not None and f.name == key
                assert f.parse(got[key]) == value, (sheet.table, key, got[key], value)
                if isinstance(value, date):
                    assert type(got[key]) is date
                if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
                    assert isinstance(got[key], (int, float)), "numbers are written as numbers, not text"
                    assert Decimal(repr(got[key])) == Decimal(value)
            extra = set(got) - set(expected) - {"_row"}
            assert all(got[k] is None or k in ("subtotal", "tax", "total") for k in extra), extra


def test_read_workbook_has_computed_invoice_totals(sample: Path) -> None:
    grouped = lines_by_invoice(SAMPLE_INVOICE_LINES)
    for invoice, row in zip(SAMPLE_INVOICES, read_workbook(sample)[INVOICE.table], strict=True):
        totals = invoice_totals(LINES.parse(grouped[invoice["id"]]), invoice["currency"])
        for name, value in totals.items():
            assert Decimal(repr(row[name])) == value


def test_read_workbook_maps_aliases_keeps_custom_columns_and_skips_blanks(tmp_path: Path) -> None:
    path = build_template(tmp_path / "edited.xlsx", sample=True)
    wb = load_workbook(path)
    ws = wb["Contacts"]
    ws.cell(row=1, column=2, value="Full name")  # an alias of name
    ws.cell(row=1, column=ws.max_column + 1, value="Birthday")  # a custom column
    ws.cell(row=2, column=ws.max_column, value="03-08")
    ws.insert_rows(4)  # an empty row in the middle
    ws.cell(row=11, column=2, value="   ")  # whitespace only: still empty
    lines = wb[LINES_SHEET.title]
    lines.cell(row=1, column=3, value="Qty")
    del wb[DEAL.sheet]
    wb.save(path)

    data = read_workbook(path)
    assert DEAL.table not in data
    contacts = data["contacts"]
    assert len(contacts) == len(SAMPLE_CONTACTS)
    assert contacts[0]["name"] == "Nguyễn Thị Hoa" and contacts[0]["Birthday"] == "03-08"
    assert contacts[1]["Birthday"] is None
    assert [c["_row"] for c in contacts[:3]] == [2, 3, 5]
    assert data[INVOICE_LINES_TABLE][0]["quantity"] == 1


def test_read_workbook_keeps_a_second_column_for_a_field_under_its_header(tmp_path: Path) -> None:
    path = build_template(tmp_path / "dup.xlsx")
    wb = load_workbook(path)
    ws = wb[DEAL.sheet]
    first = ws.max_column + 1
    for offset, (header, value) in enumerate([("Value", 5), ("Value", 6), ("Deal", "Second title")]):
        ws.cell(row=1, column=first + offset, value=header)
        ws.cell(row=2, column=first + offset, value=value)
    ws.cell(row=2, column=2, value="First title")
    wb.save(path)
    row = read_workbook(path)[DEAL.table][0]
    assert row["title"] == "First title" and row["Deal"] == "Second title"
    # "Value" is an alias of amount, which has its own column already: both are kept by header.
    assert row["amount"] is None
    assert row["Value"] == 5 and row["Value (O)"] == 6


def test_long_choice_lists_go_on_a_hidden_sheet() -> None:
    from openpyxl import Workbook

    from crmkit.workbooks import _list_validation

    wb = Workbook()
    choices = [f"choice number {n}" for n in range(40)]
    dv = _list_validation(wb, "Colour", choices)
    assert dv.formula1 == "'_lists'!$A$1:$A$40"
    lists = wb["_lists"]
    assert lists.sheet_state == "hidden"
    assert [c.value for c in lists["A"]] == choices
    assert len(dv.error) <= 225
    assert _list_validation(wb, "Size", ["S", "M, L"]).formula1 == "'_lists'!$B$1:$B$2"


def test_read_workbook_turns_midnight_datetimes_into_dates_in_date_columns_only(tmp_path: Path) -> None:
    path = build_template(tmp_path / "t.xlsx")
    wb = load_workbook(path)
    ws = wb[INVOICE.sheet]
    labels = [c.value for c in ws[1]]
    ws.cell(row=2, column=labels.index("Issue date") + 1, value=datetime(2026, 5, 1))
    ws.cell(row=2, column=labels.index("Due date") + 1, value=datetime(2026, 5, 31, 13, 30))
    ws.cell(row=2, column=labels.index("Number") + 1, value="INV-9")
    wb.save(path)
    row = read_workbook(path)[INVOICE.table][0]
    assert row["issue_date"] == date(2026, 5, 1) and type(row["issue_date"]) is date
    assert row["due_date"] == datetime(2026, 5, 31, 13, 30)


# --- Shipped files ---------------------------------------------------------------------------


@pytest.mark.parametrize("name", [TEMPLATE_NAME, SAMPLE_NAME])
def test_shipped_workbooks_match_the_schema(name: str, template: Path) -> None:
    shipped = SHIPPED / name
    assert shipped.exists(), f"run `python -m crmkit.workbooks` to write {shipped}"
    assert headers(shipped) == headers(template), f"{name} is stale: run `python -m crmkit.workbooks`"


def test_shipped_sample_holds_the_sample_data(sample: Path) -> None:
    def without_row(data: dict[str, list[dict[str, Any]]]) -> dict[str, list[dict[str, Any]]]:
        return {t: [{k: v for k, v in r.items() if k != "_row"} for r in rows] for t, rows in data.items()}

    assert without_row(read_workbook(SHIPPED / SAMPLE_NAME)) == without_row(read_workbook(sample))


def test_main_writes_both_workbooks(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path)]) == 0
    assert (tmp_path / TEMPLATE_NAME).exists() and (tmp_path / SAMPLE_NAME).exists()
    assert read_workbook(tmp_path / SAMPLE_NAME)["contacts"]
    assert TEMPLATE_NAME in capsys.readouterr().out


# --- LibreOffice -----------------------------------------------------------------------------

SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")


@pytest.mark.slow
@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed")
@pytest.mark.parametrize("with_sample", [False, True], ids=["template", "sample"])
def test_libreoffice_converts_the_workbook_to_pdf(
    with_sample: bool, template: Path, sample: Path, tmp_path: Path
) -> None:
    assert SOFFICE is not None
    workbook = sample if with_sample else template
    profile = (tmp_path / "lo-profile").as_uri()
    subprocess.run(
        [
            SOFFICE,
            f"-env:UserInstallation={profile}",
            "--headless",
            "--convert-to",
            "pdf",
            "--outdir",
            str(tmp_path),
            str(workbook),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    pdf = tmp_path / f"{workbook.stem}.pdf"
    assert pdf.exists()
    assert pdf.read_bytes().startswith(b"%PDF")


# --- The README sheet prints cleanly (issue 15) --------------------------------------------------


def readme_texts(path: Path) -> list[tuple[int, str]]:
    ws = load_workbook(path)["README"]
    return [(cell.row, str(cell.value)) for cell in ws["A"] if cell.value]


@pytest.mark.parametrize("name", ["template", "sample"])
def test_the_readme_sheet_is_set_up_to_print_on_portrait_pages(name: str, template: Path, sample: Path) -> None:
    path = template if name == "template" else sample
    ws = load_workbook(path)["README"]
    assert ws.page_setup.orientation == "portrait"
    assert ws.sheet_properties.pageSetUpPr.fitToPage
    assert (ws.page_setup.fitToWidth, ws.page_setup.fitToHeight) == (1, 0)
    # narrow enough for A4 at 100% with the margins set, whatever scaling the program honours
    width = ws.column_dimensions["A"].width
    assert 60 <= width <= 80 and ws.page_margins.left + ws.page_margins.right <= 1.5
    assert ws.print_area == f"'README'!$A$1:$A${ws.max_row}"
    for row, text in readme_texts(path):
        cell = ws.cell(row, 1)
        assert cell.alignment.wrap_text and cell.alignment.vertical == "top"
        # a Calibri line holds at most ~1.3 characters per unit of width: every wrapped line has room
        lines = -(-len(text) // int(width * 1.3))
        height = ws.row_dimensions[row].height
        assert height is not None and height >= 15 * lines, (row, text, height)


@pytest.mark.slow
@pytest.mark.skipif(SOFFICE is None, reason="LibreOffice (soffice) is not installed")
def test_libreoffice_prints_every_readme_line_whole_on_a_portrait_page(template: Path, tmp_path: Path) -> None:
    assert SOFFICE is not None
    subprocess.run(
        [SOFFICE, f"-env:UserInstallation={(tmp_path / 'lo').as_uri()}", "--headless",
         "--convert-to", "pdf", "--outdir", str(tmp_path), str(template)],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    pdf = tmp_path / f"{template.stem}.pdf"
    info = subprocess.run(["pdfinfo", "-f", "1", "-l", "1", str(pdf)], capture_output=True, text=True).stdout
    [size] = [line for line in info.splitlines() if line.startswith("Page    1 size:")]
    page_width, page_height = (float(v) for v in size.split(":")[1].split()[0:3:2])
    assert page_width < page_height  # portrait
    page = subprocess.run(
        ["pdftotext", "-layout", "-f", "1", "-l", "1", str(pdf), "-"], capture_output=True, text=True
    ).stdout  # -layout: a hyphen at a line's end stays

    def squeezed(text: str) -> str:
        return "".join(text.split())

    # a line cut at the page's edge, or printed over the next, does not read back whole and in order
    for _, text in readme_texts(template):
        assert squeezed(text) in squeezed(page), (text, page)
