"""Property-based tests of ``crmkit sync`` on real .xlsx files.

Each example starts from a synced state (a store with a few contacts, a
workbook built from crmkit's template with a custom "Region" column, one sync
so both sides agree), then makes a random sequence of edits on both sides:

* on the sheet (openpyxl: load, change cells, save, as a person in Excel
  would): cell edits of Title, Owner and Region, new rows without an ID (below
  the last row, in an emptied row, or inserted between two rows), rows deleted
  (removed, or just emptied), rows swapped (a sort);
* in the store (:class:`Store`): updates of the same fields, new records,
  archived records.

A model of what each side did tells what the sync must do: a field changed
on one side only ends up on both sides; a field changed on both sides to
different values is a conflict (``fail`` keeps both edits, ``sheet``/``store``
copies the winner to both sides); new rows become records and get their ID
written back; new records become rows; deleted rows archive their record; a
second sync changes nothing and leaves the file alone. Values include
Vietnamese letters and text starting with ``=``, ``+``, ``-`` or ``@``, which
crmkit must write as text, never as a formula.

The multi-round test repeats edits and syncs on the same pair, so that each
round starts from the state the previous sync left (open conflicts included).
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st
from openpyxl import load_workbook

from crmkit.records.schema import CONTACT
from crmkit.store import Store
from crmkit.sync import SheetSummary, SyncReport, sync_book
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
# None clears a cell or field; blank text means the same. Spaces around a value are not part of it.
values = st.one_of(st.none(), texts, texts.map(lambda v: f" {v}  "), st.just("  "))

# Keep the examples small: every one writes real workbooks several times.
FAST = settings(
    max_examples=30,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)

Op = tuple[Any, ...]


# -- the scenario: a synced start and rounds of edits on both sides ----------------


@dataclass
class Scenario:
    initial: list[dict[str, str | None]]  # per contact: field -> value both sides agree on
    rounds: list[list[Op]]  # each round: edits on both sides, then a sync
    typed_on_sheet: list[bool] = field(default_factory=list)  # per contact: first typed on the sheet


@st.composite
def scenarios(draw: st.DrawFn, rounds: int = 1) -> Scenario:
    """Contacts 0..n-1 exist at the start; contacts made later take the next numbers."""
    n = draw(st.integers(min_value=3, max_value=6))
    initial = [{f: draw(values) for f in FIELDS} for _ in range(n)]
    typed_on_sheet = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    on_sheet = list(range(n))  # contacts with a row on the sheet
    in_store = list(range(n))  # contacts active (not archived) in the store
    total = n
    kinds = st.sampled_from(
        [
            *("sheet_set", "sheet_set", "store_set", "store_set", "both_set", "both_set"),
            *("sheet_new", "store_new", "sheet_delete", "store_archive", "sheet_swap"),
            *("sheet_copy", "store_copy", "sheet_revert", "store_revert"),
        ]
    )
    all_rounds: list[list[Op]] = []
    for _ in range(rounds):
        ops: list[Op] = []
        made: list[int] = []
        for _ in range(draw(st.integers(min_value=0, max_value=10))):
            kind = draw(kinds)
            if kind == "sheet_set":
                i, f = draw(st.sampled_from(on_sheet)), draw(st.sampled_from(FIELDS))
                ops.append(("sheet_set", i, f, draw(values)))
            elif kind == "store_set" and in_store:
                i, f = draw(st.sampled_from(in_store)), draw(st.sampled_from(FIELDS))
                ops.append(("store_set", i, f, draw(values)))
            elif kind in ("sheet_copy", "sheet_revert"):
                # Copy the store's value (settling a conflict by hand), or undo an edit.
                i, f = draw(st.sampled_from(on_sheet)), draw(st.sampled_from(FIELDS))
                ops.append((kind, i, f))
            elif kind in ("store_copy", "store_revert") and in_store:
                i, f = draw(st.sampled_from(in_store)), draw(st.sampled_from(FIELDS))
                ops.append((kind, i, f))
            elif kind == "both_set":
                # The same field edited on both sides: a conflict unless the values agree.
                both = [i for i in on_sheet if i in in_store]
                if both:
                    i, f = draw(st.sampled_from(both)), draw(st.sampled_from(FIELDS))
                    ops.append(("sheet_set", i, f, draw(values)))
                    ops.append(("store_set", i, f, draw(values)))
            elif kind == "sheet_new":
                # Typed below the last row, into a row emptied before, or into a row inserted between two.
                where = draw(st.sampled_from(["end", "gap", "insert"]))
                pick = draw(st.integers(0, 20))
                ops.append(("sheet_new", total, where, pick, {f: draw(values) for f in FIELDS}))
                made.append(total)
                total += 1
            elif kind == "store_new":
                prefix = draw(st.sampled_from(["", "=", "+", "Bà "]))
                ops.append(("store_new", total, prefix, {f: draw(values) for f in FIELDS}))
                made.append(total)
                total += 1
            elif kind == "sheet_swap":
                # Rows moved around (a sort): the ID column still ties each row to its record.
                ops.append(("sheet_swap", draw(st.integers(0, 20)), draw(st.integers(0, 20))))
            elif kind == "sheet_delete" and len(on_sheet) > 1:  # never empty the sheet at once
                i = draw(st.sampled_from(on_sheet))
                on_sheet.remove(i)
                ops.append(("sheet_delete", i, draw(st.sampled_from(["remove", "empty"]))))
            elif kind == "store_archive" and len(in_store) > 1:
                i = draw(st.sampled_from(in_store))
                in_store.remove(i)
                ops.append(("store_archive", i))
        all_rounds.append(ops)
        # After the sync: rows deleted archived their records; new rows and records are on both sides.
        in_store = [i for i in in_store if i in on_sheet] + made
        on_sheet = on_sheet + made
    return Scenario(initial, all_rounds, typed_on_sheet)


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


def put(ws: Any, row: int, column: int, value: Any) -> None:
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
    values: dict[str, Any]  # by model field, empty text as None
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
                {f: norm(ws.cell(r, cols[h]).value) for f, h in HEADERS.items()},
                cells,
            )
        )
    return rows


def store_values(doc: dict[str, Any]) -> dict[str, Any]:
    custom = doc.get("custom") or {}
    return {f: norm(custom.get(k) if f == "region" else doc.get(k)) for f, k in STORE_KEYS.items()}


def store_payload(values: dict[str, str | None]) -> dict[str, str | None]:
    return {STORE_KEYS[f]: v for f, v in values.items()}


def norm(value: Any) -> Any:
    """What a value means: spaces around text are not part of it, and blank text is nothing."""
    if isinstance(value, str):
        return value.strip() or None
    return value


# -- the model of both sides -------------------------------------------------------


@dataclass
class Model:
    """Per contact (by number): its ID, name, and field values on each side and in the base."""

    ids: list[str | None] = field(default_factory=list)  # None until a new row is synced
    names: list[str] = field(default_factory=list)
    base: list[dict[str, Any]] = field(default_factory=list)  # agreed at the end of the last sync
    sheet: list[dict[str, Any]] = field(default_factory=list)
    store: list[dict[str, Any]] = field(default_factory=list)
    on_sheet: set[int] = field(default_factory=set)
    archived: set[int] = field(default_factory=set)  # archived in the store

    def id(self, i: int) -> str:
        record_id = self.ids[i]
        assert record_id is not None, f"contact {i} has no ID yet"
        return record_id

    def add(self, record_id: str | None, name: str, values: dict[str, Any]) -> int:
        self.ids.append(record_id)
        self.names.append(name)
        self.base.append(dict(values))
        self.sheet.append(dict(values))
        self.store.append(dict(values))
        return len(self.ids) - 1


@dataclass
class Round:
    """What one round of edits did, beyond field edits."""

    sheet_new: list[int] = field(default_factory=list)
    store_new: list[int] = field(default_factory=list)
    deleted: list[int] = field(default_factory=list)  # rows deleted from the sheet


def set_up(directory: Path, template: Path, scenario: Scenario) -> tuple[Path, Path, Model]:
    book, store_path = directory / "book.xlsx", directory / "crm.json"
    shutil.copy(template, book)
    store = Store(store_path, actor="test")
    wb = load_workbook(book)
    ws = wb[SHEET]
    cols = header_columns(ws)
    model = Model()
    for i, values in enumerate(scenario.initial):
        name, phone = f"Người {i}", f"+84 90 {i:03d} 4567"
        if scenario.typed_on_sheet and scenario.typed_on_sheet[i]:
            # Typed on the sheet, without an ID: the first sync makes the record.
            number = last_data_row(ws) + 1
            put(ws, number, cols["Name"], name)
            put(ws, number, cols["Phone"], phone)
            for f, value in values.items():
                put(ws, number, cols[HEADERS[f]], value)
            record_id = None
        else:
            record_id = store.add("contacts", {"name": name, "phone": phone, **store_payload(values)})["id"]
        model.add(record_id, name, {f: norm(v) for f, v in values.items()})
        model.on_sheet.add(i)
    wb.save(book)
    first = sync_book(store, ExcelBook(book))
    assert first.book_written and not first.conflicts and not first.invalid, first.as_json()
    # Both sides agree: rows typed on the sheet got their IDs, records made in the store got their rows.
    rows = {r.id: r for r in read_sheet(book)}
    for i, name in enumerate(model.names):
        [row] = [r for r in rows.values() if r.name == name]
        assert row.id is not None and model.ids[i] in (None, row.id)
        model.ids[i] = row.id
        assert row.values == model.base[i] == store_values(store.get(row.id))
    assert set(rows) == set(model.ids)
    check_formula_guard(list(rows.values()))
    return book, store_path, model


def apply_edits(book: Path, store_path: Path, ops: list[Op], model: Model) -> Round:
    store = Store(store_path, actor="test")
    wb = load_workbook(book)
    ws = wb[SHEET]
    cols = header_columns(ws)
    done = Round()
    for op in ops:
        kind = op[0]
        if kind in ("sheet_copy", "sheet_revert", "store_copy", "store_revert"):
            _, i, f = op
            source = {"copy": model.store if kind == "sheet_copy" else model.sheet, "revert": model.base}
            op = (kind.split("_")[0] + "_set", i, f, source[kind.split("_")[1]][i][f])
        if op[0] == "sheet_set":
            _, i, f, value = op
            put(ws, find_row(ws, model.id(i)), cols[HEADERS[f]], value)
            model.sheet[i][f] = norm(value)
        elif op[0] == "store_set":
            _, i, f, value = op
            store.update(model.id(i), {STORE_KEYS[f]: value})
            model.store[i][f] = norm(value)
        elif kind == "sheet_new":
            _, number, where, pick, values = op
            name = f"Mới {number}"
            last = last_data_row(ws)
            gaps = [r for r in range(2, last) if all(c.value is None for c in ws[r])]
            if where == "gap" and gaps:
                row = gaps[pick % len(gaps)]
            elif where == "insert" and last > 2:
                row = 3 + pick % (last - 2)  # between two data rows
                ws.insert_rows(row)
            else:
                row = last + 1
            put(ws, row, cols["Name"], name)
            for f, value in values.items():
                put(ws, row, cols[HEADERS[f]], value)
            assert model.add(None, name, {f: norm(v) for f, v in values.items()}) == number
            model.on_sheet.add(number)
            done.sheet_new.append(number)
        elif kind == "store_new":
            _, number, prefix, values = op
            name = f"{prefix}Store {number}"
            doc = store.add("contacts", {"name": name, **store_payload(values)})
            assert model.add(doc["id"], name, {f: norm(v) for f, v in values.items()}) == number
            done.store_new.append(number)
        elif kind == "sheet_swap":
            _, a, b = op
            last = last_data_row(ws)
            a, b = 2 + a % (last - 1), 2 + b % (last - 1)
            width = ws.max_column
            cells_a = [ws.cell(a, c).value for c in range(1, width + 1)]
            cells_b = [ws.cell(b, c).value for c in range(1, width + 1)]
            for c in range(1, width + 1):
                put(ws, a, c, cells_b[c - 1])
                put(ws, b, c, cells_a[c - 1])
        elif kind == "sheet_delete":
            _, i, how = op
            row = find_row(ws, model.id(i))
            if how == "remove":
                ws.delete_rows(row)
            else:
                for cell in ws[row]:
                    cell.value = None
            model.on_sheet.discard(i)
            done.deleted.append(i)
        elif kind == "store_archive":
            _, i = op
            store.archive(model.id(i))
            model.archived.add(i)
        else:  # pragma: no cover
            raise AssertionError(op)
        event(f"op {kind}" + (f" ({op[2]})" if kind in ("sheet_new", "sheet_delete") else ""))
    wb.save(book)
    return done


# -- the checks ------------------------------------------------------------------


def conflict_key(c: Any) -> tuple[Any, ...]:
    return (c.sheet, c.row, c.record_id, c.field, c.sheet_value, c.store_value, c.resolution)


def contacts_summary(report: SyncReport) -> SheetSummary:
    """What the sync did to the Contacts sheet (nothing when it found nothing changed)."""
    found = [s for s in report.sheets if s.sheet == SHEET]
    assert len(found) == 1 or (report.skipped_unchanged and not found), report.as_json()
    return found[0] if found else SheetSummary(SHEET)


def check_formula_guard(rows: list[SheetRow]) -> None:
    """(f) Nothing on the sheet became a formula: text starting with = is text."""
    for row in rows:
        for cell in row.cells:
            assert cell.data_type != "f", f"{cell.coordinate} holds a formula: {cell.value!r}"
            if isinstance(cell.value, str) and cell.value.startswith("="):
                assert cell.data_type == "s", (cell.coordinate, cell.value, cell.data_type)


def check_sync(
    book: Path, store_path: Path, model: Model, done: Round, report: SyncReport, on_conflict: str
) -> None:
    """Check both sides after a sync against the model, then bring the model up to date."""
    assert not report.invalid, report.as_json()
    rows = read_sheet(book)
    by_id = {r.id: r for r in rows if r.id is not None}
    assert len(by_id) == len(rows), f"rows without an ID, or sharing one: {[(r.number, r.id) for r in rows]}"
    fresh = Store(store_path, actor="check")
    resolution = {"fail": "none", "sheet": "sheet", "store": "store"}[on_conflict]

    # (c) New sheet rows became records, their IDs written back on their rows.
    for i in done.sheet_new:
        [new] = [r for r in rows if r.name == model.names[i]]
        assert new.id, f"no ID written back on row {new.number} ({model.names[i]})"
        model.ids[i] = new.id
    model.on_sheet |= set(done.store_new)  # (c) new records should now have rows

    expected_conflicts: set[tuple[Any, ...]] = set()
    expected_archived: list[str] = []
    agreed: dict[int, dict[str, Any]] = {}  # what both sides hold now, per contact and field
    for i in range(len(model.ids)):
        record_id = model.id(i)
        doc = fresh.get(record_id)  # never destroyed
        stored = store_values(doc)
        row = by_id.get(record_id)
        if i in model.archived:
            # Archived in crmkit: the record keeps its values; a row still on the sheet is left as is.
            assert doc.get("archived_at"), record_id
            assert stored == model.store[i], record_id
            if i in model.on_sheet:
                assert row is not None and row.values == model.sheet[i], record_id
            else:
                assert row is None, f"{record_id}: row deleted, but back on row {row.number}"
            continue
        if i not in model.on_sheet:
            # (d) The row was deleted: the record is archived, not destroyed, and keeps its values.
            assert doc.get("archived_at"), f"{record_id}: row deleted but record not archived"
            assert stored == model.store[i], record_id
            assert row is None, f"{record_id}: row deleted, but back on row {row.number}"
            expected_archived.append(record_id)
            continue
        assert not doc.get("archived_at"), f"{record_id} archived, but its row is on the sheet"
        assert row is not None, f"{record_id} is not on the sheet"
        assert row.name == model.names[i] and doc["name"] == model.names[i]
        if i in done.sheet_new or i in done.store_new:
            # (c) New on one side: now on both, with the values it was made with.
            side = model.sheet[i] if i in done.sheet_new else model.store[i]
            assert (row.values, stored) == (side, side), record_id
            agreed[i] = dict(side)
            continue
        agreed[i] = {}
        for f in FIELDS:
            s, t, b = model.sheet[i][f], model.store[i][f], model.base[i][f]
            where = f"{record_id} {HEADERS[f]}: base {b!r}, sheet edit {s!r}, store edit {t!r}"
            if s == t or t == b:  # (a) changed on the sheet only (or alike on both sides)
                assert (row.values[f], stored[f]) == (s, s), where
                agreed[i][f] = s
            elif s == b:  # (a) changed in the store only
                assert (row.values[f], stored[f]) == (t, t), where
                agreed[i][f] = t
            else:  # (b) changed on both sides to different values: a conflict
                expected_conflicts.add((SHEET, row.number, record_id, HEADERS[f], s, t, resolution))
                if resolution == "none":  # nothing lost: each side keeps its own edit
                    assert (row.values[f], stored[f]) == (s, t), where
                else:
                    winner = s if resolution == "sheet" else t
                    assert (row.values[f], stored[f]) == (winner, winner), where
                    agreed[i][f] = winner
    assert set(map(conflict_key, report.conflicts)) == expected_conflicts
    assert len(report.conflicts) == len(expected_conflicts), report.conflicts
    assert report.needs_attention == (resolution == "none" and bool(expected_conflicts))

    contacts = contacts_summary(report)
    assert sorted(contacts.store_archived) == sorted(expected_archived)
    assert sorted(contacts.store_added) == sorted(model.id(i) for i in done.sheet_new)
    assert contacts.ids_written == len(done.sheet_new)
    assert sorted(contacts.sheet_added) == sorted(model.id(i) for i in done.store_new)

    # Nothing else is on either side.
    assert set(by_id) == {model.id(i) for i in model.on_sheet}
    assert {d["id"] for d in fresh.all("contacts")} == {model.id(i) for i in agreed}
    check_formula_guard(rows)

    event(f"conflicts: {min(len(expected_conflicts), 3)}{'+' if len(expected_conflicts) > 3 else ''}")
    event(f"rows archived: {len(expected_archived)}")

    # The model after the sync: the base is what both sides agree on; an open conflict keeps its old base.
    for i, values in agreed.items():
        for f, value in values.items():
            model.base[i][f] = model.sheet[i][f] = model.store[i][f] = value
    model.archived |= {i for i in done.deleted if i not in model.archived}


def open_conflicts(book: Path, model: Model) -> set[tuple[Any, ...]]:
    """The conflicts a sync must still report: fields the two sides disagree on."""
    rows = {r.id: r for r in read_sheet(book)}
    found = set()
    for i, record_id in enumerate(model.ids):
        if i in model.archived or i not in model.on_sheet:
            continue
        for f in FIELDS:
            if model.sheet[i][f] != model.store[i][f]:
                row = rows[record_id].number
                found.add((SHEET, row, record_id, HEADERS[f], model.sheet[i][f], model.store[i][f], "none"))
    return found


def check_second_sync(book: Path, store_path: Path, model: Model, on_conflict: str) -> None:
    """(e) A second sync changes nothing and leaves the file alone."""
    before, mtime = book.read_bytes(), book.stat().st_mtime_ns
    again = sync_book(Store(store_path, actor="test"), ExcelBook(book), on_conflict=on_conflict)
    assert again.changes == 0 and not again.book_written, again.as_json()
    assert book.read_bytes() == before and book.stat().st_mtime_ns == mtime

    # ... even when it has to read every row: the workbook saved again, unchanged, by
    # another program. Open conflicts are still reported; nothing else happens.
    snapshot = {d["id"]: d for d in Store(store_path).all("contacts", archived=True)}
    wb = load_workbook(book)
    wb.save(book)
    before, mtime = book.read_bytes(), book.stat().st_mtime_ns
    third = sync_book(Store(store_path, actor="test"), ExcelBook(book), on_conflict=on_conflict)
    assert third.changes == 0 and not third.book_written and not third.invalid, third.as_json()
    assert book.read_bytes() == before and book.stat().st_mtime_ns == mtime
    if not third.skipped_unchanged:
        assert set(map(conflict_key, third.conflicts)) == open_conflicts(book, model)
    assert {d["id"]: d for d in Store(store_path).all("contacts", archived=True)} == snapshot


def run_scenario(directory: Path, template: Path, scenario: Scenario, on_conflict: str) -> None:
    book, store_path, model = set_up(directory, template, scenario)
    for ops in scenario.rounds:
        done = apply_edits(book, store_path, ops, model)
        # A dry run tells what the sync will do, and changes neither side.
        book_bytes, store_bytes = book.read_bytes(), store_path.read_bytes()
        dry = sync_book(
            Store(store_path, actor="test"), ExcelBook(book), on_conflict=on_conflict, dry_run=True
        )
        assert (book.read_bytes(), store_path.read_bytes()) == (book_bytes, store_bytes)
        report = sync_book(Store(store_path, actor="test"), ExcelBook(book), on_conflict=on_conflict)
        assert [s.as_json() for s in dry.sheets] == [s.as_json() for s in report.sheets]
        check_sync(book, store_path, model, done, report, on_conflict)
        check_second_sync(book, store_path, model, on_conflict)


# -- the tests -------------------------------------------------------------------


@FAST
@given(scenario=scenarios())
def test_sync_merges_edits_from_both_sides(
    scenario: Scenario, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """on_conflict="fail": one-sided edits cross over; conflicts are reported and change neither side."""
    run_scenario(tmp_path_factory.mktemp("ex"), template, scenario, "fail")


@settings(FAST, max_examples=15)
@given(scenario=scenarios())
@pytest.mark.parametrize("winner", ["sheet", "store"])
def test_sync_conflict_winner_holds_on_both_sides(
    winner: str, scenario: Scenario, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """on_conflict="sheet"/"store": the winner's value ends up on both sides."""
    run_scenario(tmp_path_factory.mktemp("ex"), template, scenario, winner)


