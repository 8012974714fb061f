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
CLUSTERS = [f"eks-prod-us-east-1-{i:05d}" for i in range(2_000)]
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

    # THEN no item is near 400 KB: the largest are the records listing the cluster ids (~63 B a cluster)
    sizes = [(str(i["sk"]).split("#")[0], item_size(i)) for i in items(table)]
    assert max(size for _, size in sizes) < ITEM_LIMIT // 3
    assert Counter(kind for kind, _ in sizes) == {"META": 1, "SIDECARS": 4_000, "EVIDENCE": 2_001, "ROLLBACK": 1}
    # AND every reader gets everything back: each cluster's restarts with their times, its evidence, its run
    restarts = state.sidecar_restarts("r1", "upgrade")
    assert len(restarts) == 2_000 and all(sorted(r) == WORKLOADS for r in restarts.values())
    assert restarts[CLUSTERS[-1]]["shop/service-4"] == START + timedelta(minutes=1)
    assert state.sidecar_restarts("r1", "rollback") == {}
    evidence = failures.get_evidence("r1")
    assert evidence is not None and [c.cluster_id for c in evidence.clusters] == CLUSTERS
    assert state.get_run("r1").clusters == CLUSTERS
