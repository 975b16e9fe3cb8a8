"""crmkit: a CRM on top of the spreadsheets and the inbox a small team already uses.

The library under the ``crmkit`` command. Open a store and work with records::

    from crmkit import Store
    store = Store("crm.json")
    contact = store.add("contacts", {"name": "Ana", "email": "ana@example.com"})
"""

from typing import TYPE_CHECKING, Any

from crmkit.errors import CrmkitError

if TYPE_CHECKING:
    from crmkit.store import Store

__all__ = ["CrmkitError", "Store", "__version__"]
__version__ = "0.1.0"


def __getattr__(name: str) -> Any:
    # `crmkit --version` and the CLI's start-up need no store: it loads on first use.
    if name == "Store":
        from crmkit.store import Store

        return Store
    raise AttributeError(f"module 'crmkit' has no attribute {name!r}")
