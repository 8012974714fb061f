"""A 2,000-cluster run's state in DynamoDB: no item nears the 400 KB limit, whatever it did per cluster,
and every reader gets back all it needs (moto refuses an item over 400 KB, as DynamoDB does; the sizes
are counted here too, to say how far below it they stay)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest
from guard.core.evidence import ClusterEvidence, FailureEvidence, Violation
from guard.core.run import ExecutionInput, RunRecord
from guard.stores.failure import FailureStore, RollbackRecord
from guard.stores.schema import create_tables
from guard.stores.state import SidecarWave, StateStore
from guard.vocabulary.outcomes import RollbackStatus
from moto import mock_aws

from tests.support.item_size import ITEM_LIMIT, item_size

START = datetime(2026, 12, 1, tzinfo=UTC)
# The longest ids the cluster id pattern allows (100 characters): a record that listed them passed 400 KB.
CLUSTERS = [f"eks-prod-us-east-1-{i:05d}-".ljust(100, "x") for i in range(2_000)]
WORKLOADS = [f"shop/service-{n}" for n in range(5)]


@pytest.fixture
def table() -> Iterator[Any]:
    with mock_aws():
        _, state = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), "registry", "state")
        yield state


def items(table: Any) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = table.scan(**kwargs)
        found += page["Items"]
        if "LastEvaluatedKey" not in page:
            return found
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_a_2000_cluster_run_that_restarts_sidecars_fails_and_rolls_back_keeps_every_item_small(table: Any) -> None:
    # GIVEN a 2,000-cluster run whose waves restarted 5 workloads on every cluster (a wave of 3, then 2),
    # then failed everywhere and was rolled back
    state, failures = StateStore(table), FailureStore(table)
    run = RunRecord(run_id="r1", execution_arn="arn:aws:states:us-east-1:111122223333:execution:guard:r1",
                    batch="fleet", target_version="1.20.0", clusters=CLUSTERS,
                    from_versions=dict.fromkeys(CLUSTERS, "1.19.3"), gitlab_project="platform/fleet",
                    options=ExecutionInput(batch="fleet", target_version="1.20.0"), started_at=START)
    # WHEN it is all stored, as the tasks store it
    state.put_run(run)
    for cluster_id in CLUSTERS:
        for wave, workloads in enumerate((WORKLOADS[:3], WORKLOADS[3:])):
            state.put_sidecar_wave("r1", "upgrade", SidecarWave(cluster_id=cluster_id, workloads=workloads,
                                                                at=START + timedelta(minutes=wave)))
    failures.put_evidence(FailureEvidence(run_id="r1", batch="fleet", target_version="1.20.0", clusters=[
        ClusterEvidence(cluster_id=c, outcome="fail", from_version="1.19.3", to_version="1.20.0",
                        violations=[Violation(name="latency_p95", outcome="fail", explanation=f"{c}: p95 +40%")])
        for c in CLUSTERS]), START)
    failures.put_rollback(RollbackRecord(run_id="r1", batch="fleet", reason="2000 clusters failed validation",
                                         clusters=CLUSTERS, versions=dict.fromkeys(CLUSTERS, "1.19.3"),
                                         rolled_back_from="1.20.0", status=RollbackStatus.WAITING_FOR_MERGE,
                                         at=START))
    state.put_run(state.get_run("r1"))

    # THEN no item is near 400 KB, and the run and rollback records themselves stay a few KB
    sizes = [(str(i["sk"]).rsplit("#", 1)[0] if "CLUSTERS" in str(i["sk"]) else str(i["sk"]).split("#")[0],
              item_size(i)) for i in items(table)]
    assert max(size for _, size in sizes) < ITEM_LIMIT // 3
    assert Counter(kind for kind, _ in sizes) == {"META": 1, "CLUSTERS": 4, "SIDECARS": 4_000, "EVIDENCE": 2_001,
                                                  "ROLLBACK": 1, "ROLLBACK#CLUSTERS": 4}
    assert max(size for kind, size in sizes if kind in ("META", "ROLLBACK")) < 4_000
    # AND every reader gets everything back: each cluster's restarts with their times, its evidence, its run
    restarts = state.sidecar_restarts("r1", "upgrade")
    assert len(restarts) == 2_000 and all(sorted(r) == WORKLOADS for r in restarts.values())
    assert restarts[CLUSTERS[-1]]["shop/service-4"] == START + timedelta(minutes=1)
    assert state.sidecar_restarts("r1", "rollback") == {}
    evidence = failures.get_evidence("r1")
    assert evidence is not None and [c.cluster_id for c in evidence.clusters] == CLUSTERS
    stored = state.get_run("r1")
    assert stored.clusters == CLUSTERS and stored.from_versions == dict.fromkeys(CLUSTERS, "1.19.3")
    rollback = failures.get_rollback("r1")
    assert rollback is not None and rollback.clusters == CLUSTERS
    assert rollback.versions == dict.fromkeys(CLUSTERS, "1.19.3")


def test_records_written_with_their_clusters_inside_are_read_and_moved_out_at_their_next_write(table: Any) -> None:
    # GIVEN a run record and a rollback record as written before, each listing its clusters itself
    run = RunRecord(run_id="r0", execution_arn="arn", batch="b", target_version="1.20.0", clusters=["c1", "c2"],
                    from_versions={"c1": "1.19.3", "c2": "1.19.2"}, gitlab_project="p",
                    options=ExecutionInput(batch="b", target_version="1.20.0"), started_at=START)
    rollback = RollbackRecord(run_id="r0", batch="b", reason="p95", clusters=["c2"], versions={"c2": "1.19.2"},
                              rolled_back_from="1.20.0", status=RollbackStatus.WAITING_FOR_MERGE, at=START)
    table.put_item(Item={"pk": "RUN#r0", "sk": "META", "doc": run.model_dump_json(), "run_status": "running",
                         "expires_at": 0})
    table.put_item(Item={"pk": "RUN#r0", "sk": "ROLLBACK", "doc": rollback.model_dump_json(), "expires_at": 0})
    state, failures = StateStore(table), FailureStore(table)
    # WHEN read, written again by today's code, and read again
    for _ in range(2):
        found, back = state.get_run("r0"), failures.get_rollback("r0")
        assert back is not None
        # THEN the clusters and their versions are the same each time
        assert (found.clusters, found.from_versions) == (["c1", "c2"], {"c1": "1.19.3", "c2": "1.19.2"})
        assert (back.clusters, back.versions) == (["c2"], {"c2": "1.19.2"})
        state.put_run(found)
        failures.put_rollback(back)
    # AND the records no longer list them: their items do
    meta = table.get_item(Key={"pk": "RUN#r0", "sk": "META"})["Item"]
    assert "clusters" not in meta["doc"] and "from_versions" not in meta["doc"] and meta["cluster_items"] == 1
