"""Never damage a person's workbook (issue 12), on workbooks that others made and saved.

``fixtures/realworld`` holds about eighty .xlsx/.xlsm files taken from the test data of
permissively licensed packages (PyPI source distributions, npm packages, Debian packages): files
saved by Excel for Windows, Mac and the web, LibreOffice, OpenOffice, WPS, Google Sheets and Apple
Numbers, with pictures, VBA projects, an embedded OLE object, pivot tables and a slicer, threaded
comments, rich text, dynamic arrays and a Strict Open XML workbook. ``fixtures/realworld/README.md``
says where each comes from, under which licence, what saved it and what it holds.

Each goes through what a user does, with the real CLI in a folder made by ``crmkit init``, and
the checks of :mod:`test_real_workbooks` (the same scenario, the same byte-for-byte guarantee
against the ORIGINAL file after every write): a first ``crmkit sync``, a row typed into its
Contacts sheet and another sync (the contact is in the store and its ID in the row), and
``crmkit report pipeline --xlsx`` into a copy. At the end one LibreOffice run opens every result.

A workbook crmkit cannot write into safely is listed in :data:`REFUSED` with the reason: there
crmkit must stop with exit code 1, exactly one line on stderr, and the file left byte for byte.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import test_real_workbooks as real
from click.testing import CliRunner
from realbooks import RealBook

from crmkit.cli import main

FOLDER = Path(__file__).resolve().parent / "fixtures" / "realworld"
NAMES = tuple(sorted(path.name for path in FOLDER.iterdir() if path.suffix in (".xlsx", ".xlsm")))

#: Workbooks crmkit must refuse to write, by file name: {command: why it cannot write safely}.
REFUSED: dict[str, dict[str, str]] = {
    "xlrd--apachepoi_49609.xlsx": dict.fromkeys(
        ("sync", "report"),
        "its zip members are named with backslashes (xl\\workbook.xml, _rels\\.rels) and its "
        "content types are in [content_types].xml: no member is an Open Packaging part crmkit "
        "could find the workbook by, so it cannot tell which parts it would be writing into",
    ),
}

#: Workbooks whose own data needs a person, by file name: the line every sync reports (exit 3).
ATTENTION: dict[str, str] = {
    # Italian headers: only "email" is one crmkit knows, so the person has no name to be added with
    "xlsx-stream-reader--nonumfmt.xlsx": "Name is required, and the sheet has no Name column",
}

needs_soffice = real.needs_soffice


@pytest.fixture(scope="module")
def scenarios(tmp_path_factory: pytest.TempPathFactory) -> dict[str, real.Scenario]:
    root = tmp_path_factory.mktemp("realworld")
    return {
        name: real.Scenario(
            RealBook(name, FOLDER / name, "see fixtures/realworld/README.md"),
            root / name,
            attention=ATTENTION.get(name, ""),
        )
        for name in NAMES
    }


@pytest.fixture
def scenario(request: pytest.FixtureRequest, scenarios: dict[str, real.Scenario]) -> real.Scenario:
    return scenarios[request.param]


books = pytest.mark.parametrize("scenario", NAMES, indirect=True)


def assert_refused(scenario: real.Scenario, command: str, path: Path, *args: str) -> None:
    """``crmkit COMMAND ... PATH`` stops with exit code 1 and one line on stderr, and leaves PATH as it was."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(scenario.book.path.read_bytes())
    result = CliRunner().invoke(main, ["--config", str(scenario.config), *command.split(), *args, str(path)])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 1, f"exit code {result.exit_code}, expected a refusal:\n{result.output}"
    lines = result.stderr.splitlines()
    assert len(lines) == 1, f"a refusal is one line on stderr, not {len(lines)}:\n{result.stderr}"
    assert path.read_bytes() == scenario.book.path.read_bytes(), f"{path.name} changed though crmkit refused"


@books
def test_first_sync_changes_only_crmkits_parts(scenario: real.Scenario) -> None:
    if "sync" in REFUSED.get(scenario.book.name, {}):
        assert_refused(scenario, "sync", scenario.folder / "refused" / scenario.book.name)
        return
    real.test_first_sync_changes_only_crmkits_parts(scenario)


@books
def test_a_typed_row_syncs_and_the_rest_stays_as_it_was(scenario: real.Scenario) -> None:
    if "sync" in REFUSED.get(scenario.book.name, {}):
        pytest.skip(f"crmkit refuses to sync it: {REFUSED[scenario.book.name]['sync']}")
    if scenario.book.name in ATTENTION:
        pytest.skip(
            f"its Contacts sheet has no Name column to type a person into: {ATTENTION[scenario.book.name]}"
        )
    real.test_a_typed_row_syncs_and_the_rest_stays_as_it_was(scenario)


@books
def test_a_report_into_the_workbook_changes_only_its_sheet(scenario: real.Scenario) -> None:
    if "report" in REFUSED.get(scenario.book.name, {}):
        assert_refused(
            scenario, "report pipeline", scenario.folder / "refused-report" / scenario.book.name, "--xlsx"
        )
        return
    real.test_a_report_into_the_workbook_changes_only_its_sheet(scenario)


@needs_soffice
def test_libreoffice_opens_every_result(scenarios: dict[str, real.Scenario], tmp_path: Path) -> None:
    """One soffice run converts every synced and every reported workbook (the ones crmkit wrote)."""
    written = {
        name: scenario
        for name, scenario in scenarios.items()
        if name not in REFUSED and scenario.typed_sync.ok and scenario.report.ok
    }
    assert written, "crmkit wrote none of the workbooks"
    real.test_libreoffice_opens_every_result(written, tmp_path)


def test_every_workbook_is_described_in_the_readme() -> None:
    readme = (FOLDER / "README.md").read_text(encoding="utf-8")
    listed = set(re.findall(r"^\| `([^`]+)` \|", readme, re.M))
    assert listed == set(NAMES), (
        f"not in README.md: {set(NAMES) - listed}; no such file: {listed - set(NAMES)}"
    )
