"""Time source. Services take a Clock so the local rehearsal can compress time."""

from __future__ import annotations

import time
from datetime import UTC, datetime


class SystemClock:
    """Wall-clock time."""

    def now(self) -> datetime:
        return datetime.now(UTC)

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class ScaledClock:
    """Virtual time that runs `speedup` times faster than the wall clock.

    The rehearsal runs a 2-hour soak in seconds; every service, simulator and Wait
    state reads this one clock so deadlines and metric windows stay consistent.
    """

    def __init__(self, speedup: float, start: datetime | None = None) -> None:
        if speedup <= 0:
            raise ValueError("speedup must be positive")
        self.speedup = speedup
        self._origin_virtual = start or datetime.now(UTC)
        self._origin_real = time.monotonic()

    def now(self) -> datetime:
        from datetime import timedelta

        elapsed = (time.monotonic() - self._origin_real) * self.speedup
        return self._origin_virtual + timedelta(seconds=elapsed)

    def sleep(self, seconds: float) -> None:
        time.sleep(max(0.0, seconds) / self.speedup)


def poll_deadline(deadline: str | None, now: datetime, minutes: float) -> datetime:
    """The deadline a polling loop carries in its state: set by the first poll, then kept."""
    from datetime import timedelta

    return datetime.fromisoformat(deadline) if deadline else now + timedelta(minutes=minutes)
