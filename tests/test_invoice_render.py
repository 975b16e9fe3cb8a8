"""Invoices as printable documents: HTML from a sandboxed template, PDF through LibreOffice."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from decimal import Decimal
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import click
import pytest
from click.testing import CliRunner, Result

from crmkit.cli import App, CrmkitGroup
from crmkit.cli.invoice_render import add_render_command, file_name_for
from crmkit.errors import CrmkitError
from crmkit.invoices.render import (
    find_converter,
    format_date,
    html_to_pdf,
    missing_converter_message,
    money,
    render_invoice_html,
)
from crmkit.store import Store

REQUIRE_SERVERS = bool(os.environ.get("CRMKIT_REQUIRE_SERVERS"))
HOSTILE = "<script>alert(1)</script>"
SELLER = {
    "name": "Acme & Co",
    "address": "12 Lê Lợi\nQuận 1, TP HCM",
    "email": "billing@acme.example",
    "tax_id": "0312345678",
}


# --- a small HTML reader -------------------------------------------------------------------------


class Page(HTMLParser):
    """The rows of every table (cell texts) and all text, as a reader of the page sees them."""

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.texts: list[str] = []
        self.tags: list[str] = []
        self._cell: list[str] | None = None
        self._row: list[str] | None = None
        self.feed(html)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        if tag == "tr":
            self._row = []
        elif tag in ("td", "th"):
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._cell is not None and self._row is not None:
            self._row.append(" ".join(" ".join(self._cell).split()))
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self.rows.append(self._row)
            self._row = None

    def handle_data(self, data: str) -> None:
        self.texts.append(data)
        if self._cell is not None:
            self._cell.append(data)

    @property
    def text(self) -> str:
        return " ".join(" ".join(self.texts).split())

    def after(self, label: str) -> str:
        """The cell to the right of the cell that reads ``label``."""
        for row in self.rows:
            if label in row[:-1]:
                return row[row.index(label) + 1]
        raise AssertionError(f"no cell {label!r} in {self.rows}")

    def line_rows(self) -> list[list[str]]:
        header = next(i for i, row in enumerate(self.rows) if row and row[0].upper() == "DESCRIPTION")
        rows = []
        for row in self.rows[header + 1 :]:
            if len(row) != 5:
                break
            rows.append(row)
        return rows


# --- the data -------------------------------------------------------------------------------------


@pytest.fixture
def crm(store: Store) -> dict[str, Any]:
    """An account, its contact, a VND invoice (three lines, part paid, overdue) and a USD one."""
    account = store.add("accounts", {"name": "Công ty Sao Mai", "domain": "saomai.vn"})
    contact = store.add(
        "contacts", {"name": "Nguyễn Thị Hoa", "email": "hoa@saomai.vn", "account": account["id"]}
    )
    deal = store.add("deals", {"title": "CRM rollout", "account": account["id"], "stage": "won"})
    vnd = store.add(
        "invoices",
        {
            "account": account["id"],
            "contact": contact["id"],
            "deal": deal["id"],
            "currency": "VND",
            "issue_date": "2026-01-10",
            "due_date": "2026-02-09",  # the store's clock reads 2026-03-01: overdue
            "status": "sent",
            "amount_paid": "5000000",
            "lines": [
                {"description": "CRM setup", "quantity": 10, "unit_price": "1250000", "tax_rate": 10},
                {"description": "Training", "quantity": "2", "unit_price": "3000000", "tax_rate": 8},
                {"description": "Hosting (12 months)", "quantity": 12, "unit_price": "150000"},
            ],
        },
    )
    usd = store.add(
        "invoices",
        {
            "account": account["id"],
            "currency": "USD",
            "issue_date": "2026-02-20",
            "due_date": "2026-03-22",
            "status": "sent",
            "lines": [
                {"description": "Consulting", "quantity": "1.5", "unit_price": "1000", "tax_rate": "8.25"},
                {"description": "API calls", "quantity": 1000, "unit_price": "0.125", "tax_rate": 0},
            ],
        },
    )
    return {"account": account, "contact": contact, "deal": deal, "vnd": vnd, "usd": usd}


def render_page(store: Store, invoice_id: str, **kwargs: Any) -> Page:
    return Page(render_invoice_html(store, invoice_id, company=SELLER, **kwargs))


# --- the default template -------------------------------------------------------------------------


def test_a_vnd_invoice_shows_every_amount_in_whole_dong(store: Store, crm: dict[str, Any]) -> None:
    number = crm["vnd"]["number"]
    page = render_page(store, crm["vnd"]["id"])
    assert page.line_rows() == [
        ["CRM setup", "10", "1,250,000 VND", "10%", "12,500,000 VND"],
        ["Training", "2", "3,000,000 VND", "8%", "6,000,000 VND"],
        ["Hosting (12 months)", "12", "150,000 VND", "0%", "1,800,000 VND"],
    ]
    # 20,300,000 net; tax 1,250,000 + 480,000; paid 5,000,000
    assert page.after("Subtotal") == "20,300,000 VND"
    assert page.after("Tax") == "1,730,000 VND"
    assert page.after("Total") == "22,030,000 VND"
    assert page.after("Amount paid") == "5,000,000 VND"
    assert page.after("Balance due") == "17,030,000 VND"
    assert page.after("Invoice number") == number
    assert page.after("Issue date") == "10 Jan 2026"
    assert page.after("Due date") == "9 Feb 2026"
    assert page.after("Reference") == "CRM rollout"
    text = page.text
    assert "OVERDUE" in text  # due 9 Feb, the clock reads 1 Mar
    for seller in ("Acme & Co", "12 Lê Lợi", "Quận 1, TP HCM", "billing@acme.example", "0312345678"):
        assert seller in text
    assert "BILL TO Công ty Sao Mai Attn: Nguyễn Thị Hoa hoa@saomai.vn" in text
    assert f"Please pay 17,030,000 VND by 9 Feb 2026, quoting {number}." in text
    assert "VND." not in text.replace("VND by", "")  # no decimals anywhere for dong
    assert ".00" not in text


def test_a_usd_invoice_has_cents_and_keeps_a_fine_unit_price(store: Store, crm: dict[str, Any]) -> None:
    page = render_page(store, crm["usd"]["number"])  # by number as well as by id
    assert page.line_rows() == [
        ["Consulting", "1.5", "1,000.00 USD", "8.25%", "1,500.00 USD"],
        ["API calls", "1,000", "0.125 USD", "0%", "125.00 USD"],
    ]
    assert page.after("Subtotal") == "1,625.00 USD"
    assert page.after("Tax") == "123.75 USD"  # 8.25% of 1,500
    assert page.after("Total") == "1,748.75 USD"
    assert page.after("Amount paid") == "0.00 USD"
    assert page.after("Balance due") == "1,748.75 USD"
    assert "SENT" in page.text and "OVERDUE" not in page.text


def test_status_badge_follows_payments_and_dates(store: Store, crm: dict[str, Any]) -> None:
    usd = crm["usd"]["id"]
    store.update(usd, {"amount_paid": "1748.75"})
    page = render_page(store, usd)
    assert "PAID" in page.text and "Please pay" not in page.text
    assert page.after("Balance due") == "0.00 USD"
    store.update(usd, {"amount_paid": "100"})
    assert "PARTLY PAID" in render_page(store, usd).text
    from datetime import date

    # the same invoice printed after its due date reads overdue, whatever the stored status says
    assert "OVERDUE" in render_page(store, usd, today=date(2026, 4, 1)).text
    store.update(usd, {"status": "void"})
    assert "VOID" in render_page(store, usd).text


def test_data_is_escaped_everywhere(store: Store) -> None:
    account = store.add("accounts", {"name": f'Evil "Corp" {HOSTILE}'})
    contact = store.add("contacts", {"name": f"<b>Mallory</b> {HOSTILE}", "email": "m@evil.example"})
    invoice = store.add(
        "invoices",
        {
            "account": account["id"],
            "contact": contact["id"],
            "currency": "JPY",
            "lines": [{"description": HOSTILE, "quantity": 3, "unit_price": "1999.5"}],
        },
    )
    html = render_invoice_html(
        store, invoice["id"], company={"name": f"<i>Us</i>{HOSTILE}", "address": HOSTILE}
    )
    assert "<script" not in html.lower() and "<i>" not in html and "<b>Mallory" not in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    page = Page(html)
    assert "script" not in page.tags and "i" not in page.tags
    assert page.line_rows() == [[HOSTILE, "3", "1,999.5 JPY", "0%", "5,999 JPY"]]  # 5,998.5 rounds half up
    assert f'Evil "Corp" {HOSTILE}' in page.text and f"<b>Mallory</b> {HOSTILE}" in page.text
    assert f"<i>Us</i>{HOSTILE}" in page.text


def test_an_invoice_with_no_links_no_lines_and_no_seller_renders(store: Store) -> None:
    invoice = store.add("invoices", {"currency": "KWD", "status": "draft"})
    page = Page(render_invoice_html(store, invoice["id"]))
    assert page.after("Total") == "0.000 KWD"
    assert "No lines." in page.text and "DRAFT" in page.text and "Please pay" not in page.text
    assert "Reference" not in page.text and "Tax ID" not in page.text


def test_helpers() -> None:
    assert money(Decimal("12500000"), "VND") == "12,500,000 VND"
    assert money(Decimal("1234.5"), "USD") == "1,234.50 USD"
    assert money(Decimal("0.005"), "USD") == "0.01 USD"  # half up
    assert money(Decimal("0.125"), "USD", exact=True) == "0.125 USD"
    assert money(Decimal("2.5"), "USD", exact=True) == "2.50 USD"
    assert money(Decimal("1.2345"), "KWD") == "1.235 KWD"
    assert money("1000", "JPY") == "1,000 JPY"
    assert money(None, "USD") == ""
    assert format_date("2026-03-05") == "5 Mar 2026"
    assert format_date("2026-03-05", "%d/%m/%Y") == "05/03/2026"
    assert format_date(None) == ""
    assert file_name_for("INV/2026/7") == "INV-2026-7"
    assert file_name_for("INV-2026-0001") == "INV-2026-0001"


# --- templates a team writes ---------------------------------------------------------------------

OWN_TEMPLATE = """\
<html><body>
<h1>{{ company.name }} bills {{ account.name }}</h1>
<p id="who">{{ contact.name }} &lt;{{ contact.email }}&gt;</p>
<ul>
{% for line in lines %}
<li>{{ line.number }}. {{ line.description }}: {{ number(line.quantity) }} x {{ money(line.unit_price) }} = {{ line.amount | money }}</li>
{% endfor %}
</ul>
<p id="total">{{ invoice.number }} {{ status }} {{ money(totals.total) }} due {{ date(invoice.due_date, "%Y-%m-%d") }}</p>
<p id="also">{{ money(totals.total, "USD") }} {{ percent(lines[0].tax_rate) }} {{ invoice.owner }}|{{ invoice.custom.po | default("no PO") }}</p>
</body></html>
"""


def make_cli() -> click.Group:
    @click.group(cls=CrmkitGroup)
    def invoices() -> None:
        """Invoices."""

    add_render_command(invoices)
    return invoices


@pytest.fixture
def cli(tmp_path: Path, store: Store, monkeypatch: pytest.MonkeyPatch):
    """Runs ``invoices ...`` against the test store, in a scratch folder."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv("CRMKIT_STORE", raising=False)
    monkeypatch.delenv("CRMKIT_CONFIG", raising=False)
    group = make_cli()

    def invoke(*args: str, code: int = 0) -> Result:
        result = CliRunner().invoke(group, list(args), obj=App(store_option=store.location))
        assert result.exit_code == code, result.output
        return result

    return invoke


