"""The one builder of GUARD's state machines.

`python statemachines/build.py` writes statemachines/*.asl.json (committed; CDK and the local
rehearsal load those files) and the generated section of docs/workflow.md; `--check` only
says whether they are stale (tests/unit/test_asl_build.py fails when they are).

Helpers first, then each machine as one flow that reads top-down like the workflow diagram.
Each Retry policy is written once, below. Every error name a Retry or Catch matches is a class
of guard.errors, except AWS's own (States.*, Lambda.*, StepFunctions.*). Stdlib only.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
if str(ROOT / "lambdas") not in sys.path:  # run as a script, without PYTHONPATH
    sys.path.insert(0, str(ROOT / "lambdas"))

from guard import errors  # noqa: E402  (errors.py and the vocabulary are stdlib-only)
from guard.vocabulary.events import NotificationEvent  # noqa: E402
from guard.vocabulary.stages import FailedStage  # noqa: E402

State = dict[str, Any]
States = dict[str, State]
_UNSET: Any = object()  # "leave the field out" (None is ASL's null)

# ------------------------------------------------------------------ error names and Retry policies

ALL, TASK_FAILED, TIMEOUT = "States.ALL", "States.TaskFailed", "States.Timeout"


def names(*classes: type[errors.GuardError]) -> list[str]:
    """The names Retry/Catch match: the class names of guard.errors."""
    return [c.__name__ for c in classes]


def _retry(error_names: list[str], interval: int, attempts: int) -> list[State]:
    return [{"ErrorEquals": error_names, "IntervalSeconds": interval, "MaxAttempts": attempts, "BackoffRate": 2}]


# Lambda's own hiccups, and what an adapter says a retry may fix (timeouts, 429, 5xx). `Lambda.Unknown` is
# a function that died (crash, out of memory, its timeout) without answering: every task is written to be
# run again (look up before write), so the state machine tries it again like any other hiccup.
HICCUPS = ["Lambda.ServiceException", "Lambda.AWSLambdaException", "Lambda.SdkClientException",
           "Lambda.TooManyRequestsException", "Lambda.Unknown", *names(errors.TransientError)]
RETRY = _retry(HICCUPS, 5, 3)  # a task that talks to GitLab, Datadog, the clusters or an LLM
RETRY_QUICK = _retry(HICCUPS, 2, 3)  # a task on GUARD's own config and tables: Plan, Conclude, StartRollout
RETRY_RECORD = _retry(HICCUPS, 2, 5)  # bookkeeping that must land: RecordSuccess/RecordFailure, the rollout record
RETRY_START_CHILD = _retry(["StepFunctions.ThrottlingException", "StepFunctions.SdkClientException"], 5, 3)

# ------------------------------------------------------------------ state helpers

INVOKE = "arn:aws:states:::lambda:invoke"
RUN = {"run_id.$": "$.plan.run_id"}  # the reference every batch task gets; details live in DynamoDB
# What a task's kept result carries besides its own fields: where the run is and the MR a person acts on,
# so each state's output in the console says both.
WHERE = ("stage", "merge_request_url")
EXECUTION = {"input.$": "$", "execution_arn.$": "$$.Execution.Id", "execution_name.$": "$$.Execution.Name"}


def commented(comment: str | None) -> State:
    return {"Comment": comment} if comment else {}


def from_payload(*fields: str) -> State:
    """ResultSelector keeping these fields of the Lambda's result."""
    return {f"{field}.$": f"$.Payload.{field}" for field in fields}


def catch(next: str, *error_names: str, path: str | None = "$.error") -> State:
    """A Catch rule (default: every error) storing {Error, Cause} at `path`."""
    return {"ErrorEquals": list(error_names) or [ALL], "ResultPath": path, "Next": next}


def task(function: str, payload: State | str, *, next: str | None = None, comment: str | None = None,
         selector: State | None = None, result: str | None = _UNSET, retry: list[State] = RETRY,
         catches: tuple[State, ...] = (), resource: str = INVOKE, **more: Any) -> State:
    """A Lambda task (`${<function>FunctionArn}`) with retries; payload "$" passes the whole input."""
    body = {"Payload.$": payload} if isinstance(payload, str) else {"Payload": payload}
    state = commented(comment)
    state |= {"Type": "Task", "Resource": resource,
              "Parameters": {"FunctionName": f"${{{function}FunctionArn}}", **body}, **more}
    if selector:
        state["ResultSelector"] = selector
    if result is not _UNSET:
        state["ResultPath"] = result
    state["Retry"] = retry
    if catches:
        state["Catch"] = list(catches)
    return state | ({"Next": next} if next else {"End": True})


