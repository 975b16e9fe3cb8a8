"""Adding a sheet to a workbook at the part level: the sheet is built alone in a scratch workbook
(openpyxl), then its parts (the worksheet, its drawing and charts) are grafted into the package.

Besides the new parts, only these change, and minimally: ``xl/workbook.xml`` (one
``<sheet>`` entry, and a hidden defined name when the sheet is marked as
crmkit's), its relationships (one more), ``[Content_Types].xml`` (an override
per new part), ``docProps/app.xml`` (the sheet's title in the list of parts),
and styles.xml, appended to only. Text goes in as inline strings, so
sharedStrings.xml is never touched. Into a Strict file the new parts go in
Strict namespaces.
"""

from __future__ import annotations

import io
import posixpath
import re
import zipfile
from dataclasses import dataclass
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from crmkit.xlsx.package import (
    CT_NS,
    TO_STRICT,
    TRANSITIONAL,
    Package,
    Relationship,
    WorkbookError,
    attrs,
    fresh_id,
    insert_before_close,
    parse_relationships,
    relationships_xml,
    relative,
    rels_name,
    root_prefix,
)
from crmkit.xlsx.styles import Styles

__all__ = ["SheetEntry", "graft_sheet", "quote_sheet", "sheet_entries"]

_SHEET_KINDS = {
    "worksheet": "worksheet",
    "chartsheet": "chartsheet",
    "dialogsheet": "dialogsheet",
    "xlMacrosheet": "macrosheet",
    "xlIntlMacrosheet": "macrosheet",
}


@dataclass
class SheetEntry:
    """One tab of a workbook as ``xl/workbook.xml`` lists it."""

    index: int  # its position among the tabs (localSheetId)
    name: str
    sheet_id: int
    rid: str
    kind: str  # "worksheet", "chartsheet", "dialogsheet", "macrosheet", or "" when it cannot be told
    part: str | None  # its member, when the package has it


def quote_sheet(sheet: str) -> str:
    return "'" + sheet.replace("'", "''") + "'"


def sheet_entries(package: Package) -> list[SheetEntry]:
    """The workbook's tabs, in order."""
    try:
        root = ET.fromstring(package.read(package.workbook))
    except ET.ParseError as exc:
        raise WorkbookError(f"{package.path}: {package.workbook} cannot be read ({exc})") from None
    rels = {r.id: r for r in package.relationships(package.workbook)}
    entries = []
    sheets = root.find(f"{{{package.ns.main}}}sheets")
    for index, el in enumerate(sheets if sheets is not None else []):
        rid = next((v for k, v in el.attrib.items() if k.endswith("}id")), "")
        rel = rels.get(rid)
        kind, part = "", None
        if rel is not None and not rel.external:
            kind = _SHEET_KINDS.get(rel.type.rsplit("/", 1)[-1], "")
            part = package.member(rel.target)
        sheet_id = el.get("sheetId") or "0"
        entries.append(
            SheetEntry(
                index, el.get("name") or "", int(sheet_id) if sheet_id.isdigit() else 0, rid, kind, part
            )
        )
    return entries


def graft_sheet(
    package: Package,
    styles: Styles,
    scratch: bytes,
    title: str,
    *,
    marker: str | None = None,
    replace: SheetEntry | None = None,
) -> str:
    """Add the one worksheet of workbook ``scratch`` to ``package`` as ``title``; its member name.

    ``replace`` is an existing sheet of that title whose parts go (a report written
    again). ``marker`` names a hidden defined name put on the sheet, by which
    crmkit knows its own sheets later.
    """
    return _Graft(package, styles, scratch, title).run(marker=marker, replace=replace)


class _Scratch:
    """The scratch workbook openpyxl saved: read whole, it is small."""

    def __init__(self, data: bytes) -> None:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            self.data = {info.filename: zf.read(info) for info in zf.infolist()}
        self.folded = {name.casefold(): name for name in self.data}

    def find(self, name: str) -> str | None:
        return self.folded.get(name.casefold())

    def relationships(self, part: str) -> list[Relationship]:
        rels = self.find(rels_name(part))
        if rels is None:
            return []
        return parse_relationships(self.data[rels], part)

    def reachable(self, start: str) -> list[str]:
        seen = [start]
        i = 0
        while i < len(seen):
            for rel in self.relationships(seen[i]):
                name = self.find(rel.target)
                if not rel.external and name is not None and name not in seen:
                    seen.append(name)
            i += 1
        return seen


