"""Never damage a person's workbook (issue 12): crmkit's writes into real workbooks change only its own parts.

Each workbook of :mod:`realbooks` (XlsxWriter, openpyxl and LibreOffice files, an .xlsm with a
VBA project, a Strict Open XML file) goes through what a user does, with the real CLI in a folder
made by ``crmkit init``: a first ``crmkit sync`` (which adds crmkit's sheets), a row typed into its
Contacts sheet and another sync, and ``crmkit report pipeline --xlsx``. After each, the result is
compared with the ORIGINAL file, member by member:

* crmkit may change only its own sheets' parts (the worksheet parts of the sheets it syncs or
  creates, with their .rels and Excel table parts; new parts only when they hang off those sheets),
  minimal entries in ``xl/workbook.xml``, ``xl/_rels/workbook.xml.rels``, ``[Content_Types].xml``
  and ``docProps/app.xml``, and append to ``xl/styles.xml`` and ``xl/sharedStrings.xml``;
* every other member comes out byte-identical (decompressed bytes, compressed bytes and
  compression method) and in its original relative order;
* an .xlsm keeps its macro-enabled workbook content type and its vbaProject.bin; a Strict workbook
  stays Strict.

At the end LibreOffice opens every result (one ``soffice`` run converting them all to CSV).

The workbooks and each user's steps are made once per test session and reused; every step
works on its own copy.
"""

from __future__ import annotations

import io
import json
import os
import posixpath
import re
import shutil
import struct
import traceback
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from urllib.parse import unquote
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

import pytest
from click.testing import CliRunner
from realbooks import (
    BOOK_NAMES,
    LIBREOFFICE_BOOKS,
    SOFFICE,
    STRICT_MAIN,
    RealBook,
    build_books,
    finish,
    soffice_convert,
)

from crmkit.cli import main
from crmkit.workbooks import SHEETS

REQUIRE_SERVERS = bool(os.environ.get("CRMKIT_REQUIRE_SERVERS"))
needs_soffice = pytest.mark.skipif(
    SOFFICE is None and not REQUIRE_SERVERS,
    reason="LibreOffice (soffice) is not installed; CRMKIT_REQUIRE_SERVERS=1 makes this an error",
)

#: The sheets ``crmkit sync`` owns (casefolded titles), and the one ``crmkit report --xlsx`` writes.
SYNC_SHEETS = frozenset(sheet.title.casefold() for sheet in SHEETS)
REPORT_SHEETS = frozenset({"reports"})
#: The contact a person types into the Contacts sheet between two syncs.
TYPED = {"Name": "Trần Văn Bình", "Email": "binh@hanoifresh.vn", "Title": "Buyer"}

CONTENT_TYPES = "[Content_Types].xml"
MACRO_MAIN = "application/vnd.ms-excel.sheet.macroEnabled.main+xml"
#: Namespaces (prefixes) a Strict workbook's parts must not use.
TRANSITIONAL = (
    "http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    "http://schemas.openxmlformats.org/officeDocument/2006/",
    "http://schemas.openxmlformats.org/drawingml/2006/",
)
#: The lists in styles.xml that may only grow at their end.
STYLE_LISTS = ("numFmts", "fonts", "fills", "borders", "cellStyleXfs", "cellXfs", "cellStyles", "dxfs")


# -- reading a package --------------------------------------------------------------------------


def local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def namespace(tag: str) -> str:
    return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""


def attribute(element: ET.Element, name: str) -> str | None:
    """An attribute by local name, whatever its namespace (``r:id`` in transitional and Strict)."""
    for key, value in element.attrib.items():
        if local(key) == name:
            return value
    return None


def canon(element: ET.Element) -> tuple:
    """An element as comparable data: tag, attributes, text and children (not prefixes or layout)."""
    return (
        element.tag,
        tuple(sorted(element.attrib.items())),
        (element.text or "").strip(),
        tuple(canon(child) for child in element),
    )


@dataclass(frozen=True)
class Rel:
    id: str
    type: str
    target: str  # as written
    part: str | None  # the member it points to; None for an external target
    mode: str | None


@dataclass(frozen=True)
class SheetRef:
    name: str
    part: str
    element: ET.Element


def rels_part(part: str) -> str:
    folder, name = posixpath.split(part)
    return posixpath.join(folder, "_rels", name + ".rels")


def _raw(blob: bytes, info: zipfile.ZipInfo) -> bytes:
    """A member's compressed bytes, as stored."""
    offset = info.header_offset
    name_length, extra_length = struct.unpack("<HH", blob[offset + 26 : offset + 30])
    start = offset + 30 + name_length + extra_length
    return blob[start : start + info.compress_size]