def callback(function: str, *, timeout_path: str, result: str, catches: tuple[State, ...], next: str,
             comment: str, heartbeat_seconds: int | None = None) -> State:
    """A Lambda that gets a task token and pauses the execution until someone sends it back
    (`SendTaskSuccess`/`SendTaskFailure`) or `timeout_path` seconds pass (States.Timeout)."""
    more: State = {"TimeoutSecondsPath": timeout_path}
    if heartbeat_seconds:
        more["HeartbeatSeconds"] = heartbeat_seconds
    return task(function, RUN | {"task_token.$": "$$.Task.Token"}, resource=f"{INVOKE}.waitForTaskToken",
                comment=comment, result=result, catches=catches, next=next, **more)


def poll(start: str, check: str, done: str, wait: str, *, function: str, into: str, flag: str, then: str,
         on_error: str, comment: str, payload: State | None = None, fields: tuple[str, ...] = ()) -> States:
    """start → check → done? → wait → check …: polls `function` every $.plan.flux_poll_seconds until it
    returns `flag` true. The deadline travels in `$.<into>.deadline` (null at first; the first check sets
    it, a check past it raises), so a retried check never extends it."""
    key = f"$.{into}"
    return {
        start: {"Type": "Pass", "Result": {"deadline": None, flag: False}, "ResultPath": key, "Next": check},
        check: task(function, RUN | {"deadline.$": f"{key}.deadline"} | (payload or {}), comment=comment,
                    selector=from_payload("deadline", flag, *WHERE, *fields), result=key,
                    catches=(catch(on_error),), next=done),
        done: choice(when(then, var(f"{key}.{flag}", BooleanEquals=True)), default=wait),
        wait: wait_for("$.plan.flux_poll_seconds", next=check),
    }


def per_chunk(item: str, function: str, *fields: str, comment: str, on_error: State, next: str) -> State:
    """A Map over the plan's chunk numbers (`$.plan.chunks`): each iteration is one `function` task that reads
    its chunk's cluster ids from the run record and does them concurrently (guard.services.fanout). History
    and payload grow with the chunks, not the clusters; results stay in DynamoDB (ResultPath null), the task
    returns counts."""
    return {"Comment": comment, "Type": "Map", "ItemsPath": "$.plan.chunks",
            "ItemSelector": RUN | {"chunk.$": "$$.Map.Item.Value"},
            "MaxConcurrencyPath": "$.plan.max_concurrent_chunks",
            "ItemProcessor": inline(item, waits_out_rate_limits(
                item, task(function, {"run_id.$": "$.run_id", "chunk.$": "$.chunk"},
                           selector=from_payload("chunk", "clusters", *fields)))),
            "ResultPath": None, "Catch": [on_error], "Next": next}


def inline(start: str, states: States) -> State:
    return {"ProcessorConfig": {"Mode": "INLINE"}, "StartAt": start, "States": states}


def notify(event: NotificationEvent, *, next: str, on_error: str | None = None, detail: str | None = None,
           **more: Any) -> State:
    """Sends a notification (Slack/SNS per config); a failure to notify never fails the workflow."""
    payload = RUN | {"event": event.value} | ({"detail.$": detail} if detail else {})
    return task("Notify", payload,
                comment=f"Notification '{event.value}' (Slack/SNS per config); never blocks the workflow.",
                result=None, catches=(catch(on_error or next, path=None),), next=next, **more)


def failed_at(stage: FailedStage) -> State:
    """Names the stage that failed (`$.failed_stage`) and goes to RecordFailure."""
    return {"Type": "Pass", "Result": stage.value, "ResultPath": "$.failed_stage", "Next": "RecordFailure"}


def refused() -> State:
    """The Catch of a first state (Plan, PlanRollback, StartRollout) into ReadRefusal.

    ResultPath "$" replaces the state with the error: the input is dropped, so a refusal works
    whatever the input was (an array or a string has no `$.error` to write into) and stays small
    however large the input was (a 200 KB input plus its echo in the cause would pass 256 KB).
    """
    return catch("ReadRefusal", TASK_FAILED, path="$")


