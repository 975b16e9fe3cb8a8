"""Field parsing: every type accepts what people type and names what it refuses."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal

import pytest

from crmkit.errors import FieldError
from crmkit.records.fields import (
    BoolField,
    ChoiceField,
    DateField,
    DateTimeField,
    DecimalField,
    EmailField,
    IntField,
    LinesField,
    PercentField,
    PhoneField,
    RefField,
    TagsField,
    TextField,
    email_key,
    phone_key,
)
from crmkit.records.money import format_money, quantize


@pytest.mark.parametrize(
    ("raw", "clean"),
    [
        ("  Ana@Example.COM ", "Ana@example.com"),
        ("Ana Nguyen <ana@example.com>", "ana@example.com"),
        ("mailto:ana@example.com", "ana@example.com"),
        ("Hoa@Công-Ty.VN", "Hoa@công-ty.vn"),  # IDN domains stay readable
    ],
)
def test_email_is_normalised(raw: str, clean: str) -> None:
    assert EmailField("email").parse(raw) == clean


@pytest.mark.parametrize("raw", ["ana", "ana@", "@example.com", "ana@@example.com", "a b@example.com", 42])
def test_bad_email_names_field_and_value(raw: object) -> None:
    with pytest.raises(FieldError) as info:
        EmailField("email").parse(raw)
    assert info.value.field == "email"
    assert info.value.value == raw
    assert "email" in str(info.value)


def test_email_and_phone_keys() -> None:
    assert email_key("Ana@Example.com") == email_key("ana@EXAMPLE.COM")
    assert phone_key("+84 (90) 123-4567") == "84901234567"


@pytest.mark.parametrize("raw", ["+84 90 123 4567", "(555) 010-9999 ext 12", 84901234567.0])
def test_phone_accepts_common_forms(raw: object) -> None:
    assert PhoneField("phone").parse(raw)


@pytest.mark.parametrize("raw", ["call me", "12", "555-CALL-NOW"])
def test_phone_refuses_text(raw: str) -> None:
    with pytest.raises(FieldError, match="phone"):
        PhoneField("phone").parse(raw)


def test_choice_forgives_case_spacing_and_aliases() -> None:
    stage = ChoiceField("stage", choices=("proposal", "won"), choice_aliases={"closed won": "won"})
    assert stage.parse("Proposal") == "proposal"
    assert stage.parse("Closed-Won") == "won"
    assert stage.parse("") is None
    with pytest.raises(FieldError) as info:
        stage.parse("maybe")
    assert "proposal, won" in str(info.value)


def test_dates() -> None:
    f = DateField("close_date")
    assert f.parse("2026-12-31") == date(2026, 12, 31)
    assert f.parse("2026/12/31") == date(2026, 12, 31)
    assert f.parse(datetime(2026, 12, 31, 0, 0)) == date(2026, 12, 31)
    assert f.dump(date(2026, 1, 2)) == "2026-01-02"
    for bad in ("31/12/2026", "tomorrow", "2026-02-30", 45000):
        with pytest.raises(FieldError, match="YYYY-MM-DD"):
            f.parse(bad)


def test_datetimes_are_utc() -> None:
    f = DateTimeField("date")
    moment = f.parse("2026-03-01T10:00:00+07:00")
    assert moment == datetime(2026, 3, 1, 3, 0, tzinfo=UTC)
    assert f.dump(moment) == "2026-03-01T03:00:00+00:00"
    assert f.parse("2026-03-01 10:00").tzinfo is not None


def test_decimals_never_pass_through_float() -> None:
    f = DecimalField("amount", minimum=Decimal(0))
    assert f.parse(0.1) == Decimal("0.1")
    assert f.parse("1,234,567.89") == Decimal("1234567.89")
    assert f.parse(" 12 000 ") == Decimal("12000")
    assert f.dump(Decimal("1E+3")) == "1000"
    for bad in ("12,34", "abc", "NaN", "Infinity", True):
        with pytest.raises(FieldError):
            f.parse(bad)
    with pytest.raises(FieldError, match="at least 0"):
        f.parse("-5")


def test_int_and_percent() -> None:
    assert IntField("n").parse("7") == 7
    with pytest.raises(FieldError, match="whole"):
        IntField("n").parse("7.5")
    p = PercentField("probability", whole=True)
    assert p.parse("75%") == 75
    assert p.parse(0.75) == 75  # an Excel percent cell
    assert p.parse("0") == 0
    with pytest.raises(FieldError, match="between 0 and 100"):
        p.parse("120")
    assert PercentField("tax_rate").parse("8.5") == Decimal("8.5")


def test_bool_tags_ref_text() -> None:
    b = BoolField("opt_out")
    assert b.parse("Yes") is True and b.parse("no") is False and b.parse("x") is True
    with pytest.raises(FieldError):
        b.parse("perhaps")
    assert TagsField("tags").parse("vip; partner, vip ,") == ["vip", "partner"]
    assert RefField("account", target="accounts").parse(" a-7 ") == "A-7"
    assert RefField("account", target="accounts").parse("Acme") == "Acme"
    assert TextField("name").parse(12345.0) == "12345"
    assert TextField("name").parse("   ") is None


def test_lines() -> None:
    f = LinesField("lines")
    lines = f.parse('[{"description": "Setup", "unit_price": "100", "tax_rate": "10%"}]')
    assert lines == [
        {"description": "Setup", "quantity": Decimal(1), "unit_price": Decimal(100), "tax_rate": Decimal(10)}
    ]
    assert f.load(f.dump(lines)) == lines
    with pytest.raises(FieldError, match="line 1 quantity"):
        f.parse([{"description": "x", "quantity": "lots", "unit_price": 1}])
    with pytest.raises(FieldError, match="no unit_price"):
        f.parse([{"description": "x"}])


def test_money_minor_units() -> None:
    assert quantize(Decimal("1234.5"), "VND") == Decimal("1235")
    assert quantize(Decimal("2.005"), "USD") == Decimal("2.01")
    assert quantize(Decimal("1.0005"), "KWD") == Decimal("1.001")
    assert format_money(Decimal("1234567"), "VND") == "1,234,567 VND"
    assert format_money(Decimal("1234.5"), "EUR") == "1,234.50 EUR"


def test_numbers_too_large_for_a_spreadsheet_are_refused() -> None:
    f = DecimalField("amount")
    assert f.parse("999999999999999.99") == Decimal("999999999999999.99")
    for bad in ("1e30", "1000000000000000", 1e16):
        with pytest.raises(FieldError, match="too large"):
            f.parse(bad)


def test_control_characters_are_refused() -> None:
    with pytest.raises(FieldError, match="control characters"):
        TextField("name").parse("Bell\x07Name")
    assert TextField("notes").parse("line one\nline two\tend") == "line one\nline two\tend"
