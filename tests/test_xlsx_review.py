"""Review of the part-level .xlsx writer (crmkit.xlsx, crmkit.sync.excel, crmkit.reports.xlsx):
each test is a case where the guarantee of issue 12 does not hold yet.

Workbooks are built with openpyxl, or part by part in the shape Excel writes them, and the
results are checked with openpyxl, python-calamine and an XML parse of their parts.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from datetime import date
from pathlib import Path
from xml.etree import ElementTree as ET

import pytest
from openpyxl import Workbook, load_workbook

from crmkit.errors import CrmkitError
from crmkit.reports.model import Column, Report, Table
from crmkit.reports.xlsx import write_report
from crmkit.sync.excel import write_changes
from crmkit.sync.model import CellChange, SheetChanges
from crmkit.workbooks import SHEETS

MAIN_NS = "http://schemas.openxmlformats.org/spreadsheetml/2006/main"
REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
PKG_RELS = "http://schemas.openxmlformats.org/package/2006/relationships"
CT = "application/vnd.openxmlformats-officedocument.spreadsheetml"
DEALS = [f.label for f in next(s for s in SHEETS if s.title == "Deals").columns]


# -- helpers ----------------------------------------------------------------------------------


def members(path: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(path) as zf:
        return {info.filename: zf.read(info) for info in zf.infolist()}


def rels_of(part: str) -> str:
    folder, name = posixpath.split(part)
    return posixpath.join(folder, "_rels", f"{name}.rels")


def dangling_relationships(parts: dict[str, bytes]) -> list[str]:
    """Internal relationships whose target is not in the package."""
    out = []
    for name, data in parts.items():
        if not name.endswith(".rels"):
            continue
        folder = posixpath.dirname(posixpath.dirname(name))
        for el in ET.fromstring(data).iter(f"{{{PKG_RELS}}}Relationship"):
            if el.get("TargetMode") == "External":
                continue
            target = el.get("Target", "")
            full = (
                target.lstrip("/")
                if target.startswith("/")
                else posixpath.normpath(posixpath.join(folder, target))
            )
            if full not in parts:
                out.append(f"{name} -> {full}")
    return out


def excel_shaped_book(path: Path, parts: dict[str, str]) -> Path:
    """A zip of ``parts`` (written in this order), the way Excel lays one out."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, text in parts.items():
            zf.writestr(name, text)
    return path


