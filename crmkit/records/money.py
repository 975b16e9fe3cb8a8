"""Money: Decimal amounts with a currency, rounded to the currency's minor unit.

Floats never hold money here. A currency's minor unit (ISO 4217) says how many
decimals an amount may carry: VND and JPY have none, USD and EUR two, KWD three.
"""

from __future__ import annotations

from decimal import ROUND_HALF_UP, Decimal

__all__ = ["MINOR_UNITS", "format_money", "is_currency", "quantize"]

#: ISO 4217 minor units of the currencies a small team is likely to bill in.
MINOR_UNITS: dict[str, int] = {
    "AED": 2, "AUD": 2, "BHD": 3, "BRL": 2, "CAD": 2, "CHF": 2, "CLP": 0,
    "CNY": 2, "CZK": 2, "DKK": 2, "EUR": 2, "GBP": 2, "HKD": 2, "HUF": 2,
    "IDR": 2, "ILS": 2, "INR": 2, "ISK": 0, "JOD": 3, "JPY": 0, "KRW": 0,
    "KWD": 3, "KHR": 2, "LAK": 2, "MXN": 2, "MYR": 2, "NOK": 2, "NZD": 2,
    "OMR": 3, "PHP": 2, "PLN": 2, "RON": 2, "RUB": 2, "SAR": 2, "SEK": 2,
    "SGD": 2, "THB": 2, "TND": 3, "TRY": 2, "TWD": 2, "UAH": 2, "USD": 2,
    "VND": 0, "ZAR": 2,
}  # fmt: skip


def is_currency(code: str) -> bool:
    """True when ``code`` is a currency crmkit knows the minor unit of."""
    return code in MINOR_UNITS


def quantize(amount: Decimal, currency: str) -> Decimal:
    """Round ``amount`` half-up to the minor unit of ``currency``."""
    places = MINOR_UNITS.get(currency, 2)
    return amount.quantize(Decimal(1).scaleb(-places), rounding=ROUND_HALF_UP)


def format_money(amount: Decimal | None, currency: str | None) -> str:
    """``1234.5, 'USD'`` -> ``'1,234.50 USD'``; empty string for no amount."""
    if amount is None:
        return ""
    code = currency or ""
    places = MINOR_UNITS.get(code, 2)
    return f"{quantize(amount, code):,.{places}f} {code}".strip()
