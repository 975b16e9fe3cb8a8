"""Real workbooks, written by the tools that write such files for real, for crmkit to sync into.

Each ``make_*`` function writes one workbook and returns its path; :func:`build_books` makes the
whole set in a folder (the LibreOffice ones in two concurrent ``soffice --headless`` runs) and
describes each with a :class:`RealBook`. Every workbook is made fresh from code, except the VBA
project of the macro workbooks: ``fixtures/vbaProject.bin`` is the one XlsxWriter ships with its
examples (``examples/vbaProject.bin`` in the XlsxWriter source distribution, BSD-2-Clause,
(c) John McNamara), a real project extracted from Excel with one module, ``say_hello``. XlsxWriter
cannot make one (``add_vba_project`` only embeds a .bin extracted from an Excel file) and the wheel
does not include it.

The set:

* ``xlsxwriter_showcase.xlsx`` (XlsxWriter, no crmkit sheet): rich strings, a comment, a floating
  image, an image placed in a cell (``embed_image``), checkboxes, a text box, a hyperlink, merged
  cells, list/whole-number/named-range data validation, cell, 3-colour-scale and data-bar
  conditional formats, landscape fit-to-one-page printing with a picture in the header, a footer,
  print titles and print area, freeze panes, a column chart; a ``Data`` sheet with an Excel table
  (with a calculated column), a sparkline and a dynamic-array formula (``SORT``); a hidden and a
  very hidden sheet; a pie chart sheet; workbook-level and sheet-level defined names; core and
  custom document properties.
* ``xlsxwriter_contacts.xlsx`` (XlsxWriter): the user's own ``Contacts`` sheet in crmkit's shape
  (ID, Name, Email, Phone, Title, Owner and a custom Region column; two people without IDs) as an
  Excel table, with a comment on its Email header, a custom-formula data validation, a
  duplicate-values conditional format and frozen headers; a ``Pipeline notes`` sheet with a
  picture, a line chart, formulas over Contacts and a defined name pointing into Contacts.
* ``xlsxwriter_macros.xlsm`` (XlsxWriter, no crmkit sheet): the VBA project above, a form button
  that runs ``say_hello``, checkboxes, a comment and a picture.
* ``openpyxl_rules.xlsx`` (openpyxl): a ``Contacts`` sheet with all of crmkit's contact headers and
  two people, list and custom data validations, formula and cell-is conditional formats (with
  their dxf styles), a header comment; a ``Scores`` sheet with colour-scale, data-bar and icon-set
  conditional formats, a whole-number validation and a defined name.
* ``libreoffice_showcase.xlsx``, ``libreoffice_contacts.xlsx``: the two XlsxWriter workbooks above
  opened and saved as .xlsx by LibreOffice Calc (filter "Calc MS Excel 2007 XML").
* ``libreoffice_from_ods.xlsx``: a flat OpenDocument spreadsheet written here (``.fods``: a Contacts
  sheet in crmkit's shape with two people, a Budget sheet with formulas, a date, a merged title, an
  annotation and a named range) saved as .xlsx by LibreOffice Calc.
* ``libreoffice_macros.xlsm``: ``xlsxwriter_macros.xlsm`` saved by LibreOffice Calc as a
  macro-enabled workbook (filter "Calc MS Excel 2007 VBA XML"; LibreOffice writes its own
  vbaProject.bin).
* ``strict_contacts.xlsx``: a Strict Open XML workbook (see :func:`make_strict`).
"""

from __future__ import annotations

import io
import os
import re
import shutil
import struct
import subprocess
import zipfile
import zlib
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

import xlsxwriter
from openpyxl import Workbook
from openpyxl.comments import Comment
from openpyxl.formatting.rule import (
    CellIsRule,
    ColorScaleRule,
    DataBarRule,
    FormulaRule,
    IconSetRule,
)
from openpyxl.styles import Font, PatternFill
from openpyxl.workbook.defined_name import DefinedName
from openpyxl.worksheet.datavalidation import DataValidation

FIXTURES = Path(__file__).resolve().parent / "fixtures"
VBA_PROJECT = FIXTURES / "vbaProject.bin"
SOFFICE = shutil.which("soffice") or shutil.which("libreoffice")

#: The people already on the user's own Contacts sheets: (name, email).
PEOPLE = (("Nguyễn Thị Hoa", "hoa@saomai.vn"), ("Bob Smith", "bob@example.com"))


