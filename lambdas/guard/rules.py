"""Validation thresholds as typed rules: which query, which direction, which limit.

One parser serves the config check (an unknown key or a rule for a query that does not
exist is refused with the accepted forms) and the judge (which applies the rules), so the
two can never disagree about what a key means.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict


class RuleKind(StrEnum):
    """What a rule limits: a relative change against the baseline, or an absolute level."""

    MAX_INCREASE_PERCENT = "max_increase_percent"
    MAX_DECREASE_PERCENT = "max_decrease_percent"
    MIN = "min"
    MAX = "max"
    MIN_REQUEST_COUNT = "min_request_count"

    @property
    def relative(self) -> bool:
        return self in (RuleKind.MAX_INCREASE_PERCENT, RuleKind.MAX_DECREASE_PERCENT)


# The query whose points are request counts: missing buckets in it mean no requests (Datadog
# reports nothing for a count that stayed at zero), and `min_request_count` sums it.
TRAFFIC_QUERY = "request_count"

# The seed's names for standard rules, and the canonical (query, kind) each one means.
ALIASES: dict[str, tuple[str, RuleKind]] = {
    "latency_increase_percent": ("latency_p95", RuleKind.MAX_INCREASE_PERCENT),
    "min_request_count": (TRAFFIC_QUERY, RuleKind.MIN_REQUEST_COUNT),
}

# Longest suffix first, so `foo_max_increase_percent` is never read as `<foo_max>_increase_percent`
# when both a `foo` and a `foo_max` query exist. `_increase_percent` is the earlier spelling.
_SUFFIXES: tuple[tuple[str, RuleKind], ...] = (
    ("_max_increase_percent", RuleKind.MAX_INCREASE_PERCENT),
    ("_max_decrease_percent", RuleKind.MAX_DECREASE_PERCENT),
    ("_increase_percent", RuleKind.MAX_INCREASE_PERCENT),
    ("_min", RuleKind.MIN),
    ("_max", RuleKind.MAX),
)

ACCEPTED_FORMS = ("<query>_max_increase_percent, <query>_max_decrease_percent, <query>_min, <query>_max "
                  "(also <query>_increase_percent), latency_increase_percent (latency_p95), "
                  "min_request_count (request_count)")


class Rule(BaseModel):
    """One threshold as written (`key`) and what it means."""

    model_config = ConfigDict(frozen=True)

    key: str
    query_name: str
    kind: RuleKind
    limit: float

    @property
    def name(self) -> str:
        """Canonical name, the same whichever accepted spelling the config used."""
        if self.kind == RuleKind.MIN_REQUEST_COUNT:
            return "min_request_count"
        return f"{self.query_name}_{self.kind.value}"


def parse_key(key: str, queries: set[str] | frozenset[str]) -> tuple[str, RuleKind]:
    """(query, kind) for a threshold key; ValueError naming the accepted forms otherwise."""
    if key in ALIASES:
        query, kind = ALIASES[key]
        if query not in queries:
            raise ValueError(f"rule for query '{query}', which datadog.queries does not define "
                             f"(defined: {', '.join(sorted(queries))})")
        return query, kind
    syntactic = None
    for suffix, kind in _SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            query = key[: -len(suffix)]
            if query in queries:
                return query, kind
            syntactic = syntactic or query
    if syntactic is not None:
        raise ValueError(f"not a known threshold: rule for query '{syntactic}', which datadog.queries does not "
                         f"define (defined: {', '.join(sorted(queries))}); accepted forms: {ACCEPTED_FORMS}")
    raise ValueError(f"not a known threshold; accepted forms: {ACCEPTED_FORMS}")


def parse_rules(thresholds: dict[str, float], queries: set[str] | frozenset[str]) -> list[Rule]:
    """Every threshold as a rule, sorted by canonical name; refuses unknown keys and duplicates.

    Raises ValueError prefixed with the offending key.
    """
    rules: dict[str, Rule] = {}
    for key, limit in thresholds.items():
        try:
            query, kind = parse_key(key, queries)
        except ValueError as e:
            raise ValueError(f"{key}: {e}") from None
        rule = Rule(key=key, query_name=query, kind=kind, limit=float(limit))
        if kind == RuleKind.MAX_DECREASE_PERCENT and not 0 < limit < 100:
            raise ValueError(f"{key}: a decrease limit must be between 0 and 100 percent, got {limit:g}")
        if kind.relative and limit < 0:
            raise ValueError(f"{key}: a percent limit cannot be negative, got {limit:g}")
        if rule.name in rules:
            raise ValueError(f"{key}: the same rule as {rules[rule.name].key} (both mean {rule.name}); keep one")
        rules[rule.name] = rule
    return [rules[name] for name in sorted(rules)]


def overlay(base: dict[str, float], override: dict[str, float], queries: set[str] | frozenset[str]) -> dict[str, float]:
    """`base` with `override` on top, rule by rule: a batch's `latency_increase_percent` replaces
    the tenant's `latency_p95_max_increase_percent` rather than sitting beside it."""
    overridden = {_canonical(k, queries) for k in override}
    merged = {k: v for k, v in base.items() if _canonical(k, queries) not in overridden}
    merged.update(override)
    return merged


def _canonical(key: str, queries: set[str] | frozenset[str]) -> str:
    try:
        query, kind = parse_key(key, queries)
    except ValueError:
        return key
    return Rule(key=key, query_name=query, kind=kind, limit=0).name
