"""The rollout tasks against moto DynamoDB: planning, claiming, recording, skips, halts, windows,
and concurrent updates of the rollout record."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest
from guard.config import load_config
from guard.config.loader import parse_config
from guard.errors import ChangeWindowClosed, InvalidInput, PrerequisiteNotMet, TransientError, UnknownBatch
from guard.rollout.service import RolloutService, child_name, parse_rollout_input, rollout_cause
from guard.services.plan import BatchPlanner
from guard.stores.registry import ClusterRegistry
from guard.stores.rollouts import RolloutStore
from guard.stores.state import StateStore

from tests.support.clock import FakeClock
from tests.unit.test_execution_input import EXAMPLE, cluster, request, succeeded, tables  # noqa: F401

SATURDAY = datetime(2025, 3, 29, 12, 0, tzinfo=UTC)
WEDNESDAY = datetime(2025, 4, 2, 10, 0, tzinfo=UTC)
FLEET = {"test": ["eks-test"], "dev-1": ["eks-dev-1", "eks-dev-2"], "dev-2": ["eks-dev-3", "eks-dev-4"],
         "staging-us": ["eks-staging-us-east-1", "eks-staging-us-west-2"], "staging-eu": ["eks-staging-eu-west-1"],
         "prod-canary": ["eks-prod-canary"], "prod-us-1": ["eks-prod-us-api", "eks-prod-us-web"],
         "prod-us-2": ["eks-prod-us-app1", "eks-prod-us-app2"], "prod-eu": ["eks-prod-eu-api", "eks-prod-eu-web"]}


def make(tables: Any, *, overrides: dict[str, Any] | None = None, now: datetime = WEDNESDAY) -> Any:  # noqa: F811
    registry_table, state_table = tables
    registry = ClusterRegistry(registry_table, "example")
    for batch, clusters in FLEET.items():
        for cluster_id in clusters:
            c = cluster(cluster_id, batch)
            c.environment = batch.split("-")[0] if batch != "test" else "test"
            registry.put(c)
    data = load_config(EXAMPLE).model_dump(by_alias=True)
    # These tests exercise what the overrides do, so the config allows them (refusals: test_input_overrides.py).
    data["execution"]["allowed_overrides"] = ["on_failure", "soak_period_minutes"]
    data.update(overrides or {})
    config = parse_config(data)
    state = StateStore(state_table)
    clock = FakeClock(now)
    return RolloutService(config, registry, state, RolloutStore(state_table), clock), state, config, clock


def outcome(batch: str, status: str = "succeeded", error: str | None = None,
            cause: str | None = None) -> dict[str, Any]:
    """A Map item as the rollout machine's BatchSucceeded / BatchFailed states shape it."""
    if status == "succeeded":
        return {"batch": batch, "status": "succeeded", "ExecutionArn": f"arn:child:{batch}",
                "StartDate": 1_700_000_000_000, "StopDate": 1_700_000_600_000}
    described = {"ExecutionArn": f"arn:child:{batch}", "Status": "FAILED", "Error": error, "Cause": cause,
                 "StartDate": 1_700_000_000_000, "StopDate": 1_700_000_600_000,
                 "Input": json.dumps({"batch": batch})}
    return {"batch": batch, "status": "failed", "error": "States.TaskFailed", "cause": json.dumps(described)}


def run_waves(service: RolloutService, rollout_id: str, fail: dict[str, tuple[str, str]]) -> list[list[str]]:
    """Drive the Map like the state machine does, every child taking the same time: each round,
    every unfinished item claims; the batches told `run` are one round's starts and are recorded
    together. `fail` maps batch -> (error, cause)."""
    items = service.map_items(service._rollouts.get(rollout_id))["items"]
    rounds = []
    for _ in range(20):
        started = [b for b in items if service.claim(rollout_id, b)["action"] == "run"]
        if not started:
            assert all(service.claim(rollout_id, b)["action"] == "skip" for b in items)
            return rounds
        rounds.append(started)
        for b in started:
            service.record_wave(rollout_id, [outcome(b, "failed", *fail[b]) if b in fail else outcome(b)])
    raise AssertionError("the rollout never finished")


