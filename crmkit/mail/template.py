"""Mail-merge templates: headers and a body, rendered per recipient with Jinja2 in a sandbox.

A template file reads like the message it makes::

    Subject: Your invoice {{ invoice.number }}, {{ first_name }}
    Reply-To: Billing <billing@example.com>
    Attachment: invoices/{{ invoice.number }}.pdf
    Content-Type: text/markdown

    Dear {{ first_name }},

    your invoice of **{{ invoice.total | money(invoice.currency) }}** is due on
    {{ invoice.due_date | date }}.

Headers come first, up to the first blank line: ``Subject`` (required),
``To`` (default: the recipient's own address), ``From``, ``Reply-To``, ``Cc``,
``Bcc``, ``Attachment`` (one file per line, may repeat), ``Content-Type``
(``text/plain``, the default, or ``text/markdown`` for an HTML part with the
text as its plain alternative) and any ``X-`` header.

Rendering is strict and sandboxed: a field a recipient does not have is an
error naming it (``{{ phone | default("") }}`` allows a blank), and the
template cannot reach Python's internals. What data puts into the message is
escaped for where it lands, the way HTML templates escape for HTML: in an
address header a value that is not one of the record's own email fields is
quoted as a display name, so a name holding ``, eve@example.com`` adds no
recipient; in any header line breaks become spaces; in Markdown its
punctuation is escaped, so a name cannot become a link.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment
from markdown_it import MarkdownIt

from crmkit.errors import CrmkitError
from crmkit.mail.compose import clean_header_text
from crmkit.records.money import format_money

__all__ = [
    "ADDRESS_HEADERS",
    "Address",
    "MergeTemplate",
    "RenderError",
    "Rendered",
    "TemplateError",
    "first_name",
]

ADDRESS_HEADERS = ("to", "cc", "bcc", "from", "reply-to")
_KNOWN_HEADERS = {
    "subject": "Subject",
    "to": "To",
    "cc": "Cc",
    "bcc": "Bcc",
    "from": "From",
    "reply-to": "Reply-To",
    "attachment": "Attachment",
    "content-type": "Content-Type",
}
_BODY_TYPES = ("text/plain", "text/markdown")
# All ASCII punctuation: CommonMark lets a backslash escape each (spec 2.4), and any may be markup
# somewhere ("===" under a line makes it a heading), so data is never markup.
_MARKDOWN_PUNCTUATION = re.compile(r"""([!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~])""")


class TemplateError(CrmkitError):
    """The template file itself is wrong (a bad header, a Jinja syntax error)."""


class RenderError(CrmkitError):
    """The template cannot be rendered for one recipient (e.g. a field they do not have)."""


class Address(str):
    """An email address from a record's own email field: goes into address headers as it is."""

    __slots__ = ()


class Fields(dict[str, Any]):
    """A record's fields for templates; knows which record it is, so a missing one is named well.

    ``names`` are every name the record could have, set or blank: a missing one
    of them is blank for this person, any other is a typo worth a suggestion.
    """

    def __init__(self, label: str, values: Mapping[str, Any], names: Iterable[str] = ()) -> None:
        super().__init__(values)
        # the sandbox hides attributes starting with _ from templates
        self._crmkit_label = label
        self._crmkit_names = frozenset(names) | frozenset(self)


