from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crmkit.store import Store
from crmkit.testing.postgres import PostgresServer, find_postgres

REQUIRE_SERVERS = bool(os.environ.get("CRMKIT_REQUIRE_SERVERS"))


class TickingClock:
    """A clock that moves one minute per reading, so timestamps are distinct and known."""

    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        self.now += timedelta(minutes=1)
        return self.now


@pytest.fixture
def clock() -> TickingClock:
    return TickingClock(datetime(2026, 3, 1, 9, 0, tzinfo=UTC))


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "crm.json"


@pytest.fixture
def store(store_path: Path, clock: TickingClock) -> Store:
    return Store(store_path, actor="test", clock=clock)


# A real PostgreSQL (crmkit/testing/postgres.py): one cluster for the whole session, started on
# first use (about a second), and a fresh database for each test. On a developer's machine
# without it the tests that use it skip; CI sets CRMKIT_REQUIRE_SERVERS=1, which makes that an error.


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    if find_postgres() is None and not REQUIRE_SERVERS:
        pytest.skip(
            "PostgreSQL is not installed (apt-get install postgresql); "
            "CRMKIT_REQUIRE_SERVERS=1 makes this an error"
        )
    with PostgresServer() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """The URL of an empty database of its own, dropped after the test."""
    url = postgres_server.create_database()
    yield url
    postgres_server.drop_database(url)
