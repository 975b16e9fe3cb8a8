"""`crmkit init` and `crmkit quickstart`, as a new user runs them."""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook
from storefiles import manifest

from crmkit.cli import main
from crmkit.cli.setup import command_as_typed
from crmkit.config import load_config
from crmkit.records.schema import DEAL
from crmkit.sample_data import SAMPLE
from crmkit.store import Store


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CRMKIT_STORE", raising=False)
    monkeypatch.delenv("CRMKIT_CONFIG", raising=False)
    return CliRunner()


def test_init_creates_config_store_and_workbook(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["init", "acme", "--currency", "vnd"])
    assert result.exit_code == 0, result.output
    folder = tmp_path / "acme"
    config = load_config(folder / "crmkit.toml", env={})
    assert config.store == folder / "crm.json" and config.default_currency == "VND"
    tables = manifest(folder / "crm.json")["tables"]
    assert {"leads", "contacts", "accounts", "deals", "invoices", "cases", "activities"} <= set(tables)
    assert all(tables[t]["segments"] == {} for t in ("contacts", "deals"))
    sheets = load_workbook(folder / "crm.xlsx").sheetnames
    assert {"Leads", "Contacts", "Accounts", "Deals", "Invoices", "Invoice Lines", "Cases"} <= set(sheets)
    # the new folder works: the config's store and currency are used
    added = runner.invoke(main, ["--config", str(folder / "crmkit.toml"), "deals", "add", "title=X", "amount=5.5"])
    assert added.exit_code == 0, added.output
    assert Store(folder / "crm.json").get("D-1")["amount"] == "6"  # VND has no minor unit


def test_init_never_overwrites(runner: CliRunner, tmp_path: Path) -> None:
    runner.invoke(main, ["init"])
    Store(tmp_path / "crm.json").add("contacts", {"name": "Mine"})
    (tmp_path / "crmkit.toml").write_text('store = "crm.json"\n# my edits\n')
    result = runner.invoke(main, ["init"])
    assert result.exit_code == 0
    assert result.output.count("kept") == 3 and "created" not in result.output
    assert "# my edits" in (tmp_path / "crmkit.toml").read_text()
    assert Store(tmp_path / "crm.json").get("C-1")["name"] == "Mine"


def test_quickstart_builds_demo_from_sample_workbook(runner: CliRunner, tmp_path: Path) -> None:
    result = runner.invoke(main, ["quickstart", "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    assert {sheet.lower(): n for sheet, n in out["imported"].items()} == {
        table: len(SAMPLE[table]) for table in ("accounts", "contacts", "leads", "deals", "invoices", "cases")
    }
    assert load_workbook(tmp_path / "demo" / "crm.xlsx")["Deals"]["A2"].value == "D-1"
    store = Store(tmp_path / "demo" / "crm.json")
    assert store.count("deals") == len(SAMPLE["deals"])
    open_deals = [d for d in SAMPLE["deals"] if d["stage"] not in ("won", "lost")]
    assert sum(row["count"] for row in out["pipeline"]) == len(open_deals)
    for currency in {d["currency"] for d in open_deals}:
        expected = sum(DEAL.get_field("amount").parse(d["amount"]) for d in open_deals if d["currency"] == currency)
        reported = sum(float(r["amount"]) for r in out["pipeline"] if r["currency"] == currency)
        assert reported == float(expected)
    assert out["contact"]["id"] == "C-1" and out["contact"]["related"]["deals"]
    # invoice totals were computed from the Invoice Lines sheet
    assert all(float(inv["total"]) > 0 for inv in store.all("invoices"))
    # running it again rebuilds the demo whole: same counts, no duplicates
    again = runner.invoke(main, ["quickstart", "--json"])
    assert json.loads(again.output)["imported"] == out["imported"]
    assert Store(tmp_path / "demo" / "crm.json").count("deals") == len(SAMPLE["deals"])


def test_quickstart_text_and_module_entry_point(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "crmkit", "quickstart", "--dir", str(tmp_path / "d")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert "Open pipeline" in done.stdout and "360° view of C-1" in done.stdout
    assert "negotiation" in done.stdout


CRMKIT = Path(sys.executable).parent / "crmkit"  # the console script pip installed beside this Python


@pytest.mark.parametrize(
    ("argv0", "on_path", "expected"),
    [
        (".venv/bin/crmkit", None, ".venv/bin/crmkit"),  # make demo, the venv not active
        ("/opt/venv/bin/crmkit", "/usr/local/bin/crmkit", "/opt/venv/bin/crmkit"),  # another crmkit first
        ("crmkit", "/usr/local/bin/crmkit", "crmkit"),  # found by the shell
        ("/opt/my tools/crmkit", None, "'/opt/my tools/crmkit'"),
        ("/x/crmkit/__main__.py", None, "/usr/bin/python3 -m crmkit"),
        ("/x/bin/pytest", None, "crmkit"),  # not crmkit's own script: the plain name
    ],
)
def test_command_as_typed(argv0: str, on_path: str | None, expected: str) -> None:
    assert command_as_typed(argv0, on_path=on_path, python="/usr/bin/python3") == expected


def test_command_as_typed_is_crmkit_when_the_shell_finds_this_very_script(tmp_path: Path) -> None:
    script = tmp_path / "bin" / "crmkit"
    script.parent.mkdir()
    script.write_text("#!/bin/sh\n")
    assert command_as_typed(str(script), on_path=str(script), python="python3") == "crmkit"
    assert command_as_typed("bin/crmkit", on_path=None, python="python3", absolute=True) == str(
        Path("bin/crmkit").absolute()
    )


def test_make_demo_hint_is_a_command_that_runs_from_where_the_user_is(tmp_path: Path) -> None:
    """`make demo` runs `.venv/bin/crmkit quickstart` from the project folder, the venv not active."""
    if not CRMKIT.is_file():
        pytest.fail(f"no crmkit console script at {CRMKIT}: install crmkit (pip install -e .)")
    here = CRMKIT.parent.parent.parent  # the folder holding the venv, as make runs from it
    typed = os.path.relpath(CRMKIT, here)  # .venv/bin/crmkit
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != CRMKIT.parent
    )
    assert shutil.which("crmkit", path=env["PATH"]) != str(CRMKIT)

    def sh(argv: list[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(argv, cwd=here, env=env, capture_output=True, text=True, check=False)

    demo = sh([typed, "quickstart", "--dir", str(tmp_path / "demo")])
    assert demo.returncode == 0, demo.stderr
    hint = demo.stdout.strip().splitlines()
    assert hint[-2].split("then: ", 1)[1].startswith(f"{typed} --store ")
    activate = Path(typed).parent / "activate"
    assert hint[-1] == f"(or run `source {activate}` once, then type just `crmkit`)"
    assert (here / activate).is_file()
    # the hint, typed as printed, works
    synced = sh(shlex.split(hint[-2].split("then: ", 1)[1]))
    assert synced.returncode == 0, synced.stderr
    assert "nothing changed since the last sync" in synced.stdout  # the demo's own store, just synced

    # with the venv's bin on PATH (activated), the hint is plain `crmkit`
    env["PATH"] = f"{CRMKIT.parent}{os.pathsep}{env['PATH']}"
    again = sh(["crmkit", "quickstart", "--dir", str(tmp_path / "demo")])
    assert again.returncode == 0, again.stderr
    assert again.stdout.strip().splitlines()[-1].split("then: ", 1)[1].startswith("crmkit --store ")
