"""crmkit: a CRM on top of the spreadsheets and the inbox a small team already uses.

The library under the ``crmkit`` command. Open a store and work with records::

    from crmkit import Store
    store = Store("crm.json")
    contact = store.add("contacts", {"name": "Ana", "email": "ana@example.com"})
"""

from crmkit.errors import CrmkitError
from crmkit.store import Store

__all__ = ["CrmkitError", "Store", "__version__"]
__version__ = "0.1.0"
