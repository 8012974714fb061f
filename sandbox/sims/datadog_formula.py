"""What Datadog's v2 timeseries API accepts, for the simulator: metric-query syntax and formulas.

Written apart from `guard.datadog_query` on purpose: the simulator must refuse what Datadog
refuses, and sharing GUARD's parser would let one bug pass on both sides.

- A `metrics` query is one metric query: `<aggregation>:<metric>{<filters>}`, optional
  `by {<tags>}`, suffixes `.as_count()`, `.as_rate()`, `.rollup(...)`, `.fill(...)`. Arithmetic
  or a function wrapper is refused with Datadog's own message (argo-rollouts issue 2813).
- A formula names queries and combines them with `+ - * /`, numbers, parentheses and the
  functions this simulator evaluates (`abs`, `log2`, `log10`, `default_zero`, `clamp_min`,
  `clamp_max`). Other Datadog functions are refused with a message saying the simulator does
  not evaluate them (never silently ignored).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from dataclasses import dataclass

FUNCTIONS_REFUSED = "Functions are not supported in metrics data source field. Use the formulas payload."

METRIC_QUERY = re.compile(
    r"(?P<agg>avg|sum|min|max|count|p50|p75|p90|p95|p99|p999):"
    r"(?P<metric>[A-Za-z][A-Za-z0-9_.]*)"
    r"\{(?P<filters>[^{}]*)\}"
    r"(?:\s+by\s+\{(?P<by>[^{}]*)\})?"
    r"(?P<suffixes>(?:\.as_count\(\)|\.as_rate\(\)|\.rollup\([a-z]+(?:\s*,\s*\d+)?\)|\.fill\([a-z]+(?:\s*,\s*\d+)?\))*)"
)
_ROLLUP = re.compile(r"\.rollup\((?P<method>[a-z]+)(?:\s*,\s*(?P<seconds>\d+))?\)")


class QueryRefused(ValueError):
    """Datadog answers 400 with this message."""


@dataclass(frozen=True)
class MetricQuery:
    text: str
    as_count: bool
    rollup_method: str | None
    rollup_seconds: int | None


def parse_metric_query(text: str) -> MetricQuery:
    """The query if the v2 `metrics` data source accepts it; QueryRefused otherwise."""
    match = METRIC_QUERY.fullmatch(text.strip())
    if match is None:
        if re.search(r"[a-z_0-9]\s*\(", text.split("{", 1)[0]) or re.search(r"\}[^{}]*?[-+*/]", text) \
                or re.match(r"\s*[-(]", text):
            raise QueryRefused(FUNCTIONS_REFUSED)
        raise QueryRefused(f"Error parsing query: unable to parse {text[:80]!r}")
    rollup = _ROLLUP.search(match.group("suffixes") or "")
    return MetricQuery(
        text=text,
        as_count=".as_count()" in (match.group("suffixes") or ""),
        rollup_method=rollup.group("method") if rollup else None,
        rollup_seconds=int(rollup.group("seconds")) if rollup and rollup.group("seconds") else None,
    )


Values = dict[int, float | None]  # bucket start (ms) -> value
Operand = Values | float

_TOKEN = re.compile(r"\s*(?:(?P<num>\d+(?:\.\d+)?)|(?P<name>[A-Za-z_][A-Za-z0-9_]*)|(?P<op>[-+*/(),]))")
_FUNCS: dict[str, Callable[..., float | None]] = {
    "abs": abs,
    "log2": lambda v: math.log2(v) if v > 0 else None,
    "log10": lambda v: math.log10(v) if v > 0 else None,
    "clamp_min": lambda v, n: max(v, n),
    "clamp_max": lambda v, n: min(v, n),
}


def evaluate(formula: str, series: dict[str, Values | None], times: list[int]) -> Values | None:
    """The formula's value at each of `times`; None when a query it names has no data at all.

    `series` maps every query name of the request to its points (None: no data). A name the
    request does not define, or syntax Datadog would refuse, is QueryRefused.
    """
    tokens = [(m.lastgroup or "", m.group(m.lastgroup or "")) for m in _TOKEN.finditer(formula)]
    if "".join(v for _, v in tokens).replace(" ", "") != formula.replace(" ", ""):
        raise QueryRefused(f"Error parsing formula: {formula!r}")
    parser = _Parser(tokens, series, times)
    result = parser.expression()
    if parser.position != len(tokens):
        raise QueryRefused(f"Error parsing formula: unexpected {tokens[parser.position][1]!r} in {formula!r}")
    if parser.missing:
        return None
    if isinstance(result, float):
        return dict.fromkeys(times, result)
    return result


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]], series: dict[str, Values | None], times: list[int]) -> None:
        self.tokens, self.series, self.times = tokens, series, times
        self.position = 0
        self.missing = False

    def _peek(self) -> str | None:
        return self.tokens[self.position][1] if self.position < len(self.tokens) else None

    def _take(self, expected: str | None = None) -> tuple[str, str]:
        if self.position >= len(self.tokens):
            raise QueryRefused("Error parsing formula: unexpected end")
        token = self.tokens[self.position]
        if expected is not None and token[1] != expected:
            raise QueryRefused(f"Error parsing formula: expected {expected!r}, got {token[1]!r}")
        self.position += 1
        return token

    def expression(self) -> Operand:
        value = self.term()
        while self._peek() in ("+", "-"):
            op = self._take()[1]
            value = _combine(value, self.term(), (lambda a, b: a + b) if op == "+" else (lambda a, b: a - b))
        return value

    def term(self) -> Operand:
        value = self.unary()
        while self._peek() in ("*", "/"):
            op = self._take()[1]
            value = _combine(value, self.unary(), (lambda a, b: a * b) if op == "*" else _divide)
        return value

    def unary(self) -> Operand:
        if self._peek() == "-":
            self._take()
            return _combine(-1.0, self.unary(), lambda a, b: a * b)
        return self.primary()

    def primary(self) -> Operand:
        kind, value = self._take()
        if kind == "num":
            return float(value)
        if value == "(":
            inner = self.expression()
            self._take(")")
            return inner
        if kind != "name":
            raise QueryRefused(f"Error parsing formula: unexpected {value!r}")
        if self._peek() == "(":
            return self.call(value)
        if value not in self.series:
            raise QueryRefused(f"Formula references unknown query name {value!r}")
        points = self.series[value]
        if points is None:
            self.missing = True
            return {}
        return {t: points.get(t) for t in self.times}

    def call(self, function: str) -> Operand:
        self._take("(")
        args = [self.expression()]
        while self._peek() == ",":
            self._take()
            args.append(self.expression())
        self._take(")")
        if function == "default_zero":
            first = args[0]
            return {t: (v if v is not None else 0.0) for t, v in first.items()} if isinstance(first, dict) else first
        fn = _FUNCS.get(function)
        if fn is None:
            raise QueryRefused(f"simulator does not evaluate the formula function {function!r}")
        extra = [a for a in args[1:] if isinstance(a, float)]
        first = args[0]
        if isinstance(first, float):
            out = fn(first, *extra)
            return float(out) if out is not None else math.nan
        return {t: (fn(v, *extra) if v is not None else None) for t, v in first.items()}


def _divide(a: float, b: float) -> float | None:
    return a / b if b else None


def _combine(left: Operand, right: Operand, op: Callable[[float, float], float | None]) -> Operand:
    if isinstance(left, float) and isinstance(right, float):
        out = op(left, right)
        return out if out is not None else math.nan
    times = list(left) if isinstance(left, dict) else list(right) if isinstance(right, dict) else []
    result: Values = {}
    for t in times:
        a = left.get(t) if isinstance(left, dict) else left
        b = right.get(t) if isinstance(right, dict) else right
        result[t] = op(a, b) if a is not None and b is not None else None
    return result


# ---------------------------------------------------------------- filters and grouping

_FUNCTIONAL = re.compile(r"(?<![\w.:/-])(?:AND|OR|NOT|IN|and|or|not|in)(?![\w.:/-])")
_TAG_TERM = re.compile(r"!?[A-Za-z][A-Za-z0-9_.\-/]*:[^\s,()!]+")
_IN_TERM = re.compile(
    r"(?P<key>[A-Za-z][A-Za-z0-9_.\-/]*)\s+(?P<not>(?:NOT|not)\s+)?(?:IN|in)\s*\((?P<values>[^()]*)\)")
_OR_GROUP = re.compile(r"\((?P<inner>[^()]*)\)")


@dataclass(frozen=True)
class Scope:
    """What a metric query selects, as the simulator evaluates it.

    `required`: the `key:value` (or `!key:value`) terms every selected series carries; `key`: the
    tag of `by {key}` (None: not grouped); `allowed`: the values of `key` an `IN (...)`, an
    OR-group or a `key:value` term allows (None: any value).
    """

    head: str
    tail: str
    required: frozenset[str]
    key: str | None
    allowed: frozenset[str] | None


def parse_scope(text: str) -> Scope:
    """The scope of one metric query Datadog accepts; QueryRefused for what it refuses.

    Datadog's boolean filters (docs "Advanced filtering"): the symbolic `,` and `!` OR the
    functional `AND` `OR` `NOT` `IN` `NOT IN`, never both in one filter. The simulator evaluates
    conjunctions of tag terms, and `IN (...)` / `(k:a OR k:b)` on the `by {...}` tag only; other
    valid forms are refused with a message saying the simulator does not evaluate them.
    """
    match = METRIC_QUERY.fullmatch(text.strip())
    if match is None:
        raise QueryRefused(f"Error parsing query: unable to parse {text[:80]!r}")
    filters = match.group("filters").strip()
    by = [k.strip() for k in (match.group("by") or "").split(",") if k.strip()]
    if len(by) > 1:
        raise QueryRefused("simulator does not evaluate a grouping by more than one tag")
    key = by[0] if by else None
    head = f"{match.group('agg')}:{match.group('metric')}"
    tail = match.group("suffixes") or ""
    functional = bool(_FUNCTIONAL.search(filters))
    outside_lists = re.sub(r"(?:IN|in)\s*\([^()]*\)", "IN ()", filters)  # `IN (a, b)` lists values with commas
    if functional and ("," in outside_lists or "!" in outside_lists):
        raise QueryRefused(f"Error parsing query: the symbolic boolean syntax (! ,) cannot be used with "
                           f"AND, OR, NOT, IN: {filters[:80]!r}")
    required: set[str] = set()
    allowed: set[str] | None = None
    if filters in ("", "*"):
        pass
    elif not functional:
        for term in (t.strip() for t in filters.split(",")):
            if not _TAG_TERM.fullmatch(term):
                raise QueryRefused(f"Error parsing query: unable to parse the filter {term!r}")
            required.add(term)
    else:
        for conjunct in _conjuncts(filters):
            values = _values_of(conjunct, key)
            if values is not None:
                allowed = values if allowed is None else allowed & values
            elif conjunct.startswith(("NOT ", "not ")) and _TAG_TERM.fullmatch(conjunct[4:].strip()):
                required.add("!" + conjunct[4:].strip())
            elif _TAG_TERM.fullmatch(conjunct) and not conjunct.startswith("!"):
                required.add(conjunct)
            else:
                raise QueryRefused(f"Error parsing query: unable to parse the filter {conjunct!r}")
    if key is not None:
        pinned = {t.partition(":")[2] for t in required if t.partition(":")[0] == key}
        required -= {f"{key}:{v}" for v in pinned}
        if pinned:
            allowed = set(pinned) if allowed is None else allowed & pinned
    elif allowed is not None:
        raise QueryRefused("simulator does not evaluate IN or OR on a tag the query is not grouped by")
    return Scope(head=head, tail=tail, required=frozenset(required), key=key,
                 allowed=frozenset(allowed) if allowed is not None else None)


def _conjuncts(filters: str) -> list[str]:
    """`a AND (b OR c) AND d IN (x, y)` -> its conjuncts; unbalanced parentheses are refused."""
    parts: list[str] = []
    current: list[str] = []
    depth = 0
    for token in re.split(r"(\(|\)|\s+(?:AND|and)\s+)", filters):
        if token == "(":
            depth += 1
        elif token == ")":
            depth -= 1
            if depth < 0:
                raise QueryRefused(f"Error parsing query: unbalanced ')' in {filters[:80]!r}")
        elif depth == 0 and re.fullmatch(r"\s+(?:AND|and)\s+", token or ""):
            parts.append("".join(current).strip())
            current = []
            continue
        current.append(token or "")
    if depth:
        raise QueryRefused(f"Error parsing query: unbalanced '(' in {filters[:80]!r}")
    parts.append("".join(current).strip())
    if any(not p for p in parts):
        raise QueryRefused(f"Error parsing query: an empty term in {filters[:80]!r}")
    return parts


def _values_of(conjunct: str, key: str | None) -> set[str] | None:
    """The values `k IN (...)` or `(k:a OR k:b)` allows, when the conjunct is one of those (else None)."""
    listed = _IN_TERM.fullmatch(conjunct)
    if listed:
        values = {v.strip() for v in listed.group("values").split(",")}
        if "" in values:
            raise QueryRefused(f"Error parsing query: an empty value in {conjunct!r}")
        if listed.group("not") or listed.group("key") != key:
            raise QueryRefused(f"simulator does not evaluate {conjunct[:60]!r} (only IN on the grouped tag)")
        return values
    group = _OR_GROUP.fullmatch(conjunct)
    if group:
        terms = [t.strip() for t in re.split(r"\s+(?:OR|or)\s+", group.group("inner"))]
        keys = {t.partition(":")[0] for t in terms}
        if not all(_TAG_TERM.fullmatch(t) and not t.startswith("!") for t in terms) or keys != {key}:
            raise QueryRefused(f"simulator does not evaluate {conjunct[:60]!r} (only an OR of the grouped tag)")
        return {t.partition(":")[2] for t in terms}
    return None
