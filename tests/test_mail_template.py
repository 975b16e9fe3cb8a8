"""Mail-merge templates: parsing, strict sandboxed rendering, filters, and data escaped where it lands."""

from __future__ import annotations

import email
import email.policy
import re
from datetime import date, datetime
from decimal import Decimal
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from crmkit.mail.compose import (
    AddressError,
    build_message,
    clean_header_text,
    format_address,
    parse_addresses,
)
from crmkit.mail.template import (
    Address,
    Fields,
    MergeTemplate,
    Rendered,
    RenderError,
    TemplateError,
    first_name,
)

HOA = {
    "name": "Nguyễn Thị Hoa",
    "first_name": "Hoa",
    "email": Address("hoa@saomai.vn"),
    "phone": None,
}


def render(source: str, context: dict[str, Any] | None = None) -> Rendered:
    return MergeTemplate(source).render(HOA if context is None else context)


def body(expression: str, context: dict[str, Any] | None = None) -> str:
    """The plain text body of a template whose body is ``expression``."""
    return render(f"Subject: x\n\n{expression}", context).text


def markdown(source: str, **context: Any) -> Rendered:
    return render(f"Subject: x\nContent-Type: text/markdown\n\n{source}", {**HOA, **context})


# -- parsing -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("source", "message"),
    [
        ("To: {{ email }}\n\nHello", r"no Subject"),
        ("\nHello", r"no Subject"),
        ("Subject: x\nPriority: high\n\nHello", r"line 2: unknown header 'Priority'"),
        ("Subject: x\nBcc: a@example.com\nSubject: y\n\nHello", r"line 3: Subject is given twice"),
        ("Subject: x\nX-Tag: a\nx-tag: b\n\nHello", r"line 3: x-tag is given twice"),
        (
            "Subject: x\nContent-Type: text/html\n\nHello",
            r"line 2: Content-Type must be text/plain or text/markdown",
        ),
        ("Subject: x", r"no body"),
        ("Subject: x\nHello there", r"line 2: expected a header"),
        ("Hello {{ name }},\n\nbody", r"line 1: expected a header"),
        ("Subject: x\nTo name: a@example.com\n\nbody", r"line 2: expected a header"),
        ("Subject: x\n\nHello\n\n{{ name\n", r"line 5: unexpected end of template"),
        ("Subject: x\n\nHello\n{% if name %}\nno end\n", r"line \d+: .*endif"),
        ("Subject: x\r\n\r\nline 3\r\n{{ name | }}\r\n", r"line 4: "),
        ("Subject: Hi {{ first_name\n\nbody", r"line 1: unexpected end of template"),
        ("Subject: x\nReply-To: a@example.com\nX-A: {% if %}\n\nb", r"line 3: Expected an expression"),
        ("Subject: x\nX-A: a\n  {{ oops(\n\nb", r"line 2: "),
    ],
)
def test_template_errors(source: str, message: str) -> None:
    with pytest.raises(TemplateError, match=message):
        MergeTemplate(source)


def test_template_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "offer.txt"
    path.write_text("Subject: x\nOops: y\n\nbody", encoding="utf-8")
    with pytest.raises(TemplateError, match=re.escape(f"{path}, line 2: unknown header 'Oops'")):
        MergeTemplate.load(path)
    with pytest.raises(TemplateError, match="not found"):
        MergeTemplate.load(tmp_path / "missing.txt")
    path.write_bytes(b"Subject: caf\xe9\n\nbody")
    with pytest.raises(TemplateError, match="not UTF-8"):
        MergeTemplate.load(path)


def test_headers_and_body() -> None:
    template = MergeTemplate(
        "Subject: Your offer,\n"
        "  {{ first_name }}\n"  # folded
        "\tfrom us\n"
        "reply-to: Billing <billing@example.com>\n"
        "X-Campaign: spring {{ first_name }}\n"
        "Attachment: offer.pdf\n"
        "Attachment: {{ first_name }}/terms.pdf\n"
        "Attachment: {{ phone | default('') }}\n"  # blank: no attachment
        "content-type: TEXT/PLAIN\n"
        "\n"
        "Dear {{ name }},\n"
        "\n"
        "Subject: not a header here\n"
    )
    assert template.header("subject") == "Your offer, {{ first_name }} from us"
    assert template.header("Cc") is None and not template.markdown
    rendered = template.render(HOA)
    assert rendered.headers == {
        "Subject": "Your offer, Hoa from us",
        "Reply-To": "Billing <billing@example.com>",
        "X-Campaign": "spring Hoa",
    }
    assert rendered.attachments == ["offer.pdf", "Hoa/terms.pdf"]
    assert rendered.text == "Dear Nguyễn Thị Hoa,\n\nSubject: not a header here\n"
    assert rendered.html is None


