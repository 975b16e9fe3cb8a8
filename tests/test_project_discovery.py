"""Where the CRM is: crmkit.toml found here or in a folder above, as git finds .git.

A command that writes refuses where one that reads refuses (no crmkit.toml, no store),
unless --store or CRMKIT_STORE names the store; `crmkit init`, `quickstart` and
`store create` still create.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from crmkit.cli import main
from crmkit.store import Store

Run = Callable[..., Result]


@pytest.fixture
def crmkit(monkeypatch: pytest.MonkeyPatch) -> Run:
    """``crmkit(folder, *args)``: the CLI run in ``folder``, with no CRMKIT_* variables."""
    for name in [n for n in os.environ if n.startswith("CRMKIT_")]:
        monkeypatch.delenv(name)

    def invoke(folder: Path, *args: str, env: dict[str, str] | None = None) -> Result:
        monkeypatch.chdir(folder)
        return CliRunner().invoke(main, list(args), env=env, catch_exceptions=False)

    return invoke


def files_in(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


#: Every command group, reading and writing, as a newcomer might first type it.
COMMANDS = [
    ("contacts", "list"),
    ("contacts", "add", "name=Ana Lima", "email=ana@example.com"),
    ("contacts", "show", "ana@example.com"),
    ("contacts", "merge", "C-1", "C-2"),
    ("deals", "add", "title=Routing", "amount=100"),
    ("deals", "update", "D-1", "stage=won"),
    ("accounts", "add", "name=Sao Mai"),
    ("leads", "convert", "L-1"),
    ("activities", "add", "kind=note", "subject=x"),
    ("cases", "archive", "CASE-1"),
    ("invoices", "add", "account=A-1", "--line", "Setup|1|100|0"),
    ("invoices", "run-recurring"),
    ("quotes", "invoice", "Q-1"),
    ("sync", "crm.xlsx"),
    ("sync", "new.xlsx", "--create"),
    ("merge", "TEMPLATE"),
    ("campaigns", "list"),
    ("report", "pipeline"),
    ("report", "cases"),
    ("store", "upgrade"),
]


def template(tmp_path: Path) -> Path:
    path = tmp_path / "templates" / "hello.md"
    path.parent.mkdir(exist_ok=True)
    path.write_text("Subject: Hello {{ name }}\n\nHello {{ name }}\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("command", COMMANDS, ids=" ".join)
def test_unrelated_folder_every_command_refuses_in_one_line_and_creates_nothing(
    crmkit: Run, tmp_path: Path, command: tuple[str, ...]
) -> None:
    folder = tmp_path / "elsewhere"
    folder.mkdir()
    args = [str(template(tmp_path)) if arg == "TEMPLATE" else arg for arg in command]
    result = crmkit(folder, *args)
    assert result.exit_code == 1, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: no ")
    if command != ("store", "upgrade"):  # its own message (crmkit/store/upgrade.py): "no store at crm.json"
        assert "crmkit init" in lines[0] and "--store" in lines[0] and "no crmkit.toml" in lines[0]
    assert files_in(folder) == set()  # no crm.json, no lock file, no workbook


@pytest.fixture
def project(crmkit: Run, tmp_path: Path) -> Path:
    """A folder `crmkit init` set up, with a subfolder two levels down."""
    assert crmkit(tmp_path, "init", "acme").exit_code == 0
    (tmp_path / "acme" / "notes" / "2026").mkdir(parents=True)
    return tmp_path / "acme"


def test_subfolder_reads_and_writes_the_projects_store(crmkit: Run, project: Path) -> None:
    sub = project / "notes" / "2026"
    assert crmkit(sub, "accounts", "add", "name=Sao Mai", "domain=saomai.vn").exit_code == 0
    added = crmkit(sub, "contacts", "add", "name=Hoa", "email=hoa@saomai.vn", "account=saomai.vn")
    assert added.exit_code == 0, added.output
    assert crmkit(sub, "deals", "add", "title=Routing", "account=A-1", "amount=500").exit_code == 0
    assert crmkit(sub, "deals", "update", "D-1", "stage=negotiation").exit_code == 0
    assert Store(project / "crm.json").get("C-1")["account"] == "A-1"
    assert Store(project / "crm.json").get("D-1")["stage"] == "negotiation"
    shown = crmkit(sub, "contacts", "show", "hoa@saomai.vn")
    assert shown.exit_code == 0 and "Sao Mai" in shown.output
    report = crmkit(sub, "report", "pipeline", "--json")
    assert report.exit_code == 0 and "negotiation" in report.output
    # the workbook `crmkit init` made beside crmkit.toml, synced from below it
    synced = crmkit(sub, "sync", "../../crm.xlsx")
    assert synced.exit_code == 0, synced.output
    assert files_in(sub) == set()  # no stray second store, no lock file


def test_relative_paths_in_crmkit_toml_are_relative_to_its_folder(crmkit: Run, tmp_path: Path) -> None:
    project = tmp_path / "acme"
    (project / "src").mkdir(parents=True)
    (project / "crmkit.toml").write_text('store = "data/crm.json"\n', encoding="utf-8")
    refused = crmkit(project / "src", "contacts", "add", "name=Ana", "email=ana@example.com")
    assert refused.exit_code == 1
    assert refused.output.strip() == (
        f"Error: no store at {project / 'data' / 'crm.json'}, where {project / 'crmkit.toml'} puts it: "
        f"run `crmkit init {project}` to create it, or pass --store / set CRMKIT_STORE"
    )
    # the command it names makes exactly the store crmkit.toml names, and keeps crmkit.toml as it is
    init = crmkit(project / "src", "init", str(project))
    assert init.exit_code == 0, init.output
    assert f"created {project / 'data' / 'crm.json'}" in init.output and not (project / "crm.json").exists()
    assert (project / "crmkit.toml").read_text(encoding="utf-8") == 'store = "data/crm.json"\n'
    assert crmkit(project / "src", "contacts", "add", "name=Ana", "email=ana@example.com").exit_code == 0
    assert Store(project / "data" / "crm.json").get("C-1")["name"] == "Ana"


def test_without_a_store_key_the_store_is_beside_crmkit_toml(crmkit: Run, tmp_path: Path) -> None:
    (tmp_path / "crmkit.toml").write_text('default_currency = "EUR"\n', encoding="utf-8")
    Store(tmp_path / "crm.json").create()
    sub = tmp_path / "sub"
    sub.mkdir()
    assert crmkit(sub, "deals", "add", "title=X", "amount=5").exit_code == 0
    assert Store(tmp_path / "crm.json").get("D-1")["currency"] == "EUR"
    assert files_in(sub) == set()


def test_the_nearest_crmkit_toml_wins(crmkit: Run, project: Path) -> None:
    inner = project / "notes"
    assert crmkit(inner, "init", ".").exit_code == 0  # a project inside a project
    assert crmkit(inner / "2026", "contacts", "add", "name=Inner", "email=in@example.com").exit_code == 0
    assert crmkit(project, "contacts", "add", "name=Outer", "email=out@example.com").exit_code == 0
    assert Store(inner / "crm.json").get("C-1")["name"] == "Inner"
    assert Store(project / "crm.json").get("C-1")["name"] == "Outer"


def test_a_crm_json_without_crmkit_toml_is_still_used_in_its_own_folder(crmkit: Run, tmp_path: Path) -> None:
    Store(tmp_path / "crm.json").create()
    assert crmkit(tmp_path, "contacts", "add", "name=Ana", "email=ana@example.com").exit_code == 0
    assert Store(tmp_path / "crm.json").get("C-1")["name"] == "Ana"
    sub = tmp_path / "sub"
    sub.mkdir()
    refused = crmkit(sub, "contacts", "list")  # only crmkit.toml is looked for above
    assert refused.exit_code == 1 and "crmkit init" in refused.output


@pytest.mark.parametrize("how", ["--store", "CRMKIT_STORE"])
def test_an_explicitly_named_store_is_created_by_a_write(crmkit: Run, tmp_path: Path, how: str) -> None:
    target = tmp_path / "named" / "team.json"
    target.parent.mkdir()
    options, env = (
        (["--store", str(target)], None) if how == "--store" else ([], {"CRMKIT_STORE": str(target)})
    )
    listed = crmkit(tmp_path, *options, "contacts", "list", env=env)
    assert listed.exit_code == 1 and f"no store at {target} (named by {how})" in listed.output
    assert not target.exists()  # a read never creates
    assert (
        crmkit(tmp_path, *options, "contacts", "add", "name=Ana", "email=a@example.com", env=env).exit_code
        == 0
    )
    assert Store(target).get("C-1")["name"] == "Ana"
    assert not (tmp_path / "crm.json").exists()


def test_init_quickstart_and_store_create_still_create(crmkit: Run, tmp_path: Path) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    created = crmkit(empty, "store", "create")
    assert created.exit_code == 0 and "crm.json created" in created.output
    assert Store(empty / "crm.json").exists_on_disk()
    # a crmkit.toml above naming a store not made yet: `store create` makes that one
    (tmp_path / "crmkit.toml").write_text('store = "team/crm.json"\n', encoding="utf-8")
    sub = tmp_path / "sub"
    sub.mkdir()
    assert crmkit(sub, "store", "create").exit_code == 0
    assert Store(tmp_path / "team" / "crm.json").exists_on_disk() and files_in(sub) == set()
    quick = crmkit(tmp_path / "sub", "quickstart", "--dir", "demo", "--json")
    assert quick.exit_code == 0, quick.output
    # the demo folder has its own crmkit.toml, so commands run there use the demo's store
    demo = crmkit(sub / "demo", "deals", "list", "--json")
    assert demo.exit_code == 0 and '"D-1"' in demo.output


def test_postgresql_store_named_by_crmkit_toml_must_exist_to_be_written(
    crmkit: Run, tmp_path: Path, postgres_url: str
) -> None:
    (tmp_path / "crmkit.toml").write_text(f'store = "{postgres_url}"\n', encoding="utf-8")
    refused = crmkit(tmp_path, "contacts", "add", "name=Ana", "email=ana@example.com")
    assert refused.exit_code == 1, refused.output
    assert "the database has no crmkit tables" in refused.output and "crmkit store create" in refused.output
    assert not Store(postgres_url).exists_on_disk()
    assert crmkit(tmp_path, "store", "create").exit_code == 0
    assert crmkit(tmp_path, "contacts", "add", "name=Ana", "email=ana@example.com").exit_code == 0
    assert Store(postgres_url).get("C-1")["name"] == "Ana"
