"""An invoice as a printable document: HTML from a template the team can change, then PDF.

The default template is ``invoice.html`` beside this module: an A4 page with
no external resources. A team's own template (``--template FILE``) is Jinja2,
run in a sandbox with HTML autoescaping, and gets the same context:

``invoice``
    the invoice's fields: ``id``, ``number``, ``issue_date``, ``due_date``
    (dates), ``currency``, ``status`` (as stored), ``subtotal``, ``tax``,
    ``total``, ``amount_paid`` (Decimals), ``owner``, ``custom`` (its custom
    fields, e.g. ``invoice.custom.po_number``), ...; an empty field is None.
``lines``
    the invoice lines, in order, each with ``number`` (1, 2, ...),
    ``description``, ``quantity``, ``unit_price``, ``tax_rate`` (percent),
    ``amount`` (quantity x unit price), ``tax`` and ``total`` (amount + tax),
    amounts rounded to the currency.
``account``, ``contact``, ``deal``
    the linked records' fields (``account.name``, ``contact.email``,
    ``deal.title``, ...); an empty mapping, false in ``{% if %}``, when the
    invoice links none.
``company``
    the seller: ``name``, ``address`` (text), ``address_lines`` (a list),
    ``email``, ``phone``, ``website``, ``tax_id`` and any other key given; ``""`` when not given.
``totals``
    ``subtotal``, ``tax``, ``total``, ``paid`` and ``balance`` (total - paid), Decimals.
``currency``
    the invoice's currency code (``VND``).
``status``, ``status_label``
    the invoice's status today (a sent invoice past its due date is
    ``overdue``) and how it reads (``Partly paid``).
``today``
    the date the document is made.

Helpers, callable or as filters:

``money(amount)``
    ``12,500,000 VND``, ``1,234.50 USD``: rounded to the currency's minor
    unit; ``money(amount, "EUR")`` for another currency, ``exact=true`` to
    keep more decimals than the currency has (unit prices of 0.125 USD).
``date(value)``
    ``31 Mar 2026``; ``date(value, "%d/%m/%Y")`` for another pattern.
``number(value)``
    a quantity: ``1,000``, ``2.5``.
``percent(value)``
    ``10%``, ``8.5%``.

Rendering is strict: a name the context does not have (a misspelt field) is
an error naming the template and its line, as is a syntax error; a field
that exists but is empty is None and prints as nothing. ``x | default("")``
allows a name to be missing. Templates may ``{% include %}`` or
``{% extends %}`` files from their own folder.

PDF comes from LibreOffice (``soffice --headless``), which reads HTML with
Writer: on Debian and Ubuntu ``apt-get install libreoffice-writer-nogui``
(``libreoffice-calc-nogui`` alone cannot read HTML).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from types import TracebackType
from typing import Any

import jinja2
from jinja2.sandbox import SandboxedEnvironment

from crmkit.errors import CrmkitError
from crmkit.mail.template import as_date
from crmkit.records.money import MINOR_UNITS, format_money, quantize
from crmkit.records.rules import invoice_status, invoice_totals
from crmkit.records.schema import ACCOUNT, CONTACT, DEAL, INVOICE, RecordType
from crmkit.store import Store

__all__ = [
    "DEFAULT_TEMPLATE",
    "PDF_TIMEOUT",
    "STATUS_LABELS",
    "RenderError",
    "find_converter",
    "html_to_pdf",
    "invoice_context",
    "missing_converter_message",
    "render_invoice_html",
]

DEFAULT_TEMPLATE = Path(__file__).with_name("invoice.html")
#: Seconds LibreOffice may take to turn one invoice into PDF (its first start makes a profile).
PDF_TIMEOUT = 180.0
#: LibreOffice's Writer HTML import and its PDF export: Writer/Web's own export drops headings.
SOFFICE_IN_FILTER = "HTML (StarWriter)"
SOFFICE_OUT_FILTER = "pdf:writer_pdf_Export"

STATUS_LABELS = {
    "draft": "Draft",
    "sent": "Sent",
    "partly_paid": "Partly paid",
    "paid": "Paid",
    "overdue": "Overdue",
    "void": "Void",
}
COMPANY_KEYS = ("name", "address", "email", "phone", "website", "tax_id")
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")
_INSTALL_HINT = (
    "install LibreOffice Writer (Debian/Ubuntu: apt-get install libreoffice-writer-nogui; "
    "macOS: brew install --cask libreoffice), or open the HTML in a browser and print it to PDF"
)


class RenderError(CrmkitError):
    """The template cannot be read, parsed or rendered for this invoice."""


class Record(dict[str, Any]):
    """A record's fields for templates; knows its name, so a missing field is named well."""

    def __init__(self, label: str, values: Mapping[str, Any] | None = None) -> None:
        super().__init__(values or {})
        self._crmkit_label = label  # the sandbox hides attributes starting with _ from templates


