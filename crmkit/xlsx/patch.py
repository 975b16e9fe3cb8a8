"""Writing sync changes into worksheets at the XML level: only the cells that change.

:func:`patch_sheets` edits the XML text of the worksheets that change, in a
:class:`~crmkit.xlsx.package.Package`; every other part is left to be copied
byte for byte. It never reads the workbook into objects: a sheet of 50,000 rows
is indexed by its row tags and only the rows that change are rebuilt.

What it does to a worksheet it writes:

* cell values: text as an inline string (never a formula, and sharedStrings.xml
  stays as it is; text starting with ``=+-@`` is shown as typed through its
  style's quotePrefix; control characters are written as Excel's ``_xHHHH_``
  escapes), numbers and Decimals (exact text) as numbers, booleans as booleans,
  dates and datetimes as serial numbers of the workbook's date system (1900 or
  1904), ``None`` clears the value (a styled cell keeps its style, empty);
* a changed cell keeps its style; a new cell takes its column's style (but a
  number never takes a date format from its column), and an appended cell the
  style of the cell in the last data row above it;
* a date needs a style that shows dates (and times, for a datetime with one):
  the cell's own, the cell above's, an existing one that looks the same with a
  date format, or one appended to styles.xml; a :class:`~crmkit.sync.model.Formatted`
  value gets its number format the same way;
* a plain formula in a cell crmkit writes is replaced by the value (as typing
  over it would); shared and array formulas, merged areas and a table's header
  row are never written into: the write is refused, naming the cell;
* rows are appended below the last row holding a value;
* the sheet's ``<dimension>``, its auto-filter (and the workbook's matching
  ``_xlnm._FilterDatabase`` name) and the Excel tables that ended at the last
  data row grow to cover appended rows;
* the workbook's ``calcPr`` gets ``fullCalcOnLoad="1"``, so formulas over the
  changed cells are recomputed when the file is opened.

Anything it cannot write safely raises :class:`~crmkit.xlsx.package.WorkbookError`
naming the sheet and cell, before anything is written.
"""

from __future__ import annotations

import bisect
import gc
import re
from dataclasses import dataclass
from datetime import date, datetime, time
from decimal import Decimal
from typing import Any
from xml.etree import ElementTree as ET

from crmkit.sync.model import Formatted, SheetChanges
from crmkit.xlsx.graft import SheetEntry
from crmkit.xlsx.package import Package, WorkbookError
from crmkit.xlsx.package import attrs as tag_attrs
from crmkit.xlsx.sheetxml import (
    CELL_RE,
    MAX_COLUMN,
    MAX_ROW,
    Cell,
    Range,
    Sheet,
    Unsupported,
    column_index,
    date_serial,
    letters,
    number_text,
    replace_attr,
    text_xml,
)
from crmkit.xlsx.styles import Styles

__all__ = ["patch_sheets"]


_FORMULA_STARTS = ("=", "+", "-", "@")
_SPANS_RE = re.compile(r"\sspans\s*=\s*(?:\"[^\"]*\"|'[^']*')")
_HAS_VALUE_RE = re.compile(r"<v(?:\s[^>]*)?>[^<]|<f[\s>/]|<t(?:\s[^>]*)?>[^<]")
_FORMULA_REF_RE = re.compile(r"<f\b([^>]*)>")
_MERGE_RE = re.compile(r"<mergeCell\b([^>]*?)/?>")
_DIMENSION_RE = re.compile(r"<dimension\b([^>]*?)/?>")
_AUTOFILTER_RE = re.compile(r"<autoFilter\b([^>]*?)/?>")
_COL_RE = re.compile(r"<col\b([^>]*?)/?>")
_TABLE_ROOT_RE = re.compile(r"<table\b([^>]*?)/?>")
_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def patch_sheets(
    package: Package, styles: Styles, changes: list[SheetChanges], sheets: dict[str, SheetEntry]
) -> None:
    """Make ``changes`` in the worksheets of ``package``; ``sheets`` maps folded titles to tabs.

    New cell formats go to ``styles`` (the caller saves them). Raises
    :class:`WorkbookError` naming the sheet and cell when a change cannot be made safely.
    """
    # Patching makes hundreds of thousands of short-lived strings and lists, none in
    # reference cycles; the cyclic collector would only walk the caller's objects again
    # and again (15-30% of the time in a sync of 50,000 rows).
    collecting = gc.isenabled()
    gc.disable()
    try:
        _Patcher(package, styles).run(changes, sheets)
    except Unsupported as exc:
        raise WorkbookError(f"cannot write {package.path.name}: {exc}") from None
    finally:
        if collecting:
            gc.enable()


