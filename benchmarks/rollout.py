"""A rollout of thousands of clusters across the seed's batch DAG, on the real ASL (the rehearsal).

    PYTHONPATH=lambdas:. python benchmarks/rollout.py [--clusters 5000] [--json rows.json]

The fleet is generated here: the seed's nine batches in its dependency shape (config/example.yaml's
batch_order: test -> dev-1 -> dev-2 -> {staging-us, staging-eu} -> prod-canary -> prod-us-1 ->
{prod-us-2, prod-eu}), each batch holding a share of the N clusters that grows toward prod
(`SHARES`: 1, 2, 3, 7, 7, 2, 26, 26 and 26 %), every cluster healthy. The rollout state machine
runs on the rehearsal's engine and starts a real child execution of the batch state machine per
batch (`states:startExecution.sync:2`), each going through the whole local world (prechecks, MR,
Flux, sidecars, soak, validation).

It prints one row for the rollout execution and one per child: history events (moto's, and as
AWS counts them from the states entered: sandbox/measure.py), state transitions, the largest
state payload, the longest error cause, the Lambda tasks the execution scheduled, and the child's
wall time; then the maximum over the children, the rollout's Claim polls, the Lambda invocations
of the whole world, vendor requests per cluster and the wall time. Figures: docs/scale.md.
Exit 1 when any execution breaks a limit (25,000 events, 256 KB of state, 32,768 characters of
cause), or the rollout or any batch does not succeed.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lambdas"), str(ROOT)]
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

from benchmarks.fleet import cluster_metrics  # noqa: E402
from sandbox.measure import breaks_limits, execution_figures  # noqa: E402
from sandbox.rehearsal import run_scenario  # noqa: E402
from sandbox.scenario import ClusterSpec, HumanAction, RolloutSpec, Scenario  # noqa: E402
from sandbox.world import LocalWorld  # noqa: E402

# The seed's batches (config/example.yaml, whose batch_order they keep) and each one's share of
# the fleet in per cent: a few clusters first, most of them in the three prod batches after the canary.
SHARES: dict[str, int] = {"test": 1, "dev-1": 2, "dev-2": 3, "staging-us": 7, "staging-eu": 7, "prod-canary": 2,
                          "prod-us-1": 26, "prod-us-2": 26, "prod-eu": 26}
ENVIRONMENT = {"test": "test", "dev-1": "dev", "dev-2": "dev", "staging-us": "staging", "staging-eu": "staging",
               "prod-canary": "prod", "prod-us-1": "prod", "prod-us-2": "prod", "prod-eu": "prod"}
# The rehearsal's clock. Every real second of CPU a batch spends (a 2-core machine doing the work
# of thousands of clusters) is this many scenario seconds, in which the rollout's waiting
# iterations poll, the batches poll Flux and the sidecars, and the reconciler runs (every 5
# scenario minutes, a Scan of the state table): x50 with the default 15-minute poll is one look
# every 18 s real. The batches' waits (MR merged after 60 s, Flux 90 s, a 20-minute soak) stay short.
SPEEDUP = 50
POLL_SECONDS = 900


def batch_sizes(clusters: int) -> dict[str, int]:
    """How many of `clusters` each batch holds: its share, rounded down, the remainder to the
    largest shares (prod) first; every batch at least one cluster."""
    if clusters < len(SHARES):
        raise ValueError(f"a rollout over the seed's {len(SHARES)} batches needs at least {len(SHARES)} clusters, "
                         f"not {clusters}")
    total = sum(SHARES.values())
    sizes = {b: max(1, clusters * share // total) for b, share in SHARES.items()}
    by_share = sorted(SHARES, key=lambda b: (-SHARES[b], list(SHARES).index(b)))
    i = 0
    while sum(sizes.values()) != clusters:
        batch = by_share[i % len(by_share)]
        step = 1 if sum(sizes.values()) < clusters else -1
        if sizes[batch] + step >= 1:
            sizes[batch] += step
        i += 1
    return sizes


def rollout_scenario(clusters: int) -> Scenario:
    """The seed's nine batches holding `clusters` generated healthy clusters, as one rollout."""
    batches, fleet = [], []
    for batch, size in batch_sizes(clusters).items():
        names = [f"eks-{batch}-{i:04d}" for i in range(size)]
        region = "eu-west-1" if batch.endswith("-eu") else "us-east-1"
        batches.append({"name": batch, "description": f"generated: {size} clusters", "clusters": names})
        fleet += [ClusterSpec(cluster=name, istio_version="1.19.3", environment=ENVIRONMENT[batch], region=region,
                              metrics=cluster_metrics(212)) for name in names]
    scenario = Scenario(
        name=f"rollout-{clusters}", config="../config/example.yaml", target_version="1.20.0",
        rollout=RolloutSpec(batches="all", input={"soak_period_minutes": 20}),
        # The example's batch names and batch_order, with generated clusters; no LLM (not measured).
        config_overrides={"batches": batches, "llm": {"enabled": False},
                          "rollout": {"poll_seconds": POLL_SECONDS}},
        speedup=SPEEDUP, human=HumanAction(action="merge", after_seconds=60),
        rollback_human=HumanAction(action="merge", after_seconds=60), fleet=fleet,
        timeout_seconds=6 * 3600)
    scenario.source = ROOT / "scenarios" / "generated.yaml"  # the config path is relative to scenarios/
    return scenario