def refusal(comment: str | None = None) -> States:
    """ReadRefusal → Refused: fails with the handler's error name and message (not the Lambda error JSON).

    Reached through `refused()`: the state is the caught error alone, never the input."""
    read = commented(comment)
    read |= {"Type": "Pass", "Parameters": {"error.$": "$.Error",
                                            "detail.$": "States.StringToJson($.Cause)"}, "Next": "Refused"}
    return {"ReadRefusal": read,
            "Refused": {"Type": "Fail", "ErrorPath": "$.error", "CausePath": "$.detail.errorMessage"}}


def wait_for(seconds_path: str, *, next: str, comment: str | None = None) -> State:
    """A Wait as long as the number at `seconds_path` says."""
    return commented(comment) | {"Type": "Wait", "SecondsPath": seconds_path, "Next": next}


def wait_out_error(seconds_path: str, *, retry: str) -> State:
    """A Wait as long as the caught error asked (a vendor's Retry-After), then back to the task `retry`."""
    return wait_for(seconds_path, next=retry, comment="Waits out the rate limit the error carried, then tries again.")


RATE_LIMITED = errors.RateLimited.__name__


def waits_out_rate_limits(name: str, state: State) -> States:
    """`name: state` plus what waits out a `RateLimited` it raises, then runs it again: a long vendor
    rate limit (Datadog's hour-long reset) is waited by the state machine, not by a Lambda burning its
    timeout, and never becomes a failure.

    The error's Cause is the Lambda runtime's JSON ({"errorType", "errorMessage", ...}) and the
    message is JSON too ({"retry_after_seconds", "reason"}, see guard.errors.RateLimited), so two
    Pass states unpack it before the Wait. The caught error sits in `$.rate_limited`; the task's own
    Parameters decide what it gets, so a retry sees the same input as the first attempt.
    """
    unpack, read, wait = f"{name}RateLimited", f"{name}ReadWait", f"{name}WaitOutRateLimit"
    state = dict(state)
    state["Catch"] = [catch(unpack, RATE_LIMITED, path="$.rate_limited"), *state.get("Catch", [])]
    return {
        name: state,
        unpack: {"Type": "Pass", "Comment": f"{name} was rate limited: read the Lambda error.",
                 "Parameters": {"detail.$": "States.StringToJson($.rate_limited.Cause)"},
                 "ResultPath": "$.rate_limited", "Next": read},
        read: {"Type": "Pass", "Parameters": {"wait.$": "States.StringToJson($.rate_limited.detail.errorMessage)"},
               "ResultPath": "$.rate_limited", "Next": wait},
        wait: wait_out_error("$.rate_limited.wait.retry_after_seconds", retry=name),
    }


def fail(error_path: str, cause_path: str, comment: str | None = None) -> State:
    return commented(comment) | {"Type": "Fail", "ErrorPath": error_path, "CausePath": cause_path}


def var(path: str, **test: Any) -> State:
    """One Choice comparison, e.g. var("$.flux.synced", BooleanEquals=True)."""
    return {"Variable": path, **test}


def when(next: str, *tests: State) -> State:
    """A Choice rule: all `tests` hold → `next`."""
    return tests[0] | {"Next": next} if len(tests) == 1 else {"And": list(tests), "Next": next}


def choice(*rules: State, default: str, comment: str | None = None) -> State:
    return commented(comment) | {"Type": "Choice", "Choices": list(rules), "Default": default}


# ------------------------------------------------------------------ upgrade_batch: one batch, one execution


