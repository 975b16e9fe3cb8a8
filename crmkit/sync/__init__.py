"""Two-way sync between workbooks (Excel, Google Sheets) and the store.

:func:`sync_book` is the engine; adapters implement :class:`SheetBook`.
"""

import os

from crmkit.config import SheetsSettings
from crmkit.sync.engine import ON_CONFLICT, sync_book
from crmkit.sync.model import Conflict, InvalidCell, SheetSummary, SyncReport
from crmkit.sync.source import BookChangedError, SheetBook

__all__ = [
    "GSHEET_PREFIX",
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


#: How a ``crmkit sync`` argument names a Google spreadsheet.
GSHEET_PREFIX = "gsheet:"


def open_book(
    target: str,
    *,
    sheets: SheetsSettings | None = None,
    credentials: str | os.PathLike[str] | None = None,
    create: bool = False,
) -> SheetBook:
    """The workbook a ``crmkit sync`` argument names.

    ``gsheet:KEY`` (or a Google Sheets URL) is a Google spreadsheet, reached with
    ``sheets`` settings and ``credentials`` (a key file, overriding the settings');
    anything else is the path of an .xlsx file, which must exist unless ``create``
    is set (the first sync then makes it from crmkit's template).
    """
    if target.startswith(GSHEET_PREFIX) or target.startswith("https://docs.google.com/spreadsheets/"):
        from crmkit.sync.google import connect
        from crmkit.sync.gsheet import GoogleSheetBook

        key = target.removeprefix(GSHEET_PREFIX)
        client, creds = connect(sheets or SheetsSettings(), credentials=credentials)
        return GoogleSheetBook(key, client, creds)
    from crmkit.sync.excel import ExcelBook

    return ExcelBook(target, create=create)
