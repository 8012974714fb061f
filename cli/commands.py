"""The seed's operator commands: run, monitor, rollback, abort, retry, status, list.

Each resolves the deployment (cli.where), acts through boto3, follows the run (cli.follow) and
returns an exit code from the one table (cli.follow.EXIT_CODES, docs/cli.md).
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TextIO

from guard.errors import InvalidInput

from cli.aws import Aws
from cli.follow import (
    BAD_INPUT,
    FAILED,
    INTERRUPTED,
    SUCCEEDED,
    Interrupted,
    conclude,
    exit_code,
    follow,
    interruptible,
)
from cli.output import duration, emit, grid
from cli.runs import RunView, execution_input, find_batch_run, latest_runs, read_view
from cli.where import LOCAL_CREDENTIALS, Deployment, resolve

# Failed stages after which nothing reached the clusters: a new run of the same input is safe.
# After a merge, a retry would stack a second change on a half-applied one: refused (guard rollback,
# or a new `guard run` once a person has looked, is the way on).
RETRY_SAFE_STAGES = {"prechecks": "the prechecks refused: nothing was changed",
                     "merge": "the MR was closed or failed: nothing was merged",
                     "merge_timeout": "nobody merged the MR in time: nothing was merged"}


# ------------------------------------------------------------------ where
@contextmanager
def deployment(args: argparse.Namespace, out: TextIO) -> Iterator[Deployment]:
    """The deployment of the command; with `--local`, a rehearsal world that lives as long as the command."""
    if getattr(args, "local", False):
        from sandbox.scenario import load_scenario
        from sandbox.world import LocalWorld

        scenario = load_scenario(args.scenario)
        print(f"local rehearsal: {scenario.name} ({len(scenario.fleet)} cluster(s), clock ×{scenario.speedup:g})",
              file=out)
        with LocalWorld(scenario) as world:
            aws = Aws("us-east-1", endpoint_url=world.engine.endpoint, credentials=LOCAL_CREDENTIALS)
            yield Deployment(aws=aws, tenant=world.config.tenant, where="the local rehearsal",
                             batch_arn=world.state_machine_arn, rollout_arn=world.rollout_state_machine_arn,
                             state_table=world.config.aws.dynamodb.state_table_name,
                             registry_table=world.config.aws.dynamodb.table_name, config=world.config,
                             speedup=scenario.speedup)
        return
    yield resolve(args)


def _poll(dep: Deployment) -> float:
    # The local stack answers at once and runs hundreds of times faster than real time.
    return 0.2 if dep.speedup > 1 else 5.0


def _start(dep: Deployment, kind: str, execution_input: dict[str, Any], name: str | None, out: TextIO) -> str:
    arn = dep.aws.call("stepfunctions", "start_execution", stateMachineArn=dep.machine(kind),
                       name=name or f"{kind}-{uuid.uuid4().hex[:12]}", input=json.dumps(execution_input))
    print(f"started {arn['executionArn']}", file=out, flush=True)
    return str(arn["executionArn"])


def _resume_hint(batch: str | None, arn: str) -> str:
    return f"guard monitor --batch {batch}" if batch else f"guard status {arn} --wait"


def _following(dep: Deployment, arn: str, batch: str | None, out: TextIO, **kwargs: Any) -> tuple[RunView | None,
                                                                                                   int | None]:
    """`follow`, printing how to resume when a signal or --timeout ends it."""
    try:
        with interruptible():
            view, code = follow(dep, arn, out, poll=_poll(dep), **kwargs)
    except (Interrupted, KeyboardInterrupt) as e:
        print(f"\nstopped following ({e or 'SIGINT'}); the run goes on. Resume with `{_resume_hint(batch, arn)}`",
              file=out, flush=True)
        return None, INTERRUPTED
    if code is not None and view.status == "RUNNING":  # --timeout
        print(f"still {view.stage or 'running'} after --timeout; the run goes on. Resume with "
              f"`{_resume_hint(batch, arn)}`", file=out, flush=True)
    return view, code


# ------------------------------------------------------------------ run
def run_input(args: argparse.Namespace) -> dict[str, Any]:
    given: dict[str, Any] = {"batch": args.batch, "target_version": args.target_version}
    for key in ("soak_period", "min_replicas", "max_unavailable", "requested_by"):
        value = getattr(args, key, None)
        if value is not None:
            given["soak_period_minutes" if key == "soak_period" else key] = value
    for key in ("ignore_alerts", "ensure_pdb", "enable_llm_analysis", "dry_run"):
        if getattr(args, key, False):
            given[key] = True
    return given


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    """Start the batch's run and follow it until its MR is open (--wait: until it ends; --dry-run: until its
    prechecks are judged: exit 0 when every cluster passed, non-zero with the reasons when they refused)."""
    with deployment(args, out) as dep:
        arn = _start(dep, "batch", run_input(args), args.name, out)
        wait = args.wait or getattr(args, "local", False)
        dry_run = bool(getattr(args, "dry_run", False))

        def mr_open(view: RunView) -> bool:
            return not wait and not dry_run and bool(view.merge_request_url)

        view, code = _following(dep, arn, args.batch, out, until=mr_open, timeout=args.timeout)
        if code is not None:
            return code
        assert view is not None
        print(f"[{args.batch}] review and merge the MR: {view.merge_request_url}\n"
              f"then follow the upgrade: guard monitor --batch {args.batch}", file=out, flush=True)
        return SUCCEEDED


def cmd_rollback(args: argparse.Namespace, out: TextIO) -> int:
    """Start a manual rollback of the batch; follow until its MR is open (--wait: until it ends)."""
    execution_input: dict[str, Any] = {"action": "rollback", "batch": args.batch,
                                       "reason": args.reason or "requested from the guard CLI"}
    if args.requested_by:
        execution_input["requested_by"] = args.requested_by
    with deployment(args, out) as dep:
        arn = _start(dep, "batch", execution_input, args.name, out)
        wait = args.wait or getattr(args, "local", False)
        view, code = _following(dep, arn, args.batch, out, timeout=args.timeout,
                                until=lambda v: not wait and bool(v.rollback_merge_request_url))
        if code is not None:
            return code
        assert view is not None
        print(f"[{args.batch}] review and merge the rollback MR: {view.rollback_merge_request_url}\n"
              f"then follow it: guard monitor --batch {args.batch}", file=out, flush=True)
        return SUCCEEDED


def cmd_rollout(args: argparse.Namespace, out: TextIO) -> int:
    """Start a rollout of many batches (the rollout state machine); --wait follows it to the end."""
    from cli.legacy import report, rollout_input, watch

    with deployment(args, out) as dep:
        arn = _start(dep, "rollout", rollout_input(args), args.name, out)
        if not (args.wait or getattr(args, "local", False)):
            return SUCCEEDED
        try:
            with interruptible():
                described = watch(dep, arn, timeout=args.timeout, out=out, poll=_poll(dep))
        except (Interrupted, KeyboardInterrupt) as e:
            print(f"\nstopped following ({e or 'SIGINT'}); the rollout goes on. Resume with "
                  f"`guard status {arn} --wait`", file=out)
            return INTERRUPTED
        return report(described, out)


# ------------------------------------------------------------------ monitor
def cmd_monitor(args: argparse.Namespace, out: TextIO) -> int:
    """Attach to the batch's current (else latest) run and follow it to its end."""
    dep = resolve(args)
    arn = find_batch_run(dep, args.batch)
    view = read_view(dep, arn)
    print(f"[{args.batch}] following {arn} ({view.status.lower()}"
          + (f", stage {view.stage}" if view.stage else "") + ")", file=out, flush=True)
    if args.soak_period is not None:
        from cli.soak import request_soak

        code = request_soak(dep, view, args.soak_period, out)
        if code is not None:
            return code
    if args.enable_llm_analysis:
        _say_llm(dep, view, out)
    _, code = _following(dep, arn, args.batch, out, timeout=args.timeout)
    return FAILED if code is None else code


