"""The CLI: exact output shapes, one-line errors and exit codes."""

from __future__ import annotations

import json
from pathlib import Path

import click
import pytest

from crmkit.cli import main
from crmkit.records.schema import RECORD_TYPES
from crmkit.store import Store


@pytest.fixture(autouse=True)
def new_store(tmp_path: Path) -> None:
    """An empty store where ``run`` works (``crmkit init`` makes one; commands no longer start one anywhere)."""
    Store(tmp_path / "crm.json").create()


def as_json(result) -> object:
    return json.loads(result.stdout)


def test_add_list_show_update_round_trip(run) -> None:
    assert run("accounts", "add", "name=Sao Mai Logistics", "domain=saomai.vn", "tier=A").stdout == (
        "Added A-1 Sao Mai Logistics\n"
    )
    run("contacts", "add", "name=Nguyễn Thị Hoa", "email=Hoa@SaoMai.vn", "account=saomai.vn", "Region=North")
    listed = as_json(run("contacts", "list", "--json"))
    assert isinstance(listed, list) and len(listed) == 1
    hoa = listed[0]
    assert next(iter(hoa)) == "id" and hoa["id"] == "C-1"
    assert set(hoa) == {f.name for f in RECORD_TYPES["contacts"].fields} | {"custom"}
    assert (hoa["name"], hoa["email"], hoa["account"], hoa["custom"]) == (
        "Nguyễn Thị Hoa", "Hoa@saomai.vn", "A-1", {"Region": "North"},
    )  # fmt: skip
    assert hoa["phone"] is None  # every field present, null when empty
    updated = as_json(run("contacts", "update", "hoa@saomai.vn", "title=COO", "--json"))
    assert updated["title"] == "COO" and updated["id"] == "C-1"
    shown = as_json(run("accounts", "show", "A-1", "--json"))
    assert shown["name"] == "Sao Mai Logistics" and shown["tier"] == "A"
    table = run("contacts", "list").stdout
    assert "Nguyễn Thị Hoa" in table and table.splitlines()[0].split()[:3] == ["ID", "Name", "Email"]


def test_where_filters(run) -> None:
    run("deals", "add", "title=A", "stage=proposal", "owner=ana")
    run("deals", "add", "title=B", "stage=Closed Won", "owner=binh")
    run("deals", "add", "title=Big C", "stage=won", "owner=Ana")
    ids = lambda *w: [d["id"] for d in as_json(run("deals", "list", "--json", *w))]  # noqa: E731
    assert ids("--where", "stage=won") == ["D-2", "D-3"]
    assert ids("--where", "stage=Closed Won", "--where", "owner=ana") == ["D-3"]
    assert ids("--where", "owner!=ana") == ["D-2"]
    assert ids("--where", "title~big") == ["D-3"]
    assert ids("--limit", "1") == ["D-1"]
    result = run("deals", "list", "--where", "stage=someday", code=1)
    assert "must be one of" in result.stderr


def test_where_on_tags_finds_records_that_have_the_tag_among_others(run) -> None:
    run("contacts", "add", "name=A", "email=a@example.com", "tags=vip, newsletter")
    run("contacts", "add", "name=B", "email=b@example.com", "tags=newsletter")
    run("contacts", "add", "name=C", "email=c@example.com", "tags=vip")
    ids = lambda *w: [d["id"] for d in as_json(run("contacts", "list", "--json", *w))]  # noqa: E731
    assert ids("--where", "tags=newsletter") == ["C-1", "C-2"]
    assert ids("--where", "tags=vip, newsletter") == ["C-1"]  # both
    assert ids("--where", "tags!=vip") == ["C-2"]
    typo = run("contacts", "list", "--where", "stag=vip", code=1)
    assert "no contact has a field 'stag' (did you mean tags?)" in typo.stderr
    assert ids("--where", "region=") == ["C-1", "C-2", "C-3"]  # a custom field nobody has: all are without


def test_errors_are_one_line_with_exit_code_1(run) -> None:
    run("contacts", "add", "name=Ana", "email=ana@example.com")
    dup = run("contacts", "add", "name=Ana Two", "email=ANA@example.com", code=1)
    assert dup.stderr == (
        "Error: contact C-1 (Ana) already has email ana@example.com; merge them, or force to add anyway\n"
    )
    run("contacts", "add", "name=Ana Two", "email=ANA@example.com", "--force")
    bad = run("contacts", "add", "name=Bob", "email=bob@", code=1)
    assert (
        bad.stderr.startswith("Error: invalid contact: email: not a valid email address")
        and bad.stderr.count("\n") == 1
    )
    assert "'bob@'" in bad.stderr
    typo = run("contacts", "add", "name=Bob", "emial=bob@example.com", code=1)
    assert "did you mean 'email'?" in typo.stderr
    missing = run("contacts", "show", "C-99", code=1)
    assert missing.stderr == "Error: no contact C-99\n"
    assert run("deals", "show", "nonsense", code=1).stderr.startswith("Error: ")
    usage = run("contacts", "add", "name", code=2)
    assert "expected field=value" in usage.stderr


def test_reading_commands_refuse_a_missing_store(run, tmp_path: Path) -> None:
    result = run("--store", "typo.json", "contacts", "list", code=1)
    assert "no store at typo.json" in result.stderr
    assert not (tmp_path / "typo.json").exists()


