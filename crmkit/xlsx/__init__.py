"""Reading and writing .xlsx workbooks at the part level.

crmkit never loads a person's workbook into objects and saves it again: that
drops whatever the library does not know (pictures, macros, controls, printer
settings ...). Every write goes through :class:`~crmkit.xlsx.package.Package`:

* :func:`~crmkit.xlsx.graft.graft_sheet` adds a sheet built alone in a scratch workbook;
* :func:`~crmkit.xlsx.patch.patch_sheets` changes cells in crmkit's own worksheets;
* :class:`~crmkit.xlsx.styles.Styles` appends the cell formats they need;

and every part crmkit does not own is copied byte for byte.
"""

from crmkit.xlsx.graft import SheetEntry, graft_sheet, sheet_entries
from crmkit.xlsx.package import Package, WorkbookError
from crmkit.xlsx.patch import patch_sheets
from crmkit.xlsx.styles import Styles

__all__ = ["Package", "SheetEntry", "Styles", "WorkbookError", "graft_sheet", "patch_sheets", "sheet_entries"]