@dataclass(frozen=True)
class RealBook:
    """One fixture workbook and what a test needs to know about it."""

    name: str
    path: Path
    made_by: str
    contacts: tuple[tuple[str, str], ...] = ()  # people on the user's own Contacts sheet
    macros: bool = False
    strict: bool = False


# -- pictures -----------------------------------------------------------------------------------


def png(width: int = 24, height: int = 16, tint: tuple[int, int, int] = (31, 78, 120)) -> bytes:
    """A small RGB PNG (a gradient of ``tint``), made with zlib and struct: no imaging library."""
    r0, g0, b0 = tint
    rows = []
    for y in range(height):
        row = bytearray(b"\x00")  # filter type None
        for x in range(width):
            row += bytes(((r0 + 5 * x) % 256, (g0 + 7 * y) % 256, b0))
        rows.append(bytes(row))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"".join(rows)))
        + chunk(b"IEND", b"")
    )


def _image(data: bytes, **options: object) -> dict[str, object]:
    return {"image_data": io.BytesIO(data), **options}


# -- XlsxWriter ---------------------------------------------------------------------------------


def make_xlsxwriter_showcase(path: Path) -> Path:
    """Most of what XlsxWriter can put in a workbook; no sheet crmkit syncs."""
    wb = xlsxwriter.Workbook(str(path))
    wb.set_properties(
        {
            "title": "Quarterly summary",
            "author": "Linh Tran",
            "company": "Sao Mai Logistics",
            "comments": "Made with XlsxWriter",
            "created": datetime(2026, 1, 5, 9, 30),
        }
    )
    wb.set_custom_property("Checked by", "Linh")
    wb.set_custom_property("Revision", 7)
    wb.set_custom_property("Approved", True)
    wb.set_custom_property("Review date", datetime(2026, 2, 1, 0, 0))
    bold = wb.add_format({"bold": True, "bg_color": "#DDEBF7", "border": 1})
    italic = wb.add_format({"italic": True, "font_color": "#7F7F7F"})
    money = wb.add_format({"num_format": "#,##0.00 [$₫-42A]"})
    red = wb.add_format({"font_color": "#9C0006", "bg_color": "#FFC7CE"})
    when = wb.add_format({"num_format": "yyyy-mm-dd"})

    summary = wb.add_worksheet("Summary")
    data = wb.add_worksheet("Data")
    lookup = wb.add_worksheet("Lookup")
    secret = wb.add_worksheet("Secret")
    chartsheet = wb.add_chartsheet("Chart")

    rows = [
        ["North", "Q1", 12500.5],
        ["South", "Q1", 9800],
        ["Central", "Q2", 15320.25],
        ["North", "Q2", 7000],
        ["South", "Q3", 11111.11],
    ]
    data.add_table(
        "A1:D6",
        {
            "name": "Sales",
            "style": "Table Style Medium 9",
            "data": rows,
            "columns": [
                {"header": "Region"},
                {"header": "Quarter"},
                {"header": "Amount", "format": money},
                {"header": "Share", "formula": "=[@Amount]/SUM([Amount])"},
            ],
        },
    )
    data.write("F1", "Sorted regions", bold)
    data.write_dynamic_array_formula("F2:F6", "=_xlfn._xlws.SORT(A2:A6)")
    data.write("G1", "Trend", bold)
    data.add_sparkline("G2", {"range": "Data!C2:C6", "markers": True})
    data.write_datetime("H1", datetime(2026, 3, 31), when)
    data.freeze_panes(1, 0)
    data.set_column("A:B", 12)
    data.set_column("C:C", 16)

    lookup.write_column("A1", ["North", "South", "Central"])
    lookup.hide()
    secret.write("A1", "not for everyone")
    secret.very_hidden()

    summary.set_tab_color("#1F4E78")
    summary.set_column("A:A", 28)
    summary.write_rich_string("A1", "Quarterly ", bold, "summary", " for ", italic, "Sao Mai")
    summary.write_comment("A1", "Checked by Linh on 2026-02-01", {"author": "Linh", "visible": False})
    summary.write("A3", "Done?", bold)
    summary.insert_checkbox("B4", True)
    summary.insert_checkbox("B5", False)
    summary.write_column("C4", ["open", "won", "lost"])
    summary.data_validation("C4:C10", {"validate": "list", "source": ["open", "won", "lost"]})
    summary.write_column("D4", [10, 60, 95])
    summary.data_validation(
        "D4:D10",
        {
            "validate": "integer",
            "criteria": "between",
            "minimum": 0,
            "maximum": 100,
            "input_title": "Score",
            "input_message": "0 to 100",
            "error_message": "A score is a whole number from 0 to 100",
        },
    )
    summary.conditional_format("D4:D10", {"type": "cell", "criteria": ">", "value": 50, "format": red})
    summary.conditional_format("D4:D10", {"type": "3_color_scale"})
    summary.write_column("E12", [3, 8, 5, 1])
    summary.conditional_format("E12:E15", {"type": "data_bar", "bar_solid": True})
    summary.data_validation("F4:F10", {"validate": "list", "source": "=Regions"})
    summary.write_url("A12", "https://example.com/crm", string="Team wiki")
    summary.write_url("A13", "internal:Data!A1", string="See the data")
    summary.merge_range("A15:C15", "Merged note across three columns", bold)
    summary.write_formula("B17", "=SUM(Data!C2:C6)", money)
    summary.write("A17", "Total", bold)
    summary.insert_image("E2", "logo.png", _image(png(), x_scale=2, y_scale=2, description="Company logo"))
    summary.embed_image("B8", "cell.png", _image(png(12, 12, (200, 30, 30))))
    summary.insert_textbox(
        "H12", "A note in a text box", {"width": 200, "height": 60, "font": {"bold": True}}
    )
    summary.freeze_panes(2, 1)
    summary.set_landscape()
    summary.set_paper(9)
    summary.fit_to_pages(1, 0)
    summary.set_header(
        "&L&G&CCRM summary&R&D", {"image_left": "head.png", "image_data_left": io.BytesIO(png(8, 8))}
    )
    summary.set_footer("&CPage &P of &N")
    summary.repeat_rows(0)
    summary.print_area("A1:H30")

    column = wb.add_chart({"type": "column"})
    column.add_series({"name": "Amount", "categories": "=Data!$A$2:$A$6", "values": "=Data!$C$2:$C$6"})
    column.set_title({"name": "Amount by region"})
    summary.insert_chart("G2", column)
    pie = wb.add_chart({"type": "pie"})
    pie.add_series({"name": "Share", "categories": "=Data!$A$2:$A$6", "values": "=Data!$C$2:$C$6"})
    chartsheet.set_chart(pie)

    wb.define_name("SalesTotal", "=SUM(Data!$C$2:$C$6)")
    wb.define_name("Regions", "=Lookup!$A$1:$A$3")
    wb.define_name("Summary!LocalRate", "=0.08")
    summary.activate()
    wb.close()
    return path


