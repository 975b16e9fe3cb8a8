"""Property-based tests of ``crmkit sync`` on real .xlsx files.

Each example starts from a synced state (a store with a few contacts, a
workbook built from crmkit's template with a custom "Region" column, one sync
so both sides agree), then makes a random sequence of edits on both sides:

* on the sheet (openpyxl: load, change cells, save, as a person in Excel
  would): cell edits of Title, Owner and Region, new rows without an ID, rows
  deleted (removed, or just emptied);
* in the store (:class:`Store`): updates of the same fields, new records,
  archived records.

A model of what each side did tells what the sync must do: a field changed
on one side only ends up on both sides, a field changed on both sides to
different values is a conflict (``fail`` keeps both edits, ``sheet``/``store``
copies the winner), new rows become records and get their ID written back,
new records become rows, deleted rows archive their record, and a second sync
changes nothing. Values include Vietnamese letters and text starting with
``=``, ``+``, ``-`` or ``@``, which crmkit must write as text, never as a formula.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from crmkit.records.schema import CONTACT
from crmkit.store import Store
from crmkit.sync import SyncReport, sync_book
from crmkit.sync.excel import ExcelBook
from crmkit.workbooks import build_template, sheet_columns

SHEET = CONTACT.sheet  # "Contacts"
#: The fields edited on both sides: model key -> sheet header.
HEADERS = {"title": "Title", "owner": "Owner", "region": "Region"}
FIELDS = tuple(HEADERS)
#: How the store names them ("Region" is a custom field: a column the schema does not know).
STORE_KEYS = {"title": "title", "owner": "owner", "region": "Region"}

# Text people type: a small alphabet so that edits often collide, Vietnamese
# letters, and characters a spreadsheet would take for the start of a formula.
_ALPHABET = "aBưƯđ=+-@1 "
texts = st.one_of(
    st.text(alphabet=_ALPHABET, min_size=1, max_size=4).map(str.strip).filter(bool),
    st.sampled_from(["=1+1", "=SUM(A1:A2)", "+84 90 123", "-5", "@ana", "Trưởng phòng", "Hà Nội"]),
)
values = st.one_of(st.none(), texts)  # None: the cell or field is cleared

# Keep the examples small: every one writes real workbooks several times.
FAST = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)


# -- the scenario: a synced start and edits on both sides ----------------------


@dataclass
class Scenario:
    initial: list[dict[str, str | None]]  # per contact: field -> value both sides agree on
    ops: list[tuple[Any, ...]]


@st.composite
def scenarios(draw: st.DrawFn) -> Scenario:
    n = draw(st.integers(min_value=3, max_value=6))
    initial = [{f: draw(values) for f in FIELDS} for _ in range(n)]
    on_sheet = list(range(n))  # existing rows still on the sheet
    in_store = list(range(n))  # existing records not archived in the store
    ops: list[tuple[Any, ...]] = []
    kinds = st.sampled_from(
        ["sheet_set", "sheet_set", "store_set", "store_set", "both_set", "both_set"]
        + ["sheet_new", "store_new", "sheet_delete", "store_archive"]
    )
    for _ in range(draw(st.integers(min_value=0, max_value=10))):
        kind = draw(kinds)
        if kind == "sheet_set":
            ops.append(("sheet_set", draw(st.sampled_from(on_sheet)), draw(st.sampled_from(FIELDS)), draw(values)))
        elif kind == "store_set" and in_store:
            ops.append(("store_set", draw(st.sampled_from(in_store)), draw(st.sampled_from(FIELDS)), draw(values)))
        elif kind == "both_set":
            # The same field edited on both sides: a conflict unless the values agree.
            both = [i for i in on_sheet if i in in_store]
            if both:
                i, f = draw(st.sampled_from(both)), draw(st.sampled_from(FIELDS))
                ops.append(("sheet_set", i, f, draw(values)))
                ops.append(("store_set", i, f, draw(values)))
        elif kind == "sheet_new":
            ops.append(("sheet_new", {f: draw(values) for f in FIELDS}))
        elif kind == "store_new":
            prefix = draw(st.sampled_from(["", "=", "+", "Bà "]))
            ops.append(("store_new", prefix, {f: draw(values) for f in FIELDS}))
        elif kind == "sheet_delete" and len(on_sheet) > 1:  # never empty the sheet at once
            i = draw(st.sampled_from(on_sheet))
            on_sheet.remove(i)
            ops.append(("sheet_delete", i, draw(st.sampled_from(["remove", "empty"]))))
        elif kind == "store_archive" and len(in_store) > 1:
            i = draw(st.sampled_from(in_store))
            in_store.remove(i)
            ops.append(("store_archive", i))
    return Scenario(initial, ops)


# -- reading and writing the two sides -------------------------------------------


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """crmkit's template with a custom Region column added to the Contacts sheet."""
    path = build_template(tmp_path_factory.mktemp("template") / "book.xlsx")
    wb = load_workbook(path)
    ws = wb[SHEET]
    assert [c.value for c in ws[1]] == [f.label for f in sheet_columns(CONTACT)]
    ws.cell(1, ws.max_column + 1, "Region")
    wb.save(path)
    return path


