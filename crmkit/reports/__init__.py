"""Reports over the store: pipeline, funnel, forecast, revenue and cases.

Each returns a :class:`~crmkit.reports.model.Report`, which the CLI prints,
turns into JSON, or writes into a workbook with native charts
(:mod:`crmkit.reports.xlsx`).
"""

from crmkit.reports.cases import cases
from crmkit.reports.forecast import forecast
from crmkit.reports.funnel import funnel
from crmkit.reports.model import Chart, Column, Report, Table
from crmkit.reports.pipeline import pipeline
from crmkit.reports.revenue import revenue

__all__ = [
    "REPORTS",
    "Chart",
    "Column",
    "Report",
    "Table",
    "cases",
    "forecast",
    "funnel",
    "pipeline",
    "revenue",
]

REPORTS = ("pipeline", "funnel", "forecast", "revenue", "cases")
