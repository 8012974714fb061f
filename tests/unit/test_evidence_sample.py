"""What the LLM analysis reads of thousands of failing clusters: a bounded sample with every kind of
failure in it, and the counts over all of them."""

from __future__ import annotations

from guard.core.evidence import ClusterEvidence, FailureEvidence, Violation
from guard.llm.prompt import build_prompt
from guard.services.analysis import ANALYSIS_SAMPLE


def cluster(i: int, outcome: str, *checks: str) -> ClusterEvidence:
    return ClusterEvidence(cluster_id=f"c{i:04d}", outcome=outcome, from_version="1.19.3", to_version="1.20.0",
                           violations=[Violation(name=n, outcome=outcome, explanation=f"{n} bad on c{i:04d}")
                                       for n in checks])


def fleet() -> FailureEvidence:
    # 5,000 failing clusters: 4,000 with latency, 900 inconclusive without data, 95 with istiod down,
    # 5 with both latency and errors (the rare kind a sample of the first clusters would miss)
    clusters = [cluster(i, "fail", "latency_p95") for i in range(4_000)]
    clusters += [cluster(i, "inconclusive", "error_rate") for i in range(4_000, 4_900)]
    clusters += [cluster(i, "fail", "istiod_ready") for i in range(4_900, 4_995)]
    clusters += [cluster(i, "fail", "error_rate", "latency_p95") for i in range(4_995, 5_000)]
    return FailureEvidence(run_id="r1", batch="fleet", target_version="1.20.0", clusters=clusters)


def test_the_sample_takes_every_kind_of_failure_in_turn_and_keeps_the_run_order() -> None:
    # GIVEN the evidence of 5,000 failing clusters of four kinds
    evidence = fleet()
    # WHEN sampled for the analysis
    sample = evidence.sample(ANALYSIS_SAMPLE)
    # THEN it holds 20 clusters, of every kind, in the run's order, and the summary still counts all 5,000
    ids = [c.cluster_id for c in sample.clusters]
    assert len(ids) == ANALYSIS_SAMPLE and ids == sorted(ids)
    kinds = {(c.outcome, tuple(v.name for v in c.violations)) for c in sample.clusters}
    assert kinds == {("fail", ("latency_p95",)), ("inconclusive", ("error_rate",)), ("fail", ("istiod_ready",)),
                     ("fail", ("error_rate", "latency_p95"))}
    # Round-robin over the kinds: 5 rounds of 4 clusters, the first of each kind first.
    assert ids[:5] == ["c0000", "c0001", "c0002", "c0003", "c0004"] and "c4995" in ids
    assert sample.summary is not None and sample.summary.cluster_count == 5_000
    assert sample.summary.outcomes == {"fail": 4_100, "inconclusive": 900}


def test_a_small_failure_is_not_sampled() -> None:
    # GIVEN 3 failing clusters WHEN sampled THEN all three are there
    evidence = FailureEvidence(run_id="r1", batch="b", target_version="1.20.0",
                               clusters=[cluster(i, "fail", "latency_p95") for i in range(3)])
    assert [c.cluster_id for c in evidence.sample(ANALYSIS_SAMPLE).clusters] == ["c0000", "c0001", "c0002"]


def test_the_prompt_of_a_sample_says_what_it_stands_for() -> None:
    # GIVEN the sample of 5,000 failing clusters
    sample = fleet().sample(ANALYSIS_SAMPLE)
    # WHEN the prompt is built
    prompt = build_prompt(sample, 24_000)
    # THEN it gives the counts over every failing cluster before the sample's clusters
    assert "5000 clusters did not pass; the 20 below are a sample" in prompt
    assert "By outcome: fail 4100, inconclusive 900" in prompt
    assert "By failed check or query (clusters): latency_p95 4005, error_rate 905, istiod_ready 95" in prompt
    assert prompt.index("By outcome") < prompt.index("cluster c0000: verdict")
