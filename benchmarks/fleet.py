"""How one batch's execution grows with its cluster count, on the real ASL (the rehearsal).

    PYTHONPATH=lambdas:. python benchmarks/fleet.py [--clusters 1 50 500] [--case healthy flux_stuck regression]

Three batches, generated here rather than in YAML files:
- `healthy`: every cluster upgrades cleanly; the run succeeds.
- `flux_stuck`: Flux never reconciles on any cluster, so the Flux poll runs to its deadline and
  the run fails with FluxSyncTimeout.
- `regression`: every cluster's p95 latency rises 40% after the upgrade, so validation fails on
  all of them and GUARD rolls the whole batch back by MR.

Per run it prints history events, state transitions (and per cluster), the largest state payload,
the longest error cause, Lambda invocations, vendor requests per cluster (Kubernetes, Datadog,
GitLab, as the simulators answered them) and wall time, and checks the Step Functions limits
(25,000 history events, 256 KB of state data, 32,768 characters of cause). Figures: docs/scale.md.
Exit 1 when a limit breaks or a batch ends otherwise than its case says.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, TextIO

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lambdas"), str(ROOT)]
# The handlers' warnings (the reconciler names every cluster it could not observe) would bury the table.
os.environ.setdefault("POWERTOOLS_LOG_LEVEL", "ERROR")

from guard.config.loader import load_config  # noqa: E402

from sandbox.measure import CAUSE_LIMIT, HISTORY_LIMIT, PAYLOAD_LIMIT, aws_history_events  # noqa: E402
from sandbox.rehearsal import run_scenario  # noqa: E402
from sandbox.scenario import ClusterSpec, Faults, HumanAction, MetricBehaviour, Scenario  # noqa: E402

CASES = ("healthy", "flux_stuck", "regression")
BATCH = "fleet"


def cluster_metrics(latency_after: float) -> dict[str, MetricBehaviour]:
    return {
        "latency_p95": MetricBehaviour(before=212, after=latency_after, jitter=0.05),
        "error_rate": MetricBehaviour(before=0.0004, jitter=0.05),
        "request_count": MetricBehaviour(before=5000, jitter=0.05),
        "custom_api_success_rate": MetricBehaviour(before=0.9995, jitter=0.0002),
        "custom_cache_hit_rate": MetricBehaviour(before=0.91, jitter=0.02),
        "custom_queue_depth": MetricBehaviour(before=120, jitter=0.05),
    }


def example_batches() -> list[dict[str, Any]]:
    """The example config's batches: kept, because its batch_order names them (a list override replaces)."""
    config = load_config(ROOT / "config" / "example.yaml")
    return [b.model_dump(by_alias=True) for b in config.batches]


def default_speedup(clusters: int) -> int:
    """The rehearsal's clock factor for a batch of this size.

    The scenario clock compresses GUARD's deadlines (the 72-hour merge wait, Flux's timeout, the soak),
    not the rehearsal's own work, which is moto and the simulators on this machine, 100-fold slower
    than AWS per request. Past a few hundred clusters, opening the MR alone (every cluster's install
    read through the GitLab simulator, then committed) outlasts the 72 hours squeezed into 259 s at
    x1,000, and the run ends MergeRequestTimeout without anyone having been slow. x100 gives it 43 min.
    Past 1,000 clusters the rollback's verification is the tightest: each of its polls reads every
    cluster (Flux, then the sidecar waves back), and its 45-minute deadline is 27 s at x100, less than
    the rehearsal's polls take: a 2,000-cluster regression ended RollbackFailed at x100 and RolledBack
    at x20 (2026-12-02, docs/scale.md).
    """
    if clusters <= 500:
        return 1_000
    return 100 if clusters <= 1_000 else 20


ID_LENGTHS = (16, 100)  # what --id-length accepts: the index needs 15 characters; EKS names stop at 100


def cluster_names(clusters: int, id_length: int | None = None) -> list[str]:
    """The generated cluster ids: `eks-fleet-0000`..., or each exactly `id_length` characters long (the index
    last, so that ids stay distinct), for what grows with the length of the ids rather than their number."""
    if id_length is None:
        return [f"eks-fleet-{i:04d}" for i in range(clusters)]
    if not ID_LENGTHS[0] <= id_length <= ID_LENGTHS[1] or clusters > 10_000:
        raise ValueError(f"id_length {id_length}: must be {ID_LENGTHS[0]}..{ID_LENGTHS[1]} for up to 10,000 "
                         f"clusters, got {clusters} clusters")
    return [f"eks-fleet-{'x' * (id_length - 15)}-{i:04d}" for i in range(clusters)]


def fleet_scenario(case: str, clusters: int, speedup: int | None = None, id_length: int | None = None) -> Scenario:
    """A batch of `clusters` generated clusters that all fail the same way (`case`)."""
    names = cluster_names(clusters, id_length)
    stuck = case == "flux_stuck"
    latency_after = 300 if case == "regression" else 212
    fleet = [ClusterSpec(cluster=name, istio_version="1.19.3", metrics=cluster_metrics(latency_after),
                         faults=Faults(flux_stuck=stuck)) for name in names]
    scenario = Scenario(
        name=f"fleet-{case}-{clusters}", config="../config/example.yaml", batch=BATCH, target_version="1.20.0",
        input={"soak_period_minutes": 20},
        # One batch holding the whole fleet, with no prerequisite; no LLM (it is not what is measured).
        config_overrides={"batches": [*example_batches(), {"name": BATCH, "description": "generated fleet",
                                                            "clusters": names}],
                          "llm": {"enabled": False}},
        speedup=speedup or default_speedup(clusters), human=HumanAction(action="merge", after_seconds=60),
        rollback_human=HumanAction(action="merge", after_seconds=60), fleet=fleet,
        timeout_seconds=3_600)
    scenario.source = ROOT / "scenarios" / "generated.yaml"  # the config path is relative to scenarios/
    return scenario


