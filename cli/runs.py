"""Reading runs from outside: which execution is a batch's run, and what it is doing now.

A run's details live in the state table under `RUN#<execution name>` (its record, one item per
cluster's precheck and verdict, the rollback); the execution's status and the soak's timing come
from Step Functions. One `RunView` is read with one Query, one DescribeExecution and, while the
run soaks, one page of history: cheap enough to poll for hours.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from guard.errors import InvalidInput

from cli.where import Deployment

# Wait states of a fixed length: (state name, the plan field holding it in seconds). The main soak is a
# loop (Soak check -> SoakWait) whose length is read from the run's soak record at every check.
SOAK_STATES = {"ExtraSoak": "revalidate_seconds"}
SOAK_LOOP = ("Soak", "SoakOver", "SoakWait")
HISTORY_PAGE = 100  # newest events read while soaking (the soak's entry is among them)
LATEST_SCAN = 200  # executions looked at to find a batch's latest run when its record is gone


@dataclass
class ClusterRow:
    """One cluster of a run, as `guard monitor` / `guard status` show it."""

    cluster: str
    from_version: str
    to_version: str
    precheck: str = "-"
    verdict: str = "-"
    detail: str = ""


@dataclass
class RunView:
    """A run at one moment: the execution, the record, the clusters, the soak."""

    execution_arn: str
    run_id: str
    status: str  # the execution's: RUNNING, SUCCEEDED, FAILED, TIMED_OUT, ABORTED
    batch: str | None = None
    kind: str = "upgrade"  # upgrade | rollback (a manual `guard rollback`)
    target_version: str | None = None
    stage: str | None = None
    failed_stage: str | None = None
    outcome: str | None = None
    merge_request_url: str | None = None
    rollback_merge_request_url: str | None = None
    soak_seconds: float | None = None
    soak_left_seconds: float | None = None
    error: str | None = None
    cause: str | None = None
    started_at: str | None = None
    finished_at: str | None = None
    clusters: list[ClusterRow] = field(default_factory=list)
    execution_input: dict[str, Any] = field(default_factory=dict)
    record_found: bool = False
    soak_over: bool = False  # the run's soak record says its soak ended

    def as_dict(self) -> dict[str, Any]:
        """The view as plain data (`-o json|yaml`)."""
        data = {k: v for k, v in self.__dict__.items() if k not in ("clusters", "record_found", "soak_over")}
        data["clusters"] = [c.__dict__ for c in self.clusters]
        return data


def execution_input(deployment: Deployment, arn: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """(DescribeExecution, its parsed input)."""
    described = deployment.aws.call("stepfunctions", "describe_execution", executionArn=arn)
    try:
        parsed = json.loads(described.get("input") or "{}")
    except ValueError:
        parsed = {}
    return described, parsed if isinstance(parsed, dict) else {}


def read_view(deployment: Deployment, arn: str, *, with_soak: bool = True) -> RunView:
    """What the run of execution `arn` is doing now."""
    described, given = execution_input(deployment, arn)
    name = described.get("name") or arn.rsplit(":", 1)[-1]
    view = RunView(execution_arn=arn, run_id=name, status=described["status"], batch=given.get("batch"),
                   kind="rollback" if given.get("action") == "rollback" else "upgrade",
                   target_version=given.get("target_version"), error=described.get("error"),
                   cause=described.get("cause"), execution_input=given,
                   started_at=_iso(described.get("startDate")), finished_at=_iso(described.get("stopDate")))
    if deployment.state_table:
        _read_record(deployment, view)
    if with_soak and view.status == "RUNNING" and view.stage in (None, "soaking", "restarting_sidecars",
                                                                 "waiting_for_flux"):
        _read_soak(deployment, view)
    return view


def _read_record(deployment: Deployment, view: RunView) -> None:
    from boto3.dynamodb.conditions import Key
    from guard.core.run import ClusterVerdict, PrecheckReport
    from guard.stores.failure import rollback_from_items
    from guard.stores.state import run_from_items

    table = deployment.aws.table(deployment.state_table or "")
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"KeyConditionExpression": Key("pk").eq(f"RUN#{view.run_id}"), "ConsistentRead": True}
    while True:
        page = deployment.aws.run("dynamodb.Query", lambda: table.query(**kwargs))
        items.extend(page.get("Items", []))
        if "LastEvaluatedKey" not in page:
            break
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
    by_sk = {str(item["sk"]): item for item in items}
    meta = by_sk.get("META")
    if meta is None:
        return
    record = run_from_items(meta, [by_sk[sk] for sk in sorted(by_sk) if sk.startswith("CLUSTERS#")])
    view.record_found = True
    view.batch, view.target_version = record.batch, record.target_version
    view.stage = record.stage.value
    view.failed_stage = record.failed_stage.value if record.failed_stage else None
    view.outcome = record.outcome.value if record.outcome else None
    view.merge_request_url = record.merge_request_url
    view.error, view.cause = view.error or record.error, view.cause or record.cause
    soak = by_sk.get("SOAK")
    if soak is not None:  # the length in force (it may have changed since Plan)
        view.soak_seconds = float(soak["soak_seconds"])
        view.soak_over = bool(soak.get("ended_at"))
    rollback = by_sk.get("ROLLBACK")
    if rollback is not None:
        view.rollback_merge_request_url = rollback_from_items(
            rollback, [by_sk[sk] for sk in sorted(by_sk) if sk.startswith("ROLLBACK#CLUSTERS#")]).merge_request_url
    for cluster in record.clusters:
        row = ClusterRow(cluster=cluster, from_version=record.from_versions.get(cluster, "?"),
                         to_version=record.target_version)
        if view.kind == "rollback":
            row.from_version, row.to_version = record.target_version, record.from_versions.get(cluster, "?")
        precheck = by_sk.get(f"CLUSTER#{cluster}#PRECHECK")
        if precheck is not None:
            report = PrecheckReport.model_validate_json(precheck["doc"])
            row.precheck = "pass" if report.passed else "fail"
            if not report.passed:
                row.detail = "; ".join(f"{r.check_name}: {r.message}" for r in report.failures())[:200]
        verdict = by_sk.get(f"CLUSTER#{cluster}#VALIDATION")
        if verdict is not None:
            judged = ClusterVerdict.model_validate_json(verdict["doc"])
            row.verdict = judged.outcome.value
            if judged.outcome.value != "pass":
                row.detail = judged.summary()[:200]
        view.clusters.append(row)


def _read_soak(deployment: Deployment, view: RunView) -> None:
    """The soak's length and time left, from the newest history events.

    The main soak loops (Soak check -> SoakWait): the newest SoakWait's input holds what the last
    check saw (`$.soak.left_seconds`, `$.soak.soak_seconds`); the time since that Wait began, on the
    deployment's clock, is taken off, and a length changed since then moves the end. ExtraSoak is a
    Wait of the plan's `revalidate_seconds`."""
    if view.soak_over and view.stage not in (None, "soaking"):
        return
    page = deployment.aws.call("stepfunctions", "get_execution_history", executionArn=view.execution_arn,
                               reverseOrder=True, maxResults=HISTORY_PAGE)
    for event in page.get("events", []):
        kind = event["type"]
        name = (event.get("stateEnteredEventDetails") or event.get("stateExitedEventDetails") or {}).get("name")
        if kind == "WaitStateExited" and name in SOAK_STATES:
            return  # the newest extra soak is over
        if kind.endswith("StateEntered") and name not in SOAK_LOOP and name not in SOAK_STATES:
            if name in ("Validate", "ValidateChunk", "ValidateCluster"):
                return  # the soak is over: validation began after it
            continue
        if kind != "WaitStateEntered" or name not in (*SOAK_STATES, "SoakWait"):
            continue
        details = event.get("stateEnteredEventDetails", {})
        try:
            state = json.loads(details.get("input") or "{}")
            if name == "SoakWait":
                checked = state["soak"]
                seconds = float(view.soak_seconds or checked["soak_seconds"])
                left_then = float(checked["left_seconds"]) + seconds - float(checked["soak_seconds"])
            else:
                seconds = left_then = float(state["plan"][SOAK_STATES[name]])
        except (ValueError, KeyError, TypeError, AttributeError):
            return
        entered: datetime = event["timestamp"]
        elapsed = (datetime.now(UTC) - entered.astimezone(UTC)).total_seconds() * deployment.speedup
        view.soak_seconds, view.soak_left_seconds = seconds, max(0.0, left_then - elapsed)
        view.stage = view.stage or "soaking"
        return


