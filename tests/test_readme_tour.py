"""The README's tour, run as a newcomer runs it: every line, in a fresh folder, through the real `crmkit`."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from crmkit.store import Store

README = Path(__file__).resolve().parent.parent / "README.md"
CRMKIT = Path(sys.executable).parent / "crmkit"  # the console script pip installed beside this Python


def tour_lines(readme: str) -> list[str]:
    """The commands of the first ```sh block under "## A tour", comments and blank lines dropped."""
    section = readme.split("\n## A tour\n", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"^```sh\n(.*?)^```$", section, re.S | re.M)
    assert block is not None, "README's tour has no ```sh block"
    return [
        line for line in block.group(1).splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def run_tour(folder: Path) -> dict[str, subprocess.CompletedProcess[str]]:
    """Run the tour in ``folder``; each command's result by its line. `cd` moves, as in a shell."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    env["PATH"] = f"{CRMKIT.parent}{os.pathsep}{env.get('PATH', '')}"
    cwd, results = folder, {}
    for line in tour_lines(README.read_text(encoding="utf-8")):
        argv = shlex.split(line, comments=True)
        if argv[0] == "cd":
            cwd = cwd / argv[1]
            assert cwd.is_dir(), f"{line}: no such folder"
            continue
        assert argv[0] == "crmkit", f"the tour runs crmkit only: {line}"
        done = subprocess.run(
            [str(CRMKIT), *argv[1:]], cwd=cwd, env=env, capture_output=True, text=True, check=False
        )
        assert done.returncode == 0, f"{line}\nexit {done.returncode}: {done.stderr}{done.stdout}"
        results[line] = done
    return results


@pytest.fixture(scope="module")
def tour(
    tmp_path_factory: pytest.TempPathFactory,
) -> tuple[Path, dict[str, subprocess.CompletedProcess[str]]]:
    if not CRMKIT.is_file():
        pytest.fail(f"no crmkit console script at {CRMKIT}: install crmkit (pip install -e .)")
    folder = tmp_path_factory.mktemp("tour")
    return folder, run_tour(folder)


def output_of(results: dict[str, subprocess.CompletedProcess[str]], command: str) -> str:
    (line,) = [line for line in results if shlex.split(line, comments=True) == shlex.split(command)]
    return results[line].stdout


def test_tour_block_is_found_and_covers_what_the_readme_promises() -> None:
    lines = [shlex.split(line, comments=True)[:3] for line in tour_lines(README.read_text(encoding="utf-8"))]
    assert lines[0][:2] == ["crmkit", "init"] and ["cd", "acme-crm"] in lines
    for command in (
        ["crmkit", "leads", "convert"],
        ["crmkit", "contacts", "merge"],
        ["crmkit", "contacts", "show"],
    ):
        assert command in lines


def test_tour_runs_top_to_bottom_and_the_store_ends_as_its_comments_say(tour: tuple[Path, dict]) -> None:
    folder, results = tour
    store = Store(folder / "acme-crm" / "crm.json")

    account = store.get("A-1")
    assert (account["name"], account["domain"], account["tier"]) == ("Sao Mai Logistics", "saomai.vn", "A")
    hoa = store.get("C-1")
    assert (hoa["email"], hoa["account"], hoa["tags"]) == ("hoa@saomai.vn", "A-1", ["vip", "logistics"])

    # deals update D-1 stage=negotiation: probability 75, forecast "commit", stage history recorded
    deal = store.get("D-1")
    assert (deal["stage"], deal["probability"], deal["forecast_category"]) == ("negotiation", 75, "commit")
    assert [h["stage"] for h in deal["stage_history"]] == ["prospecting", "negotiation"]
    assert (deal["account"], deal["contact"]) == ("A-1", "C-1")

    invoice = store.get("I-1")
    assert invoice["number"].startswith("INV-") and invoice["account"] == "A-1"
    assert invoice["total"] == "2956.80"  # 1 x 1500 + 12 x 99, plus 10% tax

    # leads convert L-1: a contact, an account and a deal, none of them duplicated
    lead = store.get("L-1")
    assert lead["status"] == "converted"
    assert (
        store.get("A-2")["name"] == "Hanoi Fresh Foods" and store.get("C-2")["email"] == "binh@hanoifresh.vn"
    )
    assert store.get("D-2")["amount"] == "12000.00" and store.get("D-2")["account"] == "A-2"
    assert store.count("accounts") == 2

    # contacts merge C-1 C-3: C-3's case and activity now belong to C-1, and C-3 is archived
    merged = store.get("C-3")
    assert merged["archived_at"] is not None
    assert store.get("CASE-1")["contact"] == "C-1" and store.get("ACT-1")["contact"] == "C-1"
    assert "Merged C-3 into C-1" in output_of(results, "crmkit contacts merge C-1 C-3")

    # the list, the --json and the 360° view show what the tour made
    listed = output_of(results, "crmkit contacts list --where account=A-1")
    assert "hoa@saomai.vn" in listed and "hoa.nguyen@gmail.com" not in listed  # merged away
    deals = json.loads(
        output_of(results, "crmkit deals list --where stage=negotiation --where owner!=ana --json")
    )
    assert [d["id"] for d in deals] == ["D-1"]
    view = output_of(results, "crmkit contacts show hoa@saomai.vn")
    assert all(text in view for text in ("Sao Mai Logistics", "D-1", "CASE-1", "ACT-1"))


def test_tour_commands_work_from_a_subfolder_of_the_project(tour: tuple[Path, dict]) -> None:
    folder, _ = tour
    sub = folder / "acme-crm" / "notes" / "2026"
    sub.mkdir(parents=True)
    env = {k: v for k, v in os.environ.items() if not k.startswith("CRMKIT_")}
    done = subprocess.run(
        [str(CRMKIT), "contacts", "show", "hoa@saomai.vn", "--json"],
        cwd=sub,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["id"] == "C-1"
    assert not any(sub.iterdir()) and not (folder / "acme-crm" / "notes" / "crm.json").exists()
