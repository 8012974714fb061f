"""One Datadog query for many clusters: the clusters' rendered queries merged, split again by the cluster tag.

A GUARD query rendered for one cluster names it with one plain tag filter, e.g.
`sum:hits{env:prod,cluster_name:eks-1}.as_count()`. For the clusters of a chunk the same query
differs only in that tag's value, so it can be asked once:
`sum:hits{env:prod AND cluster_name IN (eks-1,eks-2)} by {cluster_name}.as_count()`. Datadog answers
one series per group, `group_tags: ["cluster_name:eks-1"]` (docs "Advanced filtering": `IN` and `AND`;
the symbolic `,` and `!` cannot be mixed with `AND`/`OR`/`NOT`/`IN` in one filter, so the common
filters are joined with `AND`). A cluster whose group is missing from the answer had no data.

A query is grouped only when it is plainly safe: every metric query of it names the cluster with the
same `key:value` filter, the other filters are plain `key:value` terms shared by the clusters, and no
`by {...}` is there already. Anything else (a wildcard or negated cluster filter, a template whose
cluster selector is not a plain tag, two clusters with one tag value) stays on the per-cluster path.

Datadog publishes no length limit for a v2 metric query (the body is JSON, not a URL; the v1 GET
`/api/v1/query` broke near 7,600 escaped characters of URL, datadog-agent PR 4715). GUARD keeps each
grouped metric query under `MAX_QUERY_CHARS` and `MAX_GROUPS` clusters, well inside that.
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from pydantic import BaseModel

from guard.datadog_query import UnsplittableQuery, split

MAX_QUERY_CHARS = 4_000  # per metric query of a grouped request
MAX_GROUPS = 50          # clusters per grouped query

# `<aggregation>:<metric>{<filters>}<suffixes>`, no grouping (a GUARD query aggregates to one series).
_PLAIN = re.compile(
    r"(?P<head>[a-z][a-z0-9]*:[A-Za-z][A-Za-z0-9_.]*)\{(?P<filters>[^{}]*)\}(?P<tail>(?:\.[a-z_]+\([^()]*\))*)")
_TERM = re.compile(r"(?P<key>[A-Za-z][A-Za-z0-9_.\-/]*):(?P<value>[A-Za-z0-9_.:/\-*]+)")
_VALUE = re.compile(r"[A-Za-z0-9_.:/\-]+")  # a cluster's tag value: no wildcard


class GroupedQuery(BaseModel):
    """One GUARD query asked for many clusters at once, and which group is which cluster."""

    name: str                 # the GUARD query name
    text: str                 # every metric query of it filtered to the clusters and `by {key}`
    key: str                  # the tag key whose value names a cluster (e.g. cluster_name)
    clusters: dict[str, str]  # tag value -> cluster id


class _Shape(BaseModel):
    """One cluster's query with its cluster filter taken out: clusters of one shape group together."""

    formula: str
    parts: tuple[tuple[str, tuple[str, ...], str], ...]  # (head, other filters, tail) per metric query
    value: str


def group_queries(name: str, per_cluster: dict[str, str], *, max_groups: int = MAX_GROUPS,
                  max_chars: int = MAX_QUERY_CHARS) -> tuple[list[GroupedQuery], list[str]]:
    """Query `name` rendered per cluster -> grouped queries, and the clusters that must be asked alone.

    Clusters are grouped when at least two share a shape; each grouped query holds at most
    `max_groups` clusters and each of its metric queries at most `max_chars` characters.
    """
    if max_groups < 1:
        raise ValueError(f"max_groups must be at least 1, not {max_groups}")
    key = _cluster_key(per_cluster)
    if key is None:
        return [], list(per_cluster)
    shapes: dict[tuple[str, tuple[tuple[str, tuple[str, ...], str], ...]], dict[str, str]] = {}
    alone: list[str] = []
    for cluster_id, text in per_cluster.items():
        shape = _shape(text, key)
        members = shapes.setdefault((shape.formula, shape.parts), {}) if shape else None
        if shape is None or members is None or shape.value in members:
            alone.append(cluster_id)  # ungroupable, or a tag value two clusters share: ambiguous
            continue
        members[shape.value] = cluster_id
    grouped: list[GroupedQuery] = []
    for (formula, parts), members in shapes.items():
        if len(members) < 2:
            alone += members.values()
            continue
        for values in _packs(list(members), parts, key, max_groups, max_chars):
            text = _render(formula, parts, key, values)
            grouped.append(GroupedQuery(name=name, text=text, key=key, clusters={v: members[v] for v in values}))
    return grouped, [c for c in per_cluster if c in set(alone)]