def put(ws: Any, row: int, column: int, value: str | None) -> None:
    """Type a value as text, as Excel keeps '=x typed with a leading apostrophe."""
    cell = ws.cell(row, column)
    cell.value = value
    if isinstance(value, str):
        cell.data_type = "s"


def header_columns(ws: Any) -> dict[str, int]:
    return {str(c.value): c.column for c in ws[1] if c.value is not None}


def find_row(ws: Any, record_id: str) -> int:
    cols = header_columns(ws)
    rows = [r for r in range(2, ws.max_row + 1) if ws.cell(r, cols["ID"]).value == record_id]
    assert len(rows) == 1, f"{record_id} is on rows {rows}"
    return rows[0]


def last_data_row(ws: Any) -> int:
    row = ws.max_row
    while row > 1 and all(c.value is None for c in ws[row]):
        row -= 1
    return row


@dataclass
class SheetRow:
    number: int
    id: str | None
    name: str | None
    values: dict[str, Any]
    cells: list[Any]  # openpyxl cells, for their data types


def read_sheet(path: Path) -> list[SheetRow]:
    """The Contacts rows as the file holds them (openpyxl, not crmkit's reader)."""
    wb = load_workbook(path)
    ws = wb[SHEET]
    cols = header_columns(ws)
    rows = []
    for r in range(2, ws.max_row + 1):
        cells = list(ws[r])
        if all(c.value is None for c in cells):
            continue
        rows.append(
            SheetRow(
                r,
                ws.cell(r, cols["ID"]).value,
                ws.cell(r, cols["Name"]).value,
                {f: ws.cell(r, cols[h]).value for f, h in HEADERS.items()},
                cells,
            )
        )
    return rows


def store_values(doc: dict[str, Any]) -> dict[str, Any]:
    custom = doc.get("custom") or {}
    return {f: (custom.get(k) if f == "region" else doc.get(k)) for f, k in STORE_KEYS.items()}


def store_payload(values: dict[str, str | None]) -> dict[str, str | None]:
    return {STORE_KEYS[f]: v for f, v in values.items()}


def norm(value: Any) -> Any:
    """What a value means: empty text is nothing."""
    if isinstance(value, str) and not value.strip():
        return None
    return value


# -- one example: set up, edit, sync, check ----------------------------------------


@dataclass
class Model:
    ids: list[str]
    base: list[dict[str, Any]]
    sheet: list[dict[str, Any]]
    store: list[dict[str, Any]]
    on_sheet: set[int] = field(default_factory=set)
    archived_in_store: set[int] = field(default_factory=set)
    sheet_new: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    store_new: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (id, values incl. name)


def set_up(directory: Path, template: Path, scenario: Scenario) -> tuple[Path, Path, Model]:
    book, store_path = directory / "book.xlsx", directory / "crm.json"
    shutil.copy(template, book)
    store = Store(store_path, actor="test")
    ids = []
    for i, values in enumerate(scenario.initial):
        payload = {"name": f"Người {i}", "phone": f"+84 90 {i:03d} 4567", **store_payload(values)}
        ids.append(store.add("contacts", payload)["id"])
    first = sync_book(store, ExcelBook(book))
    assert first.book_written and not first.conflicts and not first.invalid, first.as_json()
    # Both sides agree: the rows crmkit appended hold what the store holds.
    rows = {r.id: r for r in read_sheet(book)}
    for i, record_id in enumerate(ids):
        assert {f: norm(v) for f, v in rows[record_id].values.items()} == scenario.initial[i]
    n = len(ids)
    model = Model(
        ids,
        base=[dict(v) for v in scenario.initial],
        sheet=[dict(v) for v in scenario.initial],
        store=[dict(v) for v in scenario.initial],
        on_sheet=set(range(n)),
    )
    return book, store_path, model


