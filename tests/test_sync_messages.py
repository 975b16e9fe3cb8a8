"""What `crmkit sync` prints, on a real workbook made by `crmkit init`: each problem once, plurals right."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from openpyxl import load_workbook

from crmkit.cli import main


def crmkit(folder: Path, *args: str) -> Result:
    env = {"CRMKIT_CONFIG": str(folder / "crmkit.toml"), "CRMKIT_STORE": ""}
    return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("CRMKIT_STORE", "CRMKIT_CONFIG"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(main, ["init", "acme"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return tmp_path / "acme"


def empty_sheet(book: Path, title: str) -> None:
    wb = load_workbook(book)
    ws = wb[title]
    ws.delete_rows(2, ws.max_row)
    wb.save(book)


def test_an_emptied_sheet_is_reported_once_per_sync_also_under_quiet(project: Path) -> None:
    book = project / "crm.xlsx"
    assert crmkit(project, "contacts", "add", "name=Ann", "email=ann@example.com").exit_code == 0
    first = crmkit(project, "sync", str(book))
    assert first.exit_code == 0, first.output
    assert "Contacts: sheet: 1 row added" in first.stdout
    assert "1 change made, workbook written" in first.stdout
    empty_sheet(book, "Contacts")
    for quiet in ((), ("--quiet",)):
        result = crmkit(project, "sync", str(book), *quiet)
        assert result.exit_code == 3, result.output
        said = (result.stdout + result.stderr).count("the sheet has no rows left")
        assert said == 1, result.output
        assert "problem: Contacts: the sheet has no rows left; 1 record not archived" in result.stderr
    assert os.path.exists(book) and crmkit(project, "contacts", "show", "C-1").exit_code == 0


def test_counts_in_the_summary_read_as_english(project: Path) -> None:
    book = project / "crm.xlsx"
    for i in range(2):
        crmkit(project, "contacts", "add", f"name=Person {i}", f"email=p{i}@example.com")
    result = crmkit(project, "sync", str(book))
    assert "Contacts: sheet: 2 rows added" in result.stdout
    assert "2 changes made, workbook written" in result.stdout
    wb = load_workbook(book)
    wb["Leads"].append([None, "Bình", "Hanoi Fresh", "binh@example.com"])
    wb.save(book)
    result = crmkit(project, "sync", str(book))
    # the new lead's ID and its default status are written back on its row
    assert "Leads: crmkit: 1 added; sheet: 1 row updated, 1 ID written" in result.stdout, result.stdout
