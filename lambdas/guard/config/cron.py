"""A Unix crontab expression (`0 2 * * 1`, the seed's CI schedules) as an EventBridge Scheduler `cron(...)`.

The translation is exact or refused. Each field is expanded to the set of values Unix cron runs at
(Vixie cron's grammar: `*`, numbers, `a-b`, `*/s`, `a-b/s`, `a/s`, lists, month and weekday names,
the `@daily`-style macros), then written back in EventBridge's terms:

- day-of-week numbering differs: Unix 0-7 with Sunday 0 and 7, EventBridge 1-7 with Sunday 1. A set
  of weekdays is written as ascending EventBridge numbers, so Unix `5-7` (Fri, Sat, Sun) becomes
  `1,6-7`, never the wrapping `6-1`;
- EventBridge has no step on day-of-week, so a weekday step (`*/2`: Sun, Tue, Thu, Sat) becomes the
  list of its days (`1,3,5,7`);
- EventBridge wants `?` in one of day-of-month and day-of-week. Unix cron runs a job whose two day
  fields are both restricted on either day; EventBridge cannot say that, so it is refused.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from guard.errors import ConfigError

_MONTHS = ["JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC"]
_DAYS = ["SUN", "MON", "TUE", "WED", "THU", "FRI", "SAT"]
_MACROS = {
    "@yearly": "0 0 1 1 *", "@annually": "0 0 1 1 *", "@monthly": "0 0 1 * *", "@weekly": "0 0 * * 0",
    "@daily": "0 0 * * *", "@midnight": "0 0 * * *", "@hourly": "0 * * * *",
}


@dataclass(frozen=True)
class _Field:
    name: str
    low: int
    high: int
    names: dict[str, int]


_FIELDS = (
    _Field("minute", 0, 59, {}),
    _Field("hour", 0, 23, {}),
    _Field("day-of-month", 1, 31, {}),
    _Field("month", 1, 12, {m: i + 1 for i, m in enumerate(_MONTHS)}),
    # 7 is Sunday too in Unix cron; names map to 0-6.
    _Field("day-of-week", 0, 7, {d: i for i, d in enumerate(_DAYS)}),
)


class CronError(ValueError):
    """A crontab expression that is malformed or that EventBridge cannot express; says which and why."""


def _value(text: str, field: _Field) -> int:
    upper = text.upper()
    if upper in field.names:
        return field.names[upper]
    if not text.isdigit():
        known = f" or a name ({', '.join(field.names)})" if field.names else ""
        raise CronError(f"{field.name} '{text}' is not a number{known}")
    number = int(text)
    if not field.low <= number <= field.high:
        raise CronError(f"{field.name} {number} is outside {field.low}-{field.high}")
    return number


def expand(text: str, field: _Field) -> set[int]:
    """The values a Unix cron field matches (in the field's own numbering)."""
    values: set[int] = set()
    for item in text.split(","):
        if not item:
            raise CronError(f"{field.name} '{text}' has an empty list item")
        base, _, step_text = item.partition("/")
        step = 1
        if "/" in item:
            if not step_text.isdigit() or int(step_text) == 0:
                raise CronError(f"{field.name} step '{step_text}' in '{item}' is not a positive number")
            step = int(step_text)
        if base == "*":
            first, last = field.low, field.high
        elif "-" in base:
            a, _, b = base.partition("-")
            first, last = _value(a, field), _value(b, field)
            if first > last:
                # Vixie cron refuses a range that goes backwards; reading it as wrapping would be a guess.
                raise CronError(f"{field.name} range '{base}' runs backwards (write it as two ranges: "
                                f"'{a}-{field.high},{field.low}-{b}')")
        else:
            first = _value(base, field)
            # `a/s` (no range) runs from a to the field's end, every s.
            last = field.high if "/" in item else first
        values.update(range(first, last + 1, step))
    return values


def _is_every(text: str) -> bool:
    return text == "*"


def _compress(values: list[int]) -> str:
    """Ascending values as EventBridge list items: runs of 3+ as `a-b`, others listed."""
    parts: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        if j - i >= 2:
            parts.append(f"{values[i]}-{values[j]}")
        else:
            parts.extend(str(v) for v in values[i:j + 1])
        i = j + 1
    return ",".join(parts)


def _write(values: set[int], field: _Field) -> str:
    """`*`, `a/s` (a progression that runs to the field's end) or a list of values and ranges."""
    ordered = sorted(values)
    if ordered == list(range(field.low, field.high + 1)):
        return "*"
    if len(ordered) > 2:
        step = ordered[1] - ordered[0]
        if step > 1 and ordered == list(range(ordered[0], field.high + 1, step)):
            return f"{ordered[0]}/{step}"
    return _compress(ordered)


def to_eventbridge(expression: str) -> str:
    """`cron(...)` for a five-field Unix crontab expression or an `@daily`-style macro; CronError says why not."""
    text = " ".join(expression.split())
    if text.startswith("@"):
        if text.lower() not in _MACROS:
            raise CronError(f"'{text}' is not a schedule macro EventBridge can run "
                            f"(known: {', '.join(_MACROS)})")
        text = _MACROS[text.lower()]
    fields = text.split(" ")
    if len(fields) != 5:
        raise CronError(f"a crontab expression has five fields (minute hour day-of-month month day-of-week), "
                        f"got {len(fields)}")
    for raw, field in zip(fields, _FIELDS, strict=True):
        bad = re.sub(r"[0-9A-Za-z*,/-]", "", raw)
        if bad:
            raise CronError(f"{field.name} '{raw}' uses '{bad}', which Unix cron does not have"
                            + (" (write cron(...) in EventBridge's syntax to use L, W or #)" if set(bad) & set("?LW#")
                               else ""))
    minute, hour, dom, month, dow = (expand(raw, field) for raw, field in zip(fields, _FIELDS, strict=True))
    dom_every, dow_every = _is_every(fields[2]), _is_every(fields[4])
    weekdays = {d % 7 for d in dow}  # Sunday is 0 and 7
    if not dow_every and weekdays == set(range(7)):
        dow_every = True  # `0-7`, `*/1`: every day of the week
    if not dom_every and not dow_every:
        raise CronError("both day-of-month and day-of-week are restricted: Unix cron runs on either day, "
                        "EventBridge can restrict only one of them (use two schedules)")
    out_minute = _write(minute, _FIELDS[0])
    out_hour = _write(hour, _FIELDS[1])
    out_month = _write(month, _FIELDS[3])
    if dow_every:
        out_dom, out_dow = _write(dom, _FIELDS[2]), "?"
    else:
        out_dom = "?"
        # EventBridge numbers Sunday 1 .. Saturday 7 and has no weekday step: list the days.
        out_dow = _compress(sorted(d + 1 for d in weekdays))
    return f"cron({out_minute} {out_hour} {out_dom} {out_month} {out_dow} *)"


def check_eventbridge(expression: str) -> None:
    """A `cron(...)` written in EventBridge's own syntax: six fields, `?` in exactly one day field."""
    fields = expression.strip()[5:-1].split()
    if len(fields) != 6:
        raise CronError(f"EventBridge's cron(...) has six fields (minutes hours day-of-month month day-of-week "
                        f"year), got {len(fields)}")
    if (fields[2] == "?") == (fields[4] == "?"):
        raise CronError("EventBridge's cron(...) needs '?' in exactly one of day-of-month and day-of-week")
    if "/" in fields[4]:
        raise CronError("EventBridge has no step ('/') on day-of-week; list the days")


def schedule_expression_or_error(cron: str, where: str) -> str:
    """The EventBridge expression for `cron`, or ConfigError naming `where`, the expression and the reason."""
    text = cron.strip()
    try:
        if re.match(r"^(rate|at)\(.+\)$", text):
            return text
        if re.match(r"^cron\(.+\)$", text):
            check_eventbridge(text)
            return text
        return to_eventbridge(text)
    except CronError as e:
        raise ConfigError(f"{where}: '{cron}' cannot be scheduled on EventBridge: {e}") from None
