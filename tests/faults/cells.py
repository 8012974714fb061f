"""The fault matrix: one fault per stage per external system, transient and persistent, a crash after
each side effect, a lost merge webhook, a lost decision comment and stops from the console.

Transient: the system fails once (a blip: one 503, 429 or throttle) and then answers; the outcome must
be the base scenario's. Persistent: it keeps failing from the stage on (DynamoDB: longer than the
failing task's whole Retry budget, then it recovers, as EventBridge's delivery of the end outlasts
it). Crash: GUARD's function dies after its side effects, before it answers (`Lambda.Unknown`).

`xfail` names the feature that is not built yet and what the cell observed without it; strict, so a
cell that starts passing fails the suite until its mark is removed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from guard.stores.state import StateStore
from guard.vocabulary.stages import Stage as RunStage

from sandbox.faults import both, key_equals, key_starts
from sandbox.world import LocalWorld
from tests.faults.harness import Armed, Cell, System
from tests.faults.harness import Stage as S

FOREVER = 10_000  # more failures than any run makes calls
DYNAMO_OUTAGE = 8  # more than any task's attempts (1 + RETRY_RECORD's 5), fewer than the calls after it

Fault = Callable[[Armed], object]

GL, DD, K8S, DDB, LLM, SLACK, SFN, LAMBDA = (System.GITLAB, System.DATADOG, System.KUBERNETES, System.DYNAMODB,
                                             System.LLM, System.SLACK, System.STEP_FUNCTIONS, System.LAMBDA)

# ------------------------------------------------------------------ the features the xfails wait for
# Each xfail reason: the feature not built yet; what the cell observed without it.
RETRY_POLICY = "retry policy (transient 503/429 retried before judging; errors -> inconclusive, not fail)"
REGISTRY_OBSERVED = "registry observation of the versions the clusters really run (at plan and at the end of a run)"
CLOSE_UNWATCHED_MR = "closing an upgrade MR GUARD no longer watches (token not stored, run ended before the merge)"
# What a failed run that had deployed leaves behind today: the registry keeps the old version.
DEPLOYED_BUT_UNRECORDED = "registry says eks-test runs 1.19.3, the cluster runs 1.20.0"


def waits_for(feature: str, observed: str) -> str:
    return f"{feature}; observed: {observed}"


def gitlab(method: str, path: str, times: int = 1, status: int = 503, retry_after: int | None = None) -> Fault:
    return lambda a: a.world.gitlab.fail_next(method, path, status, times, retry_after=retry_after)


def datadog(path: str, times: int = 1, status: int = 503, headers: dict[str, str] | None = None) -> Fault:
    return lambda a: a.world.datadog.fail_next(path, status, times, headers)


def kubernetes(path: str, times: int = 1, status: int = 503, method: str = "GET") -> Fault:
    return lambda a: a.world.kubernetes.fail_next(None, path, status, times, method=method)


def dynamodb(operation: str, where: Any, times: int = 1,
             code: str = "ProvisionedThroughputExceededException") -> Fault:
    return lambda a: a.aws.fail_next("dynamodb", operation, code, times, where)


def sfn(operation: str, times: int = 1, code: str = "ServiceUnavailable") -> Fault:
    return lambda a: a.aws.fail_next("stepfunctions", operation, code, times)


def llm(status: int, times: int = 1) -> Fault:
    def arm(a: Armed) -> None:
        assert a.world.llm is not None, "an LLM cell needs a base scenario with the LLM on"
        a.world.llm.fail_next(status, times)
    return arm


def llm_mode(mode: str) -> Fault:
    def arm(a: Armed) -> None:
        assert a.world.llm is not None
        a.world.llm.mode = mode  # type: ignore[assignment]
    return arm


def slack(status: int, times: int = 1) -> Fault:
    return lambda a: a.world.slack.fail_next(status, times)


def crash(function: str, when: Callable[[Any], bool] | None = None) -> Fault:
    return lambda a: a.crash(function, when=when)


def merge_event(event: Any) -> bool:
    """The API Gateway event of a merge webhook delivery."""
    return '"action": "merge"' in str(event.get("body") or "") if isinstance(event, dict) else False


def stop_at(stage: RunStage) -> Callable[[LocalWorld, str], None]:
    """A person stops the execution from the console once its run is at `stage` and no task of it runs."""

    def during(world: LocalWorld, arn: str) -> None:
        state = StateStore(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.state_table_name))
        run_id = arn.rsplit(":", 1)[-1]
        world.wait_until(lambda: (run := state.find_run(run_id)) is not None and run.stage == stage
                         and world.engine.in_flight() == 0, what=f"run at {stage}", timeout=60)
        world.engine.client("stepfunctions").stop_execution(executionArn=arn, error="StoppedFromConsole",
                                                            cause="an operator pressed Stop")
    return during


def stop_now(a: Armed) -> None:
    """A person stops the (one) running execution from the console, while the task about to run is invoked:
    Step Functions stops at once, the Lambda runs to its end regardless."""
    sfn_client = a.engine.client("stepfunctions")
    for machine in sfn_client.list_state_machines()["stateMachines"]:
        for execution in sfn_client.list_executions(stateMachineArn=machine["stateMachineArn"],
                                                    statusFilter="RUNNING")["executions"]:
            sfn_client.stop_execution(executionArn=execution["executionArn"], error="StoppedFromConsole",
                                      cause="an operator pressed Stop")


TOKEN = key_equals("sk", "TOKEN")
LOCK = both(key_starts("pk", "LOCK#"), key_equals("sk", "LOCK"))
RUN_META = both(key_starts("pk", "RUN#"), key_equals("sk", "META"))
PRECHECK = key_starts("sk", "CLUSTER#")
SOAK = key_equals("sk", "SOAK")  # the run's soak record, updated by every check of the soak loop
DELIVERY = key_equals("pk", "DELIVERY")  # the webhook's idempotency records (stores/deliveries.py)
MRS, MR, NOTES = r"/merge_requests$", r"/merge_requests/\d+$", r"/merge_requests/\d+/notes$"
TIMESERIES, MONITORS = r"/api/v2/query/timeseries", r"/api/v1/monitor"
LOST_MERGE = {"human": {"action": "merge", "after_seconds": 120, "drop_webhook": True}}

CELLS: list[Cell] = [
    # ---------------------------------------------------------------- GitLab
    Cell(GL, S.OPEN_MR, "transient", "create-mr-503", gitlab("POST", MRS)),
    Cell(GL, S.OPEN_MR, "persistent", "create-mr-503", gitlab("POST", MRS, FOREVER), expect="FAILED"),
    Cell(GL, S.OPEN_MR, "transient", "commit-429", gitlab("POST", r"/repository/commits$", status=429)),
    Cell(GL, S.OPEN_MR, "transient", "create-mr-429-retry-after-600",
         gitlab("POST", MRS, status=429, retry_after=600)),
    Cell(GL, S.OPEN_MR, "persistent", "read-file-503", gitlab("GET", r"/repository/files/", FOREVER),
         expect="FAILED"),
    Cell(GL, S.WAIT_MERGE, "lost", "merge-webhook", None, changes=LOST_MERGE),
    Cell(GL, S.WAIT_MERGE, "transient", "reconciler-read-503", gitlab("GET", MR), changes=LOST_MERGE),
    Cell(GL, S.WAIT_MERGE, "persistent", "reconciler-read-503", gitlab("GET", MR, FOREVER), changes=LOST_MERGE,
         expect="FAILED", error="MergeRequestTimeout"),
    Cell(GL, S.DECISION, "transient", "ask-comment-503", gitlab("POST", NOTES), base="inconclusive"),
    Cell(GL, S.DECISION, "persistent", "ask-comment-503", gitlab("POST", NOTES, FOREVER), base="inconclusive",
         expect="any"),
    Cell(GL, S.DECISION, "lost", "decision-comment", None, base="inconclusive",
         changes={"decision_comments": [{"user": "maria", "access": "maintainer", "body": "/guard proceed",
                                         "after_seconds": 120, "drop_webhook": True}]}),
    Cell(GL, S.DECISION, "transient", "member-lookup-503", gitlab("GET", r"/members/all/\d+$"),
         base="inconclusive"),
    Cell(GL, S.ROLLBACK_MR, "transient", "create-mr-503", gitlab("POST", MRS), base="regression"),
    Cell(GL, S.ROLLBACK_MR, "persistent", "create-mr-503", gitlab("POST", MRS, FOREVER), base="regression",
         expect="FAILED"),
    Cell(GL, S.FINISH, "transient", "comment-503", gitlab("POST", NOTES)),
    Cell(GL, S.FINISH, "persistent", "comment-503", gitlab("POST", NOTES, FOREVER)),

    # ---------------------------------------------------------------- Datadog
    Cell(DD, S.PRECHECK, "transient", "monitors-503", datadog(MONITORS)),
    Cell(DD, S.PRECHECK, "persistent", "monitors-503", datadog(MONITORS, FOREVER), expect="FAILED"),
    Cell(DD, S.PRECHECK, "transient", "baseline-503", datadog(TIMESERIES)),
    Cell(DD, S.PRECHECK, "persistent", "baseline-503", datadog(TIMESERIES, FOREVER), expect="not-succeeded"),
    Cell(DD, S.VALIDATE, "transient", "query-503", datadog(TIMESERIES)),
    Cell(DD, S.VALIDATE, "transient", "query-429", datadog(TIMESERIES, status=429)),
    # Datadog's organisation limits can reset an hour later: the state machine waits it out (RateLimited).
    Cell(DD, S.VALIDATE, "transient", "query-429-hour-reset",
         datadog(TIMESERIES, status=429, headers={"X-RateLimit-Reset": "3600"})),
    Cell(DD, S.PRECHECK, "transient", "monitors-429-hour-reset",
         datadog(MONITORS, status=429, headers={"X-RateLimit-Reset": "3600"})),
    Cell(DD, S.VALIDATE, "persistent", "query-503", datadog(TIMESERIES, FOREVER), expect="not-succeeded"),
    Cell(DD, S.VALIDATE, "persistent", "query-403", datadog(TIMESERIES, FOREVER, status=403),
         expect="not-succeeded"),

    # ---------------------------------------------------------------- Kubernetes (the clusters)
    Cell(K8S, S.PRECHECK, "transient", "nodes-503", kubernetes(r"^/api/v1/nodes$")),
    Cell(K8S, S.PRECHECK, "persistent", "nodes-503", kubernetes(r"^/api/v1/nodes$", FOREVER), expect="FAILED"),
    Cell(K8S, S.FLUX, "transient", "helmrelease-503", kubernetes(r"helmreleases/")),
    Cell(K8S, S.FLUX, "persistent", "helmrelease-503", kubernetes(r"helmreleases/", FOREVER), expect="FAILED"),
    Cell(K8S, S.SIDECARS, "transient", "restart-patch-429", kubernetes(r"deployments/", status=429, method="PATCH")),
    Cell(K8S, S.VALIDATE, "transient", "pods-503", kubernetes(r"pods$")),
    Cell(K8S, S.VALIDATE, "persistent", "pods-503", kubernetes(r"pods$", FOREVER), expect="not-succeeded"),
    Cell(K8S, S.ANALYZE, "transient", "events-503", kubernetes(r"/events$"), base="regression"),
    Cell(K8S, S.ANALYZE, "persistent", "events-503", kubernetes(r"/events$", FOREVER), base="regression",
         expect="FAILED", error="RolledBack"),
    Cell(K8S, S.VERIFY_ROLLBACK, "transient", "helmrelease-503", kubernetes(r"helmreleases/"), base="regression"),
    Cell(K8S, S.VERIFY_ROLLBACK, "persistent", "helmrelease-503", kubernetes(r"helmreleases/", FOREVER),
         base="regression", expect="FAILED"),

    # ---------------------------------------------------------------- DynamoDB (GUARD's own tables)
    Cell(DDB, S.PLAN, "transient", "lock-throttled", dynamodb("PutItem", LOCK)),
    Cell(DDB, S.PLAN, "persistent", "lock-throttled", dynamodb("PutItem", LOCK, DYNAMO_OUTAGE), expect="FAILED"),
    Cell(DDB, S.PLAN, "persistent", "run-record-500", dynamodb("PutItem", RUN_META, DYNAMO_OUTAGE,
                                                               "InternalServerError"), expect="FAILED"),
    Cell(DDB, S.PRECHECK, "transient", "report-throttled", dynamodb("PutItem", PRECHECK)),
    Cell(DDB, S.PRECHECK, "persistent", "report-500", dynamodb("PutItem", PRECHECK, DYNAMO_OUTAGE,
                                                               "InternalServerError"), expect="FAILED"),
    Cell(DDB, S.OPEN_MR, "transient", "token-throttled", dynamodb("PutItem", TOKEN)),
    Cell(DDB, S.OPEN_MR, "persistent", "token-500", dynamodb("PutItem", TOKEN, DYNAMO_OUTAGE, "InternalServerError"),
         expect="FAILED"),
    Cell(DDB, S.WAIT_MERGE, "transient", "webhook-token-read", dynamodb("GetItem", TOKEN)),
    # The webhook answers 200 and leaves the delivery unmarked when its own table fails; the reconciler
    # settles the merge on its next pass.
    Cell(DDB, S.WAIT_MERGE, "persistent", "webhook-token-read", dynamodb("GetItem", TOKEN, DYNAMO_OUTAGE)),
    Cell(DDB, S.WAIT_MERGE, "transient", "webhook-delivery-record", dynamodb("PutItem", DELIVERY)),
    Cell(DDB, S.SOAK, "transient", "soak-record-throttled", dynamodb("UpdateItem", SOAK)),
    Cell(DDB, S.SOAK, "persistent", "soak-record-500", dynamodb("UpdateItem", SOAK, DYNAMO_OUTAGE,
                                                               "InternalServerError"), expect="FAILED"),
    Cell(DDB, S.VALIDATE, "transient", "verdict-throttled", dynamodb("PutItem", key_starts("sk", "CLUSTER#"))),
    Cell(DDB, S.VALIDATE, "persistent", "verdict-500", dynamodb("PutItem", key_starts("sk", "CLUSTER#"),
                                                                DYNAMO_OUTAGE, "InternalServerError"),
         expect="FAILED"),
    Cell(DDB, S.VERIFY_ROLLBACK, "transient", "token-delete-throttled", dynamodb("DeleteItem", TOKEN),
         base="regression"),
    Cell(DDB, S.VERIFY_ROLLBACK, "transient", "lock-release-throttled", dynamodb("DeleteItem", LOCK),
         base="regression"),
    Cell(DDB, S.FINISH, "transient", "run-record-throttled", dynamodb("PutItem", RUN_META)),
    Cell(DDB, S.FINISH, "persistent", "run-record-500", dynamodb("PutItem", RUN_META, DYNAMO_OUTAGE,
                                                                 "InternalServerError"), expect="any"),

    # ---------------------------------------------------------------- the LLM (failure analysis)
    Cell(LLM, S.ANALYZE, "transient", "500", llm(500), base="regression"),
    Cell(LLM, S.ANALYZE, "persistent", "500", llm(500, FOREVER), base="regression"),
    Cell(LLM, S.ANALYZE, "persistent", "hang", llm_mode("hang"), base="regression"),
    Cell(LLM, S.ANALYZE, "persistent", "garbage", llm_mode("garbage"), base="regression"),

    # ---------------------------------------------------------------- Slack (notifications)
    Cell(SLACK, S.PRECHECK, "transient", "started-500", slack(500)),
    Cell(SLACK, S.FINISH, "transient", "succeeded-429", slack(429)),
    Cell(SLACK, S.FINISH, "persistent", "500", slack(500, FOREVER)),
    Cell(SLACK, S.VERIFY_ROLLBACK, "persistent", "rolled-back-500", slack(500, FOREVER), base="regression"),

    # ---------------------------------------------------------------- Step Functions (callbacks, the console)
    Cell(SFN, S.WAIT_MERGE, "transient", "send-task-success", sfn("SendTaskSuccess")),
    Cell(SFN, S.WAIT_MERGE, "persistent", "send-task-success", sfn("SendTaskSuccess", FOREVER), expect="FAILED",
         error="MergeRequestTimeout"),
    Cell(SFN, S.DECISION, "transient", "send-task-success", sfn("SendTaskSuccess"), base="inconclusive"),
    # The reviewer takes 20 minutes (1.2 s of real time), so the Stop lands while the MR waits; they merge later.
    Cell(SFN, S.WAIT_MERGE, "stop", "console", None, expect="ABORTED", during=stop_at(RunStage.WAITING_FOR_MERGE),
         changes={"human": {"action": "merge", "after_seconds": 1200}}),
    # A soak long enough (2 h, 7 s of real time) that the person sees it and presses Stop while it runs.
    Cell(SFN, S.VALIDATE, "stop", "console", None, expect="ABORTED", during=stop_at(RunStage.SOAKING),
         changes={"input": {"soak_period_minutes": 120}}),
    Cell(SFN, S.SIDECARS, "stop", "console-during-task", stop_now, expect="ABORTED"),
    Cell(SFN, S.ROLLBACK_MR, "stop", "console", None, base="regression", expect="ABORTED",
         during=stop_at(RunStage.WAITING_FOR_ROLLBACK_MERGE),
         changes={"rollback_human": {"action": "merge", "after_seconds": 1200}}),

    # ---------------------------------------------------------------- a crash after each side effect
    # A crash is one death of the function (Lambda.Unknown): the state machine runs the task again (HICCUPS)
    # and the outcome must be the base scenario's.
    Cell(LAMBDA, S.PLAN, "crash", "after-lock", crash("Plan")),
    Cell(LAMBDA, S.PRECHECK, "crash", "after-report", crash("Precheck")),
    Cell(LAMBDA, S.OPEN_MR, "crash", "after-mr-and-token", crash("OpenMergeRequest")),
    Cell(LAMBDA, S.WAIT_MERGE, "crash", "webhook-after-resume", crash("GitLabWebhook", merge_event)),
    Cell(LAMBDA, S.FLUX, "crash", "after-poll", crash("FluxStatus")),
    Cell(LAMBDA, S.SOAK, "crash", "after-check", crash("Soak")),
    Cell(LAMBDA, S.VALIDATE, "crash", "after-verdict", crash("Validate")),
    Cell(LAMBDA, S.ANALYZE, "crash", "after-analysis", crash("AnalyzeFailure"), base="regression"),
    Cell(LAMBDA, S.ROLLBACK_MR, "crash", "after-mr-and-token", crash("OpenRollback"), base="regression"),
    Cell(LAMBDA, S.VERIFY_ROLLBACK, "crash", "after-record", crash("VerifyRollback"), base="regression"),
    Cell(LAMBDA, S.FINISH, "crash", "after-record", crash("Finish")),
]
