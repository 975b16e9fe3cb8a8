"""An .xlsx (or .xlsm) file as an Open Packaging zip: its parts, their relationships, and a writer
that copies every part crmkit did not change byte for byte.

A :class:`Package` reads parts lazily from the zip. Changes (:meth:`Package.put`,
:meth:`Package.add`, :meth:`Package.remove`) are kept in memory until
:meth:`Package.write` writes a new zip: every member nobody changed keeps its
compressed bytes, its compression, its flags and its place in the order;
changed members are compressed again in their old place; new members go at the
end. Nothing of the source file is touched.

Both conformance classes are understood: Transitional (Excel's usual
``schemas.openxmlformats.org`` namespaces) and Strict (``purl.oclc.org/ooxml``).
:attr:`Package.ns` names the namespaces of the file at hand, so callers write
back in the namespaces the file already uses.
"""

from __future__ import annotations

import io
import posixpath
import re
import struct
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO
from urllib.parse import unquote
from xml.etree import ElementTree as ET
from xml.sax.saxutils import quoteattr

from crmkit.errors import CrmkitError

__all__ = [
    "STRICT",
    "TRANSITIONAL",
    "Namespaces",
    "Package",
    "Relationship",
    "WorkbookError",
    "rels_name",
]

PKG_RELS_NS = "http://schemas.openxmlformats.org/package/2006/relationships"
CT_NS = "http://schemas.openxmlformats.org/package/2006/content-types"
_DEFLATE_LEVEL = 6  # zlib's default, like Excel's and openpyxl's


class WorkbookError(CrmkitError):
    """A workbook crmkit cannot read or write safely; nothing was written."""


@dataclass(frozen=True)
class Namespaces:
    """The namespaces of one conformance class of SpreadsheetML."""

    main: str  # the spreadsheetml main namespace
    rels: str  # officeDocument relationships: the r: namespace, and the base of relationship types
    extended: str  # docProps/app.xml
    strict: bool

    def rel_type(self, kind: str) -> str:
        """The relationship type ``kind`` ("worksheet", "styles" ...) in this conformance class."""
        return f"{self.rels}/{kind}"

    def is_type(self, value: str, kind: str) -> bool:
        """Whether relationship type ``value`` is ``kind``, in either class (files mix them)."""
        return value in (f"{TRANSITIONAL.rels}/{kind}", f"{STRICT.rels}/{kind}")


TRANSITIONAL = Namespaces(
    main="http://schemas.openxmlformats.org/spreadsheetml/2006/main",
    rels="http://schemas.openxmlformats.org/officeDocument/2006/relationships",
    extended="http://schemas.openxmlformats.org/officeDocument/2006/extended-properties",
    strict=False,
)
STRICT = Namespaces(
    main="http://purl.oclc.org/ooxml/spreadsheetml/main",
    rels="http://purl.oclc.org/ooxml/officeDocument/relationships",
    extended="http://purl.oclc.org/ooxml/officeDocument/extendedProperties",
    strict=True,
)

#: Transitional namespace -> its Strict twin, for parts crmkit builds and puts into a Strict file.
TO_STRICT = {
    TRANSITIONAL.main: STRICT.main,
    TRANSITIONAL.rels: STRICT.rels,
    TRANSITIONAL.extended: STRICT.extended,
    "http://schemas.openxmlformats.org/drawingml/2006/main": "http://purl.oclc.org/ooxml/drawingml/main",
    "http://schemas.openxmlformats.org/drawingml/2006/chart": "http://purl.oclc.org/ooxml/drawingml/chart",
    "http://schemas.openxmlformats.org/drawingml/2006/spreadsheetDrawing": (
        "http://purl.oclc.org/ooxml/drawingml/spreadsheetDrawing"
    ),
}


def rels_name(part: str) -> str:
    """The relationships part of ``part`` ("" for the package's own)."""
    folder, name = posixpath.split(part)
    return posixpath.join(folder, "_rels", f"{name}.rels")


