"""An execution stopped from the console (StopExecution runs no Catch) leaves nothing behind: the
rehearsal delivers Step Functions' "Execution Status Change" event to ExecutionEnded as EventBridge does."""

from __future__ import annotations

import json
from typing import Any

import pytest
from guard.errors import ExecutionStopped
from guard.executions import execution_history
from guard.stores.state import StateStore

pytestmark = pytest.mark.workflow

INPUT = json.dumps({"batch": "test", "target_version": "1.20.0"})


def test_a_stopped_execution_frees_its_batch_for_the_next_run(world_for: Any) -> None:
    # GIVEN an execution waiting on its upgrade MR (nobody merges), holding the lock and a token
    world = world_for("mr-closed", human={"action": "ignore"})
    sfn = world.engine.client("stepfunctions")
    state = StateStore(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.state_table_name))
    first = sfn.start_execution(stateMachineArn=world.state_machine_arn, name="stopped-run",
                                input=INPUT)["executionArn"]
    mr = world.wait_until(lambda: world.gitlab.merge_requests("platform/istio-fleet"), what="the MR")[0]
    world.wait_until(lambda: state.get_task_token(mr["web_url"]), what="the task token")
    assert state.lock_holder("test") == "stopped-run"

    # WHEN a person stops it from the console
    sfn.stop_execution(executionArn=first)
    world.wait_until(lambda: state.get_run("stopped-run").status != "running", what="the stop to be recorded",
                     timeout=60)

    # THEN the lock is free, the token gone, and the run failed with ExecutionStopped
    assert sfn.describe_execution(executionArn=first)["status"] == "ABORTED"
    assert state.lock_holder("test") is None
    assert state.get_task_token(mr["web_url"]) is None
    run = state.get_run("stopped-run")
    assert (run.status, run.error) == ("failed", ExecutionStopped.__name__)
    assert world.engine.undelivered == []
    # AND the MR says GUARD no longer watches it, and GUARD closed it: a later merge must not deploy unwatched
    assert any("no longer watches" in note and "GUARD closed it" in note
               for note in world.gitlab.notes("platform/istio-fleet", mr["iid"]))
    assert world.gitlab.merge_requests("platform/istio-fleet")[0]["state"] == "closed"

    # AND the next run of the batch starts and gets past Plan
    second = sfn.start_execution(stateMachineArn=world.state_machine_arn, name="next-run",
                                 input=INPUT)["executionArn"]
    world.wait_until(lambda: any(e["type"] == "TaskStateExited" and e["stateExitedEventDetails"]["name"] == "Plan"
                                 for e in execution_history(sfn, second)), what="the next run past Plan")
    assert state.lock_holder("test") == "next-run"
    sfn.stop_execution(executionArn=second)