def deals_book_with_formulas(path: Path) -> Path:
    """A Deals sheet saved by Excel: Amount is a plain formula in rows 2 and 3, listed in
    xl/calcChain.xml as Excel lists every formula cell it has calculated."""
    head = "".join(
        f'<c r="{chr(65 + i)}1" t="inlineStr"><is><t>{h}</t></is></c>' for i, h in enumerate(DEALS)
    )
    amount = DEALS.index("Amount")
    col = chr(65 + amount)
    rows = f'<row r="1">{head}</row>' + "".join(
        f'<row r="{r}"><c r="A{r}" t="inlineStr"><is><t>D-{r - 1}</t></is></c>'
        f'<c r="B{r}" t="inlineStr"><is><t>Deal {r}</t></is></c>'
        f'<c r="{col}{r}"><f>100*{r}</f><v>{100 * r}</v></c></row>'
        for r in (2, 3)
    )
    return excel_shaped_book(
        path,
        {
            "[Content_Types].xml": (
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                '<Types xmlns="http://schemas.openxmlformats.org/package/2006/content-types">'
                '<Default Extension="rels" ContentType="application/vnd.openxmlformats-package.relationships+xml"/>'
                '<Default Extension="xml" ContentType="application/xml"/>'
                f'<Override PartName="/xl/workbook.xml" ContentType="{CT}.sheet.main+xml"/>'
                f'<Override PartName="/xl/worksheets/sheet1.xml" ContentType="{CT}.worksheet+xml"/>'
                f'<Override PartName="/xl/styles.xml" ContentType="{CT}.styles+xml"/>'
                f'<Override PartName="/xl/calcChain.xml" ContentType="{CT}.calcChain+xml"/>'
                "</Types>"
            ),
            "_rels/.rels": (
                f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="{PKG_RELS}">'
                f'<Relationship Id="rId1" Type="{REL_NS}/officeDocument" Target="xl/workbook.xml"/></Relationships>'
            ),
            "xl/workbook.xml": (
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                f'<workbook xmlns="{MAIN_NS}" xmlns:r="{REL_NS}"><workbookPr defaultThemeVersion="166925"/>'
                '<bookViews><workbookView xWindow="0" yWindow="0" windowWidth="20000" windowHeight="10000"/></bookViews>'
                '<sheets><sheet name="Deals" sheetId="1" r:id="rId1"/></sheets><calcPr calcId="191029"/></workbook>'
            ),
            "xl/_rels/workbook.xml.rels": (
                f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="{PKG_RELS}">'
                f'<Relationship Id="rId1" Type="{REL_NS}/worksheet" Target="worksheets/sheet1.xml"/>'
                f'<Relationship Id="rId2" Type="{REL_NS}/styles" Target="styles.xml"/>'
                f'<Relationship Id="rId3" Type="{REL_NS}/calcChain" Target="calcChain.xml"/></Relationships>'
            ),
            "xl/styles.xml": (
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                f'<styleSheet xmlns="{MAIN_NS}"><fonts count="1"><font><sz val="11"/><name val="Calibri"/></font></fonts>'
                '<fills count="2"><fill><patternFill patternType="none"/></fill><fill><patternFill patternType="gray125"/></fill></fills>'
                '<borders count="1"><border><left/><right/><top/><bottom/><diagonal/></border></borders>'
                '<cellStyleXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0"/></cellStyleXfs>'
                '<cellXfs count="1"><xf numFmtId="0" fontId="0" fillId="0" borderId="0" xfId="0"/></cellXfs>'
                '<cellStyles count="1"><cellStyle name="Normal" xfId="0" builtinId="0"/></cellStyles></styleSheet>'
            ),
            "xl/calcChain.xml": (
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                f'<calcChain xmlns="{MAIN_NS}"><c r="{col}2" i="1"/><c r="{col}3"/></calcChain>'
            ),
            "xl/worksheets/sheet1.xml": (
                '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
                f'<worksheet xmlns="{MAIN_NS}" xmlns:r="{REL_NS}"><dimension ref="A1:M3"/>'
                '<sheetViews><sheetView tabSelected="1" workbookViewId="0"/></sheetViews>'
                f'<sheetFormatPr defaultRowHeight="15"/><sheetData>{rows}</sheetData>'
                '<pageMargins left="0.7" right="0.7" top="0.75" bottom="0.75" header="0.3" footer="0.3"/></worksheet>'
            ),
        },
    )


def deals_book(path: Path) -> Path:
    wb = Workbook()
    ws = wb.active
    ws.title = "Deals"
    ws.append(DEALS)
    ws.append(["D-1", "Big deal"])
    wb.save(path)
    return path


# -- 1. calcChain: a formula crmkit overwrites stays listed as one ----------------------------


def test_overwriting_a_formula_leaves_no_calc_chain_entry_pointing_at_a_value(tmp_path: Path) -> None:
    """README: "a plain formula in a crmkit column is replaced by the value". Excel validates
    xl/calcChain.xml on load; an entry for a cell that no longer holds a formula makes it repair
    the file ("Removed Records: Formula from /xl/calcChain.xml part"). The chain (or the part)
    must follow the formulas that are left."""
    source = deals_book_with_formulas(tmp_path / "deals.xlsx")
    out = tmp_path / "out.xlsx"
    amount = DEALS.index("Amount")
    write_changes(source, out, [SheetChanges("Deals", cells=[CellChange(2, amount, 150)])])

    parts = members(out)
    assert load_workbook(out)["Deals"].cell(2, amount + 1).value == 150  # the write itself is right
    sheet = parts["xl/worksheets/sheet1.xml"].decode()
    formulas = set(re.findall(r'<c r="([A-Z]+\d+)"[^>]*>\s*<f>', sheet))
    if "xl/calcChain.xml" in parts:
        chained = set(re.findall(r'<c r="([A-Z]+\d+)"', parts["xl/calcChain.xml"].decode()))
        assert chained <= formulas, f"calcChain lists {sorted(chained - formulas)}, which hold no formula"
    assert not dangling_relationships(parts)