class Package:
    """An .xlsx/.xlsm read whole: its members in zip order, decompressed and as stored."""

    def __init__(self, path: Path) -> None:
        self.path = path
        blob = path.read_bytes()
        with zipfile.ZipFile(io.BytesIO(blob)) as zf:
            self.infos = {info.filename: info for info in zf.infolist()}
            self.names = list(self.infos)
            self.data = {name: zf.read(name) for name in self.names}
        self.raw = {name: _raw(blob, info) for name, info in self.infos.items()}

    def xml(self, name: str) -> ET.Element:
        return ET.fromstring(self.data[name])

    def rels(self, part: str) -> list[Rel]:
        """The relationships of ``part`` ("" for the package's own)."""
        name = "_rels/.rels" if part == "" else rels_part(part)
        if name not in self.data:
            return []
        rels = []
        for element in self.xml(name):
            target = element.get("Target", "")
            mode = element.get("TargetMode")
            resolved = None
            if mode != "External":
                path = unquote(target)
                resolved = (
                    path[1:]
                    if path.startswith("/")
                    else posixpath.normpath(posixpath.join(posixpath.dirname(part), path))
                )
            rels.append(Rel(element.get("Id", ""), element.get("Type", ""), target, resolved, mode))
        return rels

    def related(self, part: str, kind: str) -> str | None:
        """The first part ``part`` relates to by a type ending in ``/kind``."""
        for rel in self.rels(part):
            if rel.type.endswith("/" + kind) and rel.part is not None:
                return rel.part
        return None

    @cached_property
    def workbook(self) -> str:
        part = self.related("", "officeDocument")
        assert part is not None, f"{self.path.name}: no officeDocument relationship"
        return part

    @cached_property
    def app(self) -> str | None:
        return self.related("", "extended-properties") or self.related("", "extendedProperties")

    @cached_property
    def styles(self) -> str | None:
        return self.related(self.workbook, "styles")

    @cached_property
    def shared_strings(self) -> str | None:
        return self.related(self.workbook, "sharedStrings")

    @cached_property
    def sheets(self) -> list[SheetRef]:
        by_id = {rel.id: rel for rel in self.rels(self.workbook)}
        sheets = []
        for element in self.xml(self.workbook).iter():
            if local(element.tag) == "sheet":
                rel = by_id.get(attribute(element, "id") or "")
                if rel is not None and rel.part is not None:
                    sheets.append(SheetRef(element.get("name", ""), rel.part, element))
        return sheets

    def sheet_part(self, title: str) -> str | None:
        for sheet in self.sheets:
            if sheet.name.strip().casefold() == title.strip().casefold():
                return sheet.part
        return None

    def owned(self, titles: frozenset[str]) -> tuple[set[str], set[str]]:
        """(parts crmkit may change, parts crmkit may add) for the sheets titled ``titles``.

        It may change the sheets' worksheet parts, their .rels and their Excel tables, and add
        whatever hangs off those sheets (drawings, charts, tables, ...).
        """
        changeable: set[str] = set()
        roots = [sheet.part for sheet in self.sheets if sheet.name.strip().casefold() in titles]
        for part in roots:
            changeable |= {part, rels_part(part)}
            changeable |= {rel.part for rel in self.rels(part) if rel.type.endswith("/table") and rel.part}
        reachable: set[str] = set()
        todo = list(roots)
        while todo:
            part = todo.pop()
            if part in reachable:
                continue
            reachable |= {part, rels_part(part)}
            todo += [rel.part for rel in self.rels(part) if rel.part is not None]
        return changeable, reachable

    def content_types(self) -> tuple[dict[str, str], dict[str, str]]:
        """({extension: type}, {part name: type}) of [Content_Types].xml."""
        defaults, overrides = {}, {}
        for element in self.xml(CONTENT_TYPES):
            if local(element.tag) == "Default":
                defaults[element.get("Extension", "").lower()] = element.get("ContentType", "")
            elif local(element.tag) == "Override":
                overrides[element.get("PartName", "").lstrip("/")] = element.get("ContentType", "")
        return defaults, overrides

    def cells(self, title: str) -> dict[int, dict[int, str]]:
        """The text of the cells of sheet ``title`` that hold a value: {row: {column index: text}}."""
        part = self.sheet_part(title)
        assert part is not None, f"{self.path.name} has no {title} sheet"
        shared = []
        if self.shared_strings is not None:
            for item in self.xml(self.shared_strings):
                shared.append(_text(item))
        rows: dict[int, dict[int, str]] = {}
        data = next(e for e in self.xml(part) if local(e.tag) == "sheetData")
        number = 0
        for row in data:
            number = int(row.get("r") or number + 1)
            column = -1
            for cell in row:
                ref = cell.get("r")
                column = column_index(ref) if ref else column + 1
                kind = cell.get("t", "n")
                value = next((e.text for e in cell if local(e.tag) == "v"), None)
                if kind == "s" and value is not None:
                    text: str | None = shared[int(value)]
                elif kind == "inlineStr":
                    text = "".join(_text(e) for e in cell if local(e.tag) == "is")
                else:
                    text = value
                if text not in (None, ""):
                    rows.setdefault(number, {})[column] = text
        return rows


