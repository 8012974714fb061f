"""The state table's sparse watch index against moto DynamoDB: what the reconciler lists, how a stale index
entry is read again, and how items written before the index are indexed."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from boto3.dynamodb.conditions import Key
from guard.stores.schema import STATE_WATCH_INDEX, create_tables
from guard.stores.state import StateStore, TaskTokenRecord, UnwatchedRollback
from moto import mock_aws

NOW = datetime(2024, 5, 6, 9, 0, tzinfo=UTC)
MR = "https://gitlab.example.com/platform/istio-fleet/-/merge_requests/"


@pytest.fixture
def table(monkeypatch):
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_SESSION_TOKEN": "testing", "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        _, created = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), state_name="guard-state")
        yield created


def token(n: int, run_id: str = "run-1") -> TaskTokenRecord:
    return TaskTokenRecord(merge_request_url=f"{MR}{n}", task_token=f"token-{n}", run_id=run_id)


def left(n: int) -> UnwatchedRollback:
    return UnwatchedRollback(merge_request_url=f"{MR}{n}", merge_request_iid=n, project="platform/istio-fleet",
                             run_id="run-1", versions={"eks-dev-1": "1.19.3"})


def old_format(table: Any, record: TaskTokenRecord | UnwatchedRollback, sk: str) -> None:
    """An item as the code before the watch index wrote it: no `watch` attribute."""
    table.put_item(Item={"pk": f"MR#{record.merge_request_url}", "sk": sk, "doc": record.model_dump_json(),
                         "expires_at": 1})


def test_only_the_watched_items_are_in_the_index_and_listed(table):
    # GIVEN tokens and a left rollback among many items of other kinds (runs, cluster slices, locks)
    state = StateStore(table)
    with table.batch_writer() as batch:
        for n in range(300):
            batch.put_item(Item={"pk": f"RUN#r{n}", "sk": f"CLUSTERS#{n:05d}", "doc": "{}", "expires_at": 1})
    state.acquire_lock("dev-1", "run-1", NOW, hours=2)
    for n in (1, 2, 3):
        state.put_task_token(token(n), NOW, hours=72)
    state.put_unwatched_rollback(left(9), NOW)

    # WHEN the index is queried and the store lists what the reconciler watches
    tokens = state.list_task_tokens()
    rollbacks = state.list_unwatched_rollbacks()

    # THEN exactly the watched items are listed
    assert sorted(t.task_token for t in tokens) == ["token-1", "token-2", "token-3"]
    assert rollbacks == [left(9)]
    # AND the index holds those four entries only, keys only (the index is sparse: other items are not in it)
    entries = table.scan(IndexName=STATE_WATCH_INDEX)["Items"]
    assert sorted((e["watch"], e["pk"]) for e in entries) == [
        ("TOKEN", f"MR#{MR}1"), ("TOKEN", f"MR#{MR}2"), ("TOKEN", f"MR#{MR}3"), ("UNWATCHED", f"MR#{MR}9")]
    assert all(set(e) == {"pk", "sk", "watch"} for e in entries)


def test_the_listing_pages_through_the_index_and_reads_100_items_a_request(table):
    # GIVEN more tokens than one page of the index holds (150 here), and than one BatchGetItem reads (100)
    state = StateStore(_Paged(table, limit=150))
    for n in range(205):
        state.put_task_token(token(n), NOW, hours=72)
    # WHEN listed THEN every token is found, once
    assert sorted(t.task_token for t in state.list_task_tokens()) == sorted(f"token-{n}" for n in range(205))


def test_items_dynamodb_leaves_unprocessed_are_asked_again(table):
    # GIVEN three tokens, and a BatchGetItem that leaves all but the first key unprocessed on its first round
    # (as DynamoDB does when throttled)
    for n in range(3):
        StateStore(table).put_task_token(token(n), NOW, hours=72)
    state = StateStore(_Throttled(table))
    # WHEN listed THEN the unprocessed keys are asked again and every token is found
    assert sorted(t.task_token for t in state.list_task_tokens()) == ["token-0", "token-1", "token-2"]
    assert state._table.rounds == 2


def test_a_stale_index_entry_is_read_again_by_key(table):
    # GIVEN the index still lists a token deleted since, and a token replaced since by a later run's
    # (a GSI is eventually consistent)
    state = StateStore(table)
    state.put_task_token(token(1), NOW, hours=72)
    state.put_task_token(token(2), NOW, hours=72)
    stale = table.query(IndexName=STATE_WATCH_INDEX, KeyConditionExpression=Key("watch").eq("TOKEN"))["Items"]
    state.delete_task_token(f"{MR}1")
    state.put_task_token(TaskTokenRecord(merge_request_url=f"{MR}2", task_token="token-2b", run_id="run-2"),
                         NOW, hours=72)

    # WHEN the store lists tokens from that stale page
    listed = StateStore(_Stale(table, stale)).list_task_tokens()

    # THEN the deleted token is not listed and the replaced one is listed as the table holds it now
    assert [(t.task_token, t.run_id) for t in listed] == [("token-2b", "run-2")]


def test_items_written_before_the_index_are_indexed_until_the_marker_says_done(table):
    # GIVEN a token and a left rollback as the previous release wrote them (no `watch`), and a current token
    state = StateStore(table)
    old_format(table, token(1), "TOKEN")
    old_format(table, left(2), "UNWATCHED")
    state.put_task_token(token(3), NOW, hours=72)
    assert [t.task_token for t in state.list_task_tokens()] == ["token-3"]  # the index cannot see them yet

    # WHEN the first pass indexes older items
    indexed = state.index_unindexed_watched_items(NOW)

    # THEN both older items are indexed (the current one needed nothing) and listed
    assert indexed == 2
    assert sorted(t.task_token for t in state.list_task_tokens()) == ["token-1", "token-3"]
    assert state.list_unwatched_rollbacks() == [left(2)]
    # AND within the hour after the first pass, an older item written late (a function of the previous
    # release still running) is indexed too
    old_format(table, token(4), "TOKEN")
    assert state.index_unindexed_watched_items(NOW + timedelta(minutes=30)) == 1
    # AND a pass an hour after the first ends the migration: later passes skip the Scan
    assert state.index_unindexed_watched_items(NOW + timedelta(hours=1)) == 0
    old_format(table, token(5), "TOKEN")
    assert state.index_unindexed_watched_items(NOW + timedelta(hours=2)) == 0
    assert "watch" not in table.get_item(Key={"pk": f"MR#{MR}5", "sk": "TOKEN"})["Item"]


def test_indexing_never_brings_back_an_item_deleted_after_the_scan(table):
    # GIVEN an older token the Scan finds, deleted (its MR answered) before it is indexed
    old_format(table, token(1), "TOKEN")
    state = StateStore(_DeletedAfterScan(table))
    # WHEN the pass indexes older items THEN nothing is indexed and no bare item is written in its place
    assert state.index_unindexed_watched_items(NOW) == 0
    assert "Item" not in table.get_item(Key={"pk": f"MR#{MR}1", "sk": "TOKEN"})


class _Wrapped:
    """The moto table, every call passed through but those a subclass overrides."""

    def __init__(self, table: Any) -> None:
        self._table = table

    def __getattr__(self, name: str) -> Any:
        return getattr(self._table, name)


class _Paged(_Wrapped):
    def __init__(self, table: Any, limit: int) -> None:
        super().__init__(table)
        self._limit = limit

    def query(self, **kwargs: Any) -> Any:
        return self._table.query(Limit=self._limit, **kwargs)


class _Throttled(_Wrapped):
    """A BatchGetItem whose first round leaves every key but the first unprocessed."""

    def __init__(self, table: Any) -> None:
        super().__init__(table)
        self.rounds = 0
        self.meta = type("Meta", (), {"client": self})()

    def batch_get_item(self, RequestItems: dict[str, Any]) -> Any:
        self.rounds += 1
        if self.rounds > 1:
            return self._table.meta.client.batch_get_item(RequestItems=RequestItems)
        (name, request), = RequestItems.items()
        first = self._table.meta.client.batch_get_item(RequestItems={name: {**request, "Keys": request["Keys"][:1]}})
        return {**first, "UnprocessedKeys": {name: {**request, "Keys": request["Keys"][1:]}}}


class _Stale(_Wrapped):
    """An index that still answers with an earlier page (as an eventually consistent GSI may)."""

    def __init__(self, table: Any, entries: list[dict[str, Any]]) -> None:
        super().__init__(table)
        self._entries = entries

    def query(self, **kwargs: Any) -> Any:
        assert kwargs["IndexName"] == STATE_WATCH_INDEX
        return {"Items": self._entries}


class _DeletedAfterScan(_Wrapped):
    def scan(self, **kwargs: Any) -> Any:
        page = self._table.scan(**kwargs)
        for item in page["Items"]:
            self._table.delete_item(Key={"pk": item["pk"], "sk": item["sk"]})
        return page
