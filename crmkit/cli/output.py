"""How the CLI prints: JSON for scripts, aligned tables and key/value blocks for people."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any

import click

from crmkit.records.schema import RecordType

__all__ = ["emit_json", "format_value", "json_option", "print_record", "print_table"]

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
    rt: RecordType, doc: Mapping[str, Any], *, skip: Callable[[str], bool] = lambda _: False
) -> None:
    """One record as ``Label: value`` lines, empty fields left out."""
    items = [
        (f.label, format_value(rt, f.name, doc.get(f.name)))
        for f in rt.fields
        if doc.get(f.name) not in (None, "", [], False) and not skip(f.name)
    ]
    items += [(str(k), str(v)) for k, v in (doc.get("custom") or {}).items()]
    width = max((len(label) for label, _ in items), default=0)
    for label, value in items:
        click.echo(f"{label + ':':<{width + 1}} {value}")