def _text(item: ET.Element) -> str:
    """The text of a shared or inline string: its ``t`` and its runs' ``t``, not phonetic runs."""
    parts = []
    for child in item:
        if local(child.tag) == "t":
            parts.append(child.text or "")
        elif local(child.tag) == "r":
            parts += [t.text or "" for t in child if local(t.tag) == "t"]
    return "".join(parts)


def column_index(ref: str) -> int:
    index = 0
    for ch in re.match(r"[A-Za-z]+", ref).group(0).upper():  # type: ignore[union-attr]
        index = index * 26 + ord(ch) - 64
    return index - 1


def column_letters(index: int) -> str:
    letters = ""
    index += 1
    while index:
        index, rest = divmod(index - 1, 26)
        letters = chr(65 + rest) + letters
    return letters


# -- the guarantee ------------------------------------------------------------------------------


def guarantee(original: Path, result: Path, titles: frozenset[str]) -> list[str]:
    """What ``result`` changed in ``original`` beyond what crmkit may change for its sheets ``titles``."""
    old = Package(original)
    try:
        new = Package(result)
    except zipfile.BadZipFile as exc:
        return [f"{result.name} is no longer a zip file: {exc}"]
    problems: list[str] = []
    old_changeable, _ = old.owned(titles)
    new_changeable, new_reachable = new.owned(titles)
    special = {CONTENT_TYPES, old.workbook, rels_part(old.workbook)} | {
        p for p in (old.app, old.styles, old.shared_strings) if p
    }
    may_change = old_changeable | new_changeable | special

    for name in old.names:
        if name not in new.data:
            problems.append(f"{name} was removed")
    others = [name for name in old.names if name not in may_change and name in new.data]
    for name in others:
        if old.data[name] != new.data[name]:
            problems.append(f"{name} changed")
        elif old.raw[name] != new.raw[name] or old.infos[name].compress_type != new.infos[name].compress_type:
            problems.append(
                f"{name}: same content but recompressed (method {old.infos[name].compress_type} -> "
                f"{new.infos[name].compress_type}, {len(old.raw[name])} -> {len(new.raw[name])} bytes stored)"
            )
    moved = [name for name in new.names if name in set(others)]
    if moved != others:
        problems.append(f"members other than crmkit's are out of their original order: {others} -> {moved}")
    added_allowed = new_reachable | {p for p in (new.styles, new.shared_strings) if p}
    for name in new.names:
        if name not in old.data and name not in added_allowed:
            problems.append(f"{name} was added, and belongs to none of crmkit's sheets")

    for name, check in (
        (CONTENT_TYPES, lambda: _content_types(old, new)),
        (old.workbook, lambda: _workbook(old, new, titles)),
        (rels_part(old.workbook), lambda: _workbook_rels(old, new, new_reachable)),
        (old.app, lambda: _app(old, new)),
        (old.styles, lambda: _styles(old, new)),
        (old.shared_strings, lambda: _shared_strings(old, new)),
    ):
        if name is None or name not in new.data:
            continue
        try:
            problems += [f"{name}: {problem}" for problem in check()]
        except ET.ParseError as exc:
            problems.append(f"{name}: not well-formed XML: {exc}")
    for sheet in new.sheets:
        if sheet.part in new.data and (sheet.part in new_changeable or sheet.part not in old.data):
            try:
                new.xml(sheet.part)
            except ET.ParseError as exc:
                problems.append(f"{sheet.part} ({sheet.name}): not well-formed XML: {exc}")

    defaults, overrides = new.content_types()
    for name in new.names:
        if (
            name not in old.data
            and name not in overrides
            and posixpath.splitext(name)[1][1:].lower() not in defaults
        ):
            problems.append(f"{name} was added without a content type")
    problems += _macros(old, new) + _strict(old, new)
    return problems


def _content_types(old: Package, new: Package) -> list[str]:
    problems = []
    old_defaults, old_overrides = old.content_types()
    new_defaults, new_overrides = new.content_types()
    for extension, kind in old_defaults.items():
        if new_defaults.get(extension) != kind:
            problems.append(f"Default for .{extension} changed: {kind} -> {new_defaults.get(extension)}")
    # A part named in an Override keeps that type whatever the Defaults say (OPC: an Override
    # wins), so a new Default retypes only the existing parts of its extension that have none
    # (older LibreOffice writes an Override for every part and no Default at all).
    overridden = {part.casefold() for part in old_overrides}
    used = {
        posixpath.splitext(name)[1][1:].lower()
        for name in old.names
        if name != CONTENT_TYPES and not name.endswith("/") and name.casefold() not in overridden
    }
    for extension in new_defaults.keys() - old_defaults.keys():
        if extension in used:
            problems.append(f"a new Default for .{extension} retypes the workbook's own .{extension} parts")
    for part, kind in old_overrides.items():
        if new_overrides.get(part) != kind:
            problems.append(f"Override for /{part} changed: {kind} -> {new_overrides.get(part)}")
    for part in new_overrides.keys() - old_overrides.keys():
        if part in old.data:
            problems.append(f"a new Override retypes the existing part /{part}")
    return problems


