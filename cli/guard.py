"""`guard`: start, follow and judge GUARD executions from a terminal or a CI job.

    guard run --batch prod-canary --target-version 1.20.0 --tenant example --wait
    guard rollout --target-version 1.20.0 --tenant example --wait
    guard rollback --batch prod-canary --reason "p95 latency" --tenant example
    guard status <execution-arn> [--wait]
    guard validate-config config/example.yaml
    guard registry import|export FILE --config config/example.yaml
    guard registry reconcile --batch prod-canary --config config/example.yaml
    guard calibrate --batch prod-canary --days 7 --config config/example.yaml
    guard run --local --scenario scenarios/default.yaml --batch dev-1 --target-version 1.20.0

Executions start through boto3 (credentials, region and AWS_ENDPOINT_URL from the environment).
The state machine is `--state-machine-arn`, else the `StateMachineArn` / `RolloutStateMachineArn`
output of the CloudFormation stack `Guard-<tenant>`. `--local` runs the same command against the
local rehearsal (moto + simulators) built from a scenario file. Exit codes: EXIT_CODES below.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

from guard.errors import ROLLED_BACK_ERRORS, ConfigError, GuardError, InvalidInput
from guard.executions import execution_history

SUCCEEDED, FAILED, BAD_INPUT, ROLLED_BACK, WAITING = 0, 1, 2, 3, 4
EXIT_CODES = {
    SUCCEEDED: "succeeded (or, without --wait, started)",
    FAILED: "failed (a check, the MR, Flux, validation, a prerequisite, a change window, ...)",
    BAD_INPUT: "bad input or config (refused before anything changed)",
    ROLLED_BACK: "rolled back (the upgrade hurt and was undone)",
    WAITING: "still running when --wait ended: usually waiting for a person to merge the MR",
}
# Errors that mean "the request itself was wrong": nothing started, fix the command or config.
_BAD_INPUT_ERRORS = {"InvalidInput", "UnknownBatch", "UnknownCluster", "VersionNotAllowed", "ConfigError",
                     "States.Runtime"}
# Step Functions API errors that mean the command named something wrong.
_BAD_REQUEST_CODES = {"ValidationException", "InvalidArn", "StateMachineDoesNotExist", "InvalidExecutionInput",
                      "InvalidName", "ExecutionDoesNotExist", "ExecutionAlreadyExists"}
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIO = ROOT / "scenarios" / "default.yaml"


def exit_code(status: str, error: str | None) -> int:
    """The process exit code for an execution's status and error name."""
    if status == "SUCCEEDED":
        return SUCCEEDED
    if status == "RUNNING":
        return WAITING
    if error in ROLLED_BACK_ERRORS:
        return ROLLED_BACK
    if error in _BAD_INPUT_ERRORS:
        return BAD_INPUT
    return FAILED


# ------------------------------------------------------------------ where executions run
class Target:
    """A Step Functions endpoint and the tenant's two state machines."""

    def __init__(self, sfn: Any, batch_arn: str | None, rollout_arn: str | None) -> None:
        self.sfn = sfn
        self.batch_arn = batch_arn
        self.rollout_arn = rollout_arn

    def machine(self, kind: str) -> str:
        arn = self.batch_arn if kind == "batch" else self.rollout_arn
        if not arn:
            raise InvalidInput(f"no {kind} state machine: pass --state-machine-arn, or --tenant/--config so the "
                               "ARN can be read from the Guard-<tenant> stack outputs")
        return arn


@contextmanager
def target(args: argparse.Namespace, kind: str, out: TextIO) -> Iterator[Target]:
    """The remote target (boto3), or a local rehearsal world that lives as long as the command."""
    if args.local:
        from sandbox.scenario import load_scenario
        from sandbox.world import LocalWorld

        scenario = load_scenario(args.scenario)
        print(f"local rehearsal: {scenario.name} ({len(scenario.fleet)} cluster(s), clock ×{scenario.speedup:g})",
              file=out)
        with LocalWorld(scenario) as world:
            yield Target(world.engine.client("stepfunctions"), world.state_machine_arn,
                         world.rollout_state_machine_arn)
        return
    import boto3

    region = args.region or (_config(args).aws.region if args.config else None)
    sfn = boto3.client("stepfunctions", region_name=region)
    if args.state_machine_arn:
        yield Target(sfn, args.state_machine_arn if kind == "batch" else None,
                     args.state_machine_arn if kind == "rollout" else None)
        return
    tenant = args.tenant or (_config(args).tenant if args.config else None)
    if not tenant:
        raise InvalidInput("say which state machine: --state-machine-arn ARN, --tenant NAME or --config FILE")
    outputs = stack_outputs(boto3.client("cloudformation", region_name=region), f"Guard-{tenant}")
    yield Target(sfn, outputs.get("StateMachineArn"), outputs.get("RolloutStateMachineArn"))