def upgrade_batch() -> State:
    return {
        "Comment": "GUARD: upgrade Istio on one batch of clusters through a GitLab MR "
                   "(plan -> prechecks -> MR -> Flux -> soak -> validate -> record).",
        "StartAt": "Action",
        "States": {
            "Action": choice(
                when("PlanRollback", var("$.action", IsPresent=True)),
                default="Plan",
                comment='{"action": "rollback", ...} rolls back a batch\'s last upgrade; anything else is an upgrade. '
                        "Only IsPresent, which never fails: any JSON (an array, a string, null) reaches a Plan "
                        "task that refuses it by name, and PlanRollback refuses an action other than rollback."),
            "Plan": task(
                "Plan", EXECUTION, selector={"plan.$": "$.Payload"}, result="$", retry=RETRY_QUICK,
                catches=(refused(),), next="NotifyStarted",
                comment="Validates the input, loads config and registry, checks versions and prerequisites, "
                        "takes the batch lock. Bad input fails here and changes nothing."),
            **refusal("A refused plan changed nothing; surface the handler's message (not the Lambda error JSON) "
                      "as the cause."),
            "NotifyStarted": notify(NotificationEvent.STARTED, next="Prechecks"),
            "Prechecks": per_chunk(
                "PrecheckChunk", "Precheck", "passed", on_error=catch("PrecheckStageFailed"),
                next="DryRun",
                comment="Per chunk of execution.cluster_chunk_size clusters, each cluster: Kubernetes, Istio, "
                        "zero-downtime, Datadog alerts, custom checks, and the metric baseline before the change. "
                        "Fails fast, naming the first failing cluster."),
            "DryRun": choice(
                when("RecordPrechecked", var("$.plan.dry_run", IsPresent=True),
                     var("$.plan.dry_run", BooleanEquals=True)),
                default="OpenMergeRequest",
                comment="`dry_run: true` (guard run --dry-run): every cluster passed its prechecks; stop before "
                        "the MR. Nothing was changed."),
            "RecordPrechecked": task(
                "Finish", RUN | {"outcome": "prechecked"}, selector=from_payload("summary"), result="$.result",
                retry=RETRY_RECORD, next="Prechecked",
                comment="Records the dry run's outcome on the run and releases the lock; no MR, no batch result, "
                        "no registry change."),
            "Prechecked": {"Type": "Succeed", "OutputPath": "$.result"},
            **waits_out_rate_limits("OpenMergeRequest", callback(
                "OpenMergeRequest", timeout_path="$.plan.merge_timeout_seconds", result="$.merge",
                catches=(catch("MergeWaitTimedOut", TIMEOUT), catch("MergeStageFailed")), next="StartFluxWait",
                comment="Opens (or finds) the upgrade MR and pauses until the GitLab webhook reports it merged "
                        "or closed.")),
            **poll("StartFluxWait", "CheckFluxSync", "FluxSynced", "WaitForFlux",
                   function="FluxStatus", into="flux", flag="synced", then="RolloutSequencing",
                   on_error="FluxStageFailed",
                   comment="Every cluster's HelmRelease reconciled at the target version and istiod running it; "
                           "raises FluxSyncTimeout past the deadline."),
            "RolloutSequencing": choice(
                when("StartSidecarRestarts", var("$.plan.restart_sidecars", BooleanEquals=True)), default="Soak",
                comment="execution.enable_rollout_sequencing: restart injected workloads so their proxies run the "
                        "new version."),
            **poll("StartSidecarRestarts", "RestartSidecars", "SidecarsDone", "WaitForSidecars",
                   function="RestartSidecars", into="sidecars", flag="done", then="Soak",
                   on_error="SidecarStageFailed",
                   comment="One wave at a time per cluster, never below a PDB or the ready-replica floor; raises "
                           "SidecarRestartTimeout past the deadline."),
            "Soak": task(
                "Soak", RUN | {"planned_seconds.$": "$.plan.soak_seconds"},
                selector=from_payload("done", "wait_seconds", "soak_seconds", "left_seconds", *WHERE),
                result="$.soak", retry=RETRY_QUICK, catches=(catch("ValidateStageFailed"),), next="SoakOver",
                comment="Let the new version take real traffic before judging it: each check reads the soak's "
                        "length from the run's soak record (guard monitor --soak-period moves its end)."),
            "SoakOver": choice(when("Validate", var("$.soak.done", BooleanEquals=True)), default="SoakWait"),
            "SoakWait": wait_for("$.soak.wait_seconds", next="Soak",
                                 comment="Until the soak ends or the next check, whichever comes first (a few "
                                         "minutes of soak at least: a bounded number of history events)."),
            "Validate": per_chunk(
                "ValidateChunk", "Validate", "passed", "failed", "inconclusive", on_error=catch("ValidateStageFailed"),
                next="Conclude",
                comment="Per chunk of clusters, each cluster: Datadog current window vs the pre-upgrade baseline, and "
                        "Kubernetes/Istio post-checks. Verdicts are stored, not passed; the task returns counts."),
            "Conclude": task(
                "Conclude", RUN, result=None, retry=RETRY_QUICK, next="RecordSuccess",
                catches=(catch("UpgradeHurt", *names(errors.ValidationFailed)),
                         catch("RevalidateOnce", *names(errors.ValidationInconclusive)),
                         catch("ValidateStageFailed")),
                comment="Reads every verdict; raises ValidationFailed or ValidationInconclusive naming cluster, "
                        "query and numbers."),
            "RevalidateOnce": choice(
                when("UpgradeHurt", var("$.revalidated", IsPresent=True)),
                when("StartRevalidation", var("$.plan.revalidate_seconds", IsPresent=True)),
                default="UpgradeHurt",
                comment="Inconclusive: validate once more after validation.revalidate_after_minutes (absent from "
                        "the plan when 0, and in plans made before it existed) before asking a person. A second "
                        "inconclusive goes on to the decision."),
            "StartRevalidation": {
                "Comment": "Marks the second pass; the first pass's error stays in $.error until the second "
                           "one concludes.",
                "Type": "Pass", "Result": True, "ResultPath": "$.revalidated", "Next": "ExtraSoak"},
            "ExtraSoak": wait_for("$.plan.revalidate_seconds", next="Validate",
                                  comment="More traffic on the new version; Validate then reads a window ending "
                                          "now, so it covers this extra soak."),
            "RecordSuccess": task(
                "Finish", RUN | {"outcome": "succeeded", "merge.$": "$.merge"}, selector=from_payload("summary"),
                result="$.result", retry=RETRY_RECORD, next="NotifySucceeded"),
            "NotifySucceeded": notify(NotificationEvent.SUCCEEDED, next="Upgraded", on_error="UpgradedUnnotified",
                                      OutputPath="$.result"),
            "UpgradedUnnotified": {"Type": "Pass", "OutputPath": "$.result", "Next": "Upgraded"},
            "Upgraded": {"Type": "Succeed"},

            # -------- validation hurt: analysis → decision → rollback MR → verify → RolledBack
            "UpgradeHurt": task(
                "AnalyzeFailure", RUN | {"enable_llm_analysis.$": "$.plan.llm_analysis"},
                selector=from_payload("needs_decision", "available", "verdict", *WHERE), result="$.analysis",
                catches=(catch("RollbackMergeRequestWanted", path="$.analysis_error"),), next="NeedsDecision",
                comment="Validation failed or was inconclusive: gather evidence and (optionally) ask the LLM why. "
                        "Never blocks the rollback."),
            "NeedsDecision": choice(
                when("NotifyNeedsDecision", var("$.analysis.needs_decision", BooleanEquals=True)),
                default="RollbackMergeRequestWanted",
                comment="Inconclusive (or a failure under rollback.require_manual_approval): a person decides on "
                        "the MR."),
            "NotifyNeedsDecision": notify(NotificationEvent.NEEDS_DECISION, next="AwaitDecision"),
            **waits_out_rate_limits("AwaitDecision", callback(
                "AwaitDecision", timeout_path="$.plan.decision_timeout_seconds", result="$.decision",
                catches=(catch("DecisionTimedOut", TIMEOUT, path="$.decision_error"),
                         catch("RollbackMergeRequestWanted", path="$.decision_error")), next="Decided",
                comment="Comments the evidence on the MR and waits for `/guard proceed` or `/guard rollback` from "
                        "a Maintainer.")),
            "DecisionTimedOut": task(
                "AwaitDecision", RUN | {"action": "timed_out"}, selector=from_payload("decision", "by", "timed_out"),
                result="$.decision", catches=(catch("RollbackMergeRequestWanted", path="$.decision_error"),),
                next="Decided",
                comment="The wait timed out: reads the MR's comments once more. A Maintainer's command whose webhook "
                        "was lost is applied; only when there is none does GUARD say so and roll back."),
            "Decided": choice(when("RecordSuccess", var("$.decision.decision", StringEquals="proceed")),
                              default="RollbackMergeRequestWanted"),
            "PlanRollback": task(
                "PlanRollback", EXECUTION, selector={"plan.$": "$.Payload"}, result="$",
                catches=(refused(),), next="RollbackMergeRequestWanted",
                comment="Manual rollback (seed `guard rollback --batch`): finds the batch's last upgrade and takes "
                        "the lock."),
            "RollbackMergeRequestWanted": choice(
                when("RollbackNotCreated", var("$.plan.rollback_mr", IsPresent=True),
                     var("$.plan.rollback_mr", BooleanEquals=False)),
                default="OpenRollback",
                comment="rollback.auto_create_mr false: no MR is opened; the failure is recorded for a person to "
                        "roll back by hand."),
            **waits_out_rate_limits("OpenRollback", callback(
                "OpenRollback", timeout_path="$.plan.rollback_timeout_seconds", result="$.rollback_merge",
                catches=(catch("RollbackWaitTimedOut", TIMEOUT), catch("RollbackStageFailed")),
                next="StartRollbackVerify",
                comment="Opens the rollback MR (previous versions, failure data, analysis) and waits for its "
                        "merge.")),
            "RollbackWaitTimedOut": task(
                "OpenRollback", RUN | {"action": "timed_out"},
                selector=from_payload("merge_commit_sha", "merge_request_url", "merged_by", "stage"),
                result="$.rollback_merge", catches=(catch("RollbackStageFailed"),), next="StartRollbackVerify",
                comment="The wait timed out: asks GitLab once more. Merged after all: verify the rollback. Still "
                        "open: GUARD never closes it; it comments that a person must act, raises the "
                        "RollbackNeedsPerson alarm and fails with RollbackMergeRequestTimeout."),
            **poll("StartRollbackVerify", "VerifyRollback", "RollbackVerified", "WaitForRollback",
                   function="VerifyRollback", into="verify", flag="done", then="NotifyRolledBack",
                   on_error="RollbackStageFailed", payload={"merge.$": "$.rollback_merge"},
                   fields=("error", "cause", "status"),
                   comment="Flux reconciled the previous versions and the clusters are healthy; records rolled "
                           "back / rollback failed and releases the lock."),
            "NotifyRolledBack": notify(NotificationEvent.ROLLED_BACK, next="RequestedRollback"),
            "RequestedRollback": choice(
                when("RollbackDone", var("$.plan.rollback_to", IsPresent=True),
                     var("$.verify.status", StringEquals="rolled_back")),
                default="RolledBack",
                comment="A manual rollback that worked succeeds; an automatic one ends failed (the upgrade hurt)."),
            "RollbackDone": {"Type": "Succeed", "OutputPath": "$.verify"},
            "RolledBack": fail("$.verify.error", "$.verify.cause",
                               comment="Ends failed: the upgrade was rolled back (or the rollback failed); the "
                                       "cause says which and why."),

            # -------- any other failure: name the stage, record, notify, fail
            "PrecheckStageFailed": failed_at(FailedStage.PRECHECKS),
            "MergeWaitTimedOut": failed_at(FailedStage.MERGE_TIMEOUT),
            "MergeStageFailed": failed_at(FailedStage.MERGE),
            "FluxStageFailed": failed_at(FailedStage.FLUX),
            "SidecarStageFailed": failed_at(FailedStage.SIDECARS),
            "ValidateStageFailed": failed_at(FailedStage.VALIDATE),
            "RollbackStageFailed": failed_at(FailedStage.ROLLBACK),
            "RollbackNotCreated": failed_at(FailedStage.ROLLBACK_NOT_CREATED),
            "RecordFailure": task(
                "Finish", RUN | {"outcome": "failed", "stage.$": "$.failed_stage", "error.$": "$.error"},
                selector=from_payload("error", "cause", *WHERE), result="$.failure", retry=RETRY_RECORD,
                next="NotifyFailed",
                comment="Records the outcome, releases the lock, comments on the MR, and turns the error into a "
                        "cause a person can act on."),
            "NotifyFailed": notify(NotificationEvent.FAILED, detail="$.failure.cause", next="UpgradeFailed"),
            "UpgradeFailed": fail("$.failure.error", "$.failure.cause"),
        },
    }


