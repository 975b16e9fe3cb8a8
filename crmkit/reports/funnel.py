"""The funnel: how many leads and deals reach each stage, how many go on, and how long each stage takes.

A deal *reaches* a stage when its stage history shows it in that stage or in a
later one (a deal entered at "proposal" has passed the stages before it), so
the counts never grow down the funnel. Lost deals count for the stages they
reached before being lost. Time in a stage is measured from entering it to
leaving it, from the history crmkit records on every stage change (CLI, sync
or poller alike); a stage a deal is still in is not counted.
"""

from __future__ import annotations

import itertools
import statistics
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from crmkit.records.schema import DEAL_STAGES
from crmkit.reports.model import Chart, Column, Report, Table
from crmkit.store import Store

__all__ = ["FUNNEL_STAGES", "funnel"]

FUNNEL_STAGES = tuple(stage for stage in DEAL_STAGES if stage != "lost")
_ORDER = {stage: i for i, stage in enumerate(FUNNEL_STAGES)}


def _history(doc: Mapping[str, Any]) -> list[tuple[str, datetime]]:
    out = []
    for entry in doc.get("stage_history") or []:
        try:
            at = datetime.fromisoformat(str(entry["at"]))
        except (KeyError, TypeError, ValueError):
            continue  # a hand-edited entry: left out, not a crash
        out.append((str(entry.get("stage")), at if at.tzinfo else at.replace(tzinfo=UTC)))
    return sorted(out, key=lambda item: item[1])


def funnel(store: Store) -> Report:
    """Leads, then deals per stage: reached, conversion to the next step, median days in the stage."""
    leads = list(store.each("leads"))
    converted = [lead for lead in leads if lead.get("converted_deal") or lead.get("converted_contact")]
    deals = list(store.each("deals"))
    reached = dict.fromkeys(FUNNEL_STAGES, 0)
    days: dict[str, list[float]] = {stage: [] for stage in FUNNEL_STAGES}
    won_ids = set()
    for deal in deals:
        history = _history(deal)
        stages = [stage for stage, _ in history if stage in _ORDER]
        if deal.get("stage") in _ORDER:
            stages.append(deal["stage"])
        if stages:
            furthest = max(_ORDER[stage] for stage in stages)
            for stage in FUNNEL_STAGES[: furthest + 1]:
                reached[stage] += 1
        if deal.get("stage") == "won":
            won_ids.add(deal["id"])
        for (stage, entered), (_, left) in itertools.pairwise(history):
            if stage in days:
                days[stage].append((left - entered).total_seconds() / 86400)
    rows: list[dict[str, Any]] = [
        {
            "stage": "leads",
            "reached": len(leads),
            "next": _rate(len(converted), len(leads)),
            "median_days": None,
        }
    ]
    for i, stage in enumerate(FUNNEL_STAGES):
        following = reached[FUNNEL_STAGES[i + 1]] if i + 1 < len(FUNNEL_STAGES) else None
        rows.append(
            {
                "stage": stage,
                "reached": reached[stage],
                "next": None if following is None else _rate(following, reached[stage]),
                "median_days": round(statistics.median(days[stage]), 1)
                if days[stage] and stage != "won"
                else None,
            }
        )
    leads_won = sum(1 for lead in converted if lead.get("converted_deal") in won_ids)
    table = Table(
        "Stages",
        [
            Column("stage", "Stage"),
            Column("reached", "Reached", "int"),
            Column("next", "On to the next", "percent"),
            Column("median_days", "Median days in stage", "days"),
        ],
        rows,
        Chart("bar", "stage", ("reached",), "Funnel", horizontal=True),
    )
    summary = Table(
        "Conversion",
        [Column("measure", "Measure"), Column("count", "Count", "int"), Column("rate", "Rate", "percent")],
        [
            {
                "measure": "leads converted",
                "count": len(converted),
                "rate": _rate(len(converted), len(leads)),
            },
            {"measure": "leads won (lead to won)", "count": leads_won, "rate": _rate(leads_won, len(leads))},
            {
                "measure": "deals won (first stage to won)",
                "count": reached["won"],
                "rate": _rate(reached["won"], reached[FUNNEL_STAGES[0]]),
            },
        ],
    )
    return Report("funnel", "Funnel", [table, summary])


def _rate(part: int, whole: int) -> float | None:
    return round(part / whole, 4) if whole else None
