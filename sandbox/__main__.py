"""`python -m sandbox [--scenario FILE] [--json FILE]`: the local rehearsal."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from guard.config.models import TenantConfig  # noqa: F401  (fail early if the package path is wrong)
from guard.errors import ConfigError

from sandbox.scenario import Scenario, ScenarioError, load_scenario

DEFAULT = Path(__file__).resolve().parent.parent / "scenarios" / "default.yaml"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m sandbox",
                                     description="Rehearse a GUARD batch upgrade or rollout locally.")
    parser.add_argument("--scenario", type=Path, default=DEFAULT, help="scenario file (default: %(default)s)")
    parser.add_argument("--json", type=Path, help="write the JSON summary to this file")
    args = parser.parse_args(argv)
    try:
        scenario = load_scenario(args.scenario)
    except (ScenarioError, ConfigError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    from sandbox.rehearsal import run_scenario

    try:
        summary = run_scenario(scenario)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2, default=str))
        print(f"summary written to {args.json}")
    if scenario.rollout is not None:
        from sandbox.rollout_rehearsal import print_rollout, rollout_expectation_problems

        print_rollout(summary, sys.stdout)
        problems = rollout_expectation_problems(scenario, summary)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems or (not scenario.expect and summary["status"] != "SUCCEEDED") else 0
    batch = summary["batches"][0]
    print(f"\n{scenario.name}: {summary['status']} ({batch['outcome']}); "
          f"{summary['history_events']} history events, {summary['state_transitions']} state transitions, "
          f"max state payload {summary['max_state_payload_bytes']} bytes, {summary['real_seconds']}s real")
    if scenario.expect:
        problems = expectation_problems(scenario, batch)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        return 1 if problems else 0
    return 0 if summary["status"] == "SUCCEEDED" else 1


def expectation_problems(scenario: Scenario, batch: dict[str, Any]) -> list[str]:
    """How the run differs from the scenario's `expect` block (empty when it matched)."""
    expect = scenario.expect
    if expect is None:
        return []
    problems = []
    if batch["outcome"] != expect.outcome:
        problems.append(f"expected outcome {expect.outcome}, got {batch['outcome']}")
    if expect.error and batch.get("error") != expect.error:
        problems.append(f"expected error {expect.error}, got {batch.get('error')}")
    for text in expect.cause_contains:
        if text not in (batch.get("cause") or ""):
            problems.append(f"expected the cause to mention {text!r}: {batch.get('cause')}")
    return problems


if __name__ == "__main__":
    sys.exit(main())
