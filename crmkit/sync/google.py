"""Connecting to the Google Sheets API: credentials, the endpoint, and patient retries.

gspread does the HTTP; this module decides *how*:

* **Credentials** the way gspread users expect: a service-account key file
  (``--credentials``, ``[sheets] credentials`` in crmkit.toml, or
  ``GOOGLE_APPLICATION_CREDENTIALS``); a person's own Google account through
  an OAuth client file, signed in once in a browser; or gspread's own stored
  sign-in (``~/.config/gspread/authorized_user.json``). Every problem is one
  line naming what to fix.
* **Endpoint**: Google's by default; any other (a local stand-in of the API)
  is reached by rewriting the Sheets URLs gspread builds, since gspread fixes
  them at import.
* **Retries**: answers 408, 429 and 5xx and dropped connections are retried
  with capped exponential back-off, until an overall deadline; every request
  has a timeout. gspread's own BackOffHTTPClient retries a 429 forever and
  gspread sets no timeout, which would hang a cron job.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from google.auth.credentials import AnonymousCredentials, Credentials
from google.auth.exceptions import GoogleAuthError
from google.auth.transport.requests import AuthorizedSession
from gspread.exceptions import APIError
from gspread.http_client import HTTPClient
from requests.adapters import HTTPAdapter

from crmkit.config import SheetsSettings
from crmkit.errors import ConfigError, CrmkitError

__all__ = [
    "GOOGLE_SHEETS_ENDPOINT",
    "SCOPES",
    "EndpointAdapter",
    "PatientHTTPClient",
    "RetryPolicy",
    "SheetsUnavailableError",
    "connect",
    "load_credentials",
]

GOOGLE_SHEETS_ENDPOINT = "https://sheets.googleapis.com"
#: Sheets only: crmkit never needs Drive, so it never asks for it.
SCOPES = ("https://www.googleapis.com/auth/spreadsheets",)
_WHERE = "--credentials, [sheets] credentials in crmkit.toml, or GOOGLE_APPLICATION_CREDENTIALS"
_RETRIED = frozenset({408, 429, 500, 502, 503, 504})


class SheetsUnavailableError(CrmkitError):
    """Google kept refusing (rate limit, server errors) past the deadline; the next run carries on."""


@dataclass(frozen=True)
class RetryPolicy:
    """How long to keep trying: waits double from ``first_wait`` up to ``max_wait``, for ``deadline`` s."""

    timeout: float = 60.0  # per request
    deadline: float = 120.0  # for one request and all its retries
    first_wait: float = 1.0
    max_wait: float = 32.0


class PatientHTTPClient(HTTPClient):
    """gspread's HTTP client with capped back-off, an overall deadline and a request timeout."""

    def __init__(self, auth: Credentials, session: requests.Session | None = None) -> None:
        super().__init__(auth, session)
        self.policy = RetryPolicy()
        self.timeout = self.policy.timeout
        self.requests_sent = 0
        self.retries = 0

    def use(self, policy: RetryPolicy) -> None:
        self.policy = policy
        self.timeout = policy.timeout

    def request(self, method: str, endpoint: str, *args: Any, **kwargs: Any) -> requests.Response:
        started = time.monotonic()
        attempt = 0
        while True:
            self.requests_sent += 1
            # no try may outlast the deadline: a slow answer is cut at what is left of it
            self.timeout = max(
                0.1, min(self.policy.timeout, self.policy.deadline - (time.monotonic() - started))
            )
            try:
                return super().request(method, endpoint, *args, **kwargs)
            except APIError as exc:
                if exc.code not in _RETRIED:
                    raise
                problem = f"answered {exc.code} ({exc.error.get('status') or exc.error.get('message', '')})"
            except (requests.ConnectionError, requests.Timeout) as exc:
                problem = f"did not answer ({type(exc).__name__})"
            wait = min(self.policy.max_wait, self.policy.first_wait * 2**attempt)
            wait *= random.uniform(0.5, 1.0)  # so that many clients do not retry in step
            elapsed = time.monotonic() - started
            if elapsed + wait > self.policy.deadline:
                raise SheetsUnavailableError(
                    f"Google Sheets {problem} for {elapsed:.0f} s ({attempt + 1} tries); stopped. "
                    "Both sides are consistent: run sync again later to finish"
                ) from None
            attempt += 1
            self.retries += 1
            time.sleep(wait)


class EndpointAdapter(HTTPAdapter):
    """Sends requests gspread addresses to Google's Sheets host to another endpoint instead."""

    def __init__(self, endpoint: str) -> None:
        super().__init__()
        self.target = endpoint.rstrip("/") + "/"

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> requests.Response:
        url = request.url or ""
        prefix = GOOGLE_SHEETS_ENDPOINT + "/"
        if url.startswith(prefix):
            request.url = self.target + url[len(prefix) :]
        return super().send(request, *args, **kwargs)


