"""Split a Datadog metric expression into the v2 timeseries API's named queries plus a formula.

Datadog's v2 `POST /api/v2/query/timeseries` takes, in each `metrics` query, one metric query only:
`<aggregation>:<metric>{<filters>}` with an optional `by {<tags>}` and the suffixes `.as_count()`,
`.as_rate()`, `.rollup(...)`, `.fill(...)`. Arithmetic between queries and function wrappers
(`a / b`, `abs(...)`) are refused with 400 "Functions are not supported in metrics data source
field. Use the formulas payload." (argo-rollouts issue 2813). They belong in `formulas`, which
name the queries: `sum:a{*}.as_count() / sum:b{*}.as_count()` becomes the queries
`q0 = sum:a{*}.as_count()`, `q1 = sum:b{*}.as_count()` and the formula `q0 / q1`.

Pure and cheap: the config loader runs it on every configured query (a query GUARD cannot split
is refused at load, named), and the Datadog adapter runs it on every request.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from pydantic import BaseModel

# One metric query as the v2 `metrics` data source accepts it. Filters and tags hold no braces
# once the placeholders are rendered; a filter value may hold `-`, `*`, `!`, `/` or `.`.
_METRIC_QUERY = re.compile(
    r"""
    [a-z][a-z0-9]*:                           # space aggregation: avg, sum, min, max, p95, ...
    [A-Za-z][A-Za-z0-9_.]*                    # metric name
    \{[^{}]*\}                                # filters ({*} for none)
    (?:\s*by\s*\{[^{}]*\})?                   # optional grouping
    (?:\.(?:as_count|as_rate)\(\)             # suffixes, any order and number
       |\.(?:rollup|fill)\([^()]*\))*
    """,
    re.X,
)

# Functions Datadog evaluates in a formula (docs "Functions" reference): these wrap queries in the
# formula. Anything else that looks like a call is refused rather than sent and refused by Datadog.
FORMULA_FUNCTIONS = frozenset({
    "abs", "log2", "log10", "cumsum", "integral", "per_second", "per_minute", "per_hour", "dt", "diff",
    "monotonic_diff", "derivative", "hour_before", "day_before", "week_before", "month_before", "timeshift",
    "top", "ewma_3", "ewma_5", "ewma_7", "ewma_10", "ewma_20", "median_3", "median_5", "median_7",
    "median_9", "default_zero", "clamp_min", "clamp_max", "cutoff_min", "cutoff_max", "count_nonzero",
    "count_not_null", "robust_trend", "trend_line", "piecewise_constant",
})

_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
    |(?P<number>\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)
    |(?P<op>[-+*/(),])
    |(?P<string>'[^']*'|"[^"]*")
    |(?P<call>[a-z_][a-z0-9_]*)\s*(?=\()
    """,
    re.X,
)


class SplitQuery(BaseModel):
    """A configured query as the v2 API takes it: metric queries and the formula over their names."""

    queries: list[str]  # the metric queries, in the order the formula names them
    formula: str        # e.g. "q0 / q1", or "q0" for a plain metric query


class UnsplittableQuery(ValueError):
    """The text is neither a metric query nor arithmetic and known functions over metric queries."""


def split(text: str, name: Callable[[int], str] = lambda i: f"q{i}") -> SplitQuery:
    """Split `text` into metric queries named `name(0)`, `name(1)`, ... and a formula over them.

    Raises UnsplittableQuery naming what could not be read (the offending text and its position).
    """
    queries: list[str] = []
    formula: list[str] = []
    depth = 0
    position = 0
    expect_operand = True  # an operand (query, number, call, "(") may come next, not a binary operator
    while position < len(text):
        metric = _METRIC_QUERY.match(text, position)
        if metric and expect_operand:
            queries.append(metric.group(0).strip())
            formula.append(name(len(queries) - 1))
            position = metric.end()
            expect_operand = False
            continue
        token = _TOKEN.match(text, position)
        if token is None:
            raise UnsplittableQuery(f"cannot read {_shown(text, position)!r} at character {position}")
        kind, value = token.lastgroup, token.group(0)
        operand = kind in ("number", "string", "call") or value == "("
        if kind != "space" and operand != expect_operand and value not in ("-", "+"):
            wanted = "a query, number or function" if expect_operand else "an operator"
            raise UnsplittableQuery(f"expected {wanted} at character {position}: {_shown(text, position)!r}")
        if kind == "call":
            if value not in FORMULA_FUNCTIONS:
                raise UnsplittableQuery(f"unknown function {value!r} at character {position}")
            expect_operand = True
        elif kind == "op":
            if value == "(":
                depth += 1
                expect_operand = True
            elif value == ")":
                depth -= 1
                if depth < 0:
                    raise UnsplittableQuery(f"unbalanced ')' at character {position}")
                expect_operand = False
            elif value == ",":
                if depth == 0:
                    raise UnsplittableQuery(f"',' outside a function call at character {position}")
                expect_operand = True
            else:
                expect_operand = True
        elif kind in ("number", "string"):
            expect_operand = False
        formula.append(value)
        position = token.end()
    if expect_operand:
        raise UnsplittableQuery("the expression ends where a query, number or function is expected")
    if depth:
        raise UnsplittableQuery("unbalanced '(': a function call or group is not closed")
    if not queries:
        raise UnsplittableQuery("no metric query (<aggregation>:<metric>{<filters>}) found")
    return SplitQuery(queries=queries, formula="".join(formula).strip())


def _shown(text: str, position: int) -> str:
    return text[position:position + 30]
