"""How the CLI prints: JSON for scripts, aligned tables and key/value blocks for people."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import click

from crmkit.plural import counted
from crmkit.records.fields import DateTimeField
from crmkit.records.money import MINOR_UNITS, quantize
from crmkit.records.schema import RecordType

__all__ = [
    "counted",
    "emit_json",
    "example",
    "format_value",
    "json_option",
    "print_lines",
    "print_record",
    "print_stage_history",
    "print_table",
]

_MOMENT = DateTimeField("at")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


def _default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return format(value, "f")
    return str(value)


def emit_json(data: Any) -> None:
    click.echo(json.dumps(data, ensure_ascii=False, indent=2, default=_default))


def format_value(rt: RecordType, name: str, value: Any) -> str:
    """A stored value as a person reads it in a table."""
    if value is None:
        return ""
    field = rt.by_name.get(name)
    if field is None:
        return str(value)
    return field.format(field.load(value))


def print_table(rows: Sequence[Sequence[str]], headers: Sequence[str], *, max_width: int = 40) -> None:
    """Aligned columns; long cells are cut with an ellipsis."""

    def cut(text: str) -> str:
        text = text.replace("\n", " ")
        return text if len(text) <= max_width else text[: max_width - 1] + "…"

    cells = [[cut(c) for c in row] for row in rows]
    widths = [len(h) for h in headers]
    for row in cells:
        widths = [max(w, len(c)) for w, c in zip(widths, row, strict=True)]

    def line(items: Iterable[str]) -> str:
        return "  ".join(c.ljust(w) for c, w in zip(items, widths, strict=True)).rstrip()

    click.echo(line(headers))
    click.echo(line("-" * w for w in widths))
    for row in cells:
        click.echo(line(row))


def print_record(
    rt: RecordType,
    doc: Mapping[str, Any],
    *,
    skip: Callable[[str], bool] = lambda _: False,
    shown: Mapping[str, str] | None = None,
) -> None:
    """One record as ``Label: value`` lines, empty fields left out; ``shown`` replaces a field's text."""
    shown = shown or {}
    items = [
        (f.label, shown.get(f.name) or format_value(rt, f.name, doc.get(f.name)))
        for f in rt.fields
        if doc.get(f.name) not in (None, "", [], False) and not skip(f.name)
    ]
    items += [(str(k), str(v)) for k, v in (doc.get("custom") or {}).items()]
    width = max((len(label) for label, _ in items), default=0)
    for label, value in items:
        click.echo(f"{label + ':':<{width + 1}} {value}")


def _number(value: Decimal) -> str:
    return f"{value.normalize():,f}"


def print_lines(rt: RecordType, doc: Mapping[str, Any]) -> None:
    """An invoice's or a quote's lines as a table, each line's amount before tax in its currency."""
    lines = rt.by_name["lines"].load(doc.get("lines")) or []
    currency = str(doc.get("currency") or "")
    places = MINOR_UNITS.get(currency, 2)
    rows = []
    for line in lines:
        amount = quantize(line["quantity"] * line["unit_price"], currency)
        rows.append(
            [
                str(line["description"]),
                _number(line["quantity"]),
                f"{quantize(line['unit_price'], currency):,.{places}f}",
                _number(line["tax_rate"]),
                f"{amount:,.{places}f}",
            ]
        )
    click.echo(f"\nLines ({len(rows)}):" if rows else "\nLines: none")
    if rows:
        print_table(rows, ["Description", "Qty", "Unit price", "Tax %", "Amount"], max_width=60)


def print_stage_history(history: Any) -> None:
    """A deal's stage changes, one a line: ``2026-12-04 10:15  prospecting → negotiation  (ana)``."""
    entries = [e for e in history if isinstance(e, Mapping)] if isinstance(history, list) else []
    if not entries:
        return
    click.echo("\nStage history:")
    for entry in entries:
        at = str(entry.get("at") or "")
        try:
            when = _MOMENT.format(_MOMENT.load(at))
        except (TypeError, ValueError):
            when = at
        stage = entry.get("stage")
        change = f"{entry['from']} → {stage}" if entry.get("from") else f"opened in {stage}"
        by = str(entry.get("by") or "").removeprefix("cli:")
        click.echo(f"  {when}  {change}" + (f"  ({by})" if by else ""))


def example(*lines: str) -> str:
    """An "Example:" block to end a command's help with (click keeps its lines as they are)."""
    return "\n\n\b\nExample:\n" + "\n".join(f"    {line}" for line in lines)
