"""Finding crmkit.toml (here or in the nearest folder above), reading it, and where the store is."""

from __future__ import annotations

import codecs
import os
from collections.abc import Mapping
from pathlib import Path

from crmkit.config.settings import Config, parse_config
from crmkit.errors import ConfigError
from crmkit.locations import is_store_url, local_store_path

__all__ = [
    "CONFIG_FILE",
    "DEFAULT_STORE",
    "discover_config",
    "find_config",
    "load_config",
    "resolve_store",
    "resolve_store_path",
    "store_named_by",
]

CONFIG_FILE = "crmkit.toml"
DEFAULT_STORE = "crm.json"


def find_config(explicit: str | os.PathLike[str] | None, env: Mapping[str, str]) -> Path | None:
    """``--config``, then ``CRMKIT_CONFIG``, then crmkit.toml in the current folder or the nearest above."""
    if explicit:
        return _config_file(Path(explicit), "config file {path} not found")
    if env.get("CRMKIT_CONFIG"):
        return _config_file(Path(env["CRMKIT_CONFIG"]), "CRMKIT_CONFIG names {path}, which does not exist")
    return discover_config()


def discover_config(start: Path | None = None) -> Path | None:
    """crmkit.toml in ``start`` (the current folder) or the nearest folder above it, as git finds .git.

    Found in the current folder it is ``crmkit.toml``; higher up, its absolute path, so
    messages name the file wherever the command runs. A crmkit.toml that is a folder or
    a broken link is an error, not skipped: a project that is there must not be passed over.
    """
    try:
        here = Path.cwd()
    except FileNotFoundError:
        raise ConfigError("the current folder no longer exists; cd to a folder that does") from None
    start = here if start is None else start.absolute()
    for folder in (start, *start.parents):
        candidate = folder / CONFIG_FILE
        if candidate.exists() or candidate.is_symlink():
            return _config_file(Path(CONFIG_FILE) if folder == here else candidate, "{path} not found")
    return None


def _config_file(path: Path, missing: str) -> Path:
    if path.is_dir():
        raise ConfigError(f"{path} is a folder, not a file: remove or rename it, or pass --config")
    if path.is_symlink() and not path.exists():
        raise ConfigError(f"{path} is a link to {os.readlink(path)}, which does not exist")
    if not path.is_file():
        raise ConfigError(missing.format(path=path))
    return path


def load_config(
    explicit: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
) -> Config:
    """The configuration in force: from a file if one is found, else the defaults."""
    path = find_config(explicit, os.environ if env is None else env)
    if path is None:
        return Config()
    import tomllib  # only when there is a crmkit.toml to read

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    bom = len(codecs.BOM_UTF8) if raw.startswith(codecs.BOM_UTF8) else 0  # Notepad's UTF-8
    try:
        text = raw[bom:].decode("utf-8")
    except UnicodeDecodeError as exc:
        offset = bom + exc.start
        line = raw.count(b"\n", 0, offset) + 1
        raise ConfigError(
            f"{path}: not UTF-8 text (byte 0x{raw[offset]:02x} at offset {offset}, line {line}); "
            "save it as UTF-8"
        ) from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return parse_config(path, data)


def resolve_store(
    explicit: str | os.PathLike[str] | None, config: Config, env: Mapping[str, str] | None = None
) -> Path | str:
    """``--store``, then ``CRMKIT_STORE``, then crmkit.toml's ``store``, then crm.json beside
    crmkit.toml (./crm.json when there is none).

    A TinyDB store's file as a Path; a PostgreSQL store's URL as text.
    """
    env = os.environ if env is None else env
    given = explicit or env.get("CRMKIT_STORE") or config.store
    if given is None:  # beside crmkit.toml, wherever the command runs
        return config.path.parent / DEFAULT_STORE if config.path is not None else Path(DEFAULT_STORE)
    if is_store_url(given):
        return str(given)
    return Path(given)


def store_named_by(
    explicit: str | os.PathLike[str] | None, config: Config, env: Mapping[str, str] | None = None
) -> str | None:
    """What chose the store: ``--store``, ``CRMKIT_STORE``, the crmkit.toml in force, or None (./crm.json).

    Only a store named by ``--store`` or ``CRMKIT_STORE`` is created by a command that
    writes; any other must exist (``crmkit init``), so a command run in the wrong folder
    does not quietly start a second CRM.
    """
    env = os.environ if env is None else env
    if explicit:
        return "--store"
    if env.get("CRMKIT_STORE"):
        return "CRMKIT_STORE"
    return str(config.path) if config.path is not None else None


def resolve_store_path(
    explicit: str | os.PathLike[str] | None, config: Config, env: Mapping[str, str] | None = None
) -> Path:
    """The store's file; for a PostgreSQL store, the local name its side files go beside.

    That name is in crmkit.toml's folder, or the current one without a crmkit.toml.
    """
    location = resolve_store(explicit, config, env)
    if isinstance(location, Path):
        return location
    return local_store_path(location, config.path.parent if config.path is not None else Path())