# -- 2. sheet names Excel refuses are written, or crash with a traceback -----------------------


@pytest.mark.parametrize(
    "title",
    [
        "Deals and everything else of 2024",  # 34 characters: Excel allows 31
        "Deals: 2024",  # openpyxl raises ValueError ("Invalid character : found in sheet title")
        "Deals [old]",
        "'Deals",  # a name may not start or end with an apostrophe
    ],
)
def test_a_sheet_name_excel_refuses_is_refused_with_one_line_and_nothing_written(
    tmp_path: Path, title: str
) -> None:
    """A sheet crmkit adds takes its title as given (now from ``[sheet_names]`` in crmkit.toml too):
    graft_sheet checks nothing, so a title longer than 31 characters or starting with ' makes a
    workbook Excel has to repair, and one with : [ ] * ? / \\ escapes as openpyxl's ValueError."""
    source = deals_book(tmp_path / "book.xlsx")
    out = tmp_path / "out.xlsx"
    with pytest.raises(CrmkitError):
        write_changes(source, out, [SheetChanges(title, DEALS, append=[["", "New deal"]])])
    assert not out.exists()


# -- 3. a date in a plain cell borrows any "date" format, also one that hides the day ----------


def test_a_date_in_a_plain_cell_shows_its_day(tmp_path: Path) -> None:
    """Styles.as_date takes the first existing cell format that looks like the cell's and whose
    code has a d or a y: a "mmm yy" used on another sheet makes every close date show as "Jan 25"."""
    wb = Workbook()
    ws = wb.active
    ws.title = "Deals"
    ws.append(DEALS)
    ws.append(["D-1", "Big deal"])
    monthly = wb.create_sheet("Monthly")
    monthly["A1"] = date(2024, 5, 1)
    monthly["A1"].number_format = "mmm yy"
    wb.save(tmp_path / "book.xlsx")
    out = tmp_path / "out.xlsx"
    close = DEALS.index("Close date")
    write_changes(
        tmp_path / "book.xlsx", out, [SheetChanges("Deals", cells=[CellChange(2, close, date(2025, 1, 31))])]
    )

    cell = load_workbook(out)["Deals"].cell(2, close + 1)
    assert cell.value.date() == date(2025, 1, 31)
    code = re.sub(r'"[^"]*"|\\.|\[[^\]]*\]', "", cell.number_format).lower()
    assert "d" in code and "y" in code and "m" in code, cell.number_format


# -- 4. values a cell cannot hold are written anyway, or crash ---------------------------------


def test_an_int_too_big_for_a_cell_is_refused_like_a_decimal(tmp_path: Path) -> None:
    """_number_text refuses a Decimal beyond a double's range but writes any int as its digits:
    10**400 lands as a 401-digit <v> that calamine reads as inf and Excel cannot load."""
    source = deals_book(tmp_path / "book.xlsx")
    out = tmp_path / "out.xlsx"
    amount = DEALS.index("Amount")
    with pytest.raises(CrmkitError):
        write_changes(source, out, [SheetChanges("Deals", cells=[CellChange(2, amount, 10**400)])])
    assert not out.exists()


def test_text_that_cannot_be_encoded_is_refused_with_one_line(tmp_path: Path) -> None:
    """A lone surrogate (what json.loads makes of a cut emoji "\\ud83d") reaches Package.put,
    whose str.encode raises UnicodeEncodeError: a traceback, not a one-line refusal."""
    source = deals_book(tmp_path / "book.xlsx")
    out = tmp_path / "out.xlsx"
    with pytest.raises(CrmkitError):
        write_changes(source, out, [SheetChanges("Deals", cells=[CellChange(2, 1, "Deal \ud83d")])])
    assert not out.exists()