def _local_sheet(element: ET.Element, sheets: list[SheetRef]) -> str | None:
    index = element.get("localSheetId")
    if index is None or not index.isdigit() or int(index) >= len(sheets):
        return None
    return sheets[int(index)].name.strip().casefold()


def _workbook(old: Package, new: Package, titles: frozenset[str]) -> list[str]:
    problems = []
    old_root, new_root = old.xml(old.workbook), new.xml(new.workbook)
    if old_root.tag != new_root.tag or old_root.attrib != new_root.attrib:
        problems.append(
            f"<workbook> changed: {old_root.tag} {old_root.attrib} -> {new_root.tag} {new_root.attrib}"
        )
    old_tags = [child.tag for child in old_root]
    kept = [
        child
        for child in new_root
        if child.tag in old_tags or local(child.tag) not in ("definedNames", "calcPr")
    ]
    if [child.tag for child in kept] != old_tags:
        problems.append(
            f"top-level elements changed: {[local(t) for t in old_tags]} -> {[local(c.tag) for c in new_root]}"
        )
        return problems
    for before, after in zip(old_root, kept, strict=True):
        tag = local(before.tag)
        if tag == "sheets":
            old_sheets = [canon(s) for s in before]
            new_sheets = [canon(s) for s in after]
            if new_sheets[: len(old_sheets)] != old_sheets:
                problems.append("the existing <sheet> entries changed or moved")
            for extra in list(after)[len(old_sheets) :]:
                if extra.get("name", "").strip().casefold() not in titles:
                    problems.append(f"a sheet crmkit does not own was added: {extra.get('name')!r}")
        elif tag == "definedNames":
            new_names = {(n.get("name"), n.get("localSheetId")): n for n in after}
            for name in before:
                key = (name.get("name"), name.get("localSheetId"))
                if _local_sheet(name, old.sheets) in titles:
                    continue  # a name scoped to crmkit's own sheet (its filter range, say) may change
                if key not in new_names or canon(new_names[key]) != canon(name):
                    problems.append(f"defined name {key[0]!r} (sheet {key[1]}) changed or vanished")
            old_keys = {(n.get("name"), n.get("localSheetId")) for n in before}
            for key, name in new_names.items():
                if key not in old_keys and _local_sheet(name, new.sheets) not in titles:
                    problems.append(f"defined name {key[0]!r} was added outside crmkit's sheets")
        elif tag == "calcPr":
            changed = {
                k for k in before.attrib.keys() | after.attrib.keys() if before.get(k) != after.get(k)
            } - {"fullCalcOnLoad"}
            if changed:
                problems.append(f"<calcPr> changed {sorted(changed)}")
        elif canon(before) != canon(after):
            problems.append(f"<{tag}> changed")
    for child in new_root:
        if child.tag not in old_tags and local(child.tag) == "definedNames":
            for name in child:
                if _local_sheet(name, new.sheets) not in titles:
                    problems.append(f"defined name {name.get('name')!r} was added outside crmkit's sheets")
    return problems


def _workbook_rels(old: Package, new: Package, reachable: set[str]) -> list[str]:
    problems = []
    new_rels = {rel.id: rel for rel in new.rels(new.workbook)}
    for rel in old.rels(old.workbook):
        kept = new_rels.get(rel.id)
        if kept is None or (kept.type, kept.target, kept.mode) != (rel.type, rel.target, rel.mode):
            problems.append(
                f"relationship {rel.id} ({rel.type.rsplit('/', 1)[-1]} {rel.target}) changed or vanished"
            )
    old_ids = {rel.id for rel in old.rels(old.workbook)}
    for rel in new_rels.values():
        if rel.id in old_ids:
            continue
        if rel.part not in reachable and rel.part not in (new.styles, new.shared_strings):
            problems.append(f"new relationship {rel.id} to {rel.target} is not one of crmkit's sheets")
    return problems


def _app(old: Package, new: Package) -> list[str]:
    if new.app != old.app:
        return [f"the extended properties moved from {old.app} to {new.app}"]
    problems = []
    assert old.app is not None
    old_root, new_root = old.xml(old.app), new.xml(old.app)
    lists = ("HeadingPairs", "TitlesOfParts")
    old_tags = [child.tag for child in old_root]
    kept = [child for child in new_root if child.tag in old_tags or local(child.tag) not in lists]
    if [child.tag for child in kept] != old_tags:
        return [f"elements changed: {[local(t) for t in old_tags]} -> {[local(c.tag) for c in new_root]}"]
    for before, after in zip(old_root, kept, strict=True):
        if local(before.tag) == "TitlesOfParts":
            old_titles = [e.text for e in before.iter() if local(e.tag) == "lpstr"]
            new_titles = iter([e.text for e in after.iter() if local(e.tag) == "lpstr"])
            if not all(title in new_titles for title in old_titles):  # a subsequence, in order
                problems.append(f"TitlesOfParts lost or reordered titles: {old_titles}")
        elif local(before.tag) != "HeadingPairs" and canon(before) != canon(after):
            problems.append(f"<{local(before.tag)}> changed")
    return problems


