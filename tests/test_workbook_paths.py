"""`crmkit sync` and the workbook file itself: a path that does not exist, a folder, a symlink,
permissions and owner, a damaged part, a row past the sheet's end. Each bad case is one line on
stderr, exit 1, and the workbook left byte for byte as it was."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import pytest
from openpyxl import Workbook

from crmkit.workbooks import build_template


@pytest.fixture
def run(crm_folder):
    return crm_folder


def one_line_error(result) -> str:
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "Traceback" not in result.output
    return lines[0]


def test_a_typo_in_the_workbook_name_is_an_error_not_a_new_workbook(run, tmp_path: Path) -> None:
    line = one_line_error(run("sync", "crm-typo.xlsx", code=1))
    assert "crm-typo.xlsx does not exist" in line and "--create" in line
    assert not (tmp_path / "crm-typo.xlsx").exists()


def test_create_starts_a_new_workbook_from_the_template(run, tmp_path: Path) -> None:
    run("sync", "team.xlsx", "--create")
    with zipfile.ZipFile(tmp_path / "team.xlsx") as zf:
        assert any(b"Ana Lima" in zf.read(n) for n in zf.namelist() if n.startswith("xl/worksheets/"))
    assert (tmp_path / "team.xlsx").stat().st_mode & 0o777 == 0o666 & ~current_umask()


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_the_workbook_crmkit_init_made_is_made_again_when_deleted(run, tmp_path: Path) -> None:
    (tmp_path / "crm.xlsx").unlink()
    run("sync", "crm.xlsx")
    assert (tmp_path / "crm.xlsx").exists()


def test_a_folder_is_one_line_and_exit_1(run, tmp_path: Path) -> None:
    line = one_line_error(run("sync", ".", code=1))
    assert "is a folder" in line
    (tmp_path / "book.xlsx").mkdir()
    assert "is a folder" in one_line_error(run("sync", "book.xlsx", code=1))


def test_a_symlink_stays_a_link_and_its_target_is_updated(run, tmp_path: Path) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    target = shared / "team.xlsx"
    build_template(target)
    target.chmod(0o640)
    link = tmp_path / "team.xlsx"
    link.symlink_to(target)
    run("sync", "team.xlsx")
    assert link.is_symlink() and os.readlink(link) == str(target)
    with zipfile.ZipFile(target) as zf:
        assert any(b"Ana Lima" in zf.read(n) for n in zf.namelist() if n.startswith("xl/worksheets/"))
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in shared.iterdir()) == ["team.xlsx"]  # no temporary file left


@pytest.mark.skipif(os.geteuid() != 0, reason="only root can give a file to another owner")
def test_the_owner_and_group_are_kept(run, tmp_path: Path) -> None:
    path = tmp_path / "crm.xlsx"
    os.chown(path, 1234, 2345)
    run("sync", "crm.xlsx")
    assert (path.stat().st_uid, path.stat().st_gid) == (1234, 2345)


def damaged_copy(source: Path, target: Path, member: str) -> None:
    """``source`` with ``member``'s compressed bytes cut in half (its zip entry says otherwise)."""
    with zipfile.ZipFile(source) as zin, zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            zout.writestr(info, zin.read(info))
    data = bytearray(target.read_bytes())
    with zipfile.ZipFile(target) as zf:
        info = zf.getinfo(member)
    start = info.header_offset + 30 + len(info.filename.encode()) + len(info.extra)
    for i in range(start + info.compress_size // 3, start + info.compress_size):
        data[i] = 0
    target.write_bytes(bytes(data))


def test_a_damaged_sheet_part_is_one_line_and_nothing_is_written(run, tmp_path: Path) -> None:
    damaged_copy(tmp_path / "crm.xlsx", tmp_path / "broken.xlsx", "xl/worksheets/sheet2.xml")
    before = (tmp_path / "broken.xlsx").read_bytes()
    line = one_line_error(run("sync", "broken.xlsx", code=1))
    assert "broken.xlsx" in line
    assert (tmp_path / "broken.xlsx").read_bytes() == before


def test_a_value_in_the_last_row_of_a_sheet_is_one_line_and_nothing_is_written(run, tmp_path: Path) -> None:
    path = tmp_path / "full.xlsx"
    wb = Workbook()
    ws = wb.active
    ws.title = "Contacts"
    ws.append(["ID", "Name", "Email"])
    ws.append([None, "Bo Chen", "bo@chenfreight.com"])
    ws.cell(1_048_576, 1, "the very last row")
    wb.save(path)
    before = path.read_bytes()
    line = one_line_error(run("sync", "full.xlsx", code=1))
    assert "full.xlsx" in line and "1048576" in line.replace(",", "")
    assert path.read_bytes() == before


def test_a_file_that_is_not_a_workbook_is_one_line(run, tmp_path: Path) -> None:
    (tmp_path / "notes.xlsx").write_text("just text")
    assert "notes.xlsx" in one_line_error(run("sync", "notes.xlsx", code=1))
    assert (tmp_path / "notes.xlsx").read_text() == "just text"
