"""The sync engine: a three-way merge of sheets and the store, field by field.

For each sheet it compares three versions of every field: the sheet's, the
store's, and the *base*, the value both sides agreed on at the end of the last
sync (kept in the store, per workbook and sheet). A field changed on one side
only is copied to the other; a field changed on both sides to different values
is a conflict, resolved by ``on_conflict`` (``fail`` changes neither side).

A run is safe to kill at any point:

1. one store transaction applies the sheet's changes to the store and records
   the ids it gave to new rows in a journal (``pending``);
2. the workbook is written, all at once (adapters replace it atomically);
3. a second store transaction saves the new base and clears the journal.

Killed before 2, the next run still sees the old base, so every store-side
change is still a change to copy, and the journal ties the new rows to the
records already made for them. Killed before 3, both sides already agree.
Nothing is lost and nothing is made twice.

The engine knows nothing of Excel or Google: it talks to a
:class:`~crmkit.sync.source.SheetBook`. This module runs a sync: the lock, the
journal, saving the base. The rest lives beside it: one sheet's sync in
:mod:`~crmkit.sync.sheets` (its reading in ``reader``, what a field keeps in
``merge``, the base's format in ``base``), an invoice's lines in ``lines``, which
tabs crmkit may sync in ``tabs``, and the text a person reads in ``summary``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from datetime import date
from typing import Any

from filelock import FileLock, Timeout

from crmkit.config import resolve_sheet_names
from crmkit.errors import CrmkitError
from crmkit.perf import paused_gc
from crmkit.records.schema import ACCOUNT, CASE, CONTACT, DEAL, INVOICE, LEAD, RecordType
from crmkit.store import Store
from crmkit.sync.model import SheetSummary, SyncReport
from crmkit.sync.reader import SheetRefused
from crmkit.sync.sheets import SheetSync
from crmkit.sync.source import BookChangedError, SheetBook
from crmkit.sync.stamp import SyncStamps
from crmkit.sync.summary import counted, summarize
from crmkit.sync.tabs import blank_tab, find_tab, tab_refusal
from crmkit.workbooks import LINES_SHEET, sheet_columns

# summarize and counted moved to crmkit.sync.summary; callers still import them from here
__all__ = ["ON_CONFLICT", "SYNCED_TYPES", "counted", "summarize", "sync_book"]

ON_CONFLICT = ("fail", "sheet", "store")
#: The record types a workbook may hold, in the order they are synced (links first).
SYNCED_TYPES: tuple[RecordType, ...] = (ACCOUNT, CONTACT, LEAD, DEAL, INVOICE, CASE)
#: Sheets created when missing; Accounts and Cases are synced only where present.
ALWAYS = frozenset({LEAD.table, CONTACT.table, DEAL.table, INVOICE.table})
STATE = "sync"
#: Called as rows are done: (rows just done, rows in all synced sheets).
Progress = Callable[[int, int], None]


class _DryRun(Exception):
    """Raised inside the store transaction to throw a dry run's changes away."""


def sync_book(
    store: Store,
    book: SheetBook,
    *,
    on_conflict: str = "fail",
    dry_run: bool = False,
    progress: Progress | None = None,
    today: date | None = None,
    sheet_names: Mapping[str, str] | None = None,
) -> SyncReport:
    """Make the workbook and the store agree; see the module docstring for the rules.

    ``sheet_names`` maps crmkit's sheet titles (``"Deals"``) to the workbook's own tab
    names (``"CRM Deals"``), as ``[sheet_names]`` in crmkit.toml does; the sync state stays
    under crmkit's titles, so renaming a tab this way loses nothing.
    """
    if on_conflict not in ON_CONFLICT:
        raise CrmkitError(f"on_conflict must be one of {', '.join(ON_CONFLICT)} (got {on_conflict!r})")
    tabs = resolve_sheet_names(sheet_names)
    today = today or date.today()
    earlier: list[SyncReport] = []
    with _sync_lock(store):
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                report = _sync(
                    store,
                    book,
                    on_conflict=on_conflict,
                    dry_run=dry_run,
                    progress=progress,
                    today=today,
                    tabs=tabs,
                )
            except BookChangedError as exc:
                # People edit a shared sheet while it syncs. The store already holds this
                # attempt's changes and the journal its new rows, so reading again and
                # planning again is safe; it only must not go on for ever.
                if attempt == _ATTEMPTS or exc.report is None:
                    raise
                earlier.append(exc.report)
                continue
            for before in earlier:
                _carry_store_side(before, report)
            return report
    raise AssertionError("unreachable")