class _Graft:
    def __init__(self, package: Package, styles: Styles, scratch: bytes, title: str) -> None:
        self.package, self.styles, self.title = package, styles, title
        self.scratch = _Scratch(scratch)
        self.content_types: dict[str, str] = {}  # new part -> its content type
        self.removed: list[str] = []
        self.extra_rels: list[tuple[str, str]] = []  # (type, part) the workbook must also point at

    def run(self, *, marker: str | None, replace: SheetEntry | None) -> str:
        package = self.package
        entries = sheet_entries(package)
        selected = False
        if replace is not None and replace.part is not None:
            head = package.text(replace.part)[:4000]
            selected = bool(re.search(r"\stabSelected\s*=\s*[\"'](?:1|true)[\"']", head))
            self._remove_parts(replace.part)
        new_sheet = self._add_parts(selected)
        workbook_rels = package.relationships(package.workbook)
        rid = fresh_id(r.id for r in workbook_rels)
        sheet_id = max([e.sheet_id for e in entries], default=0) + 1
        index = replace.index if replace is not None else len(entries)
        self._edit_workbook(entries, replace, sheet_id, rid, index, marker)
        self._edit_workbook_rels(replace.rid if replace is not None else None, rid, new_sheet)
        self._edit_content_types()
        if replace is None:
            _add_to_app_properties(package, self.title)
        return new_sheet

    # -- parts --

    def _remove_parts(self, old_sheet: str) -> None:
        """Remove an old sheet of crmkit's and the parts only it uses (its drawing, charts ...)."""
        package = self.package
        candidates = {old_sheet}
        queue = [old_sheet]
        while queue:
            for rel in package.relationships(queue.pop()):
                name = package.member(rel.target) if not rel.external else None
                if name is not None and name not in candidates:
                    candidates.add(name)
                    queue.append(name)
        # A part something else still reaches, directly or through other parts, stays.
        keep: set[str] = set()
        reached: list[str] = []
        for name in package.names():
            folder, base = posixpath.split(name)
            if posixpath.basename(folder) != "_rels" or not base.endswith(".rels"):
                continue
            source = posixpath.join(posixpath.dirname(folder), base[: -len(".rels")])
            if source and package.member(source) in candidates:
                continue
            for rel in package.relationships(source):
                found = package.member(rel.target) if not rel.external else None
                if found is not None and found != old_sheet and found not in keep:
                    keep.add(found)
                    reached.append(found)
        while reached:
            for rel in package.relationships(reached.pop()):
                found = package.member(rel.target) if not rel.external else None
                if found is not None and found != old_sheet and found not in keep:
                    keep.add(found)
                    reached.append(found)
        for part in candidates - keep:
            self.removed.append(part)
            rels = package.member(rels_name(part))
            package.remove(part)
            if rels is not None:
                package.remove(rels)

    def _add_parts(self, selected: bool) -> str:
        scratch = self.scratch
        office = next(r for r in scratch.relationships("") if r.type.endswith("/officeDocument"))
        book_rels = scratch.relationships(office.target)
        sheet_part = next(r.target for r in book_rels if r.type.endswith("/worksheet"))
        strings = next((r for r in book_rels if r.type.endswith("/sharedStrings")), None)
        shared = _shared_strings(scratch.data[strings.target]) if strings else []
        styles_rel = next(r for r in book_rels if r.type.endswith("/styles"))
        types, defaults = _content_types(scratch.data["[Content_Types].xml"])
        strict = self.package.ns.strict

        parts = scratch.reachable(sheet_part)
        names: dict[str, str] = {}
        for part in parts:
            names[part] = self.package.fresh_name(part)
            self.package.add(names[part], b"")  # reserve the name
        for part in parts:
            new = names[part]
            data = scratch.data[part]
            if part == sheet_part:
                text = data.decode("utf-8")
                text = _inline_shared_strings(text, shared)
                text = self._restyle(text, scratch.data[styles_rel.target])
                if not selected:
                    text = re.sub(r"\stabSelected=\"(?:1|true)\"", "", text)
                data = text.encode("utf-8")
            if strict and part.endswith(".xml"):
                data = _to_strict(data.decode("utf-8")).encode("utf-8")
            self.package.put(new, data)
            self.content_types[new] = types.get(part.casefold()) or defaults.get(
                posixpath.splitext(part)[1].lstrip(".").casefold(), ""
            )
            rels = scratch.relationships(part)
            if rels:
                items = [
                    (
                        r.id,
                        _strict_type(r.type) if strict else r.type,
                        r.target if r.external else "/" + names.get(r.target, r.target),
                        r.external,
                    )
                    for r in rels
                ]
                self.package.add(rels_name(new), relationships_xml(items))
        return names[sheet_part]

    def _restyle(self, sheet_xml: str, scratch_styles: bytes) -> str:
        """The scratch sheet's XML with its style indexes mapped to (appended) styles of the workbook."""
        used = sorted(
            {int(s) for s in re.findall(r"<(?:c|row)\b[^>]*?\ss=\"(\d+)\"", sheet_xml)}
            | {int(s) for s in re.findall(r"<col\b[^>]*?\sstyle=\"(\d+)\"", sheet_xml)}
        )
        if not used:
            return sheet_xml
        if self.styles.part is None:
            # No styles part at all (every cell in the default look): the scratch one becomes it.
            name = (
                self.package.fresh_name("xl/styles.xml")
                if self.package.member("xl/styles.xml")
                else "xl/styles.xml"
            )
            data = scratch_styles.decode("utf-8")
            self.package.add(name, _to_strict(data) if self.package.ns.strict else data)
            self.content_types[name] = (
                "application/vnd.openxmlformats-officedocument.spreadsheetml.styles+xml"
            )
            self.extra_rels.append((self.package.ns.rel_type("styles"), name))
            self.styles.reload(name)
            return sheet_xml
        mapping = self.styles.adopt(scratch_styles, used)

        def remap(match: re.Match[str]) -> str:
            return f'{match[1]}{mapping.get(int(match[2]), int(match[2]))}"'

        sheet_xml = re.sub(r"(<c\b[^>]*?\ss=\")(\d+)\"", remap, sheet_xml)
        sheet_xml = re.sub(r"(<row\b[^>]*?\ss=\")(\d+)\"", remap, sheet_xml)
        return re.sub(r"(<col\b[^>]*?\sstyle=\")(\d+)\"", remap, sheet_xml)

    # -- the workbook's own parts --

    def _edit_workbook(
        self,
        entries: list[SheetEntry],
        replace: SheetEntry | None,
        sheet_id: int,
        rid: str,
        index: int,
        marker: str | None,
    ) -> None:
        package = self.package
        text = package.text(package.workbook)
        p = root_prefix(text, "workbook")
        q = re.escape(p)
        root_tag = re.search(rf"<{q}workbook\b[^>]*>", text)
        assert root_tag is not None
        rels_ns = package.ns.rels
        r_prefix = next(
            (
                m[1]
                for m in re.finditer(r"xmlns:([\w.-]+)\s*=\s*[\"']([^\"']*)[\"']", root_tag[0])
                if m[2] == rels_ns
            ),
            None,
        )
        declare = "" if r_prefix else f' xmlns:r="{rels_ns}"'
        element = (
            f'<{p}sheet name={quoteattr(self.title)} sheetId="{sheet_id}" '
            f'{r_prefix or "r"}:id="{rid}"{declare}/>'
        )
        sheets = re.search(rf"<{q}sheets\b[^>]*?(?:/>|>(.*?)</{q}sheets\s*>)", text, re.S)
        if sheets is None:
            raise WorkbookError(f"{package.path}: its workbook part has no <sheets>")
        body = sheets[1] or ""
        found = list(re.finditer(rf"<{q}sheet\b[^>]*?(?:/>|>.*?</{q}sheet\s*>)", body, re.S))
        if len(found) != len(entries):
            raise WorkbookError(f"{package.path}: its <sheets> is laid out in a way crmkit does not edit")
        if replace is not None:
            old = found[replace.index]
            body = body[: old.start()] + element + body[old.end() :]
        else:
            body += element
        open_tag = re.match(rf"<{q}sheets\b[^>]*?(/?)>", sheets[0])
        assert open_tag is not None
        opening = open_tag[0][:-2] + ">" if open_tag[1] else open_tag[0]
        text = text[: sheets.start()] + f"{opening}{body}</{p}sheets>" + text[sheets.end() :]

        names = re.search(rf"<{q}definedNames\b([^>]*?)(?:/>|>(.*?)</{q}definedNames\s*>)", text, re.S)
        if replace is not None and names is not None:
            # The old sheet's own names (crmkit's marker, a print area ...) go with it.
            def drop(match: re.Match[str]) -> str:
                return "" if attrs(match[1]).get("localSheetId") == str(replace.index) else match[0]

            kept = re.sub(
                rf"<{q}definedName\b([^>]*?)(?:/>|>.*?</{q}definedName\s*>)", drop, names[2] or "", flags=re.S
            )
            text = (
                text[: names.start()]
                + f"<{p}definedNames{names[1]}>{kept}</{p}definedNames>"
                + text[names.end() :]
            )
            names = re.search(rf"<{q}definedNames\b([^>]*?)(?:/>|>(.*?)</{q}definedNames\s*>)", text, re.S)
        if marker is not None:
            element = (
                f'<{p}definedName name="{marker}" localSheetId="{index}" hidden="1">'
                f"{escape(quote_sheet(self.title))}!$A$1</{p}definedName>"
            )
            if names is not None:
                inner = names[2] or ""
                text = (
                    text[: names.start()]
                    + f"<{p}definedNames{names[1]}>{inner}{element}</{p}definedNames>"
                    + text[names.end() :]
                )
            else:
                after = 0
                for local in ("sheets", "functionGroups", "externalReferences"):
                    for m in re.finditer(rf"<{q}{local}\b[^>]*?(?:/>|>.*?</{q}{local}\s*>)", text, re.S):
                        after = max(after, m.end())
                text = text[:after] + f"<{p}definedNames>{element}</{p}definedNames>" + text[after:]
        package.put(package.workbook, text)

    def _edit_workbook_rels(self, old_id: str | None, new_id: str, target: str) -> None:
        package = self.package
        name = rels_name(package.workbook)
        rels_part = package.member(name)
        kind = package.ns.rel_type("worksheet")
        element_for = f'Id="{new_id}" Type="{kind}" Target={quoteattr(relative(package.workbook, target))}'
        if rels_part is None:
            package.add(
                name,
                relationships_xml(
                    [(new_id, package.ns.rel_type("worksheet"), relative(package.workbook, target), False)]
                ),
            )
            self.content_types.setdefault("", "")
            return
        text = package.text(rels_part)
        p = root_prefix(text, "Relationships")
        q = re.escape(p)
        if old_id is not None:

            def drop(match: re.Match[str]) -> str:
                return "" if attrs(match[1]).get("Id") == old_id else match[0]

            text = re.sub(
                rf"<{q}Relationship\b([^>]*?)(?:/>|>.*?</{q}Relationship\s*>)", drop, text, flags=re.S
            )
        elements = f"<{p}Relationship {element_for}/>"
        taken = {r.id for r in package.relationships(package.workbook)} | {new_id}
        for extra_kind, part in self.extra_rels:
            rid = fresh_id(taken)
            taken.add(rid)
            elements += (
                f'<{p}Relationship Id="{rid}" Type="{extra_kind}" '
                f"Target={quoteattr(relative(package.workbook, part))}/>"
            )
        text = insert_before_close(text, f"{p}Relationships", elements)
        package.put(rels_part, text)

    def _edit_content_types(self) -> None:
        package = self.package
        name = package.member("[Content_Types].xml")
        if name is None:
            raise WorkbookError(f"{package.path} has no [Content_Types].xml")
        text = package.text(name)
        p = root_prefix(text, "Types")
        q = re.escape(p)
        gone = {f"/{part}".casefold() for part in self.removed}

        def drop(match: re.Match[str]) -> str:
            return "" if (attrs(match[1]).get("PartName") or "").casefold() in gone else match[0]

        text = re.sub(rf"<{q}Override\b([^>]*?)(?:/>|>\s*</{q}Override\s*>)", drop, text)
        defaults = {
            (attrs(m[1]).get("Extension") or "").casefold(): attrs(m[1]).get("ContentType")
            for m in re.finditer(rf"<{q}Default\b([^>]*?)/?>", text)
        }
        # Every new part gets an override, unless the file's default for its extension fits.
        elements = "".join(
            f"<{p}Override PartName={quoteattr('/' + part)} ContentType={quoteattr(kind)}/>"
            for part, kind in self.content_types.items()
            if kind and defaults.get(posixpath.splitext(part)[1].lstrip(".").casefold()) != kind
        )
        for extension, kind in (
            ("rels", "application/vnd.openxmlformats-package.relationships+xml"),
            ("xml", "application/xml"),
        ):
            if extension not in defaults:
                elements = f'<{p}Default Extension="{extension}" ContentType="{kind}"/>' + elements
        text = insert_before_close(text, f"{p}Types", elements)
        package.put(name, text)