class _Strict(jinja2.StrictUndefined):
    """An error when used; names the record: ``'invoice.po_number' is undefined``."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        owner, name = self._undefined_obj, self._undefined_name
        if self._undefined_hint is None and isinstance(owner, Record) and isinstance(name, str):
            return f"'{owner._crmkit_label}.{name}' is undefined"
        return str(super()._undefined_message)


# --- helpers templates call ---------------------------------------------------------------------


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "" or isinstance(value, jinja2.Undefined):
        return None
    if isinstance(value, bool):
        raise TypeError(f"not a number: {value!r}")
    if isinstance(value, Decimal):
        return value
    try:
        return Decimal(str(value).strip().replace(",", ""))
    except InvalidOperation:
        raise TypeError(f"not a number: {value!r}") from None


def _plain(value: Decimal) -> str:
    """``Decimal('1E+3')`` -> ``1,000``; ``2.50`` -> ``2.5``."""
    text = f"{value.normalize():,f}"
    return "0" if text in ("-0", "") else text


def money(amount: Any, currency: str | None = None, *, exact: bool = False) -> str:
    """``12500000, 'VND'`` -> ``12,500,000 VND``; an empty amount is ``""``.

    Rounded half-up to the currency's minor unit unless ``exact``, which keeps
    any further decimals the amount has (a unit price of ``0.125 USD``).
    """
    value = _decimal(amount)
    if value is None:
        return ""
    code = (currency or "").upper()
    if exact:
        places = MINOR_UNITS.get(code, 2)
        exponent = value.normalize().as_tuple().exponent
        if isinstance(exponent, int) and -exponent > places:
            return f"{value.normalize():,f} {code}".strip()
    return format_money(value, code)


def format_date(value: Any, pattern: str | None = None) -> str:
    """``date(2026, 3, 31)`` -> ``31 Mar 2026`` (English whatever the locale); ``""`` for none."""
    if value is None or value == "" or isinstance(value, jinja2.Undefined):
        return ""
    value = as_date(value)
    if not isinstance(value, (date, datetime)):
        return str(value)
    if pattern:
        return value.strftime(pattern)
    return f"{value.day} {_MONTHS[value.month - 1]} {value.year}"


def format_number(value: Any) -> str:
    """A quantity without trailing zeros: ``1,000``, ``2.5``."""
    number = _decimal(value)
    return "" if number is None else _plain(number)


def format_percent(value: Any) -> str:
    number = _decimal(value)
    return "" if number is None else f"{_plain(number)}%"


# --- the context ---------------------------------------------------------------------------------


def _record(rt: RecordType, label: str, doc: Mapping[str, Any] | None) -> Record:
    """Every schema field (None when empty), loaded (Decimal, date), and ``custom``."""
    if not doc:
        return Record(label)
    loaded = rt.load({k: v for k, v in doc.items() if k != "custom"})
    values = {f.name: loaded.get(f.name) for f in rt.fields}
    values.update({k: v for k, v in loaded.items() if k not in values})
    values["custom"] = Record(f"{label}.custom", doc.get("custom") or {})
    return Record(label, values)


def _linked(store: Store, rt: RecordType, record_id: Any) -> Record:
    if not record_id:
        return Record(rt.name)
    try:
        return _record(rt, rt.name, store.get(str(record_id)))
    except CrmkitError:  # a link to a record that is gone: leave the block out
        return Record(rt.name)


def _company(company: Mapping[str, str] | None) -> Record:
    values: dict[str, Any] = dict.fromkeys(COMPANY_KEYS, "")
    for key, value in (company or {}).items():
        values[str(key)] = "" if value is None else str(value)
    values["address_lines"] = [line.strip() for line in values["address"].splitlines() if line.strip()]
    return Record("company", values)


def invoice_context(
    store: Store, invoice_id: str, *, company: Mapping[str, str] | None = None, today: date | None = None
) -> dict[str, Any]:
    """What a template gets for one invoice (named by id or number); see the module's docstring."""
    doc = store.lookup("invoices", invoice_id)
    invoice = _record(INVOICE, "invoice", doc)
    currency = str(invoice.get("currency") or store.default_currency).upper()
    today = today or store.clock().date()
    raw_lines = invoice.get("lines") or []
    lines: list[Record] = []
    for number, line in enumerate(raw_lines, start=1):
        net = line["quantity"] * line["unit_price"]
        amount = quantize(net, currency)
        tax = quantize(net * line["tax_rate"] / 100, currency)
        lines.append(
            Record(
                f"lines[{number - 1}]",
                {**line, "number": number, "amount": amount, "tax": tax, "total": amount + tax},
            )
        )
    computed = invoice_totals(raw_lines, currency)
    subtotal, tax, total = (
        computed[key] if invoice.get(key) is None else invoice[key] for key in ("subtotal", "tax", "total")
    )
    paid = invoice.get("amount_paid") or quantize(Decimal(0), currency)
    status = invoice_status({**invoice, "total": total}, today)
    return {
        "invoice": invoice,
        "lines": lines,
        "account": _linked(store, ACCOUNT, invoice.get("account")),
        "contact": _linked(store, CONTACT, invoice.get("contact")),
        "deal": _linked(store, DEAL, invoice.get("deal")),
        "company": _company(company),
        "totals": Record(
            "totals",
            {"subtotal": subtotal, "tax": tax, "total": total, "paid": paid, "balance": total - paid},
        ),
        "currency": currency,
        "status": status,
        "status_label": STATUS_LABELS.get(status, status.replace("_", " ").capitalize()),
        "today": today,
    }