@settings(FAST, max_examples=15)
@given(scenario=scenarios(rounds=3), on_conflict=st.sampled_from(["fail", "fail", "sheet", "store"]))
def test_sync_rounds_start_from_where_the_last_sync_left(
    scenario: Scenario, on_conflict: str, template: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Edit, sync, edit again, sync again: each sync merges against the base the last one saved."""
    run_scenario(tmp_path_factory.mktemp("ex"), template, scenario, on_conflict)


@settings(FAST, max_examples=15)
@given(
    n=st.integers(min_value=1, max_value=4),
    sheet_edits=st.lists(texts, min_size=4, max_size=4),
    store_edits=st.lists(texts, min_size=4, max_size=4),
    on_conflict=st.sampled_from(["fail", "sheet", "store"]),
)
def test_every_field_edited_on_both_sides_conflicts(
    n: int,
    sheet_edits: list[str],
    store_edits: list[str],
    on_conflict: str,
    template: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    """Many conflicts at once, each reported once with its row, ID and field."""
    ops: list[Op] = []
    for i in range(n):
        for f in FIELDS:
            ops.append(("sheet_set", i, f, f"s{sheet_edits[i]}"))
            ops.append(("store_set", i, f, f"t{store_edits[i]}"))
    scenario = Scenario([{f: "gốc" for f in FIELDS} for _ in range(max(n, 3))], [ops])
    run_scenario(tmp_path_factory.mktemp("ex"), template, scenario, on_conflict)
