"""The invoice work a team living in spreadsheets does by hand: quotes, invoices from quotes,
recurring invoices, and overdue ones (with reminders through the mail-merge machinery).

Every step is one store transaction, so it is all or nothing, and two runs at
the same moment take turns on the store's lock: numbers are never shared, a
recurring invoice is never issued twice for a period, a quote never becomes
two invoices.
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from typing import Any

from crmkit.errors import CrmkitError
from crmkit.mail.audience import Audience, Recipient, record_context, skip_reason
from crmkit.mail.journal import recover_if_idle, sends_of
from crmkit.records.rules import invoice_status
from crmkit.records.schema import DEAL, INVOICE
from crmkit.store import Store

__all__ = [
    "REMINDER_CAMPAIGN",
    "Issued",
    "RecurringRun",
    "invoice_from_quote",
    "last_reminders",
    "overdue_invoices",
    "period_key",
    "quote_from_deal",
    "reminder_audience",
    "run_recurring",
]

ACTOR = "billing"
_MONTHS = {"monthly": 1, "quarterly": 3, "yearly": 12}
#: A recurring invoice catches up at most this many missed periods in one run.
MAX_CATCH_UP = 36
_UNPAID = ("sent", "partly_paid", "overdue")
_COPIED = ("account", "contact", "deal", "currency", "lines", "owner")


def quote_from_deal(
    store: Store,
    deal_id: str,
    *,
    lines: Sequence[Mapping[str, Any]] | None = None,
    valid_until: date | None = None,
    actor: str | None = None,
) -> dict[str, Any]:
    """A draft quote for a deal: its account, contact, currency and owner, and ``lines``
    (default: one line, the deal's title at its amount)."""
    with store.transaction():
        deal = DEAL.load(store.lookup("deals", deal_id))
        if not lines:
            if deal.get("amount") is None:
                raise CrmkitError(f"{deal['id']} has no amount: give the quote its lines (--line)")
            lines = [
                {"description": deal["title"], "quantity": 1, "unit_price": deal["amount"], "tax_rate": 0}
            ]
        values = {"deal": deal["id"], "lines": list(lines), "valid_until": valid_until}
        for key in ("account", "contact", "currency", "owner"):
            values[key] = deal.get(key)
        return store.add("quotes", {k: v for k, v in values.items() if v is not None}, actor=actor or ACTOR)


def invoice_from_quote(
    store: Store, quote_id: str, *, actor: str | None = None
) -> tuple[dict[str, Any], bool]:
    """The invoice of a quote, carrying its lines; (invoice, made now). A quote is invoiced once:
    asking again returns the invoice it already has."""
    with store.transaction():
        quote = store.lookup("quotes", quote_id)
        if quote.get("invoice") and store.exists(quote["invoice"]):
            return store.get(quote["invoice"]), False
        if quote.get("status") in ("declined", "expired"):
            raise CrmkitError(f"{quote['id']} is {quote['status']}: it cannot become an invoice")
        if not quote.get("lines"):
            raise CrmkitError(f"{quote['id']} has no lines to invoice")
        values = {key: quote[key] for key in (*_COPIED, "deal") if quote.get(key) is not None}
        values["quote"] = quote["id"]
        invoice = store.add("invoices", values, allow_system=True, actor=actor or ACTOR)
        store.update(
            quote["id"],
            {"status": "invoiced", "invoice": invoice["id"]},
            allow_system=True,
            actor=actor or ACTOR,
        )
        return invoice, True


# -- recurring invoices ---------------------------------------------------------------------------


def _add_months(day: date, months: int) -> date:
    """``day`` plus ``months``, on the same day of the month or the month's last (Jan 31 -> Feb 28)."""
    month0 = day.month - 1 + months
    year, month = day.year + month0 // 12, month0 % 12 + 1
    return date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def period_key(day: date, schedule: str) -> str:
    """The period an invoice issued on ``day`` bills: ``2026-11``, ``2026-Q4`` or ``2026``."""
    if schedule == "monthly":
        return f"{day.year}-{day.month:02d}"
    if schedule == "quarterly":
        return f"{day.year}-Q{(day.month - 1) // 3 + 1}"
    return str(day.year)


def _span_of(period: Any) -> tuple[date, date] | None:
    """The days a period key bills, as [first day, first day after): ``2026-02``, ``2026-Q1``, ``2026``."""
    text = str(period or "")
    try:
        if len(text) == 7 and text[4] == "-" and text[5:].isdigit():
            start = date(int(text[:4]), int(text[5:]), 1)
            return start, _add_months(start, 1)
        if len(text) == 7 and text[4:6] == "-Q" and text[6] in "1234":
            start = date(int(text[:4]), 3 * (int(text[6]) - 1) + 1, 1)
            return start, _add_months(start, 3)
        if len(text) == 4 and text.isdigit():
            return date(int(text), 1, 1), date(int(text) + 1, 1, 1)
    except ValueError:
        return None
    return None


@dataclass(frozen=True)
class Issued:
    source: str  # the recurring invoice
    period: str
    invoice: str  # the copy issued for the period
    number: str


@dataclass
class RecurringRun:
    today: date
    issued: list[Issued] = field(default_factory=list)
    already: int = 0  # periods issued by an earlier run
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "today": self.today.isoformat(),
            "issued": [vars(i) for i in self.issued],
            "already_issued": self.already,
            "notes": self.notes,
        }


