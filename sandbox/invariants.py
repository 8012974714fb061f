"""What must hold in a rehearsal world once its executions have ended, whatever went wrong on the way.

`check_invariants(world)` reads the world as a person auditing it would: the state table (locks,
task tokens, run records), Step Functions (executions), GitLab (merge requests and their notes),
the registry and the clusters. It returns one readable line per violation; an empty list means
the world is clean. The fault suite (tests/faults) calls it at the end of every cell; a rehearsal
may call it too.

The invariants (docs/failure-handling.md, "The fault suite"):
- no lock or token outlives the execution;
- no execution is stuck (none running, no run record left running, every end delivered);
- no MR is left open and unwatched (a rollback MR GUARD gave up on may stay open with a comment);
- the registry equals the clusters (the version each cluster runs);
plus, given what the cell is about, the outcome comparisons in `outcome_violations`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from guard.core.run import RunRecord, RunStatus, VerdictOutcome
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore, TaskTokenRecord, run_from_items
from guard.vocabulary.outcomes import Outcome

from sandbox.world import LocalWorld

ROLLBACK_BRANCH = "/rollback-"


@dataclass(frozen=True)
class RunOutcome:
    """How one execution ended, in the words a comparison needs."""

    status: str  # the execution's: SUCCEEDED, FAILED, ABORTED, TIMED_OUT, RUNNING
    error: str | None  # the execution's error name (FAILED)
    run_status: str | None  # the run record's (None: no record, e.g. Plan refused)
    run_outcome: str | None  # succeeded / failed / rolled_back / rollback_failed

    def brief(self) -> str:
        return f"{self.status}/{self.error or '-'} run={self.run_status or 'none'}/{self.run_outcome or '-'}"


def outcome_of(world: LocalWorld, execution_arn: str) -> RunOutcome:
    """`execution_arn`'s status and error, and its run record's status and outcome."""
    sfn = world.engine.client("stepfunctions")
    described = sfn.describe_execution(executionArn=execution_arn)
    run = _state(world).find_run(execution_arn.rsplit(":", 1)[-1])
    return RunOutcome(status=str(described["status"]), error=described.get("error"),
                      run_status=run.status.value if run else None,
                      run_outcome=(run.outcome.value if run and run.outcome else None))


def check_invariants(world: LocalWorld) -> list[str]:
    """Every invariant violation in `world`, one readable line each (empty: clean)."""
    running = _running_executions(world)
    return [
        *_leftover_locks_and_tokens(world, running),
        *_stuck(world, running),
        *_unwatched_merge_requests(world, running),
        *_registry_differs_from_clusters(world),
    ]


def outcome_violations(world: LocalWorld, outcome: RunOutcome, *, baseline: RunOutcome | None = None,
                       datadog_down: bool = False) -> list[str]:
    """The outcome invariants: a transient fault leaves the outcome of its `baseline` unchanged; with
    Datadog down for good (`datadog_down`), nothing is ever judged a pass."""
    problems = []
    if baseline is not None and (outcome.status, outcome.error, outcome.run_outcome) != (
            baseline.status, baseline.error, baseline.run_outcome):
        problems.append(f"a transient fault changed the outcome: {outcome.brief()} instead of {baseline.brief()}")
    if datadog_down:
        if outcome.status == "SUCCEEDED" or outcome.run_outcome == Outcome.SUCCEEDED:
            problems.append(f"Datadog failed for good, yet the run ended {outcome.brief()}")
        for run in _runs(world):
            for cluster in run.clusters:
                verdict = _state(world).get_verdict(run.run_id, cluster)
                if verdict is not None and verdict.outcome == VerdictOutcome.PASS:
                    problems.append(f"Datadog failed for good, yet {cluster} was judged pass in run {run.run_id}")
    return problems


# ------------------------------------------------------------------ the invariants

def _leftover_locks_and_tokens(world: LocalWorld, running: set[str]) -> list[str]:
    problems = []
    for item in _scan(world):
        pk, sk = str(item["pk"]), str(item["sk"])
        if pk.startswith("LOCK#") and sk == "LOCK" and item.get("execution_arn") not in running:
            problems.append(f"lock on batch {pk.removeprefix('LOCK#')} still held by run {item.get('run_id')} "
                            f"({_ended(item.get('execution_arn'))})")
        if sk == "TOKEN":
            token = TaskTokenRecord.model_validate_json(item["doc"])
            run = _state(world).find_run(token.run_id)
            if run is None or run.execution_arn not in running:
                problems.append(f"{token.kind.value} task token of run {token.run_id} still stored for "
                                f"{token.merge_request_url} ({_ended(run.execution_arn if run else None)})")
    return problems


def _stuck(world: LocalWorld, running: set[str]) -> list[str]:
    problems = [f"execution {arn.rsplit(':', 1)[-1]} still RUNNING" for arn in sorted(running)]
    for run in _runs(world):
        if run.status == RunStatus.RUNNING and run.execution_arn not in running:
            problems.append(f"run {run.run_id} still recorded RUNNING at {run.stage} though its execution ended")
    problems += [f"ExecutionEnded failed on {event['detail']['name']}: {error}"
                 for event, error in world.engine.undelivered]
    return problems


def _unwatched_merge_requests(world: LocalWorld, running: set[str]) -> list[str]:
    project = world.scenario.gitlab_project
    state = _state(world)
    problems = []
    for mr in world.gitlab.merge_requests(project):
        if mr["state"] != "opened":
            continue
        token = state.get_task_token(str(mr["web_url"]))
        run = state.find_run(token.run_id) if token else None
        if run is not None and run.execution_arn in running:
            continue  # a running execution waits on it
        if ROLLBACK_BRANCH in str(mr["source_branch"]) and world.gitlab.notes(project, mr["iid"]):
            continue  # a rollback MR GUARD stopped waiting for, left open with a comment saying so
        kind = "rollback MR" if ROLLBACK_BRANCH in str(mr["source_branch"]) else "upgrade MR"
        problems.append(f"{kind} !{mr['iid']} is open and no execution waits on it")
    return problems


def _registry_differs_from_clusters(world: LocalWorld) -> list[str]:
    registry = ClusterRegistry(world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.table_name),
                               world.config.tenant)
    problems = []
    for spec in world.scenario.fleet:
        recorded = registry.get(spec.cluster).current_istio_version
        running = world.kubernetes.helm_release_versions(spec.cluster)[1]
        if recorded != running:
            problems.append(f"registry says {spec.cluster} runs {recorded}, the cluster runs {running}")
    return problems


# ------------------------------------------------------------------ reading the world

def _state(world: LocalWorld) -> StateStore:
    return StateStore(_table(world))


def _table(world: LocalWorld) -> Any:
    return world.engine.resource("dynamodb").Table(world.config.aws.dynamodb.state_table_name)


def _scan(world: LocalWorld) -> list[dict[str, Any]]:
    table, items, kwargs = _table(world), [], {"ConsistentRead": True}
    while True:
        page = table.scan(**kwargs)
        items += page.get("Items", [])
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def _runs(world: LocalWorld) -> list[RunRecord]:
    metas: dict[str, dict[str, Any]] = {}
    parts: dict[str, list[dict[str, Any]]] = {}
    for item in sorted(_scan(world), key=lambda i: (str(i["pk"]), str(i["sk"]))):
        if not str(item["pk"]).startswith("RUN#"):
            continue
        if item["sk"] == "META":
            metas[str(item["pk"])] = item
        elif str(item["sk"]).startswith("CLUSTERS#"):  # the run's clusters (guard.stores.state.RunClusters)
            parts.setdefault(str(item["pk"]), []).append(item)
    return [run_from_items(meta, parts.get(pk, [])) for pk, meta in metas.items()]


def _running_executions(world: LocalWorld) -> set[str]:
    sfn = world.engine.client("stepfunctions")
    running = set()
    for machine in sfn.list_state_machines()["stateMachines"]:
        for page in sfn.get_paginator("list_executions").paginate(
                stateMachineArn=machine["stateMachineArn"], statusFilter="RUNNING"):
            running |= {e["executionArn"] for e in page["executions"]}
    return running


def _ended(execution_arn: Any) -> str:
    return f"its execution {str(execution_arn).rsplit(':', 1)[-1]} has ended" if execution_arn else "no execution"