CONTACT_HEADERS = ["ID", "Name", "Email", "Phone", "Title", "Owner", "Region"]


def make_xlsxwriter_contacts(path: Path) -> Path:
    """The user's own Contacts sheet (an Excel table) beside a sheet of notes with a picture and a chart."""
    wb = xlsxwriter.Workbook(str(path))
    wb.set_custom_property("Team", "Sales South")
    header = wb.add_format({"bold": True, "font_color": "#FFFFFF", "bg_color": "#1F4E78"})
    text = wb.add_format({"num_format": "@"})
    bold = wb.add_format({"bold": True})
    dup = wb.add_format({"bg_color": "#FFEB9C"})
    contacts = wb.add_worksheet("Contacts")
    notes = wb.add_worksheet("Pipeline notes")

    people = [
        [None, PEOPLE[0][0], PEOPLE[0][1], "+84 90 123 4567", "COO", "linh", "South"],
        [None, PEOPLE[1][0], PEOPLE[1][1], "+1 415 555 0100", "CTO", "ana", "North"],
    ]
    contacts.add_table(
        "A1:G3",
        {
            "name": "ContactList",
            "style": "Table Style Light 9",
            "data": people,
            "columns": [{"header": h, "header_format": header} for h in CONTACT_HEADERS],
        },
    )
    contacts.set_column("A:A", 10)
    contacts.set_column("B:C", 30)
    contacts.set_column("D:D", 18, text)
    contacts.set_column("E:G", 14)
    contacts.freeze_panes(1, 0)
    contacts.write_comment("C1", "Work email, please", {"author": "Linh"})
    contacts.data_validation(
        "C2:C500",
        {
            "validate": "custom",
            "value": '=ISNUMBER(FIND("@",C2))',
            "error_title": "Email",
            "error_message": "An email has an @",
        },
    )
    contacts.conditional_format("C2:C500", {"type": "duplicate", "format": dup})

    notes.write("A1", "Contacts on the list", bold)
    notes.write_formula("B1", "=COUNTA(Contacts!B:B)-1")
    notes.write("A2", "First contact", bold)
    notes.write_formula("B2", "=INDEX(ContactNames,1)")
    notes.write_row("A4", ["Month", "Calls"], bold)
    for offset, (month, calls) in enumerate([("Jan", 12), ("Feb", 18), ("Mar", 9), ("Apr", 22)], start=4):
        notes.write_string(offset, 0, month)
        notes.write_number(offset, 1, calls)
    line = wb.add_chart({"type": "line"})
    line.add_series(
        {
            "name": "Calls",
            "categories": "='Pipeline notes'!$A$5:$A$8",
            "values": "='Pipeline notes'!$B$5:$B$8",
        }
    )
    notes.insert_chart("D2", line)
    notes.insert_image("D18", "team.png", _image(png(32, 20, (10, 120, 60))))
    wb.define_name("ContactNames", "=Contacts!$B$2:$B$200")
    wb.close()
    return path


