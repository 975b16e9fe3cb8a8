"""Passwords: never in crmkit.toml, but from the environment or a password command, and never shown."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping

from crmkit.config.mailservers import MailServer
from crmkit.config.settings import Config
from crmkit.errors import ConfigError

__all__ = ["Secret", "resolve_password", "scrub", "store_password"]


class Secret:
    """A password that does not show itself in logs, reprs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__


def scrub(text: str, *secrets: str | Secret | None) -> str:
    """``text`` with each secret masked where it stands whole, as a server might echo it back.

    Only whole values: masking every occurrence of a short password would mangle the
    message ("une***pected") and show where the password's letters are.
    """
    for secret in secrets:
        value = secret.reveal() if isinstance(secret, Secret) else secret
        if value:
            text = re.sub(rf"(?<![A-Za-z0-9]){re.escape(value)}(?![A-Za-z0-9])", "***", text)
    return text


def resolve_password(server: MailServer, env: Mapping[str, str] | None = None) -> Secret:
    """The server's password: its environment variable, else its password_command.

    The command runs through the shell (so ``pass show x | head -1`` works);
    its first line is the password. Neither the password nor the command's
    output ever appears in an error message.
    """
    env = os.environ if env is None else env
    if env.get(server.password_env):
        return Secret(env[server.password_env])
    if server.password_command:
        return _password_from_command(server.password_command, f"[{server.protocol}] password_command")
    raise ConfigError(
        f"no password for [{server.protocol}] {server.user or ''}@{server.host}: "
        f"set {server.password_env} or password_command in crmkit.toml"
    )


def store_password(config: Config, env: Mapping[str, str] | None = None) -> Secret | None:
    """A PostgreSQL store's password: ``CRMKIT_STORE_PASSWORD``, else ``store_password_command``.

    None leaves it to libpq (``PGPASSWORD``, ``~/.pgpass``) or to the URL.
    """
    env = os.environ if env is None else env
    if env.get("CRMKIT_STORE_PASSWORD"):
        return Secret(env["CRMKIT_STORE_PASSWORD"])
    if config.store_password_command:
        return _password_from_command(config.store_password_command, "store_password_command")
    return None


def _password_from_command(command: str, what: str) -> Secret:
    """Run a password command through the shell; its first line is the password (never shown)."""
    import subprocess

    try:
        done = subprocess.run(command, shell=True, capture_output=True, text=True, timeout=60, check=False)
    except subprocess.TimeoutExpired:
        raise ConfigError(f"{what} did not finish within 60 s") from None
    if done.returncode != 0:
        raise ConfigError(f"{what} failed (exit {done.returncode})")
    lines = done.stdout.splitlines()
    if not lines or not lines[0]:
        raise ConfigError(f"{what} printed no password")
    return Secret(lines[0])