def test_nine_batches_run_in_seven_waves_and_succeed(tables: Any) -> None:  # noqa: F811
    # GIVEN the example tenant (the seed's nine-batch DAG)
    service, _, _, _ = make(tables)
    record = service.start(parse_rollout_input({"target_version": "1.20.0"}), "r1", "arn:rollout:r1")
    # WHEN every child succeeds
    waves = run_waves(service, "r1", {})
    result = service.finish("r1")
    # THEN the waves follow batch_order, independent batches together, and every batch succeeded
    assert waves == record.waves == [["test"], ["dev-1"], ["dev-2"], ["staging-us", "staging-eu"], ["prod-canary"],
                                     ["prod-us-1"], ["prod-us-2", "prod-eu"]]
    assert result["status"] == "succeeded"
    assert [b["status"] for b in result["summary"]["batches"]] == ["succeeded"] * 9
    assert result["summary"]["batches"][0]["execution_arn"] == "arn:child:test"


def test_failed_canary_skips_production_naming_the_canary(tables: Any) -> None:  # noqa: F811
    service, _, _, _ = make(tables)
    service.start(parse_rollout_input({"target_version": "1.20.0"}), "r1", "arn:rollout:r1")
    # WHEN the canary's child execution fails validation
    waves = run_waves(service, "r1", {"prod-canary": ("ValidationFailed", "eks-prod-canary: latency_p95 +38%")})
    result = service.finish("r1")
    # THEN nothing after it ran; each production batch is skipped because of the canary
    assert waves[-1] == ["prod-canary"]
    by_batch = {b["batch"]: b for b in result["summary"]["batches"]}
    assert by_batch["prod-canary"]["status"] == "failed"
    assert by_batch["prod-canary"]["reason"] == "ValidationFailed: eks-prod-canary: latency_p95 +38%"
    for batch in ("prod-us-1", "prod-us-2", "prod-eu"):
        assert by_batch[batch] == {"batch": batch, "status": "skipped", "wave": None,
                                   "reason": "depends on 'prod-canary', which failed"}
    assert result["status"] == "failed" and result["error"] == "RolloutFailed"
    assert json.loads(result["cause"])["counts"] == {"succeeded": 5, "failed": 1, "skipped": 3}


def test_a_rolled_back_child_is_reported_rolled_back(tables: Any) -> None:  # noqa: F811
    service, _, _, _ = make(tables)
    service.start(parse_rollout_input({"target_version": "1.20.0", "batches": ["test", "dev-1"]}), "r1", "arn:r1")
    run_waves(service, "r1", {"test": ("RolledBack", "rolled back after latency_p95 +30%")})
    result = service.finish("r1")
    statuses = {b["batch"]: (b["status"], b.get("reason")) for b in result["summary"]["batches"]}
    assert statuses["test"][0] == "rolled_back"
    assert statuses["dev-1"] == ("skipped", "depends on 'test', which rolled back")
    assert result["error"] == "RolloutRolledBack"


def test_a_batch_running_beside_the_failure_finishes_under_either_policy(tables: Any) -> None:  # noqa: F811
    # GIVEN staging-us fails while staging-eu (same wave) succeeds; both feed the canary
    for policy, expected_canary in (("halt", "skipped"), ("continue_independent", "skipped")):
        service, _, _, _ = make(tables)
        rid = f"r-{policy}"
        service.start(parse_rollout_input({"target_version": "1.20.0", "on_failure": policy,
                                           "batches": ["test", "dev-1", "dev-2", "staging-us", "staging-eu",
                                                       "prod-canary"]}), rid, "arn")
        run_waves(service, rid, {"staging-us": ("PrecheckFailed", "eks-staging-us-east-1: node not ready")})
        by_batch = {b["batch"]: b for b in service.finish(rid)["summary"]["batches"]}
        assert by_batch["staging-eu"]["status"] == "succeeded"  # same wave: already running, it finishes
        assert by_batch["prod-canary"]["status"] == expected_canary


def test_continue_independent_runs_what_does_not_depend_on_the_failure(tables: Any) -> None:  # noqa: F811
    # GIVEN two branches after test: dev-1 -> staging-us and dev-2 -> staging-eu; dev-2 fails
    overrides = {"batch_order": {"dev-1": ["test"], "dev-2": ["test"], "staging-us": ["dev-1"],
                                 "staging-eu": ["dev-2"]}}
    for policy, staging_us in (("halt", "skipped"), ("continue_independent", "succeeded")):
        service, _, _, _ = make(tables, overrides=overrides)
        rid = f"x-{policy}"
        service.start(parse_rollout_input({"target_version": "1.20.0", "on_failure": policy,
                                           "batches": ["test", "dev-1", "dev-2", "staging-us", "staging-eu"]}),
                      rid, "arn")
        run_waves(service, rid, {"dev-2": ("MergeRequestClosed", "closed by bob")})
        by_batch = {b["batch"]: b for b in service.finish(rid)["summary"]["batches"]}
        # THEN the failed branch is skipped either way; the independent one runs only when allowed
        assert by_batch["staging-eu"]["reason"] == "depends on 'dev-2', which failed"
        assert by_batch["staging-us"]["status"] == staging_us
        if policy == "halt":
            assert "halted after 'dev-2' failed" in by_batch["staging-us"]["reason"]