def _longest_cause(summary: dict[str, Any]) -> int:
    """The longest error cause of the execution: its failure, the rollback's reason and detail."""
    batch = summary["batches"][0]
    rollback = summary.get("rollback") or {}
    causes = [batch.get("cause"), rollback.get("reason"), rollback.get("detail")]
    return max((len(c) for c in causes if isinstance(c, str)), default=0)


def measure(case: str, clusters: int, speedup: int | None = None, progress: TextIO | None = None,
            id_length: int | None = None) -> dict[str, Any]:
    """Rehearse one generated batch; the figures a person compares across sizes."""
    started = time.monotonic()
    scenario = fleet_scenario(case, clusters, speedup, id_length)
    summary = run_scenario(scenario, out=progress or io.StringIO())
    batch = summary["batches"][0]
    vendors = summary["vendor_requests"]
    return {
        "case": case, "clusters": clusters, "id_length": max(len(c.cluster) for c in scenario.fleet),
        "speedup": scenario.speedup, "status": summary["status"],
        "error": batch.get("error"),
        "outcome": batch.get("outcome"), "history_events": summary["history_events"],
        "aws_history_events": aws_history_events(summary["history_event_types"]),
        "state_transitions": summary["state_transitions"],
        "max_state_payload_bytes": summary["max_state_payload_bytes"],
        "max_state_payload_at": summary["max_state_payload_at"],
        "longest_cause_chars": _longest_cause(summary), "lambda_invocations": summary["lambda_invocations"],
        "vendor_requests": vendors,
        "vendor_requests_per_cluster": {k: round(v / clusters, 1) for k, v in vendors.items()},
        "wall_seconds": round(time.monotonic() - started, 1),
    }


def within_limits(row: dict[str, Any]) -> bool:
    """Ended as its case says (healthy: succeeded; the others failed), under every limit."""
    expected = "SUCCEEDED" if row["case"] == "healthy" else "FAILED"
    return (row["status"] == expected and row["max_state_payload_bytes"] < PAYLOAD_LIMIT
            and row["longest_cause_chars"] <= CAUSE_LIMIT
            and max(row["history_events"], row["aws_history_events"]) < HISTORY_LIMIT)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clusters", type=int, nargs="+", default=[1, 50, 500])
    parser.add_argument("--case", nargs="+", choices=CASES, default=list(CASES))
    parser.add_argument("--json", type=Path, help="also write the rows here")
    parser.add_argument("--speedup", type=int, help="the scenario clock factor (default: x1,000 up to 500 clusters, "
                                                    "x100 up to 1,000, x20 above: see default_speedup)")
    parser.add_argument("--progress", type=Path, help="write the rehearsal's progress lines here (append)")
    parser.add_argument("--id-length", type=int, help=f"cluster ids of exactly this many characters "
                                                      f"({ID_LENGTHS[0]}-{ID_LENGTHS[1]}; default: eks-fleet-0000)")
    args = parser.parse_args(argv)
    if args.speedup is not None and args.speedup < 1:
        parser.error(f"--speedup: must be at least 1, got {args.speedup}")
    if args.id_length is not None:
        try:
            cluster_names(max(args.clusters), args.id_length)
        except ValueError as error:
            parser.error(f"--id-length: {error}")
    header = (f"{'case':<11} {'clusters':>8} {'status':<9} {'error':<16} {'events':>7} {'AWS':>7} {'transitions':>11} "
              f"{'per cl.':>7} {'max payload':>11} {'longest cause':>13} {'lambdas':>7} "
              f"{'k8s/dd/gitlab req. per cl.':>26} {'wall s':>7}")
    print(header, flush=True)
    rows, ok = [], True
    for case in args.case:
        for clusters in args.clusters:
            with open(args.progress, "a", buffering=1) if args.progress else contextlib.nullcontext() as progress:
                row = measure(case, clusters, args.speedup, progress, args.id_length)
            rows.append(row)
            ok = ok and within_limits(row)
            per = row["vendor_requests_per_cluster"]
            vendors = f"{per['kubernetes']}/{per['datadog']}/{per['gitlab']}"
            print(f"{row['case']:<11} {row['clusters']:>8} {row['status']:<9} {row['error']!s:<16} "
                  f"{row['history_events']:>7} {row['aws_history_events']:>7} {row['state_transitions']:>11} "
                  f"{row['state_transitions'] / row['clusters']:>7.2f} {row['max_state_payload_bytes']:>11} "
                  f"{row['longest_cause_chars']:>13} {row['lambda_invocations']:>7} {vendors:>26} "
                  f"{row['wall_seconds']:>7}  ({row['max_state_payload_at']}; ids {row['id_length']} chars)"
                  + ("" if within_limits(row) else "  LIMIT BROKEN"), flush=True)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