# -- 5. a leftover relationships part blocks adding a sheet with a ValueError ------------------


def test_a_new_sheet_next_to_an_orphaned_rels_part_is_added(tmp_path: Path) -> None:
    """Package.fresh_name checks the new part's name only; when xl/worksheets/_rels/sheet2.xml.rels
    is left over (its sheet deleted by some tool), Package.add of the new sheet's rels raises a
    bare ValueError ("exists already")."""
    base = deals_book(tmp_path / "base.xlsx")
    source = tmp_path / "book.xlsx"
    with zipfile.ZipFile(base) as zin, zipfile.ZipFile(source, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
        zout.writestr(
            "xl/worksheets/_rels/sheet2.xml.rels",
            f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="{PKG_RELS}"/>',
        )
    out = tmp_path / "out.xlsx"
    contacts = [f.label for f in next(s for s in SHEETS if s.title == "Contacts").columns]
    write_changes(source, out, [SheetChanges("Contacts", contacts, append=[["", "Ana"]])])
    assert load_workbook(out).sheetnames == ["Deals", "Contacts"]
    assert not dangling_relationships(members(out))


# -- 6. replacing a report sheet removes a part another part still points at ------------------


def _add_parts(path: Path, parts: dict[str, str], edits: dict[str, tuple[str, str]]) -> None:
    """Rewrite ``path`` with ``parts`` added and each ``edits[name] = (old, new)`` replaced once."""
    old = members(path)
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in old.items():
            if name in edits:
                before, after = edits[name]
                text = data.decode()
                assert before in text, (name, before)
                data = text.replace(before, after, 1).encode()
            zf.writestr(name, data)
        for name, text in parts.items():
            zf.writestr(name, text)


def test_writing_a_report_again_keeps_a_pivot_cache_another_sheet_still_uses(tmp_path: Path) -> None:
    """_Graft._remove_parts keeps a part only when a relationship from outside the old sheet's
    parts points at it directly. A pivot table on the Reports sheet and one on the user's Data
    sheet share a cache (as Excel shares one per source range): the cache definition is kept (the
    workbook points at it) but its records, reached only through it, are deleted, so the user's own
    pivot table points at a cache whose records part is gone."""
    path = tmp_path / "book.xlsx"
    wb = Workbook()
    ws = wb.active
    ws.title = "Data"
    ws.append(["Stage", "Amount"])
    ws.append(["won", 10])
    wb.save(path)
    report = Report("stages", "Stages", [Table("By stage", [Column("stage", "Stage")], [{"stage": "won"}])])
    write_report(report, path)

    parts = members(path)
    book_rels = parts["xl/_rels/workbook.xml.rels"].decode()
    reports_rid = re.search(
        r'<sheet name="Reports" sheetId="\d+" r:id="(\w+)"', parts["xl/workbook.xml"].decode()
    )[1]
    reports_part = "xl/" + re.search(rf'Id="{reports_rid}"[^>]*Target="/?(?:xl/)?([^"]+)"', book_rels)[1]
    assert reports_part in parts
    rel = REL_NS
    cache_def = (
        f'<pivotCacheDefinition xmlns="{MAIN_NS}" xmlns:r="{rel}" r:id="rId1" recordCount="1">'
        '<cacheSource type="worksheet"><worksheetSource ref="A1:B2" sheet="Data"/></cacheSource>'
        '<cacheFields count="2"><cacheField name="Stage" numFmtId="0"><sharedItems/></cacheField>'
        '<cacheField name="Amount" numFmtId="0"><sharedItems containsNumber="1" minValue="10" maxValue="10"/>'
        "</cacheField></cacheFields></pivotCacheDefinition>"
    )
    records = (
        f'<pivotCacheRecords xmlns="{MAIN_NS}" count="1"><r><s v="won"/><n v="10"/></r></pivotCacheRecords>'
    )

    def pivot(name: str) -> str:
        return (
            f'<pivotTableDefinition xmlns="{MAIN_NS}" name="{name}" cacheId="1" dataCaption="Values">'
            '<location ref="D1:E2" firstHeaderRow="1" firstDataRow="1" firstDataCol="1"/>'
            '<pivotFields count="2"><pivotField showAll="0"/><pivotField dataField="1" showAll="0"/></pivotFields>'
            '<dataFields count="1"><dataField name="Sum of Amount" fld="1" baseField="0" baseItem="0"/></dataFields>'
            "</pivotTableDefinition>"
        )

    def rels(*items: tuple[str, str, str]) -> str:
        body = "".join(
            f'<Relationship Id="{i}" Type="{rel}/{t}" Target="{target}"/>' for i, t, target in items
        )
        return f'<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n<Relationships xmlns="{PKG_RELS}">{body}</Relationships>'

    ct = "application/vnd.openxmlformats-officedocument.spreadsheetml"
    overrides = "".join(
        f'<Override PartName="/xl/{name}" ContentType="{ct}.{kind}+xml"/>'
        for name, kind in (
            ("pivotCache/pivotCacheDefinition1.xml", "pivotCacheDefinition"),
            ("pivotCache/pivotCacheRecords1.xml", "pivotCacheRecords"),
            ("pivotTables/pivotTable1.xml", "pivotTable"),
            ("pivotTables/pivotTable2.xml", "pivotTable"),
        )
    )
    reports_rels = rels_of(reports_part)
    new_parts = {
        "xl/pivotCache/pivotCacheDefinition1.xml": cache_def,
        "xl/pivotCache/_rels/pivotCacheDefinition1.xml.rels": rels(
            ("rId1", "pivotCacheRecords", "pivotCacheRecords1.xml")
        ),
        "xl/pivotCache/pivotCacheRecords1.xml": records,
        "xl/pivotTables/pivotTable1.xml": pivot("OnReports"),
        "xl/pivotTables/_rels/pivotTable1.xml.rels": rels(
            ("rId1", "pivotCacheDefinition", "../pivotCache/pivotCacheDefinition1.xml")
        ),
        "xl/pivotTables/pivotTable2.xml": pivot("OnData"),
        "xl/pivotTables/_rels/pivotTable2.xml.rels": rels(
            ("rId1", "pivotCacheDefinition", "../pivotCache/pivotCacheDefinition1.xml")
        ),
        "xl/worksheets/_rels/sheet1.xml.rels": rels(("rId1", "pivotTable", "../pivotTables/pivotTable2.xml")),
    }
    edits = {
        "xl/_rels/workbook.xml.rels": (
            "</Relationships>",
            f'<Relationship Id="rId99" Type="{rel}/pivotCacheDefinition" '
            'Target="pivotCache/pivotCacheDefinition1.xml"/></Relationships>',
        ),
        "xl/workbook.xml": (
            "</workbook>",
            '<pivotCaches><pivotCache cacheId="1" r:id="rId99"/></pivotCaches></workbook>',
        ),
        "[Content_Types].xml": ("</Types>", overrides + "</Types>"),
    }
    if reports_rels in parts:
        edits[reports_rels] = (
            "</Relationships>",
            f'<Relationship Id="rId99" Type="{rel}/pivotTable" Target="../pivotTables/pivotTable1.xml"/></Relationships>',
        )
    else:
        new_parts[reports_rels] = rels(("rId99", "pivotTable", "../pivotTables/pivotTable1.xml"))
    assert "xl/worksheets/_rels/sheet1.xml.rels" not in parts
    _add_parts(path, new_parts, edits)
    assert not dangling_relationships(members(path))

    write_report(report, path)  # crmkit's Reports sheet, written again

    after = members(path)
    assert "xl/pivotCache/pivotCacheRecords1.xml" in after  # the Data sheet's pivot table still needs it
    assert not dangling_relationships(after)