def test_soak_override_per_batch_reaches_the_child_input(tables: Any) -> None:  # noqa: F811
    # GIVEN staging succeeded earlier (prod-canary's prerequisites, outside this rollout)
    service, state, _, _ = make(tables)
    for batch in ("staging-us", "staging-eu"):
        succeeded(state, batch)
    service.start(parse_rollout_input({"target_version": "1.20.0", "soak_period_minutes": 20,
                                       "batches": ["prod-canary"]}), "r1", "arn")
    # WHEN the canary's iteration claims it THEN the child input carries the rollout's soak, not the canary's 240
    assert service.claim("r1", "prod-canary") == {
        "action": "run", "wait_seconds": 0, "name": "r1--prod-canary",
        "input": {"batch": "prod-canary", "target_version": "1.20.0", "requested_by": "rollout r1",
                  "soak_period_minutes": 20}}


def test_the_canary_keeps_its_configured_soak_unless_overridden(tables: Any) -> None:  # noqa: F811
    service, state, _, _ = make(tables)
    for batch in ("staging-us", "staging-eu"):
        succeeded(state, batch)
    record = service.start(parse_rollout_input({"target_version": "1.20.0", "batches": ["prod-canary", "prod-eu",
                                                                                         "prod-us-1"]}), "r1", "arn")
    assert record.entries["prod-canary"].soak_period_minutes == 240
    assert record.entries["prod-eu"].soak_period_minutes is None  # the config's validation.soak_period_minutes


def test_external_prerequisite_that_has_not_succeeded_refuses_the_rollout(tables: Any) -> None:  # noqa: F811
    service, state, _, _ = make(tables)
    succeeded(state, "staging-us")
    with pytest.raises(PrerequisiteNotMet) as error:
        service.start(parse_rollout_input({"target_version": "1.20.0", "batches": ["prod-canary"]}), "r1", "arn")
    assert "'staging-eu'" in str(error.value) and "not part of this rollout" in str(error.value)
    assert RolloutStore(tables[1]).find("r1") is None


@pytest.mark.parametrize("raw, error, text", [
    ({"target_version": "1.20.0", "batches": ["nope"]}, UnknownBatch, "nope"),
    ({"target_version": "1.20"}, InvalidInput, "target_version"),
    ({"target_version": "1.20.0", "batches": []}, InvalidInput, "at least one batch"),
    ({"target_version": "1.20.0", "batch": "dev-1"}, InvalidInput, "batch: unknown key"),
    ({"target_version": "1.20.0", "batches": ["test"], "soak_overrides": {"dev-1": 5}}, InvalidInput, "dev-1"),
])
def test_bad_rollout_input_is_refused_naming_it(tables: Any, raw: dict[str, Any], error: type, text: str) -> None:  # noqa: F811
    service, _, _, _ = make(tables)
    with pytest.raises(error) as caught:
        service.start(parse_rollout_input(raw), "r1", "arn")
    assert text in str(caught.value)


def test_retried_tasks_land_in_the_same_place(tables: Any) -> None:  # noqa: F811
    service, _, _, _ = make(tables)
    first = service.start(parse_rollout_input({"target_version": "1.20.0"}), "r1", "arn")
    again = service.start(parse_rollout_input({"target_version": "1.20.0"}), "r1", "arn")
    assert first == again
    claimed = service.claim("r1", "test")
    assert claimed["action"] == "run"
    assert service.claim("r1", "test") == claimed  # Claim retried: the same child name and input
    service.record_wave("r1", [outcome("test")])
    service.record_wave("r1", [outcome("test", "failed", "X", "late duplicate")])  # a retried RecordBatch
    assert RolloutStore(tables[1]).get("r1").entries["test"].status == "succeeded"
    assert service.claim("r1", "test")["action"] == "skip"  # a finished batch is never started again
    assert service.finish("r1") == service.finish("r1")