def _say_llm(dep: Deployment, view: RunView, out: TextIO) -> None:
    """`--enable-llm-analysis` on a run already planned: say whether its failure path will ask the LLM."""
    planned = _plan_of(dep, view.execution_arn)
    if planned is None:
        print(f"[{view.batch}] LLM analysis: unknown until the run is planned", file=out)
    elif planned.get("llm_analysis"):
        print(f"[{view.batch}] LLM analysis: on (a failure is analysed and the analysis goes into the rollback MR)",
              file=out)
    else:
        print(f"[{view.batch}] warning: LLM analysis is off for this run (the tenant config's llm.enabled is false, "
              "or the run was started with it off); start runs with `guard run --enable-llm-analysis` on a "
              "config with llm.enabled: true", file=out)


def _plan_of(dep: Deployment, arn: str) -> dict[str, Any] | None:
    """The Plan task's output (`$.plan`) from the execution's first history events."""
    page = dep.aws.call("stepfunctions", "get_execution_history", executionArn=arn, maxResults=40)
    for event in page.get("events", []):
        if event["type"] == "TaskSucceeded":
            try:
                payload = json.loads(event["taskSucceededEventDetails"]["output"]).get("Payload")
            except (ValueError, KeyError, AttributeError):
                continue
            if isinstance(payload, dict) and "run_id" in payload and "clusters" in payload:
                return payload
    return None


