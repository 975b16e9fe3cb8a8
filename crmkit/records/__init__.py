"""Record types and their one schema: fields, validation, rules.

The schema loads on first use, so that a module needing only :mod:`crmkit.records.money`
(the configuration does) does not pay for it.
"""

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from crmkit.records.schema import RECORD_TYPES, RecordType, parse_id, record_type

__all__ = ["RECORD_TYPES", "RecordType", "parse_id", "record_type"]


def __getattr__(name: str) -> Any:
    if name in __all__:
        from crmkit.records import schema

        return getattr(schema, name)
    raise AttributeError(f"module 'crmkit.records' has no attribute {name!r}")
