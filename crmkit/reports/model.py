"""What a report is, whatever it reports on: titled tables of typed columns, each with a chart.

Every report (:mod:`crmkit.reports.pipeline`, ``funnel``, ``forecast``,
``revenue``, ``cases``) returns a :class:`Report`; the terminal printer, the
``--json`` output and the workbook writer (:mod:`crmkit.reports.xlsx`) only
ever see this shape, so a new report needs no new output code. Money is never
mixed across currencies: a report that sums money makes one table per
currency.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Any

from crmkit.records.money import MINOR_UNITS

__all__ = ["Chart", "Column", "Report", "Table"]

#: Column kinds: how a value prints, goes into JSON and into a cell.
KINDS = ("text", "int", "money", "percent", "days", "date")
#: The kinds that hold numbers: right-aligned, never cut.
NUMERIC_KINDS = frozenset({"int", "money", "percent", "days"})


@dataclass(frozen=True)
class Column:
    key: str
    label: str
    kind: str = "text"  # one of KINDS; "percent" values are fractions (0.25 is 25%)


@dataclass(frozen=True)
class Chart:
    """A native chart of a table: ``categories`` is a column key, ``series`` are column keys."""

    kind: str  # "bar", "stacked_bar" or "line"
    categories: str
    series: tuple[str, ...]
    title: str = ""
    horizontal: bool = False  # a funnel reads best as horizontal bars, widest first


@dataclass
class Table:
    title: str
    columns: list[Column]
    rows: list[dict[str, Any]]
    chart: Chart | None = None
    currency: str | None = None  # the currency of every money column, when there is one

    def as_json(self) -> dict[str, Any]:
        return {
            "title": self.title,
            "currency": self.currency,
            "columns": [{"key": c.key, "label": c.label, "kind": c.kind} for c in self.columns],
            "rows": [{c.key: json_value(row.get(c.key)) for c in self.columns} for row in self.rows],
        }


@dataclass
class Report:
    name: str  # pipeline, funnel, forecast, revenue, cases
    title: str
    tables: list[Table] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        return {
            "report": self.name,
            "title": self.title,
            "tables": [table.as_json() for table in self.tables],
            "notes": self.notes,
        }


def json_value(value: Any) -> Any:
    """Decimals as exact strings (money must not become a float), dates as ISO text."""
    if isinstance(value, Decimal):
        return format(value, "f")
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return value


def text_value(value: Any, kind: str, currency: str | None = None) -> str:
    """How a value reads in a terminal table (money with its currency's minor unit)."""
    if value is None:
        return ""
    if kind == "money":
        places = MINOR_UNITS.get(currency or "", 2)
        return f"{Decimal(value):,.{places}f}"
    if kind == "percent":
        return f"{value * 100:.1f}%"
    if kind == "days":
        return f"{value:.1f} d"
    if kind == "int":
        return f"{value:,}"
    if isinstance(value, (date, datetime)):
        return value.isoformat()
    return str(value)
