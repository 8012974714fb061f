"""Splitting configured Datadog queries into the v2 API's metric queries and formulas."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from guard.config.models import DatadogConfig, TenantConfig
from guard.datadog_query import UnsplittableQuery, split
from pydantic import ValidationError

ERRORS = "sum:trace.http.request.errors{env:prod,cluster_name:eks-1}.as_count()"
HITS = "sum:trace.http.request.hits{env:prod,cluster_name:eks-1}.as_count()"


@pytest.mark.parametrize(
    ("text", "queries", "formula"),
    [
        (f"{ERRORS} / {HITS}", [ERRORS, HITS], "q0 / q1"),
        ("avg:istio.latency{cluster:c1}", ["avg:istio.latency{cluster:c1}"], "q0"),
        ("abs(avg:a{*} - avg:b{*})", ["avg:a{*}", "avg:b{*}"], "abs(q0 - q1)"),
        ("100 * sum:a{x:1}.as_count() / (sum:b{*}.as_count() + 1)",
         ["sum:a{x:1}.as_count()", "sum:b{*}.as_count()"], "100 * q0 / (q1 + 1)"),
        ("top(avg:a{*} by {host}, 10, 'mean', 'desc')", ["avg:a{*} by {host}"], "top(q0, 10, 'mean', 'desc')"),
        ("sum:a{*}.rollup(sum, 60).fill(zero)", ["sum:a{*}.rollup(sum, 60).fill(zero)"], "q0"),
        ("-avg:a{*}", ["avg:a{*}"], "-q0"),
    ],
)
def test_a_query_splits_into_metric_queries_and_a_formula(text: str, queries: list[str], formula: str) -> None:
    # GIVEN a configured query  WHEN it is split
    parts = split(text)
    # THEN each metric query stands alone and the formula names them in order
    assert parts.queries == queries
    assert parts.formula == formula


def test_names_can_be_chosen_so_several_queries_share_one_request() -> None:
    parts = split(f"{ERRORS} / {HITS}", lambda i: f"q{i + 3}")
    assert parts.formula == "q3 / q4"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("foo(avg:a{*})", "unknown function 'foo'"),
        ("avg:a{*} /", "ends where a query"),
        ("avg:a{*} 5", "expected an operator"),
        ("abs(avg:a{*}", "unbalanced '('"),
        ("avg:a{*})", "unbalanced ')'"),
        ("avg(last_5m):avg:a{*} > 1", "unknown function 'avg'"),
        ("42", "no metric query"),
        ("avg:a{*} + ()", "expected a query"),
    ],
)
def test_what_cannot_be_split_is_refused_saying_why(text: str, says: str) -> None:
    with pytest.raises(UnsplittableQuery, match=says.replace("(", r"\(").replace(")", r"\)")):
        split(text)


def test_config_refuses_a_query_guard_cannot_split_naming_it() -> None:
    # GIVEN a monitor-style query in the metrics queries
    # WHEN the config is loaded  THEN it is refused, naming the query and the reason
    with pytest.raises(ValidationError, match="query 'p95_monitor' is not a Datadog metric query"):
        DatadogConfig(queries={"p95_monitor": "avg(last_5m):avg:trace.latency{env:{environment}} > 2"})


def test_the_default_and_example_ratio_queries_load_and_split() -> None:
    # GIVEN the default queries and config/example.yaml (the seed's arithmetic queries)
    example = TenantConfig.model_validate(yaml.safe_load(Path("config/example.yaml").read_text()))
    for queries in (DatadogConfig().queries, example.datadog.queries):
        for name, text in queries.items():
            # WHEN split  THEN every ratio becomes two metric queries over "q0 / q1"
            parts = split(text.replace("{environment}", "prod").replace("{cluster_name}", "c1"))
            expected = "q0 / q1" if " / " in text else "q0"
            assert parts.formula == expected, name
