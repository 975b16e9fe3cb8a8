"""Filters on records: ``--where stage=won``, ``--where owner!=ana``, ``--where name~acme``.

A condition's value is parsed by its field first, so ``stage=Closed Won`` and
``email=ANA@X.COM`` match what the store keeps. Text compares without case.
Fields the schema does not know are looked up among the custom fields.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from crmkit.errors import CrmkitError, FieldError
from crmkit.records.schema import RecordType

__all__ = ["Condition", "matches", "parse_condition"]

_OPS = ("!=", "~", "=")
_COND = re.compile(r"^\s*([\w. ]+?)\s*(!=|~|=)(.*)$", re.DOTALL)


def _number(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        return None
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return None
    return number if number.is_finite() else None


@dataclass(frozen=True)
class Condition:
    """``field op value``: op is ``=`` (equal), ``!=`` (not equal) or ``~`` (contains)."""

    field: str
    op: str
    value: Any


def parse_condition(rt: RecordType, text: str) -> Condition:
    """``'stage=won'`` -> Condition('stage', '=', 'won'), with the value parsed by its field."""
    match = _COND.match(text)
    if not match:
        raise CrmkitError(f"bad filter {text!r}: write field=value, field!=value or field~text")
    name, op, raw = match.group(1), match.group(2), match.group(3).strip()
    if name.startswith("custom."):
        return Condition(name[len("custom.") :], op, raw)
    field = rt.by_name.get(name)
    if field is None and rt.field_for_header(name) is not None:
        field = rt.field_for_header(name)
    if field is None or op == "~":
        return Condition(field.name if field else name, op, raw)
    try:
        value = field.parse(raw)
    except FieldError as exc:
        raise CrmkitError(f"bad filter {text!r}: {exc.problem}") from None
    return Condition(field.name, op, field.dump(value))


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value).casefold()
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value).casefold()


def _equal(stored: Any, wanted: Any) -> bool:
    if isinstance(stored, list) and not isinstance(wanted, list):
        return _text(wanted) in (_text(v) for v in stored)
    if isinstance(stored, list) and isinstance(wanted, list) and wanted:
        have = {_text(v) for v in stored}  # tags=a,b: records with both tags, whatever else they have
        return all(_text(v) in have for v in wanted)
    if wanted is None or wanted is False or wanted == "":
        return stored is None or stored is False or stored in ("", [])
    left, right = _number(stored), _number(wanted)
    if left is not None and right is not None:
        return left == right  # 100 is 100.00
    return _text(stored) == _text(wanted)


def matches(doc: Mapping[str, Any], conditions: Iterable[Condition]) -> bool:
    """True when the stored record ``doc`` meets every condition."""
    custom = doc.get("custom") or {}
    for cond in conditions:
        stored = doc[cond.field] if cond.field in doc else custom.get(cond.field)
        if cond.op == "~":
            ok = _text(cond.value) in _text(stored)
        else:
            ok = _equal(stored, cond.value)
            if cond.op == "!=":
                ok = not ok
        if not ok:
            return False
    return True
