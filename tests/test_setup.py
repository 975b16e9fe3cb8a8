"""`crmkit init` and `crmkit quickstart`, as a new user runs them."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from openpyxl import load_workbook
from storefiles import manifest

from crmkit.cli import main
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
