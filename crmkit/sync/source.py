"""The one small interface every workbook adapter implements.

The sync engine sees only this: it never knows whether rows came from an
Excel file or a Google spreadsheet.
"""

from __future__ import annotations

from typing import Any, Protocol

from crmkit.errors import CrmkitError
from crmkit.sync.model import SheetChanges, SheetTable, SyncReport

__all__ = ["BookChangedError", "SheetBook"]


class BookChangedError(CrmkitError):
    """The workbook changed between reading and writing; nothing was written to it."""

    #: What the interrupted sync had done to the store (set by the engine).
    report: SyncReport | None = None


class SheetBook(Protocol):
    """A workbook of sheets that the sync engine reads and writes."""

    @property
    def identity(self) -> str:
        """A stable name for this workbook, under which its sync state is kept."""
        ...

    @property
    def display_name(self) -> str:
        """How reports name the workbook."""
        ...

    def fingerprint(self) -> str | None:
        """Changes whenever the content may have changed (None when it cannot tell cheaply)."""
        ...

    def check_writable(self) -> None:
        """Raise a CrmkitError when the workbook must not be written now (open in Excel)."""
        ...

    def read(self) -> dict[str, SheetTable]:
        """Every sheet, by title: headers and non-empty data rows, values unformatted."""
        ...

    def read_back(self, value: Any) -> Any:
        """What :meth:`read` will hand back for a cell this adapter wrote ``value`` into.

        The engine signs rows it writes with these values, so that an untouched
        row is recognised on the next read without parsing it.
        """
        ...

    def write(self, changes: list[SheetChanges]) -> None:
        """Apply all changes at once, or none; raise BookChangedError if rows moved meanwhile."""
        ...
