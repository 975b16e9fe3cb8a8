"""Records as they come out of the store, checked: a file edited by hand may hold anything.

crmkit writes only values its fields produced, but a person may edit a store's
file (or a table) by hand and leave ``"email": 5``, ``"amount": "12 500 đ"``,
a date as ``"04/12/2026"`` or a record without its ``id``. Everything that reads
records (lists, the 360° views, reports, syncs) counts on each field being in
its stored form, so the store checks each record it hands out
(:func:`stored_problems`, a few type checks for a sound one) and hands out a
copy without the bad values (:func:`without_problems`): they read as empty.
Pure functions; the store names each problem once.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, NamedTuple

from crmkit.records.fields import ChoiceField, Field
from crmkit.records.schema import RecordType, parse_id

__all__ = ["StoredProblem", "stored_problems", "without_problems"]


class StoredProblem(NamedTuple):
    """A stored value no field of its type could have written; ``field`` "id" for a missing or wrong id."""

    field: str
    value: Any
    problem: str


_TEXT_KINDS = frozenset({"text", "email", "phone", "ref"})


def _is_number_text(value: Any) -> bool:
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        return False
    try:
        return Decimal(value).is_finite()
    except (InvalidOperation, ValueError):
        return False


def _number(_: Field, value: Any) -> str | None:
    return None if _is_number_text(value) else 'is not a number (stored as text: "12.50")'


def _choice(f: Field, value: Any) -> str | None:
    assert isinstance(f, ChoiceField)
    return None if value in f.choices else f"is not one of: {', '.join(f.choices)}"


def _date(_: Field, value: Any) -> str | None:
    try:
        date.fromisoformat(value)
    except (TypeError, ValueError):
        return "is not a date (YYYY-MM-DD)"
    return None


def _moment(_: Field, value: Any) -> str | None:
    try:
        datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return "is not a date and time (ISO 8601)"
    return None


def _percent(f: Field, value: Any) -> str | None:
    if getattr(f, "whole", False):
        whole = isinstance(value, int) and not isinstance(value, bool)
        return None if whole else "is not a whole number"
    return _number(f, value)


def _whole(_: Field, value: Any) -> str | None:
    return None if isinstance(value, int) and not isinstance(value, bool) else "is not a whole number"


def _bool(_: Field, value: Any) -> str | None:
    return None if isinstance(value, bool) else "is not true or false"


def _tags(_: Field, value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(t, str) for t in value)
    return None if ok else "is not a list of tags"


def _json(_: Field, value: Any) -> str | None:
    ok = isinstance(value, list) and all(isinstance(item, Mapping) for item in value)
    return None if ok or isinstance(value, Mapping) else "is not a list of entries"


def _lines(_: Field, value: Any) -> str | None:
    if not isinstance(value, list):
        return "is not a list of lines"
    for number, line in enumerate(value, start=1):
        if not isinstance(line, Mapping) or not isinstance(line.get("description"), str):
            return f"line {number} is not a line with a description"
        if not all(_is_number_text(line.get(key)) for key in ("quantity", "unit_price", "tax_rate")):
            return f"line {number} has a quantity, unit_price or tax_rate that is not a number"
    return None


_CHECKS: dict[str, Callable[[Field, Any], str | None]] = {
    "choice": _choice,
    "date": _date,
    "datetime": _moment,
    "decimal": _number,
    "int": _whole,
    "percent": _percent,
    "bool": _bool,
    "tags": _tags,
    "json": _json,
    "lines": _lines,
}

#: Per table: the fields whose stored form is plain text, and the others with their checks.
_PLANS: dict[str, tuple[frozenset[str], dict[str, tuple[Field, Callable[[Field, Any], str | None]]]]] = {}


def _plan(
    rt: RecordType,
) -> tuple[frozenset[str], dict[str, tuple[Field, Callable[[Field, Any], str | None]]]]:
    plan = _PLANS.get(rt.table)
    if plan is None:
        text = frozenset(f.name for f in rt.fields if f.kind in _TEXT_KINDS and f.name != "id")
        others = {f.name: (f, _CHECKS[f.kind]) for f in rt.fields if f.kind in _CHECKS}
        plan = _PLANS[rt.table] = (text, others)
    return plan


def _id_problem(rt: RecordType, value: Any, number: int | None) -> str | None:
    if number is not None:
        return None if value == f"{rt.prefix}-{number}" else f"is not its number's id, {rt.prefix}-{number}"
    try:
        id_type, found = parse_id(value) if isinstance(value, str) else (None, 0)
    except Exception:
        id_type, found = None, 0
    return None if id_type is rt and value == f"{rt.prefix}-{found}" else f"is not {_a(rt.name)} id"


def _a(noun: str) -> str:
    return f"an {noun}" if noun[0] in "aeiou" else f"a {noun}"


def stored_problems(rt: RecordType, doc: Mapping[str, Any], number: int | None = None) -> list[StoredProblem]:
    """What in a stored record no field could have written; ``number``, where known, is the record's.

    An empty list for a sound record, found with a type check per field (and a
    parse of dates, numbers and lines): this runs on every record read.
    """
    text, others = _plan(rt)
    problems: list[StoredProblem] = []
    if "id" not in doc:
        problems.append(StoredProblem("id", None, "is missing"))
    else:
        problem = _id_problem(rt, doc["id"], number)
        if problem:
            problems.append(StoredProblem("id", doc["id"], problem))
    for key, value in doc.items():
        if value is None:
            continue
        if key in text:
            if type(value) is not str:
                problems.append(StoredProblem(key, value, "is not text"))
            continue
        check = others.get(key)
        if check is not None:
            problem = check[1](check[0], value)
            if problem:
                problems.append(StoredProblem(key, value, problem))
        elif key == "custom" and not isinstance(value, Mapping):
            problems.append(StoredProblem(key, value, "is not a set of named values"))
    return problems


def without_problems(
    rt: RecordType, doc: Mapping[str, Any], problems: list[StoredProblem], number: int | None
) -> dict[str, Any] | None:
    """A copy of ``doc`` with its bad values left out (read as empty) and its id from its number.

    None when the record has no usable id and its number is not known: nothing can address it.
    """
    copy = {k: v for k, v in doc.items() if k not in {p.field for p in problems}}
    if any(p.field == "id" for p in problems):
        if number is None:
            return None
        copy = {"id": f"{rt.prefix}-{number}", **copy}
    return copy
