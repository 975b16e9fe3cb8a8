"""Workbooks Excel and LibreOffice open that other libraries refuse: a minimal package (no styles,
no document properties) and a tab that names no part. `crmkit sync` adds its sheets to each and
leaves the rest byte for byte as it was."""

from __future__ import annotations

import re
import zipfile
from pathlib import Path

import pytest

from crmkit.store import Store

MAIN = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG = "http://schemas.openxmlformats.org/package/2006/relationships"


def minimal_package(path: Path, *, sheets: str = '<sheet name="Mine" sheetId="1" r:id="rId1"/>') -> Path:
    """The fewest parts a workbook can have: content types, two relationship parts, a workbook, a sheet."""
    parts = {
        "[Content_Types].xml": (
            '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
            '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
            '<Default Extension="xml" ContentType="application/xml"/>'
            '<Override PartName="/xl/workbook.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml"/>'
            '<Override PartName="/xl/worksheets/sheet1.xml" '
            'ContentType="application/vnd.openxmlformats-officedocument.spreadsheetml.worksheet+xml"/></Types>'
        ),
        "_rels/.rels": (
            f'<Relationships xmlns="{PKG}"><Relationship Id="rId1" Type="{REL}/officeDocument" '
            'Target="xl/workbook.xml"/></Relationships>'
        ),
        "xl/workbook.xml": f'<workbook xmlns="{MAIN}" xmlns:r="{REL}"><sheets>{sheets}</sheets></workbook>',
        "xl/_rels/workbook.xml.rels": (
            f'<Relationships xmlns="{PKG}"><Relationship Id="rId1" Type="{REL}/worksheet" '
            'Target="worksheets/sheet1.xml"/></Relationships>'
        ),
        "xl/worksheets/sheet1.xml": (
            f'<worksheet xmlns="{MAIN}"><sheetData><row r="1"><c r="A1" t="inlineStr"><is><t>my notes</t>'
            "</is></c></row></sheetData></worksheet>"
        ),
    }
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in parts.items():
            zf.writestr(name, text)
    return path


@pytest.fixture
def cli(crm_folder):
    return crm_folder


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {i.filename: zf.read(i) for i in zf.infolist()}


@pytest.mark.parametrize(
    "sheets",
    [
        '<sheet name="Mine" sheetId="1" r:id="rId1"/>',
        '<sheet name="Mine" sheetId="1" r:id="rId1"/><sheet name="Lost" sheetId="2"/>',  # no r:id
    ],
    ids=["minimal", "a tab that names no part"],
)
def test_crmkit_sheets_are_added_and_a_typed_row_syncs(cli, tmp_path: Path, sheets: str) -> None:
    book = minimal_package(tmp_path / "theirs.xlsx", sheets=sheets)
    before = members(book)
    cli("sync", "theirs.xlsx")
    after = members(book)
    assert after["xl/worksheets/sheet1.xml"] == before["xl/worksheets/sheet1.xml"]
    assert list(after)[: len(before)] == list(before)
    text = after["xl/workbook.xml"].decode()
    for title in ("Leads", "Contacts", "Deals", "Invoices"):
        assert f'name="{title}"' in text
    assert b"Ana Lima" in b"".join(after.values())
    assert "xl/styles.xml" in after  # the added sheets brought their styles along
    # a person types a row into the new Contacts sheet (by hand, at the XML level)
    contacts = next(
        name for name, data in after.items() if name.startswith("xl/worksheets/") and b"Ana Lima" in data
    )
    xml = after[contacts].decode()
    row = (
        '<row r="3"><c r="B3" t="inlineStr"><is><t>Bo Chen</t></is></c>'
        '<c r="C3" t="inlineStr"><is><t>bo@chenfreight.com</t></is></c></row>'
    )
    xml = xml.replace("</sheetData>", row + "</sheetData>")
    with zipfile.ZipFile(book) as zin, zipfile.ZipFile(tmp_path / "typed.xlsx", "w") as zout:
        for info in zin.infolist():
            zout.writestr(info, xml if info.filename == contacts else zin.read(info))
    (tmp_path / "typed.xlsx").replace(book)
    cli("sync", "theirs.xlsx")
    bo = Store(tmp_path / "crm.json").lookup("contacts", "bo@chenfreight.com")
    assert bo["name"] == "Bo Chen"
    assert members(book)["xl/worksheets/sheet1.xml"] == before["xl/worksheets/sheet1.xml"]


def test_a_workbook_openpyxl_refuses_for_its_colours_is_synced(cli, tmp_path: Path) -> None:
    """Invalid colour values in styles.xml: Excel and LibreOffice shrug, openpyxl raises."""
    from openpyxl import Workbook, load_workbook
    from openpyxl.styles import Font

    source = tmp_path / "source.xlsx"
    wb = Workbook()
    ws = wb.active
    ws.title = "Mine"
    ws["A1"] = "coloured"
    ws["A1"].font = Font(color="FF0000FF")
    wb.save(source)
    book = tmp_path / "colours.xlsx"
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(book, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            data = zin.read(info)
            if info.filename == "xl/styles.xml":
                data = data.replace(b'rgb="FF0000FF"', b'rgb="blue-ish"')
            zout.writestr(info, data)
    with pytest.raises(ValueError):
        load_workbook(book)  # what made the old release fail with a Python exception text
    before = members(book)
    cli("sync", "colours.xlsx")
    after = members(book)
    assert after["xl/worksheets/sheet1.xml"] == before["xl/worksheets/sheet1.xml"]
    old_fonts = re.search(rb"<fonts[^>]*>(.*?)</fonts>", before["xl/styles.xml"], re.S)
    new_fonts = re.search(rb"<fonts[^>]*>(.*?)</fonts>", after["xl/styles.xml"], re.S)
    assert old_fonts and new_fonts and new_fonts[1].startswith(old_fonts[1])  # appended to only
    assert b'rgb="blue-ish"' in new_fonts[1]
    assert b"Ana Lima" in b"".join(after.values())
