"""The stored evidence fits one DynamoDB item however many clusters failed."""

from __future__ import annotations

from datetime import UTC, datetime

import boto3
from guard.core.evidence import ClusterEvidence, FailureEvidence
from guard.stores.failure import MAX_EVIDENCE_BYTES, FailureStore
from guard.stores.schema import create_tables
from moto import mock_aws


def test_the_evidence_of_500_failing_clusters_is_cut_to_fit_keeping_every_cluster() -> None:
    # GIVEN the evidence of 500 failing clusters, each with a 400-line istiod log (~12 KB)
    evidence = FailureEvidence(run_id="r1", batch="fleet", target_version="1.20.0", clusters=[
        ClusterEvidence(cluster_id=f"eks-{i:03d}", outcome="fail", from_version="1.19.3", to_version="1.20.0",
                        istiod_log="\n".join(f"{i} line {n} of istiod's log" for n in range(400)))
        for i in range(500)])
    with mock_aws():
        _, state = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), "registry", "state")
        store = FailureStore(state)
        # WHEN it is stored
        store.put_evidence(evidence, datetime.now(UTC))
        stored = store.get_evidence("r1")
    # THEN it fits, and every cluster is still there with the end of its log (the newest lines)
    assert stored is not None and len(stored.model_dump_json()) <= MAX_EVIDENCE_BYTES
    assert [c.cluster_id for c in stored.clusters] == [c.cluster_id for c in evidence.clusters]
    assert all(c.istiod_log == "" or c.istiod_log.endswith("line 399 of istiod's log") for c in stored.clusters)
