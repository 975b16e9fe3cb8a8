"""The embedded store: a TinyDB JSON file, safe for several processes."""

from crmkit.store.storage import AtomicJSONStorage
from crmkit.store.store import Store

__all__ = ["AtomicJSONStorage", "Store"]