def make_xlsxwriter_macros(path: Path) -> Path:
    """A macro-enabled workbook: a real VBA project and a button that runs its macro."""
    wb = xlsxwriter.Workbook(str(path))
    wb.add_vba_project(str(VBA_PROJECT))
    bold = wb.add_format({"bold": True})
    dashboard = wb.add_worksheet("Dashboard")
    data = wb.add_worksheet("Data")
    dashboard.set_column("A:A", 32)
    dashboard.write("A1", "Press the button to say hello.", bold)
    dashboard.insert_button("B3", {"macro": "say_hello", "caption": "Press Me", "width": 80, "height": 30})
    dashboard.write("A6", "Reviewed")
    dashboard.insert_checkbox("B6", False)
    dashboard.write_comment("A1", "The macro lives in Module1", {"author": "Ana"})
    dashboard.insert_image("D6", "logo.png", _image(png()))
    data.write_row("A1", ["Item", "Qty"], bold)
    data.write_row("A2", ["Cables", 12])
    data.write_row("A3", ["Switches", 3])
    data.write_formula("B4", "=SUM(B2:B3)")
    wb.close()
    return path


def make_strict_source(path: Path) -> Path:
    """The transitional workbook :func:`make_strict` turns Strict: a Contacts sheet and a chart."""
    wb = xlsxwriter.Workbook(str(path))
    header = wb.add_format({"bold": True, "bg_color": "#E2EFDA"})
    money = wb.add_format({"num_format": "#,##0.00"})
    contacts = wb.add_worksheet("Contacts")
    data = wb.add_worksheet("Data")
    contacts.write_row("A1", CONTACT_HEADERS[:5], header)
    contacts.write_row("B2", [PEOPLE[0][0], PEOPLE[0][1], "+84 90 123 4567", "COO"])
    contacts.write_row("B3", [PEOPLE[1][0], PEOPLE[1][1], "+1 415 555 0100", "CTO"])
    contacts.set_column("B:C", 28)
    contacts.freeze_panes(1, 0)
    data.write_row("A1", ["Quarter", "Amount"], header)
    for row, (quarter, amount) in enumerate([("Q1", 1200.5), ("Q2", 1800), ("Q3", 900.25)], start=1):
        data.write_string(row, 0, quarter)
        data.write_number(row, 1, amount, money)
    data.write_formula("B5", "=SUM(B2:B4)", money)
    chart = wb.add_chart({"type": "bar"})
    chart.add_series({"name": "Amount", "categories": "=Data!$A$2:$A$4", "values": "=Data!$B$2:$B$4"})
    data.insert_chart("D2", chart)
    data.insert_image("D18", "logo.png", _image(png()))
    wb.define_name("Total", "=Data!$B$5")
    wb.close()
    return path


# -- Strict Open XML ----------------------------------------------------------------------------

