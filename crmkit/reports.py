"""Reports over the store. Money is summed as Decimal and kept per currency.

For now the pipeline; the funnel, forecast and revenue reports build on it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from crmkit.records.money import quantize
from crmkit.records.schema import DEAL, DEAL_STAGES, OPEN_STAGES
from crmkit.store import Store

__all__ = ["PipelineRow", "pipeline"]


@dataclass
class PipelineRow:
    """Open deals of one pipeline, stage and currency."""

    pipeline: str
    stage: str
    currency: str
    count: int = 0
    amount: Decimal = Decimal(0)
    weighted: Decimal = Decimal(0)

    def as_json(self) -> dict[str, Any]:
        return {
            "pipeline": self.pipeline,
            "stage": self.stage,
            "currency": self.currency,
            "count": self.count,
            "amount": format(self.amount, "f"),
            "weighted": format(self.weighted, "f"),
        }


@dataclass
class Pipeline:
    rows: list[PipelineRow] = field(default_factory=list)

    def totals(self) -> dict[str, tuple[int, Decimal, Decimal]]:
        """Per currency: (count, amount, weighted amount) of all open deals."""
        out: dict[str, tuple[int, Decimal, Decimal]] = {}
        for row in self.rows:
            count, amount, weighted = out.get(row.currency, (0, Decimal(0), Decimal(0)))
            out[row.currency] = (count + row.count, amount + row.amount, weighted + row.weighted)
        return out


def pipeline(store: Store) -> Pipeline:
    """Open deals per pipeline and stage: count, amount and weighted amount (amount × probability)."""
    groups: dict[tuple[str, str, str], PipelineRow] = {}
    for doc in store.all("deals"):
        deal = DEAL.load(doc)
        if deal.get("stage") not in OPEN_STAGES:
            continue
        currency = deal.get("currency") or store.default_currency
        key = (deal.get("pipeline") or "sales", deal["stage"], currency)
        row = groups.setdefault(key, PipelineRow(*key))
        amount = deal.get("amount") or Decimal(0)
        row.count += 1
        row.amount += amount
        row.weighted += quantize(amount * Decimal(deal.get("probability") or 0) / 100, currency)
    order = {stage: i for i, stage in enumerate(DEAL_STAGES)}
    rows = sorted(groups.values(), key=lambda r: (r.pipeline, order[r.stage], r.currency))
    return Pipeline(rows)