def apply_edits(book: Path, store_path: Path, scenario: Scenario, model: Model) -> None:
    store = Store(store_path, actor="test")
    wb = load_workbook(book)
    ws = wb[SHEET]
    cols = header_columns(ws)
    for op in scenario.ops:
        kind = op[0]
        if kind == "sheet_set":
            _, i, f, value = op
            put(ws, find_row(ws, model.ids[i]), cols[HEADERS[f]], value)
            model.sheet[i][f] = value
        elif kind == "store_set":
            _, i, f, value = op
            store.update(model.ids[i], {STORE_KEYS[f]: value})
            model.store[i][f] = value
        elif kind == "sheet_new":
            _, values = op
            name = f"Mới {len(model.sheet_new)}"
            row = last_data_row(ws) + 1
            put(ws, row, cols["Name"], name)
            for f, value in values.items():
                put(ws, row, cols[HEADERS[f]], value)
            model.sheet_new.append((name, values))
        elif kind == "store_new":
            _, prefix, values = op
            name = f"{prefix}Store {len(model.store_new)}"
            doc = store.add("contacts", {"name": name, **store_payload(values)})
            model.store_new.append((doc["id"], {"name": name, **values}))
        elif kind == "sheet_delete":
            _, i, how = op
            row = find_row(ws, model.ids[i])
            if how == "remove":
                ws.delete_rows(row)
            else:
                for cell in ws[row]:
                    cell.value = None
            model.on_sheet.discard(i)
        elif kind == "store_archive":
            _, i = op
            store.archive(model.ids[i])
            model.archived_in_store.add(i)
        else:  # pragma: no cover
            raise AssertionError(op)
    wb.save(book)


def conflict_key(c: Any) -> tuple[Any, ...]:
    return (c.sheet, c.row, c.record_id, c.field, c.sheet_value, c.store_value, c.resolution)


def check_formula_guard(rows: list[SheetRow]) -> None:
    """(f) Nothing on the sheet became a formula: text starting with = is text."""
    for row in rows:
        for cell in row.cells:
            assert cell.data_type != "f", f"{cell.coordinate} holds a formula: {cell.value!r}"
            if isinstance(cell.value, str) and cell.value.startswith("="):
                assert cell.data_type == "s", (cell.coordinate, cell.value, cell.data_type)


