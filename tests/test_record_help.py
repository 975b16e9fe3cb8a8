"""Every record command's help shows a real example for its type, and that example runs.

Each type's examples are taken out of ``--help`` and run, in order, in a new
project (``crmkit init``): add, show, update, list, archive, restore, then the
type's own commands. An example that names a field the type lacks, a value it
refuses, or a record the earlier examples did not make fails here.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from crmkit.cli import main
from crmkit.records.schema import RECORD_TYPES

#: What each type's examples run, in order; extra set-up is given as (arguments,).
STEPS: dict[str, list[str | tuple[str, ...]]] = {
    "leads": ["add", "show", "update", "list", "archive", "restore", "convert"],
    "contacts": [
        "add", "show", "update", "list", "archive", "restore",
        ("contacts", "add", "name=Hoa Nguyen", "email=hoa.nguyen@saomai.vn", "--force"), "merge",
    ],
    "accounts": ["add", "show", "update", "list", "archive", "restore"],
    "deals": ["add", "show", "update", "list", "archive", "restore", "quote"],
    "quotes": ["add", "show", "update", "list", "archive", "restore", "invoice"],
    "invoices": ["add", "show", "update", "list", "archive", "restore", "run-recurring", "overdue"],
    "cases": ["add", "show", "update", "list", "archive", "restore"],
    "activities": ["add", "show", "update", "list", "archive", "restore"],
}  # fmt: skip
#: Commands whose examples need mail (a server, or mail already filed): their own tests run them.
ELSEWHERE = {("cases", "reply"), ("invoices", "render"), ("activities", "eml")}


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.delenv("CRMKIT_STORE", raising=False)
    monkeypatch.delenv("CRMKIT_CONFIG", raising=False)
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(main, ["init", "crm"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(tmp_path / "crm")
    (tmp_path / "crm" / "reminder.txt").write_text(
        "From: Billing <billing@example.com>\nSubject: Invoice {{ invoice.number }} is overdue\n\n"
        "Dear {{ first_name }}, please pay.\n"
    )
    return tmp_path / "crm"


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def help_of(table: str, command: str) -> str:
    result = invoke(table, command, "--help")
    assert result.exit_code == 0, result.output
    return result.output


def examples(text: str) -> list[list[str]]:
    """The example command lines of a help text, as arguments after ``crmkit``."""
    _, found, block = text.partition("Example:\n")
    assert found, f"no example in:\n{text}"
    lines = [line.strip() for line in block.split("\n\n")[0].splitlines()]
    return [shlex.split(line, comments=True)[1:] for line in lines if line.startswith("crmkit ")]


@pytest.mark.parametrize("table", list(STEPS))
def test_every_example_in_the_help_runs_in_a_new_project(project: Path, table: str) -> None:
    ran = 0
    for step in STEPS[table]:
        if isinstance(step, tuple):
            assert invoke(*step).exit_code == 0
            continue
        text = help_of(table, step)
        shown = text.partition("Example:")[2].partition("Options:")[0]
        assert "…" not in shown and "FIELD=VALUE" not in shown, text
        for args in examples(text):
            assert args[:2] == [table, step], f"{table} {step} --help shows an example of {args[:2]}"
            result = invoke(*args)
            assert result.exit_code == 0, f"crmkit {shlex.join(args)}:\n{result.output}"
            ran += 1
    assert ran >= len([s for s in STEPS[table] if isinstance(s, str)])


@pytest.mark.parametrize("table", list(STEPS))
def test_every_command_of_a_type_has_an_example(table: str) -> None:
    group = main.get_command(None, table)  # type: ignore[arg-type]
    commands = set(group.commands)  # type: ignore[attr-defined]
    covered = {s for s in STEPS[table] if isinstance(s, str)}
    assert commands - covered == {c for t, c in ELSEWHERE if t == table}


@pytest.mark.parametrize("table", list(RECORD_TYPES))
def test_force_is_offered_only_where_an_email_or_phone_can_clash(table: str) -> None:
    offered = {command: "--force" in help_of(table, command) for command in ("add", "update", "restore")}
    clash = table in ("leads", "contacts")
    assert offered == dict.fromkeys(offered, clash)
    if clash:
        assert re.search(
            rf"email or phone is already on another {RECORD_TYPES[table].name}", help_of(table, "add")
        )


@pytest.mark.parametrize("table", ["quotes", "invoices"])
def test_lines_are_offered_for_quotes_and_invoices(table: str) -> None:
    assert "--line DESC|QTY|PRICE[|TAX%]" in help_of(table, "add")
    assert "--line" not in help_of("deals", "add")


def _every_command() -> list[tuple[str, ...]]:
    """Every command and group of the CLI, as the words that name it."""
    import click

    ctx = click.Context(main)
    found: list[tuple[str, ...]] = []

    def walk(command: click.Command, path: tuple[str, ...]) -> None:
        found.append(path)
        if isinstance(command, click.Group):
            for name in command.list_commands(ctx):
                sub = command.get_command(ctx, name)
                assert sub is not None
                walk(sub, (*path, name))

    walk(main, ())
    return found[1:]  # crmkit itself has its own overview


def _examples(help_text: str) -> list[str]:
    block = help_text.split("Example:\n", 1)[1] if "Example:\n" in help_text else ""
    lines = []
    for line in block.splitlines():
        if not line.startswith("    "):
            break
        lines.append(line.strip())
    return lines


@pytest.mark.parametrize("words", _every_command(), ids=" ".join)
def test_every_command_and_group_shows_a_real_example(words: tuple[str, ...]) -> None:
    text = invoke(*words, "--help").output
    examples = _examples(text)
    assert examples, f"crmkit {' '.join(words)} --help has no example"
    assert all(e.startswith(f"crmkit {words[0]}") or e.startswith("crmkit --store") for e in examples), examples
    placeholders = [e for e in examples if re.search(r"<[A-Za-z_ -]+>|FIELD=VALUE|\.\.\.|\bTODO\b", e)]
    assert placeholders == []


def test_the_report_examples_run_in_a_new_project(project: Path) -> None:
    import json

    ran = 0
    for name in ("pipeline", "funnel", "forecast", "revenue", "cases"):
        for line in _examples(invoke("report", name, "--help").output):
            args = shlex.split(line)[1:]
            result = invoke(*args)
            assert result.exit_code == 0, (line, result.output)
            if "--json" in args:
                json.loads(result.output)
            ran += 1
    assert ran == 10
    assert (project / "pipeline.xlsx").is_file() and (project / "forecast.xlsx").is_file()
