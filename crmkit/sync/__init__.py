"""Two-way sync between workbooks (Excel, Google Sheets) and the store.

:func:`sync_book` is the engine; adapters implement :class:`SheetBook`.
"""

from crmkit.sync.engine import ON_CONFLICT, sync_book
from crmkit.sync.model import Conflict, InvalidCell, SheetSummary, SyncReport
from crmkit.sync.source import BookChangedError, SheetBook

__all__ = [
    "ON_CONFLICT",
    "BookChangedError",
    "Conflict",
    "InvalidCell",
    "SheetBook",
    "SheetSummary",
    "SyncReport",
    "open_book",
    "sync_book",
]


def open_book(target: str) -> SheetBook:
    """The workbook a ``crmkit sync`` argument names: a path to an .xlsx file, for now."""
    from crmkit.sync.excel import ExcelBook

    return ExcelBook(target)