def test_cli_renders_with_the_teams_template(cli, crm: dict[str, Any], tmp_path: Path) -> None:
    template = tmp_path / "ours.html"
    template.write_text(OWN_TEMPLATE, encoding="utf-8")
    number = crm["vnd"]["number"]
    result = cli("render", crm["vnd"]["id"], "--template", str(template), "--out", "out/doc.html", "--json")
    assert json.loads(result.stdout) == {"html": "out/doc.html", "pdf": None}
    html = Path("out/doc.html").read_text(encoding="utf-8")
    page = Page(html)
    assert "<h1> bills Công ty Sao Mai</h1>" in html  # no --company: an empty seller
    assert "Nguyễn Thị Hoa <hoa@saomai.vn>" in page.text
    assert "1. CRM setup: 10 x 1,250,000 VND = 12,500,000 VND" in page.text
    assert "3. Hosting (12 months): 12 x 150,000 VND = 1,800,000 VND" in page.text
    assert f"{number} overdue 22,030,000 VND due 2026-02-09" in page.text
    assert "22,030,000.00 USD 10% |no PO" in page.text  # empty owner prints nothing


def test_cli_default_file_name_and_lookup_by_number(cli, crm: dict[str, Any]) -> None:
    number = crm["usd"]["number"]
    result = cli("render", number.lower())
    assert result.stdout == f"{number}.html\n"
    assert "1,748.75 USD" in Path(f"{number}.html").read_text(encoding="utf-8")