def _appended(
    before: ET.Element, after: ET.Element, what: str, counts: Iterable[str] = ("count",)
) -> list[str]:
    """``after`` is ``before`` with children added at the end only (and its count attributes updated)."""
    problems = []
    attrs = {k: v for k, v in before.attrib.items() if k not in counts}
    if attrs != {k: v for k, v in after.attrib.items() if k not in counts}:
        problems.append(f"<{what}> attributes changed: {before.attrib} -> {after.attrib}")
    old_items = [canon(child) for child in before]
    new_items = [canon(child) for child in after]
    if new_items[: len(old_items)] != old_items:
        first = (
            next(i for i, (a, b) in enumerate(zip(old_items, new_items, strict=False)) if a != b)
            if any(a != b for a, b in zip(old_items, new_items, strict=False))
            else len(new_items)
        )
        problems.append(
            f"<{what}>: existing entries changed, moved or were dropped ({len(old_items)} before, "
            f"{len(new_items)} after; first difference at index {first})"
        )
    return problems


def _styles(old: Package, new: Package) -> list[str]:
    if new.styles != old.styles:
        return [f"the styles part moved from {old.styles} to {new.styles}"]
    assert old.styles is not None
    old_root, new_root = old.xml(old.styles), new.xml(old.styles)
    problems = []
    if old_root.attrib != new_root.attrib:
        problems.append("<styleSheet> attributes changed")
    old_tags = [child.tag for child in old_root]
    kept = [child for child in new_root if child.tag in old_tags or local(child.tag) not in STYLE_LISTS]
    if [child.tag for child in kept] != old_tags:
        return [f"elements changed: {[local(t) for t in old_tags]} -> {[local(c.tag) for c in new_root]}"]
    for before, after in zip(old_root, kept, strict=True):
        tag = local(before.tag)
        if tag in STYLE_LISTS:
            problems += _appended(before, after, tag)
        elif canon(before) != canon(after):
            problems.append(f"<{tag}> changed")
    for child in new_root:
        if local(child.tag) == "numFmts":
            ids = [fmt.get("numFmtId") for fmt in child]
            if len(ids) != len(set(ids)):
                problems.append(f"<numFmts> has a numFmtId twice: {ids}")
    return problems


def _shared_strings(old: Package, new: Package) -> list[str]:
    if new.shared_strings != old.shared_strings:
        return [f"the shared strings moved from {old.shared_strings} to {new.shared_strings}"]
    assert old.shared_strings is not None
    return _appended(
        old.xml(old.shared_strings), new.xml(old.shared_strings), "sst", ("count", "uniqueCount")
    )


def _macros(old: Package, new: Package) -> list[str]:
    _, old_types = old.content_types()
    if old_types.get(old.workbook) != MACRO_MAIN:
        return []
    problems = []
    _, new_types = new.content_types()
    if new_types.get(new.workbook) != MACRO_MAIN:
        problems.append(f"the macro-enabled workbook is now {new_types.get(new.workbook)}")
    for name in old.names:
        if name.endswith("vbaProject.bin") and new.data.get(name) != old.data[name]:
            problems.append(f"{name}: the VBA project changed or vanished")
    return problems


def _strict(old: Package, new: Package) -> list[str]:
    if namespace(old.xml(old.workbook).tag) != STRICT_MAIN:
        return []
    problems = []
    root = new.xml(new.workbook)
    if namespace(root.tag) != STRICT_MAIN or root.get("conformance") != "strict":
        problems.append(
            f"the Strict workbook is no longer Strict: <{root.tag} conformance={root.get('conformance')}>"
        )
    for name in new.names:
        if not name.endswith((".xml", ".rels")) or new.data[name] == old.data.get(name):
            continue
        text = new.data[name].decode("utf-8", errors="replace")
        found = sorted({ns for ns in TRANSITIONAL if ns in text})
        if found:
            problems.append(f"{name}: transitional namespaces in a Strict workbook: {found}")
    return problems


# -- a person typing a row ----------------------------------------------------------------------