# ------------------------------------------------------------------ rollout: many batches in batch_order


def rollout_task(action: str, payload: State, **kwargs: Any) -> State:
    return task("Rollout", {"action": action, **payload}, **kwargs)


def rollout() -> State:
    batch = {"rollout_id.$": "$.rollout_id", "batch.$": "$.batch"}
    return {
        "Comment": "GUARD: a fleet rollout. Runs the tenant's batches (or a named subset) in batch_order: one Map "
                   "over the batches in topological order; each iteration claims its batch and starts it (a child "
                   "execution of the batch state machine) as soon as all its prerequisites succeeded, up to the "
                   "concurrency limit; a failed batch stops what depends on it. State lives in the rollout record "
                   "(DynamoDB); payloads carry the rollout id and one batch.",
        "StartAt": "StartRollout",
        "States": {
            "StartRollout": rollout_task(
                "start", EXECUTION, selector=from_payload("rollout_id", "items", "max_concurrency"), result="$",
                retry=RETRY_QUICK, catches=(refused(),), next="RunBatches",
                comment="Validates the input, plans the DAG, refuses unknown batches and external prerequisites "
                        "that have not succeeded, records the rollout."),
            **refusal(),
            "RunBatches": {
                "Comment": "One iteration per batch, in topological order (DAG depth, then config order). An "
                           "iteration waits (Claim -> WaitForTurn) until its prerequisites succeeded, then runs its "
                           "child execution and records the outcome; a batch that can never run is skipped. A "
                           "waiting iteration holds one of the MaxConcurrency slots. The lowest unfinished item "
                           "never waits on a prerequisite (they all have lower indices and are finished), so the "
                           "Map always progresses.",
                "Type": "Map", "ItemsPath": "$.items", "MaxConcurrencyPath": "$.max_concurrency",
                "ItemSelector": {"rollout_id.$": "$.rollout_id", "batch.$": "$$.Map.Item.Value"},
                "ItemProcessor": inline("Claim", {
                    "Claim": rollout_task(
                        "claim", batch, selector=from_payload("action", "wait_seconds", "name", "input"),
                        result="$.claim", retry=RETRY_RECORD, next="RunWaitOrSkip",
                        comment="run (marked running; a retry gets the same child name and input), wait "
                                "(prerequisites still running: rollout.poll_seconds; a closed change window with "
                                "on_deny: wait: until it opens) or skip (finished, or skipped now with the reason)."),
                    "RunWaitOrSkip": choice(when("RunBatch", var("$.claim.action", StringEquals="run")),
                                            when("WaitForTurn", var("$.claim.action", StringEquals="wait")),
                                            default="BatchSkipped"),
                    "WaitForTurn": wait_for("$.claim.wait_seconds", next="Claim"),
                    "BatchSkipped": {"Type": "Pass", "Result": {}, "End": True},
                    "RunBatch": {
                        "Type": "Task", "Resource": "arn:aws:states:::states:startExecution.sync:2",
                        "Parameters": {"StateMachineArn": "${UpgradeBatchStateMachineArn}",
                                       "Name.$": "$.claim.name", "Input.$": "$.claim.input"},
                        "ResultSelector": {"execution_arn.$": "$.ExecutionArn", "start_date.$": "$.StartDate",
                                           "stop_date.$": "$.StopDate"},
                        "ResultPath": "$.child", "Retry": RETRY_START_CHILD,
                        "Catch": [catch("BatchFailed")], "Next": "BatchSucceeded"},
                    "BatchSucceeded": {"Type": "Pass", "Parameters": {
                        "rollout_id.$": "$.rollout_id",
                        "result": {"batch.$": "$.batch", "status": "succeeded",
                                   "ExecutionArn.$": "$.child.execution_arn", "StartDate.$": "$.child.start_date",
                                   "StopDate.$": "$.child.stop_date"}}, "Next": "RecordBatch"},
                    "BatchFailed": {"Type": "Pass", "Parameters": {
                        "rollout_id.$": "$.rollout_id",
                        "result": {"batch.$": "$.batch", "status": "failed", "error.$": "$.error.Error",
                                   "cause.$": "$.error.Cause"}}, "Next": "RecordBatch"},
                    "RecordBatch": rollout_task(
                        "record", {"rollout_id.$": "$.rollout_id", "results.$": "States.Array($.result)"},
                        result=None, OutputPath=None, retry=RETRY_RECORD,
                        comment="Records the batch's outcome (succeeded, failed, rolled back) and skips what now "
                                "can never run; the iteration's output is empty."),
                }),
                "ResultPath": None, "Next": "FinishRollout"},
            "FinishRollout": rollout_task(
                "finish", {"rollout_id.$": "$.rollout_id"},
                selector=from_payload("status", "summary", "error", "cause"),
                result="$.result", retry=RETRY_RECORD, next="RolloutSucceeded?"),
            "RolloutSucceeded?": choice(when("RolloutDone", var("$.result.status", StringEquals="succeeded")),
                                        default="RolloutFailed"),
            "RolloutDone": {"Type": "Pass", "OutputPath": "$.result.summary", "Next": "Done"},
            "Done": {"Type": "Succeed"},
            "RolloutFailed": fail("$.result.error", "$.result.cause"),
        },
    }


