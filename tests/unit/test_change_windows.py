"""Deny change windows, judged against a fixed clock (Europe/Berlin, across a DST change)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from guard.config.loader import parse_config
from guard.errors import ChangeWindowClosed, ConfigError
from guard.services.windows import closed_window, refuse_inside_window


def config(**windows: Any) -> Any:
    return parse_config({"batches": [{"name": "prod-eu", "clusters": ["eks-prod-eu-api"]}],
                         "change_windows": windows or {"deny": [
                             {"environments": ["prod"], "from": "Fri 15:00", "to": "Mon 08:00",
                              "timezone": "Europe/Berlin"}]}})


@pytest.mark.parametrize("utc, closed", [
    ("2025-03-28T13:59:00", False),  # Fri 14:59 CET: still open
    ("2025-03-28T14:00:00", True),   # Fri 15:00 CET: closed
    ("2025-03-29T12:00:00", True),   # Saturday
    ("2025-03-31T05:59:00", True),   # Mon 07:59 CEST (after the DST change)
    ("2025-03-31T06:00:00", False),  # Mon 08:00 CEST: open again
    ("2025-04-02T10:00:00", False),  # Wednesday
])
def test_weekend_window_in_local_time(utc: str, closed: bool) -> None:
    now = datetime.fromisoformat(utc).replace(tzinfo=UTC)
    assert (closed_window(config(), ["prod"], now) is not None) == closed


def test_refusal_names_the_window_and_when_it_ends() -> None:
    # GIVEN Saturday noon UTC and the prod weekend freeze
    now = datetime(2025, 3, 29, 12, 0, tzinfo=UTC)
    # WHEN a prod batch would start THEN it is refused, naming the window and its end in local time
    with pytest.raises(ChangeWindowClosed) as error:
        refuse_inside_window(config(), "prod-eu", ["prod"], now)
    message = str(error.value)
    assert "batch 'prod-eu'" in message and "Fri 15:00 to Mon 08:00 Europe/Berlin" in message
    assert "Mon 2025-03-31 08:00" in message and "in 42h00m" in message
    assert closed_window(config(), ["prod"], now).seconds_left(now) == 42 * 3600 + 1  # type: ignore[union-attr]


def test_other_environments_are_not_affected() -> None:
    now = datetime(2025, 3, 29, 12, 0, tzinfo=UTC)
    refuse_inside_window(config(), "dev-1", ["dev", "staging"], now)


def test_daily_window_wraps_midnight() -> None:
    cfg = config(deny=[{"name": "nightly batch jobs", "environments": ["prod", "staging"], "from": "22:00",
                        "to": "02:00"}])
    assert closed_window(cfg, ["staging"], datetime(2025, 5, 6, 23, 30, tzinfo=UTC)) is not None
    assert closed_window(cfg, ["staging"], datetime(2025, 5, 7, 1, 59, tzinfo=UTC)) is not None
    assert closed_window(cfg, ["staging"], datetime(2025, 5, 7, 2, 0, tzinfo=UTC)) is None
    with pytest.raises(ChangeWindowClosed, match="nightly batch jobs"):
        refuse_inside_window(cfg, "staging-eu", ["staging"], datetime(2025, 5, 6, 22, 0, tzinfo=UTC))


@pytest.mark.parametrize("window, message", [
    ({"environments": ["prod"], "from": "Fri 15:00", "to": "08:00"}, "both name a weekday"),
    ({"environments": ["prod"], "from": "Friday 15:00", "to": "Mon 08:00"}, "from"),
    ({"environments": ["prod"], "from": "Fri 15:00", "to": "Mon 08:00", "timezone": "Mars/Olympus"},
     "unknown timezone"),
    ({"environments": [], "from": "Fri 15:00", "to": "Mon 08:00"}, "environments"),
    ({"environments": ["prod"], "from": "10:00", "to": "10:00"}, "same time"),
])
def test_bad_windows_fail_config_validation(window: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config(deny=[window])