class _Missing(jinja2.ChainableUndefined, jinja2.StrictUndefined):
    """Strict when used, but ``account.name | default("us")`` works when there is no account."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        owner = self._undefined_obj
        if isinstance(owner, Fields) and isinstance(self._undefined_name, str):
            return f"'{owner._crmkit_label}.{self._undefined_name}' is undefined"
        return str(super()._undefined_message)


def first_name(name: Any) -> str:
    """The first word of a name (``"Ana Lima"`` -> ``"Ana"``); the name itself when it is one word."""
    words = str(name or "").split()
    return words[0] if words else ""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (list, tuple)):
        return ", ".join(_text(item) for item in value)
    return str(value)


def _money(value: Any, currency: str | None = None) -> str:
    """``{{ deal.amount | money(deal.currency) }}`` -> ``12,500.00 EUR``."""
    if value is None or value == "":
        return ""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except ArithmeticError:
        return str(value)
    return format_money(amount, currency)


def as_date(value: Any) -> Any:
    """An ISO date or date-time text as a date or datetime; anything else as it is."""
    if isinstance(value, str):
        try:
            return date.fromisoformat(value) if len(value) <= 10 else datetime.fromisoformat(value)
        except ValueError:
            return value
    return value


def _date(value: Any, pattern: str = "%d %B %Y") -> str:
    """``{{ invoice.due_date | date }}`` -> ``05 December 2026``; ``date("%d/%m/%Y")`` for others."""
    if value is None or value == "":
        return ""
    value = as_date(value)
    if isinstance(value, (date, datetime)):
        return value.strftime(pattern)
    return str(value)


def _quote_display(value: Any) -> str:
    """A data value in an address header: an address from an email field, else a quoted name."""
    if isinstance(value, Address):
        return str(value)
    text = clean_header_text(_text(value))
    if not text:
        return ""
    # "\=?" keeps text that looks like an encoded word from being read as one (RFC 2047 5: not in quotes)
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("=?", "\\=?") + '"'


def _one_line(value: Any) -> str:
    return clean_header_text(_text(value))


def _markdown_escaped(value: Any) -> str:
    return _MARKDOWN_PUNCTUATION.sub(r"\\\1", _text(value))


def _environment(finalize: Any) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=_Missing,
        autoescape=False,
        keep_trailing_newline=True,
        finalize=finalize,
    )
    env.filters["money"] = _money
    env.filters["date"] = _date
    env.filters["first_name"] = first_name
    env.globals["first_name_of"] = first_name
    return env


_ENVS = {
    "text": _environment(_text),
    "header": _environment(_one_line),
    "address": _environment(_quote_display),
    "markdown": _environment(_markdown_escaped),
}
_MARKDOWN = MarkdownIt("commonmark", {"html": False, "linkify": False, "typographer": False})


@dataclass(frozen=True)
class Rendered:
    """One recipient's message, before it is written as bytes."""

    headers: dict[str, str]  # Subject, To, Cc, Bcc, From, Reply-To, X-...: one line each
    text: str
    html: str | None
    attachments: list[str] = field(default_factory=list)  # paths as rendered, relative to the folder


def _undefined_name(exc: jinja2.UndefinedError) -> str:
    match = re.search(r"'([^']+)' (?:is undefined|has no attribute '([^']+)')", str(exc))
    if not match:
        return str(exc)
    return f"{match.group(1)}.{match.group(2)}" if match.group(2) else match.group(1)