def run_recurring(store: Store, *, today: date | None = None, actor: str | None = None) -> RecurringRun:
    """Issue every recurring invoice's copies that are due by ``today``, each period exactly once.

    A recurring invoice (``schedule`` monthly, quarterly or yearly) bills its
    own period; each later period gets a copy dated the same day of the month
    (or the month's last), with the same lines, due the same number of days
    after it. A run that finds a period issued already (by itself earlier, by
    another run at the same moment, archived or voided since) leaves it: safe
    to run daily from cron and twice a day. Missed periods are caught up, at
    most :data:`MAX_CATCH_UP` per invoice per run.
    """
    run = RecurringRun(today or store.clock().date())
    with store.transaction():
        # recurring invoice -> the spans its copies billed (archived and void ones too), each read
        # from the copy's own period: a copy re-dated by hand still bills what it was issued for
        copies: dict[str, list[tuple[date, date]]] = {}
        for doc in store.all("invoices", archived=True):
            span = _span_of(doc.get("period")) or (
                _span_of(period_key(date.fromisoformat(doc["issue_date"]), "monthly"))
                if doc.get("issue_date")
                else None
            )
            if doc.get("recurring_of") and span is not None:
                copies.setdefault(doc["recurring_of"], []).append(span)
        for doc in store.all("invoices"):
            if not doc.get("schedule") or doc.get("recurring_of") or doc.get("status") == "void":
                continue
            source = INVOICE.load(doc)
            # a draft someone paid went out (records.rules): it repeats like a sent one
            if invoice_status(source, run.today) == "draft":
                run.notes.append(f"{doc['id']} repeats {doc['schedule']} but is a draft: send it to start")
                continue
            first = source.get("issue_date")
            if first is None:
                continue
            terms = (source["due_date"] - first) if source.get("due_date") else None
            step = _MONTHS[source["schedule"]]
            # what is billed already, as spans of days: a schedule changed from monthly to
            # quarterly, or back, never bills again a month or a quarter a copy covers
            if not doc.get("period"):  # what the invoice itself bills, kept for when its schedule changes
                store.update(
                    doc["id"],
                    {"period": period_key(first, source["schedule"])},
                    allow_system=True,
                    actor=actor or ACTOR,
                )
            own = _span_of(store.get(doc["id"]).get("period"))
            billed = [*([own] if own else []), *copies.get(source["id"], [])]
            for k in range(1, 10_000):
                day = _add_months(first, k * step)
                if day > run.today:
                    break
                period = period_key(day, source["schedule"])
                span = _span_of(period)
                assert span is not None
                if any(start < span[1] and span[0] < end for start, end in billed):
                    run.already += 1
                    continue
                if len([i for i in run.issued if i.source == source["id"]]) >= MAX_CATCH_UP:
                    run.notes.append(f"{source['id']}: more than {MAX_CATCH_UP} periods behind; run again")
                    break
                values = {key: source[key] for key in _COPIED if source.get(key) is not None}
                values.update(issue_date=day, status="sent", recurring_of=source["id"], period=period)
                if terms is not None:
                    values["due_date"] = day + terms
                copy = store.add("invoices", values, allow_system=True, actor=actor or ACTOR)
                billed.append(span)
                run.issued.append(Issued(source["id"], period, copy["id"], copy["number"]))
    return run


