"""Record types and their one schema: fields, validation, rules."""

from crmkit.records.schema import RECORD_TYPES, RecordType, parse_id, record_type

__all__ = ["RECORD_TYPES", "RecordType", "parse_id", "record_type"]
