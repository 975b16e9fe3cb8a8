"""Open cases by priority and age, oldest first: where support is behind."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from crmkit.reports.model import Chart, Column, Report, Table
from crmkit.store import Store

__all__ = ["AGE_BUCKETS", "OPEN_CASE_STATUSES", "cases"]

OPEN_CASE_STATUSES = ("new", "open", "pending")
PRIORITIES = ("urgent", "high", "normal", "low")
#: (label, up to this many days old)
AGE_BUCKETS = (
    ("under 1 day", 1),
    ("1-3 days", 3),
    ("3-7 days", 7),
    ("7-30 days", 30),
    ("over 30 days", None),
)


def _bucket(days: float) -> str:
    for label, limit in AGE_BUCKETS:
        if limit is None or days < limit:
            return label
    raise AssertionError("unreachable")


def cases(store: Store, *, now: datetime | None = None) -> Report:
    """Every open case with its age in days (oldest first), and counts by priority and age."""
    now = now or datetime.now(UTC)
    rows: list[dict[str, Any]] = []
    for doc in store.each("cases"):
        if doc.get("status", "new") not in OPEN_CASE_STATUSES:
            continue
        try:
            opened: datetime | None = datetime.fromisoformat(str(doc["created_at"]))
        except (KeyError, ValueError):
            opened = None  # written around crmkit: its age is unknown, it goes last
        if opened is not None and opened.tzinfo is None:
            opened = opened.replace(tzinfo=UTC)
        age = (now - opened).total_seconds() / 86400 if opened is not None else None
        rows.append(
            {
                "id": doc["id"],
                "subject": doc.get("subject", ""),
                "priority": doc.get("priority", "normal"),
                "status": doc.get("status", "new"),
                "age_days": None if age is None else round(age, 1),
                "age": age,
                "contact": doc.get("contact"),
                "owner": doc.get("owner"),
                "opened": opened,
            }
        )
    rows.sort(key=lambda r: (r["opened"] is None, r["opened"] or now, r["id"]))
    summary = []
    for priority in PRIORITIES:
        mine = [r for r in rows if r["priority"] == priority]
        row: dict[str, Any] = {"priority": priority, "open": len(mine)}
        for label, _ in AGE_BUCKETS:
            row[label] = sum(1 for r in mine if r["age"] is not None and _bucket(r["age"]) == label)
        row["oldest_days"] = max((r["age_days"] for r in mine if r["age"] is not None), default=None)
        summary.append(row)
    buckets = tuple(label for label, _ in AGE_BUCKETS)
    report = Report("cases", "Open cases")
    report.tables.append(
        Table(
            "By priority and age",
            [
                Column("priority", "Priority"),
                Column("open", "Open", "int"),
                *(Column(label, label.capitalize(), "int") for label in buckets),
                Column("oldest_days", "Oldest", "days"),
            ],
            summary,
            Chart("stacked_bar", "priority", buckets, "Open cases by age"),
        )
    )
    report.tables.append(
        Table(
            "Oldest first",
            [
                Column("id", "Case"),
                Column("subject", "Subject"),
                Column("priority", "Priority"),
                Column("status", "Status"),
                Column("age_days", "Age", "days"),
                Column("contact", "Contact"),
                Column("owner", "Owner"),
            ],
            rows,
        )
    )
    if not rows:
        report.notes.append("no open cases")
    return report