def test_crlf_template_and_empty_headers() -> None:
    rendered = render("Subject: Hi\r\nCc: {{ phone | default('') }}\r\n\r\nline one\r\nline two")
    assert rendered.headers == {"Subject": "Hi"}  # a header that renders blank is left out
    assert rendered.text == "line one\nline two"


# -- strict and sandboxed ------------------------------------------------------------------------


def test_a_missing_field_is_named() -> None:
    deal = Fields("deal", {"id": "D-1", "title": "Printers"})
    with pytest.raises(RenderError, match=r"no value for telephone\b"):
        body("Call {{ telephone }}")
    with pytest.raises(RenderError, match=r"no value for deal\.amount\b"):
        body("{{ deal.title }}: {{ deal.amount | money(deal.currency) }}", {"deal": deal})
    with pytest.raises(RenderError, match=r"no value for deal\.amount\b"):
        body("{{ deal['amount'] }}", {"deal": deal})
    with pytest.raises(RenderError, match=r"no value for deal\.amount\b"):
        body("{% for d in deals %}{{ d.amount }}{% endfor %}", {"deals": [deal]})
    with pytest.raises(RenderError, match=r"no value for account\b"):
        body("{{ account.name }}")
    with pytest.raises(RenderError, match=r"no value for invoice\b"):
        render("Subject: Invoice {{ invoice.number }}\n\nbody")
    with pytest.raises(RenderError, match=r"no value for phone"):
        MergeTemplate("Subject: x\nContent-Type: text/markdown\n\n{{ phone }}").render({})


def test_a_mistyped_field_gets_a_suggestion_a_blank_one_does_not() -> None:
    with pytest.raises(RenderError, match=r"^no value for nmae \(did you mean name\?\)$"):
        body("Dear {{ nmae }}")
    with pytest.raises(RenderError, match=r"no value for frist_name \(did you mean first_name\?\)"):
        render("Subject: Hi {{ frist_name }}\n\nb")
    deal = Fields("deal", {"id": "D-1", "title": "Printers"}, names=["id", "title", "amount", "currency"])
    with pytest.raises(RenderError, match=r"no value for deal\.amuont \(did you mean deal\.amount\?\)"):
        body("{{ deal.amuont }}", {"deal": deal})
    # a field this deal has blank is missing data, not a typo: no suggestion
    with pytest.raises(RenderError, match=r"^no value for deal\.amount$"):
        body("{{ deal.amount }}", {"deal": deal})
    with pytest.raises(RenderError, match=r"^no value for telephone$"):  # nothing close enough
        body("Call {{ telephone }}")


def test_defaults_allow_a_blank() -> None:
    deal = Fields("deal", {"id": "D-1"})
    assert body("[{{ telephone | default('') }}]") == "[]"
    assert body("[{{ phone }}]") == "[]"  # a field that is there but empty is blank, not an error
    assert body("{{ account.name | default('us') }}") == "us"
    assert body("{{ deal.amount | default('n/a') }}", {"deal": deal}) == "n/a"
    assert body("{% if telephone is defined %}x{% else %}none{% endif %}") == "none"


@pytest.mark.parametrize(
    "expression",
    [
        "{{ ''.__class__.__mro__ }}",
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "{{ cycler.__init__.__globals__ }}",
        "{{ cycler.__init__.__globals__.os.system('touch PWNED') }}",
        "{{ lipsum.__globals__['os'].popen('id').read() }}",
        "{{ joiner.__init__.__globals__ }}",
        "{{ namespace.__init__.__globals__ }}",
        "{{ first_name_of.__globals__ }}",
        "{{ name.__class__ }}",
        "{{ email.__class__.__base__.__subclasses__() }}",
        "{{ self._TemplateReference__context }}",
        "{{ ''.format.__self__ }}",
        "{{ '{0.__class__}'.format(name) }}",
        "{{ range.__call__ }}",
        "{{ range(10**9) | list }}",
    ],
)
def test_the_sandbox_refuses(expression: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(RenderError):
        body(expression)
    assert not (tmp_path / "PWNED").exists()


# -- filters -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "currency", "shown"),
    [
        (Decimal("12500"), "EUR", "12,500.00 EUR"),
        (Decimal("12500.5"), "USD", "12,500.50 USD"),
        (Decimal("12500000"), "VND", "12,500,000 VND"),
        (Decimal("1234.5"), "JPY", "1,235 JPY"),  # no minor unit: rounded half up
        (Decimal("1.2345"), "KWD", "1.235 KWD"),
        (Decimal("0.005"), "USD", "0.01 USD"),
        (Decimal("-40"), "GBP", "-40.00 GBP"),
        ("99.9", "EUR", "99.90 EUR"),
        (7, "VND", "7 VND"),
        (0.1 + 0.2, "USD", "0.30 USD"),
        (Decimal("12500"), None, "12,500.00"),
        (None, "EUR", ""),
        ("", "EUR", ""),
        ("call us", "EUR", "call us"),
    ],
)
def test_money(amount: Any, currency: str | None, shown: str) -> None:
    assert body("{{ a | money(c) }}", {"a": amount, "c": currency}) == shown


