"""The persistent local stack: one tenant's GUARD on 127.0.0.1, in a background process, until `guard local down`.

`guard local up` starts `python -m sandbox.local_stack --config FILE` (or `--scenario FILE`) per
tenant. The process opens a `LocalWorld` (sandbox/world.py): a moto server that boto3 reaches
over HTTP, the deployed state machines with the real handlers, the GitLab, Datadog, Kubernetes,
Slack and LLM simulators, the API Gateway webhook path (one invocation per function at a time,
like one Lambda environment: sandbox.engine.ExecutionEnvironments) and the reviewer that merges
GUARD's MRs as the scenario says. It then writes `~/.guard/local/<tenant>.json` with the
endpoints, which is how the CLI finds it without flags.

From a config alone (the seed's `~/.guard/config.yaml`), the scenario is made up: every
configured cluster runs `--from-version` and is healthy, and the reviewer merges each MR
`--merge-after` scenario seconds after it opens. A scenario file says all of that itself
(docs/scenarios.md), e.g. a regression that must be rolled back.

It stops by itself: on SIGTERM/SIGINT, when its stack file is removed or taken over, and after
`--idle-timeout` real seconds with no execution running and no CLI use (each CLI use touches
the stack file).
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import sys
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Any

from sandbox.scenario import ClusterSpec, HumanAction, LlmBehaviour, MetricBehaviour, Scenario, load_scenario

# Healthy values of the standard and the seed's custom queries (scenarios/default.yaml's).
HEALTHY = {
    "latency_p95": MetricBehaviour(before=212, jitter=0.05),
    "error_rate": MetricBehaviour(before=0.0004, jitter=0.05),
    "request_count": MetricBehaviour(before=5000, jitter=0.05),
    "custom_api_success_rate": MetricBehaviour(before=0.9995, jitter=0.0002),
    "custom_cache_hit_rate": MetricBehaviour(before=0.91, jitter=0.02),
    "custom_queue_depth": MetricBehaviour(before=120, jitter=0.05),
}
OTHER_QUERY = MetricBehaviour(before=100, jitter=0.02)
_REGION = re.compile(r"(us|eu|ap|sa|ca|me|af|il)-(east|west|north|south|central|northeast|southeast|northwest)-\d")
DEFAULT_SPEEDUP = 400.0
DEFAULT_IDLE_SECONDS = 3600.0


def _environment(cluster: str) -> str:
    for word in ("prod", "staging", "test"):
        if word in cluster:
            return word
    return "dev"


def scenario_for_config(config_path: Path, *, from_version: str = "1.19.3", speedup: float = DEFAULT_SPEEDUP,
                        merge_after: float = 600, reviewer: str = "merge") -> Scenario:
    """A healthy fleet for every cluster of the config, and a reviewer who merges GUARD's MRs."""
    from guard.config.loader import load_config

    config = load_config(config_path)
    queries = list(config.datadog.queries)
    fleet = []
    for batch in config.batches:
        for cluster in batch.clusters:
            region = _REGION.search(cluster)
            fleet.append(ClusterSpec(
                cluster=cluster, istio_version=from_version, environment=_environment(cluster),
                region=region.group(0) if region else config.aws.region,
                metrics={name: HEALTHY.get(name, OTHER_QUERY) for name in queries}))
    llm = LlmBehaviour(mode="json", provider=config.llm.provider) if config.llm.enabled else LlmBehaviour()
    scenario = Scenario(
        name=f"local-{config.tenant}", description=f"the local stack of {config_path}",
        config=config_path.name, batch=config.batches[0].name, target_version="1.20.0", speedup=speedup,
        human=HumanAction(action=reviewer, after_seconds=merge_after),  # type: ignore[arg-type]
        rollback_human=HumanAction(action="merge", after_seconds=merge_after),
        llm=llm, fleet=fleet, timeout_seconds=24 * 3600)
    scenario.source = config_path.resolve().parent / "local-stack.scenario"
    return scenario


