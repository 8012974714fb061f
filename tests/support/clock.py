"""The one test clock: a `guard.clock.Clock` whose time moves only when the test (or a sleep) moves it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Literal

START = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)

OnSleep = Literal["advance", "stand_still", "refuse"]


class FakeClock:
    """Virtual time starting at `start` (timezone-aware UTC).

    `advance(seconds)` and `set(moment)` move it. `sleep(seconds)` never waits; it is recorded
    in `slept` and, by `on_sleep`: moves the time on ("advance", the default), leaves it where it
    is ("stand_still": the code may back off but the test's moment must not move), or fails the
    test ("refuse": the code under test must never sleep).
    """

    def __init__(self, start: datetime = START, *, on_sleep: OnSleep = "advance") -> None:
        if start.tzinfo is None:
            raise ValueError("FakeClock needs a timezone-aware start")
        self._now = start
        self.on_sleep = on_sleep
        self.slept: list[float] = []

    def now(self) -> datetime:
        return self._now

    def sleep(self, seconds: float) -> None:
        if self.on_sleep == "refuse":
            raise AssertionError(f"the code under test slept {seconds}s: it must never sleep")
        self.slept.append(seconds)
        if self.on_sleep == "advance":
            self.advance(seconds)

    def advance(self, seconds: float) -> None:
        self._now += timedelta(seconds=seconds)

    def set(self, moment: datetime) -> None:
        self._now = moment