def test_child_names_are_deterministic_and_valid() -> None:
    assert child_name("r1", "prod-eu") == "r1--prod-eu"
    long = child_name("x" * 80, "prod-canary")
    assert len(long) == 80 and long == child_name("x" * 80, "prod-canary")
    assert long != child_name("x" * 80, "prod-us-1")
    assert child_name("a:b c", "d") == "a-b-c--d"


# ---------------------------------------------------------------- change windows in a rollout and a batch
FREEZE = {"change_windows": {"on_deny": "wait", "deny": [
    {"environments": ["prod"], "from": "Fri 15:00", "to": "Mon 08:00", "timezone": "Europe/Berlin"}]}}


def test_a_waiting_rollout_holds_prod_until_the_window_ends(tables: Any) -> None:  # noqa: F811
    # GIVEN on_deny: wait and it is Saturday noon; staging has already succeeded
    service, state, _, clock = make(tables, overrides=FREEZE, now=SATURDAY)
    for batch in ("staging-us", "staging-eu"):
        succeeded(state, batch)
    service.start(parse_rollout_input({"target_version": "1.20.0", "batches": ["prod-canary"]}), "r1", "arn")
    # WHEN the canary's iteration claims it THEN it waits until Monday 08:00 Berlin (42 h), saying why
    claimed = service.claim("r1", "prod-canary")
    assert (claimed["action"], claimed["wait_seconds"]) == ("wait", 42 * 3600 + 1)
    assert "change window" in claimed["reason"]
    entry = RolloutStore(tables[1]).get("r1").entries["prod-canary"]
    assert entry.status == "pending" and "change window" in (entry.reason or "")
    # AND after the wait, the canary starts
    clock.set(datetime(2025, 3, 31, 6, 0, 1, tzinfo=UTC))
    assert service.claim("r1", "prod-canary")["action"] == "run"


def test_batch_plan_refuses_inside_a_window_and_changes_nothing(tables: Any) -> None:  # noqa: F811
    # GIVEN the weekend freeze on prod and a prod batch whose prerequisites succeeded
    _, state, config, _ = make(tables, overrides=FREEZE, now=SATURDAY)
    for batch in ("staging-us", "staging-eu"):
        succeeded(state, batch)
    registry = ClusterRegistry(tables[0], "example")
    planner = BatchPlanner(config, registry, state, FakeClock(SATURDAY))
    # WHEN a single-batch execution plans THEN it refuses naming the window; no lock, no run record
    with pytest.raises(ChangeWindowClosed) as error:
        planner.plan(request("prod-canary"), run_id="run-1", execution_arn="arn")
    assert "Fri 15:00 to Mon 08:00 Europe/Berlin" in str(error.value)
    assert state.lock_holder("prod-canary") is None and state.find_run("run-1") is None
    # AND on Wednesday it plans
    assert BatchPlanner(config, registry, state, FakeClock(WEDNESDAY)).plan(
        request("prod-canary"), run_id="run-2", execution_arn="arn").batch == "prod-canary"


# ---------------------------------------------------------------- a batch starts when its own prerequisites succeeded
SIDE_BY_SIDE = {"batch_order": {"dev-2": ["dev-1"]}, "rollout": {"on_failure": "halt", "poll_seconds": 60}}


def test_the_map_items_are_the_batches_in_topological_order(tables: Any) -> None:  # noqa: F811
    service, _, _, _ = make(tables)
    record = service.start(parse_rollout_input({"target_version": "1.20.0"}), "r1", "arn")
    assert service.map_items(record) == {
        "rollout_id": "r1", "max_concurrency": 3,
        "items": ["test", "dev-1", "dev-2", "staging-us", "staging-eu", "prod-canary", "prod-us-1", "prod-us-2",
                  "prod-eu"]}