_T = "http://schemas.openxmlformats.org/"
_S = "http://purl.oclc.org/ooxml/"
#: Transitional namespace or relationship-type prefix -> its Strict twin, most specific first
#: (ECMA-376 Part 1 Strict / ISO/IEC 29500-1 strict schemas). The package namespaces (content
#: types, package relationships, core properties) and markup compatibility are the same in both.
STRICT_NAMES = (
    (
        _T + "officeDocument/2006/relationships/extended-properties",
        _S + "officeDocument/relationships/extendedProperties",
    ),
    (
        _T + "officeDocument/2006/relationships/custom-properties",
        _S + "officeDocument/relationships/customProperties",
    ),
    (_T + "officeDocument/2006/relationships", _S + "officeDocument/relationships"),
    (_T + "officeDocument/2006/extended-properties", _S + "officeDocument/extendedProperties"),
    (_T + "officeDocument/2006/custom-properties", _S + "officeDocument/customProperties"),
    (_T + "officeDocument/2006/docPropsVTypes", _S + "officeDocument/docPropsVTypes"),
    (_T + "spreadsheetml/2006/main", _S + "spreadsheetml/main"),
    (_T + "drawingml/2006/main", _S + "drawingml/main"),
    (_T + "drawingml/2006/chart", _S + "drawingml/chart"),
    (_T + "drawingml/2006/spreadsheetDrawing", _S + "drawingml/spreadsheetDrawing"),
    (_T + "drawingml/2006/picture", _S + "drawingml/picture"),
)
STRICT_MAIN = _S + "spreadsheetml/main"


def make_strict(source: Path, path: Path) -> Path:
    """Turn a transitional workbook into a Strict Open XML one, as Excel's "Strict Open XML
    Spreadsheet" save writes it; no tool on this machine writes Strict (LibreOffice 7.4 exports
    only transitional OOXML: its "Calc Office Open XML" filter writes the transitional namespaces
    too, with ``dateCompatibility``).

    Every XML part (``.xml`` and ``.rels``) has each transitional namespace and relationship type
    of :data:`STRICT_NAMES` replaced by its Strict twin (``…/spreadsheetml/2006/main`` becomes
    ``http://purl.oclc.org/ooxml/spreadsheetml/main``, the relationships namespace and the
    ``officeDocument``, ``worksheet``, ``styles``, ``sharedStrings``, ``theme``, ``drawing``,
    ``chart`` and ``image`` relationship types move under
    ``http://purl.oclc.org/ooxml/officeDocument/relationships``, ``extended-properties`` becomes
    ``extendedProperties``, DrawingML and the document-property schemas likewise); the
    ``<workbook>`` element gets ``conformance="strict"`` and its ``<workbookPr>``
    ``dateCompatibility="0"``, as in a workbook Excel saved Strict. Content types and the package
    (OPC) namespaces stay as they are, as in Excel's Strict files. Members are written back in the
    same order, deflated.
    """
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename.endswith((".xml", ".rels")):
                text = data.decode("utf-8")
                for transitional, strict in STRICT_NAMES:
                    text = text.replace(transitional, strict)
                if info.filename == "xl/workbook.xml":
                    text = re.sub(r"<workbook\b([^>]*)>", r'<workbook\1 conformance="strict">', text, count=1)
                    if "<workbookPr" in text:
                        text = text.replace("<workbookPr", '<workbookPr dateCompatibility="0"', 1)
                data = text.encode("utf-8")
            zout.writestr(info, data, compress_type=zipfile.ZIP_DEFLATED)
    return path


# -- openpyxl -----------------------------------------------------------------------------------


