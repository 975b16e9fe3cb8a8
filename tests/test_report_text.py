"""Reports in a terminal: as wide as the terminal, long text cut with an ellipsis, numbers never cut."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from crmkit.cli import main
from crmkit.reports.text import MIN_TEXT, layout
from crmkit.store import Store


def test_a_table_that_fits_is_left_as_it_is() -> None:
    lines = layout(["Stage", "Deals"], [["proposal", "12"], ["won", "3"]], [False, True], 80)
    assert lines == ["Stage     Deals", "--------  -----", "proposal     12", "won           3"]


def test_long_text_is_cut_with_an_ellipsis_and_numbers_are_not() -> None:
    subject = "The invoice PDF export fails for every invoice with more than forty lines"
    lines = layout(["Subject", "Amount"], [[subject, "1,234,567,890.00"]], [False, True], 40)
    assert all(len(line) <= 40 for line in lines), lines
    assert lines[-1].endswith("1,234,567,890.00") and "…" in lines[-1]
    assert lines[-1].startswith(subject[:20])


def test_text_is_never_cut_below_a_readable_width() -> None:
    lines = layout(["Subject", "A", "B"], [["x" * 60, "1" * 30, "2" * 30]], [False, True, True], 40)
    # too wide even so: split into blocks, each starting with the first column, cut no narrower than MIN_TEXT
    assert "x" * (MIN_TEXT - 1) + "…" in lines[2]
    assert "1" * 30 in "\n".join(lines) and "2" * 30 in "\n".join(lines)


def test_a_wide_table_wraps_headers_then_splits_into_blocks_each_naming_its_rows() -> None:
    headers = ["Month", *(f"Category {i} weighted" for i in range(8))]
    rows = [["2026-0" + str(m), *(f"{m * 1000 + i:,}.00" for i in range(8))] for m in range(1, 4)]
    lines = layout(headers, rows, [False] + [True] * 8, 60)
    assert all(len(line) <= 60 for line in lines), lines
    blocks = "\n".join(lines).split("\n\n")
    assert len(blocks) > 1
    for block in blocks:
        assert [line.split()[0] for line in block.splitlines()[-3:]] == ["2026-01", "2026-02", "2026-03"]
    text = "\n".join(lines)
    for row in rows:
        for cell in row[1:]:
            assert re.search(rf"(?<![\d,.]){re.escape(cell)}(?![\d,.])", text), cell  # whole, never cut
    # a header wider than its numbers goes on two lines, broken where both are shortest
    assert lines[0].split()[:2] == ["Category", "Category"] and lines[1].split()[:3] == [
        "Month",
        "0",
        "weighted",
    ]


@pytest.fixture
def deals(tmp_path: Path) -> Path:
    store = Store(tmp_path / "crm.json")
    with store.transaction():
        for month in range(1, 13):
            for stage, amount, currency in (
                ("won", "123456789.50", "USD"),
                ("negotiation", "987654321", "VND"),
                ("proposal", "55000.25", "USD"),
                ("qualification", "7000", "USD"),
            ):
                store.add(
                    "deals",
                    {
                        "title": f"Deal {month} {stage}",
                        "stage": stage,
                        "amount": amount,
                        "currency": currency,
                        "close_date": f"2026-{month:02d}-15",
                    },
                )
    store.add("cases", {"subject": "A subject far longer than any terminal column should have to show " * 2})
    return store.path


@pytest.mark.parametrize("by", ["month", "quarter"])
def test_report_forecast_fits_80_columns(deals: Path, by: str) -> None:
    wide = CliRunner().invoke(
        main, ["--store", str(deals), "report", "forecast", "--by", by], env={"COLUMNS": "300"}
    )
    assert wide.exit_code == 0, wide.output
    assert max(len(line) for line in wide.output.splitlines()) > 150  # it used to print it so to everyone
    result = CliRunner().invoke(
        main, ["--store", str(deals), "report", "forecast", "--by", by], env={"COLUMNS": "80"}
    )
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80, result.output
    # every figure the wide table shows is in the narrow one, whole
    figures = set(re.findall(r"\d[\d,]*\.\d\d|\d[\d,]{4,}", wide.output))
    narrow = set(re.findall(r"\d[\d,]*\.\d\d|\d[\d,]{4,}", result.output))
    assert figures and figures == narrow


def test_report_cases_cuts_a_long_subject_to_fit(deals: Path) -> None:
    result = CliRunner().invoke(main, ["--store", str(deals), "report", "cases"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    assert max(len(line) for line in result.output.splitlines()) <= 80, result.output
    [row] = [line for line in result.output.splitlines() if line.startswith("CASE-1")]
    assert "A subject far longer" in row and "…" in row and re.search(r"\d\.\d d", row)