@pytest.mark.parametrize(
    ("value", "pattern", "shown"),
    [
        (date(2026, 12, 5), None, "05 December 2026"),
        (datetime(2026, 12, 5, 9, 30), None, "05 December 2026"),
        (datetime(2026, 12, 5, 9, 30), "%d/%m/%Y %H:%M", "05/12/2026 09:30"),
        ("2026-12-05", None, "05 December 2026"),
        ("2026-12-05", "%Y/%m/%d", "2026/12/05"),
        ("2026-12-05T10:30:00", "%H:%M on %d %b", "10:30 on 05 Dec"),
        ("2026-12-05 10:30", "%d.%m.%Y %H:%M", "05.12.2026 10:30"),
        ("2026-12-05T10:30:00+07:00", "%Y-%m-%d %z", "2026-12-05 +0700"),
        ("next week", None, "next week"),
        ("2026-13-45", None, "2026-13-45"),
        (None, None, ""),
        ("", None, ""),
    ],
)
def test_date(value: Any, pattern: str | None, shown: str) -> None:
    expression = "{{ d | date }}" if pattern is None else f"{{{{ d | date({pattern!r}) }}}}"
    assert body(expression, {"d": value}) == shown


def test_first_name() -> None:
    assert body("{{ name | first_name }}") == "Nguyễn"
    assert body("{{ first_name_of('Ana Lima') }}") == "Ana"
    assert [first_name(n) for n in ["Ana", "  Ana   Lima ", "", None]] == ["Ana", "Ana", "", ""]


def test_values_as_text() -> None:
    context = {"yes": True, "no": False, "amount": Decimal("1E+3"), "tags": ["vip", "hot"], "nothing": None}
    assert (
        body("{{ yes }} {{ no }} {{ amount }} {{ tags }} [{{ nothing }}]", context)
        == "yes no 1000 vip, hot []"
    )


# -- data in headers -----------------------------------------------------------------------------

HOSTILE_NAMES = [
    "Eve, eve@evil.example",
    "eve@evil.example",
    "<eve@evil.example>",
    'Bob "The Builder"',
    'x" <eve@evil.example>, "y',
    "Eve\r\nBcc: eve@evil.example",
    "back\\slash\\",
    "Nguyễn, Thị (Hoa); [x]",
    "=?utf-8?q?eve=40evil.example?=",
    "",
]


@pytest.mark.parametrize("name", HOSTILE_NAMES)
def test_a_name_in_an_address_header_is_only_a_name(name: str) -> None:
    rendered = render(
        "Subject: x\nTo: {{ name }} <{{ email }}>\nReply-To: {{ first_name }} {{ name }} <{{ email }}>\n\nb",
        {**HOA, "name": name, "first_name": name},
    )
    assert parse_addresses(rendered.headers["To"]) == [(clean_header_text(name), "hoa@saomai.vn")]
    reply = clean_header_text(f"{clean_header_text(name)} {clean_header_text(name)}")
    assert parse_addresses(rendered.headers["Reply-To"]) == [(reply, "hoa@saomai.vn")]


@pytest.mark.parametrize("name", [n for n in HOSTILE_NAMES if n])
def test_a_name_alone_in_an_address_header_is_no_address(name: str) -> None:
    rendered = render("Subject: x\nCc: {{ name }}\n\nb", {**HOA, "name": name})
    with pytest.raises(AddressError):
        parse_addresses(rendered.headers["Cc"])


