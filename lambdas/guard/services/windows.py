"""Change windows: recurring periods (per environment, local time) in which no upgrade may start.

Pure functions over a config and an instant; the caller passes `clock.now()`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

from guard.config.models import DenyWindowConfig, TenantConfig
from guard.errors import ChangeWindowClosed

_DAYS = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_WEEK = 7 * 24 * 60
_DAY = 24 * 60


@dataclass(frozen=True)
class ClosedWindow:
    """A deny window that is open right now (no upgrades), and when it ends."""

    window: DenyWindowConfig
    environments: tuple[str, ...]
    opens_at: datetime  # UTC

    def seconds_left(self, now: datetime) -> int:
        return max(1, int((self.opens_at - now).total_seconds()) + 1)

    def message(self, what: str, now: datetime) -> str:
        local = self.opens_at.astimezone(ZoneInfo(self.window.timezone))
        return (f"{what} would start inside change window '{self.window.label()}' "
                f"(no upgrades of {', '.join(self.environments)} from {self.window.from_} to {self.window.to} "
                f"{self.window.timezone}); it ends at {local:%a %Y-%m-%d %H:%M} {self.window.timezone}, "
                f"in {_duration(self.seconds_left(now))}")


def _minutes(spec: str) -> tuple[int, bool]:
    """Minutes since Monday 00:00 ("Fri 15:00") or since midnight ("22:00"), and whether weekly."""
    day, _, clock = spec.rpartition(" ")
    hours, minutes = (int(x) for x in clock.split(":"))
    offset = _DAYS.index(day) * _DAY if day else 0
    return offset + hours * 60 + minutes, bool(day)


def _closed(window: DenyWindowConfig, now: datetime) -> datetime | None:
    """When `window` ends if `now` is inside it, else None."""
    local = now.astimezone(ZoneInfo(window.timezone))
    start, weekly = _minutes(window.from_)
    end, _ = _minutes(window.to)
    period = _WEEK if weekly else _DAY
    position = (local.weekday() * _DAY if weekly else 0) + local.hour * 60 + local.minute
    length = (end - start) % period
    into = (position - start) % period
    if into >= length:
        return None
    midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
    # Wall-clock arithmetic in the window's zone, so a DST change keeps "Mon 08:00" at 08:00.
    minutes_left = length - into
    ends_local = (midnight + timedelta(minutes=local.hour * 60 + local.minute + minutes_left)).replace(
        tzinfo=None).replace(tzinfo=ZoneInfo(window.timezone))
    return ends_local.astimezone(now.tzinfo)


def closed_window(config: TenantConfig, environments: Iterable[str], now: datetime) -> ClosedWindow | None:
    """The deny window (ending last) that covers any of `environments` at `now`, or None."""
    wanted = set(environments)
    found: ClosedWindow | None = None
    for window in config.change_windows.deny:
        hit = tuple(sorted(wanted & set(window.environments)))
        if not hit:
            continue
        ends = _closed(window, now)
        if ends is not None and (found is None or ends > found.opens_at):
            found = ClosedWindow(window, hit, ends)
    return found


def refuse_inside_window(config: TenantConfig, batch: str, environments: Iterable[str], now: datetime) -> None:
    """Raise ChangeWindowClosed when batch `batch` may not start at `now`."""
    closed = closed_window(config, environments, now)
    if closed is not None:
        raise ChangeWindowClosed(closed.message(f"batch '{batch}'", now))


def _duration(seconds: int) -> str:
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m" if hours else f"{max(1, rest // 60)}m"