def stack_outputs(cloudformation: Any, stack: str) -> dict[str, str]:
    from botocore.exceptions import ClientError

    try:
        stacks = cloudformation.describe_stacks(StackName=stack)["Stacks"]
    except ClientError as e:
        raise InvalidInput(f"cannot read stack {stack}: {e.response.get('Error', {}).get('Message', e)}") from e
    return {o["OutputKey"]: o["OutputValue"] for o in stacks[0].get("Outputs", [])}


def _config(args: argparse.Namespace) -> Any:
    from guard.config.loader import load_config

    return load_config(args.config)


# ------------------------------------------------------------------ following an execution
def describe_event(event: dict[str, Any]) -> str | None:
    """One progress line for a history event, or None for the noise."""
    kind = event["type"]
    if kind.endswith("StateEntered"):
        name = event["stateEnteredEventDetails"]["name"]
        if name in ("CheckFluxSync", "FluxSynced", "WaitForFlux", "RolloutSucceeded?", "ReadRefusal",
                    "BatchSucceeded", "BatchFailed", "RunBatch", "RecordBatch", "Claim", "RunWaitOrSkip",
                    "WaitForTurn", "BatchSkipped"):
            return None
        detail = _json(event["stateEnteredEventDetails"].get("input"))
        cluster = detail.get("cluster_id") if isinstance(detail, dict) else None
        return f"→ {name}" + (f" [{cluster}]" if cluster else "")
    if kind == "TaskSucceeded":
        output = _json(event["taskSucceededEventDetails"].get("output"))
        payload = output.get("Payload") if isinstance(output, dict) else None
        if isinstance(payload, dict) and payload.get("action") == "run":
            return f"▶ starting {(payload.get('input') or {}).get('batch', '?')}"
        if isinstance(output, dict) and "ExecutionArn" in output:
            return f"  ✓ batch {(_json(output.get('Input')) or {}).get('batch', '?')} succeeded"
    if kind == "TaskFailed":
        details = event["taskFailedEventDetails"]
        described = _json(details.get("cause"))
        if isinstance(described, dict) and "Input" in described:
            batch = (_json(described.get("Input")) or {}).get("batch", "?")
            return f"  ✗ batch {batch}: {described.get('Error')}"
        return f"  ✗ {details.get('error')}"
    return None


def follow(sfn: Any, arn: str, *, timeout: float, out: TextIO, poll: float = 2.0,
           sleep: Callable[[float], None] = time.sleep) -> dict[str, Any]:
    """Print progress until the execution ends or `timeout` seconds pass; returns DescribeExecution."""
    live = out.isatty()
    seen = 0
    started = time.monotonic()
    while True:
        events = execution_history(sfn, arn)
        for event in events[seen:]:
            line = describe_event(event)
            if line:
                print(("\r\033[K" if live else "") + line, file=out, flush=True)
        seen = len(events)
        described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        elapsed = time.monotonic() - started
        if described["status"] != "RUNNING" or elapsed >= timeout:
            if live:
                print("\r\033[K", end="", file=out)
            return described
        if live:  # one line rewritten in place on a terminal; CI logs get only the lines above
            print(f"\r\033[K  … {described['status'].lower()} for {int(elapsed)}s", end="", file=out, flush=True)
        sleep(min(poll, max(0.05, timeout - elapsed)))


def _json(text: Any) -> Any:
    try:
        return json.loads(text) if isinstance(text, str) else text
    except ValueError:
        return None


