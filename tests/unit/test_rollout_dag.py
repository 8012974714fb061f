"""The DAG planner: waves, the ready set, and what a failure blocks (pure, no I/O)."""

from __future__ import annotations

import pytest
from guard.errors import ConfigError
from guard.rollout.dag import RolloutGraph

SEED = ["test", "dev-1", "dev-2", "staging-us", "staging-eu", "prod-canary", "prod-us-1", "prod-us-2", "prod-eu"]
SEED_ORDER = {
    "dev-1": ["test"], "dev-2": ["dev-1"], "staging-us": ["dev-1", "dev-2"], "staging-eu": ["dev-1", "dev-2"],
    "prod-canary": ["staging-us", "staging-eu"], "prod-us-1": ["prod-canary"], "prod-us-2": ["prod-us-1"],
    "prod-eu": ["prod-us-1"],
}


def test_seed_dag_waves_run_independent_batches_together() -> None:
    # GIVEN the seed's nine-batch "Batch Dependencies" graph
    graph = RolloutGraph.build(SEED, SEED_ORDER)
    # WHEN it is planned THEN staging-us/staging-eu and prod-us-2/prod-eu share a wave
    assert graph.waves() == [["test"], ["dev-1"], ["dev-2"], ["staging-us", "staging-eu"], ["prod-canary"],
                             ["prod-us-1"], ["prod-us-2", "prod-eu"]]
    order = graph.order()
    assert sorted(order) == sorted(SEED)
    for batch, prereqs in SEED_ORDER.items():
        assert all(order.index(p) < order.index(batch) for p in prereqs)


def test_diamond_waits_for_both_sides() -> None:
    # GIVEN a diamond a -> (b, c) -> d
    graph = RolloutGraph.build("abcd", {"b": ["a"], "c": ["a"], "d": ["b", "c"]})
    # WHEN only b has succeeded THEN d is not ready; once c has too, it is
    assert graph.ready({"a": "succeeded", "b": "succeeded"}) == ["c"]
    assert graph.ready({"a": "succeeded", "b": "succeeded", "c": "running"}) == []
    assert graph.ready({"a": "succeeded", "b": "succeeded", "c": "succeeded"}) == ["d"]
    assert graph.waves() == [["a"], ["b", "c"], ["d"]]


def test_fan_out_makes_every_child_ready_at_once() -> None:
    # GIVEN one root with five independent children
    children = [f"c{i}" for i in range(5)]
    graph = RolloutGraph.build(["root", *children], {c: ["root"] for c in children})
    # WHEN the root succeeds THEN all five are ready together, in config order
    assert graph.ready({}) == ["root"]
    assert graph.ready({"root": "succeeded"}) == children


def test_unrelated_batches_are_all_ready_at_the_start() -> None:
    graph = RolloutGraph.build(["x", "y", "z"], {})
    assert graph.waves() == [["x", "y", "z"]]
    assert graph.ready({}) == ["x", "y", "z"]


def test_a_failure_blocks_its_dependents_transitively_and_nothing_else() -> None:
    # GIVEN the seed graph where the canary failed
    graph = RolloutGraph.build(SEED, SEED_ORDER)
    done = {b: "succeeded" for b in SEED[:5]} | {"prod-canary": "failed"}
    # WHEN asked what can never run THEN everything downstream of the canary, each naming the canary
    assert graph.blocked_by(done) == {"prod-us-1": "prod-canary", "prod-us-2": "prod-canary",
                                      "prod-eu": "prod-canary"}
    assert graph.ready(done) == []


def test_a_failed_branch_leaves_the_independent_branch_runnable() -> None:
    # GIVEN a -> b -> c and a -> d, where b was rolled back
    graph = RolloutGraph.build("abcd", {"b": ["a"], "c": ["b"], "d": ["a"]})
    done = {"a": "succeeded", "b": "rolled_back"}
    # THEN c is blocked by b, while d is ready
    assert graph.blocked_by(done) == {"c": "b"}
    assert graph.ready(done) == ["d"]


def test_a_subset_keeps_only_its_own_edges_and_reports_external_prerequisites() -> None:
    # GIVEN a rollout of the production batches only
    graph = RolloutGraph.build(SEED, SEED_ORDER, ["prod-eu", "prod-us-1", "prod-us-2", "prod-canary"])
    # THEN the order follows the config, the canary's staging prerequisites are external
    assert graph.batches == ("prod-canary", "prod-us-1", "prod-us-2", "prod-eu")
    assert graph.external == {"prod-canary": ("staging-us", "staging-eu")}
    assert graph.waves() == [["prod-canary"], ["prod-us-1"], ["prod-us-2", "prod-eu"]]


@pytest.mark.parametrize("order, selected, message", [
    ({"a": ["b"], "b": ["c"], "c": ["a"]}, None, "dependency cycle"),
    ({"a": ["a"]}, None, "cannot depend on itself"),
    ({"a": ["nope"]}, None, "unknown batch 'nope'"),
    ({"nope": ["a"]}, None, "unknown batch 'nope'"),
    ({}, ["a", "zz"], "unknown batch(es) zz"),
    ({}, [], "at least one batch"),
])
def test_cycles_and_unknown_names_are_refused(order: dict[str, list[str]], selected: list[str] | None,
                                              message: str) -> None:
    with pytest.raises(ConfigError) as error:
        RolloutGraph.build("abc", order, selected)
    assert message in str(error.value)