def _add_to_app_properties(package: Package, title: str) -> None:
    """List the new sheet in docProps/app.xml, as Excel does; left alone when laid out otherwise."""
    app = next(
        (
            package.member(r.target)
            for r in package.relationships("")
            if r.type.endswith("/extended-properties") or r.type.endswith("/extendedProperties")
        ),
        None,
    )
    if app is None:
        return
    text = package.text(app)
    titles = re.search(
        r"<(\w+:)?TitlesOfParts>\s*<(\w+:)?vector\b([^>]*)>(.*?)</(?:\w+:)?vector>", text, re.S
    )
    pairs = re.search(r"<(\w+:)?HeadingPairs>(.*?)</(?:\w+:)?HeadingPairs>", text, re.S)
    if titles is None or pairs is None:
        return
    vt = titles[2] or ""
    items = re.findall(rf"<{re.escape(vt)}lpstr>", titles[4])
    counts = list(
        re.finditer(
            rf"<{re.escape(vt)}lpstr>([^<]*)</{re.escape(vt)}lpstr>\s*</{re.escape(vt)}variant>\s*<{re.escape(vt)}variant>\s*<{re.escape(vt)}i4>(\d+)</{re.escape(vt)}i4>",
            pairs[2],
        )
    )
    if not counts:
        return
    total = sum(int(m[2]) for m in counts)
    if total != len(items):
        return  # a layout this does not understand: better untouched than wrong
    # Worksheets come first in TitlesOfParts, then named ranges and others.
    sheets = next(
        (m for m in counts if m[1] in ("Worksheets", "Arbeitsblätter", "Feuilles de calcul")), counts[0]
    )
    position = 0
    for m in counts:
        if m is sheets:
            position += int(m[2])
            break
        position += int(m[2])
    entries = list(re.finditer(rf"<{re.escape(vt)}lpstr>[^<]*</{re.escape(vt)}lpstr>", titles[4]))
    insert_at = entries[position - 1].end() if position > 0 else 0
    inner = titles[4][:insert_at] + f"<{vt}lpstr>{escape(title)}</{vt}lpstr>" + titles[4][insert_at:]
    vector = re.sub(r'\ssize="\d+"', f' size="{len(items) + 1}"', titles[3])
    start, end = titles.start(3) - 0, titles.end(4)
    new_titles = text[titles.start() : start] + vector + ">" + inner
    text = text[: titles.start()] + new_titles + text[end:]
    pairs = re.search(r"<(\w+:)?HeadingPairs>(.*?)</(?:\w+:)?HeadingPairs>", text, re.S)
    assert pairs is not None
    counts = list(
        re.finditer(
            rf"<{re.escape(vt)}lpstr>([^<]*)</{re.escape(vt)}lpstr>\s*</{re.escape(vt)}variant>\s*<{re.escape(vt)}variant>\s*<{re.escape(vt)}i4>(\d+)</{re.escape(vt)}i4>",
            pairs[2],
        )
    )
    target = next(m for m in counts if m[1] == sheets[1])
    at = pairs.start(2) + target.start(2)
    text = text[:at] + str(int(target[2]) + 1) + text[at + len(target[2]) :]
    package.put(app, text)