def test_a_dependent_starts_before_an_unrelated_long_batch_ends(tables: Any) -> None:  # noqa: F811
    # GIVEN test (long) and dev-1 (quick) have no prerequisites; dev-2 depends only on dev-1
    service, _, _, clock = make(tables, overrides=SIDE_BY_SIDE)
    service.start(parse_rollout_input({"target_version": "1.20.0", "batches": ["test", "dev-1", "dev-2"]}),
                  "r1", "arn")
    assert service.claim("r1", "test")["action"] == "run"
    assert service.claim("r1", "dev-1")["action"] == "run"
    # WHEN dev-2's iteration claims while dev-1 runs THEN it waits rollout.poll_seconds
    assert service.claim("r1", "dev-2") == {"action": "wait", "wait_seconds": 60, "name": None, "input": None}
    # AND once dev-1 succeeded, dev-2 starts although test is still running
    clock.set(WEDNESDAY.replace(hour=11))
    service.record_wave("r1", [{"batch": "dev-1", "status": "succeeded", "ExecutionArn": "arn:child:dev-1"}])
    clock.set(WEDNESDAY.replace(hour=11, minute=1))
    assert service.claim("r1", "dev-2")["action"] == "run"
    record = RolloutStore(tables[1]).get("r1")
    assert (record.entries["test"].status, record.entries["dev-2"].status) == ("running", "running")
    clock.set(WEDNESDAY.replace(hour=15))
    service.record_wave("r1", [{"batch": "test", "status": "succeeded"}])
    service.record_wave("r1", [{"batch": "dev-2", "status": "succeeded"}])
    record = RolloutStore(tables[1]).get("r1")
    assert record.entries["dev-2"].started_at == WEDNESDAY.replace(hour=11, minute=1)
    assert record.entries["dev-2"].started_at < record.entries["test"].finished_at  # type: ignore[operator]
    assert service.finish("r1")["status"] == "succeeded"


def test_a_waiting_batch_is_skipped_when_its_prerequisite_fails_or_the_rollout_halts(tables: Any) -> None:  # noqa: F811
    # GIVEN dev-2 waits for dev-1; test runs beside them (on_failure: halt)
    service, _, _, _ = make(tables, overrides={**SIDE_BY_SIDE, "batch_order": {"dev-2": ["dev-1"], "staging-eu": []}})
    service.start(parse_rollout_input({"target_version": "1.20.0",
                                       "batches": ["test", "dev-1", "dev-2", "staging-eu"]}), "r1", "arn")
    for batch in ("test", "dev-1"):
        assert service.claim("r1", batch)["action"] == "run"
    assert service.claim("r1", "dev-2")["action"] == "wait"
    # WHEN dev-1 fails
    service.record_wave("r1", [outcome("dev-1", "failed", "PrecheckFailed", "node not ready")])
    # THEN dev-2's next claim skips it naming dev-1; staging-eu (independent, not started) is halted
    assert service.claim("r1", "dev-2")["action"] == "skip"
    assert service.claim("r1", "staging-eu")["action"] == "skip"
    # AND test, already running, still finishes and is recorded
    assert service.claim("r1", "test")["action"] == "run"
    service.record_wave("r1", [outcome("test")])
    by_batch = {b["batch"]: b for b in service.finish("r1")["summary"]["batches"]}
    assert by_batch["dev-2"]["reason"] == "depends on 'dev-1', which failed"
    assert by_batch["staging-eu"]["reason"] == "rollout halted after 'dev-1' failed (rollout.on_failure: halt)"
    assert by_batch["test"]["status"] == "succeeded"


def test_poll_seconds_defaults_to_fifteen_minutes() -> None:
    # A week-long rollout at a limit of 3 stays near half the 25,000-event history limit.
    assert load_config(EXAMPLE).rollout.poll_seconds == 900


# ---------------------------------------------------------------- optimistic concurrency on the rollout record
def test_two_racing_updates_both_land(tables: Any) -> None:  # noqa: F811
    # GIVEN a rollout record and two writers
    service, _, _, _ = make(tables)
    service.start(parse_rollout_input({"target_version": "1.20.0", "batches": ["test", "dev-1"]}), "r1", "arn")
    store = RolloutStore(tables[1])
    calls: list[str] = []

    def first(record: Any) -> str:
        calls.append("first")
        if len(calls) == 1:
            # WHEN the second writer reads, changes and writes between the first one's read and write
            store.update("r1", second)
        record.entries["test"].reason = "first was here"
        return "first done"

    def second(record: Any) -> None:
        calls.append("second")
        record.entries["dev-1"].reason = "second was here"

    record, result = store.update("r1", first)
    # THEN the first writer's conditional put failed, it read again and applied its change again
    assert calls == ["first", "second", "first"] and result == "first done"
    stored = store.get("r1")
    assert (stored.entries["test"].reason, stored.entries["dev-1"].reason) == ("first was here", "second was here")
    assert stored == record
    item = tables[1].get_item(Key={"pk": "ROLLOUT#r1", "sk": "META"})["Item"]
    assert item["version"] == 3  # put (1), second (2), first (3)


