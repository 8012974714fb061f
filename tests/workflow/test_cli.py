"""The `guard` CLI's exit codes against the local rehearsal (the same boto3 calls it makes on AWS)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.workflow.conftest import HANG, SCENARIOS, guard

pytestmark = pytest.mark.workflow
# A whole run to SUCCEEDED (`guard status --wait`, exit 0) is checked on the happy path
# (test_batch_workflow.py), a rolled-back one (exit 3) on the regression path
# (test_failure_handling.py): the same end-to-end paths are not run twice.


def test_run_returns_once_the_mr_is_open_with_its_url_and_the_options_as_input(world_for: Any) -> None:
    # GIVEN a deployed batch machine (the local world's) and a reviewer who never merges
    world = world_for("default", human={"action": "ignore"})
    # WHEN CI runs `guard run` with the seed's options and without --wait
    code, out = guard("run", "--state-machine-arn", world.state_machine_arn, "--config",
                      str(world.scenario.config_path()), "--batch", "dev-1", "--target-version", "1.20.0",
                      "--soak-period", "30",
                      "--ensure-pdb", "--min-replicas", "1", "--max-unavailable", "1", "--enable-llm-analysis",
                      "--requested-by", "ci-pipeline-42")
    # THEN it exits 0 once the MR is open, printing its URL and what to do next
    assert code == 0, out
    mr = world.gitlab.merge_requests(world.scenario.gitlab_project)
    assert len(mr) == 1 and mr[0]["web_url"] in out and "guard monitor --batch dev-1" in out
    # AND the execution it started got the options as its input, and still waits for the merge
    arn = out.split("started ", 1)[1].split()[0]
    described = world.engine.client("stepfunctions").describe_execution(executionArn=arn)
    assert described["status"] == "RUNNING"
    assert json.loads(described["input"]) == {
        "batch": "dev-1", "target_version": "1.20.0", "soak_period_minutes": 30.0,
        "ensure_pdb": True, "min_replicas": 1, "max_unavailable": 1, "enable_llm_analysis": True,
        "requested_by": "ci-pipeline-42"}


def test_wait_that_times_out_says_how_to_resume_and_leaves_the_run_going(world_for: Any) -> None:
    # GIVEN a reviewer who never merges
    world = world_for("default", human={"action": "ignore"})
    # WHEN `guard run --wait` is given a short --timeout
    code, out = guard("run", "--state-machine-arn", world.state_machine_arn, "--batch", "dev-1",
                      "--target-version", "1.20.0", "--wait", "--timeout", "4")
    # THEN it exits 124 (not a verdict), says how to resume, and the run goes on
    assert code == 124, out
    assert "the run goes on" in out and "guard monitor --batch dev-1" in out
    arn = out.split("started ", 1)[1].split()[0]
    assert world.engine.client("stepfunctions").describe_execution(executionArn=arn)["status"] == "RUNNING"


@pytest.mark.parametrize("argv", [
    ["--batch", "no-such-batch", "--target-version", "1.20.0"],
    ["--batch", "dev-1", "--target-version", "1.18.0"],
])
def test_refused_input_exits_2(world_for: Any, argv: list[str]) -> None:
    world = world_for("default")
    code, out = guard("run", "--state-machine-arn", world.state_machine_arn, *argv, "--wait", "--timeout", HANG)
    assert code == 2, out


def test_local_run_that_fails_its_prechecks_exits_1() -> None:
    code, out = guard("run", "--local", "--scenario", str(SCENARIOS / "precheck-crashloop.yaml"),
                      "--batch", "test", "--target-version", "1.20.0")
    assert code == 1, out
    assert "PrecheckFailed" in out


def test_local_rollout_refused_for_a_missing_prerequisite_exits_1(world_for: Any) -> None:
    # GIVEN dev-1 alone, whose prerequisite `test` never ran at 1.20.0
    world = world_for("default", succeeded_before=[])
    code, out = guard("rollout", "--state-machine-arn", world.rollout_state_machine_arn, "--batches", "dev-1",
                      "--target-version", "1.20.0", "--wait", "--timeout", HANG)
    assert code == 1, out
    assert "PrerequisiteNotMet" in out


def test_unknown_state_machine_exits_2(world_for: Any) -> None:
    world = world_for("default")
    missing = world.state_machine_arn + "-nope"
    code, _ = guard("run", "--state-machine-arn", missing, "--batch", "dev-1", "--target-version", "1.20.0")
    assert code == 2


def test_rollout_without_wait_prints_the_execution_and_exits_0(world_for: Any) -> None:
    world = world_for("default")
    code, out = guard("rollout", "--state-machine-arn", world.rollout_state_machine_arn, "--batches", "dev-1",
                      "--target-version", "1.20.0", "--name", "ci-pipeline-42")
    assert code == 0 and out.strip().endswith(":ci-pipeline-42")
    sfn = world.engine.client("stepfunctions")
    started = json.loads(sfn.describe_execution(executionArn=out.split("started ", 1)[1].strip())["input"])
    assert started == {"target_version": "1.20.0", "batches": ["dev-1"]}


def test_local_calibrate_reads_the_rehearsal_datadog_and_prints_each_rule(capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN the default rehearsal world (dev-1: two clusters whose simulated metrics are healthy)
    # WHEN an operator calibrates dev-1 on a day of its history
    code = guard("calibrate", "--local", "--scenario", str(SCENARIOS / "default.yaml"), "--batch", "dev-1",
                 "--days", "1", "--soak", "20")[0]
    out = capsys.readouterr().out
    # THEN every rule has a false-rollback rate and, where a rollback rule had data, a threshold that holds 0.5%
    assert code == 0, out
    assert "batch dev-1: 2 cluster(s) (eks-dev-1, eks-dev-2)" in out
    assert "current 20 min ending 20 min later" in out
    rows = {line.split()[0]: line.split() for line in out.splitlines() if line.startswith(("latency", "request_count"))}
    assert rows["latency_increase_percent"][2:4] == ["0.00%", f"(0/{2 * 69})"]
    assert float(rows["request_count_max_decrease_percent"][-1]) < 50


def _where(world: Any) -> list[str]:
    return ["--state-machine-arn", world.state_machine_arn, "--config", str(world.scenario.config_path())]


def test_abort_stops_the_run_releases_the_lock_and_closes_its_mr(world_for: Any) -> None:
    # GIVEN a run waiting for a merge nobody does
    world = world_for("default", human={"action": "ignore"})
    code, out = guard("run", *_where(world), "--batch", "dev-1", "--target-version", "1.20.0")
    assert code == 0, out
    # WHEN the operator aborts the batch
    code, out = guard("abort", *_where(world), "--batch", "dev-1", "--reason", "wrong version")
    # THEN it exits 0 once the lock is released, and the MR is closed (nothing deployed unwatched)
    assert code == 0, out
    assert "lock released" in out
    assert [mr["state"] for mr in world.gitlab.merge_requests(world.scenario.gitlab_project)] == ["closed"]
    # AND a second abort finds nothing running: exit 2
    assert guard("abort", *_where(world), "--batch", "dev-1")[0] == 2


def test_retry_starts_a_run_that_failed_before_the_merge_again(world_for: Any) -> None:
    # GIVEN a run whose MR the reviewer closed (failed at the merge: nothing was deployed)
    world = world_for("mr-closed")
    code, out = guard("run", *_where(world), "--batch", "test", "--target-version", "1.20.0", "--wait")
    assert code == 1 and "MergeRequestClosed" in out, out
    # WHEN the operator retries the batch
    code, out = guard("retry", *_where(world), "--batch", "test", "--wait")
    # THEN a new run starts with the same input and opens a new MR (which this reviewer closes again: exit 1)
    assert code == 1, out
    assert "failed at merge" in out and "/merge_requests/2" in out
    assert len(world.gitlab.merge_requests(world.scenario.gitlab_project)) == 2


def test_retry_refuses_a_run_that_failed_after_the_merge(world_for: Any) -> None:
    # GIVEN a run rolled back after its validation failed (the change was merged and undone)
    world = world_for("latency-regression")
    code, out = guard("run", *_where(world), "--batch", "dev-1", "--target-version", "1.20.0",
                      "--soak-period", "20", "--wait")
    assert code == 3, out
    # WHEN the operator retries THEN it refuses with the reason and the safe stages, exit 2, nothing started
    code, out = guard("retry", *_where(world), "--batch", "dev-1")
    assert code == 2
    assert len(world.gitlab.merge_requests(world.scenario.gitlab_project)) == 2  # the upgrade and the rollback


def test_status_and_list_show_the_run_by_batch(world_for: Any) -> None:
    # GIVEN a run waiting for its merge
    world = world_for("default", human={"action": "ignore"})
    guard("run", *_where(world), "--batch", "dev-1", "--target-version", "1.20.0")
    # WHEN `guard status --batch` and `guard list` are read as JSON
    code, out = guard("status", *_where(world), "--batch", "dev-1", "-o", "json")
    status = json.loads(out)
    code_list, listed = guard("list", *_where(world), "-o", "json")
    batches = {b["batch"]: b for b in json.loads(listed)["batches"]}
    # THEN status shows the stage, the MR and each cluster; list shows the lock holder and the versions
    assert code == 0 and status["stage"] == "waiting_for_merge" and status["merge_request_url"]
    assert {c["cluster"]: c["precheck"] for c in status["clusters"]} == {"eks-dev-1": "pass", "eks-dev-2": "pass"}
    assert code_list == 0 and batches["dev-1"]["lock_holder"] == status["run_id"]
    assert {c["version"] for c in batches["dev-1"]["clusters"]} == {"1.19.3"}


def test_dry_run_prechecks_every_cluster_opens_no_mr_changes_nothing_and_releases_the_lock(world_for: Any) -> None:
    from guard.stores.registry import ClusterRegistry
    from guard.stores.state import StateStore

    # GIVEN two healthy dev-1 clusters on 1.19.3
    world = world_for("default")
    ddb = world.engine.resource("dynamodb")
    state = StateStore(ddb.Table(world.config.aws.dynamodb.state_table_name))
    registry = ClusterRegistry(ddb.Table(world.config.aws.dynamodb.table_name), world.config.tenant)
    # WHEN the operator dry-runs the upgrade to 1.20.0
    code, out = guard("run", *_where(world), "--batch", "dev-1", "--target-version", "1.20.0", "--dry-run")
    # THEN it exits 0, printing each cluster's precheck and that nothing changed
    assert code == 0, out
    assert "eks-dev-1: 1.19.3 → 1.20.0  precheck pass" in out and "eks-dev-2: 1.19.3 → 1.20.0  precheck pass" in out
    assert "dry run: 2/2 cluster(s) passed every precheck for 1.20.0; no MR was opened" in out
    # AND the execution succeeded as a dry run: no MR, the lock released, no batch result, the registry unchanged
    arn = out.split("started ", 1)[1].split()[0]
    described = world.engine.client("stepfunctions").describe_execution(executionArn=arn)
    assert described["status"] == "SUCCEEDED" and json.loads(described["input"])["dry_run"] is True
    assert json.loads(described["output"])["summary"]["prechecks"] == {"eks-dev-1": "passed", "eks-dev-2": "passed"}
    assert world.gitlab.merge_requests(world.scenario.gitlab_project) == []
    assert state.lock_holder("dev-1") is None
    assert state.get_batch_result("dev-1", "1.20.0") is None
    run = state.get_run(arn.rsplit(":", 1)[-1])
    assert (run.status, run.outcome, run.options.dry_run) == ("succeeded", "prechecked", True)
    assert {c: registry.get(c).current_istio_version for c in ("eks-dev-1", "eks-dev-2")} == {
        "eks-dev-1": "1.19.3", "eks-dev-2": "1.19.3"}
    # AND Slack was told it is a dry run, never that an upgrade started
    texts = json.dumps(world.slack.messages, ensure_ascii=False)
    assert "dry run" in texts and "upgrade started" not in texts
    # AND `guard list` shows the outcome; a real run may start at once (the lock is free)
    code, listed = guard("list", *_where(world), "-o", "json")
    assert {b["batch"]: b for b in json.loads(listed)["batches"]}["dev-1"]["last_outcome"] == "prechecked"


def test_dry_run_refused_by_its_prechecks_exits_1_with_the_reasons_and_opens_no_mr(world_for: Any) -> None:
    # GIVEN a cluster whose istiod crash-loops
    world = world_for("precheck-crashloop")
    # WHEN the operator dry-runs its upgrade
    code, out = guard("run", *_where(world), "--batch", "test", "--target-version", "1.20.0", "--dry-run")
    # THEN it exits 1, naming the failed precheck, and says nothing was changed
    assert code == 1, out
    assert "PrecheckFailed" in out and "precheck fail" in out
    assert "dry run: nothing was changed and no MR was opened" in out
    assert world.gitlab.merge_requests(world.scenario.gitlab_project) == []
    # AND the refused dry run left no batch result behind for prerequisites to read
    from guard.stores.state import StateStore

    state = StateStore(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.state_table_name))
    assert state.get_batch_result("test", "1.20.0") is None and state.lock_holder("test") is None
    # AND `guard retry` starts it again as it was: a dry run again (refused again), never a real upgrade
    code, again = guard("retry", *_where(world), "--batch", "test")
    assert code == 1 and "dry run: nothing was changed" in again, again
    arn = again.split("started ", 1)[1].split()[0]
    assert json.loads(world.engine.client("stepfunctions").describe_execution(executionArn=arn)["input"])["dry_run"]
    assert world.gitlab.merge_requests(world.scenario.gitlab_project) == []


def _soaking(world: Any, out: str) -> tuple[str, Any]:
    """(run id, state store) once the run `guard run` started is soaking."""
    from guard.stores.state import StateStore

    run_id = out.split("started ", 1)[1].split()[0].rsplit(":", 1)[-1]
    state = StateStore(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.state_table_name))
    world.wait_until(lambda: (state.soak(run_id) or None) and state.soak(run_id).started_at, what="the soak to start")
    return run_id, state


def test_monitor_soak_period_lengthens_a_running_soak_refuses_one_below_the_config_and_warns_when_too_late(
        world_for: Any, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN dev-1 (its config soaks 60 minutes) started with a 2-hour soak, now soaking
    world = world_for("default")
    code, out = guard("run", *_where(world), "--batch", "dev-1", "--target-version", "1.20.0", "--soak-period", "120")
    assert code == 0, out
    run_id, state = _soaking(world, out)
    # WHEN an operator asks for 10 minutes (below the config's 60) THEN it is refused with the reason: exit 2
    code, _ = guard("monitor", *_where(world), "--batch", "dev-1", "--soak-period", "10")
    refused = capsys.readouterr().err
    assert code == 2 and "loosens the tenant config" in refused and "allowed_overrides" in refused, refused
    assert state.soak(run_id).soak_seconds == 2 * 3600
    # WHEN they lengthen it to 3 hours and follow the run
    code, followed = guard("monitor", *_where(world), "--batch", "dev-1", "--soak-period", "180")
    # THEN monitor says so, shows the time left of the new length, and the run succeeds after soaking 3 hours
    assert code == 0, followed
    assert "soak lengthened to 3h 00m (was 2h 00m)" in followed
    assert any("of 3h 00m" in line for line in followed.splitlines() if "soaking:" in line), followed
    record = state.soak(run_id)
    assert record.soak_seconds == 3 * 3600
    assert 3 * 3600 <= (record.ended_at - record.started_at).total_seconds() <= 3 * 3600 + 300
    # AND asking again once it is over is a warning (too late), and monitor still exits with the run's code
    code, late = guard("monitor", *_where(world), "--batch", "dev-1", "--soak-period", "240")
    assert code == 0 and "too late" in late, late


def test_monitor_soak_period_shortens_a_running_soak_down_to_the_config(world_for: Any) -> None:
    # GIVEN dev-1 started with a 4-hour soak, now soaking
    world = world_for("default")
    code, out = guard("run", *_where(world), "--batch", "dev-1", "--target-version", "1.20.0", "--soak-period", "240")
    assert code == 0, out
    run_id, state = _soaking(world, out)
    # WHEN an operator shortens it to the config's 60 minutes
    code, followed = guard("monitor", *_where(world), "--batch", "dev-1", "--soak-period", "60")
    # THEN the soak ends an hour after it began (within one check), and the run succeeds
    assert code == 0 and "soak shortened to 1h 00m (was 4h 00m)" in followed, followed
    record = state.soak(run_id)
    assert 3600 <= (record.ended_at - record.started_at).total_seconds() <= 3600 + 300


def test_monitor_soak_period_before_the_soak_starts_sets_its_length_and_says_so(world_for: Any) -> None:
    from guard.stores.state import StateStore

    # GIVEN dev-1 started with its configured soak (60 minutes), its MR merged only an hour after it opened
    world = world_for("default", human={"action": "merge", "after_seconds": 3600})
    code, out = guard("run", *_where(world), "--batch", "dev-1", "--target-version", "1.20.0")
    assert code == 0, out
    run_id = out.split("started ", 1)[1].split()[0].rsplit(":", 1)[-1]
    # WHEN the seed's `guard monitor --soak-period 90` attaches before the soak began
    code, followed = guard("monitor", *_where(world), "--batch", "dev-1", "--soak-period", "90")
    # THEN it says the soak is set and has not started, follows it to success, and the soak lasted 90 minutes
    assert code == 0, followed
    assert "soak lengthened to 1h 30m (was 1h 00m); it has not started yet" in followed, followed
    state = StateStore(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.state_table_name))
    record = state.soak(run_id)
    assert record.soak_seconds == 90 * 60
    assert 90 * 60 <= (record.ended_at - record.started_at).total_seconds() <= 90 * 60 + 300