def resolve(source: str, target: str) -> str:
    """The member a relationship of part ``source`` to ``target`` points at."""
    target = unquote(target.split("#", 1)[0])
    if target.startswith("/"):
        return posixpath.normpath(target.lstrip("/"))
    return posixpath.normpath(posixpath.join(posixpath.dirname(source), target)).lstrip("/")


def relative(source: str, part: str) -> str:
    """A relationship target from part ``source`` to ``part``."""
    return posixpath.relpath(part, posixpath.dirname(source) or ".")


def decode(data: bytes, name: str) -> str:
    """A part's text; UTF-8 with or without its byte-order mark, or UTF-16."""
    try:
        if data.startswith(b"\xef\xbb\xbf"):
            return data[3:].decode("utf-8")
        if data.startswith((b"\xff\xfe", b"\xfe\xff")):
            return data.decode("utf-16")
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise WorkbookError(f"{name} is not UTF-8 or UTF-16 XML ({exc.reason})") from None


def encode(text: str, like: bytes = b"") -> bytes:
    """``text`` encoded the way the part ``like`` was: UTF-8 (BOM kept if it had one) or UTF-16."""
    if like.startswith((b"\xff\xfe", b"\xfe\xff")):
        return text.encode("utf-16")
    return (b"\xef\xbb\xbf" if like.startswith(b"\xef\xbb\xbf") else b"") + text.encode("utf-8")


@dataclass
class Relationship:
    id: str
    type: str
    target: str  # the member it points at (resolved), or the raw target when external
    external: bool


def parse_relationships(data: bytes, part: str) -> list[Relationship]:
    """The relationships in relationships part ``data`` of ``part``, internal targets resolved."""
    out = []
    for el in ET.fromstring(data).iter(f"{{{PKG_RELS_NS}}}Relationship"):
        target = el.get("Target", "")
        external = el.get("TargetMode") == "External"
        out.append(
            Relationship(
                el.get("Id", ""), el.get("Type", ""), target if external else resolve(part, target), external
            )
        )
    return out


@dataclass
class _Member:
    """One zip member as it will be written, its data already compressed."""

    info: zipfile.ZipInfo
    method: int
    crc: int
    size: int
    payload: bytes
    flags: int