# ------------------------------------------------------------------ status / list
def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    """One run now: by execution ARN, or the batch's current (else latest) run; --wait follows it."""
    if not args.execution_arn and not args.batch:
        raise InvalidInput("say which run: `guard status --batch B` or `guard status EXECUTION_ARN`")
    dep = _status_deployment(args)
    arn = args.execution_arn or find_batch_run(dep, args.batch)
    described, given = execution_input(dep, arn)
    if "batches" in given:  # a rollout: told from its history, with its per-batch table
        from cli.legacy import report, watch

        if args.wait:
            return report(watch(dep, arn, timeout=args.timeout, out=out, poll=_poll(dep)), out)
        return report(described, out)
    if args.wait:
        view, code = _following(dep, arn, args.batch, out, timeout=args.timeout)
        return FAILED if code is None else code
    view = read_view(dep, arn)
    table = _status_table(view)
    emit(view.as_dict(), args.output, out, table)
    if args.output == "table" and view.status != "RUNNING":
        conclude(view, out)
    return exit_code(view.status, view.error)


def _status_deployment(args: argparse.Namespace) -> Deployment:
    """The deployment; for an execution ARN alone, its region's Step Functions (no state table: less detail)."""
    try:
        return resolve(args)
    except InvalidInput:
        if not args.execution_arn:
            raise
        parts = args.execution_arn.split(":")
        region = args.region or (parts[3] if len(parts) > 3 else None)
        return Deployment(aws=Aws(region), tenant="?", where=f"execution {args.execution_arn}")


def _status_table(view: RunView) -> str:
    lines = [f"execution:     {view.execution_arn}", f"batch:         {view.batch or '?'} ({view.kind})",
             f"status:        {view.status}", f"stage:         {view.stage or '-'}"
             + (f" (failed at {view.failed_stage})" if view.failed_stage else ""),
             f"target:        {view.target_version or '-'}"]
    if view.outcome:
        lines.append(f"outcome:       {view.outcome}")
    if view.merge_request_url:
        lines.append(f"merge request: {view.merge_request_url}")
    if view.rollback_merge_request_url:
        lines.append(f"rollback MR:   {view.rollback_merge_request_url}")
    if view.soak_left_seconds is not None:
        lines.append(f"soak:          {duration(view.soak_left_seconds)} left of {duration(view.soak_seconds)}")
    if view.error:
        lines.append(f"error:         {view.error}: {view.cause or ''}")
    if view.clusters:
        lines.append(grid(["CLUSTER", "FROM", "TO", "PRECHECK", "VERDICT", "DETAIL"],
                          [[c.cluster, c.from_version, c.to_version, c.precheck, c.verdict, c.detail]
                           for c in view.clusters]))
    return "\n".join(lines)


def _lock_reader(state: Any, batch: str) -> Any:
    return lambda: state.lock(batch)


def cmd_list(args: argparse.Namespace, out: TextIO) -> int:
    """Batches, their clusters and running versions, the last run and its outcome, the lock holder."""
    from guard.stores.registry import ClusterRegistry

    dep = resolve(args)
    if not dep.registry_table:
        raise InvalidInput(f"{dep.where}: the registry table is unknown (pass --config or --tenant)")
    clusters = dep.aws.run("dynamodb.Query", ClusterRegistry(dep.aws.table(dep.registry_table), dep.tenant).all)
    by_batch: dict[str, list[Any]] = {}
    for cluster in clusters:
        by_batch.setdefault(cluster.batch_id, []).append(cluster)
    order = [b.name for b in dep.config.batches] if dep.config is not None else sorted(by_batch)
    runs = latest_runs(dep)
    state = dep.state()
    rows: list[dict[str, Any]] = []
    for batch in order + sorted(set(by_batch) - set(order)):
        members = sorted(by_batch.get(batch, []), key=lambda c: c.cluster_id)
        if dep.config is not None and batch in order:
            configured = dep.config.batch(batch).clusters
            known = {c.cluster_id for c in members}
            missing = [c for c in configured if c not in known]
        else:
            missing = []
        last = runs.get(batch) or {}
        lock = dep.aws.run("dynamodb.GetItem", _lock_reader(state, batch))
        rows.append({
            "batch": batch,
            "clusters": [{"cluster": c.cluster_id, "version": c.current_istio_version} for c in members]
                        + [{"cluster": c, "version": None} for c in missing],
            "last_run": last.get("run_id"), "last_target": last.get("target_version"),
            "last_status": last.get("status"), "last_outcome": last.get("outcome"),
            "last_stage": last.get("stage"), "last_started_at": last.get("started_at"),
            "lock_holder": lock.run_id if lock else None,
        })
    table = grid(["BATCH", "CLUSTERS", "VERSIONS", "LAST RUN", "TARGET", "OUTCOME", "LOCK"],
                 [[r["batch"], ",".join(c["cluster"] for c in r["clusters"]),
                   ",".join(sorted({c["version"] or "not in registry" for c in r["clusters"]})) or "-",
                   r["last_run"] or "-", r["last_target"] or "-",
                   (r["last_outcome"] or r["last_status"] or "-")
                   + (f" ({r['last_stage']})" if r["last_status"] == "running" else ""),
                   r["lock_holder"] or "-"] for r in rows])
    emit({"tenant": dep.tenant, "where": dep.where, "batches": rows}, args.output, out, table)
    return SUCCEEDED


