"""What the reconciler's listing costs: the Scan it used against the watch index it uses now.

    PYTHONPATH=lambdas:. python benchmarks/watch_index.py [--others 20000] [--tokens 10] [--runs 5]

One moto state table (created from guard.stores.schema, as the rehearsal creates it) holds `--others`
items of the kinds a large rollout writes (cluster slices, precheck reports, verdicts, ~400 B each) and
`--tokens` MR task tokens. Per run, the same listing both ways: the previous code's Scan filtered on
`sk = TOKEN` (ConsistentRead, paginated), and `StateStore.list_task_tokens` (a Query of the sparse
watch index, then a consistent BatchGetItem of the listed keys). Prints the median time and how many
items each read: the Scan reads (and DynamoDB bills) every item of the table, the index only the tokens.
Figures: docs/scale.md ("Where the rehearsal's time went at 500 and 5,000 clusters, and what was fixed").
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time
from datetime import UTC, datetime
from typing import Any

import boto3
from guard.stores.schema import create_tables
from guard.stores.state import StateStore, TaskTokenRecord
from moto import mock_aws

NOW = datetime(2026, 1, 1, tzinfo=UTC)
DOC = '{"findings": "' + "x" * 380 + '"}'
# DynamoDB's size of a seeded item: attribute names plus values (a number ~ its digits).
ITEM_BYTES = len("pk") + len("RUN#run-19") + len("sk") + len("CLUSTER#eks-00000#VALIDATION") + len("doc") + len(DOC) \
    + len("expires_at") + 1


def scan_tokens(table: Any) -> tuple[list[TaskTokenRecord], int, int]:
    """The previous `list_task_tokens`: a Scan of the whole table filtered on the sort key; and the items read
    and the DynamoDB read units it would cost (consistent: one a 4 KB of items read, page by page; moto's
    ConsumedCapacity counts a unit a page, not by size)."""
    records: list[TaskTokenRecord] = []
    scanned = units = 0
    kwargs: dict[str, Any] = {"FilterExpression": "sk = :token", "ExpressionAttributeValues": {":token": "TOKEN"},
                              "ConsistentRead": True}
    while True:
        page = table.scan(**kwargs)
        scanned += page["ScannedCount"]
        # What the page read: only the filter's matches come back, so size the table's items directly.
        units += math.ceil(page["ScannedCount"] * ITEM_BYTES / 4096)
        records += [TaskTokenRecord.model_validate_json(item["doc"]) for item in page["Items"]]
        if "LastEvaluatedKey" not in page:
            return records, scanned, units
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def seed(table: Any, others: int, tokens: int) -> None:
    with table.batch_writer() as batch:
        for n in range(others):
            run, kind = divmod(n, 1000)
            batch.put_item(Item={"pk": f"RUN#run-{run}", "sk": f"CLUSTER#eks-{kind:05d}#VALIDATION", "doc": DOC,
                                 "expires_at": 1})
    state = StateStore(table)
    for n in range(tokens):
        state.put_task_token(TaskTokenRecord(merge_request_url=f"https://gitlab.example.com/p/-/merge_requests/{n}",
                                             task_token=f"token-{n}", run_id=f"run-{n}"), NOW, hours=72)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--others", type=int, default=20_000)
    parser.add_argument("--tokens", type=int, default=10)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    os.environ.update({"AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench",
                       "AWS_DEFAULT_REGION": "us-east-1"})
    os.environ.pop("AWS_ENDPOINT_URL", None)
    with mock_aws():
        _, table = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), state_name="bench-state")
        seed(table, args.others, args.tokens)
        state = StateStore(table)
        scan_times, index_times = [], []
        for _ in range(args.runs):
            started = time.perf_counter()
            scanned, items_scanned, units = scan_tokens(table)
            scan_times.append(time.perf_counter() - started)
            started = time.perf_counter()
            listed = state.list_task_tokens()
            index_times.append(time.perf_counter() - started)
            assert sorted(t.task_token for t in listed) == sorted(t.task_token for t in scanned)
            assert len(listed) == args.tokens
    scan_ms, index_ms = statistics.median(scan_times) * 1000, statistics.median(index_times) * 1000
    print(f"state table: {args.others:,} other items + {args.tokens} tokens, median of {args.runs} runs (moto)")
    print(f"  Scan filtered on sk = TOKEN   {scan_ms:9.1f} ms   {items_scanned:,} items read, "
          f"~{units:,} read units on DynamoDB")
    print(f"  index Query + BatchGetItem    {index_ms:9.1f} ms   {2 * args.tokens:,} items read "
          f"({args.tokens} index entries, {args.tokens} items), ~{args.tokens + 1} read units on DynamoDB")
    print(f"  ×{scan_ms / index_ms:,.0f} faster")


if __name__ == "__main__":
    main()
