"""Where a store is: a TinyDB file's path, or a PostgreSQL URL, which must never show its password.

Kept apart from the store package (whose import loads the schema) because the CLI reads
crmkit.toml, and so these, for every command.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

__all__ = ["STORE_URL_SCHEMES", "is_store_url", "local_store_path", "redact_url", "url_password"]

#: How a PostgreSQL store's location starts; anything else is a TinyDB store's file.
STORE_URL_SCHEMES = ("postgresql://", "postgres://")


def is_store_url(location: str | os.PathLike[str]) -> bool:
    """True for a PostgreSQL store's URL (``postgresql://user@host:port/dbname``)."""
    return isinstance(location, str) and location.lower().startswith(STORE_URL_SCHEMES)


def url_password(url: str) -> str | None:
    """The password written in a store URL (in its user part or as ``?password=``), or None."""
    parts = urlsplit(url)
    if parts.password is not None:
        return unquote(parts.password)
    for name, value in parse_qsl(parts.query, keep_blank_values=True):
        if name == "password":
            return value
    return None


def redact_url(url: str) -> str:
    """The URL without its password: what messages and logs may show."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':', 1)[0]}@{host}"
    # kept as written (still percent-encoded): the location must open the same store again
    query = "&".join(item for item in parts.query.split("&") if unquote(item.partition("=")[0]) != "password")
    # by hand: urlunsplit drops the empty host of postgresql:///dbname (a Unix socket)
    return f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")


def local_store_path(url: str, folder: Path) -> Path:
    """Where a PostgreSQL store's local side files are named from: ``FOLDER/DBNAME.postgresql``.

    The mail archive (``DBNAME-mail/``), campaign journals and sync shortcuts sit
    beside this name as they sit beside ``crm.json``; the file itself is never made.
    """
    dbname = unquote(urlsplit(url).path.lstrip("/")) or "postgres"
    return folder / (re.sub(r"[^\w.-]+", "-", dbname).strip(".") + ".postgresql")
