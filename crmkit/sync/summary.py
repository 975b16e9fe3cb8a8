"""What a sync did, as lines for a person (the CLI prints them)."""

from __future__ import annotations

from collections.abc import Iterable

from crmkit.plural import counted
from crmkit.sync.model import SyncReport

__all__ = ["counted", "summarize"]


def summarize(report: SyncReport) -> Iterable[str]:
    """Readable lines for a person: per sheet, what changed on each side."""
    if report.skipped_unchanged:
        yield f"{report.book}: nothing changed since the last sync (0 changes)"
        return

    def listed(pairs: Iterable[tuple[int, str]]) -> str:
        return ", ".join(text for n, text in pairs if n)

    for s in report.sheets:
        store_side = listed(
            [
                (len(s.store_added), f"{len(s.store_added)} added"),
                (len(s.store_updated), f"{len(s.store_updated)} updated"),
                (len(s.store_archived), f"{len(s.store_archived)} archived"),
            ]
        )
        sheet_side = listed(
            [
                (len(s.sheet_added), counted(len(s.sheet_added), "row") + " added"),
                (len(s.sheet_updated), counted(len(s.sheet_updated), "row") + " updated"),
                (s.ids_written, counted(s.ids_written, "ID") + " written"),
            ]
        )
        problems = listed(
            [
                (len(s.conflicts), counted(len(s.conflicts), "conflict")),
                (len(s.invalid), counted(len(s.invalid), "invalid cell")),
            ]
        )
        parts = [
            f"crmkit: {store_side}" if store_side else "",
            f"sheet: {sheet_side}" if sheet_side else "",
            problems,
        ]
        yield f"{s.sheet}: " + ("; ".join(p for p in parts if p) or "no changes")
        for note in s.notes:
            yield f"  note: {note}"
        # Problems are not repeated here: the CLI prints each once, on stderr, even under --quiet.
    verb = "would be made (dry run, nothing written)" if report.dry_run else "made"
    written = ", workbook written" if report.book_written else ""
    yield f"{counted(report.changes, 'change')} {verb}{written}"
