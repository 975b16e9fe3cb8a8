"""How cell values and stored values are compared and converted. Pure functions.

Two values are the same when their *canonical* forms are equal: the JSON form
the store keeps, with numbers normalised (``1000`` and ``1000.00`` are one
amount), empty text and "no" read as nothing, and spreadsheet quirks smoothed
(a reader may hand over ``0.0`` for ``0`` and a midnight datetime for a date).
"""

from __future__ import annotations

import hashlib
from datetime import date, datetime, time, timedelta
from decimal import Decimal
from typing import Any

from crmkit.records.fields import (
    BoolField,
    DateField,
    DateTimeField,
    DecimalField,
    Field,
    LinesField,
    PercentField,
    TagsField,
)
from crmkit.sync.model import Formatted

__all__ = [
    "as_read",
    "canon",
    "canon_custom",
    "cell_value",
    "date_from_serial",
    "parse_cell",
    "row_signature",
    "serial_from_date",
]

#: Day 0 of the serial numbers spreadsheets keep dates as (Google Sheets; Excel after 1900-03-01).
_SERIAL_EPOCH = datetime(1899, 12, 30)
_LAST_SERIAL = 2958466  # 10000-01-01


def date_from_serial(field: Field, value: Any) -> Any:
    """A date or date-time cell that a reader handed over as its serial number, as a date or datetime.

    Anything else (text, a number out of range, a column of another kind) is returned as it was.
    """
    if (
        not isinstance(field, (DateField, DateTimeField))
        or isinstance(value, bool)
        or not isinstance(value, (int, float))
        or not 1 <= value < _LAST_SERIAL
    ):
        return value
    moment = _SERIAL_EPOCH + timedelta(days=value)
    moment = moment.replace(microsecond=0) + timedelta(seconds=round(moment.microsecond / 1e6))
    return moment.date() if isinstance(field, DateField) else moment


def serial_from_date(value: date) -> float:
    """The serial number a spreadsheet keeps for a date or a (naive) date and time."""
    if not isinstance(value, datetime):
        value = datetime(value.year, value.month, value.day)
    return (value.replace(tzinfo=None) - _SERIAL_EPOCH).total_seconds() / 86400


def _plain_decimal(value: Any) -> str:
    number = Decimal(str(value)).normalize()
    text = format(number, "f")
    return "0" if text in ("-0", "") else text


def canon(field: Field, value: Any) -> Any:
    """The comparable form of a value in the store's JSON form."""
    if value is None or value == "" or value == []:
        return False if isinstance(field, BoolField) else None
    if isinstance(field, DecimalField) or (isinstance(field, PercentField) and not field.whole):
        return _plain_decimal(value)
    if isinstance(field, LinesField):
        return [
            {
                "description": line.get("description") or "",
                "quantity": _plain_decimal(line["quantity"]),
                "unit_price": _plain_decimal(line["unit_price"]),
                "tax_rate": _plain_decimal(line["tax_rate"]),
            }
            for line in value
        ]
    return value


def parse_cell(field: Field, raw: Any) -> Any:
    """A cell's canonical value; raises FieldError when it does not fit the field."""
    return canon(field, field.dump(field.parse(raw)))


def canon_custom(raw: Any) -> Any:
    """The comparable form of a custom column's cell (kept as typed, JSON-safe)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return None
    if isinstance(raw, float) and raw.is_integer():
        return int(raw)
    if isinstance(raw, datetime):
        return raw.date().isoformat() if raw.time() == time(0) else raw.isoformat()
    if isinstance(raw, date):
        return raw.isoformat()
    if isinstance(raw, Decimal):
        return _plain_decimal(raw)
    if isinstance(raw, str):
        return raw.strip()
    return raw


def cell_value(field: Field | None, value: Any) -> Any:
    """What to put in a cell for a stored value: real dates and numbers, text otherwise."""
    if value is None:
        return None
    if field is None:
        return value
    if isinstance(field, BoolField):
        return "yes" if value else None
    if isinstance(field, DateField):
        return date.fromisoformat(value)
    if isinstance(field, DateTimeField):
        return datetime.fromisoformat(value).replace(tzinfo=None)
    if isinstance(field, DecimalField) or (isinstance(field, PercentField) and not field.whole):
        number = Decimal(value)
        # Spreadsheets keep doubles: an amount with more significant digits than a double
        # holds (about 15) would come back changed, so it goes into the cell as text.
        return number if Decimal(repr(float(number))) == number else format(number, "f")
    if isinstance(field, TagsField):
        return ", ".join(value)
    return value


def as_read(value: Any) -> Any:
    """A value as a reader hands it back after crmkit wrote it: numbers come back as floats.

    A :class:`~crmkit.sync.model.Formatted` value comes back as its value: the format shows, it is not read.
    """
    if isinstance(value, Formatted):
        value = value.value
    if isinstance(value, (int, Decimal)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str) and not value.strip():
        return None
    return value


def row_signature(cells: list[Any]) -> str:
    """A short fingerprint of a row as read, to skip rows nobody touched.

    Rows crmkit writes are signed on :func:`as_read` values, so the next read
    of an untouched row signs the same. Any difference only costs a full look
    at the row, never a missed change.
    """
    end = len(cells)
    while end and cells[end - 1] is None:
        end -= 1
    text = repr(cells[:end])
    return hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=10).hexdigest()