def _cluster_key(per_cluster: dict[str, str]) -> str | None:
    """The tag key whose value differs between every two clusters (cluster_name, cluster, ...)."""
    if len(per_cluster) < 2:
        return None
    candidates: dict[str, set[str]] | None = None
    for text in per_cluster.values():
        terms = _plain_terms(text)
        if terms is None:
            return None
        keys: dict[str, set[str]] = {}
        for key, value in terms:
            keys.setdefault(key, set()).add(value)
        one_value = {k: v for k, v in keys.items() if len(v) == 1 and _VALUE.fullmatch(next(iter(v)))}
        if candidates is None:
            candidates = {k: set(v) for k, v in one_value.items()}
        else:
            candidates = {k: candidates[k] | one_value[k] for k in candidates if k in one_value}
    if not candidates:
        return None
    key, values = max(candidates.items(), key=lambda kv: (len(kv[1]), kv[0]))
    return key if len(values) > 1 else None


def _plain_terms(text: str) -> list[tuple[str, str]] | None:
    """Every `key:value` filter of every metric query of `text`; None when one is not a plain term."""
    try:
        queries = split(text).queries
    except UnsplittableQuery:
        return None
    terms: list[tuple[str, str]] = []
    for query in queries:
        match = _PLAIN.fullmatch(query)
        if match is None:
            return None
        for term in match.group("filters").split(","):
            plain = _TERM.fullmatch(term.strip())
            if plain is None:
                return None
            terms.append((plain.group("key"), plain.group("value")))
    return terms


def _shape(text: str, key: str) -> _Shape | None:
    """`text` as a shape and its cluster value, if every metric query names the cluster by `key` alike."""
    try:
        parts = split(text)
    except UnsplittableQuery:
        return None
    shaped: list[tuple[str, tuple[str, ...], str]] = []
    values: set[str] = set()
    for query in parts.queries:
        match = _PLAIN.fullmatch(query)
        if match is None:
            return None
        others: list[str] = []
        for term in (t.strip() for t in match.group("filters").split(",")):
            plain = _TERM.fullmatch(term)
            if plain is None:
                return None
            if plain.group("key") == key:
                values.add(plain.group("value"))
            else:
                others.append(term)
        shaped.append((match.group("head"), tuple(others), match.group("tail")))
    if len(values) != 1:
        return None  # a metric query without the cluster's filter, or two values of it
    value = values.pop()
    return _Shape(formula=parts.formula, parts=tuple(shaped), value=value) if _VALUE.fullmatch(value) else None


def _packs(values: list[str], parts: Iterable[tuple[str, tuple[str, ...], str]], key: str, max_groups: int,
           max_chars: int) -> list[list[str]]:
    """`values` cut into packs of at most `max_groups` whose longest metric query fits `max_chars`."""
    fixed = max(len(_metric(head, others, tail, key, [])) for head, others, tail in parts)
    packs: list[list[str]] = [[]]
    length = fixed
    for value in values:
        added = len(value) + (1 if packs[-1] else 0)
        if packs[-1] and (len(packs[-1]) >= max_groups or length + added > max_chars):
            packs.append([])
            length, added = fixed, len(value)
        if fixed + len(value) > max_chars:
            raise ValueError(f"a grouped query of one cluster ({value!r}) is longer than {max_chars} characters")
        packs[-1].append(value)
        length += added
    return packs


def _metric(head: str, others: tuple[str, ...], tail: str, key: str, values: list[str]) -> str:
    filters = " AND ".join([*others, f"{key} IN ({','.join(values)})"])
    return f"{head}{{{filters}}} by {{{key}}}{tail}"


def _render(formula: str, parts: tuple[tuple[str, tuple[str, ...], str], ...], key: str, values: list[str]) -> str:
    """The formula with each of its variables (q0, q1, ...) replaced by its grouped metric query."""
    metrics = [_metric(head, others, tail, key, values) for head, others, tail in parts]
    return re.sub(r"\bq(\d+)\b", lambda m: metrics[int(m.group(1))], formula)
