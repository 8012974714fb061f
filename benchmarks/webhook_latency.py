"""How fast the webhook answers GitLab: wall time of POST /webhooks/gitlab for a merge
delivery, through the API Gateway shim, the real handler, DynamoDB and SendTaskSuccess
on the local emulator. GitLab wants an answer within seconds; the target here is < 1 s.

Each run builds a fresh local world, starts an execution, waits for its MR, then times
the first (cold for the handler's clients) and a second (warm, duplicate) delivery.
Usage: python benchmarks/webhook_latency.py [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT / "lambdas"), str(ROOT)]

from sandbox.rehearsal import history  # noqa: E402
from sandbox.scenario import load_scenario  # noqa: E402
from sandbox.world import LocalWorld  # noqa: E402


def one_run() -> tuple[float, float]:
    scenario = load_scenario(ROOT / "scenarios" / "mr-closed.yaml")
    scenario.human.action = "ignore"
    with LocalWorld(scenario) as world:
        sfn = world.engine.client("stepfunctions")
        arn = sfn.start_execution(stateMachineArn=world.state_machine_arn,
                                  input=json.dumps({"batch": "test", "target_version": "1.20.0"}))["executionArn"]
        deadline = time.monotonic() + 60
        while not any(e["type"] == "TaskSubmitted" or e["type"] == "TaskScheduled" for e in history(sfn, arn)
                      if "OpenMergeRequest" in json.dumps(e, default=str)) or not world.gitlab.merge_requests(
                scenario.gitlab_project):
            if time.monotonic() > deadline:
                raise RuntimeError("no MR within 60 s")
            time.sleep(0.05)
        time.sleep(0.5)  # let the task store its token
        mr = world.gitlab.merge_requests(scenario.gitlab_project)[0]
        assert world.webhook is not None
        headers = {"X-Gitlab-Event": "Merge Request Hook", "X-Gitlab-Token": world.webhook_token,
                   "X-Gitlab-Event-UUID": "bench-1", "Content-Type": "application/json"}
        body = {"object_kind": "merge_request", "user": {"username": "bench"},
                "object_attributes": {"iid": mr["iid"], "action": "merge", "url": mr["web_url"],
                                      "merge_commit_sha": "a" * 40}}
        timings = []
        for _ in range(2):
            started = time.perf_counter()
            response = requests.post(f"{world.webhook.url}/webhooks/gitlab", json=body, headers=headers, timeout=10)
            timings.append((time.perf_counter() - started) * 1000)
            assert response.status_code == 200, response.text
        sfn.stop_execution(executionArn=arn)
        return timings[0], timings[1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    first, second = zip(*(one_run() for _ in range(args.runs)), strict=True)
    for label, values in (("first delivery (resumes)", first), ("duplicate delivery", second)):
        print(f"{label:<26} median {statistics.median(values):7.1f} ms  min {min(values):7.1f}  max {max(values):7.1f}")
    return 0 if statistics.median(first) < 1000 else 1


if __name__ == "__main__":
    sys.exit(main())