def measure(clusters: int, progress: TextIO | None = None) -> dict[str, Any]:
    """Rehearse the rollout; the rollout's figures, each child's, and the world's."""
    sizes = batch_sizes(clusters)
    measured: dict[str, Any] = {}

    def inspect(world: LocalWorld, summary: dict[str, Any]) -> None:
        # Read while the world is up: every execution's history, the simulators' request counts.
        sfn = world.engine.client("stepfunctions")
        measured["rollout"] = execution_figures(sfn, summary["execution_arn"])
        measured["children"] = {}
        for batch in summary["batches"]:
            if batch.get("execution_arn"):
                figures = execution_figures(sfn, batch["execution_arn"])
                ended = sfn.describe_execution(executionArn=batch["execution_arn"])
                figures["wall_seconds"] = round((ended["stopDate"] - ended["startDate"]).total_seconds(), 1) \
                    if ended.get("stopDate") else None
                measured["children"][batch["batch"]] = figures
        measured["vendor_requests"] = {"kubernetes": world.kubernetes.request_count,
                                       "datadog": len(world.datadog.requests), "gitlab": len(world.gitlab.requests)}

    started = time.monotonic()
    summary = run_scenario(rollout_scenario(clusters), out=progress or io.StringIO(), inspect=inspect)
    rollout = measured["rollout"]
    types = rollout["history_event_types"]
    return {
        "clusters": clusters, "status": summary["status"], "outcome": summary["outcome"],
        "error": summary.get("error"),
        "batches": {b["batch"]: {"status": b["status"], "clusters": sizes[b["batch"]],
                                 **measured["children"].get(b["batch"], {})} for b in summary["batches"]},
        "rollout": rollout,
        # Claim answered `wait` this often (each such look: Claim, the Choice, WaitForTurn).
        "claim_polls": types.get("WaitStateEntered", 0),
        "lambda_invocations_world": summary["lambda_invocations"],
        "vendor_requests": measured["vendor_requests"],
        "vendor_requests_per_cluster": {k: round(v / clusters, 1) for k, v in measured["vendor_requests"].items()},
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def problems(row: dict[str, Any]) -> list[str]:
    """What makes the run fail the benchmark: an execution over a limit, or anything not succeeded."""
    found = [f"rollout: {p}" for p in breaks_limits(row["rollout"])]
    if row["status"] != "SUCCEEDED":
        found.append(f"rollout ended {row['status']} ({row['error']})")
    for batch, child in row["batches"].items():
        if child["status"] != "succeeded":
            found.append(f"batch {batch} {child['status']}")
        if "history_events" in child:
            found += [f"{batch}: {p}" for p in breaks_limits(child)]
    return found


def _line(name: str, clusters: int | str, status: str, f: dict[str, Any], wall: Any) -> str:
    return (f"{name:<14} {clusters!s:>8} {status:<10} {f['history_events']:>7} {f['aws_history_events']:>7} "
            f"{f['state_transitions']:>11} {f['max_state_payload_bytes']:>11} {f['longest_cause_chars']:>13} "
            f"{f['lambda_invocations']:>7} {wall!s:>8}")


def print_row(row: dict[str, Any]) -> None:
    print(f"\n{row['clusters']} clusters over {len(row['batches'])} batches: rollout {row['status']} "
          f"({row['outcome']}), wall {row['wall_seconds']} s", flush=True)
    print(f"{'execution':<14} {'clusters':>8} {'status':<10} {'events':>7} {'AWS':>7} {'transitions':>11} "
          f"{'max payload':>11} {'longest cause':>13} {'lambdas':>7} {'wall s':>8}")
    print(_line("rollout", row["clusters"], row["status"].lower(), row["rollout"], row["wall_seconds"]))
    children = [c for c in row["batches"].values() if "history_events" in c]
    for batch, child in row["batches"].items():
        if "history_events" in child:
            print(_line(f"  {batch}", child["clusters"], child["status"], child, child["wall_seconds"]))
        else:
            print(f"  {batch:<12} {child['clusters']:>8} {child['status']:<10} (no child execution)")
    if children:
        keys = ("history_events", "aws_history_events", "state_transitions", "max_state_payload_bytes",
                "longest_cause_chars", "lambda_invocations")
        worst = {k: max(c[k] for c in children) for k in keys}
        print(_line("max of children", max(c["clusters"] for c in children), "", worst,
                    max((c["wall_seconds"] or 0) for c in children)))
    per = row["vendor_requests_per_cluster"]
    print(f"rollout Claim polls (wait answers): {row['claim_polls']}; Lambda invocations, whole world: "
          f"{row['lambda_invocations_world']}; k8s/Datadog/GitLab requests per cluster: "
          f"{per['kubernetes']}/{per['datadog']}/{per['gitlab']}")
    for problem in problems(row):
        print(f"LIMIT BROKEN / NOT SUCCEEDED: {problem}")
    sys.stdout.flush()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, nargs="+", default=[5000])
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--progress", action="store_true", help="print the rollout's batches as they start and end")
    args = parser.parse_args(argv)
    rows, ok = [], True
    for clusters in args.clusters:
        row = measure(clusters, sys.stdout if args.progress else None)
        rows.append(row)
        print_row(row)
        ok = ok and not problems(row)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2, default=str))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