def make_openpyxl_rules(path: Path) -> Path:
    """Data validations and conditional formats, as openpyxl writes them, on Contacts and Scores."""
    from crmkit.records.schema import CONTACT
    from crmkit.workbooks import sheet_columns

    wb = Workbook()
    contacts = wb.active
    contacts.title = "Contacts"
    headers = [f.label for f in sheet_columns(CONTACT)]
    contacts.append(headers)
    for cell in contacts[1]:
        cell.font = Font(bold=True, color="FFFFFF")
        cell.fill = PatternFill("solid", fgColor="375623")
    contacts.append(
        [None, PEOPLE[0][0], PEOPLE[0][1], "+84 90 123 4567", "COO", None, "linh", "web", "no", "ok"]
    )
    contacts.append([None, PEOPLE[1][0], PEOPLE[1][1], None, "CTO", None, "ana", "event", "no", "ok", "vip"])
    contacts.freeze_panes = "A2"
    contacts.column_dimensions["B"].width = 30
    contacts.column_dimensions["C"].width = 34
    contacts["C1"].comment = Comment("Checked by the team each Monday", "Ana")
    column = {label: cell.column_letter for label, cell in zip(headers, contacts[1], strict=True)}
    opt_out = DataValidation(type="list", formula1='"yes,no"', allow_blank=True)
    opt_out.add(f"{column['Opt out']}2:{column['Opt out']}1000")
    status = DataValidation(type="list", formula1='"ok,bounced"', allow_blank=True, showErrorMessage=True)
    status.add(f"{column['Email status']}2:{column['Email status']}1000")
    email = DataValidation(type="custom", formula1='ISNUMBER(FIND("@",C2))', showErrorMessage=True)
    email.error = "An email has an @"
    email.add("C2:C1000")
    for validation in (opt_out, status, email):
        contacts.add_data_validation(validation)
    contacts.conditional_formatting.add(
        "C2:C1000",
        FormulaRule(
            formula=['AND(C2<>"",ISERROR(FIND("@",C2)))'], fill=PatternFill("solid", bgColor="FFC7CE")
        ),
    )
    contacts.conditional_formatting.add(
        f"{column['Email status']}2:{column['Email status']}1000",
        CellIsRule(operator="equal", formula=['"bounced"'], font=Font(color="9C0006", bold=True)),
    )

    scores = wb.create_sheet("Scores")
    scores.append(["Account", "Score", "Growth"])
    for row in [("Sao Mai", 82, 0.12), ("Hanoi Fresh", 45, -0.03), ("Acme", 67, 0.4), ("Globex", 12, 0.0)]:
        scores.append(list(row))
    scores.conditional_formatting.add(
        "B2:B5", ColorScaleRule(start_type="min", start_color="F8696B", end_type="max", end_color="63BE7B")
    )
    scores.conditional_formatting.add("C2:C5", DataBarRule(start_type="min", end_type="max", color="638EC6"))
    scores.conditional_formatting.add("B2:B5", IconSetRule("3Arrows", "percent", [0, 33, 67]))
    score = DataValidation(type="whole", operator="between", formula1="0", formula2="100")
    score.add("B2:B100")
    scores.add_data_validation(score)
    scores["E1"] = "Average"
    scores["F1"] = "=AVERAGE(B2:B5)"
    wb.defined_names["ScoreRange"] = DefinedName("ScoreRange", attr_text="Scores!$B$2:$B$5")
    wb.save(path)
    return path


# -- LibreOffice --------------------------------------------------------------------------------

_FODS_HEAD = """<?xml version="1.0" encoding="UTF-8"?>
<office:document xmlns:office="urn:oasis:names:tc:opendocument:xmlns:office:1.0"
 xmlns:style="urn:oasis:names:tc:opendocument:xmlns:style:1.0"
 xmlns:text="urn:oasis:names:tc:opendocument:xmlns:text:1.0"
 xmlns:table="urn:oasis:names:tc:opendocument:xmlns:table:1.0"
 xmlns:fo="urn:oasis:names:tc:opendocument:xmlns:xsl-fo-compatible:1.0"
 xmlns:number="urn:oasis:names:tc:opendocument:xmlns:datastyle:1.0"
 xmlns:dc="http://purl.org/dc/elements/1.1/"
 xmlns:meta="urn:oasis:names:tc:opendocument:xmlns:meta:1.0"
 xmlns:of="urn:oasis:names:tc:opendocument:xmlns:of:1.2"
 office:version="1.3" office:mimetype="application/vnd.oasis.opendocument.spreadsheet">
 <office:meta><dc:title>Team contacts</dc:title><meta:initial-creator>Linh</meta:initial-creator></office:meta>
 <office:automatic-styles>
  <number:date-style style:name="iso"><number:year number:style="long"/><number:text>-</number:text>
   <number:month number:style="long"/><number:text>-</number:text><number:day number:style="long"/></number:date-style>
  <style:style style:name="co1" style:family="table-column"><style:table-column-properties style:column-width="4.5cm"/></style:style>
  <style:style style:name="hdr" style:family="table-cell">
   <style:table-cell-properties fo:background-color="#1f4e78"/>
   <style:text-properties fo:font-weight="bold" fo:color="#ffffff"/></style:style>
  <style:style style:name="day" style:family="table-cell" style:data-style-name="iso"/>
  <style:style style:name="title" style:family="table-cell">
   <style:text-properties fo:font-size="14pt" fo:font-weight="bold"/></style:style>
 </office:automatic-styles>
 <office:body><office:spreadsheet>
"""