def report(described: dict[str, Any], out: TextIO) -> int:
    """Print the outcome (a rollout's per-batch table too) and return the exit code."""
    status, error, cause = described["status"], described.get("error"), described.get("cause")
    code = exit_code(status, error)
    summary = _json(described.get("output")) if status == "SUCCEEDED" else _json(cause)
    if isinstance(summary, dict) and isinstance(summary.get("batches"), list):
        for b in summary["batches"]:
            print(f"  {b['batch']:<16} {b['status']:<12} {b.get('reason') or ''}", file=out)
    if status == "RUNNING":
        print(f"still RUNNING: {described['executionArn']} (probably waiting for a merge request); "
              f"follow it with `guard status {described['executionArn']} --wait`", file=out)
    elif status == "SUCCEEDED":
        print(f"SUCCEEDED: {described['executionArn']}", file=out)
    else:
        text = cause if not isinstance(summary, dict) else f"{summary.get('counts')}"
        print(f"{status} {error}: {text}", file=out)
    return code


# ------------------------------------------------------------------ commands
def _start(args: argparse.Namespace, kind: str, execution_input: dict[str, Any], out: TextIO) -> int:
    with target(args, kind, out) as where:
        name = args.name or f"{kind}-{uuid.uuid4().hex[:12]}"
        arn = where.sfn.start_execution(stateMachineArn=where.machine(kind), name=name,
                                        input=json.dumps(execution_input))["executionArn"]
        print(f"started {arn}", file=out, flush=True)
        if not (args.wait or args.local):
            return SUCCEEDED
        return report(follow(where.sfn, arn, timeout=args.timeout, out=out, poll=0.2 if args.local else 2.0), out)


def cmd_run(args: argparse.Namespace, out: TextIO) -> int:
    execution_input: dict[str, Any] = {"batch": args.batch, "target_version": args.target_version}
    if args.soak_period is not None:
        execution_input["soak_period_minutes"] = args.soak_period
    if args.ignore_alerts:
        execution_input["ignore_alerts"] = True
    if args.requested_by:
        execution_input["requested_by"] = args.requested_by
    return _start(args, "batch", execution_input, out)


def cmd_rollout(args: argparse.Namespace, out: TextIO) -> int:
    execution_input: dict[str, Any] = {"target_version": args.target_version,
                                       "batches": "all" if args.batches == "all" else
                                       [b.strip() for b in args.batches.split(",") if b.strip()]}
    if args.soak_period is not None:
        execution_input["soak_period_minutes"] = args.soak_period
    overrides = {}
    for item in args.soak_override or []:
        batch, _, minutes = item.partition("=")
        try:
            overrides[batch] = float(minutes)
        except ValueError as e:
            raise InvalidInput(f"--soak-override {item!r}: use BATCH=MINUTES") from e
    if overrides:
        execution_input["soak_overrides"] = overrides
    for key in ("on_failure", "max_concurrent_batches", "requested_by"):
        if getattr(args, key):
            execution_input[key] = getattr(args, key)
    return _start(args, "rollout", execution_input, out)


def cmd_rollback(args: argparse.Namespace, out: TextIO) -> int:
    # The batch machine's manual rollback entry (docs/failure-handling.md); a deployment whose
    # Plan does not know `action` refuses it with InvalidInput (exit 2).
    execution_input: dict[str, Any] = {"action": "rollback", "batch": args.batch,
                                       "reason": args.reason or "requested from the guard CLI"}
    if args.requested_by:
        execution_input["requested_by"] = args.requested_by
    return _start(args, "batch", execution_input, out)


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    import boto3

    sfn = boto3.client("stepfunctions", region_name=args.region)
    if args.wait:
        return report(follow(sfn, args.execution_arn, timeout=args.timeout, out=out), out)
    return report(sfn.describe_execution(executionArn=args.execution_arn), out)


def cmd_validate_config(args: argparse.Namespace, out: TextIO) -> int:
    from guard.checks.custom import verify_custom_checks
    from guard.config.loader import load_config
    from guard.config.schedules import schedule_expression
    from guard.rollout.dag import RolloutGraph

    for file in args.files:
        config = load_config(file)
        verify_custom_checks(config.custom_checks, Path(file).parent / config.custom_checks_path, str(file))
        graph = RolloutGraph.build([b.name for b in config.batches], config.batch_order)
        for schedule in config.schedules:
            schedule_expression(schedule.cron, f"{file}: schedules.{schedule.name}.cron")
        waves = " → ".join("{" + ", ".join(w) + "}" if len(w) > 1 else w[0] for w in graph.waves())
        print(f"{file}: ok (tenant {config.tenant}, {len(config.batches)} batches, "
              f"{sum(len(b.clusters) for b in config.batches)} clusters)\n  rollout order: {waves}", file=out)
    return SUCCEEDED


