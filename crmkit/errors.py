"""The exceptions crmkit raises on purpose.

Callers need only ``except CrmkitError``; the subclasses let them tell the
cases apart. Every message names what a person has to look at: the field,
the value, the record, the file.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "ConfigError",
    "CrmkitError",
    "DuplicateError",
    "FieldError",
    "NotFoundError",
    "StoreError",
    "StoreLockedError",
    "ValidationError",
]


class CrmkitError(Exception):
    """Base class of every error crmkit raises on purpose."""


class ConfigError(CrmkitError):
    """crmkit.toml or an environment setting is missing or wrong."""


class StoreError(CrmkitError):
    """The store file cannot be read or written."""


class StoreLockedError(StoreError):
    """Another process held the store's lock for longer than the timeout."""


class NotFoundError(CrmkitError):
    """No record has the id, email or name asked for."""


class DuplicateError(CrmkitError):
    """A new record would duplicate an existing one (same email or phone)."""

    def __init__(self, message: str, existing_id: str, field: str | None = None) -> None:
        super().__init__(message)
        self.existing_id = existing_id
        self.field = field


class FieldError(CrmkitError):
    """One value that does not fit its field."""

    def __init__(self, field: str, value: Any, problem: str) -> None:
        self.field = field
        self.value = value
        self.problem = problem
        super().__init__(f"{field}: {problem} (got {value!r})")


class ValidationError(CrmkitError):
    """One or more fields of a record are invalid; ``errors`` lists them all."""

    def __init__(self, record_type: str, errors: list[FieldError]) -> None:
        self.record_type = record_type
        self.errors = errors
        details = "; ".join(str(e) for e in errors)
        super().__init__(f"invalid {record_type}: {details}")