# -- overdue invoices -------------------------------------------------------------------------------


def overdue_invoices(store: Store, *, today: date | None = None, mark: bool = True) -> list[dict[str, Any]]:
    """Unpaid invoices past their due date, oldest due first; ``mark`` sets their status to overdue."""
    today = today or store.clock().date()
    found = []
    with store.transaction():
        for doc in store.all("invoices"):
            invoice = INVOICE.load(doc)
            due = invoice.get("due_date")
            balance = (invoice.get("total") or Decimal(0)) - (invoice.get("amount_paid") or Decimal(0))
            if invoice_status(invoice, today) not in _UNPAID or due is None or due >= today or balance <= 0:
                continue
            if mark and doc.get("status") != "overdue":
                doc = store.update(doc["id"], {"status": "sent"}, actor=ACTOR)  # the rules make it overdue
            found.append({**doc, "balance": format(balance, "f"), "days_overdue": (today - due).days})
    return sorted(found, key=lambda d: (d.get("due_date") or "", d["id"]))


#: The campaign (and journal) of invoice reminders: one entry per invoice per day it was reminded.
REMINDER_CAMPAIGN = "overdue reminders"


def last_reminders(store: Store) -> dict[str, date]:
    """The day each invoice was last reminded (a reminder handed to the server, perhaps delivered)."""
    recover_if_idle(store, REMINDER_CAMPAIGN)
    last: dict[str, date] = {}
    for doc in sends_of(store, REMINDER_CAMPAIGN):
        if doc.get("status") not in ("sent", "uncertain", "sending"):
            continue
        invoice_id, _, day = str(doc["record"]).rpartition(".")
        try:
            when = date.fromisoformat(day)
        except ValueError:
            continue
        last[invoice_id] = max(when, last.get(invoice_id, when))
    return last


def reminder_audience(
    store: Store, invoices: Iterable[Mapping[str, Any]], *, today: date, every_days: int = 7
) -> Audience:
    """One recipient per overdue invoice not reminded in the last ``every_days`` days.

    The recipient is the invoice's contact (else its account's only contact),
    with the invoice as ``invoice`` in the template; the journal counts
    ``<invoice id>.<today>``, so a second run the same day sends nothing more.
    """
    if every_days < 1:
        raise CrmkitError("--every must be at least 1 day")
    last = last_reminders(store)
    audience = Audience([], [])
    by_account: dict[str, list[dict[str, Any]]] | None = None  # made on the first invoice without a contact
    for invoice in invoices:
        key = f"{invoice['id']}.{today.isoformat()}"
        reminded = last.get(invoice["id"])
        if reminded is not None and reminded != today and (today - reminded).days < every_days:
            audience.skipped.append(
                Recipient(invoice["id"], "", None, key=key, skip=f"reminded within {every_days} days")
            )
            continue
        contact = store.peek(invoice["contact"]) if invoice.get("contact") else None
        if contact is None and invoice.get("account"):
            if by_account is None:
                by_account = {}
                for doc in store.all("contacts"):
                    by_account.setdefault(str(doc.get("account")), []).append(doc)
            mine = by_account.get(invoice["account"], [])
            contact = mine[0] if len(mine) == 1 else None
        if contact is None:
            audience.skipped.append(
                Recipient(invoice["id"], "", None, key=key, skip="invoice without a contact")
            )
            continue
        person = Recipient(contact["id"], str(contact.get("name") or ""), contact.get("email"), key=key)
        person.skip = skip_reason(contact)
        if person.skip:
            audience.skipped.append(person)
            continue
        person.context = record_context(store, contact, invoice=invoice)
        audience.recipients.append(person)
    return audience
