"""Text from mail bodies: HTML turned into readable text, and a reply without its quoted history.

Pure functions, standard library only.
"""

from __future__ import annotations

import re
from html import unescape

__all__ = ["clean_text", "html_to_text", "looks_binary", "strip_quoted"]

# Text from mail is shown and stored: control characters other than tab and newline
# become U+FFFD (a visible mark, never an escape sequence for a terminal or a sheet),
# page breaks become line breaks, NULs go.
_CLEAN: dict[int, str | None] = {
    c: "\ufffd" for c in [*range(0x00, 0x09), *range(0x0E, 0x20), *range(0x7F, 0xA0)]
}
_CLEAN.update({0x00: None, 0x0B: "\n", 0x0C: "\n", 0x0D: "\n", 0x2028: "\n", 0x2029: "\n"})


def clean_text(text: str) -> str:
    """Mail text fit to display and store: CRLF and CR as LF, other control characters replaced, NULs dropped.

    The message itself is kept as it came (the archive's .eml); only what crmkit shows is cleaned.
    """
    return text.replace("\r\n", "\n").translate(_CLEAN)


#: How files that are often mislabelled text/plain begin: PNG, JPEG, GIF, PDF, ZIP (docx, xlsx), gzip.
_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"%PDF-", b"PK\x03\x04", b"\x1f\x8b")
_NOT_CONTROL = bytes([*range(0x09, 0x0E), *range(0x20, 0x100)])


def looks_binary(data: bytes) -> bool:
    """True for bytes that are not text whatever their label says (a PNG sent as text/plain).

    Random bytes are about 10% control characters; text has next to none (a stray NUL or
    form feed is text with a flaw, cleaned by :func:`clean_text`).
    """
    if data.startswith(_MAGIC):
        return True
    sample = data[:8192]
    controls = len(sample.translate(None, _NOT_CONTROL))  # what is left are the control bytes
    return controls > max(16, len(sample) // 30)


_BLOCKS = frozenset(
    {"address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "fieldset", "figcaption",
     "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
     "ol", "p", "pre", "section", "table", "tr", "ul"}
)  # fmt: skip
_SKIPPED = frozenset({"script", "style", "head", "title", "template"})
# A tag: bounded by the next "<" or ">", so a scan never runs past where the next one starts.
_TAG = re.compile(r"<(/?)([a-zA-Z][a-zA-Z0-9]*)\b[^<>]*>")
_CLOSERS = {name: re.compile(rf"</{name}\s*>", re.I) for name in _SKIPPED}


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML body: blocks on their own lines, scripts and styles dropped.

    A single forward scan, linear in the input: mail is hostile, and the standard
    library's HTMLParser is quadratic on some broken HTML (CVE-2025-6069).
    """
    parts: list[str] = []
    pos, end, pre = 0, len(html), 0
    while pos < end:
        lt = html.find("<", pos)
        if lt < 0:
            lt = end
        if lt > pos:
            text = unescape(html[pos:lt])
            parts.append(text if pre else re.sub(r"\s+", " ", text))
        if lt >= end:
            break
        if html.startswith("<!--", lt):
            close = html.find("-->", lt + 4)
            pos = end if close < 0 else close + 3
            continue
        tag = _TAG.match(html, lt)
        if tag is None:
            if html.startswith(("<!", "<?"), lt):  # a doctype or processing instruction
                close = html.find(">", lt)
                pos = end if close < 0 else close + 1
            else:
                parts.append("<")  # a lone "<" is text
                pos = lt + 1
            continue
        closing, name = tag.group(1) == "/", tag.group(2).lower()
        pos = tag.end()
        if name in _SKIPPED and not closing:
            close_tag = _CLOSERS[name].search(html, pos)
            pos = end if close_tag is None else close_tag.end()
        elif name == "br":
            parts.append("\n")
        elif name in _BLOCKS:
            parts.append("\n")
            if name == "li" and not closing:
                parts.append("- ")
            if name == "pre":
                pre = max(0, pre + (-1 if closing else 1))
        elif name in ("td", "th") and not closing:
            parts.append("\t")
    lines = [line.strip() for line in "".join(parts).replace("\xa0", " ").splitlines()]
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# Where the quoted history of a reply begins, in the clients support inboxes see most.
_ATTRIBUTION = re.compile(
    r"""^(
        On\s[^\n]{0,200}\n?[^\n]{0,100}\swrote:\s*$                # Gmail, Apple Mail (may wrap)
      | Le\s.{0,200}\sa\s[ée]crit\s?:\s*$                          # French
      | Am\s.{0,200}\sschrieb.{0,100}:\s*$                         # German
      | El\s.{0,200}\sescribi[óo]:\s*$                             # Spanish
      | V[àa]o\s.{0,200}\s(đ|d)[ãa]\sviết:\s*$                     # Vietnamese
      | -{2,}\s*Original\sMessage\s*-{2,}                          # Outlook
      | -{2,}\s*Forwarded\smessage\s*-{2,}
      | _{10,}\s*$                                                 # Outlook's rule before From:
      | From:\s.+$(?=\n(Sent|Date):)                               # Outlook's header block
    )""",
    re.IGNORECASE | re.VERBOSE | re.MULTILINE,
)


def strip_quoted(text: str) -> str:
    """The new part of a reply: the text above the quoted history, without ``>`` lines.

    Falls back to the whole text when stripping would leave nothing (a message
    that is all quote is still worth keeping).
    """
    match = _ATTRIBUTION.search(text)
    head = text[: match.start()] if match else text
    kept = [line for line in head.splitlines() if not line.lstrip().startswith(">")]
    new = "\n".join(kept).strip()
    return new or text.strip()