MACHINES = {"upgrade_batch": upgrade_batch, "rollout": rollout}

# ------------------------------------------------------------------ docs/workflow.md: diagram and state list

DOCS = ROOT / "docs" / "workflow.md"
BEGIN, END = "<!-- generated by statemachines/build.py -->", "<!-- end generated -->"
_SHAPES = {"Choice": "{{{}}}", "Succeed": "([{}])", "Fail": "([{}])", "Map": "[[{}]]"}


def _condition(rule: State) -> str:
    tests = rule.get("And", [rule])
    return " and ".join(t["Variable"].removeprefix("$.") + (" present" if "IsPresent" in t else
                        f" = {json.dumps(next(v for k, v in t.items() if k.endswith('Equals')))}".replace('"', ""))
                        for t in tests)


def _edges(state: State) -> list[tuple[str, str, str]]:
    """(label, target, arrow) for every way out of a state."""
    out = [(_condition(rule), rule["Next"], "-->") for rule in state.get("Choices", [])]
    out += [("else", state["Default"], "-->")] if "Default" in state else []
    out += [("", state["Next"], "-->")] if "Next" in state else []
    out += [(" / ".join(c["ErrorEquals"]), c["Next"], "-.->") for c in state.get("Catch", [])]
    return out


def _function(state: State) -> str:
    if "ItemProcessor" in state:
        return ", ".join(_function(s) for s in state["ItemProcessor"]["States"].values())
    params = state.get("Parameters", {})
    name = params.get("FunctionName", params.get("StateMachineArn", ""))
    return name.removeprefix("${").removesuffix("}").removesuffix("FunctionArn")