# --- rendering -----------------------------------------------------------------------------------


def _finalize(value: Any) -> Any:
    return "" if value is None else value


def _environment(folder: Path, currency: str) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        loader=jinja2.FileSystemLoader(str(folder)),
        autoescape=True,
        undefined=_Strict,
        finalize=_finalize,
        trim_blocks=True,
        lstrip_blocks=True,
    )

    def money_in(amount: Any, code: str | None = None, exact: bool = False) -> str:
        return money(amount, code or currency, exact=exact)

    helpers = {
        "money": money_in,
        "date": format_date,
        "number": format_number,
        "percent": format_percent,
    }
    env.globals.update(helpers)
    env.filters.update(helpers)
    return env


def _line_in(tb: TracebackType | None, filename: str | None) -> int | None:
    """The last line of the template that the traceback passes through (Jinja rewrites its frames)."""
    line = None
    while tb is not None:
        if filename and tb.tb_frame.f_code.co_filename == filename:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def _where(name: str, line: int | None) -> str:
    return f"{name}, line {line}" if line else name


def render_invoice_html(
    store: Store,
    invoice_id: str,
    *,
    template: Path | None = None,
    company: Mapping[str, str] | None = None,
    today: date | None = None,
) -> str:
    """The invoice (by id ``I-3`` or number ``INV-2026-0001``) as an HTML document.

    ``template`` is a Jinja2 file (default: :data:`DEFAULT_TEMPLATE`);
    ``company`` the seller's name, address, email, tax_id, ...; ``today``
    decides whether a sent invoice is overdue (default: the store's clock).
    Raises :class:`RenderError` naming the template and line on any problem.
    """
    path = Path(template) if template is not None else DEFAULT_TEMPLATE
    name = str(path)
    context = invoice_context(store, invoice_id, company=company, today=today)
    env = _environment(path.parent, context["currency"])
    try:
        compiled = env.get_template(path.name)
    except jinja2.TemplateNotFound as exc:
        missing = name if exc.name == path.name else f"{exc.name} (included from {name})"
        raise RenderError(f"template {missing} not found") from None
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(f"{_where(exc.filename or name, exc.lineno)}: {exc.message}") from None
    except UnicodeDecodeError:
        raise RenderError(f"template {name} is not UTF-8 text") from None
    except OSError as exc:
        raise RenderError(f"template {name} cannot be read: {exc.strerror or exc}") from None
    try:
        return compiled.render(context)
    except jinja2.TemplateSyntaxError as exc:  # in a template it includes
        raise RenderError(f"{_where(exc.filename or name, exc.lineno)}: {exc.message}") from None
    except jinja2.TemplateNotFound as exc:
        raise RenderError(f"{name}: template {exc.name} not found") from None
    except jinja2.UndefinedError as exc:
        line = _line_in(exc.__traceback__, compiled.filename)
        raise RenderError(f"{_where(name, line)}: {exc.message}") from None
    except jinja2.exceptions.SecurityError as exc:
        line = _line_in(exc.__traceback__, compiled.filename)
        raise RenderError(f"{_where(name, line)}: not allowed in a template: {exc}") from None
    except (jinja2.TemplateError, ArithmeticError, TypeError, ValueError, LookupError) as exc:
        line = _line_in(exc.__traceback__, compiled.filename)
        raise RenderError(f"{_where(name, line)}: {type(exc).__name__}: {exc}") from None