def test_cli_errors_are_one_line(cli, crm: dict[str, Any], tmp_path: Path) -> None:
    result = cli("render", "INV-1999-0001", code=1)
    assert result.output == "Error: no invoice matches 'INV-1999-0001'\n"
    result = cli("render", "I-99", code=1)
    assert result.output == "Error: no invoice I-99\n"
    result = cli("render", crm["vnd"]["id"], "--out", "x.pdf", code=1)
    assert "is the HTML file" in result.output
    assert list(Path().iterdir()) == []


@pytest.mark.parametrize(
    ("source", "message"),
    [
        (
            "<p>\n{{ invoice.number }}\n{{ invoice.po_number }}\n</p>",
            "line 3: 'invoice.po_number' is undefined",
        ),
        ("<p>{{ account.nmae }}</p>", "line 1: 'account.nmae' is undefined"),
        ("{% for l in lines %}\n{{ l.discount }}\n{% endfor %}", "line 2: 'lines[0].discount' is undefined"),
        ("<p>{{ totals.grand }}</p>", "line 1: 'totals.grand' is undefined"),
        ("<p>{{ seller }}</p>", "line 1: 'seller' is undefined"),
        ("<p>\n\n{% if invoice.number %}\n{{ invoice.number }\n{% endif %}", "line 4: unexpected '}'"),
        ("<p>\n{% for x in lines %}\n</p>", "line 3: Unexpected end of template"),
        (
            "{{ invoice.__class__.__mro__ }}",
            "line 1: not allowed in a template: access to attribute '__class__'",
        ),
        ("{{ money.__globals__ }}", "line 1: not allowed in a template: access to attribute '__globals__'"),
    ],
    ids=["field", "misspelt", "line", "totals", "name", "syntax", "unclosed", "dunder", "globals"],
)
def test_template_problems_name_the_template_and_line(
    cli, crm: dict[str, Any], tmp_path: Path, source: str, message: str
) -> None:
    template = tmp_path / "bad.html"
    template.write_text(source, encoding="utf-8")
    result = cli("render", crm["vnd"]["id"], "--template", str(template), code=1)
    assert result.output.startswith(f"Error: {template}, {message}"), result.output
    assert result.output.count("\n") == 1
    assert list(Path().iterdir()) == []  # nothing written