class MergeTemplate:
    """A parsed template file: compiled header templates and body."""

    def __init__(self, text: str, *, name: str = "<template>") -> None:
        self.name = name
        self.source = text
        self.headers: list[tuple[str, str]] = []  # (canonical name, template text)
        self.body_type = "text/plain"
        head, body, body_line = _split(text, name)
        lines: list[int] = []  # the line of each header
        for line_no, key, value in head:
            canonical = _KNOWN_HEADERS.get(key.lower())
            if canonical is None and not key.lower().startswith("x-"):
                known = ", ".join(v for v in _KNOWN_HEADERS.values())
                raise TemplateError(f"{name}, line {line_no}: unknown header {key!r} (known: {known}, X-...)")
            if canonical == "Content-Type":
                if value.strip().lower() not in _BODY_TYPES:
                    raise TemplateError(
                        f"{name}, line {line_no}: Content-Type must be text/plain or text/markdown"
                    )
                self.body_type = value.strip().lower()
                continue
            key = canonical or key
            if key != "Attachment" and any(key.lower() == seen.lower() for seen, _ in self.headers):
                raise TemplateError(f"{name}, line {line_no}: {key} is given twice")
            self.headers.append((key, value))
            lines.append(line_no)
        if not any(key == "Subject" for key, _ in self.headers):
            raise TemplateError(f"{name}: no Subject header (the first lines, before a blank line)")
        self._header_templates = []
        for (key, value), line_no in zip(self.headers, lines, strict=True):
            env = _ENVS["address" if key.lower() in ADDRESS_HEADERS else "header"]
            try:
                self._header_templates.append((key, env.from_string(value)))
            except jinja2.TemplateSyntaxError as exc:
                raise TemplateError(f"{name}, line {line_no}: {exc.message}") from None
        try:
            self._text = _ENVS["text"].from_string(body)
            self._markdown = _ENVS["markdown"].from_string(body) if self.markdown else None
        except jinja2.TemplateSyntaxError as exc:  # exc.lineno counts from the body's first line
            raise TemplateError(f"{name}, line {body_line + (exc.lineno or 1) - 1}: {exc.message}") from None

    @classmethod
    def load(cls, path: str | Path) -> MergeTemplate:
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8-sig")  # Windows editors start UTF-8 with a BOM
        except FileNotFoundError:
            raise TemplateError(f"template {path} not found") from None
        except UnicodeDecodeError:
            raise TemplateError(f"template {path} is not UTF-8 text") from None
        return cls(text, name=str(path))

    @property
    def markdown(self) -> bool:
        return self.body_type == "text/markdown"

    def header(self, name: str) -> str | None:
        """A header's template text as written (None when the template has none)."""
        return next((value for key, value in self.headers if key.lower() == name.lower()), None)

    def render(self, context: Mapping[str, Any]) -> Rendered:
        """Render for one recipient; raises :class:`RenderError` saying what is missing or wrong."""
        try:
            headers: dict[str, str] = {}
            attachments: list[str] = []
            for key, template in self._header_templates:
                value = clean_header_text(template.render(context))
                if key == "Attachment":
                    if value:
                        attachments.append(value)
                elif value:
                    headers[key] = value
            text = self._text.render(context)
            html = None
            if self._markdown is not None:
                html = _MARKDOWN.render(self._markdown.render(context))
        except jinja2.UndefinedError as exc:
            missing = _undefined_name(exc)
            hint = _suggestion(context, missing)
            suggestion = f" (did you mean {hint}?)" if hint else ""
            raise RenderError(f"no value for {missing}{suggestion}") from None
        except jinja2.exceptions.SecurityError as exc:
            raise RenderError(f"not allowed in a template: {exc}") from None
        except jinja2.TemplateError as exc:
            raise RenderError(str(exc)) from None
        except (ArithmeticError, TypeError, ValueError) as exc:
            raise RenderError(f"{type(exc).__name__}: {exc}") from None
        return Rendered(headers, text, html, attachments)


def _suggestion(context: Mapping[str, Any], missing: str) -> str | None:
    """The name a mistyped ``missing`` (``nmae``, ``deal.amuont``) was probably meant to be, if any.

    Nothing is suggested for a name the record could have but this person has
    blank: that is missing data, not a typo.
    """
    head, _, last = missing.rpartition(".")
    scope: Any = context
    for part in head.split(".") if head else ():
        scope = scope.get(part) if isinstance(scope, Mapping) else None
    if not isinstance(scope, Mapping):
        return None
    names = set(getattr(scope, "_crmkit_names", ())) | set(scope)
    if last in names:
        return None
    close = difflib.get_close_matches(last, sorted(names), n=1, cutoff=0.75)
    return f"{head}.{close[0]}" if close and head else (close[0] if close else None)


def _split(text: str, name: str) -> tuple[list[tuple[int, str, str]], str, int]:
    """The header lines (number, name, value), the body and its first line's number."""
    lines = text.replace("\r\n", "\n").split("\n")
    head: list[tuple[int, str, str]] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            return head, "\n".join(lines[number:]), number + 1
        if line[0] in " \t" and head:  # a folded header goes on
            n, key, value = head[-1]
            head[-1] = (n, key, f"{value} {line.strip()}")
            continue
        key, colon, value = line.partition(":")
        if not colon or not re.fullmatch(r"[A-Za-z][A-Za-z0-9-]*", key.strip()):
            raise TemplateError(
                f"{name}, line {number}: expected a header such as 'Subject: ...' "
                "(headers first, then a blank line, then the body)"
            )
        head.append((number, key.strip(), value.strip()))
    raise TemplateError(f"{name}: no body (write the headers, a blank line, then the body)")