def _retries(state: State) -> str:
    if "ItemProcessor" in state:
        return ", ".join(_retries(s) for s in state["ItemProcessor"]["States"].values())
    return ", ".join(f"{r['MaxAttempts']} from {r['IntervalSeconds']} s" for r in state.get("Retry", []))


def docs_section(machine: State) -> str:
    lines = [BEGIN, "", "```mermaid", "flowchart TD"]
    for name, state in machine["States"].items():
        shape = _SHAPES.get(state["Type"], "[{}]")
        lines.append(f"  {name}{shape.format(name)}")
        lines += [f'  {name} {arrow}|"{label}"| {target}' if label else f"  {name} {arrow} {target}"
                  for label, target, arrow in _edges(state)]
    lines += ["```", "", "| state | type | function | retries (×2 backoff) | catch → next |", "|---|---|---|---|---|"]
    for name, state in machine["States"].items():
        kind = state["Type"] + (" (.waitForTaskToken)" if state.get("Resource", "").endswith("Token") else "")
        caught = "; ".join(f"`{' / '.join(c['ErrorEquals'])}` → {c['Next']}" for c in state.get("Catch", []))
        function = f"`{_function(state)}`" if _function(state) else ""
        lines.append(f"| {name} | {kind} | {function} | {_retries(state)} | {caught} |")
    return "\n".join([*lines, "", END])


def with_docs(text: str, section: str) -> str:
    head, begin, rest = text.partition(BEGIN)
    if not begin:
        raise SystemExit(f"{DOCS}: no `{BEGIN}` marker")
    return head + section + rest.partition(END)[2]


# ------------------------------------------------------------------ output


def render(machine: State) -> str:
    return json.dumps(machine, indent=2, ensure_ascii=False) + "\n"


def outputs() -> dict[Path, str]:
    """Every file the builder owns, with its content."""
    files = {HERE / f"{name}.asl.json": render(build()) for name, build in MACHINES.items()}
    files[DOCS] = with_docs(DOCS.read_text(), docs_section(upgrade_batch()))
    return files


def main(argv: list[str]) -> int:
    stale = [path for path, text in outputs().items() if not path.exists() or path.read_text() != text]
    if "--check" in argv:
        for path in stale:
            print(f"{path.relative_to(ROOT)} is stale: run `python statemachines/build.py`", file=sys.stderr)
        return 1 if stale else 0
    for path, text in outputs().items():
        if path in stale:
            path.write_text(text)
            print(f"wrote {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