#: Reads of a workbook that keeps changing while it is synced, before giving up.
_ATTEMPTS = 3


def _carry_store_side(before: SyncReport, report: SyncReport) -> None:
    """Count in ``report`` what an attempt cut short by a changed workbook did to the store."""
    for old in before.sheets:
        new = next((s for s in report.sheets if s.sheet == old.sheet), None)
        if new is None:
            continue
        for mine, theirs in (
            (new.store_added, old.store_added),
            (new.store_updated, old.store_updated),
            (new.store_archived, old.store_archived),
        ):
            mine[:0] = [i for i in theirs if i not in mine]
        new.notes.append("the workbook changed while it was synced; read it again and synced the rest")


@contextmanager
def _sync_lock(store: Store) -> Iterator[None]:
    """One sync at a time per store: a cron job and a person may start one together.

    A PostgreSQL store is shared by machines, so its lock is the database's (an advisory lock).
    """
    exclusive = getattr(store.backend, "exclusive", None)
    if exclusive is not None:
        busy = f"another sync of {store.location} is still running (on this machine or another)"
        with exclusive("sync", timeout=store.lock_timeout * 4, busy=busy):
            yield
        return
    lock = FileLock(str(store.path) + ".sync.lock", timeout=store.lock_timeout * 4)
    try:
        with lock:
            yield
    except Timeout:
        raise CrmkitError(f"another sync of {store.path} is still running ({lock.lock_file})") from None


