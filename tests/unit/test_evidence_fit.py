"""The stored evidence of a run is one item per failing cluster and a head of counts: no item grows
with the number of failing clusters, and every reader finds what it needs."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from guard.core.evidence import ClusterEvidence, EventInfo, FailureEvidence, Violation
from guard.services.failure_report import SUMMARY_ROWS, failure_markdown
from guard.stores.failure import MAX_CLUSTER_EVIDENCE_BYTES, FailureStore, fit_cluster
from guard.stores.schema import create_tables
from moto import mock_aws

from tests.support.item_size import ITEM_LIMIT, item_size

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture
def table() -> Iterator[Any]:
    with mock_aws():
        _, state = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), "registry", "state")
        yield state


def failing(i: int, *, log_lines: int = 40, outcome: str = "fail") -> ClusterEvidence:
    return ClusterEvidence(
        cluster_id=f"eks-prod-{i:05d}", outcome=outcome, from_version="1.19.3", to_version="1.20.0",
        summary=f"eks-prod-{i:05d}: {outcome}: p95 latency +40%",
        violations=[Violation(name="latency_p95" if i % 7 else "istiod_ready", outcome=outcome, baseline=100.0,
                              current=140.0, threshold=20.0, explanation=f"p95 latency +40% on eks-prod-{i:05d}")],
        events=[EventInfo(namespace="istio-system", involved_object=f"Pod/istiod-{n}", reason="BackOff",
                          message="Back-off restarting failed container", type="Warning") for n in range(10)],
        istiod_log="\n".join(f"{i} line {n} of istiod's log" for n in range(log_lines)))


def all_items(table: Any) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {}
    while True:
        page = table.scan(**kwargs)
        items += page["Items"]
        if "LastEvaluatedKey" not in page:
            return items
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def test_the_evidence_of_5000_failing_clusters_is_stored_in_items_of_bounded_size_and_read_back_whole(
        table: Any) -> None:
    # GIVEN the evidence of 5,000 failing clusters (each with violations, events and a 40-line istiod log)
    evidence = FailureEvidence(run_id="r1", batch="fleet", target_version="1.20.0",
                               clusters=[failing(i, outcome="fail" if i % 10 else "inconclusive")
                                         for i in range(5_000)])
    store = FailureStore(table)
    # WHEN it is stored and read back
    store.put_evidence(evidence, NOW)
    stored = store.get_evidence("r1")
    # THEN no item of the table is near DynamoDB's 400 KB (moto refuses more, and the size is counted here too)
    sizes = [item_size(item) for item in all_items(table)]
    assert len(sizes) == 5_001 and max(sizes) < ITEM_LIMIT // 3
    # AND every cluster is read back, in the run's order, with what a reader needs
    assert stored is not None
    assert [c.cluster_id for c in stored.clusters] == [c.cluster_id for c in evidence.clusters]
    assert stored.clusters[1].violations == evidence.clusters[1].violations
    assert stored.clusters[1].istiod_log == evidence.clusters[1].istiod_log
    # AND the head counts all of them
    assert stored.summary is not None and stored.summary.cluster_count == 5_000
    assert stored.summary.outcomes == {"fail": 4_500, "inconclusive": 500}
    assert stored.summary.violations == {"latency_p95": 4_285, "istiod_ready": 715}
    assert stored.first_violation() == "eks-prod-00000: p95 latency +40% on eks-prod-00000"


def test_a_reader_of_the_first_clusters_reads_only_those_and_the_report_counts_them_all(table: Any) -> None:
    # GIVEN the stored evidence of 2,000 failing clusters
    store = FailureStore(table)
    store.put_evidence(FailureEvidence(run_id="r1", batch="fleet", target_version="1.20.0",
                                       clusters=[failing(i) for i in range(2_000)]), NOW)
    # WHEN the failure report's reader asks for the first rows, and the notification's for none
    first = store.get_evidence("r1", SUMMARY_ROWS)
    summary_only = store.get_evidence("r1", first=0)
    # THEN it gets those rows, and the report still says how many failed in all
    assert first is not None and [c.cluster_id for c in first.clusters] == [f"eks-prod-{i:05d}" for i in range(100)]
    report = failure_markdown(first)
    assert "**2000 clusters** did not pass: fail 2000." in report
    assert "| … | 1900 more clusters |" in report and "_1980 more clusters: see `guard status <execution>`._" in report
    assert summary_only is not None and summary_only.clusters == []
    assert summary_only.first_violation() == "eks-prod-00000: p95 latency +40% on eks-prod-00000"


def test_one_cluster_s_huge_evidence_is_cut_to_its_bound_keeping_the_newest_log_lines(table: Any) -> None:
    # GIVEN one cluster with a 5,000-line log of long lines and 500 long events (~3 MB)
    huge = failing(1, log_lines=5_000)
    huge.istiod_log = "\n".join(f"line {n} " + "x" * 500 for n in range(5_000))
    huge.events = [EventInfo(namespace="shop", involved_object=f"Pod/p{n}", message="é" * 2_000, type="Warning")
                   for n in range(500)]
    store = FailureStore(table)
    # WHEN stored
    store.put_evidence(FailureEvidence(run_id="r1", batch="b", target_version="1.20.0", clusters=[huge]), NOW)
    stored = store.get_evidence("r1")
    # THEN its item is within the bound (counted in bytes: the events are not ASCII), its violations whole,
    # and the log kept its end
    assert max(item_size(item) for item in all_items(table)) <= MAX_CLUSTER_EVIDENCE_BYTES + 1_000
    assert stored is not None and stored.clusters[0].violations == huge.violations
    assert stored.clusters[0].istiod_log.endswith("line 4999 " + "x" * 500)


def test_violations_are_cut_last_and_the_cut_is_said() -> None:
    # GIVEN a cluster with 3,000 violations of 1,000 characters each (a config of thousands of queries)
    c = failing(1)
    c.violations = [Violation(name=f"q{n}", outcome="fail", explanation="y" * 1_000) for n in range(3_000)]
    # WHEN cut to fit
    cut = fit_cluster(c)
    # THEN it fits, its log and events went first, and a note says how many violations were left out
    assert len(cut.model_dump_json().encode()) <= MAX_CLUSTER_EVIDENCE_BYTES
    assert cut.istiod_log == "" and cut.events == [] and cut.violations
    assert cut.notes[-1] == f"{3_000 - len(cut.violations)} of 3000 violations left out to fit the stored evidence"


def test_evidence_stored_before_the_per_cluster_items_is_still_read(table: Any) -> None:
    # GIVEN a head item written before: every cluster's evidence inside it, no summary
    old = FailureEvidence(run_id="r0", batch="b", target_version="1.20.0", clusters=[failing(1), failing(2)])
    table.put_item(Item={"pk": "RUN#r0", "sk": "EVIDENCE", "doc": old.model_dump_json(exclude={"summary"}),
                         "expires_at": 0})
    # WHEN read
    stored = FailureStore(table).get_evidence("r0", SUMMARY_ROWS)
    # THEN its clusters are there and its counts are computed from them
    assert stored is not None and [c.cluster_id for c in stored.clusters] == ["eks-prod-00001", "eks-prod-00002"]
    assert stored.tally().outcomes == {"fail": 2}


def test_storing_again_with_fewer_clusters_reads_only_the_new_ones(table: Any) -> None:
    # GIVEN evidence of 30 clusters stored, then (a rerun) of 20
    store = FailureStore(table)
    store.put_evidence(FailureEvidence(run_id="r1", batch="b", target_version="1.20.0",
                                       clusters=[failing(i) for i in range(30)]), NOW)
    store.put_evidence(FailureEvidence(run_id="r1", batch="b", target_version="1.20.0",
                                       clusters=[failing(i) for i in range(100, 120)]), NOW)
    # WHEN read THEN only the 20 of the last store are there
    stored = store.get_evidence("r1")
    assert stored is not None
    assert [c.cluster_id for c in stored.clusters] == [f"eks-prod-{i:05d}" for i in range(100, 120)]