def test_an_update_that_always_loses_the_race_is_transient(tables: Any) -> None:  # noqa: F811
    service, _, _, _ = make(tables)
    service.start(parse_rollout_input({"target_version": "1.20.0", "batches": ["test"]}), "r1", "arn")
    store = RolloutStore(tables[1], attempts=3)
    other = RolloutStore(tables[1])
    seen = []

    def always_overtaken(record: Any) -> None:
        seen.append(1)
        other.update("r1", lambda r: setattr(r, "wave_count", r.wave_count + 1))
        record.entries["test"].reason = "never lands"

    with pytest.raises(TransientError):
        store.update("r1", always_overtaken)
    assert len(seen) == 3
    stored = store.get("r1")
    assert stored.wave_count == 3 and stored.entries["test"].reason is None


def test_an_unchanged_record_is_not_written(tables: Any) -> None:  # noqa: F811
    service, _, _, _ = make(tables)
    service.start(parse_rollout_input({"target_version": "1.20.0", "batches": ["test", "dev-1"]}), "r1", "arn")
    assert service.claim("r1", "test")["action"] == "run"
    version = tables[1].get_item(Key={"pk": "ROLLOUT#r1", "sk": "META"})["Item"]["version"]
    assert service.claim("r1", "dev-1")["action"] == "wait"  # nothing to change: no write
    assert tables[1].get_item(Key={"pk": "ROLLOUT#r1", "sk": "META"})["Item"]["version"] == version


@pytest.mark.parametrize(("raw", "expected"), [
    (["dev-1"], "rollout input must be a JSON object, got array"),
    ({"target_version": "\uff11.\uff12\uff10.\uff10"}, "ASCII digits"),
    ({"target_version": "1.20.0", "batches": ["b" * 200_000]}, "String should have at most 128 characters"),
    ({"target_version": "1.20.0", "requested_by": "r" * 300}, "requested_by: String should have at most 256"),
])
def test_a_bad_rollout_input_names_the_problem_in_a_short_message(raw, expected):
    # GIVEN a rollout input that is not an object, spells its version in full-width digits, or is huge
    with pytest.raises(InvalidInput) as caught:
        parse_rollout_input(raw)
    # THEN the refusal names the problem without copying the value
    assert expected in str(caught.value)
    assert len(str(caught.value)) < 1_000


def test_the_cause_of_a_rollout_of_many_batches_is_a_digest_within_the_limit() -> None:
    # GIVEN the summary of a failed rollout of 400 batches: 390 succeeded, 10 failed with long reasons
    arn = "arn:aws:states:us-east-1:123456789012:execution:guard-example-upgrade-batch:r1"
    batches = [{"batch": f"b-{i:03d}", "status": "succeeded", "wave": i + 1, "execution_arn": f"{arn}--b-{i:03d}"}
               for i in range(390)]
    batches += [{"batch": f"f-{i}", "status": "failed", "wave": 391, "reason": "ValidationFailed: " + "x" * 600}
                for i in range(10)]
    summary = {"rollout_id": "r1", "target_version": "1.20.0", "status": "failed", "on_failure": "continue_independent",
               "counts": {"succeeded": 390, "failed": 10}, "batches": batches}
    assert len(json.dumps(summary)) > 32_768
    # WHEN it becomes the execution's cause
    cause = rollout_cause(summary)
    # THEN it fits Step Functions' limit, is still the summary's JSON with every count, lists the failed
    # batches first (reasons cut), and says how many batches it left out and where they all are
    assert len(cause) <= 30_000
    digest = json.loads(cause)
    assert digest["counts"] == {"succeeded": 390, "failed": 10} and digest["status"] == "failed"
    assert [b["batch"] for b in digest["batches"][:10]] == [f"f-{i}" for i in range(10)]
    assert all(len(b["reason"]) == 300 for b in digest["batches"][:10])
    assert digest["batches_left_out"] == 400 - len(digest["batches"]) > 0
    assert digest["see"] == "guard status r1 lists every batch"
    # AND a summary that fits is the cause as it is
    small = {**summary, "batches": batches[:3], "counts": {"succeeded": 3}}
    assert json.loads(rollout_cause(small)) == small