def _fods_cell(value: object, style: str | None = None) -> str:
    styled = f' table:style-name="{style}"' if style else ""
    if value is None:
        return f"<table:table-cell{styled}/>"
    if isinstance(value, (int, float)):
        return f'<table:table-cell{styled} office:value-type="float" office:value="{value}"><text:p>{value}</text:p></table:table-cell>'
    if isinstance(value, date):
        return (
            f'<table:table-cell{styled} office:value-type="date" office:date-value="{value.isoformat()}">'
            f"<text:p>{value.isoformat()}</text:p></table:table-cell>"
        )
    return f'<table:table-cell{styled} office:value-type="string"><text:p>{value}</text:p></table:table-cell>'


def make_fods(path: Path) -> Path:
    """A flat OpenDocument spreadsheet, as LibreOffice would read it: Contacts and a Budget."""
    rows = [
        "".join(_fods_cell(h, "hdr") for h in ["ID", "Name", "Email", "Title", "Owner"]),
        "".join(_fods_cell(v) for v in [None, PEOPLE[0][0], PEOPLE[0][1], "COO", "linh"]),
        "".join(_fods_cell(v) for v in [None, PEOPLE[1][0], PEOPLE[1][1], "CTO", "ana"]),
    ]
    contacts = (
        '<table:table table:name="Contacts"><table:table-column table:style-name="co1" table:number-columns-repeated="5"/>'
        + "".join(f"<table:table-row>{r}</table:table-row>" for r in rows)
        + "</table:table>"
    )
    budget = (
        '<table:table table:name="Budget"><table:table-column table:style-name="co1" table:number-columns-repeated="3"/>'
        '<table:table-row><table:table-cell table:style-name="title" table:number-columns-spanned="3" '
        'office:value-type="string"><text:p>Budget 2026</text:p>'
        "<office:annotation><dc:creator>Linh</dc:creator><dc:date>2026-01-05T09:00:00</dc:date>"
        "<text:p>Agreed with finance</text:p></office:annotation></table:table-cell>"
        "<table:covered-table-cell/><table:covered-table-cell/></table:table-row>"
        "<table:table-row>"
        + _fods_cell("Travel")
        + _fods_cell(1200)
        + _fods_cell(date(2026, 1, 15), "day")
        + "</table:table-row>"
        "<table:table-row>"
        + _fods_cell("Tools")
        + _fods_cell(450.5)
        + _fods_cell(date(2026, 2, 1), "day")
        + "</table:table-row>"
        "<table:table-row>" + _fods_cell("Total") + '<table:table-cell table:formula="of:=SUM([.B2:.B3])" '
        'office:value-type="float" office:value="1650.5"><text:p>1650.5</text:p></table:table-cell>'
        "</table:table-row></table:table>"
    )
    names = (
        '<table:named-expressions><table:named-range table:name="BudgetTotal" '
        'table:base-cell-address="$Budget.$B$4" table:cell-range-address="$Budget.$B$4"/></table:named-expressions>'
    )
    path.write_text(
        _FODS_HEAD + contacts + budget + names + "</office:spreadsheet></office:body></office:document>\n",
        encoding="utf-8",
    )
    return path


