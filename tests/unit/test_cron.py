"""Unix crontab → EventBridge cron: exact over the grammar, refused with the reason otherwise.

Exactness is checked by running both: a small Unix cron matcher and a small EventBridge cron matcher,
written here independently of guard.config.cron, must fire at the same minutes, hours and days
(every day of two years).
"""

from __future__ import annotations

import itertools
import re
from datetime import date, timedelta

import pytest
from guard.config.schedules import schedule_expression
from guard.errors import ConfigError

MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
DAYS_OF_TWO_YEARS = [date(2026, 1, 1) + timedelta(days=n) for n in range(730)]


# ------------------------------------------------------------------ the two reference matchers
def _unix_field(text: str, low: int, high: int, names: list[str], base: int) -> set[int]:
    def number(t: str) -> int:
        return names.index(t.upper()) + base if t.upper() in names else int(t)

    out: set[int] = set()
    for item in text.split(","):
        rng, step = ([*item.split("/"), "1"])[:2]
        if rng == "*":
            a, b = low, high
        elif "-" in rng:
            a, b = (number(x) for x in rng.split("-"))
        else:
            a = number(rng)
            b = high if "/" in item else a
        out |= set(range(a, b + 1, int(step)))
    return out


def unix_fires(expr: str) -> tuple[set[int], set[int], set[date]]:
    """Minutes, hours and days a five-field Unix crontab fires on (Vixie semantics for the two day fields)."""
    m, h, dom, mon, dow = expr.split()
    days_m = _unix_field(dom, 1, 31, [], 1)
    months = _unix_field(mon, 1, 12, MONTHS, 1)
    weekdays = {d % 7 for d in _unix_field(dow, 0, 7, DAYS, 0)}
    days: set[date] = set()
    for d in DAYS_OF_TWO_YEARS:
        if d.month not in months:
            continue
        in_dom, in_dow = d.day in days_m, (d.isoweekday() % 7) in weekdays
        # Vixie cron: a field starting with '*' does not restrict; both restricting = either day.
        if dom.startswith("*") or dow.startswith("*"):
            fires = in_dom and in_dow
        else:
            fires = in_dom or in_dow
        if fires:
            days.add(d)
    return _unix_field(m, 0, 59, [], 0), _unix_field(h, 0, 23, [], 0), days


def _eventbridge_field(text: str, low: int, high: int, names: list[str], base: int) -> set[int]:
    if text == "?":
        return set(range(low, high + 1))
    out: set[int] = set()
    for item in text.split(","):
        assert re.fullmatch(r"(\*|[0-9A-Z]+(-[0-9A-Z]+)?)(/\d+)?", item), f"not EventBridge syntax: {item}"
        rng, step = ([*item.split("/"), "1"])[:2]

        def number(t: str) -> int:
            return names.index(t) + base if t in names else int(t)

        if rng == "*":
            a, b = low, high
        elif "-" in rng:
            a, b = (number(x) for x in rng.split("-"))
            assert a <= b, f"a wrapping range is not what Unix meant: {item}"
        else:
            a = number(rng)
            b = high if "/" in item else a
        assert low <= a <= high and low <= b <= high, f"{item} outside {low}-{high}"
        out |= set(range(a, b + 1, int(step)))
    return out


def eventbridge_fires(expr: str) -> tuple[set[int], set[int], set[date]]:
    """Minutes, hours and days an EventBridge cron(...) fires on (Sunday is 1; no step on day-of-week)."""
    m, h, dom, mon, dow, year = expr.removeprefix("cron(").removesuffix(")").split()
    assert year == "*" and (dom == "?") != (dow == "?"), expr
    assert "/" not in dow, "EventBridge has no step on day-of-week"
    days_m = _eventbridge_field(dom, 1, 31, [], 1)
    months = _eventbridge_field(mon, 1, 12, MONTHS, 1)
    weekdays = _eventbridge_field(dow, 1, 7, DAYS, 1)
    days = {d for d in DAYS_OF_TWO_YEARS
            if d.month in months and d.day in days_m and (d.isoweekday() % 7) + 1 in weekdays}
    return _eventbridge_field(m, 0, 59, [], 0), _eventbridge_field(h, 0, 23, [], 0), days


# ------------------------------------------------------------------ exact translations
SEED_AND_ISSUE = [
    ("0 2 * * 1", "cron(0 2 ? * 2 *)"),          # the seed's "Every Monday at 2 AM"
    ("0 2 * * */2", "cron(0 2 ? * 1,3,5,7 *)"),  # Sun, Tue, Thu, Sat; not */3
    ("0 2 * * 5-7", "cron(0 2 ? * 1,6,7 *)"),    # Fri, Sat, Sun; not the wrapping 6-1
    ("0 2 * * MON-FRI", "cron(0 2 ? * 2-6 *)"),
    ("0 2 * * 0", "cron(0 2 ? * 1 *)"),
    ("0 2 * * 7", "cron(0 2 ? * 1 *)"),
    ("30 4 1 * *", "cron(30 4 1 * ? *)"),
    ("*/15 * * * *", "cron(0/15 * * * ? *)"),
    ("0 0 1 JAN-MAR *", "cron(0 0 1 1-3 ? *)"),
    ("@weekly", "cron(0 0 ? * 1 *)"),
    ("@daily", "cron(0 0 * * ? *)"),
]