def _iso(value: Any) -> str | None:
    return value.isoformat() if isinstance(value, datetime) else (str(value) if value else None)


# ------------------------------------------------------------------ which run is the batch's
def _batch_executions(deployment: Deployment, status: str | None) -> list[dict[str, Any]]:
    kwargs: dict[str, Any] = {"stateMachineArn": deployment.machine("batch"), "maxResults": 100}
    if status:
        kwargs["statusFilter"] = status
    found: list[dict[str, Any]] = []
    while len(found) < LATEST_SCAN:
        page = deployment.aws.call("stepfunctions", "list_executions", **kwargs)
        found.extend(page.get("executions", []))
        if not page.get("nextToken"):
            break
        kwargs["nextToken"] = page["nextToken"]
    found.sort(key=lambda e: e["startDate"], reverse=True)
    return found


def find_batch_run(deployment: Deployment, batch: str) -> str:
    """The execution ARN of `batch`'s current run (the lock holder's, else a running one), else its latest.

    InvalidInput when the batch never ran here.
    """
    state = deployment.state() if deployment.state_table else None
    if state is not None:
        lock = deployment.aws.run("dynamodb.GetItem", lambda: state.lock(batch))
        if lock is not None and lock.execution_arn:
            return str(lock.execution_arn)
    for status in ("RUNNING", None):
        for execution in _batch_executions(deployment, status):
            _, given = execution_input(deployment, execution["executionArn"])
            if given.get("batch") == batch:
                return str(execution["executionArn"])
    known = ""
    if deployment.config is not None:
        names = [b.name for b in deployment.config.batches]
        if batch not in names:
            raise InvalidInput(f"batch '{batch}' is not in the config (batches: {', '.join(names)})")
        known = " (it is in the config)"
    raise InvalidInput(f"batch '{batch}' has no run in {deployment.where}{known}: start one with "
                       f"`guard run --batch {batch} --target-version VERSION`")


def latest_runs(deployment: Deployment) -> dict[str, dict[str, Any]]:
    """Each batch's latest run record (state table scan of `RUN#…/META`): batch -> record fields."""
    from boto3.dynamodb.conditions import Attr

    deployment.state()  # InvalidInput when the state table is unknown
    table = deployment.aws.table(deployment.state_table or "")
    latest: dict[str, dict[str, Any]] = {}
    kwargs: dict[str, Any] = {"FilterExpression": Attr("sk").eq("META") & Attr("pk").begins_with("RUN#"),
                              "ConsistentRead": True}
    while True:
        page = deployment.aws.run("dynamodb.Scan", lambda: table.scan(**kwargs))
        for item in page.get("Items", []):
            try:
                doc = json.loads(item["doc"])
            except (KeyError, ValueError):
                continue
            batch = doc.get("batch")
            if batch and (batch not in latest or str(doc.get("started_at")) > str(latest[batch].get("started_at"))):
                latest[batch] = doc
        if "LastEvaluatedKey" not in page:
            return latest
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]