def run_and_check(directory: Path, template: Path, scenario: Scenario, on_conflict: str) -> None:
    book, store_path, model = set_up(directory, template, scenario)
    apply_edits(book, store_path, scenario, model)

    report = sync_book(Store(store_path, actor="test"), ExcelBook(book), on_conflict=on_conflict)
    assert not report.invalid, report.as_json()

    rows = read_sheet(book)
    by_id = {r.id: r for r in rows if r.id is not None}
    assert len(by_id) == len(rows), f"rows without an ID or with the same ID: {[(r.number, r.id) for r in rows]}"
    fresh = Store(store_path, actor="check")
    resolution = {"fail": "none", "sheet": "sheet", "store": "store"}[on_conflict]

    expected_conflicts = set()
    expected_archived = []
    for i, record_id in enumerate(model.ids):
        doc = fresh.get(record_id)  # never destroyed
        stored = {f: norm(v) for f, v in store_values(doc).items()}
        if i in model.archived_in_store:
            # Archived in crmkit: the record keeps its values; a row still on the sheet is left as is.
            assert doc.get("archived_at"), record_id
            assert stored == model.store[i], record_id
            if i in model.on_sheet:
                assert {f: norm(v) for f, v in by_id[record_id].values.items()} == model.sheet[i]
            else:
                assert record_id not in by_id
            continue
        if i not in model.on_sheet:
            # (d) The row was deleted: the record is archived, not destroyed, and keeps its values.
            assert doc.get("archived_at"), f"{record_id}: row deleted but record not archived"
            assert stored == model.store[i], record_id
            assert record_id not in by_id
            expected_archived.append(record_id)
            continue
        assert not doc.get("archived_at"), record_id
        row = by_id[record_id]
        on_sheet = {f: norm(v) for f, v in row.values.items()}
        assert row.name == f"Người {i}" and doc["name"] == f"Người {i}"
        for f in FIELDS:
            s, t, b = model.sheet[i][f], model.store[i][f], model.base[i][f]
            where = f"{record_id} {HEADERS[f]}: base {b!r}, sheet edit {s!r}, store edit {t!r}"
            if s == t or t == b:  # (a) changed on the sheet only (or alike on both sides)
                assert (on_sheet[f], stored[f]) == (s, s), where
            elif s == b:  # (a) changed in the store only
                assert (on_sheet[f], stored[f]) == (t, t), where
            else:  # (b) changed on both sides to different values: a conflict
                expected_conflicts.add((SHEET, row.number, record_id, HEADERS[f], s, t, resolution))
                winner = {"none": None, "sheet": s, "store": t}[resolution]
                if winner is None:  # nothing lost: each side keeps its own edit
                    assert (on_sheet[f], stored[f]) == (s, t), where
                else:
                    assert (on_sheet[f], stored[f]) == (winner, winner), where
    assert set(map(conflict_key, report.conflicts)) == expected_conflicts
    assert len(report.conflicts) == len(expected_conflicts), report.conflicts
    assert report.needs_attention == (resolution == "none" and bool(expected_conflicts))

    contacts = next(s for s in report.sheets if s.sheet == SHEET)
    assert sorted(contacts.store_archived) == sorted(expected_archived)

    # (c) New sheet rows became records, their IDs written back on their rows.
    added = []
    for name, values in model.sheet_new:
        [row] = [r for r in rows if r.name == name]
        assert row.id, f"no ID written back on row {row.number} ({name})"
        doc = fresh.get(row.id)
        assert not doc.get("archived_at") and doc["name"] == name
        assert {f: norm(v) for f, v in store_values(doc).items()} == values
        assert {f: norm(v) for f, v in row.values.items()} == values
        added.append(row.id)
    assert sorted(contacts.store_added) == sorted(added)
    assert contacts.ids_written == len(added)

    # (c) New store records became rows.
    for record_id, values in model.store_new:
        assert record_id in by_id, f"{record_id} was not appended to the sheet"
        row = by_id[record_id]
        assert row.name == values["name"]
        assert {f: norm(v) for f, v in row.values.items()} == {f: values[f] for f in FIELDS}
    assert sorted(contacts.sheet_added) == sorted(i for i, _ in model.store_new)

    # Nothing else is on either side.
    expected_rows = {model.ids[i] for i in model.on_sheet} | set(added) | {i for i, _ in model.store_new}
    assert set(by_id) == expected_rows
    active = {d["id"] for d in fresh.all("contacts")}
    assert active == expected_rows - {model.ids[i] for i in model.archived_in_store}

    check_formula_guard(rows)

    # (e) A second sync changes nothing and leaves the file alone.
    before, mtime = book.read_bytes(), book.stat().st_mtime_ns
    again = sync_book(Store(store_path, actor="test"), ExcelBook(book), on_conflict=on_conflict)
    assert again.changes == 0 and not again.book_written, again.as_json()
    assert book.read_bytes() == before and book.stat().st_mtime_ns == mtime

    # ... even when it has to read every row: the workbook saved again, unchanged, in
    # another program. Open conflicts stay open; nothing else happens.
    wb = load_workbook(book)
    wb.save(book)
    before, mtime = book.read_bytes(), book.stat().st_mtime_ns
    third = sync_book(Store(store_path, actor="test"), ExcelBook(book), on_conflict=on_conflict)
    assert third.changes == 0 and not third.book_written, third.as_json()
    assert not third.invalid, third.as_json()
    assert book.read_bytes() == before and book.stat().st_mtime_ns == mtime
    still_open = {k for k in expected_conflicts if k[-1] == "none"}
    assert set(map(conflict_key, third.conflicts)) == still_open
    # The store did not move either.
    assert {d["id"]: d for d in Store(store_path).all("contacts", archived=True)} == {
        d["id"]: d for d in fresh.all("contacts", archived=True)
    }


# -- the tests -------------------------------------------------------------------


@FAST
@given(scenario=scenarios())
def test_sync_merges_edits_from_both_sides(
    scenario: Scenario, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """on_conflict="fail": one-sided edits cross over; conflicts are reported and change neither side."""
    run_and_check(tmp_path_factory.mktemp("ex"), template, scenario, "fail")


@settings(FAST, max_examples=15)
@given(scenario=scenarios())
@pytest.mark.parametrize("winner", ["sheet", "store"])
def test_sync_conflict_winner_holds_on_both_sides(
    winner: str, scenario: Scenario, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """on_conflict="sheet"/"store": the winner's value ends up on both sides."""
    run_and_check(tmp_path_factory.mktemp("ex"), template, scenario, winner)


@settings(FAST, max_examples=15)
@given(
    n=st.integers(min_value=1, max_value=4),
    sheet_values=st.lists(texts, min_size=4, max_size=4),
    store_values_=st.lists(texts, min_size=4, max_size=4),
    on_conflict=st.sampled_from(["fail", "sheet", "store"]),
)
def test_every_field_edited_on_both_sides_conflicts(
    n: int,
    sheet_values: list[str],
    store_values_: list[str],
    on_conflict: str,
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Many conflicts at once, each reported once with its row, ID and field."""
    ops: list[tuple[Any, ...]] = []
    for i in range(n):
        for f in FIELDS:
            ops.append(("sheet_set", i, f, f"s{sheet_values[i]}"))
            ops.append(("store_set", i, f, f"t{store_values_[i]}"))
    scenario = Scenario([{f: "gốc" for f in FIELDS} for _ in range(max(n, 3))], ops)
    run_and_check(tmp_path_factory.mktemp("ex"), template, scenario, on_conflict)
