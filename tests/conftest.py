from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from crmkit.store import Store


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
