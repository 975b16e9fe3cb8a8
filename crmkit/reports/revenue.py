"""Revenue: money received on invoices, by month, owner, lead source, region and account tier.

Revenue is what customers paid: the ``amount paid`` of every invoice that is
not void (a partly paid invoice counts for its paid part), in the month of
its issue date. Each figure is in its invoice's currency; a currency is never
added to another.

Who and where an invoice belongs to: its owner (else its deal's, else its
account's); the lead source of its deal (else of its contact); the region and
tier of its account. A customer is an account (a contact, for invoices
without one).
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from crmkit.records.money import quantize
from crmkit.records.schema import INVOICE
from crmkit.reports.model import Chart, Column, Report, Table
from crmkit.store import Store

__all__ = ["revenue"]

NONE = "(none)"


def revenue(store: Store) -> Report:
    """Paid amounts per currency: by month (a line), by owner (a leaderboard), by source, region, tier."""
    by: dict[str, dict[str, dict[str, list[Any]]]] = {}  # currency -> dimension -> key -> [amount, count]
    customers: dict[str, set[str]] = {}
    for doc in store.each("invoices"):
        invoice = INVOICE.load(doc)
        paid = invoice.get("amount_paid") or Decimal(0)
        if invoice.get("status") == "void" or paid <= 0:
            continue
        currency = invoice.get("currency") or store.default_currency
        deal = _peek(store, invoice.get("deal"))
        contact = _peek(store, invoice.get("contact"))
        account = _peek(store, invoice.get("account") or deal.get("account") or contact.get("account"))
        issued = invoice.get("issue_date")
        keys = {
            "month": f"{issued.year}-{issued.month:02d}" if issued else NONE,
            "owner": invoice.get("owner") or deal.get("owner") or account.get("owner") or NONE,
            "source": deal.get("source") or contact.get("source") or NONE,
            "region": account.get("region") or NONE,
            "tier": account.get("tier") or NONE,
        }
        dims = by.setdefault(currency, {})
        for dimension, key in keys.items():
            cell = dims.setdefault(dimension, {}).setdefault(str(key), [Decimal(0), 0])
            cell[0] += paid
            cell[1] += 1
        customer = account.get("id") or contact.get("id") or invoice["id"]
        customers.setdefault(currency, set()).add(str(customer))
    report = Report("revenue", "Revenue received")
    for currency in sorted(by):
        dims = by[currency]
        total = sum((amount for amount, _ in dims["month"].values()), Decimal(0))
        count = len(customers[currency])
        report.tables.append(
            Table(
                f"Revenue ({currency})",
                [Column("measure", "Measure"), Column("value", "Value", "money")],
                [
                    {"measure": "total received", "value": total},
                    {
                        "measure": f"average per customer ({count} customer{'s' if count != 1 else ''})",
                        "value": quantize(total / count, currency),
                    },
                ],
                currency=currency,
            )
        )
        for dimension, title, order_by_amount in (
            ("month", "By month", False),
            ("owner", "By owner", True),
            ("source", "By lead source", True),
            ("region", "By region", True),
            ("tier", "By account tier", False),
        ):
            items = dims[dimension].items()
            ordered = (
                sorted(items, key=lambda kv: (-kv[1][0], kv[0]))
                if order_by_amount
                else sorted(items, key=lambda kv: (kv[0] == NONE, kv[0]))
            )
            rows = [{"key": key, "revenue": amount, "invoices": n} for key, (amount, n) in ordered]
            chart = (
                Chart("line", "key", ("revenue",), f"Revenue by month ({currency})")
                if dimension == "month"
                else None
            )
            report.tables.append(
                Table(
                    f"{title} ({currency})",
                    [
                        Column("key", dimension.capitalize() if dimension != "source" else "Lead source"),
                        Column("revenue", "Revenue", "money"),
                        Column("invoices", "Invoices", "int"),
                    ],
                    rows,
                    chart,
                    currency,
                )
            )
    if not by:
        report.notes.append("no payments recorded on invoices")
    return report


def _peek(store: Store, record_id: Any) -> dict[str, Any]:
    if not record_id:
        return {}
    doc = store.peek(str(record_id))
    return dict(doc) if doc else {}
