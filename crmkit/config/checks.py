"""Checking crmkit.toml's values: each error names the file and the key."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from crmkit.errors import ConfigError

__all__ = ["check_keys", "choice", "close_matches", "expect", "seconds", "texts"]


def check_keys(path: Path, table: str, data: Mapping[str, Any], known: tuple[str, ...]) -> None:
    """Refuse a ``password`` key and any key not in ``known``, suggesting the closest one."""
    for key in data:
        if key == "password":
            where = f"[{table}] password" if table else "password"
            remedy = (
                f"set CRMKIT_{table.upper()}_PASSWORD or password_command"
                if table in ("imap", "smtp")
                else "set CRMKIT_IMAP_PASSWORD / CRMKIT_SMTP_PASSWORD, or password_command in [imap] / [smtp]"
            )
            raise ConfigError(f"{path}: {where}: passwords are never read from the config file; {remedy}")
        if key not in known:
            prefix = f"{table}." if table else ""
            hint = close_matches(key, known)
            suggestion = f" (did you mean {prefix}{hint[0]}?)" if hint else ""
            raise ConfigError(f"{path}: unknown key {prefix}{key}{suggestion}")


def expect(path: Path, key: str, value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    """``value`` if it is a ``kind`` (TOML's true is no number), else an error saying it must be ``what``."""
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ConfigError(f"{path}: {key} must be {what} (got {value!r})")
    return value


def seconds(path: Path, key: str, value: Any) -> float:
    number = expect(path, key, value, (int, float), "a number of seconds")
    if number <= 0:
        raise ConfigError(f"{path}: {key} must be a positive number of seconds")
    return float(number)


def texts(path: Path, key: str, value: Any) -> tuple[str, ...]:
    items = expect(path, key, value, list, "a list of text")
    for item in items:
        if not isinstance(item, str) or not item.strip():
            raise ConfigError(f"{path}: {key} must be a list of text (got {item!r} in it)")
    return tuple(item.strip() for item in items)


def choice(path: Path, key: str, value: Any, choices: tuple[str, ...]) -> str:
    if value not in choices:
        raise ConfigError(f"{path}: {key} must be one of {', '.join(choices)} (got {value!r})")
    return str(value)


def close_matches(word: str, choices: Sequence[str]) -> list[str]:
    import difflib  # only to suggest a fix for a mistyped key

    return difflib.get_close_matches(word, choices, n=1)