@pytest.mark.parametrize("unix, expected", SEED_AND_ISSUE)
def test_the_seed_s_and_the_issue_s_expressions(unix: str, expected: str) -> None:
    # GIVEN a Unix crontab WHEN translated THEN it is this EventBridge expression, and both fire alike
    assert schedule_expression(unix, "schedules.x.cron") == expected
    if not unix.startswith("@"):
        assert eventbridge_fires(expected) == unix_fires(unix)


MINUTES = ["*", "0", "5,35", "*/15", "10-20", "10-50/20", "7/30", "0,30-32"]
HOURS = ["*", "2", "9-17", "*/6", "9-17/2", "0,12"]
MONTHS_FIELD = ["*", "1", "JAN-MAR", "*/3", "jun,dec", "2-11/3"]
DAYS_OF_WEEK = ["*", "0", "7", "1", "5-7", "0-7", "*/2", "*/3", "1-5/2", "MON-FRI", "sun,sat", "SAT,SUN",
                "3/2", "0,6", "2-4,6", "*/1", "*/7"]
DAYS_OF_MONTH = ["*", "1", "1,15", "*/2", "10-20", "1-31/7", "28-31", "5/10"]


@pytest.mark.parametrize("dow", DAYS_OF_WEEK)
def test_every_day_of_week_form_fires_on_the_same_days(dow: str) -> None:
    # GIVEN every day-of-week form combined with every minute/hour/month form
    for minute, hour, month in itertools.product(MINUTES[:3], HOURS[:3], MONTHS_FIELD):
        unix = f"{minute} {hour} * {month} {dow}"
        # WHEN translated THEN EventBridge fires exactly when Unix cron does
        translated = schedule_expression(unix, "schedules.x.cron")
        assert eventbridge_fires(translated) == unix_fires(unix), (unix, translated)


@pytest.mark.parametrize("dom", DAYS_OF_MONTH)
def test_every_day_of_month_form_fires_on_the_same_days(dom: str) -> None:
    for minute, hour, month in itertools.product(MINUTES, HOURS, MONTHS_FIELD[:3]):
        unix = f"{minute} {hour} {dom} {month} *"
        translated = schedule_expression(unix, "schedules.x.cron")
        assert eventbridge_fires(translated) == unix_fires(unix), (unix, translated)


def test_a_full_week_is_every_day_and_lets_day_of_month_restrict() -> None:
    # GIVEN a day-of-week that covers the whole week (0-7) and a day of month
    translated = schedule_expression("0 3 1 * 0-7", "schedules.x.cron")
    # THEN the day of month decides (Vixie: either day, and every day is a weekday in 0-7)
    assert translated == "cron(0 3 1 * ? *)"


# ------------------------------------------------------------------ refused, with the reason
@pytest.mark.parametrize("unix, reason", [
    ("0 2 1 * 1", "both day-of-month and day-of-week are restricted"),
    ("0 2 1-7 * MON", "EventBridge can restrict only one of them"),
    ("0 2 * * 6-1", "range '6-1' runs backwards"),
    ("0 2 * * 1#2", "uses '#', which Unix cron does not have"),
    ("0 2 L * *", "day-of-month 'L' is not a number"),
    ("0 24 * * *", "hour 24 is outside 0-23"),
    ("60 * * * *", "minute 60 is outside 0-59"),
    ("0 2 * 13 *", "month 13 is outside 1-12"),
    ("0 2 * * 8", "day-of-week 8 is outside 0-7"),
    ("0 2 * * FUN", "day-of-week 'FUN' is not a number or a name"),
    ("*/0 * * * *", "step '0'"),
    ("0 2 * *", "five fields"),
    ("0 2 * * * 2026", "five fields"),
    ("@reboot", "not a schedule macro"),
    ("0 2 ,1 * *", "empty list item"),
    ("cron(0 2 * * MON *)", "needs '?' in exactly one"),
    ("cron(0 2 ? * */2 *)", "no step ('/') on day-of-week"),
    ("cron(0 2 ? * *)", "six fields"),
    ("every monday", "five fields"),
])
def test_what_eventbridge_cannot_run_is_refused_with_the_reason(unix: str, reason: str) -> None:
    # GIVEN an expression that is malformed or that EventBridge cannot express
    # WHEN translated THEN ConfigError names the schedule key, the expression and why
    with pytest.raises(ConfigError) as caught:
        schedule_expression(unix, "schedules.weekly.cron")
    message = str(caught.value)
    assert message.startswith("schedules.weekly.cron: ")
    assert unix in message and reason in message, message


@pytest.mark.parametrize("given", ["cron(0 2 ? * MON *)", "cron(0/5 8-17 ? * MON-FRI *)", "rate(7 days)",
                                   "at(2026-12-24T02:00:00)", "cron(0 12 L * ? *)"])
def test_eventbridge_s_own_syntax_passes_through(given: str) -> None:
    assert schedule_expression(given, "schedules.x.cron") == given
