"""The pipeline: open deals per pipeline and stage, with their amount and weighted amount."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from crmkit.records.money import quantize
from crmkit.records.schema import DEAL, DEAL_STAGES, OPEN_STAGES
from crmkit.reports.model import Chart, Column, Report, Table
from crmkit.store import Store

__all__ = ["pipeline", "weighted"]


def weighted(amount: Decimal, probability: Any, currency: str) -> Decimal:
    """``amount`` × ``probability`` % (a deal's own probability, overridden or by its stage)."""
    return quantize(amount * Decimal(probability or 0) / 100, currency)


#: What the pipeline reads of a deal: loading only these keeps the report quick with years of deals.
_PIPELINE_FIELDS = ("stage", "pipeline", "amount", "currency", "probability")


def pipeline(store: Store) -> Report:
    """Open deals per pipeline and stage: count, amount and weighted amount, one table per currency.

    The chart stacks each stage's weighted amount and the rest of its amount
    (the upside), so a bar is as long as the stage's whole amount.
    """
    groups: dict[str, dict[tuple[str, str], dict[str, Any]]] = {}
    for doc in store.each("deals"):
        if doc.get("stage") not in OPEN_STAGES:  # stages are stored as they load: skip before loading
            continue
        deal = DEAL.load({k: doc[k] for k in _PIPELINE_FIELDS if k in doc})
        currency = deal.get("currency") or store.default_currency
        key = (deal.get("pipeline") or "sales", deal["stage"])
        row = groups.setdefault(currency, {}).setdefault(
            key,
            {"pipeline": key[0], "stage": key[1], "count": 0, "amount": Decimal(0), "weighted": Decimal(0)},
        )
        amount = deal.get("amount") or Decimal(0)
        row["count"] += 1
        row["amount"] += amount
        row["weighted"] += weighted(amount, deal.get("probability"), currency)
    order = {stage: i for i, stage in enumerate(DEAL_STAGES)}
    report = Report("pipeline", "Open pipeline")
    totals: list[dict[str, Any]] = []
    columns = [
        Column("pipeline", "Pipeline"),
        Column("stage", "Stage"),
        Column("count", "Deals", "int"),
        Column("amount", "Amount", "money"),
        Column("weighted", "Weighted", "money"),
        Column("upside", "Upside", "money"),
    ]
    for currency in sorted(groups):
        rows = sorted(groups[currency].values(), key=lambda r: (r["pipeline"], order[r["stage"]]))
        several = len({r["pipeline"] for r in rows}) > 1
        for row in rows:
            row["upside"] = row["amount"] - row["weighted"]
            row["label"] = f"{row['pipeline']}: {row['stage']}" if several else row["stage"]
        categories = "label" if several else "stage"
        chart = Chart("stacked_bar", categories, ("weighted", "upside"), f"Open pipeline ({currency})")
        report.tables.append(
            Table(
                f"Open deals ({currency})",
                [Column("label", "Segment"), *columns[2:]] if several else columns[1:],
                rows,
                chart,
                currency,
            )
        )
        totals.append(
            {
                "currency": currency,
                "count": sum(r["count"] for r in rows),
                "amount": sum((r["amount"] for r in rows), Decimal(0)),
                "weighted": sum((r["weighted"] for r in rows), Decimal(0)),
            }
        )
    if totals:
        report.tables.append(
            Table(
                "Total",
                [
                    Column("currency", "Currency"),
                    Column("count", "Deals", "int"),
                    Column("amount", "Amount", "money"),
                    Column("weighted", "Weighted", "money"),
                ],
                totals,
            )
        )
    else:
        report.notes.append("no open deals")
    return report