def replace_member(path: Path, name: str, data: bytes) -> None:
    """Put ``data`` in member ``name`` of the zip at ``path``, every other byte of the zip kept as is.

    The other members' local headers and stored data are copied verbatim, and the central
    directory's records too, with only their offsets moved; the new member is deflated.
    """
    blob = path.read_bytes()
    end = blob.rfind(b"PK\x05\x06")
    count, _size, start = struct.unpack("<HII", blob[end + 10 : end + 20])
    assert count != 0xFFFF and start != 0xFFFFFFFF, "zip64 is not handled here"
    records = []
    position = start
    for _ in range(count):
        fixed = blob[position : position + 46]
        assert fixed[:4] == b"PK\x01\x02", "not a central directory record"
        name_length, extra_length, comment_length = struct.unpack("<HHH", fixed[28:34])
        length = 46 + name_length + extra_length + comment_length
        records.append(bytearray(blob[position : position + length]))
        position += length
    offsets = [struct.unpack("<I", record[42:46])[0] for record in records]
    assert offsets == sorted(offsets), "members are not stored in central directory order"
    bounds = [*offsets[1:], start]
    compressor = zlib.compressobj(6, zlib.DEFLATED, -15)
    packed = compressor.compress(data) + compressor.flush()
    crc = zlib.crc32(data)
    out = bytearray()
    found = False
    for record, offset, following in zip(records, offsets, bounds, strict=True):
        name_length = struct.unpack("<H", record[28:30])[0]
        own_name = bytes(record[46 : 46 + name_length]).decode("utf-8", errors="replace")
        struct.pack_into("<I", record, 42, len(out))
        if own_name != name:
            out += blob[offset:following]  # local header, data and any data descriptor, verbatim
            continue
        found = True
        header = bytearray(blob[offset : offset + 30])
        local_name, local_extra = struct.unpack("<HH", header[26:30])
        flags = struct.unpack("<H", header[6:8])[0] & ~0x08  # sizes in the header, no descriptor
        struct.pack_into("<HH", header, 6, flags, zipfile.ZIP_DEFLATED)
        struct.pack_into("<III", header, 14, crc, len(packed), len(data))
        out += header + blob[offset + 30 : offset + 30 + local_name + local_extra] + packed
        struct.pack_into("<HH", record, 8, flags, zipfile.ZIP_DEFLATED)
        struct.pack_into("<III", record, 16, crc, len(packed), len(data))
    assert found, f"no {name} in {path}"
    directory_start = len(out)
    for record in records:
        out += record
    tail = bytearray(blob[end:])
    struct.pack_into("<II", tail, 12, len(out) - directory_start, directory_start)
    out += tail
    path.write_bytes(bytes(out))


def type_row(path: Path, title: str, values: dict[str, str]) -> int:
    """Type ``values`` (by header) into the first empty row below the data of sheet ``title``, as
    text (inline strings), the way a person fills in a row; every other part of the file is kept
    byte for byte. The row's number."""
    package = Package(path)
    part = package.sheet_part(title)
    assert part is not None, f"{path.name} has no {title} sheet to type into"
    cells = package.cells(title)
    headers = {text.strip().casefold(): column for column, text in cells.get(1, {}).items()}
    absent = [header for header in values if header.casefold() not in headers]
    assert not absent, (
        f"{path.name}: the {title} sheet has no {absent} header to type under (row 1: {cells.get(1)})"
    )
    columns = {headers[header.casefold()]: value for header, value in values.items()}
    row = max(cells, default=1) + 1
    xml = package.data[part].decode("utf-8")
    opening = re.search(r"<(\w+:)?sheetData\b([^>]*?)(/?)>", xml)
    assert opening is not None, f"{part} has no sheetData"
    p = opening.group(1) or ""

    styles: dict[int, str] = {}  # the style of a formatted empty cell typed into, kept

    def cell(column: int, value: str) -> str:
        style = f' s="{styles[column]}"' if column in styles else ""
        return (
            f'<{p}c r="{column_letters(column)}{row}"{style} t="inlineStr"><{p}is><{p}t xml:space="preserve">'
            f"{escape(value)}</{p}t></{p}is></{p}c>"
        )

    row_re = re.compile(rf"<{p}row\b[^>]*?\br=\"(\d+)\"[^>]*?(?:/>|>.*?</{p}row>)", re.S)
    existing = next((m for m in row_re.finditer(xml) if int(m.group(1)) == row), None)
    if existing is not None:  # a formatted, empty row: keep its attributes and other cells
        element = existing.group(0)
        head = re.match(rf"<{p}row\b[^>]*?(?=/?>)", element).group(0)  # type: ignore[union-attr]
        kept = []
        for m in re.finditer(rf"<{p}c\b([^>]*?)\br=\"([A-Z]+)\d+\"([^>]*?)(?:/>|>.*?</{p}c>)", element, re.S):
            column = column_index(m.group(2))
            if column not in columns:
                kept.append((column, m.group(0)))
            elif style := re.search(r'\bs="(\d+)"', m.group(1) + m.group(3)):
                styles[column] = style.group(1)
        body = "".join(x for _, x in sorted(kept + [(c, cell(c, v)) for c, v in columns.items()]))
        xml = xml[: existing.start()] + f"{head}>{body}</{p}row>" + xml[existing.end() :]
    else:
        new_row = (
            f'<{p}row r="{row}">' + "".join(cell(c, v) for c, v in sorted(columns.items())) + f"</{p}row>"
        )
        later = next((m for m in row_re.finditer(xml) if int(m.group(1)) > row), None)
        if opening.group(3) == "/":
            xml = (
                xml[: opening.start()]
                + f"<{p}sheetData{opening.group(2)}>{new_row}</{p}sheetData>"
                + xml[opening.end() :]
            )
        elif later is not None:
            xml = xml[: later.start()] + new_row + xml[later.start() :]
        else:
            closing = xml.index(f"</{p}sheetData>")
            xml = xml[:closing] + new_row + xml[closing:]

    def grow(match: re.Match[str]) -> str:
        first, _, last = match.group(2).partition(":")
        last = last or first
        end_column = max(column_index(last), *columns)
        end_row = max(int(re.sub(r"[A-Z]+", "", last) or 1), row)
        return f'{match.group(1)}"{first}:{column_letters(end_column)}{end_row}"'

    xml = re.sub(rf"(<{p}dimension\b[^>]*?\bref=)\"([A-Z]+\d+(?::[A-Z]+\d+)?)\"", grow, xml, count=1)
    replace_member(path, part, xml.encode("utf-8"))
    return row


