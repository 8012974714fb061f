"""statemachines/build.py: the committed ASL (and docs section) is what the builder writes, and the
error names it matches are the ones the code raises."""

import inspect
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from guard import errors

from statemachines import build

ROOT = Path(__file__).resolve().parents[2]
AWS_ERROR_PREFIXES = ("States.", "Lambda.", "StepFunctions.")


def _error_names(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        yield from node.get("ErrorEquals", [])
        for value in node.values():
            yield from _error_names(value)
    elif isinstance(node, list):
        for value in node:
            yield from _error_names(value)


def _retries(node: Any) -> Iterator[list[Any]]:
    if isinstance(node, dict):
        if "Retry" in node:
            yield node["Retry"]
        for value in node.values():
            yield from _retries(value)


@pytest.mark.parametrize("path", sorted(build.outputs(), key=str), ids=lambda p: p.name)
def test_committed_file_is_what_the_builder_writes(path: Path) -> None:
    # GIVEN the builder's output, made in memory
    wanted = build.outputs()[path]

    # THEN the committed file is the same, byte for byte
    assert path.read_text() == wanted, (
        f"{path.relative_to(ROOT)} is stale: run `python statemachines/build.py` and commit the result"
    )


@pytest.mark.parametrize("name", sorted(build.MACHINES))
def test_every_error_a_machine_matches_is_raised_on_purpose_or_aws_defined(name: str) -> None:
    # GIVEN the committed ASL
    machine = json.loads((ROOT / "statemachines" / f"{name}.asl.json").read_text())
    ours = {n for n, cls in inspect.getmembers(errors, inspect.isclass) if issubclass(cls, errors.GuardError)}

    # THEN every Retry/Catch name is AWS's own or a class of guard.errors
    unknown = {n for n in _error_names(machine) if not n.startswith(AWS_ERROR_PREFIXES)} - ours
    assert not unknown, f"not classes of guard.errors: {sorted(unknown)}"


@pytest.mark.parametrize("name", sorted(build.MACHINES))
def test_every_retry_is_one_of_the_named_policies(name: str) -> None:
    # GIVEN the generated machine
    machine = build.MACHINES[name]()
    policies = [build.RETRY, build.RETRY_QUICK, build.RETRY_RECORD, build.RETRY_START_CHILD]

    # THEN no task carries a Retry of its own making
    assert all(retry in policies for retry in _retries(machine))


def test_every_poll_waits_between_checks_and_carries_its_deadline() -> None:
    # GIVEN the batch machine's three polls (Flux sync, sidecar restarts, rollback verify)
    states = build.upgrade_batch()["States"]
    for start, check, done, wait in [("StartFluxWait", "CheckFluxSync", "FluxSynced", "WaitForFlux"),
                                     ("StartSidecarRestarts", "RestartSidecars", "SidecarsDone", "WaitForSidecars"),
                                     ("StartRollbackVerify", "VerifyRollback", "RollbackVerified", "WaitForRollback")]:
        # THEN each is start -> check -> done? -> wait -> check, the deadline passed back in each time
        key = states[start]["ResultPath"]
        assert states[start]["Result"]["deadline"] is None and states[start]["Next"] == check
        assert states[check]["Parameters"]["Payload"]["deadline.$"] == f"{key}.deadline"
        assert states[check]["ResultPath"] == key and states[check]["Next"] == done
        assert states[done]["Default"] == wait
        assert states[wait] == {"Type": "Wait", "SecondsPath": "$.plan.flux_poll_seconds", "Next": check}


def test_no_state_iterates_over_clusters_every_per_cluster_stage_over_chunks() -> None:
    # GIVEN the batch machine's Maps
    states = build.upgrade_batch()["States"]
    maps = {name: state for name, state in states.items() if state["Type"] == "Map"}
    # THEN they are Prechecks and Validate, each over the plan's chunk numbers at the chunk concurrency
    assert sorted(maps) == ["Prechecks", "Validate"]
    for name, item in [("Prechecks", "PrecheckChunk"), ("Validate", "ValidateChunk")]:
        state = maps[name]
        assert (state["ItemsPath"], state["MaxConcurrencyPath"]) == ("$.plan.chunks", "$.plan.max_concurrent_chunks")
        assert state["ItemSelector"] == {"run_id.$": "$.plan.run_id", "chunk.$": "$$.Map.Item.Value"}
        # AND each iteration is one task given the run and the chunk number only, its result dropped
        task = state["ItemProcessor"]["States"][item]
        assert task["Parameters"]["Payload"] == {"run_id.$": "$.run_id", "chunk.$": "$.chunk"}
        assert state["ItemProcessor"]["StartAt"] == item and state["ResultPath"] is None
        # AND a rate limit of any of its clusters is waited out, then the chunk runs again
        assert task["Catch"][0]["ErrorEquals"] == ["RateLimited"]
    # AND nothing reads the plan's cluster list
    assert "$.plan.clusters" not in json.dumps(build.upgrade_batch())


def test_wait_out_error_waits_as_long_as_the_error_says_then_retries() -> None:
    # WHEN a Retry-After wait is built for a task
    state = build.wait_out_error("$.error_detail.retry_after_seconds", retry="OpenMergeRequest")

    # THEN it is a Wait whose length is read from the state, going back to the task
    assert state["Type"] == "Wait"
    assert state["SecondsPath"] == "$.error_detail.retry_after_seconds"
    assert state["Next"] == "OpenMergeRequest"
    assert "Seconds" not in state


def test_builder_runs_as_a_script_without_pythonpath_and_fast() -> None:
    # GIVEN no PYTHONPATH (as `python statemachines/build.py` from a fresh shell)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}

    # WHEN it checks the committed files
    started = time.monotonic()
    done = subprocess.run([sys.executable, "statemachines/build.py", "--check"], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=30)

    # THEN it finds nothing stale, well within 5 s
    assert done.returncode == 0, done.stderr
    assert time.monotonic() - started < 5


def _next_on(state: dict[str, Any], error: str) -> str:
    return next(c["Next"] for c in state["Catch"] if error in c["ErrorEquals"])


def test_an_inconclusive_batch_is_validated_once_more_after_the_extra_soak_then_a_person_decides() -> None:
    # GIVEN the upgrade machine as built
    states = build.upgrade_batch()["States"]
    # THEN a failure goes to the rollback path, an inconclusive verdict first to RevalidateOnce
    assert _next_on(states["Conclude"], "ValidationFailed") == "UpgradeHurt"
    assert _next_on(states["Conclude"], "ValidationInconclusive") == "RevalidateOnce"
    # AND RevalidateOnce sends a second inconclusive (flag set) to the decision path before anything else,
    # revalidates when the plan carries the extra soak, and otherwise (0, or a plan made before it) asks at once
    choices = states["RevalidateOnce"]["Choices"]
    assert choices[0] == {"Variable": "$.revalidated", "IsPresent": True, "Next": "UpgradeHurt"}
    assert choices[1] == {"Variable": "$.plan.revalidate_seconds", "IsPresent": True, "Next": "StartRevalidation"}
    assert states["RevalidateOnce"]["Default"] == "UpgradeHurt"
    # AND the second pass sets the flag, soaks the configured extra time, and runs Validate and Conclude again
    assert states["StartRevalidation"] | {"Comment": ""} == {"Comment": "", "Type": "Pass", "Result": True,
                                                              "ResultPath": "$.revalidated", "Next": "ExtraSoak"}
    assert (states["ExtraSoak"]["SecondsPath"], states["ExtraSoak"]["Next"]) == ("$.plan.revalidate_seconds",
                                                                                 "Validate")
    assert states["Validate"]["Next"] == "Conclude" and states["Validate"]["ResultPath"] is None