def test_templates_may_include_their_neighbours(store: Store, crm: dict[str, Any], tmp_path: Path) -> None:
    (tmp_path / "part.html").write_text("<b>{{ invoice.number }}</b>", encoding="utf-8")
    (tmp_path / "main.html").write_text("<p>{% include 'part.html' %}</p>", encoding="utf-8")
    html = render_invoice_html(store, crm["vnd"]["id"], template=tmp_path / "main.html")
    assert html == f"<p><b>{crm['vnd']['number']}</b></p>"
    (tmp_path / "escape.html").write_text("{% include '../secret.html' %}", encoding="utf-8")
    with pytest.raises(CrmkitError, match="not found"):
        render_invoice_html(store, crm["vnd"]["id"], template=tmp_path / "escape.html")


def test_company_from_a_toml_file(cli, crm: dict[str, Any], tmp_path: Path) -> None:
    seller = tmp_path / "seller.toml"
    seller.write_text(
        'name = "Acme <Co>"\naddress = ["1 Main St", "Springfield"]\ntax_id = "US-42"\n', encoding="utf-8"
    )
    cli("render", crm["usd"]["id"], "--company", str(seller), "--out", "a.html")
    text = Page(Path("a.html").read_text(encoding="utf-8")).text
    assert "Acme <Co> 1 Main St Springfield Tax ID: US-42" in text
    seller.write_text("name = 3.5\n", encoding="utf-8")
    assert "name must be text" in cli("render", crm["usd"]["id"], "--company", str(seller), code=1).output


def test_the_seller_and_template_can_come_from_crmkit_toml(cli, crm: dict[str, Any]) -> None:
    Path("seller.toml").write_text('name = "Sao Mai Trading"\ntax_id = "VN-0101"\n', encoding="utf-8")
    Path("ours.html").write_text("<p>{{ company.name }} bills {{ invoice.number }}</p>", encoding="utf-8")
    Path("crmkit.toml").write_text('[invoices]\ncompany = "seller.toml"\n', encoding="utf-8")
    cli("render", crm["usd"]["id"], "--out", "a.html")
    assert "Sao Mai Trading" in Page(Path("a.html").read_text(encoding="utf-8")).text
    Path("crmkit.toml").write_text('[invoices]\ncompany = "seller.toml"\ntemplate = "ours.html"\n', encoding="utf-8")
    cli("render", crm["usd"]["id"], "--out", "b.html")
    assert Path("b.html").read_text(encoding="utf-8").startswith("<p>Sao Mai Trading bills INV-")


# --- PDF ---------------------------------------------------------------------------------------------