def test_only_an_address_field_goes_in_as_an_address() -> None:
    rendered = render(
        "Subject: x\nTo: {{ email }}\nCc: {{ name }} <{{ manager }}>, {{ boss }}\n\nb",
        {**HOA, "manager": Address("minh@saomai.vn"), "boss": "boss@evil.example"},
    )
    assert parse_addresses(rendered.headers["To"]) == [("", "hoa@saomai.vn")]
    assert rendered.headers["Cc"] == '"Nguyễn Thị Hoa" <minh@saomai.vn>, "boss@evil.example"'
    with pytest.raises(AddressError):  # the plain string is quoted: a name without an address
        parse_addresses(rendered.headers["Cc"])
    # a template's own addresses are taken as written
    rendered = render("Subject: x\nCc: Billing <billing@example.com>, ops@example.com\n\nb")
    assert parse_addresses(rendered.headers["Cc"]) == [
        ("Billing", "billing@example.com"),
        ("", "ops@example.com"),
    ]


def test_data_in_headers_stays_on_one_line() -> None:
    rendered = render(
        "Subject: Hi {{ name }}, {{ note }}\nX-Note: {{ note }}\nAttachment: {{ note }}.pdf\n\n{{ note }}",
        {**HOA, "note": "a\r\nBcc: eve@evil.example\n\u2028x\x00"},
    )
    assert rendered.headers["Subject"] == "Hi Nguyễn Thị Hoa, a Bcc: eve@evil.example x"
    assert rendered.headers["X-Note"] == "a Bcc: eve@evil.example x"
    assert rendered.attachments == ["a Bcc: eve@evil.example x.pdf"]
    assert rendered.text == "a\r\nBcc: eve@evil.example\n\u2028x\x00"  # the body keeps the data as it is
    assert all("\n" not in v and "\r" not in v for v in rendered.headers.values())


# -- Markdown --------------------------------------------------------------------------------------

TAGS = re.compile(r"<(/?[a-z0-9]+)")


@pytest.mark.parametrize(
    ("data", "shown"),
    [
        ("[click](http://evil.example)", "[click](http://evil.example)"),
        ("<script>alert(1)</script>", "&lt;script&gt;alert(1)&lt;/script&gt;"),
        ("**bold** _em_ `code` ~~s~~", "**bold** _em_ `code` ~~s~~"),
        ("![img](http://evil.example/x.png)", "![img](http://evil.example/x.png)"),
        ("<http://evil.example>", "&lt;http://evil.example&gt;"),
        ("<a href='http://evil.example'>x</a>", "&lt;a href='http://evil.example'&gt;x&lt;/a&gt;"),
        ("&lt;b&gt; &amp; &#60;", "&amp;lt;b&amp;gt; &amp;amp; &amp;#60;"),
        ("\\*not em\\*", "\\*not em\\*"),
        ("# not a heading", "# not a heading"),
        ("1. not a list", "1. not a list"),
        ("[a]: http://evil.example", "[a]: http://evil.example"),
        ("\"quotes\" and 'apostrophes'", "&quot;quotes&quot; and 'apostrophes'"),
    ],
)
def test_markdown_shows_data_literally(data: str, shown: str) -> None:
    rendered = markdown("Dear {{ name }},\n\n**Thank you** for {{ data }} today.\n", data=data)
    assert rendered.html == (
        f"<p>Dear Nguyễn Thị Hoa,</p>\n<p><strong>Thank you</strong> for {shown} today.</p>\n"
    )
    assert TAGS.findall(rendered.html) == ["p", "/p", "p", "strong", "/strong", "/p"]
    assert rendered.text == f"Dear Nguyễn Thị Hoa,\n\n**Thank you** for {data} today.\n"  # unescaped


@pytest.mark.parametrize(
    "data", ["===", "---", "***", "> quote", "- item", "+ item", "| a | b |", "    indented"]
)
def test_markdown_data_on_a_line_of_its_own_makes_no_block(data: str) -> None:
    rendered = markdown("Dear customer\n{{ data }}\n", data=data)
    assert TAGS.findall(rendered.html or "") == ["p", "/p"], rendered.html
    assert rendered.text == f"Dear customer\n{data}\n"


def test_markdown_of_the_template_itself_works() -> None:
    rendered = markdown(
        "# Offer for {{ name }}\n\n"
        "Your total is **{{ total | money('VND') }}**, due *{{ due | date('%d/%m/%Y') }}*.\n\n"
        "- [Pay online](https://pay.example.com/{{ invoice }}?ref={{ invoice }}&lang=vi)\n"
        "- Call `{{ hotline | default('us') }}`\n",
        total=Decimal("12500000"),
        due=date(2026, 12, 5),
        invoice="INV-2026_001.a",
    )
    assert rendered.html == (
        "<h1>Offer for Nguyễn Thị Hoa</h1>\n"
        "<p>Your total is <strong>12,500,000 VND</strong>, due <em>05/12/2026</em>.</p>\n"
        "<ul>\n"
        '<li><a href="https://pay.example.com/INV-2026_001.a?ref=INV-2026_001.a&amp;lang=vi">Pay online</a></li>\n'
        "<li>Call <code>us</code></li>\n"
        "</ul>\n"
    )
    assert "\\" not in rendered.text and "12,500,000 VND" in rendered.text