def soffice_convert(inputs: list[Path], outdir: Path, target: str, profile: Path) -> subprocess.Popen[bytes]:
    """Start one ``soffice --headless --convert-to TARGET`` run over all ``inputs`` (wait on it)."""
    assert SOFFICE is not None, "LibreOffice (soffice) is not installed"
    outdir.mkdir(parents=True, exist_ok=True)
    profile.mkdir(parents=True, exist_ok=True)
    return subprocess.Popen(
        [
            SOFFICE,
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--norestore",
            "--convert-to",
            target,
            "--outdir",
            str(outdir),
            *map(str, inputs),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        env={**os.environ, "HOME": str(profile)},
    )


def finish(process: subprocess.Popen[bytes], timeout: float = 180) -> str:
    """Wait for a :func:`soffice_convert` run; its output, after checking it succeeded."""
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        output, _ = process.communicate()
        raise AssertionError(f"soffice took over {timeout} s: {output.decode(errors='replace')}") from None
    text = output.decode(errors="replace")
    assert process.returncode == 0, text
    return text


# -- the whole set ------------------------------------------------------------------------------

#: Every fixture's name, in the order tests are parametrised.
BOOK_NAMES = (
    "xlsxwriter_showcase.xlsx",
    "xlsxwriter_contacts.xlsx",
    "xlsxwriter_macros.xlsm",
    "openpyxl_rules.xlsx",
    "libreoffice_showcase.xlsx",
    "libreoffice_contacts.xlsx",
    "libreoffice_from_ods.xlsx",
    "libreoffice_macros.xlsm",
    "strict_contacts.xlsx",
)
LIBREOFFICE_BOOKS = frozenset(name for name in BOOK_NAMES if name.startswith("libreoffice_"))


def build_books(folder: Path, *, libreoffice: bool = True) -> dict[str, RealBook]:
    """Make every fixture workbook in ``folder``; the LibreOffice ones only with ``libreoffice``.

    LibreOffice runs twice, concurrently, each in its own profile: once saving as .xlsx (filter
    "Calc MS Excel 2007 XML") and once as .xlsm (filter "Calc MS Excel 2007 VBA XML"), since one
    soffice run writes one format.
    """
    folder.mkdir(parents=True, exist_ok=True)
    people = tuple(PEOPLE)
    books = {
        "xlsxwriter_showcase.xlsx": RealBook(
            "xlsxwriter_showcase.xlsx",
            make_xlsxwriter_showcase(folder / "xlsxwriter_showcase.xlsx"),
            "XlsxWriter",
        ),
        "xlsxwriter_contacts.xlsx": RealBook(
            "xlsxwriter_contacts.xlsx",
            make_xlsxwriter_contacts(folder / "xlsxwriter_contacts.xlsx"),
            "XlsxWriter",
            contacts=people,
        ),
        "xlsxwriter_macros.xlsm": RealBook(
            "xlsxwriter_macros.xlsm",
            make_xlsxwriter_macros(folder / "xlsxwriter_macros.xlsm"),
            "XlsxWriter",
            macros=True,
        ),
        "openpyxl_rules.xlsx": RealBook(
            "openpyxl_rules.xlsx",
            make_openpyxl_rules(folder / "openpyxl_rules.xlsx"),
            "openpyxl",
            contacts=people,
        ),
    }
    source = make_strict_source(folder / "strict_source.xlsx")
    books["strict_contacts.xlsx"] = RealBook(
        "strict_contacts.xlsx",
        make_strict(source, folder / "strict_contacts.xlsx"),
        "XlsxWriter, then made Strict",
        contacts=people,
        strict=True,
    )
    if libreoffice:
        stage = folder / "libreoffice-in"
        stage.mkdir()
        xlsx_inputs = [
            Path(shutil.copy(books["xlsxwriter_showcase.xlsx"].path, stage / "libreoffice_showcase.xlsx")),
            Path(shutil.copy(books["xlsxwriter_contacts.xlsx"].path, stage / "libreoffice_contacts.xlsx")),
            make_fods(stage / "libreoffice_from_ods.fods"),
        ]
        xlsm_inputs = [
            Path(shutil.copy(books["xlsxwriter_macros.xlsm"].path, stage / "libreoffice_macros.xlsm"))
        ]
        runs = [
            soffice_convert(xlsx_inputs, folder, "xlsx:Calc MS Excel 2007 XML", folder / "lo-profile-xlsx"),
            soffice_convert(
                xlsm_inputs, folder, "xlsm:Calc MS Excel 2007 VBA XML", folder / "lo-profile-xlsm"
            ),
        ]
        outputs = "".join(finish(run) for run in runs)
        made = {
            "libreoffice_showcase.xlsx": RealBook(
                "libreoffice_showcase.xlsx", folder / "libreoffice_showcase.xlsx", "LibreOffice"
            ),
            "libreoffice_contacts.xlsx": RealBook(
                "libreoffice_contacts.xlsx",
                folder / "libreoffice_contacts.xlsx",
                "LibreOffice",
                contacts=people,
            ),
            "libreoffice_from_ods.xlsx": RealBook(
                "libreoffice_from_ods.xlsx",
                folder / "libreoffice_from_ods.xlsx",
                "LibreOffice",
                contacts=people,
            ),
            "libreoffice_macros.xlsm": RealBook(
                "libreoffice_macros.xlsm", folder / "libreoffice_macros.xlsm", "LibreOffice", macros=True
            ),
        }
        for book in made.values():
            assert book.path.is_file() and book.path.stat().st_size > 0, (
                f"LibreOffice made no {book.name}:\n{outputs}"
            )
        books.update(made)
    return {name: books[name] for name in BOOK_NAMES if name in books}