def _sync(
    store: Store,
    book: SheetBook,
    *,
    on_conflict: str,
    dry_run: bool,
    progress: Progress | None,
    today: date,
    tabs: Mapping[str, str],
) -> SyncReport:
    report = SyncReport(book=book.display_name, dry_run=dry_run)
    stamps = SyncStamps(store.path)
    fingerprint = _fingerprint(book, tabs)
    if stamps.unchanged(book.identity, fingerprint, today.isoformat()):
        report.skipped_unchanged = True
        return report
    state = store.state(STATE, book.identity) or {}
    if (
        fingerprint is not None
        and state.get("fingerprint") == fingerprint
        and state.get("store_revision") == store.revision
        and not any(state.get("pending", {}).values())
        and not state.get("needs_attention")  # problems are reported again until fixed
        and state.get("day") == today.isoformat()  # invoices turn overdue with the calendar
    ):
        report.skipped_unchanged = True
        return report
    if not dry_run:
        book.check_writable()
    tables = book.read()
    actor = f"sync:{book.display_name}"
    total = sum(len(t.rows) for rt in SYNCED_TYPES if (t := find_tab(tables, tabs[rt.sheet])) is not None)
    step = (lambda n: progress(n, total)) if progress is not None else None
    plans: list[SheetSync] = []
    keep: dict[str, Any] = {}  # the base of sheets left alone this time
    kept_pending: dict[str, Any] = {}  # and their journal, still owed
    lines_tab = find_tab(tables, tabs[LINES_SHEET.title])

    def leave_alone(rt: RecordType, title: str, problem: str) -> None:
        summary = SheetSummary(title)
        summary.problems.append(problem)
        report.sheets.append(summary)
        keep[rt.sheet] = state.get("sheets", {}).get(rt.sheet, {})
        if pending := state.get("pending", {}).get(rt.sheet):
            kept_pending[rt.sheet] = pending

    try:
        with store.transaction(), paused_gc():
            for rt in SYNCED_TYPES:
                table = find_tab(tables, tabs[rt.sheet])
                if table is None and rt.table not in ALWAYS:
                    continue
                title = table.title if table is not None else tabs[rt.sheet]
                refusal = None
                if table is not None:
                    refusal = tab_refusal(rt.sheet, table, sheet_columns(rt), rt.field_for_header)
                if refusal is None and rt is INVOICE and lines_tab is not None:
                    refusal = tab_refusal(
                        LINES_SHEET.title, lines_tab, LINES_SHEET.columns, LINES_SHEET.field_for_header
                    )
                    if refusal is not None:
                        refusal += f" ({rt.sheet} are synced only with their lines)"
                if refusal is not None:
                    leave_alone(rt, title, refusal)
                    continue
                plan = SheetSync(
                    store,
                    rt,
                    None if table is None or blank_tab(table) else table,
                    title=title,
                    base=state.get("sheets", {}).get(rt.sheet, {}),
                    pending=state.get("pending", {}).get(rt.sheet, {}),
                    on_conflict=on_conflict,
                    actor=actor,
                    today=today,
                    progress=step,
                    read_back=book.read_back,
                    lines_table=None if lines_tab is None or blank_tab(lines_tab) else lines_tab,
                    lines_title=lines_tab.title if lines_tab is not None else tabs[LINES_SHEET.title],
                    lines_cache=state.get("lines", {}),
                )
                try:
                    plan.run()
                except SheetRefused as refused:
                    leave_alone(rt, plan.title, str(refused))
                    continue
                plans.append(plan)
                report.sheets.append(plan.summary)
            if dry_run:
                raise _DryRun
            writes = [p.changes for p in plans if p.changes]
            writes += [p.lines.changes for p in plans if p.lines is not None and p.lines.changes]
            if writes:
                journal = {**kept_pending, **{p.rt.sheet: p.new_ids for p in plans if p.new_ids}}
                store.set_state(STATE, book.identity, {**state, "pending": journal})
            else:  # nothing goes to the workbook: the new base can be saved right away
                _save_base(store, book, fingerprint, plans, report, keep, kept_pending, today, state)
                note = None if report.needs_attention else fingerprint
                store.after_commit(lambda: stamps.record(book.identity, note, today.isoformat()))
    except _DryRun:
        return report
    if writes:
        try:
            book.write(writes)
        except BookChangedError as exc:
            exc.report = report
            raise
        report.book_written = True
        written = _fingerprint(book, tabs)
        with store.transaction():
            _save_base(store, book, written, plans, report, keep, kept_pending, today, state)
            note = None if report.needs_attention else written
            store.after_commit(lambda: stamps.record(book.identity, note, today.isoformat()))
    return report


def _fingerprint(book: SheetBook, tabs: Mapping[str, str]) -> str | None:
    """The workbook's fingerprint, and which tabs are synced: a changed [sheet_names] is a change."""
    fingerprint = book.fingerprint()
    mapped = sorted((sheet, tab) for sheet, tab in tabs.items() if tab != sheet)
    if fingerprint is None or not mapped:
        return fingerprint
    return f"{fingerprint}|{mapped!r}"


def _save_base(
    store: Store,
    book: SheetBook,
    fingerprint: str | None,
    plans: list[SheetSync],
    report: SyncReport,
    keep: dict[str, Any],
    kept_pending: dict[str, Any],
    today: date,
    previous: Mapping[str, Any],
) -> None:
    store.set_state(
        STATE,
        book.identity,
        {
            "fingerprint": fingerprint,
            "store_revision": store.revision,
            "sheets": {
                **keep,
                **{p.rt.sheet: {"keys": p.keys, "rows": p.new_base, "tab": p.title} for p in plans},
            },
            "lines": next(
                (p.lines.new_cache for p in plans if p.lines is not None), previous.get("lines", {})
            ),
            "pending": kept_pending,
            "needs_attention": report.needs_attention,
            "day": today.isoformat(),
        },
    )