def test_markdown_drops_raw_html_and_bad_links_from_the_template_too() -> None:
    rendered = markdown("<b>hi</b> [x](javascript:alert(1))\n")
    assert "<b>" not in (rendered.html or "") and "href" not in (rendered.html or "")


# -- properties ------------------------------------------------------------------------------------

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
ADDRESSED = MergeTemplate("Subject: Hi {{ name }}\nTo: {{ name }} <{{ email }}>\n\n{{ name }}")
MARKDOWN = MergeTemplate("Subject: x\nContent-Type: text/markdown\n\nHi «{{ data }}» end\n")


# any text, and text made of the characters that mean something in a header
TRICKY = st.one_of(st.text(), st.text(st.sampled_from(list(' \t\r\n"\\()<>@,;:.[]=?_-aé\u3000\x85\u2028'))))


@FAST
@given(name=TRICKY)
def test_any_name_makes_one_recipient(name: str) -> None:
    rendered = ADDRESSED.render({"name": name, "email": Address("ana@example.com")})
    assert parse_addresses(rendered.headers["To"]) == [(clean_header_text(name), "ana@example.com")]
    assert rendered.headers["Subject"] == clean_header_text(f"Hi {clean_header_text(name)}")
    assert rendered.text == name


@FAST
@given(data=st.text(st.characters(blacklist_categories=("Cc", "Cs", "Zl", "Zp"))))
def test_any_one_line_of_data_is_literal_in_markdown(data: str) -> None:
    html = MARKDOWN.render({"data": data}).html
    shown = data.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace('"', "&quot;")
    assert html == f"<p>Hi «{shown}» end</p>\n"


# -- end to end ----------------------------------------------------------------------------------


def test_render_then_write_then_read_back() -> None:
    template = MergeTemplate(
        "Subject: Báo giá cho {{ first_name }} 🎉 — {{ total | money('VND') }}\n"
        "From: Công ty Sao Mai <sales@saomai.vn>\n"
        "To: {{ name }} <{{ email }}>\n"
        "X-Campaign: spring\n"
        "Content-Type: text/markdown\n"
        "\n"
        "Chào {{ first_name }},\n\n"
        "báo giá **{{ total | money('VND') }}** — {{ note }}\n"
    )
    context = {
        **HOA,
        "name": 'Hoa "Eve, eve@evil.example"',
        "total": Decimal("12500000"),
        "note": "[x](http://e.example)",
    }
    rendered = template.render(context)
    headers: list[tuple[str, str]] = []
    for key in ("From", "To"):
        headers.append(
            (key, ", ".join(format_address(n, a) for n, a in parse_addresses(rendered.headers[key])))
        )
    headers += [("Subject", rendered.headers["Subject"]), ("X-Campaign", rendered.headers["X-Campaign"])]
    data = build_message(headers, rendered.text, html=rendered.html)
    assert data.isascii() and b"\n" not in data.replace(b"\r\n", b"")
    msg = email.message_from_bytes(data, policy=email.policy.default)
    assert isinstance(msg, EmailMessage)
    assert all(not part.defects for part in msg.walk())
    assert list(msg.keys()) == ["From", "To", "Subject", "X-Campaign", "MIME-Version", "Content-Type"]
    assert [(a.display_name, a.addr_spec) for a in msg["From"].addresses] == [
        ("Công ty Sao Mai", "sales@saomai.vn")
    ]
    assert [(a.display_name, a.addr_spec) for a in msg["To"].addresses] == [
        ('Hoa "Eve, eve@evil.example"', "hoa@saomai.vn")
    ]
    assert msg["Subject"] == "Báo giá cho Hoa 🎉 — 12,500,000 VND"
    assert msg.get_body(("plain",)).get_content() == (
        "Chào Hoa,\r\n\r\nbáo giá **12,500,000 VND** — [x](http://e.example)\r\n"
    )
    assert msg.get_body(("html",)).get_content() == (
        "<p>Chào Hoa,</p>\r\n<p>báo giá <strong>12,500,000 VND</strong> — [x](http://e.example)</p>\r\n"
    )