def test_no_converter_is_a_clear_error_before_anything_is_written(
    cli, crm: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    assert find_converter() is None
    result = cli("render", crm["vnd"]["id"], "--pdf", code=1)
    assert result.output.startswith("Error: making a PDF needs LibreOffice, and no soffice is on PATH")
    assert "apt-get install libreoffice-writer-nogui" in result.output
    assert list(Path().iterdir()) == []


def fake_soffice(root: Path, script: str, *, writer: bool = True) -> Path:
    """A LibreOffice install laid out like Debian's: program/soffice and share/registry/*.xcd."""
    program = root / "program"
    registry = root / "share" / "registry"
    program.mkdir(parents=True)
    registry.mkdir(parents=True)
    (registry / "calc.xcd").write_text("")
    if writer:
        (registry / "writer.xcd").write_text("")
    soffice = program / "soffice"
    soffice.write_text("#!/bin/sh\n" + script)
    soffice.chmod(0o755)
    return soffice


def test_libreoffice_without_writer_is_no_converter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    soffice = fake_soffice(tmp_path / "lo", "exit 0\n", writer=False)
    monkeypatch.setenv("PATH", str(soffice.parent))
    assert find_converter() is None
    message = missing_converter_message()
    assert f"LibreOffice Writer to read HTML, and the LibreOffice at {soffice} has none" in message
    assert "libreoffice-writer-nogui" in message


def test_a_converter_that_hangs_is_stopped(tmp_path: Path) -> None:
    soffice = fake_soffice(tmp_path / "lo", "sleep 30 & wait\n")
    html = tmp_path / "a.html"
    html.write_text("<p>x</p>")
    with pytest.raises(CrmkitError, match=r"took more than 0.5 s to convert .*a.html to PDF; stopped it"):
        html_to_pdf(html, tmp_path / "a.pdf", converter=str(soffice), timeout=0.5)
    assert not (tmp_path / "a.pdf").exists()


def test_a_converter_that_makes_nothing_says_so(tmp_path: Path) -> None:
    soffice = fake_soffice(tmp_path / "lo", 'echo "Error: source file could not be loaded"\nexit 0\n')
    html = tmp_path / "a.html"
    html.write_text("<p>x</p>")
    with pytest.raises(CrmkitError, match=r"made no PDF of .*said: Error: source file could not be loaded"):
        html_to_pdf(html, tmp_path / "a.pdf", converter=str(soffice))


needs_libreoffice = pytest.mark.skipif(
    find_converter() is None and not REQUIRE_SERVERS,
    reason="LibreOffice Writer is not installed (apt-get install libreoffice-writer-nogui); "
    "CRMKIT_REQUIRE_SERVERS=1 makes this an error",
)


def pdf_text(pdf: Path) -> str | None:
    pdftotext = shutil.which("pdftotext")
    if pdftotext is None:
        return None
    done = subprocess.run([pdftotext, "-layout", str(pdf), "-"], capture_output=True, text=True, check=True)
    return done.stdout


@pytest.mark.slow
@needs_libreoffice
def test_a_real_pdf_through_libreoffice(cli, crm: dict[str, Any]) -> None:
    number = crm["vnd"]["number"]
    result = cli("render", number, "--pdf", "--json")
    assert json.loads(result.stdout) == {"html": f"{number}.html", "pdf": f"{number}.pdf"}
    pdf = Path(f"{number}.pdf")
    assert pdf.read_bytes().startswith(b"%PDF")
    text = pdf_text(pdf)
    if text is not None:
        assert number in text
        for shown in ("12,500,000 VND", "22,030,000 VND", "17,030,000 VND", "Công ty Sao Mai", "OVERDUE"):
            assert shown in text
        assert "INVOICE" in text  # headings survive (Writer/Web's own PDF export drops them)
    result = cli("render", crm["usd"]["id"], "--pdf", "--out", "usd/inv.html")
    assert result.stdout == "usd/inv.html\nusd/inv.pdf\n"
    assert Path("usd/inv.pdf").read_bytes().startswith(b"%PDF")


@pytest.mark.slow
@needs_libreoffice
def test_conversions_in_parallel_do_not_clash(store: Store, crm: dict[str, Any], tmp_path: Path) -> None:
    htmls = []
    for key in ("vnd", "usd"):
        path = tmp_path / f"{key}.html"
        path.write_text(render_invoice_html(store, crm[key]["id"]), encoding="utf-8")
        htmls.append(path)
    errors: list[BaseException] = []

    def convert(html: Path) -> None:
        try:
            html_to_pdf(html, html.with_suffix(".pdf"))
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=convert, args=(html,)) for html in htmls]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    for html, key in zip(htmls, ("vnd", "usd"), strict=True):
        pdf = html.with_suffix(".pdf")
        assert pdf.read_bytes().startswith(b"%PDF")
        text = pdf_text(pdf)
        if text is not None:
            assert crm[key]["number"] in text
