"""`guard`: start, follow and act on GUARD runs from a terminal or a CI job, as the seed writes it.

    guard run --batch prod-canary --target-version 1.20.0      # prints the MR URL once it is open
    guard monitor --batch prod-canary --soak-period 240         # follows the run to its end
    guard rollback --batch prod-canary [--reason TEXT]
    guard abort --batch B | guard retry --batch B
    guard status [--batch B | EXECUTION_ARN] [-o json] | guard list [-o yaml]
    guard rollout --target-version 1.20.0 --wait
    guard local up | guard local down                           # the persistent local stack
    guard validate-config FILE... | guard registry ... | guard calibrate ...

The config is `--config FILE`, else ~/.guard/config.yaml; the deployment is the local stack while
it runs, else the tenant's CloudFormation stack (cli/where.py). boto3 uses the operator's own
credentials. Exit codes: one table, `EXIT_CODES` (cli/follow.py) and docs/cli.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from guard.errors import ConfigError, GuardError, InvalidInput

from cli.follow import BAD_INPUT, EXIT_CODES, FAILED, SUCCEEDED
from cli.output import FORMATS

# Step Functions API errors that mean the command named something wrong.
_BAD_REQUEST_CODES = {"ValidationException", "InvalidArn", "StateMachineDoesNotExist", "InvalidExecutionInput",
                      "InvalidName", "ExecutionDoesNotExist", "ExecutionAlreadyExists"}
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SCENARIO = ROOT / "scenarios" / "default.yaml"


def version() -> str:
    """The installed package's version (the source tree's when run from it)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as installed

    try:
        return installed("guard-serverless")
    except PackageNotFoundError:
        import tomllib

        return str(tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"])


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


def _where(p: argparse.ArgumentParser, local: bool = False) -> None:
    where = p.add_argument_group("where (default: ~/.guard/config.yaml; the local stack while it runs)")
    where.add_argument("--config", help="tenant config file (default: ~/.guard/config.yaml)")
    where.add_argument("--tenant", help="tenant name (default: the config's): the stack Guard-<tenant>")
    where.add_argument("--state-machine-arn", help="the batch state machine (skips the stack lookup)")
    where.add_argument("--region", help="AWS region (default: the config's aws.region, else the environment's)")
    if local:
        where.add_argument("--local", action="store_true",
                           help="run in a throw-away local rehearsal (moto + simulators) for this command only")
        where.add_argument("--scenario", type=Path, default=DEFAULT_SCENARIO,
                           help="with --local: the scenario that builds the rehearsal (default: %(default)s)")


def _output(p: argparse.ArgumentParser) -> None:
    p.add_argument("-o", "--output", choices=FORMATS, default="table", help="table (default), json or yaml")


def _timeout(p: argparse.ArgumentParser, what: str) -> None:
    p.add_argument("--timeout", type=float, metavar="SECONDS",
                   help=f"stop following after SECONDS (exit 124, the run goes on); default: {what}")


def build_parser() -> argparse.ArgumentParser:
    from cli import calibrate, local, registry
    from cli import commands as c
    parser = argparse.ArgumentParser(
        prog="guard", formatter_class=argparse.RawDescriptionHelpFormatter,
        description="GUARD: Istio upgrades across EKS fleets on AWS Step Functions, for people and CI jobs.",
        epilog="exit codes:\n" + "\n".join(f"  {k:<4} {v}" for k, v in EXIT_CODES.items())
        + "\n\ndocs/cli.md has every command; `guard COMMAND --help` its flags.")
    parser.add_argument("--version", action="version", version=f"guard {version()}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help_text: str, func: object, local_flag: bool = False) -> argparse.ArgumentParser:
        p = commands.add_parser(name, help=help_text, description=help_text)
        _where(p, local_flag)
        p.set_defaults(func=func)
        return p

    run = command("run", "upgrade one batch: prechecks, then the MR; prints the MR URL once it is open and exits 0",
                  c.cmd_run, local_flag=True)
    run.add_argument("--batch", required=True)
    run.add_argument("--target-version", required=True)
    run.add_argument("--soak-period", type=float, metavar="MINUTES",
                     help="soak after Flux synced (default: the config's; shorter only if the config allows it)")
    run.add_argument("--ensure-pdb", action="store_true",
                     help="every workload with a sidecar must have a PodDisruptionBudget covering it")
    run.add_argument("--min-replicas", type=int, metavar="N",
                     help="every sidecar workload must run at least N replicas")
    run.add_argument("--max-unavailable", type=int, metavar="N",
                     help="the PDBs and the Istio deployments' rolling updates may take at most N pods down")
    run.add_argument("--enable-llm-analysis", action="store_true",
                     help="analyse a failure with the configured LLM (needs llm.enabled in the config)")
    run.add_argument("--ignore-alerts", action="store_true", help="firing Datadog monitors do not stop the prechecks")
    run.add_argument("--dry-run", action="store_true", help="plan and precheck only: no MR, nothing changes")
    run.add_argument("--wait", action="store_true", help="then follow the run to its end, as `guard monitor` does")
    run.add_argument("--name", help="execution name (default: generated); the same name is idempotent")
    run.add_argument("--requested-by", help="recorded with the run")
    _timeout(run, "none (follow until the MR is open, or with --wait until the run ends)")

    monitor = command("monitor", "follow the batch's current (else latest) run live until it ends", c.cmd_monitor)
    monitor.add_argument("--batch", required=True)
    monitor.add_argument("--soak-period", type=float, metavar="MINUTES",
                         help="soak this long (lengthen freely; shorten only before the soak ends, and not below "
                              "the config's unless it allows it)")
    monitor.add_argument("--enable-llm-analysis", action="store_true",
                         help="say whether a failure of this run will be analysed by the LLM")
    _timeout(monitor, "none (however long the run takes)")

    rollback = command("rollback", "roll a batch back to the version it ran before its last upgrade (by MR)",
                       c.cmd_rollback, local_flag=True)
    rollback.add_argument("--batch", required=True)
    rollback.add_argument("--reason", help="why (shown on the rollback MR)")
    rollback.add_argument("--wait", action="store_true", help="follow the rollback to its end")
    rollback.add_argument("--name", help="execution name (default: generated)")
    rollback.add_argument("--requested-by", help="recorded with the run")
    _timeout(rollback, "none")

    abort = command("abort", "stop the batch's running run: the lock is released and its open upgrade MR closed",
                    c.cmd_abort)
    abort.add_argument("--batch", required=True)
    abort.add_argument("--reason", help="recorded as the stop's cause")
    abort.add_argument("--timeout", type=float, default=120, metavar="SECONDS",
                       help="how long to wait for the lock to be released (default %(default)s)")

    retry = command("retry", "start the batch's failed run again, when it failed before anything was merged",
                    c.cmd_retry)
    retry.add_argument("--batch", required=True)
    retry.add_argument("--wait", action="store_true", help="follow the new run to its end")
    retry.add_argument("--name", help="execution name (default: generated)")
    _timeout(retry, "none")

    status = command("status", "one run now: its stage, clusters, MR and soak (--wait: follow it)", c.cmd_status)
    status.add_argument("execution_arn", nargs="?", help="an execution ARN (else --batch)")
    status.add_argument("--batch", help="the batch's current (else latest) run")
    status.add_argument("--wait", action="store_true", help="follow it until it ends")
    _timeout(status, "none")
    _output(status)

    listing = command("list", "batches, clusters, running versions, last run and outcome, lock holder", c.cmd_list)
    _output(listing)

    rollout = command("rollout", "upgrade many batches in batch_order as one execution", c.cmd_rollout,
                      local_flag=True)
    rollout.add_argument("--target-version", required=True)
    rollout.add_argument("--batches", default="all", help="comma-separated batch names, or all (default)")
    rollout.add_argument("--soak-period", type=float, metavar="MINUTES", help="soak of every batch")
    rollout.add_argument("--soak-override", action="append", metavar="BATCH=MINUTES", help="soak of one batch")
    rollout.add_argument("--on-failure", choices=["halt", "continue_independent"])
    rollout.add_argument("--max-concurrent-batches", type=int)
    rollout.add_argument("--wait", action="store_true", help="follow the rollout until it ends")
    rollout.add_argument("--name", help="execution name (default: generated)")
    rollout.add_argument("--requested-by", help="recorded with the run")
    _timeout(rollout, "none")

    validate = commands.add_parser("validate-config", help="validate tenant config files (what the synth checks)")
    validate.add_argument("files", nargs="+")
    validate.set_defaults(func=cmd_validate_config)

    local.add_commands(commands)
    registry.add_commands(commands)
    calibrate.add_command(commands)
    return parser


def main(argv: list[str] | None = None, out: TextIO | None = None) -> int:
    """Run one command; returns the exit code (table: EXIT_CODES, docs/cli.md)."""
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
    except BrokenPipeError:  # `guard list | head`: the reader has what it wanted
        return SUCCEEDED
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
