"""What crmkit writes into a sheet's cells, and when a cell must be written again."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from crmkit.errors import FieldError
from crmkit.records.fields import DateField, DateTimeField, DecimalField, Field, IntField, PercentField
from crmkit.sync.model import Formatted
from crmkit.sync.values import canon_custom, cell_value, date_from_serial, parse_cell
from crmkit.workbooks import money_format

__all__ = ["UNREADABLE", "is_number", "readonly_value", "same_id", "typed_as_text", "written_cell"]

#: Fields a cell holds as a number or a date: typed as text, the cell is written back as one.
TYPED = (DecimalField, IntField, PercentField, DateField, DateTimeField)
#: A read-only cell holding something crmkit never writes there: it differs from every value.
UNREADABLE = object()


def readonly_value(field: Field | None, raw: Any, *, serial_dates: bool) -> Any:
    """The value of a cell crmkit keeps (a total, a timestamp), to tell whether to rewrite it."""
    if field is None:
        return canon_custom(raw)
    if serial_dates:
        raw = date_from_serial(field, raw)
    try:
        return parse_cell(field, raw)
    except FieldError:
        return UNREADABLE  # whatever is there is not what crmkit keeps: rewrite it


def written_cell(field: Field | None, value: Any, currency: str | None) -> Any:
    """What to write into a cell for a stored value: money as a number in its currency's format."""
    out = cell_value(field, value)
    if isinstance(field, DecimalField) and isinstance(out, Decimal):
        return Formatted(out, money_format(currency))
    return out


def is_number(raw: Any) -> bool:
    return isinstance(raw, (int, float, Decimal)) and not isinstance(raw, bool)


def typed_as_text(field: Field | None, raw: Any, value: Any) -> bool:
    """A number or date column's cell holds its value as text, where it can hold the real thing."""
    plain = value.value if isinstance(value, Formatted) else value
    return (
        isinstance(field, TYPED)
        and isinstance(raw, str)
        and plain is not None
        and not isinstance(plain, str)  # an amount beyond a double stays text
    )


def same_id(cells: list[Any], index: int, record_id: str) -> bool:
    """The row's ID cell already holds ``record_id`` (spaces around it aside)."""
    value = cells[index] if index < len(cells) else None
    return value is not None and str(value).strip() == record_id
