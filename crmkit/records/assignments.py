"""Values as people type them on a command line: ``name=Ana``, ``custom.Region=North``.

Shared by every front end that takes ``field=value`` text (the CLI today,
campaign and report filters later), so field names are understood the same
way everywhere: schema names, sheet headers (``E-mail=…``), or custom fields.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from crmkit.errors import CrmkitError
from crmkit.records.schema import RecordType

__all__ = ["AssignmentSyntaxError", "parse_assignments", "parse_line_spec"]


class AssignmentSyntaxError(CrmkitError):
    """Text that is not ``field=value`` (or not ``DESC|QTY|PRICE[|TAX%]``)."""


def parse_assignments(rt: RecordType, items: Iterable[str]) -> dict[str, Any]:
    """``("name=Ana", "custom.Region=North")`` -> ``{"name": "Ana", "Region": "North"}``.

    A key close to a known field (``emial``) is refused with a suggestion
    rather than quietly kept as a custom field.
    """
    values: dict[str, Any] = {}
    for item in items:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise AssignmentSyntaxError(f"expected field=value, got {item!r}")
        if key.startswith("custom."):
            values[key[len("custom.") :]] = value
            continue
        field = rt.by_name.get(key) or rt.field_for_header(key)
        if field is None:
            hint = rt.suggest(key)
            if hint:
                raise CrmkitError(
                    f"{rt.name} has no field {key!r}; did you mean {hint!r}? "
                    f"(write custom.{key}=… to keep it as a custom field)"
                )
            values[key] = value
            continue
        values[field.name] = value
    return values


def parse_line_spec(text: str) -> dict[str, str]:
    """``'Consulting|10|150|10'`` -> an invoice line (description, quantity, unit_price, tax_rate)."""
    parts = [p.strip() for p in text.split("|")]
    if not 3 <= len(parts) <= 4:
        raise AssignmentSyntaxError(f"--line needs DESC|QTY|PRICE[|TAX%], got {text!r}")
    line = {"description": parts[0], "quantity": parts[1], "unit_price": parts[2]}
    if len(parts) == 4:
        line["tax_rate"] = parts[3]
    return line