def _strict_type(kind: str) -> str:
    return kind.replace(TRANSITIONAL.rels, TO_STRICT[TRANSITIONAL.rels])


def _to_strict(text: str) -> str:
    for old, new in TO_STRICT.items():
        text = text.replace(f'"{old}"', f'"{new}"')
    return text


def _content_types(data: bytes) -> tuple[dict[str, str], dict[str, str]]:
    """The overrides (by part, folded) and the defaults (by extension) of a content types part."""
    root = ET.fromstring(data)
    overrides = {
        (el.get("PartName") or "").lstrip("/").casefold(): el.get("ContentType") or ""
        for el in root.iter(f"{{{CT_NS}}}Override")
    }
    defaults = {
        (el.get("Extension") or "").casefold(): el.get("ContentType") or ""
        for el in root.iter(f"{{{CT_NS}}}Default")
    }
    return overrides, defaults


def _shared_strings(data: bytes) -> list[str]:
    root = ET.fromstring(data)
    main = TRANSITIONAL.main
    return [
        "".join(t.text or "" for t in (*si.findall(f"{{{main}}}t"), *si.findall(f"{{{main}}}r/{{{main}}}t")))
        for si in root.iter(f"{{{main}}}si")
    ]


def _inline_shared_strings(sheet_xml: str, shared: list[str]) -> str:
    """The sheet's shared-string cells (``t="s"``) as inline strings: no sharedStrings part needed."""

    def inline(match: re.Match[str]) -> str:
        cell_attrs = re.sub(r"\st=\"s\"", ' t="inlineStr"', match[1])
        return f'<c{cell_attrs}><is><t xml:space="preserve">{escape(shared[int(match[2])])}</t></is></c>'

    return re.sub(r"<c\b((?=[^>]*\st=\"s\")[^>]*)>\s*<v>(\d+)</v>\s*</c>", inline, sheet_xml)