@dataclass
class _SheetResult:
    old_last: int = 1
    new_last: int = 1
    filter_change: tuple[Range, Range] | None = None


class _Patcher:
    def __init__(self, package: Package, styles: Styles) -> None:
        self.package = package
        self.styles = styles
        self.main = package.ns.main
        self.texts: dict[str, str] = {}  # parts read or changed, as text, by member name
        self.sheet_id = 0  # of the sheet being written
        self.unformulated: set[tuple[int, str]] = set()  # (sheetId, cell) whose formula was replaced
        book = ET.fromstring(package.read(package.workbook))
        props = book.find(f"{{{self.main}}}workbookPr")
        self.date1904 = props is not None and props.get("date1904", "0").lower() in ("1", "true")

    def text(self, name: str) -> str:
        """A part's text as it stands: changed already, or as in the source."""
        if name not in self.texts:
            self.texts[name] = self.package.text(name)
        return self.texts[name]

    def put(self, name: str, text: str) -> None:
        self.texts[name] = text
        self.package.put(name, text)

    # -- the whole job --

    def run(self, changes: list[SheetChanges], sheets: dict[str, SheetEntry]) -> None:
        filters: dict[int, tuple[str, Range, Range]] = {}
        changed = False
        for change in changes:
            if not change.cells and not change.append:
                continue
            entry = sheets.get(change.title.strip().casefold())
            if entry is None or entry.kind != "worksheet" or entry.part is None:
                raise Unsupported(f"the workbook has no worksheet {change.title!r} to write into")
            self.sheet_id = entry.sheet_id
            try:
                result = self.patch_sheet(entry.part, change)
            except Unsupported as exc:
                raise Unsupported(f"sheet {entry.name!r}: {exc}") from None
            changed = True
            if result.filter_change is not None:
                old, new = result.filter_change
                earlier = filters.get(entry.index)
                filters[entry.index] = (entry.name, earlier[1] if earlier else old, new)
        if changed:
            workbook = self.package.workbook
            self.put(workbook, self.patch_book(self.text(workbook), filters))
        if self.unformulated:
            self._drop_from_calc_chain()

    def _drop_from_calc_chain(self) -> None:
        """Take cells whose formula crmkit replaced out of the calculation chain.

        Excel checks xl/calcChain.xml when it opens a file, and repairs it (with a
        prompt) when an entry names a cell without a formula. An entry without ``i``
        belongs to the sheet of the one before, so ``i`` is written out where a
        dropped entry carried it.
        """
        chains = self.package.related(self.package.workbook, "calcChain")
        part = self.package.member(chains[0].target) if chains else None
        if part is None:
            return
        text = self.text(part)
        sheet = 0
        last_written = -1

        def keep(m: re.Match[str]) -> str:
            nonlocal sheet, last_written
            attributes = tag_attrs(m[1])
            if "i" in attributes and attributes["i"].isdigit():
                sheet = int(attributes["i"])
            if (sheet, attributes.get("r", "")) in self.unformulated:
                return ""
            element = m[0]
            if "i" not in attributes and sheet != last_written:
                element = f'<c i="{sheet}"{element[2:]}'
            last_written = sheet
            return element

        self.put(part, re.sub(r"<c\b([^>]*?)/>", keep, text))

    # -- workbook.xml --

    def patch_book(self, text: str, filters: dict[int, tuple[str, Range, Range]]) -> str:
        # Some tools write the workbook part with a prefix (<x:workbook xmlns:x=...>).
        root = re.search(r"<(?:([\w.-]+):)?workbook\b([^>]*)>", text)
        if root is None:
            raise Unsupported("its workbook part has no <workbook>")
        p = f"{root[1]}:" if root[1] else ""
        declared = tag_attrs(root[2]).get(f"xmlns:{root[1]}" if root[1] else "xmlns")
        if declared != self.main:
            raise Unsupported("its workbook part is not in the SpreadsheetML namespace")
        q = re.escape(p)
        for index, (_title, old, new) in filters.items():
            text = self._patch_filter_name(text, q, index, old, new)
        calc = re.search(rf"<{q}calcPr\b([^>]*?)(/?)>", text)
        if calc is not None:
            tag = calc[0]
            if "fullCalcOnLoad" in tag_attrs(calc[1]):
                tag = replace_attr(tag, "fullCalcOnLoad", "1")
            else:
                tag = f'{tag[: -len(calc[2]) - 1].rstrip()} fullCalcOnLoad="1"{calc[2]}>'
            return text[: calc.start()] + tag + text[calc.end() :]
        # calcPr goes after definedNames (or whichever of its predecessors is last).
        for element in ("definedNames", "externalReferences", "functionGroups", "sheets"):
            m = re.search(rf"</{q}{element}>|<{q}{element}\b[^>]*/>", text)
            if m is not None:
                return f'{text[: m.end()]}<{p}calcPr fullCalcOnLoad="1"/>{text[m.end() :]}'
        raise Unsupported("its workbook part has no <sheets>")

    @staticmethod
    def _patch_filter_name(text: str, q: str, index: int, old: Range, new: Range) -> str:
        pattern = re.compile(rf"<{q}definedName\b([^>]*)>([^<]*)</{q}definedName>")
        for m in pattern.finditer(text):
            attrs = tag_attrs(m[1])
            if attrs.get("name") != "_xlnm._FilterDatabase" or attrs.get("localSheetId") != str(index):
                continue
            sheet, bang, ref = m[2].rpartition("!")
            try:
                current = Range.parse(ref)
            except Unsupported:
                return text
            if not bang or current != old:
                return text
            return f"{text[: m.start(2)]}{sheet}!{new.absolute()}{text[m.end(2) :]}"
        return text

    # -- a worksheet --

    def patch_sheet(self, part: str, change: SheetChanges) -> _SheetResult:
        sheet = Sheet(self.text(part), part, self.main)
        text = sheet.text
        head, tail = text[: sheet.data_start], text[sheet.data_end :]
        result = _SheetResult()

        writes: dict[int, dict[int, Any]] = {}
        for cell in change.cells:
            row, column = cell.row, cell.column
            if type(row) is not int or type(column) is not int:
                raise Unsupported("a cell position that is not a whole number")
            if not (1 <= row <= MAX_ROW and 0 <= column < MAX_COLUMN):
                raise Unsupported(f"cell ({row}, {column}) is outside a sheet")
            row_writes = writes.get(row)
            if row_writes is None:
                row_writes = writes[row] = {}
            row_writes[column] = cell.value

        last = self._last_data_row(sheet, writes)
        result.old_last = result.new_last = last
        # Appended cells copy the styles of the last data row (never of the header row).
        copy_styles = bool(change.append) and last >= 2
        template: dict[int, str] = {}
        if copy_styles and last not in writes:
            i = sheet.position(last)
            if i is not None:
                template = {c[0]: s for c in sheet.cells(i) if (s := tag_attrs(c[2]).get("s"))}
        for offset, values in enumerate(change.append, start=1):
            row = last + offset
            if row > MAX_ROW:
                raise Unsupported(
                    f"new rows would go past row {MAX_ROW:,}, the last a sheet has: "
                    "something is typed at the very bottom of the sheet; clear it and sync again"
                )
            if len(values) > MAX_COLUMN:
                raise Unsupported("an appended row wider than a sheet")
            for column, value in enumerate(values):
                if value is not None:
                    writes.setdefault(row, {})[column] = value
        result.new_last = last + len(change.append)

        tables = self._tables(part)
        self._refuse_protected_cells(sheet, tail, writes, tables)
        column_styles = self._column_styles(head)

        out = [""]  # the head, once the dimension is known
        pos = sheet.data_start
        numbers, starts, ends = sheet.numbers, sheet.starts, sheet.ends
        count = len(numbers)
        j = 0  # index of the first existing row at or after the row being written
        top = bottom = left = right = -1
        for row in sorted(writes):
            row_writes = writes[row]
            while j < count and numbers[j] < row:
                j += 1
            row_template = template if row > last else {}
            if j < count and numbers[j] == row:
                xml, columns = self._rebuild_row(sheet, j, row_writes, row_template, column_styles)
                out.append(text[pos : starts[j]])
                pos = ends[j]
            else:
                xml, columns = self._new_row(sheet, row, row_writes, row_template, column_styles)
                insert_at = starts[j] if j < count else sheet.data_end
                out.append(text[pos:insert_at])
                pos = insert_at
            out.append(xml)
            if copy_styles and row == last:
                template = self._styles_in(xml)  # the row's styles after its own changes
            if columns:
                if top < 0:
                    top, left = row, columns[0]
                bottom = row
                left = min(left, columns[0])
                right = max(right, columns[-1])
        out.append(text[pos : sheet.data_end])

        if top > 0:
            head = self._grow_dimension(head, Range(top, left, bottom, right))
        out[0] = head
        if result.new_last > result.old_last:
            tail, result.filter_change = self._grow_filter(tail, result.old_last, result.new_last)
            for table_part, table_text, _ref in tables:
                grown = self._grow_table(table_text, result.old_last, result.new_last)
                if grown is not None:
                    self.put(table_part, grown)
        out.append(tail)
        self.put(part, "".join(out))
        return result

    @staticmethod
    def _styles_in(row_xml: str) -> dict[int, str]:
        return {column_index(f[1]): s for f in CELL_RE.findall(row_xml) if (s := tag_attrs(f[3]).get("s"))}

    @staticmethod
    def _last_data_row(sheet: Sheet, writes: dict[int, dict[int, Any]]) -> int:
        """The last row holding a value once ``writes`` are made (at least 1), as openpyxl counts it."""
        for row in sorted(set(sheet.numbers) | set(writes), reverse=True):
            if row <= 1:
                break
            row_writes = writes.get(row, {})
            if any(v is not None and v != "" for v in row_writes.values()):
                return row
            i = sheet.position(row)
            if i is None:
                continue
            if not row_writes:
                if _HAS_VALUE_RE.search(sheet.body(i)):
                    return row
                continue
            for column, _element, _attrs_text, inner in sheet.cells(i):
                if column not in row_writes and inner and _HAS_VALUE_RE.search(inner):
                    return row
        return 1

    def _tables(self, part: str) -> list[tuple[str, str, Range]]:
        tables = []
        for rel in self.package.related(part, "table"):
            target = rel.target
            name = self.package.member(target)
            if name is None:
                raise Unsupported(f"table part {target} is missing")
            text = self.text(name)
            root = _TABLE_ROOT_RE.search(text)
            if root is None or tag_attrs(root[1]).get("xmlns") != self.main:
                raise Unsupported(f"{name} is not a SpreadsheetML table in the default namespace")
            tables.append((name, text, Range.parse(tag_attrs(root[1]).get("ref", ""))))
        return tables

    def _refuse_protected_cells(
        self,
        sheet: Sheet,
        tail: str,
        writes: dict[int, dict[int, Any]],
        tables: list[tuple[str, str, Range]],
    ) -> None:
        """No writes into array or shared formula ranges, merged areas (but their top-left cell),
        or a table's header row."""
        ranges: list[tuple[Range, bool]] = []  # (area, whether its top-left cell may be written)
        for m in _FORMULA_REF_RE.finditer(sheet.text, sheet.data_start, sheet.data_end):
            formula_ref = tag_attrs(m[1]).get("ref")
            if formula_ref:
                ranges.append((Range.parse(formula_ref), False))
        for m in _MERGE_RE.finditer(tail):
            ranges.append((Range.parse(tag_attrs(m[1]).get("ref", "")), True))
        for _part, text, table in tables:
            root = _TABLE_ROOT_RE.search(text)
            assert root is not None
            if tag_attrs(root[1]).get("headerRowCount", "1") != "0":
                header = Range(table.first_row, table.first_column, table.first_row, table.last_column)
                ranges.append((header, False))
        if not ranges:
            return
        lowest = min(area.first_row for area, _ in ranges)
        highest = max(area.last_row for area, _ in ranges)
        for row, row_writes in writes.items():
            if row < lowest or row > highest:
                continue
            for column in row_writes:
                for area, anchor_ok in ranges:
                    if (row, column) in area and not (
                        anchor_ok and (row, column) == (area.first_row, area.first_column)
                    ):
                        raise Unsupported(
                            f"cell {letters(column)}{row} is inside {area.ref()} (a shared or array "
                            "formula, a merged area or a table's header row), which crmkit never writes into"
                        )

    @staticmethod
    def _column_styles(head: str) -> dict[int, str]:
        styles: dict[int, str] = {}
        start = head.find("<cols")
        if start < 0:
            return styles
        end = head.find("</cols>", start)
        for m in _COL_RE.finditer(head, start, end if end >= 0 else len(head)):
            attrs = tag_attrs(m[1])
            style = attrs.get("style")
            if style and style != "0":
                first, last = int(attrs.get("min", "0")), int(attrs.get("max", "0"))
                if last - first > MAX_COLUMN:
                    raise Unsupported("a <col> wider than a sheet")
                for column in range(max(first, 1), min(last, MAX_COLUMN) + 1):
                    styles[column - 1] = style
        return styles

    # -- rows and cells --

    def _rebuild_row(
        self,
        sheet: Sheet,
        i: int,
        row_writes: dict[int, Any],
        template: dict[int, str],
        column_styles: dict[int, str],
    ) -> tuple[str, list[int]]:
        """The row at index ``i`` with its writes made; and the columns now holding values, in order."""
        row = sheet.numbers[i]
        cells = sheet.cells(i)
        columns, elements = cells.columns, cells.elements
        count = len(columns)
        pieces: list[str] = []
        valued: list[int] = []
        added = False
        k = 0
        for column in sorted(row_writes):
            at = bisect.bisect_left(columns, column, k)
            pieces.extend(elements[k:at])
            existing: Cell | None = None
            if at < count and columns[at] == column:
                existing = (column, elements[at], cells.attrs[at], cells.inners[at])
                at += 1
            k = at
            value = row_writes[column]
            xml = self._cell_xml(sheet, row, column, value, existing, template, column_styles)
            if xml:
                pieces.append(xml)
                added = added or existing is None
                if value is not None and value != "":
                    valued.append(column)
        pieces.extend(elements[k:])
        body = "".join(pieces)
        tag_end = sheet.tag_end(i)
        tag = sheet.text[sheet.starts[i] : tag_end]
        if added:
            spans = _SPANS_RE.search(tag)
            if spans is not None:
                tag = self._fix_spans(tag, spans, [*columns, *row_writes])
        if tag_end == sheet.ends[i]:  # <row .../>
            if not body:
                return tag, valued
            tag = tag[:-2].rstrip() + ">"
        return f"{tag}{body}</row>", valued

    @staticmethod
    def _fix_spans(tag: str, spans: re.Match[str], columns: list[int]) -> str:
        value = tag_attrs(spans[0])["spans"]
        m = re.fullmatch(r"\s*(\d+):(\d+)\s*", value)
        if m is None or not columns:
            return tag[: spans.start()] + tag[spans.end() :]
        first, last = min(int(m[1]), min(columns) + 1), max(int(m[2]), max(columns) + 1)
        return f'{tag[: spans.start()]} spans="{first}:{last}"{tag[spans.end() :]}'

    def _new_row(
        self,
        sheet: Sheet,
        row: int,
        row_writes: dict[int, Any],
        template: dict[int, str],
        column_styles: dict[int, str],
    ) -> tuple[str, list[int]]:
        pieces: list[str] = []
        valued: list[int] = []
        for column in sorted(row_writes):
            xml = self._cell_xml(sheet, row, column, row_writes[column], None, template, column_styles)
            if xml:
                pieces.append(xml)
                valued.append(column)
        if not pieces:
            return "", []
        return f'<row r="{row}">{"".join(pieces)}</row>', valued

    def _cell_xml(
        self,
        sheet: Sheet,
        row: int,
        column: int,
        value: Any,
        existing: Cell | None,
        template: dict[int, str],
        column_styles: dict[int, str],
    ) -> str:
        """The new XML of one cell; "" to leave no element."""
        style: str | None = None
        own_style = False  # the cell's style was chosen by a person, not taken from its column
        ref = f"{letters(column)}{row}"
        number_format: str | None = None
        if isinstance(value, Formatted):
            value, number_format = value.value, value.number_format
        if existing is not None:
            attrs = tag_attrs(existing[2])
            if "cm" in attrs or "vm" in attrs:
                raise Unsupported(f"cell {ref} holds a picture or rich value, which crmkit never writes over")
            style = attrs.get("s")
            own_style = style not in (None, "0")
            if "<f" in existing[3]:
                self.unformulated.add((self.sheet_id, ref))
        if template.get(column, "0") != "0":  # an appended cell: the style of the one above
            style, own_style = template[column], True
        if existing is None and style is None:
            # A new cell looks the way its column was formatted, as when a person types into
            # it; but a number never takes a column's date format (it would read back as a date).
            style = column_styles.get(column)
            if (
                style is not None
                and isinstance(value, (int, float, Decimal))
                and not isinstance(value, bool)
                and self.styles.shows_date(style, False)
            ):
                style = None

        if value is None or value == "":
            # Clearing: a cell with a style of its own keeps it, empty; otherwise it goes.
            return f'<c r="{ref}" s="{style}"/>' if existing is not None and own_style else ""
        if isinstance(value, str):
            if _SURROGATE_RE.search(value):
                raise Unsupported(f"cell {ref}: text with a broken character (a lone UTF-16 surrogate)")
            if value.startswith(_FORMULA_STARTS):
                style = self.styles.quote_prefixed(style)
            s = f' s="{style}"' if style is not None else ""
            return f'<c r="{ref}"{s} t="inlineStr"><is><t xml:space="preserve">{text_xml(value)}</t></is></c>'
        if isinstance(value, bool):
            s = f' s="{style}"' if style is not None else ""
            return f'<c r="{ref}"{s} t="b"><v>{int(value)}</v></c>'
        if isinstance(value, (int, float, Decimal)):
            if number_format is not None:
                style = self.styles.with_format(style, number_format)
            elif style is not None and self.styles.shows_date(style, False):
                style = self.styles.with_format(style, "General")  # a number, not a date
            s = f' s="{style}"' if style is not None else ""
            return f'<c r="{ref}"{s}><v>{number_text(value)}</v></c>'
        if isinstance(value, date):
            with_time = isinstance(value, datetime) and value.time() != time(0)
            if number_format is not None:
                style = self.styles.with_format(style, number_format)
            elif style is None or not self.styles.shows_date(style, with_time):
                # The date format of the cell above when it looks the same; else this look with a
                # date format (one the workbook has, or one appended).
                above = sheet.style_at(row - 1, column) if row > 1 else None
                if above is not None and self.styles.shows_date(above, with_time) and not own_style:
                    style = above
                else:
                    style = self.styles.as_date(style, with_time) or self.styles.with_format(
                        style, "yyyy-mm-dd hh:mm" if with_time else "yyyy-mm-dd"
                    )
            return f'<c r="{ref}" s="{style}"><v>{date_serial(value, self.date1904)}</v></c>'
        raise Unsupported(f"cell {ref}: a value of type {type(value).__name__}")

    # -- ranges that grow --

    @staticmethod
    def _grow_dimension(head: str, written: Range) -> str:
        m = _DIMENSION_RE.search(head)
        if m is None:
            return head
        old = Range.parse(tag_attrs(m[1]).get("ref", ""))
        grown = Range(
            min(old.first_row, written.first_row),
            min(old.first_column, written.first_column),
            max(old.last_row, written.last_row),
            max(old.last_column, written.last_column),
        )
        if grown == old:
            return head
        return head[: m.start()] + replace_attr(m[0], "ref", grown.ref()) + head[m.end() :]

    @staticmethod
    def _grow_filter(tail: str, old_last: int, new_last: int) -> tuple[str, tuple[Range, Range] | None]:
        views = tail.find("<customSheetViews")  # custom views have auto-filters of their own
        m = _AUTOFILTER_RE.search(tail, 0, views if views >= 0 else len(tail))
        if m is None:
            return tail, None
        ref = tag_attrs(m[1]).get("ref")
        if not ref or ":" not in ref:
            return tail, None
        old = Range.parse(ref)
        if old.last_row > old_last:  # as the openpyxl writer decides
            return tail, None
        new = old.to_row(new_last)
        return tail[: m.start()] + replace_attr(m[0], "ref", new.ref()) + tail[m.end() :], (old, new)

    @staticmethod
    def _grow_table(text: str, old_last: int, new_last: int) -> str | None:
        root = _TABLE_ROOT_RE.search(text)
        assert root is not None
        attrs = tag_attrs(root[1])
        old = Range.parse(attrs.get("ref", ""))
        if old.last_row != old_last:
            return None
        if attrs.get("totalsRowCount", "0") != "0":
            raise Unsupported("appending to a table with a totals row")
        new = old.to_row(new_last)
        text = text[: root.start()] + replace_attr(root[0], "ref", new.ref()) + text[root.end() :]
        for m in _AUTOFILTER_RE.finditer(text):
            ref = tag_attrs(m[1]).get("ref")
            if ref and Range.parse(ref) == old:
                text = text[: m.start()] + replace_attr(m[0], "ref", new.ref()) + text[m.end() :]
                break
        return text
