"""styles.xml: what a workbook's cell formats show, and appending the few formats crmkit needs.

Existing entries of styles.xml never change and keep their indexes, so every
cell crmkit does not write looks exactly as before. crmkit only appends: a
number format, a font, a fill, a cell format (``xf``), reusing an identical
entry the workbook already has, so writing again adds nothing more.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape, quoteattr

from crmkit.xlsx.package import Package, WorkbookError, insert_before_close, root_prefix, set_attr

__all__ = ["Styles", "merge_styles"]

# Built-in number formats that show a date (14-17) or a date and a time (22).
_BUILTIN_DATE_FORMATS = {14: False, 15: False, 16: False, 17: False, 22: True}
_BUILTIN_CODES = {0: "General", 1: "0", 2: "0.00", 3: "#,##0", 4: "#,##0.00", 9: "0%", 10: "0.00%", 49: "@"}
_QUOTED_RE = re.compile(r'"[^"]*"|\\.|[_*].')
_BRACKET_RE = re.compile(r"\[([^\]]*)\]")
_ORDER = (
    "numFmts",
    "fonts",
    "fills",
    "borders",
    "cellStyleXfs",
    "cellXfs",
    "cellStyles",
    "dxfs",
    "tableStyles",
    "colors",
    "extLst",
)


def shows_whole_date(code: str) -> bool:
    """Whether number format ``code`` shows a day, a month and a year (not "mmm yy", "dddd")."""
    section = _BRACKET_RE.sub("", _QUOTED_RE.sub("", code)).split(";")[0].lower()
    tokens = re.findall(r"y+|m+|d+|h+|s+", section)
    days = any(t.startswith("d") and len(t) <= 2 for t in tokens)
    years = any(t.startswith("y") for t in tokens)
    # an "m" right after an hour or right before seconds is minutes, not the month
    months = any(
        t.startswith("m")
        and not (i > 0 and tokens[i - 1].startswith("h"))
        and not (i + 1 < len(tokens) and tokens[i + 1].startswith("s"))
        for i, t in enumerate(tokens)
    )
    return days and months and years


def format_shows(code: str) -> tuple[bool, bool]:
    """Whether a number format code shows (a date, a time of day)."""
    code = _QUOTED_RE.sub("", code)
    elapsed = any(
        part.strip().lower() in ("h", "hh", "m", "mm", "s", "ss") for part in _BRACKET_RE.findall(code)
    )
    section = _BRACKET_RE.sub("", code).split(";")[0].lower()
    has_date = "d" in section or "y" in section
    has_time = "h" in section or "s" in section
    return has_date and not elapsed, has_time


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _canonical(el: ET.Element) -> tuple[Any, ...]:
    """An element's content, namespace left out (a Strict and a Transitional font are alike)."""
    return (
        _local(el.tag),
        tuple(sorted(el.attrib.items())),
        (el.text or "").strip(),
        tuple(_canonical(child) for child in el),
    )


def _look(xf: ET.Element) -> tuple[Any, ...]:
    """Everything a cell format shows but its number format."""
    kept = {k: v for k, v in xf.attrib.items() if k not in ("numFmtId", "applyNumberFormat", "quotePrefix")}
    return (tuple(sorted(kept.items())), tuple(_canonical(child) for child in xf))


def _serialize(el: ET.Element, prefix: str) -> str:
    """``el`` as XML text in the styles part's main namespace (``prefix`` its prefix)."""
    tag = prefix + _local(el.tag)
    attributes = "".join(
        f" {name}={quoteattr(value)}" for name, value in el.attrib.items() if not name.startswith("{")
    )
    inner = escape(el.text or "") + "".join(_serialize(child, prefix) for child in el)
    return f"<{tag}{attributes}>{inner}</{tag}>" if inner else f"<{tag}{attributes}/>"