def _config_home(env: Mapping[str, str]) -> Path:
    return Path(env.get("XDG_CONFIG_HOME") or Path.home() / ".config")


def load_credentials(
    path: str | os.PathLike[str] | None, *, endpoint: str, env: Mapping[str, str] | None = None
) -> Credentials:
    """The Google credentials to use; see the module docstring for where they come from."""
    env = os.environ if env is None else env
    named = path or env.get("GOOGLE_APPLICATION_CREDENTIALS")
    source = Path(named).expanduser() if named else None
    if source is None:
        if endpoint.rstrip("/") != GOOGLE_SHEETS_ENDPOINT:
            # a local stand-in needs no account, and a person's own Google sign-in must not
            # be sent to some other host unasked
            return AnonymousCredentials()
        stored = _config_home(env) / "gspread" / "authorized_user.json"
        if stored.is_file():
            return _authorized_user(stored, _read_json(stored))
        raise ConfigError(
            f"no Google credentials: give a service-account key file with {_WHERE} "
            "(the README's Google Sheets section shows how to make one)"
        )
    info = _read_json(source)
    if info.get("type") == "service_account":
        from google.oauth2 import service_account

        try:
            return service_account.Credentials.from_service_account_info(info, scopes=SCOPES)  # type: ignore[no-any-return]
        except (ValueError, KeyError) as exc:
            raise ConfigError(f"{source}: not a usable service-account key ({exc})") from None
    if info.get("type") == "authorized_user":
        return _authorized_user(source, info)
    if "installed" in info or "web" in info:
        return _person_sign_in(source, info, env)
    raise ConfigError(
        f"{source} is not a service-account key or an OAuth client file "
        f"(its type is {info.get('type')!r}); download a JSON key of a service account"
    )


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"Google credentials file {path} not found (set with {_WHERE})") from None
    except OSError as exc:
        raise ConfigError(f"cannot read Google credentials file {path}: {exc.strerror}") from None
    except ValueError:
        raise ConfigError(f"Google credentials file {path} is not JSON") from None
    if not isinstance(data, dict):
        raise ConfigError(f"Google credentials file {path} is not a JSON object")
    return data


def _authorized_user(path: Path, info: dict[str, Any]) -> Credentials:
    from google.oauth2.credentials import Credentials as UserCredentials

    try:
        return UserCredentials.from_authorized_user_info(info, list(SCOPES))  # type: ignore[no-untyped-call]
    except ValueError as exc:
        raise ConfigError(f"{path}: not a usable Google sign-in ({exc})") from None


def _person_sign_in(client_file: Path, info: dict[str, Any], env: Mapping[str, str]) -> Credentials:
    """A person's own account, through an OAuth client: a browser sign-in once, then a stored token.

    The token is kept in the user's config folder (mode 600), never beside the
    project, so it cannot end up in a repository.
    """
    token_file = _config_home(env) / "crmkit" / "google-authorized-user.json"
    if token_file.is_file():
        return _authorized_user(token_file, _read_json(token_file))
    if not sys.stdin.isatty():
        raise ConfigError(
            f"{client_file} is an OAuth client: signing in needs a browser once; "
            "run the same crmkit sync command in a terminal first"
        )
    from google_auth_oauthlib.flow import InstalledAppFlow

    flow = InstalledAppFlow.from_client_config(info, list(SCOPES))
    creds = flow.run_local_server(port=0)
    token_file.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(token_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(creds.to_json())
    return creds  # type: ignore[no-any-return]


def connect(
    settings: SheetsSettings,
    *,
    credentials: str | os.PathLike[str] | None = None,
    policy: RetryPolicy | None = None,
    env: Mapping[str, str] | None = None,
) -> tuple[PatientHTTPClient, Credentials]:
    """An HTTP client for the Sheets API, signed in, aimed at the configured endpoint."""
    env = os.environ if env is None else env
    endpoint = env.get("CRMKIT_SHEETS_ENDPOINT") or settings.endpoint
    creds = load_credentials(credentials or settings.credentials, endpoint=endpoint, env=env)
    session = AuthorizedSession(creds)
    if endpoint.rstrip("/") != GOOGLE_SHEETS_ENDPOINT:
        session.mount(GOOGLE_SHEETS_ENDPOINT + "/", EndpointAdapter(endpoint))
    client = PatientHTTPClient(creds, session)
    client.use(policy or RetryPolicy(timeout=settings.timeout, deadline=settings.retry_deadline))
    return client, creds


def describe_auth_error(exc: GoogleAuthError, creds: Credentials) -> str:
    """One line for a failed sign-in (a revoked key, a wrong clock, no network to Google)."""
    who = getattr(creds, "service_account_email", None)
    return f"cannot sign in to Google{f' as {who}' if who else ''}: {exc}"