# --- PDF -----------------------------------------------------------------------------------------


def _soffice_on_path() -> str | None:
    return shutil.which("soffice") or shutil.which("libreoffice")


def _has_writer(soffice: str) -> bool:
    """False when LibreOffice is installed without Writer (e.g. libreoffice-calc-nogui alone).

    Each installed module has its ``<module>.xcd`` in the install's registry
    folder; when no registry folder is found, the layout is unknown and Writer
    is taken to be there (the conversion itself then says if it is not).
    """
    program = Path(soffice).resolve().parent
    for registry in (program.parent / "share" / "registry", program.parent / "Resources" / "registry"):
        if registry.is_dir():
            return (registry / "writer.xcd").exists()
    return True


def find_converter() -> str | None:
    """The LibreOffice that can turn HTML into PDF (``soffice`` with Writer), or None."""
    soffice = _soffice_on_path()
    return soffice if soffice is not None and _has_writer(soffice) else None


def missing_converter_message() -> str:
    """Why there is no converter and what to install."""
    soffice = _soffice_on_path()
    if soffice is None:
        return f"making a PDF needs LibreOffice, and no soffice is on PATH: {_INSTALL_HINT}"
    return (
        f"making a PDF needs LibreOffice Writer to read HTML, and the LibreOffice at {soffice} "
        f"has none: {_INSTALL_HINT}"
    )


def html_to_pdf(
    html_path: Path, pdf_path: Path, *, converter: str | None = None, timeout: float = PDF_TIMEOUT
) -> Path:
    """Convert an HTML file to PDF with headless LibreOffice; returns ``pdf_path``.

    Each run has its own temporary LibreOffice profile, so runs in parallel
    (or beside a LibreOffice someone has open) do not wait for each other.
    """
    soffice = converter or find_converter()
    if soffice is None:
        raise CrmkitError(missing_converter_message())
    html_path = Path(html_path)
    pdf_path = Path(pdf_path)
    if not html_path.is_file():
        raise CrmkitError(f"no HTML file {html_path}")
    with tempfile.TemporaryDirectory(prefix="crmkit-pdf-") as work:
        profile = Path(work, "profile")
        outdir = Path(work, "out")
        command = [
            soffice,
            f"-env:UserInstallation={profile.as_uri()}",
            "--headless",
            "--norestore",
            "--nologo",
            f"--infilter={SOFFICE_IN_FILTER}",
            "--convert-to",
            SOFFICE_OUT_FILTER,
            "--outdir",
            str(outdir),
            str(html_path.resolve()),
        ]
        output = _run(command, timeout, html_path)
        made = outdir / f"{html_path.stem}.pdf"
        if not made.is_file() or made.stat().st_size == 0:
            said = output.strip().splitlines()[-1] if output.strip() else "no output"
            raise CrmkitError(f"LibreOffice made no PDF of {html_path} ({soffice} said: {said})")
        pdf_path.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(made), str(pdf_path))
    return pdf_path


def _run(command: list[str], timeout: float, html_path: Path) -> str:
    """Run soffice in its own process group, so a timeout stops all of it; returns what it printed."""
    posix = os.name == "posix"
    try:
        proc = subprocess.Popen(
            command,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            start_new_session=posix,
        )
    except OSError as exc:
        raise CrmkitError(f"cannot run {command[0]}: {exc.strerror or exc}") from None
    try:
        output, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        if posix:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        else:
            proc.kill()
        proc.communicate()
        raise CrmkitError(
            f"LibreOffice took more than {timeout:g} s to convert {html_path} to PDF; stopped it"
        ) from None
    return output or ""
