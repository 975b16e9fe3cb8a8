"""Field types: how one value is parsed, checked, stored and shown.

Each field turns what a person typed (a CLI argument, a spreadsheet cell, a
mail header) into a clean Python value with :meth:`Field.parse`, raising
:class:`~crmkit.errors.FieldError` with the field's name and the bad value.
The store keeps JSON: :meth:`Field.dump` and :meth:`Field.load` convert.
Money is Decimal, never float; dates are ISO 8601 strings in the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from functools import lru_cache
from typing import Any

from crmkit.errors import FieldError

__all__ = [
    "BoolField",
    "ChoiceField",
    "DateField",
    "DateTimeField",
    "DecimalField",
    "EmailField",
    "Field",
    "IntField",
    "JSONField",
    "LinesField",
    "PercentField",
    "PhoneField",
    "RefField",
    "TagsField",
    "TextField",
    "decimal_to_json",
    "email_key",
    "phone_key",
]


def email_key(email: str) -> str:
    """The form two addresses are compared in to spot the same person."""
    return email.strip().casefold()


def phone_key(phone: str) -> str:
    """Digits only: ``+84 (90) 123-4567`` -> ``84901234567``."""
    return re.sub(r"\D", "", phone)


def decimal_to_json(value: Decimal) -> str:
    """Plain notation, never an exponent: ``Decimal('1E+3')`` -> ``'1000'``."""
    text = format(value, "f")
    return "0" if text in ("-0", "") else text


# Control characters other than tab, newline and carriage return: no sheet or mail header may carry them.
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")


def _is_empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _number_as_text(value: float | int | Decimal) -> str:
    # A spreadsheet hands 12345 over as 12345.0; people mean "12345".
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


class Field:
    """One named value of a record type.

    ``label`` is the sheet header; ``aliases`` are other headers people use
    for it. ``system`` fields are kept by crmkit itself (ids, timestamps,
    computed totals) and are never taken from user input.
    """

    kind = "text"

    def __init__(
        self,
        name: str,
        label: str | None = None,
        *,
        aliases: Sequence[str] = (),
        required: bool = False,
        default: Any = None,
        system: bool = False,
        help: str = "",
    ) -> None:
        self.name = name
        self.label = label or name.replace("_", " ").capitalize()
        self.aliases = tuple(aliases)
        self.required = required
        self.default = default
        self.system = system
        self.help = help

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def error(self, value: Any, problem: str) -> FieldError:
        return FieldError(self.name, value, problem)

    def parse(self, value: Any) -> Any:
        """Return the clean value of ``value``, None when empty."""
        if _is_empty(value):
            return None
        return self.clean(value)

    def clean(self, value: Any) -> Any:
        """Check and convert a non-empty value. Subclasses override this."""
        if isinstance(value, (int, float, Decimal)) and not isinstance(value, bool):
            return _number_as_text(value)
        if not isinstance(value, str):
            raise self.error(value, "expected text")
        if _CONTROL.search(value):
            raise self.error(value, "contains control characters (spreadsheets cannot hold them)")
        return value.strip()

    def dump(self, value: Any) -> Any:
        """The JSON form of a clean value, as the store keeps it."""
        return value

    def load(self, value: Any) -> Any:
        """The clean value of a JSON value from the store."""
        return value

    def format(self, value: Any) -> str:
        """A short text for tables and sheets."""
        return "" if value is None else str(value)


class TextField(Field):
    """Free text, stripped of surrounding spaces."""


class EmailField(Field):
    """An email address, checked and normalised offline by email-validator.

    ``Ana <Ana@Example.COM>`` becomes ``Ana@example.com``: the display name is
    dropped, the domain lower-cased. No DNS look-up is made.
    """

    kind = "email"

    def clean(self, value: Any) -> Any:
        if not isinstance(value, str):
            raise self.error(value, "expected an email address")
        text = value.strip()
        if text.lower().startswith("mailto:"):
            text = text[7:]
        if "<" in text:
            from email.utils import parseaddr  # 7 ms to import: only for Name <address> text

            text = parseaddr(text)[1] or text
        try:
            return _normalized_email(text)
        except ValueError as exc:  # email_validator.EmailNotValidError
            raise self.error(value, f"not a valid email address: {exc}") from None


@lru_cache(maxsize=200_000)
def _normalized_email(text: str) -> str:
    # Cached: a sync checks each address when it reads the cell and again when
    # the store saves it, and email-validator takes ~25 µs an address. Imported here: it
    # costs 20-30 ms to import, which commands that check no address should not pay.
    from email_validator import validate_email

    return validate_email(text, check_deliverability=False).normalized


class PhoneField(Field):
    """A phone number as typed: digits, spaces, + - ( ) . /, and an extension (ext 12, x12)."""

    kind = "phone"
    _allowed = re.compile(r"^\+?[\d\s().\-/]+((ext\.?|x)\s*\d+)?$", re.IGNORECASE)

    def clean(self, value: Any) -> Any:
        text = super().clean(value)
        if not self._allowed.match(text) or len(phone_key(text)) < 5:
            raise self.error(value, "not a phone number (digits, spaces, + - ( ) . / and ext only)")
        return text


def _choice_key(text: str) -> str:
    return re.sub(r"[\s\-]+", "_", text.strip().casefold())


class ChoiceField(Field):
    """One of a fixed list; ``Closed Won``, ``closed-won`` and aliases are forgiven."""

    kind = "choice"

    def __init__(
        self,
        name: str,
        label: str | None = None,
        *,
        choices: Sequence[str],
        choice_aliases: Mapping[str, str] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(name, label, **kwargs)
        self.choices = tuple(choices)
        self._lookup = {_choice_key(c): c for c in self.choices}
        for alias, choice in (choice_aliases or {}).items():
            self._lookup[_choice_key(alias)] = choice

    def clean(self, value: Any) -> Any:
        if isinstance(value, str) and _choice_key(value) in self._lookup:
            return self._lookup[_choice_key(value)]
        raise self.error(value, f"must be one of: {', '.join(self.choices)}")


class DateField(Field):
    """A calendar date, stored as ``YYYY-MM-DD``."""

    kind = "date"

    def clean(self, value: Any) -> Any:
        if isinstance(value, datetime):
            return value.date()
        if isinstance(value, date):
            return value
        if isinstance(value, str):
            text = value.strip()
            for candidate in (text, text.replace("/", "-"), text[:10] if "T" in text else ""):
                try:
                    return date.fromisoformat(candidate)
                except ValueError:
                    continue
        raise self.error(value, "not a date; write it as YYYY-MM-DD")

    def dump(self, value: Any) -> Any:
        return None if value is None else value.isoformat()

    def load(self, value: Any) -> Any:
        return None if value is None else date.fromisoformat(value)

    def format(self, value: Any) -> str:
        return "" if value is None else value.isoformat()


class DateTimeField(Field):
    """A moment in time, stored in UTC as ISO 8601; naive input is taken as UTC."""

    kind = "datetime"

    def clean(self, value: Any) -> Any:
        moment: datetime | None = None
        if isinstance(value, datetime):
            moment = value
        elif isinstance(value, date):
            moment = datetime(value.year, value.month, value.day)
        elif isinstance(value, str):
            try:
                moment = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
            except ValueError:
                moment = None
        if moment is None:
            raise self.error(value, "not a date and time; write it as YYYY-MM-DD HH:MM")
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
        try:
            return moment.astimezone(UTC)
        except OverflowError:  # 9999-12-31 23:59 at UTC-12 is in year 10000
            raise self.error(value, "out of the range of dates") from None

    def dump(self, value: Any) -> Any:
        return None if value is None else value.isoformat(timespec="seconds")

    def load(self, value: Any) -> Any:
        return None if value is None else datetime.fromisoformat(value)

    def format(self, value: Any) -> str:
        return "" if value is None else value.strftime("%Y-%m-%d %H:%M")


#: Spreadsheets keep 15 significant digits; larger numbers would not survive a round trip.
MAX_INTEGER_DIGITS = 15
_THOUSANDS = re.compile(r"^[+-]?\d{1,3}(,\d{3})+(\.\d+)?$")


def parse_decimal(field: Field, value: Any) -> Decimal:
    """A Decimal from a number or text; floats go through ``repr`` so 0.1 stays 0.1."""
    if isinstance(value, bool):
        raise field.error(value, "expected a number")
    if isinstance(value, Decimal):
        number = value
    elif isinstance(value, int):
        number = Decimal(value)
    elif isinstance(value, float):
        number = Decimal(repr(value))
    elif isinstance(value, str):
        text = value.strip().replace("\u00a0", "").replace(" ", "")
        if _THOUSANDS.match(text):
            text = text.replace(",", "")
        try:
            number = Decimal(text)
        except InvalidOperation:
            raise field.error(value, "not a number") from None
    else:
        raise field.error(value, "expected a number")
    if not number.is_finite():
        raise field.error(value, "not a finite number")
    if number.adjusted() >= MAX_INTEGER_DIGITS:
        raise field.error(value, f"too large (over {MAX_INTEGER_DIGITS} digits before the decimal point)")
    return number


class DecimalField(Field):
    """An exact decimal number (money, quantities), stored as text."""

    kind = "decimal"

    def __init__(
        self, name: str, label: str | None = None, *, minimum: Decimal | None = None, **kwargs: Any
    ) -> None:
        super().__init__(name, label, **kwargs)
        self.minimum = minimum

    def clean(self, value: Any) -> Any:
        number = parse_decimal(self, value)
        if self.minimum is not None and number < self.minimum:
            raise self.error(value, f"must be at least {self.minimum}")
        return number

    def dump(self, value: Any) -> Any:
        return None if value is None else decimal_to_json(value)

    def load(self, value: Any) -> Any:
        return None if value is None else Decimal(value)

    def format(self, value: Any) -> str:
        return "" if value is None else f"{value:,}"


class IntField(Field):
    """A whole number."""

    kind = "int"

    def clean(self, value: Any) -> Any:
        number = parse_decimal(self, value)
        if number != number.to_integral_value():
            raise self.error(value, "expected a whole number")
        return int(number)


class PercentField(Field):
    """A percentage from 0 to 100: ``75``, ``"75%"``.

    A float strictly between 0 and 1 is a spreadsheet percent cell (Excel keeps
    75% as 0.75) and is scaled up; text is always read as percent.
    """

    kind = "percent"

    def __init__(self, name: str, label: str | None = None, *, whole: bool = False, **kwargs: Any) -> None:
        super().__init__(name, label, **kwargs)
        self.whole = whole

    def clean(self, value: Any) -> Any:
        raw = value.strip().rstrip("%") if isinstance(value, str) else value
        number = parse_decimal(self, raw)
        if isinstance(value, float) and 0 < value < 1:
            number = (number * 100).normalize()
        if not Decimal(0) <= number <= Decimal(100):
            raise self.error(value, "must be between 0 and 100")
        if self.whole:
            if number != number.to_integral_value():
                raise self.error(value, "expected a whole percentage")
            return int(number)
        return number

    def dump(self, value: Any) -> Any:
        if value is None or self.whole:
            return value
        return decimal_to_json(value)

    def load(self, value: Any) -> Any:
        if value is None or self.whole:
            return value
        return Decimal(value)

    def format(self, value: Any) -> str:
        return "" if value is None else f"{value}%"


class BoolField(Field):
    """Yes or no; ``yes/no``, ``true/false``, ``1/0``, ``x`` are understood."""

    kind = "bool"
    _true = frozenset({"true", "yes", "y", "1", "x", "✓", "on"})
    _false = frozenset({"false", "no", "n", "0", "off"})

    def clean(self, value: Any) -> Any:
        if isinstance(value, bool):
            return value
        if isinstance(value, (int, float)) and value in (0, 1):
            return bool(value)
        if isinstance(value, str):
            text = value.strip().casefold()
            if text in self._true:
                return True
            if text in self._false:
                return False
        raise self.error(value, "expected yes or no")

    def format(self, value: Any) -> str:
        return "yes" if value else ""


class TagsField(Field):
    """A list of labels; text is split on commas and semicolons."""

    kind = "tags"

    def clean(self, value: Any) -> Any:
        if isinstance(value, str):
            items = re.split(r"[,;]", value)
        elif isinstance(value, (list, tuple)):
            items = [str(v) for v in value]
        else:
            raise self.error(value, "expected a list of tags")
        tags: list[str] = []
        for item in items:
            tag = item.strip()
            if tag and tag not in tags:
                tags.append(tag)
        return tags or None

    def format(self, value: Any) -> str:
        return ", ".join(value or ())


class RefField(Field):
    """A link to another record, by id (``A-3``).

    Text that is not an id (a company name, an email) is kept as given here;
    the store resolves it to an id or reports that nothing matched.
    """

    kind = "ref"

    def __init__(self, name: str, label: str | None = None, *, target: str, **kwargs: Any) -> None:
        super().__init__(name, label, **kwargs)
        self.target = target

    def clean(self, value: Any) -> Any:
        text = super().clean(value)
        match = re.fullmatch(r"([A-Za-z]+)-(\d+)", text)
        if match:
            return f"{match.group(1).upper()}-{int(match.group(2))}"
        return text


class JSONField(Field):
    """Structured data crmkit keeps itself (a stage history); never typed by people."""

    kind = "json"

    def clean(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                raise self.error(value, "not valid JSON") from None
        return value


class LinesField(Field):
    """Invoice line items: description, quantity, unit_price, tax_rate (percent)."""

    kind = "lines"

    def __init__(self, name: str, label: str | None = None, **kwargs: Any) -> None:
        super().__init__(name, label, **kwargs)
        self.description = TextField("description")
        self.quantity = DecimalField("quantity", minimum=Decimal(0))
        self.unit_price = DecimalField("unit_price")
        self.tax_rate = PercentField("tax_rate")

    def clean(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError:
                raise self.error(value, "expected a JSON list of lines") from None
        if not isinstance(value, (list, tuple)):
            raise self.error(value, "expected a list of lines")
        lines = []
        for number, raw in enumerate(value, start=1):
            if not isinstance(raw, Mapping):
                raise self.error(raw, f"line {number} is not an object")
            try:
                line = {
                    "description": self.description.parse(raw.get("description")) or "",
                    "quantity": self.quantity.parse(raw.get("quantity")),
                    "unit_price": self.unit_price.parse(raw.get("unit_price")),
                    "tax_rate": self.tax_rate.parse(raw.get("tax_rate")),
                }
            except FieldError as exc:
                raise self.error(exc.value, f"line {number} {exc.field}: {exc.problem}") from None
            if line["unit_price"] is None:
                raise self.error(raw, f"line {number} has no unit_price")
            if line["quantity"] is None:
                line["quantity"] = Decimal(1)
            if line["tax_rate"] is None:
                line["tax_rate"] = Decimal(0)
            lines.append(line)
        return lines

    def dump(self, value: Any) -> Any:
        if value is None:
            return None
        return [
            {
                "description": line["description"],
                "quantity": decimal_to_json(line["quantity"]),
                "unit_price": decimal_to_json(line["unit_price"]),
                "tax_rate": decimal_to_json(line["tax_rate"]),
            }
            for line in value
        ]

    def load(self, value: Any) -> Any:
        if value is None:
            return None
        return [
            {
                "description": line["description"],
                "quantity": Decimal(line["quantity"]),
                "unit_price": Decimal(line["unit_price"]),
                "tax_rate": Decimal(line["tax_rate"]),
            }
            for line in value
        ]

    def format(self, value: Any) -> str:
        count = len(value or ())
        return "1 line" if count == 1 else f"{count} lines"