# ------------------------------------------------------------------ abort / retry
def cmd_abort(args: argparse.Namespace, out: TextIO) -> int:
    """Stop the batch's running run; ExecutionEnded then records it, closes its open upgrade MR and
    releases the lock (what the console's Stop does). Waits until the lock is released."""
    dep = resolve(args)
    arn = find_batch_run(dep, args.batch)
    view = read_view(dep, arn, with_soak=False)
    if view.status != "RUNNING":
        print(f"[{args.batch}] nothing to abort: its latest run {arn} is {view.status}", file=out)
        return BAD_INPUT
    dep.aws.call("stepfunctions", "stop_execution", executionArn=arn, error="Aborted",
                 cause=(args.reason or "aborted from the guard CLI")[:32000])
    print(f"[{args.batch}] stopped {arn}", file=out, flush=True)
    state = dep.state() if dep.state_table else None
    deadline = time.monotonic() + args.timeout
    while state is not None and time.monotonic() < deadline:
        lock = dep.aws.run("dynamodb.GetItem", lambda: state.lock(args.batch))
        if lock is None or lock.execution_arn != arn:
            print(f"[{args.batch}] lock released"
                  + (f"; the upgrade MR {view.merge_request_url} is closed if it was still open"
                     if view.merge_request_url else ""), file=out)
            return SUCCEEDED
        time.sleep(_poll(dep))
    if state is not None:
        print(f"[{args.batch}] the execution stopped but its lock is still held after {args.timeout:g}s: the "
              "ExecutionEnded function did not run (see its dead-letter queue, docs/failure-handling.md)", file=out)
        return FAILED
    return SUCCEEDED


def cmd_retry(args: argparse.Namespace, out: TextIO) -> int:
    """Start the batch's failed run again when it failed before anything was merged; refuse otherwise."""
    dep = resolve(args)
    arn = find_batch_run(dep, args.batch)
    view = read_view(dep, arn, with_soak=False)
    if view.status == "RUNNING":
        raise InvalidInput(f"batch '{args.batch}': its run {arn} is still running ({view.stage}); follow it with "
                           f"`guard monitor --batch {args.batch}`")
    if view.status == "SUCCEEDED":
        raise InvalidInput(f"batch '{args.batch}': its latest run succeeded; nothing to retry")
    if view.kind == "rollback":
        raise InvalidInput(f"batch '{args.batch}': its latest run is a rollback ({view.status}); start it again "
                           f"with `guard rollback --batch {args.batch}`")
    stage = view.failed_stage
    if stage not in RETRY_SAFE_STAGES:
        raise InvalidInput(
            f"batch '{args.batch}': run {view.run_id} failed at {stage or 'an unknown stage'} "
            f"({view.error}): a retry is safe only before anything was merged "
            f"({', '.join(RETRY_SAFE_STAGES)}). Look at the clusters, then `guard rollback --batch {args.batch}` "
            f"or a new `guard run`")
    given = dict(view.execution_input)  # the same input: a retried dry run stays a dry run
    print(f"[{args.batch}] retrying run {view.run_id}, failed at {stage}: {RETRY_SAFE_STAGES[stage]}", file=out)
    new = _start(dep, "batch", given, args.name, out)
    _, code = _following(dep, new, args.batch, out, timeout=args.timeout,
                         until=lambda v: not args.wait and bool(v.merge_request_url))
    if code is not None:
        return code
    print(f"[{args.batch}] then follow the upgrade: guard monitor --batch {args.batch}", file=out)
    return SUCCEEDED