def test_store_option_env_and_config(run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run("--store", "a.json", "contacts", "add", "name=A")
    monkeypatch.setenv("CRMKIT_STORE", str(tmp_path / "b.json"))
    run("contacts", "add", "name=B")
    assert Store(tmp_path / "b.json").get("C-1")["name"] == "B"
    monkeypatch.delenv("CRMKIT_STORE")
    Store(tmp_path / "c.json").create()
    (tmp_path / "crmkit.toml").write_text('store = "c.json"\ndefault_currency = "EUR"\n')
    deal = as_json(run("deals", "add", "title=X", "amount=5", "--json"))
    assert deal["currency"] == "EUR" and deal["amount"] == "5.00"
    assert (tmp_path / "c.json").exists()
    (tmp_path / "crmkit.toml").write_text("stor = 1\n")
    assert "unknown key stor" in run("contacts", "list", code=1).stderr


def test_invoice_lines_option(run) -> None:
    inv = as_json(
        run(
            "invoices",
            "add",
            "issue_date=2026-01-10",
            "--line",
            "Setup|1|500|10",
            "--line",
            "Hours|3|80",
            "--json",
        )
    )
    assert (inv["subtotal"], inv["tax"], inv["total"], inv["number"]) == (
        "740.00",
        "50.00",
        "790.00",
        "INV-2026-0001",
    )
    assert inv["status"] == "draft"
    assert "DESC|QTY|PRICE" in run("invoices", "add", "--line", "oops", code=2).stderr


def test_convert_merge_and_360_via_cli(run) -> None:
    run("accounts", "add", "name=Hanoi Fresh Foods JSC", "domain=hanoifresh.vn")
    run(
        "leads",
        "add",
        "name=Bình",
        "company=Hanoi Fresh Foods",
        "email=binh@hanoifresh.vn",
        "status=qualified",
    )
    out = as_json(run("leads", "convert", "L-1", "--amount", "1200", "--close-date", "2026-12-31", "--json"))
    assert out == {"lead": "L-1", "contact": "C-1", "account": "A-1", "deal": "D-1", "created": ["C-1", "D-1"],
                   "moved_activities": 0}  # fmt: skip
    assert "already converted" in run("leads", "convert", "L-1", code=1).stderr
    run("contacts", "add", "name=Bình (old)", "email=binh@gmail.com")
    run("cases", "add", "subject=Late delivery", "contact=C-2", "priority=urgent")
    merged = as_json(run("contacts", "merge", "C-1", "C-2", "--json"))
    assert merged == {"kept": "C-1", "merged": "C-2", "moved": {"cases": 1}}
    view = as_json(run("contacts", "show", "binh@hanoifresh.vn", "--json"))
    assert view["id"] == "C-1"
    assert view["related"]["account"]["id"] == "A-1"
    assert [d["id"] for d in view["related"]["deals"]] == ["D-1"]
    assert [c["subject"] for c in view["related"]["cases"]] == ["Late delivery"]
    assert [lead["id"] for lead in view["related"]["leads"]] == ["L-1"]
    text = run("contacts", "show", "C-1").stdout
    assert "Account: A-1 Hanoi Fresh Foods JSC" in text and "Cases (1):" in text and "Late delivery" in text


def test_archive_and_restore(run) -> None:
    run("contacts", "add", "name=A")
    assert run("contacts", "archive", "C-1").stdout == "Archived C-1 A\n"
    assert as_json(run("contacts", "list", "--json")) == []
    assert [d["id"] for d in as_json(run("contacts", "list", "--archived", "--json"))] == ["C-1"]
    run("contacts", "restore", "C-1")
    assert len(as_json(run("contacts", "list", "--json"))) == 1


def _commands(group: click.Group, prefix: str = ""):
    for name, cmd in group.commands.items():
        yield f"{prefix}{name}", cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, f"{prefix}{name} ")


def test_every_command_has_help(run) -> None:
    for name, cmd in _commands(main):
        assert cmd.help or cmd.short_help, f"crmkit {name} has no help"
        assert run(*name.split(), "--help").stdout.startswith("Usage: ")


def test_archive_checks_the_type_and_takes_names(run) -> None:
    run("deals", "add", "title=Deal")
    run("contacts", "add", "name=Ana", "email=ana@example.com")
    assert "no contact matches 'D-1'" in run("contacts", "archive", "D-1", code=1).stderr
    assert run("contacts", "archive", "ana@example.com").stdout == "Archived C-1 Ana\n"
    run("contacts", "add", "name=Ana 2", "email=ana@example.com")
    assert "already has email" in run("contacts", "restore", "C-1", code=1).stderr
    assert run("contacts", "restore", "C-1", "--force").stdout == "Restored C-1 Ana\n"


def test_where_compares_numbers_as_numbers_and_custom_fields(run) -> None:
    run("deals", "add", "title=A", "amount=100", "Region=North")
    run("deals", "add", "title=B", "amount=250.5")
    ids = lambda *w: [d["id"] for d in as_json(run("deals", "list", "--json", *w))]  # noqa: E731
    assert ids("--where", "amount=100") == ["D-1"]
    assert ids("--where", "amount=250.50") == ["D-2"]
    assert ids("--where", "custom.Region=north") == ["D-1"]
    assert ids("--where", "Region=North") == ["D-1"]
