"""What the store indexes: the keys each record is found by, per table.

Both backends keep these indexes (the TinyDB files persist them beside the
documents; PostgreSQL holds them in an indexed column), computed by the same
functions, so a look-up means the same thing everywhere.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from crmkit.records.matching import company_key, domain_key, email_key, phone_key

__all__ = ["INDEXES", "LINKS", "UNIQUE_KEY", "index_keys"]

Doc = dict[str, Any]


def _one(value: Any, key: Callable[[str], str]) -> list[str]:
    if not value:
        return []
    k = key(str(value))
    return [k] if k else []


def phone_index_key(phone: str) -> str:
    digits = phone_key(phone)
    return digits if len(digits) >= 5 else ""


#: The indexes the store keeps, per table: name -> the keys of one record.
INDEXES: dict[str, dict[str, Callable[[Doc], list[str]]]] = {
    "contacts": {
        "email": lambda d: _one(d.get("email"), email_key),
        "phone": lambda d: _one(d.get("phone"), phone_index_key),
    },
    "leads": {
        "email": lambda d: _one(d.get("email"), email_key),
        "phone": lambda d: _one(d.get("phone"), phone_index_key),
    },
    "accounts": {
        "name": lambda d: _one(d.get("name"), company_key),
        "domain": lambda d: _one(d.get("domain"), domain_key),
    },
    "invoices": {"number": lambda d: _one(d.get("number"), str.casefold)},
    "quotes": {"number": lambda d: _one(d.get("number"), str.casefold)},
    "activities": {"message_id": lambda d: _one(d.get("message_id"), str.strip)},
}

#: Links by which a record's related records are found (Store.linked), indexed as ``link:<field>``.
LINKS: dict[str, tuple[str, ...]] = {
    "contacts": ("account",),
    "deals": ("contact", "account"),
    "invoices": ("contact", "account"),
    "quotes": ("contact", "account"),
    "cases": ("contact", "account"),
    "activities": ("contact", "lead", "account", "deal", "case"),
    "leads": ("converted_contact",),
}


def _link_keys(field: str) -> Callable[[Doc], list[str]]:
    def keys_of(doc: Doc) -> list[str]:
        value = doc.get(field)
        return [value] if isinstance(value, str) and value else []

    return keys_of


for _table_name, _fields in LINKS.items():
    for _field in _fields:
        INDEXES.setdefault(_table_name, {})[f"link:{_field}"] = _link_keys(_field)

#: How a unique field's value is turned into its index key.
UNIQUE_KEY: dict[str, Callable[[str], str]] = {
    "email": email_key,
    "phone": phone_index_key,
    "number": str.casefold,
}


def index_keys(table: str, doc: Doc) -> dict[str, list[str]]:
    """Every index key of one document: index name -> keys (names without keys left out)."""
    found: dict[str, list[str]] = {}
    for name, keys_of in INDEXES.get(table, {}).items():
        keys = keys_of(doc)
        if keys:
            found[name] = keys
    return found