class Package:
    """An .xlsx zip, read lazily; see the module docstring. Use it as a context manager."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        try:
            self._zip = zipfile.ZipFile(self.path)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError) as exc:
            raise WorkbookError(f"{self.path} is not an .xlsx workbook (a zip file): {exc}") from None
        except IsADirectoryError:
            raise WorkbookError(f"{self.path} is a folder, not a workbook") from None
        except OSError as exc:
            raise WorkbookError(f"cannot read {self.path}: {exc.strerror}") from None
        self.infos = self._zip.infolist()
        names = [info.filename for info in self.infos]
        if len(set(names)) != len(names):
            raise WorkbookError(f"{self.path} holds two zip members of the same name")
        for info in self.infos:
            if info.flag_bits & 0x1:
                raise WorkbookError(f"{self.path} is encrypted (password-protected)")
        self.comment = self._zip.comment
        self._folded = {name.casefold(): name for name in names}
        self._changed: dict[str, bytes] = {}
        self._added: dict[str, bytes] = {}
        self._removed: set[str] = set()
        self._rels_cache: dict[str, list[Relationship]] = {}
        self.workbook = self._find_workbook()
        root_ns = _root_namespace(self.read(self.workbook), self.workbook)
        if root_ns == TRANSITIONAL.main:
            self.ns = TRANSITIONAL
        elif root_ns == STRICT.main:
            self.ns = STRICT
        else:
            raise WorkbookError(f"{self.path}: {self.workbook} is not a SpreadsheetML workbook ({root_ns})")

    def __enter__(self) -> Package:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._zip.close()

    # -- reading --

    def _find_workbook(self) -> str:
        for rel in self.relationships(""):
            if rel.type.endswith("/officeDocument") and not rel.external:
                found = self.member(rel.target)
                if found is None:
                    raise WorkbookError(f"{self.path}: its workbook part {rel.target} is missing")
                return found
        # A minimal package may lack _rels/.rels; Excel then looks for xl/workbook.xml.
        fallback = self.member("xl/workbook.xml")
        if fallback is None:
            raise WorkbookError(f"{self.path} has no workbook part")
        return fallback

    def member(self, name: str) -> str | None:
        """The member called ``name`` (part names are case-insensitive), or None."""
        if name in self._added:
            return name
        found = self._folded.get(name.casefold())
        if found is None:
            folded = {n.casefold(): n for n in self._added}
            return folded.get(name.casefold())
        return None if found in self._removed else found

    def names(self) -> list[str]:
        return [i.filename for i in self.infos if i.filename not in self._removed] + list(self._added)

    def read(self, name: str) -> bytes:
        if name in self._changed:
            return self._changed[name]
        if name in self._added:
            return self._added[name]
        try:
            return self._zip.read(name)
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError) as exc:
            raise WorkbookError(f"{self.path}: the part {name} is damaged ({exc})") from None

    def text(self, name: str) -> str:
        return decode(self.read(name), name)

    def _head(self, name: str) -> bytes:
        """The first bytes of a member (its byte-order mark, if any)."""
        if name in self._added:
            return self._added[name][:3]
        if name in self._changed:
            return self._changed[name][:3]
        try:
            with self._zip.open(name) as fh:
                return fh.read(3)
        except KeyError:
            return b""

    def relationships(self, part: str) -> list[Relationship]:
        """The relationships of ``part`` ("" for the package's own), targets resolved."""
        rels = self.member(rels_name(part))
        if rels is None:
            return []
        cached = self._rels_cache.get(rels)
        if cached is not None:
            return cached
        try:
            out = parse_relationships(self.read(rels), part)
        except ET.ParseError as exc:
            raise WorkbookError(f"{self.path}: {rels} cannot be read ({exc})") from None
        self._rels_cache[rels] = out
        return out

    def related(self, part: str, kind: str) -> list[Relationship]:
        """``part``'s internal relationships of type ``kind`` (in either conformance class)."""
        return [r for r in self.relationships(part) if not r.external and self.ns.is_type(r.type, kind)]

    # -- changing --

    def put(self, name: str, data: bytes | str) -> None:
        """New content for an existing or added member; text is encoded as the old part was."""
        if isinstance(data, str):
            data = encode(data, self._head(name))
        if name in self._added:
            self._added[name] = data
        else:
            self._changed[name] = data
        self._rels_cache.pop(name, None)

    def add(self, name: str, data: bytes | str) -> None:
        """A new member, written after the existing ones."""
        if self.member(name) is not None:
            raise ValueError(f"{name} exists already")
        self._added[name] = data.encode("utf-8") if isinstance(data, str) else data

    def remove(self, name: str) -> None:
        self._added.pop(name, None)
        self._changed.pop(name, None)
        if name in self._folded.values():
            self._removed.add(name)
        self._rels_cache.pop(name, None)

    def fresh_name(self, like: str) -> str:
        """A member name in the pattern of ``like`` (``xl/worksheets/sheet1.xml``) nobody has."""
        m = re.match(r"^(.*?)(\d*)(\.[^./]+)$", like)
        stem, suffix = (m[1], m[3]) if m else (like, "")
        n = 1
        while any(
            self.member(name) is not None or name.casefold() in self._folded
            for name in (f"{stem}{n}{suffix}", rels_name(f"{stem}{n}{suffix}"))
        ):
            n += 1  # a stray relationships part of a deleted part counts as taken too
        return f"{stem}{n}{suffix}"

    @property
    def changed(self) -> bool:
        return bool(self._changed or self._added or self._removed)

    # -- writing --

    def write(self, target: Path) -> None:
        """Write the package with its changes to ``target``; a partly written target is removed."""
        try:
            with open(self.path, "rb") as fh, open(target, "wb") as out:
                _write_zip(out, self._members(fh), self.comment)
        except BaseException:
            Path(target).unlink(missing_ok=True)
            raise

    def _members(self, fh: IO[bytes]) -> Iterable[_Member]:
        for info in self.infos:
            name = info.filename
            if name in self._removed:
                continue
            if name in self._changed:
                yield _packed(info, self._changed[name])
            else:
                payload = _raw_payload(fh, info, self.path)
                flags = info.flag_bits & ~0x8  # sizes go in the local header: no data descriptor
                yield _Member(info, info.compress_type, info.CRC, info.file_size, payload, flags)
        now = datetime.now().timetuple()[:6]
        for name, data in self._added.items():
            info = zipfile.ZipInfo(name, now)
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o600 << 16
            yield _packed(info, data)


def _root_namespace(data: bytes, name: str) -> str:
    try:
        for _event, el in ET.iterparse(io.BytesIO(data), events=("start",)):
            tag = el.tag
            return tag[1:].split("}", 1)[0] if tag.startswith("{") else ""
    except ET.ParseError as exc:
        raise WorkbookError(f"{name} cannot be read ({exc})") from None
    return ""


def _raw_payload(fh: IO[bytes], info: zipfile.ZipInfo, path: Path) -> bytes:
    fh.seek(info.header_offset)
    head = fh.read(30)
    if len(head) != 30 or head[:4] != b"PK\x03\x04":
        raise WorkbookError(f"{path}: the zip entry of {info.filename} is damaged")
    name_length, extra_length = struct.unpack("<HH", head[26:30])
    fh.seek(info.header_offset + 30 + name_length + extra_length)
    payload = fh.read(info.compress_size)
    if len(payload) != info.compress_size:
        raise WorkbookError(f"{path}: {info.filename} is cut short")
    return payload


def _packed(info: zipfile.ZipInfo, data: bytes) -> _Member:
    if info.compress_type == zipfile.ZIP_STORED:
        method, payload = zipfile.ZIP_STORED, data
    else:
        method = zipfile.ZIP_DEFLATED
        packer = zlib.compressobj(_DEFLATE_LEVEL, zlib.DEFLATED, -15)
        payload = packer.compress(data) + packer.flush()
    return _Member(info, method, zlib.crc32(data), len(data), payload, info.flag_bits & 0x800)


def _dos_time(info: zipfile.ZipInfo) -> tuple[int, int]:
    year, month, day, hour, minute, second = info.date_time
    return hour << 11 | minute << 5 | second // 2, max(year - 1980, 0) << 9 | month << 5 | day


def _write_zip(out: IO[bytes], members: Iterable[_Member], comment: bytes) -> None:
    """The zip, ZIP64 records added only where a size or an offset needs them."""
    central: list[bytes] = []
    for m in members:
        info = m.info
        name = info.orig_filename.encode("utf-8" if m.flags & 0x800 else "cp437")
        dos_time, dos_date = _dos_time(info)
        offset = out.tell()
        big = max(m.size, len(m.payload)) >= 0xFFFFFFFF
        version = 45 if big or offset >= 0xFFFFFFFF else max(20, info.extract_version)
        local_extra = struct.pack("<HHQQ", 1, 16, m.size, len(m.payload)) if big else b""
        out.write(
            struct.pack(
                "<4s5H3L2H",
                b"PK\x03\x04",
                version,
                m.flags,
                m.method,
                dos_time,
                dos_date,
                m.crc,
                0xFFFFFFFF if big else len(m.payload),
                0xFFFFFFFF if big else m.size,
                len(name),
                len(local_extra),
            )
        )
        out.write(name)
        out.write(local_extra)
        out.write(m.payload)
        zip64: list[int] = []
        if big:
            zip64 += [m.size, len(m.payload)]
        if offset >= 0xFFFFFFFF:
            zip64.append(offset)
        extra = struct.pack(f"<HH{len(zip64)}Q", 1, 8 * len(zip64), *zip64) if zip64 else b""
        member_comment = info.comment or b""
        central.append(
            struct.pack(
                "<4s6H3L5H2L",
                b"PK\x01\x02",
                info.create_system << 8 | info.create_version,
                version,
                m.flags,
                m.method,
                dos_time,
                dos_date,
                m.crc,
                0xFFFFFFFF if big else len(m.payload),
                0xFFFFFFFF if big else m.size,
                len(name),
                len(extra),
                len(member_comment),
                0,
                info.internal_attr,
                info.external_attr,
                min(offset, 0xFFFFFFFF),
            )
            + name
            + extra
            + member_comment
        )
    start = out.tell()
    for entry in central:
        out.write(entry)
    size = out.tell() - start
    count = len(central)
    if start >= 0xFFFFFFFF or count >= 0xFFFF:
        end64 = out.tell()
        out.write(struct.pack("<4sQ2H2L4Q", b"PK\x06\x06", 44, 45, 45, 0, 0, count, count, size, start))
        out.write(struct.pack("<4sLQL", b"PK\x06\x07", 0, end64, 1))
    out.write(
        struct.pack(
            "<4s4H2LH",
            b"PK\x05\x06",
            0,
            0,
            min(count, 0xFFFF),
            min(count, 0xFFFF),
            size,
            min(start, 0xFFFFFFFF),
            len(comment),
        )
    )
    out.write(comment)


# -- small XML text helpers shared by the writers ------------------------------------------------

_ATTR_RE = re.compile(r"([\w:.-]+)\s*=\s*(?:\"([^\"]*)\"|'([^']*)')")


def attrs(tag: str) -> dict[str, str]:
    """The attributes of an opening tag's text (entities left as written)."""
    return {m[1]: m[2] if m[2] is not None else m[3] for m in _ATTR_RE.finditer(tag)}


def set_attr(tag: str, name: str, value: str) -> str:
    """``tag`` (an opening tag's text) with attribute ``name`` set to ``value`` (added if missing)."""
    pattern = re.compile(rf"(\s{re.escape(name)}\s*=\s*)(?:\"[^\"]*\"|'[^']*')")
    if pattern.search(tag):
        return pattern.sub(lambda m: f'{m[1]}"{value}"', tag, count=1)
    end = len(tag) - (2 if tag.endswith("/>") else 1)
    return f'{tag[:end].rstrip()} {name}="{value}"{tag[end:]}'


def root_prefix(text: str, local: str) -> str:
    """The prefix (``"x:"`` or ``""``) of the root element ``local`` in ``text``."""
    m = re.search(rf"<(?:([\w.-]+):)?{local}[\s>/]", text)
    if m is None:
        raise WorkbookError(f"expected a <{local}> element")
    return f"{m[1]}:" if m[1] else ""


def insert_before_close(text: str, tag: str, content: str) -> str:
    """``text`` with ``content`` added at the end of its root element ``tag`` (self-closing or not)."""
    q = re.escape(tag)
    close = list(re.finditer(rf"</{q}\s*>", text))
    if close:
        at = close[-1].start()
        return text[:at] + content + text[at:]
    empty = re.search(rf"<{q}\b([^>]*?)/>", text)
    if empty is None:
        raise WorkbookError(f"expected a <{tag}> element")
    return text[: empty.start()] + f"<{tag}{empty[1]}>{content}</{tag}>" + text[empty.end() :]


def relationships_xml(rels: list[tuple[str, str, str, bool]]) -> str:
    """A relationships part: (Id, Type, Target as written, external) each."""
    items = "".join(
        f"<Relationship Id={quoteattr(rid)} Type={quoteattr(kind)} Target={quoteattr(target)}"
        + (' TargetMode="External"' if external else "")
        + "/>"
        for rid, kind, target, external in rels
    )
    return (
        '<?xml version="1.0" encoding="UTF-8" standalone="yes"?>\n'
        f'<Relationships xmlns="{PKG_RELS_NS}">{items}</Relationships>'
    )


def fresh_id(taken: Iterable[str]) -> str:
    used = set(taken)
    n = 1
    while f"rId{n}" in used:
        n += 1
    return f"rId{n}"