# -- what a user does, once per workbook --------------------------------------------------------


@dataclass
class Step:
    """One CLI run on a copy of a workbook: its exit code, output and the file it left."""

    path: Path
    exit_code: int | None = None
    output: str = ""
    error: str = ""
    row: int | None = None
    #: A line the run must print with exit code 3 (a problem in the person's own data), or "".
    attention: str = ""

    @property
    def ok(self) -> bool:
        if self.attention:
            return self.exit_code == 3 and self.attention in self.output and not self.error
        return self.exit_code == 0 and not self.error

    def describe(self) -> str:
        return f"exit code {self.exit_code}\n{self.output}{self.error}"


@dataclass
class Scenario:
    """A folder made by ``crmkit init`` with a few deals, and one real workbook to sync into."""

    book: RealBook
    folder: Path
    runner: CliRunner = field(default_factory=CliRunner)
    #: What every sync of this workbook must report with exit code 3 (see :attr:`Step.attention`).
    attention: str = ""

    @cached_property
    def config(self) -> Path:
        project = self.folder / "crm"
        for args in (
            ["init", str(project)],
            [
                "--config",
                str(project / "crmkit.toml"),
                "accounts",
                "add",
                "name=Sao Mai Logistics",
                "domain=saomai.vn",
            ],
            [
                "--config",
                str(project / "crmkit.toml"),
                "deals",
                "add",
                "title=Cold-chain routing",
                "account=A-1",
                "amount=42000",
                "stage=proposal",
                "close_date=2026-12-15",
            ],
            [
                "--config",
                str(project / "crmkit.toml"),
                "deals",
                "add",
                "title=Fleet sensors",
                "amount=9000",
                "stage=negotiation",
            ],
        ):
            result = self.runner.invoke(main, args, catch_exceptions=False)
            assert result.exit_code == 0, result.output
        return project / "crmkit.toml"

    def crmkit(self, step: Step, *args: str) -> Step:
        try:
            result = self.runner.invoke(main, ["--config", str(self.config), *args])
        except Exception:
            step.error = traceback.format_exc()
            return step
        step.exit_code = result.exit_code
        step.output = result.output
        if result.exception is not None and not isinstance(result.exception, SystemExit):
            step.error = "".join(traceback.format_exception(result.exception))
        return step

    @property
    def workbook(self) -> Path:
        return self.folder / "crm" / self.book.name

    def snapshot(self, label: str) -> Path:
        """A copy of the synced workbook as it is now, for the checks (the next step goes on in place)."""
        copy = self.folder / f"{self.book.path.stem}--{label}{self.book.path.suffix}"
        shutil.copyfile(self.workbook, copy)
        return copy

    @cached_property
    def first_sync(self) -> Step:
        self.config  # noqa: B018 - the project first
        shutil.copyfile(self.book.path, self.workbook)
        step = self.crmkit(Step(self.workbook, attention=self.attention), "sync", str(self.workbook))
        step.path = self.snapshot("first")
        return step

    @cached_property
    def typed_sync(self) -> Step:
        first = self.first_sync
        if not first.ok:
            return Step(
                first.path, error=f"the first sync failed, so no row could be typed:\n{first.describe()}"
            )
        try:
            row = type_row(self.workbook, "Contacts", TYPED)
        except Exception:
            return Step(first.path, error=f"typing a row failed:\n{traceback.format_exc()}")
        step = self.crmkit(Step(self.workbook, row=row, attention=self.attention), "sync", str(self.workbook))
        step.path = self.snapshot("synced")
        return step

    @cached_property
    def report(self) -> Step:
        self.config  # noqa: B018
        path = self.folder / "report" / self.book.name
        path.parent.mkdir()
        shutil.copyfile(self.book.path, path)
        step = self.crmkit(Step(path), "report", "pipeline", "--xlsx", str(path))
        final = self.folder / f"{self.book.path.stem}--report{self.book.path.suffix}"
        shutil.copyfile(path, final)
        step.path = final
        return step

    def contacts(self) -> list[dict]:
        result = self.runner.invoke(main, ["--config", str(self.config), "contacts", "list", "--json"])
        assert result.exit_code == 0, result.output
        return json.loads(result.stdout)