def build_parser() -> argparse.ArgumentParser:
    from cli import calibrate, registry

    parser = argparse.ArgumentParser(
        prog="guard", description="GUARD: Istio upgrades on AWS Step Functions, for people and CI jobs.",
        epilog="exit codes: " + "; ".join(f"{k} {v}" for k, v in EXIT_CODES.items()))
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def starter(name: str, help_text: str) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text)
        where = p.add_argument_group("where")
        where.add_argument("--tenant", help="tenant name: the state machine comes from stack Guard-<tenant>")
        where.add_argument("--config", help="tenant config file (its tenant and aws.region)")
        where.add_argument("--state-machine-arn", help="the state machine to start (skips the stack lookup)")
        where.add_argument("--region", help="AWS region (default: the config's, else the environment's)")
        where.add_argument("--local", action="store_true", help="run against the local rehearsal instead of AWS")
        where.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO,
                           help="with --local: the scenario that builds the local world (default: %(default)s)")
        p.add_argument("--wait", action="store_true", help="follow the execution until it ends (always with --local)")
        p.add_argument("--timeout", type=float, default=3600,
                       help="seconds --wait follows before giving up with exit code 4 (default %(default)s)")
        p.add_argument("--name", help="execution name (default: generated); the same name is idempotent")
        p.add_argument("--requested-by", help="recorded with the run (default: none)")
        return p

    run = starter("run", "upgrade one batch")
    run.add_argument("--batch", required=True)
    run.add_argument("--target-version", required=True)
    run.add_argument("--soak-period", type=float, metavar="MINUTES")
    run.add_argument("--ignore-alerts", action="store_true")
    run.set_defaults(func=cmd_run)

    rollout = starter("rollout", "upgrade many batches in batch_order as one execution")
    rollout.add_argument("--target-version", required=True)
    rollout.add_argument("--batches", default="all", help="comma-separated batch names, or all (default)")
    rollout.add_argument("--soak-period", type=float, metavar="MINUTES", help="soak of every batch")
    rollout.add_argument("--soak-override", action="append", metavar="BATCH=MINUTES", help="soak of one batch")
    rollout.add_argument("--on-failure", choices=["halt", "continue_independent"])
    rollout.add_argument("--max-concurrent-batches", type=int)
    rollout.set_defaults(func=cmd_rollout)

    rollback = starter("rollback", "roll a batch back to the version it ran before its last upgrade")
    rollback.add_argument("--batch", required=True)
    rollback.add_argument("--reason")
    rollback.set_defaults(func=cmd_rollback)

    status = commands.add_parser("status", help="show (or --wait for) an execution's outcome")
    status.add_argument("execution_arn")
    status.add_argument("--region")
    status.add_argument("--wait", action="store_true")
    status.add_argument("--timeout", type=float, default=3600)
    status.set_defaults(func=cmd_status)

    validate = commands.add_parser("validate-config", help="validate tenant config files (what the synth checks)")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(func=cmd_validate_config)

    registry.add_commands(commands)
    calibrate.add_command(commands)
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command; returns the exit code (table: EXIT_CODES, docs/ci-cd.md)."""
    out = out or sys.stdout
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0) or a usage error argparse already printed (2)
        return e.code if isinstance(e.code, int) else BAD_INPUT
    try:
        if hasattr(args, "func"):
            code: int = args.func(args, out)
            return code
        registry_code: int = args.run(args)  # `registry ...` (cli/registry.py), `calibrate` (cli/calibrate.py)
        return registry_code
    except (ConfigError, InvalidInput) as e:
        print(f"error: {e}", file=sys.stderr)
        return BAD_INPUT
    except GuardError as e:
        print(f"error: {e}", file=sys.stderr)
        return FAILED
    except Exception as e:
        from botocore.exceptions import BotoCoreError, ClientError

        if isinstance(e, ClientError):
            code = e.response.get("Error", {}).get("Code", "")
            print(f"error: {code}: {e.response.get('Error', {}).get('Message', e)}", file=sys.stderr)
            return BAD_INPUT if code in _BAD_REQUEST_CODES else FAILED
        if isinstance(e, BotoCoreError):  # no region, no credentials, no endpoint
            print(f"error: {e}", file=sys.stderr)
            return BAD_INPUT
        if type(e).__name__ == "ScenarioError":
            print(f"error: {e}", file=sys.stderr)
            return BAD_INPUT
        raise


if __name__ == "__main__":
    sys.exit(main())
