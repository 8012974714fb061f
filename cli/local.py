"""`guard local up | down | status`: the persistent local stack (sandbox/local_stack.py), one process per tenant.

`up` starts one stack per config: `--config FILE` (repeatable), else `~/.guard/config.yaml` and
every `~/.guard/*-config.yaml` (the seed's team configs), or one `--scenario FILE`. It returns once
each stack serves; the stacks run in the background until `guard local down` or their idle timeout.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import TextIO

from guard.errors import ConfigError, InvalidInput

from cli.follow import FAILED, SUCCEEDED
from cli.output import FORMATS, emit, grid
from cli.where import (
    default_config_path,
    guard_home,
    load,
    local_dir,
    read_local_stack,
    running_local_stacks,
    wait_for_local_stack,
)

ROOT = Path(__file__).resolve().parent.parent
START_SECONDS = 180.0  # a stack imports every handler and deploys: ~5-20 s here; this only catches a hang


def add_commands(commands: argparse._SubParsersAction) -> None:
    local = commands.add_parser("local", help="the persistent local stack (moto, simulators, state machines)",
                                description=__doc__.split("\n")[0])
    sub = local.add_subparsers(dest="local_command", required=True, metavar="ACTION")
    up = sub.add_parser("up", help="start the local stack of each config (in the background)")
    source = up.add_mutually_exclusive_group()
    source.add_argument("--config", action="append", help="tenant config (repeatable; default: ~/.guard/config.yaml "
                                                          "and ~/.guard/*-config.yaml)")
    source.add_argument("--scenario", type=Path, help="a scenario file instead (docs/scenarios.md)")
    up.add_argument("--speedup", type=float, default=400, help="scenario seconds per real second (default 400)")
    up.add_argument("--from-version", default="1.19.3", help="the Istio version the clusters run (default 1.19.3)")
    up.add_argument("--merge-after", type=float, default=600,
                    help="scenario seconds before the reviewer merges an MR (default 600)")
    up.add_argument("--reviewer", choices=["merge", "close", "ignore"], default="merge",
                    help="what the reviewer does with GUARD's upgrade MRs (default merge)")
    up.add_argument("--idle-timeout", type=float, default=3600,
                    help="real seconds without a running execution or CLI use before a stack stops (default 3600)")
    up.set_defaults(func=cmd_up)
    down = sub.add_parser("down", help="stop the local stacks")
    down.add_argument("--tenant", help="only this tenant's stack")
    down.set_defaults(func=cmd_down)
    status = sub.add_parser("status", help="the local stacks that run")
    status.add_argument("-o", "--output", choices=FORMATS, default="table")
    status.set_defaults(func=cmd_status)


def _configs(args: argparse.Namespace) -> list[Path]:
    if args.config:
        paths = [Path(c).expanduser() for c in args.config]
        for path in paths:
            if not path.is_file():
                raise ConfigError(f"--config {path}: no such file")
        return paths
    found = [default_config_path()] if default_config_path().is_file() else []
    found += sorted(p for p in guard_home().glob("*-config.yaml") if p.is_file())
    if not found:
        raise InvalidInput(f"no config: pass --config FILE or --scenario FILE, or write {default_config_path()}")
    return found


def cmd_up(args: argparse.Namespace, out: TextIO) -> int:
    if args.scenario:
        from sandbox.scenario import load_scenario

        scenario = load_scenario(args.scenario)
        # The scenario's overrides may name the tenant (the stack of ~/.guard/config.yaml is "default").
        tenant = str(scenario.config_overrides.get("tenant") or load(scenario.config_path()).tenant)
        jobs = [(tenant, ["--scenario", str(args.scenario.resolve())])]
    else:
        jobs = []
        for path in _configs(args):
            jobs.append((load(path).tenant, ["--config", str(path.resolve()), "--speedup", str(args.speedup),
                                             "--from-version", args.from_version, "--merge-after",
                                             str(args.merge_after), "--reviewer", args.reviewer]))
    tenants = [t for t, _ in jobs]
    repeated = sorted({t for t in tenants if tenants.count(t) > 1})
    if repeated:
        raise ConfigError(f"several configs are tenant {', '.join(repeated)}: each tenant needs its own config")
    local_dir().mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "lambdas"), str(ROOT),
                                                       os.environ.get("PYTHONPATH", "")]))
    started = []
    for tenant, argv in jobs:
        running = read_local_stack(tenant)
        if running is not None:
            print(f"tenant {tenant}: already up at {running.endpoint} (pid {running.pid})", file=out)
            continue
        log = open(local_dir() / f"{tenant}.log", "w")  # noqa: SIM115 - the child keeps it
        process = subprocess.Popen(
            [sys.executable, "-m", "sandbox.local_stack", *argv, "--idle-timeout", str(args.idle_timeout)],
            cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True)  # not killed with the shell that ran `guard local up`
        log.close()
        started.append((tenant, process))
    code = SUCCEEDED
    for tenant, process in started:
        info = wait_for_local_stack(tenant, process.pid, START_SECONDS)
        if info is None:
            if process.poll() is None:
                process.terminate()
            print(f"tenant {tenant}: the local stack did not start; see {local_dir() / (tenant + '.log')}", file=out)
            code = FAILED
            continue
        print(f"tenant {tenant}: local stack up (pid {info.pid})\n  AWS (moto): {info.endpoint}\n"
              f"  GitLab:     {info.gitlab_url}\n  webhook:    {info.webhook_url}\n"
              f"  clock:      ×{info.speedup:g}; stops after {info.idle_timeout_seconds:g}s idle or `guard local down`",
              file=out)
    return code


def cmd_down(args: argparse.Namespace, out: TextIO) -> int:
    stacks = [s for s in running_local_stacks() if args.tenant in (None, s.tenant)]
    if not stacks:
        print("no local stack runs" + (f" for tenant {args.tenant}" if args.tenant else ""), file=out)
        return SUCCEEDED
    for stack in stacks:
        os.kill(stack.pid, signal.SIGTERM)
    deadline = time.monotonic() + 60
    for stack in stacks:
        while stack.alive() and time.monotonic() < deadline:
            time.sleep(0.2)
        if stack.alive():
            print(f"tenant {stack.tenant}: pid {stack.pid} did not stop within 60 s", file=out)
            return FAILED
        print(f"tenant {stack.tenant}: local stack down", file=out)
    return SUCCEEDED


def cmd_status(args: argparse.Namespace, out: TextIO) -> int:
    stacks = running_local_stacks()
    table = grid(["TENANT", "PID", "AWS ENDPOINT", "GITLAB", "CLOCK", "CONFIG"],
                 [[s.tenant, s.pid, s.endpoint, s.gitlab_url, f"×{s.speedup:g}", s.config] for s in stacks]) \
        if stacks else "no local stack runs"
    emit([s.model_dump() for s in stacks], args.output, out, table)
    return SUCCEEDED