@pytest.fixture(scope="session")
def real_books(tmp_path_factory: pytest.TempPathFactory) -> dict[str, RealBook]:
    folder = tmp_path_factory.mktemp("realbooks")
    return build_books(folder, libreoffice=SOFFICE is not None or REQUIRE_SERVERS)


@pytest.fixture(scope="session")
def scenarios(
    real_books: dict[str, RealBook], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Scenario]:
    root = tmp_path_factory.mktemp("scenarios")
    return {name: Scenario(book, root / book.path.stem) for name, book in real_books.items()}


@pytest.fixture
def scenario(request: pytest.FixtureRequest, scenarios: dict[str, Scenario]) -> Scenario:
    if request.param not in scenarios:
        assert request.param in LIBREOFFICE_BOOKS
        pytest.skip("LibreOffice (soffice) is not installed to make this workbook")
    return scenarios[request.param]


books = pytest.mark.parametrize("scenario", BOOK_NAMES, indirect=True)


def assert_kept(original: Path, result: Path, titles: frozenset[str]) -> None:
    problems = guarantee(original, result, titles)
    assert not problems, f"{original.name}: crmkit changed more than its own parts:\n  " + "\n  ".join(
        problems
    )


# -- the tests ----------------------------------------------------------------------------------


@books
def test_first_sync_changes_only_crmkits_parts(scenario: Scenario) -> None:
    step = scenario.first_sync
    assert step.ok, step.describe()
    assert_kept(scenario.book.path, step.path, SYNC_SHEETS)
    emails = {contact["email"] for contact in scenario.contacts()}
    assert {email for _, email in scenario.book.contacts} <= emails  # the user's own Contacts rows
    assert Package(step.path).sheet_part("Contacts") is not None


@books
def test_a_typed_row_syncs_and_the_rest_stays_as_it_was(scenario: Scenario) -> None:
    step = scenario.typed_sync
    assert step.ok, step.describe()
    contact = next((c for c in scenario.contacts() if c["email"] == TYPED["Email"]), None)
    assert contact is not None and contact["name"] == TYPED["Name"], scenario.contacts()
    cells = Package(step.path).cells("Contacts")
    headers = {text.strip().casefold(): column for column, text in cells[1].items()}
    assert step.row is not None
    row = cells.get(step.row, {})
    assert row.get(headers["email"]) == TYPED["Email"], f"row {step.row} is now {row}"
    assert row.get(headers["id"]) == contact["id"], f"row {step.row} got no ID {contact['id']}: {row}"
    assert_kept(scenario.book.path, step.path, SYNC_SHEETS)


@books
def test_a_report_into_the_workbook_changes_only_its_sheet(scenario: Scenario) -> None:
    step = scenario.report
    assert step.ok, step.describe()
    assert Package(step.path).sheet_part("Reports") is not None
    assert_kept(scenario.book.path, step.path, REPORT_SHEETS)


@needs_soffice
def test_libreoffice_opens_every_result(scenarios: dict[str, Scenario], tmp_path: Path) -> None:
    results: dict[Path, tuple[Scenario, str]] = {}
    for scenario in scenarios.values():
        results[scenario.typed_sync.path] = (scenario, "Contacts")
        results[scenario.report.path] = (scenario, "Reports")
    run = soffice_convert(
        list(results),
        tmp_path / "csv",
        "csv:Text - txt - csv (StarCalc):44,34,76,1,,0,false,true,false,false,false,-1",  # every sheet, UTF-8
        tmp_path / "lo-profile",
    )
    log = finish(run)
    problems = []
    for path, (scenario, sheet) in results.items():
        titles = [s.name for s in Package(path).sheets]
        missing = [t for t in titles if not (tmp_path / "csv" / f"{path.stem}-{t}.csv").is_file()]
        if missing:
            problems.append(f"{path.name}: LibreOffice wrote no CSV for {missing}")
            continue
        csv = tmp_path / "csv" / f"{path.stem}-{sheet}.csv"
        text = csv.read_text(encoding="utf-8") if csv.is_file() else ""
        if not text.strip():
            problems.append(f"{path.name}: the {sheet} sheet is empty in LibreOffice")
        elif sheet == "Contacts":
            expected = [TYPED["Name"], *(name for name, _ in scenario.book.contacts)]
            absent = [name for name in expected if name not in text]
            if absent:
                problems.append(
                    f"{path.name}: {absent} not on the Contacts sheet LibreOffice reads: {text!r}"
                )
        elif "proposal" not in text:
            problems.append(f"{path.name}: the pipeline report is not on its sheet in LibreOffice: {text!r}")
    assert not problems, "\n".join(problems) + "\n" + log
