"""A rollback MR left to a person (`UnwatchedRollback`) keeps the version of every cluster it brings back for the
reconciler, in items of their own: no item grows with the batch (moto refuses an item over 400 KB, as DynamoDB
does; the sizes are counted here too)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from guard.stores.schema import create_tables
from guard.stores.state import StateStore, UnwatchedRollback
from moto import mock_aws

from tests.support.item_size import ITEM_LIMIT, item_size

NOW = datetime(2026, 12, 1, tzinfo=UTC)
URL = "https://gitlab.example.com/platform/fleet/-/merge_requests/42"
# The longest ids the cluster id pattern allows (100 characters): ~220 KB of versions in all.
CLUSTERS = [f"eks-prod-us-east-1-{i:05d}-".ljust(100, "x") for i in range(2_000)]


@pytest.fixture
def table() -> Iterator[Any]:
    with mock_aws():
        _, state = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), "registry", "state")
        yield state


def partition(table: Any) -> list[dict[str, Any]]:
    return table.query(KeyConditionExpression="pk = :pk", ExpressionAttributeValues={":pk": f"MR#{URL}"},
                       ConsistentRead=True)["Items"]


def left(versions: dict[str, str]) -> UnwatchedRollback:
    return UnwatchedRollback(merge_request_url=URL, merge_request_iid=42, project="platform/fleet", run_id="r1",
                             versions=versions)


def test_2000_long_cluster_ids_are_kept_in_small_items_and_read_back_whole_in_order(table: Any) -> None:
    # GIVEN a 2,000-cluster rollback MR left to a person, each cluster going back to its own version
    versions = {c: f"1.19.{i % 7}" for i, c in enumerate(CLUSTERS)}
    state = StateStore(table)
    # WHEN it is stored
    state.put_unwatched_rollback(left(versions), NOW)

    # THEN no item is over a third of DynamoDB's 400 KB, and the record itself lists no cluster
    items = partition(table)
    assert max(item_size(i) for i in items) < ITEM_LIMIT / 3, max(item_size(i) for i in items)
    head = next(i for i in items if i["sk"] == "UNWATCHED")
    assert "versions" not in json.loads(head["doc"]) and head["cluster_items"] == len(items) - 1 > 1
    # AND the reconciler reads every cluster's version back, in order
    [found] = state.list_unwatched_rollbacks()
    assert found == left(versions) and list(found.versions) == CLUSTERS
    # AND once deleted, nothing of it is left
    state.delete_unwatched_rollback(URL)
    assert partition(table) == [] and state.list_unwatched_rollbacks() == []


def test_a_record_put_again_for_fewer_clusters_keeps_only_them(table: Any) -> None:
    state = StateStore(table)
    # GIVEN a 2,000-cluster record, put again for 3 clusters (the same MR)
    state.put_unwatched_rollback(left(dict.fromkeys(CLUSTERS, "1.19.3")), NOW)
    state.put_unwatched_rollback(left(dict.fromkeys(CLUSTERS[:3], "1.19.2")), NOW)
    # WHEN it is read THEN it is the 3 clusters alone, in one item besides the record
    assert state.list_unwatched_rollbacks() == [left(dict.fromkeys(CLUSTERS[:3], "1.19.2"))]
    assert len(partition(table)) == 2


def test_a_record_stored_before_with_its_versions_inside_is_read_as_it_is(table: Any) -> None:
    # GIVEN a record as the previous version stored it: one item, its versions inside
    old = left({"eks-a": "1.19.3", "eks-b": "1.19.2"})
    table.put_item(Item={"pk": f"MR#{URL}", "sk": "UNWATCHED", "doc": old.model_dump_json(), "expires_at": 0})
    state = StateStore(table)
    # WHEN the reconciler indexes the items written before the watch index, then lists it
    state.index_unindexed_watched_items(NOW)
    # THEN it has its versions; and deleting it deletes it (the marker of that indexing is another partition)
    assert state.list_unwatched_rollbacks() == [old]
    state.delete_unwatched_rollback(URL)
    assert partition(table) == []
