"""What moto's Step Functions engine (the rehearsal's) does with a Distributed Map, measured.

    PYTHONPATH=lambdas:. python benchmarks/moto_distributed_map.py [--items 2000]

Runs one state machine on the rehearsal's engine (sandbox/engine.py: moto server mode): a Map in
DISTRIBUTED mode reading its items from S3 (`ItemReader`, `s3:getObject`, JSON) and writing its
results to S3 (`ResultWriter`), each item one Pass state. Prints the execution's status, its
history (events by type), the child executions and map runs AWS would create, and the objects
the ResultWriter left in S3. The answers are in docs/scale.md ("Distributed Map in the rehearsal").
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "lambdas"), str(ROOT)]

from sandbox.engine import ACCOUNT, LocalEngine  # noqa: E402

BUCKET = "guard-fanout-probe"


def machine(result_writer: bool, fail_on: str | None = None, reader: bool = True) -> dict[str, Any]:
    # One item failing (a Choice into a Fail state) shows whether the items were run at all.
    item: dict[str, Any] = {"Cluster": {"Type": "Pass", "End": True}} if fail_on is None else {
        "Cluster": {"Type": "Choice", "Default": "Done",
                    "Choices": [{"Variable": "$.cluster_id", "StringEquals": fail_on, "Next": "Refused"}]},
        "Done": {"Type": "Succeed"}, "Refused": {"Type": "Fail", "Error": "PrecheckFailed", "Cause": fail_on}}
    fan: dict[str, Any] = {
        "Type": "Map", "MaxConcurrency": 50,
        "ItemReader": {"Resource": "arn:aws:states:::s3:getObject", "ReaderConfig": {"InputType": "JSON"},
                       "Parameters": {"Bucket": BUCKET, "Key": "items.json"}},
        "ItemProcessor": {"ProcessorConfig": {"Mode": "DISTRIBUTED", "ExecutionType": "STANDARD"},
                          "StartAt": "Cluster", "States": item},
        "End": True}
    if not reader:  # the items in the state input instead: does the Distributed Map run them?
        fan["ItemsPath"] = "$.items"
        del fan["ItemReader"]
    if result_writer:
        fan["ResultWriter"] = {"Resource": "arn:aws:states:::s3:putObject",
                               "Parameters": {"Bucket": BUCKET, "Prefix": "results"}}
    else:
        fan["ResultPath"] = None
    return {"StartAt": "Fan", "States": {"Fan": fan}}


def probe(engine: LocalEngine, items: int, result_writer: bool, fail_on: str | None = None,
          reader: bool = True) -> dict[str, Any]:
    s3, sfn = engine.client("s3"), engine.client("stepfunctions")
    listed = [{"cluster_id": f"eks-{i:05d}"} for i in range(items)]
    s3.put_object(Bucket=BUCKET, Key="items.json", Body=json.dumps(listed).encode())
    name = (f"probe-{'writer' if result_writer else 'plain'}-{items}{'-failing' if fail_on else ''}"
            f"{'' if reader else '-itemspath'}")
    arn = sfn.create_state_machine(name=name, definition=json.dumps(machine(result_writer, fail_on, reader)),
                                   roleArn=f"arn:aws:iam::{ACCOUNT}:role/probe")["stateMachineArn"]
    started = time.monotonic()
    execution = sfn.start_execution(stateMachineArn=arn, input=json.dumps({} if reader else {"items": listed})
                                    )["executionArn"]
    while (status := sfn.describe_execution(executionArn=execution)["status"]) == "RUNNING":
        if time.monotonic() - started > 600:
            break
        time.sleep(0.5)
    description = sfn.describe_execution(executionArn=execution)
    events = sfn.get_execution_history(executionArn=execution, maxResults=1000)["events"]
    try:
        runs = sfn.list_map_runs(executionArn=execution)["mapRuns"]
        map_runs: Any = len(runs)
        children: Any = sum(len(sfn.list_executions(mapRunArn=r["mapRunArn"])["executions"]) for r in runs)
    except Exception as e:  # what moto answers is the finding
        map_runs = children = f"{type(e).__name__}: {e}"
    written = [o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET, Prefix="results").get("Contents", [])]
    manifest = next((json.loads(s3.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in written
                     if k.endswith("manifest.json")), None)
    return {"items": items, "item_reader": reader, "result_writer": result_writer, "failing_item": fail_on,
            "status": status,
            "error": description.get("error"), "cause": (description.get("cause") or "")[:300],
            "output_bytes": len(description.get("output") or ""), "history_events": len(events),
            "event_types": dict(Counter(e["type"] for e in events)),
            "executions_of_the_machine": len(sfn.list_executions(stateMachineArn=arn)["executions"]),
            "map_runs": map_runs, "child_executions": children, "result_objects": written[:5],
            "manifest": manifest, "output": (description.get("output") or "")[:300],
            "seconds": round(time.monotonic() - started, 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--items", type=int, default=2000)
    args = parser.parse_args(argv)
    engine = LocalEngine().start()
    try:
        engine.client("s3").create_bucket(Bucket=BUCKET)
        failing = f"eks-{args.items // 2:05d}"
        for writer, fail_on, reader in ((False, None, True), (True, None, True), (False, failing, True),
                                        (False, failing, False), (False, None, False)):
            print(json.dumps(probe(engine, args.items, writer, fail_on, reader), indent=1), flush=True)
    finally:
        engine.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
