"""The 5,000-cluster rollout benchmark's generated fleet (benchmarks/rollout.py) and the history
counting it shares with the fleet benchmark (sandbox/measure.py). No rehearsal runs here."""

from __future__ import annotations

import pytest
from guard.config.loader import load_config
from guard.rollout.dag import RolloutGraph

from benchmarks.rollout import SHARES, batch_sizes, rollout_scenario
from sandbox.measure import aws_history_events, breaks_limits


def test_5000_clusters_fill_the_seed_batches_growing_toward_prod() -> None:
    # GIVEN 5,000 clusters WHEN they are shared out over the seed's nine batches
    sizes = batch_sizes(5000)
    # THEN every cluster is in exactly one batch, each batch holds some, and the three prod batches after
    # the canary hold most of them
    assert sum(sizes.values()) == 5000 and list(sizes) == list(SHARES)
    assert min(sizes.values()) >= 1
    assert sizes["test"] < sizes["dev-1"] < sizes["dev-2"] < sizes["staging-us"] < sizes["prod-us-1"]
    assert sizes["prod-us-1"] + sizes["prod-us-2"] + sizes["prod-eu"] == 3900


@pytest.mark.parametrize("clusters", [9, 10, 50, 101, 999])
def test_any_fleet_of_at_least_nine_clusters_is_shared_out_exactly(clusters: int) -> None:
    sizes = batch_sizes(clusters)
    assert sum(sizes.values()) == clusters and min(sizes.values()) >= 1


def test_fewer_clusters_than_batches_is_refused_naming_both() -> None:
    with pytest.raises(ValueError, match="at least 9 clusters, not 8"):
        batch_sizes(8)


def test_the_generated_rollout_keeps_the_seed_dag() -> None:
    # GIVEN the generated scenario of 500 clusters
    scenario = rollout_scenario(500)
    config = load_config(scenario.config_path())
    batches = {b["name"]: b["clusters"] for b in scenario.config_overrides["batches"]}
    # THEN its batches are the example's, in the example's batch_order: seven levels, two pairs side by side
    graph = RolloutGraph.build(list(batches), config.batch_order, None)
    assert graph.waves() == [["test"], ["dev-1"], ["dev-2"], ["staging-us", "staging-eu"], ["prod-canary"],
                             ["prod-us-1"], ["prod-us-2", "prod-eu"]]
    # AND every generated cluster is in the fleet once, in its batch
    assert sorted(c for names in batches.values() for c in names) == sorted(s.cluster for s in scenario.fleet)
    assert scenario.rollout is not None and scenario.rollout.batches == "all"


def test_aws_counts_a_sync_child_and_a_map_iteration_as_documented() -> None:
    # GIVEN what moto recorded for one rollout iteration that claimed, ran a .sync child and recorded it
    types = {"ExecutionStarted": 1, "ExecutionSucceeded": 1, "MapStateEntered": 1, "MapIterationStarted": 1,
             "TaskStateEntered": 3, "TaskScheduled": 3, "TaskStarted": 3, "TaskSubmitted": 1, "TaskSucceeded": 3,
             "ChoiceStateEntered": 1, "PassStateEntered": 1}
    # THEN AWS's figure: execution 2, Map 4 + iteration 2, three tasks 3 x 5 + the child's TaskSubmitted, Choice 2,
    # Pass 2
    assert aws_history_events(types) == 2 + 4 + 2 + 15 + 1 + 2 + 2


def test_each_limit_broken_is_named() -> None:
    figures = {"history_events": 25_000, "aws_history_events": 24_000, "max_state_payload_bytes": 262_144,
               "longest_cause_chars": 32_769}
    broken = breaks_limits(figures)
    assert len(broken) == 3 and "25,000 history events" in broken[0]
    assert breaks_limits(figures | {"history_events": 100, "aws_history_events": 100, "max_state_payload_bytes": 10,
                                    "longest_cause_chars": 32_768}) == []
