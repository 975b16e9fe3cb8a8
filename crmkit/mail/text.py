"""Text from mail bodies: HTML turned into readable text, and a reply without its quoted history.

Pure functions, standard library only.
"""

from __future__ import annotations

import re
from html.parser import HTMLParser

__all__ = ["html_to_text", "strip_quoted"]

_BLOCKS = frozenset(
    {"address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "fieldset", "figcaption",
     "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav",
     "ol", "p", "pre", "section", "table", "tr", "ul"}
)  # fmt: skip
_SKIPPED = frozenset({"script", "style", "head", "title", "template"})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.skipping = 0
        self.pre = 0
        self.quote_depth = 0
        self.href: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag in _SKIPPED:
            self.skipping += 1
        elif tag == "br":
            self.parts.append("\n")
        elif tag in _BLOCKS:
            self.parts.append("\n")
            if tag == "li":
                self.parts.append("- ")
            if tag == "pre":
                self.pre += 1
        elif tag in ("td", "th"):
            self.parts.append("\t")
        elif tag == "a":
            self.href = dict(attrs).get("href")
        if tag == "blockquote" or (tag == "div" and "gmail_quote" in (dict(attrs).get("class") or "")):
            self.quote_depth += 1
            self.parts.append("\x00quote-start\x00")

    def handle_endtag(self, tag: str) -> None:
        if tag in _SKIPPED:
            self.skipping = max(0, self.skipping - 1)
        elif tag in _BLOCKS:
            self.parts.append("\n")
            if tag == "pre":
                self.pre = max(0, self.pre - 1)
        elif tag == "a":
            self.href = None

    def handle_data(self, data: str) -> None:
        if self.skipping:
            return
        if not self.pre:
            data = re.sub(r"\s+", " ", data)
        self.parts.append(data)


def html_to_text(html: str) -> str:
    """Readable plain text from an HTML body: blocks on their own lines, scripts and styles dropped."""
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:  # HTMLParser is lenient; anything left over is plain text
        return re.sub(r"<[^>]*>", " ", html)
    text = "".join(parser.parts).replace("\x00quote-start\x00", "")
    lines = [line.strip() for line in text.replace("\xa0", " ").splitlines()]
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
