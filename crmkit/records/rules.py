"""Rules that tie a record's fields together, whoever changes it.

The CLI, a sheet sync and the mail poller all save records through the store,
and the store applies these rules on every save: a deal's probability and
forecast category follow its stage (unless set in the same change), every
stage change is written into the deal's stage history, and an invoice's
totals and paid/overdue status follow from its lines, payments and due date.
Pure functions over clean values; no I/O.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date, datetime, timedelta
from decimal import Decimal
from typing import Any

from crmkit.errors import FieldError, ValidationError
from crmkit.records.fields import DateTimeField
from crmkit.records.money import format_money, is_currency, quantize
from crmkit.records.schema import (
    DEAL,
    INVOICE,
    INVOICE_SET_STATUSES,
    QUOTE,
    STAGE_FORECAST,
    STAGE_PROBABILITY,
    RecordType,
)

__all__ = ["apply_rules", "invoice_status", "invoice_status_reason", "invoice_totals"]

_timestamp = DateTimeField("at")
#: A new invoice with no due date is due this many days after its issue date.
PAYMENT_TERMS_DAYS = 30
#: A new quote with no end date is valid this many days after its issue date.
QUOTE_VALID_DAYS = 30


def invoice_totals(lines: list[Mapping[str, Any]] | None, currency: str) -> dict[str, Decimal]:
    """Subtotal, tax and total of invoice (or quote) lines.

    Each line's amount and tax are rounded to the currency first, as a printed
    invoice shows them, so the lines always add up to the subtotal and tax.
    """
    subtotal = quantize(Decimal(0), currency)
    tax = quantize(Decimal(0), currency)
    for line in lines or ():
        net = line["quantity"] * line["unit_price"]
        subtotal += quantize(net, currency)
        tax += quantize(net * line["tax_rate"] / 100, currency)
    return {"subtotal": subtotal, "tax": tax, "total": subtotal + tax}


def invoice_status(invoice: Mapping[str, Any], today: date) -> str:
    """The status an invoice is in today.

    ``void`` is what a person set. A ``draft`` stays one until money comes in:
    an invoice someone paid went out, whatever its status says. From then on
    the amount paid and the due date decide between sent, partly_paid, paid
    and overdue.
    """
    status = invoice.get("status") or "draft"
    total = invoice.get("total") or Decimal(0)
    paid = invoice.get("amount_paid") or Decimal(0)
    if status == "void" or (status == "draft" and paid <= 0):
        return status
    if total > 0 and paid >= total:
        return "paid"
    due = invoice.get("due_date")
    if due is not None and due < today:
        return "overdue"
    return "partly_paid" if paid > 0 else "sent"


def invoice_status_reason(invoice: Mapping[str, Any], today: date) -> str:
    """The status and what it follows from: ``paid (1,500.00 of 1,500.00 USD received)``."""
    status = invoice_status(invoice, today)
    currency = invoice.get("currency")
    paid = format_money(invoice.get("amount_paid") or Decimal(0), currency).removesuffix(f" {currency}")
    received = f"{paid} of {format_money(invoice.get('total') or Decimal(0), currency)} received"
    due = invoice.get("due_date")
    if status == "void":
        return "void (set by hand: nothing is owed)"
    if status == "draft":
        return "draft (not sent yet, nothing received)"
    if status == "overdue":
        return f"overdue ({received}, due {due.isoformat()})" if due else f"overdue ({received})"
    if status in ("sent", "partly_paid") and due is not None:
        return f"{status} ({received}, due {due.isoformat()})"
    return f"{status} ({received})"


def _defaults(rt: RecordType, record: dict[str, Any]) -> None:
    for f in rt.user_fields:
        if record.get(f.name) is None and f.default is not None:
            record[f.name] = f.default


def _currency(rt: RecordType, record: dict[str, Any], default_currency: str) -> str:
    code = (record.get("currency") or default_currency).strip().upper()
    if not is_currency(code):
        raise ValidationError(
            rt.name, [FieldError("currency", record.get("currency"), "unknown currency code")]
        )
    record["currency"] = code
    return code


def _deal_rules(
    before: Mapping[str, Any],
    record: dict[str, Any],
    changes: Mapping[str, Any],
    now: datetime,
    actor: str,
    currency: str,
) -> None:
    if record.get("amount") is not None:
        record["amount"] = quantize(record["amount"], currency)
    stage = record.get("stage")
    if stage is None or stage == before.get("stage"):
        return  # a deal with no stage is refused by the required check
    # Entering a stage resets probability and forecast, as in every major CRM,
    # unless the same change sets them explicitly.
    if changes.get("probability") is None:
        record["probability"] = STAGE_PROBABILITY[stage]
    if changes.get("forecast_category") is None:
        record["forecast_category"] = STAGE_FORECAST[stage]
    history = list(record.get("stage_history") or [])
    history.append({"stage": stage, "from": before.get("stage"), "at": _timestamp.dump(now), "by": actor})
    record["stage_history"] = history


def _invoice_rules(
    before: Mapping[str, Any], record: dict[str, Any], changes: Mapping[str, Any], today: date, currency: str
) -> None:
    status = changes.get("status")
    if status is not None and status not in INVOICE_SET_STATUSES and status != before.get("status"):
        raise ValidationError(
            INVOICE.name,
            [
                FieldError(
                    "status", status, "follows from the amount paid and the due date; set draft, sent or void"
                )
            ],
        )
    if record.get("issue_date") is None:
        record["issue_date"] = today
    if record.get("due_date") is None and not before:
        record["due_date"] = record["issue_date"] + timedelta(days=PAYMENT_TERMS_DAYS)
    if record.get("amount_paid") is not None:
        record["amount_paid"] = quantize(record["amount_paid"], currency)
    record.update(invoice_totals(record.get("lines"), currency))
    record["status"] = invoice_status(record, today)


def apply_rules(
    rt: RecordType,
    before: Mapping[str, Any] | None,
    changes: Mapping[str, Any],
    *,
    now: datetime,
    actor: str,
    default_currency: str,
) -> dict[str, Any]:
    """The record after ``changes`` (clean values) are applied to ``before``.

    ``before`` is None for a new record. Returns the whole record, with the
    defaults, derived fields and stage history filled in, and checks that
    required fields are present.
    """
    record = {**(before or {}), **changes}
    if before is None:
        _defaults(rt, record)
    if rt is DEAL:
        currency = _currency(rt, record, default_currency)
        _deal_rules(before or {}, record, changes, now, actor, currency)
    elif rt is INVOICE:
        currency = _currency(rt, record, default_currency)
        _invoice_rules(before or {}, record, changes, now.date(), currency)
    elif rt is QUOTE:
        currency = _currency(rt, record, default_currency)
        if record.get("issue_date") is None:
            record["issue_date"] = now.date()
        if record.get("valid_until") is None and not before:
            record["valid_until"] = record["issue_date"] + timedelta(days=QUOTE_VALID_DAYS)
        record.update(invoice_totals(record.get("lines"), currency))
    rt.check_required(record)
    return record
