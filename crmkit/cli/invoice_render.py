"""``crmkit invoices render``: an invoice as a printable HTML document, and PDF with LibreOffice."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import click

from crmkit.cli import App, pass_app
from crmkit.cli.output import emit_json, json_option
from crmkit.errors import CrmkitError
from crmkit.invoices.render import find_converter, html_to_pdf, missing_converter_message, render_invoice_html

__all__ = ["add_render_command", "render"]

_UNSAFE = re.compile(r"[^\w.-]+")


def file_name_for(number: str) -> str:
    """A file name from an invoice number: ``INV/2026/7`` -> ``INV-2026-7``."""
    name = _UNSAFE.sub("-", number).strip(".-")
    return name or "invoice"


def load_company(path: Path) -> dict[str, str]:
    """The seller from a TOML file: name, address (lines), email, phone, website, tax_id."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))
    except OSError as exc:
        raise CrmkitError(f"cannot read {path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise CrmkitError(f"{path}: not a TOML file ({exc})") from None
    company: dict[str, str] = {}
    for key, value in data.items():
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            value = "\n".join(value)
        if not isinstance(value, (str, int)) or isinstance(value, bool):
            raise CrmkitError(f"{path}: {key} must be text (address may be a list of lines)")
        company[key] = str(value)
    return company


@click.command("render")
@click.argument("invoice")
@click.option(
    "--template",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A Jinja2 HTML template of your own [default: [invoices] template, else crmkit's A4 invoice].",
)
@click.option(
    "--out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The HTML file to write [default: <number>.html here]; the PDF goes beside it.",
)
@click.option("--pdf", "make_pdf", is_flag=True, help="Also make a PDF (needs LibreOffice Writer).")
@click.option(
    "--company",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="A TOML file with the seller: name, address, email, phone, website, tax_id "
    "[default: [invoices] company].",
)
@json_option
@pass_app
def render(
    app: App,
    invoice: str,
    template: Path | None,
    out: Path | None,
    make_pdf: bool,
    company: Path | None,
    as_json: bool,
) -> None:
    """Write invoice INVOICE (an id, I-3, or a number, INV-2026-0001) as a printable document.

    The HTML is made from a template the team can change (--template: Jinja2,
    sandboxed; start from crmkit's own, crmkit/invoices/invoice.html, whose names
    crmkit/invoices/render.py lists).
    With --pdf, LibreOffice also turns it into a PDF. Prints the paths written.

    \b
    Example:
        crmkit invoices render INV-2026-0001
        crmkit invoices render I-3 --pdf --company seller.toml
        crmkit invoices render I-3 --template ours.html --out out/I-3.html --json
    """
    if out is not None and out.suffix.lower() == ".pdf":
        raise CrmkitError(f"--out {out} is the HTML file (the PDF goes beside it): name it .html")
    converter = None
    if make_pdf:
        converter = find_converter()
        if converter is None:  # before anything is written
            raise CrmkitError(missing_converter_message())
    store = app.store(must_exist=True)
    doc = store.lookup("invoices", invoice)
    company = company or app.config.invoices.company
    template = template or app.config.invoices.template
    seller = load_company(company) if company is not None else None
    html = render_invoice_html(store, doc["id"], template=template, company=seller)
    html_path = out if out is not None else Path(file_name_for(str(doc.get("number") or doc["id"])) + ".html")
    try:
        html_path.parent.mkdir(parents=True, exist_ok=True)
        html_path.write_text(html, encoding="utf-8")
    except OSError as exc:
        raise CrmkitError(f"cannot write {html_path}: {exc.strerror or exc}") from None
    pdf_path = None
    if make_pdf:
        pdf_path = html_to_pdf(html_path, html_path.with_suffix(".pdf"), converter=converter)
    if as_json:
        emit_json({"html": str(html_path), "pdf": str(pdf_path) if pdf_path else None})
        return
    click.echo(str(html_path))
    if pdf_path is not None:
        click.echo(str(pdf_path))


def add_render_command(group: click.Group) -> None:
    """Add ``render`` to ``group`` (the ``invoices`` group)."""
    group.add_command(render)
