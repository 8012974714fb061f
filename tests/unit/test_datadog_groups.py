"""Grouping one GUARD query over many clusters (guard.datadog_groups): pure, no network."""

from __future__ import annotations

import pytest
from guard.datadog_groups import group_queries

RATE = ("sum:errors{env:prod,cluster_name:CLUSTER}.as_count() / "
        "sum:hits{env:prod,cluster_name:CLUSTER}.as_count()")


def _rendered(template: str, clusters: list[str]) -> dict[str, str]:
    return {f"id-{c}": template.replace("CLUSTER", c) for c in clusters}


def test_a_ratio_over_many_clusters_becomes_one_grouped_ratio() -> None:
    # GIVEN the error-rate query rendered for three clusters
    per_cluster = _rendered(RATE, ["eks-1", "eks-2", "eks-3"])
    # WHEN it is grouped
    grouped, alone = group_queries("error_rate", per_cluster)
    # THEN one query asks every cluster by its tag, in Datadog's functional filter syntax
    assert alone == []
    assert [g.text for g in grouped] == [
        "sum:errors{env:prod AND cluster_name IN (eks-1,eks-2,eks-3)} by {cluster_name}.as_count() / "
        "sum:hits{env:prod AND cluster_name IN (eks-1,eks-2,eks-3)} by {cluster_name}.as_count()"]
    assert grouped[0].key == "cluster_name"
    assert grouped[0].clusters == {"eks-1": "id-eks-1", "eks-2": "id-eks-2", "eks-3": "id-eks-3"}


def test_groups_hold_at_most_max_groups_clusters_and_max_chars() -> None:
    # GIVEN 7 clusters
    per_cluster = _rendered("avg:latency{cluster:CLUSTER}", [f"c{i}" for i in range(7)])
    # WHEN at most 3 clusters go in a query
    grouped, _ = group_queries("latency", per_cluster, max_groups=3)
    # THEN 3 queries of 3, 3 and 1 clusters
    assert [len(g.clusters) for g in grouped] == [3, 3, 1]
    # AND WHEN the query may hold only ~2 cluster names, each metric query stays inside the limit
    fixed = len("avg:latency{cluster IN ()} by {cluster}")
    grouped, _ = group_queries("latency", per_cluster, max_chars=fixed + len("c0,c1"))
    assert all(len(g.text) <= fixed + len("c0,c1") for g in grouped)
    assert sorted(c for g in grouped for c in g.clusters.values()) == sorted(per_cluster)


@pytest.mark.parametrize("template", [
    "avg:latency{cluster:CLUSTER*}",                   # a wildcard cluster selector
    "avg:latency{!cluster:CLUSTER}",                   # a negated one
    "avg:latency{cluster:CLUSTER} by {pod}",           # already grouped: several series
    "avg:latency{env:prod AND cluster:CLUSTER}",       # not the plain tag syntax
    "avg:latency{*} + avg:other{cluster:CLUSTER}",     # one metric query not about the cluster
])
def test_a_query_that_cannot_be_grouped_stays_per_cluster(template: str) -> None:
    # GIVEN a template whose cluster selector is not a plain tag filter of every metric query
    per_cluster = _rendered(template, ["eks-1", "eks-2"])
    # WHEN grouped
    grouped, alone = group_queries("q", per_cluster)
    # THEN every cluster is asked alone, as before
    assert grouped == []
    assert alone == list(per_cluster)


def test_clusters_of_other_scopes_group_apart_and_shared_tag_values_stay_alone() -> None:
    # GIVEN two prod clusters, two staging clusters and a cluster whose tag value another one has
    per_cluster = {
        "a": "avg:lat{env:prod,cluster:a}", "b": "avg:lat{env:prod,cluster:b}",
        "c": "avg:lat{env:staging,cluster:c}", "d": "avg:lat{env:staging,cluster:d}",
        "e": "avg:lat{env:prod,cluster:a}",
    }
    # WHEN grouped
    grouped, alone = group_queries("lat", per_cluster)
    # THEN prod and staging are asked apart, and the ambiguous cluster alone (its group would name two)
    assert sorted(g.text for g in grouped) == ["avg:lat{env:prod AND cluster IN (a,b)} by {cluster}",
                                               "avg:lat{env:staging AND cluster IN (c,d)} by {cluster}"]
    assert alone == ["e"]


def test_one_cluster_is_asked_alone() -> None:
    grouped, alone = group_queries("lat", {"a": "avg:lat{cluster:a}"})
    assert (grouped, alone) == ([], ["a"])