@dataclass
class _Collection:
    """One list of styles.xml (fonts, fills, ...): the workbook's entries, and the ones to append."""

    existing: list[ET.Element]
    appended: list[ET.Element] = field(default_factory=list)
    _keys: dict[tuple[Any, ...], int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for i, el in enumerate(self.existing):
            self._keys.setdefault(_canonical(el), i)

    def index_of(self, el: ET.Element) -> int:
        """The index of an entry just like ``el``, appending it when there is none."""
        key = _canonical(el)
        found = self._keys.get(key)
        if found is None:
            self.appended.append(el)
            found = self._keys[key] = len(self.existing) + len(self.appended) - 1
        return found

    def __getitem__(self, index: int) -> ET.Element:
        return (self.existing + self.appended)[index]

    def __len__(self) -> int:
        return len(self.existing) + len(self.appended)


class Styles:
    """A workbook's styles part, read once; formats and cell formats to append, written by :meth:`save`."""

    def __init__(self, package: Package) -> None:
        styles = package.related(package.workbook, "styles")
        self._load(package, package.member(styles[0].target) if styles else None)

    def reload(self, part: str) -> None:
        """Read ``part``, just added to the package, as the workbook's styles."""
        self._load(self.package, part)

    def _load(self, package: Package, part: str | None) -> None:
        self.package = package
        self.main = package.ns.main
        self.part = part
        self.root: ET.Element | None = None
        if self.part is not None:
            try:
                self.root = ET.fromstring(package.read(self.part))
            except ET.ParseError as exc:
                raise WorkbookError(f"{package.path}: {self.part} cannot be read ({exc})") from None
            if _local(self.root.tag) != "styleSheet":
                raise WorkbookError(f"{package.path}: {self.part} is not a SpreadsheetML style sheet")
        self.lists = {tag: _Collection(self._items(tag)) for tag in ("fonts", "fills", "borders", "cellXfs")}
        self.codes: dict[int, str] = {
            int(el.get("numFmtId") or 0): el.get("formatCode") or "" for el in self._items("numFmts")
        }
        self.new_codes: dict[int, str] = {}
        self.has_style_xfs = bool(self._items("cellStyleXfs"))
        self._quoted: dict[int, int] | None = None

    def _items(self, tag: str) -> list[ET.Element]:
        if self.root is None:
            return []
        el = self.root.find(f"{{{self.main}}}{tag}")
        return list(el) if el is not None else []

    # -- what a cell format shows --

    def _xf(self, style: str | None) -> ET.Element | None:
        index = int(style or "0")
        xfs = self.lists["cellXfs"]
        return xfs[index] if index < len(xfs) else None

    def number_format(self, style: str | None) -> int:
        xf = self._xf(style)
        return int(xf.get("numFmtId") or 0) if xf is not None else 0

    def code(self, number_format: int) -> str:
        return (
            self.codes.get(number_format)
            or self.new_codes.get(number_format)
            or (_BUILTIN_CODES.get(number_format, ""))
        )

    def shows_date(self, style: str | None, with_time: bool) -> bool:
        number_format = self.number_format(style)
        code = self.codes.get(number_format) or self.new_codes.get(number_format)
        if code is not None:
            has_date, has_time = format_shows(code)
        elif number_format in _BUILTIN_DATE_FORMATS:
            has_date, has_time = True, _BUILTIN_DATE_FORMATS[number_format]
        else:
            return False
        return has_date and (has_time or not with_time)

    def as_date(self, style: str | None, with_time: bool) -> str | None:
        """An existing cell format that looks like ``style`` but shows dates (and times), or None."""
        xf = self._xf(style)
        if xf is None:
            return None
        look = _look(xf)
        for index, other in enumerate(self.lists["cellXfs"].existing):
            if _look(other) == look and self.shows_date(str(index), with_time):
                number = int(other.get("numFmtId") or 0)
                if number in _BUILTIN_DATE_FORMATS or shows_whole_date(self.code(number)):
                    return str(index)
        return None

    def quote_prefixed(self, style: str | None) -> str:
        """``style`` with quotePrefix set: text that looks like a formula shows as typed."""
        xf = self._xf(style)
        if xf is None or xf.get("quotePrefix") in ("1", "true"):
            return style or "0"
        copy = ET.Element(xf.tag, dict(xf.attrib))
        copy.extend(list(xf))
        copy.set("quotePrefix", "1")
        return str(self.lists["cellXfs"].index_of(copy))

    def with_format(self, style: str | None, code: str) -> str:
        """A cell format that looks like ``style`` but shows numbers as ``code`` (appended if new)."""
        number = self.format_id(code)
        xf = self._xf(style)
        if xf is not None and int(xf.get("numFmtId") or 0) == number:
            return style or "0"
        if xf is None:
            xf = ET.Element(
                f"{{{self.main}}}xf", {"numFmtId": "0", "fontId": "0", "fillId": "0", "borderId": "0"}
            )
            if self.has_style_xfs:
                xf.set("xfId", "0")
        copy = ET.Element(xf.tag, dict(xf.attrib))
        copy.extend(list(xf))
        copy.set("numFmtId", str(number))
        copy.set("applyNumberFormat", "1")
        return str(self.lists["cellXfs"].index_of(copy))

    def format_id(self, code: str) -> int:
        """The id of number format ``code``: built-in, the workbook's own, or appended."""
        for number, builtin in _BUILTIN_CODES.items():
            if builtin == code:
                return number
        for known, other in (*self.codes.items(), *self.new_codes.items()):
            if other == code:
                return known
        fresh = max([163, *self.codes, *self.new_codes]) + 1
        self.new_codes[fresh] = code
        return fresh

    # -- merging another workbook's styles (a sheet built by openpyxl, grafted in) --

    def adopt(self, scratch: bytes, used: list[int]) -> dict[int, int]:
        """Map style indexes ``used`` of a scratch styles part to (appended) styles of this workbook."""
        mine = ET.fromstring(scratch)
        main = mine.tag[1:].split("}", 1)[0]

        def items(tag: str) -> list[ET.Element]:
            el = mine.find(f"{{{main}}}{tag}")
            return list(el) if el is not None else []

        formats = {int(el.get("numFmtId") or 0): el.get("formatCode") or "" for el in items("numFmts")}
        theirs = {tag: items(tag) for tag in ("fonts", "fills", "borders", "cellXfs")}
        mapping: dict[int, int] = {}
        for index in used:
            xf = theirs["cellXfs"][index]
            copy = ET.Element(f"{{{self.main}}}xf", dict(xf.attrib))
            copy.extend(list(xf))
            for attr, tag in (("fontId", "fonts"), ("fillId", "fills"), ("borderId", "borders")):
                if attr in copy.attrib:
                    copy.set(attr, str(self.lists[tag].index_of(theirs[tag][int(copy.get(attr) or 0)])))
            number = int(copy.get("numFmtId") or 0)
            if number >= 164 and number in formats:
                copy.set("numFmtId", str(self.format_id(formats[number])))
            if "xfId" in copy.attrib and not self.has_style_xfs:
                del copy.attrib["xfId"]
            mapping[index] = self.lists["cellXfs"].index_of(copy)
        return mapping

    # -- writing --

    @property
    def changed(self) -> bool:
        return bool(self.new_codes) or any(c.appended for c in self.lists.values())

    def save(self) -> None:
        """Append what was added to the styles part (made when the workbook has none)."""
        if not self.changed:
            return
        if self.part is None:
            raise WorkbookError(f"{self.package.path} has no styles part to add cell formats to")
        text = self.package.text(self.part)
        prefix = root_prefix(text, "styleSheet")
        if self.new_codes:
            content = "".join(
                f'<{prefix}numFmt numFmtId="{number}" formatCode={quoteattr(code)}/>'
                for number, code in self.new_codes.items()
            )
            text = _append_to_list(text, prefix, "numFmts", content, len(self.codes) + len(self.new_codes))
            self.codes.update(self.new_codes)
            self.new_codes = {}
        for tag in ("fonts", "fills", "borders", "cellXfs"):
            collection = self.lists[tag]
            if collection.appended:
                content = "".join(_serialize(el, prefix) for el in collection.appended)
                text = _append_to_list(text, prefix, tag, content, len(collection))
                self.lists[tag] = _Collection(collection.existing + collection.appended)
        self.package.put(self.part, text)


def _append_to_list(text: str, prefix: str, tag: str, content: str, count: int) -> str:
    """styles.xml ``text`` with ``content`` appended to its list ``tag``, made when missing."""
    q = re.escape(prefix)
    found = re.search(rf"<{q}{tag}\b([^>]*?)(/?)>", text)
    if found is not None:
        opening = set_attr(f"<{prefix}{tag}{found[1]}>", "count", str(count))
        if found[2]:  # <fonts/>
            return text[: found.start()] + f"{opening}{content}</{prefix}{tag}>" + text[found.end() :]
        close = re.compile(rf"</{q}{tag}\s*>").search(text, found.end())
        if close is None:
            raise WorkbookError(f"the workbook's styles part has an unclosed <{tag}>")
        return (
            text[: found.start()]
            + opening
            + text[found.end() : close.start()]
            + content
            + text[close.start() :]
        )
    element = f'<{prefix}{tag} count="{count}">{content}</{prefix}{tag}>'
    for later in _ORDER[_ORDER.index(tag) + 1 :]:
        after = re.search(rf"<{q}{later}\b", text)
        if after is not None:
            return text[: after.start()] + element + text[after.start() :]
    return insert_before_close(text, f"{prefix}styleSheet", element)


def merge_styles(package: Package, scratch: bytes, used: list[int]) -> dict[int, int]:
    """Append what scratch styles ``used`` need to ``package``'s styles; the index map."""
    styles = Styles(package)
    mapping = styles.adopt(scratch, used)
    styles.save()
    return mapping