class LocalStack:
    """A `LocalWorld` kept open, announced through the stack file, stopped by signal, file or idleness."""

    def __init__(self, scenario: Scenario, idle_timeout: float = DEFAULT_IDLE_SECONDS,
                 check_every: float = 1.0) -> None:
        self.scenario = scenario
        self.idle_timeout = idle_timeout
        self.check_every = check_every
        self._stop = threading.Event()
        self.reason = ""

    def stop(self, reason: str) -> None:
        self.reason = self.reason or reason
        self._stop.set()

    def serve(self) -> str:
        """Run until stopped; returns why it stopped."""
        from cli.where import LocalStackInfo, local_stack_file, write_local_stack
        from sandbox.engine import REGION
        from sandbox.world import LocalWorld

        world = LocalWorld(self.scenario).open()
        path = local_stack_file(world.config.tenant)
        try:
            assert world.webhook is not None
            info = LocalStackInfo(
                tenant=world.config.tenant, pid=os.getpid(), endpoint=world.engine.endpoint, region=REGION,
                state_machine_arn=world.state_machine_arn,
                rollout_state_machine_arn=world.rollout_state_machine_arn,
                registry_table=world.config.aws.dynamodb.table_name,
                state_table=world.config.aws.dynamodb.state_table_name, speedup=self.scenario.speedup,
                gitlab_url=world.gitlab.url, webhook_url=f"{world.webhook.url}/webhooks/gitlab",
                config=str(self.scenario.config_path()), started_at=time.time(),
                idle_timeout_seconds=self.idle_timeout)
            write_local_stack(info)
            print(f"local stack of tenant {info.tenant} up: {info.endpoint} (pid {info.pid})", flush=True)
            self._watch(world, path)
        finally:
            world.close()
            self._remove_own(path)
        print(f"local stack stopped: {self.reason}", flush=True)
        return self.reason

    def _watch(self, world: Any, path: Path) -> None:
        sfn = world.engine.client("stepfunctions")
        last_busy = time.monotonic()
        while not self._stop.wait(self.check_every):
            if not self._own(path):
                self.stop("its stack file was removed or taken over")
                break
            running = any(sfn.list_executions(stateMachineArn=arn, statusFilter="RUNNING", maxResults=1)["executions"]
                          for arn in (world.state_machine_arn, world.rollout_state_machine_arn))
            touched = path.stat().st_mtime
            now = time.monotonic()
            if running:
                last_busy = now
            idle = min(now - last_busy, time.time() - touched)
            if idle >= self.idle_timeout:
                self.stop(f"idle for {self.idle_timeout:g}s (no execution running, no CLI use)")

    @staticmethod
    def _own(path: Path) -> bool:
        from cli.where import LocalStackInfo

        try:
            return LocalStackInfo.model_validate_json(path.read_text()).pid == os.getpid()
        except (OSError, ValueError):
            return False

    def _remove_own(self, path: Path) -> None:
        if self._own(path):
            path.unlink(missing_ok=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox.local_stack", description=__doc__.split("\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--config", type=Path, help="tenant config: a healthy fleet of its clusters")
    source.add_argument("--scenario", type=Path, help="scenario file (docs/scenarios.md)")
    parser.add_argument("--speedup", type=float, default=DEFAULT_SPEEDUP)
    parser.add_argument("--from-version", default="1.19.3")
    parser.add_argument("--merge-after", type=float, default=600, help="scenario seconds before the reviewer acts")
    parser.add_argument("--reviewer", choices=["merge", "close", "ignore"], default="merge")
    parser.add_argument("--idle-timeout", type=float, default=DEFAULT_IDLE_SECONDS, help="real seconds")
    args = parser.parse_args(argv)
    if args.scenario:
        scenario = load_scenario(args.scenario)
        scenario.timeout_seconds = 24 * 3600
    else:
        scenario = scenario_for_config(args.config, from_version=args.from_version, speedup=args.speedup,
                                       merge_after=args.merge_after, reviewer=args.reviewer)
    stack = LocalStack(scenario, idle_timeout=args.idle_timeout)

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stack.stop(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    stack.serve()
    return 0


if __name__ == "__main__":
    sys.exit(main())
