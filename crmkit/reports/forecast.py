"""The forecast: deals by month or quarter of their close date, by forecast category, raw and weighted.

Categories, each deal in one: *closed won* (stage won), then the open deals'
own forecast category (set by their stage or by hand): *commit*, *best case*,
*pipeline*. Lost and omitted deals are left out. Weighted amounts use each
deal's probability, overridden or by its stage; a won deal counts whole.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from crmkit.errors import CrmkitError
from crmkit.records.schema import DEAL, OPEN_STAGES
from crmkit.reports.model import Chart, Column, Report, Table
from crmkit.reports.pipeline import weighted
from crmkit.store import Store

__all__ = ["CATEGORIES", "forecast"]

CATEGORIES = ("closed_won", "commit", "best_case", "pipeline")
_LABELS = {"closed_won": "Closed won", "commit": "Commit", "best_case": "Best case", "pipeline": "Pipeline"}
UNDATED = "no close date"


def _period(close: Any, by: str) -> str:
    if close is None:
        return UNDATED
    if by == "quarter":
        return f"{close.year}-Q{(close.month - 1) // 3 + 1}"
    return f"{close.year}-{close.month:02d}"


def forecast(store: Store, *, by: str = "month") -> Report:
    """Amounts per period and category, one table per currency, with weighted columns beside."""
    if by not in ("month", "quarter"):
        raise CrmkitError(f"--by must be month or quarter (got {by!r})")
    tables: dict[str, dict[str, dict[str, Any]]] = {}
    for doc in store.each("deals"):
        deal = DEAL.load(doc)
        stage = deal.get("stage")
        if stage == "won":
            category = "closed_won"
        elif stage in OPEN_STAGES and deal.get("forecast_category") == "closed":
            category = "closed_won"  # set by hand: the team counts it as closed
        elif stage in OPEN_STAGES and deal.get("forecast_category") in CATEGORIES:
            category = deal["forecast_category"]
        else:
            continue
        currency = deal.get("currency") or store.default_currency
        period = _period(deal.get("close_date"), by)
        row = tables.setdefault(currency, {}).setdefault(period, _empty(period))
        amount = deal.get("amount") or Decimal(0)
        row[category] += amount
        row[f"{category}_weighted"] += (
            amount if category == "closed_won" else weighted(amount, deal.get("probability"), currency)
        )
    report = Report("forecast", f"Forecast by {by}")
    columns = [Column("period", by.capitalize())]
    columns += [Column(c, _LABELS[c], "money") for c in CATEGORIES]
    columns += [Column("total", "Total", "money")]
    columns += [Column(f"{c}_weighted", f"{_LABELS[c]} weighted", "money") for c in CATEGORIES]
    columns += [Column("total_weighted", "Total weighted", "money")]
    for currency in sorted(tables):
        rows = sorted(tables[currency].values(), key=lambda r: (r["period"] == UNDATED, r["period"]))
        for row in rows:
            row["total"] = sum((row[c] for c in CATEGORIES), Decimal(0))
            row["total_weighted"] = sum((row[f"{c}_weighted"] for c in CATEGORIES), Decimal(0))
        chart = Chart("stacked_bar", "period", CATEGORIES, f"Forecast ({currency})")
        report.tables.append(Table(f"Forecast ({currency})", columns, rows, chart, currency))
    if not tables:
        report.notes.append("no deals to forecast")
    return report


def _empty(period: str) -> dict[str, Any]:
    row: dict[str, Any] = {"period": period}
    for category in CATEGORIES:
        row[category] = Decimal(0)
        row[f"{category}_weighted"] = Decimal(0)
    return row
