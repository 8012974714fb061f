"""Reading a Step Functions execution from outside it: the `guard` CLI and the local rehearsal."""

from __future__ import annotations

from typing import Any


def execution_history(sfn: Any, execution_arn: str) -> list[dict[str, Any]]:
    """Every history event of an execution, oldest first, across all pages.

    `sfn` is a boto3 Step Functions client; its paginator follows `nextToken`.
    """
    pages = sfn.get_paginator("get_execution_history").paginate(
        executionArn=execution_arn, PaginationConfig={"PageSize": 1000})
    return [event for page in pages for event in page["events"]]
