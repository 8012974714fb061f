"""Causes, state data and GitLab bodies stay bounded whatever the number of failing clusters.

Step Functions keeps 32,768 characters of an error's cause and 256 KB of a state's data; GitLab
refuses a description or note over 1,000,000 characters. GUARD's texts are digests (counts,
the first clusters, where the rest are) built before any last-resort cut.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import cast

import pytest
from guard.core.evidence import ClusterEvidence, FailureEvidence, Violation
from guard.core.models import CheckStatus, Cluster, HealthCheckResult
from guard.core.run import ClusterVerdict, ExecutionInput, MetricFinding, RunRecord, VerdictOutcome
from guard.digest import FIRST, Issue, issues_digest, names_digest, versions_digest
from guard.errors import GuardError, ValidationFailed, ValidationInconclusive
from guard.outbound import BODY_LIMIT, CAUSE_LIMIT, cause, gitlab_body, untrusted_code
from guard.services.failure_report import failure_markdown
from guard.services.poll import Poll
from guard.services.report import change_description
from guard.services.validate import conclude
from guard.stores.state import StateStore

T0 = datetime(2026, 5, 6, 12, 0, tzinfo=UTC)


def _names(n: int) -> list[str]:
    return [f"eks-fleet-{i:04d}" for i in range(n)]


def _run(clusters: list[str]) -> RunRecord:
    return RunRecord(run_id="run-1", execution_arn="arn:aws:states:us-east-1:1:execution:guard:run-1", batch="fleet",
                     target_version="1.20.0", clusters=clusters, from_versions={c: "1.19.3" for c in clusters},
                     gitlab_project="platform/istio-fleet",
                     options=ExecutionInput(batch="fleet", target_version="1.20.0"), started_at=T0)


def _failing(cluster_id: str, outcome: VerdictOutcome = VerdictOutcome.FAIL) -> ClusterVerdict:
    """A cluster whose p95 latency rose 40% and whose istiod is not ready (a post-check)."""
    return ClusterVerdict(cluster_id=cluster_id, outcome=outcome, findings=[MetricFinding(
        query_name="latency_p95", query="p95:trace.http.request{*}", rule="max_increase_percent", outcome=outcome,
        baseline=212.0, current=297.0, threshold=10.0,
        explanation="latency_p95: 297 vs baseline 212 (+40.1%), threshold +10%")],
        post_checks=[HealthCheckResult(
            cluster_id=cluster_id, check_name="istiod_ready", message="istiod 1/2 ready", timestamp=T0,
            status=CheckStatus.FAIL if outcome == VerdictOutcome.FAIL else CheckStatus.INCONCLUSIVE)])


class FakeVerdicts:
    """The three StateStore calls `conclude` makes, in memory."""

    def __init__(self, verdicts: list[ClusterVerdict]) -> None:
        self.run = _run([v.cluster_id for v in verdicts])
        self.verdicts = {v.cluster_id: v for v in verdicts}

    def get_run(self, run_id: str) -> RunRecord:
        return self.run

    def get_verdict(self, run_id: str, cluster_id: str) -> ClusterVerdict | None:
        return self.verdicts.get(cluster_id)

    def put_verdict(self, run: RunRecord, verdict: ClusterVerdict) -> None:
        self.verdicts[verdict.cluster_id] = verdict


def _conclude_error(verdicts: list[ClusterVerdict]) -> GuardError:
    with pytest.raises((ValidationFailed, ValidationInconclusive)) as raised:
        conclude(cast(StateStore, FakeVerdicts(verdicts)), "run-1")
    return raised.value


def test_one_failing_cluster_is_named_with_its_numbers_as_before():
    # GIVEN one cluster of the batch failing validation
    # WHEN the batch is concluded
    store = FakeVerdicts([_failing("eks-dev-2")])
    with pytest.raises(ValidationFailed) as raised:
        conclude(cast(StateStore, store), "run-1")
    # THEN the cause is that cluster's own summary, with no count in front
    assert str(raised.value) == store.verdicts["eks-dev-2"].summary()
    assert str(raised.value).startswith("eks-dev-2: fail: latency_p95: 297 vs baseline 212")


@pytest.mark.parametrize("outcome,error_type", [(VerdictOutcome.FAIL, ValidationFailed),
                                                 (VerdictOutcome.INCONCLUSIVE, ValidationInconclusive)])
def test_a_thousand_failing_clusters_give_a_cause_under_the_limit_with_counts_and_the_first_clusters(outcome,
                                                                                                    error_type):
    # GIVEN 1,000 clusters that all fail (or are all inconclusive) the same way
    verdicts = [_failing(c, outcome) for c in _names(1_000)]
    # WHEN the batch is concluded
    error = _conclude_error(verdicts)
    text = str(error)
    # THEN the cause fits Step Functions' limit without the last-resort cut, and still says how many and why
    assert isinstance(error, error_type)
    assert len(text) <= CAUSE_LIMIT and cause(text) == text
    assert text.startswith("1000 clusters")
    assert "latency_p95 1000" in text and "istiod_ready 1000" in text
    # AND it names the first clusters with their reason, and where the other 990 are
    assert all(f"eks-fleet-{i:04d}: {outcome.value}" in text for i in range(FIRST))
    assert "eks-fleet-0010" not in text
    assert "990 more" in text and "guard status" in text


def test_a_digest_survives_huge_reasons():
    # GIVEN 500 clusters whose reasons are 50,000 characters each (a post-check quoting a whole event log)
    issues = [Issue(c, f"{c}: fail: " + "x" * 50_000, ("no_new_crash_loops",)) for c in _names(500)]
    # WHEN they are digested
    text = issues_digest(issues, what="failed validation")
    # THEN the counts come first and the whole stays under the cause limit
    assert text.startswith("500 clusters failed validation (no_new_crash_loops 500)")
    assert len(text) < CAUSE_LIMIT


def test_cluster_and_version_lists_are_cut_with_a_count():
    # GIVEN 500 clusters going back to two versions
    names = _names(500)
    versions = {c: ("1.19.3" if i % 5 else "1.19.2") for i, c in enumerate(names)}
    # WHEN they are named in a cause
    # THEN a few names are listed and the rest counted
    assert names_digest(names[:3]) == "eks-fleet-0000, eks-fleet-0001, eks-fleet-0002"
    assert names_digest(names).endswith("… and 490 more (500 clusters)")
    assert versions_digest(versions).startswith("500 clusters (to 1.19.3 400, 1.19.2 100): eks-fleet-0000 → 1.19.2")
    assert len(versions_digest(versions)) < 500


class FixedClock:
    def __init__(self, now: datetime) -> None:
        self._now = now

    def now(self) -> datetime:
        return self._now


def test_a_poll_over_a_large_fleet_carries_a_bounded_list_and_the_counts():
    # GIVEN 600 clusters where Flux has not reconciled, two unregistered, past the deadline
    clusters: dict[str, Cluster | None] = {c: None if c.endswith(("0001", "0002")) else cast(Cluster, object())
                                           for c in _names(600)}

    def read(cluster_id: str, cluster: Cluster) -> list[str]:
        return [f"{cluster_id}: HelmRelease istio-system/istiod at 1.19.3 ready=False (upgrade not started)"]

    # WHEN one poll reads them all
    result = Poll(FixedClock(T0)).check((T0 - timedelta(minutes=1)).isoformat(), 15, clusters, read)
    # THEN the state data holds the first reasons and the counts, not 600 lines
    assert result.expired and not result.done
    assert len(result.waiting_on) == FIRST
    assert (result.waiting_count, result.waiting_clusters) == (600, 600)
    assert result.waiting_kinds == {"not there yet": 598, "not in the registry": 2}
    assert len(result.model_dump_json()) < 3_000
    # AND the deadline's error names the counts, the first clusters and how many more
    described = result.describe()
    assert described.startswith("600 clusters still waiting (not there yet 598, not in the registry 2)")
    assert "eks-fleet-0000: HelmRelease" in described and "… and 590 more" in described


def _evidence(n: int) -> FailureEvidence:
    return FailureEvidence(run_id="run-1", batch="fleet", target_version="1.20.0", clusters=[
        ClusterEvidence(cluster_id=c, outcome="fail", from_version="1.19.3", to_version="1.20.0",
                        violations=[Violation(name="latency_p95", outcome="fail", baseline=212, current=297,
                                              threshold=10, explanation="latency_p95: 297 vs 212 (+40%)")])
        for c in _names(n)])


def test_a_rollback_description_of_500_clusters_is_a_summary_table_and_a_count():
    # GIVEN 500 clusters that failed validation
    run = _run(_names(500))
    # WHEN the rollback MR's failure data is written
    markdown = failure_markdown(_evidence(500))
    description = gitlab_body(change_description(run, run.from_versions, rollback=_rollback_section(markdown)))
    # THEN it opens with the count and a summary table, shows 20 clusters in full and counts the rest
    assert "**500 clusters** did not pass: fail 500." in markdown
    assert "| `eks-fleet-0099` | fail | latency_p95 |" in markdown
    assert "400 more clusters | see `guard status <execution>`" in markdown
    assert markdown.count("### `eks-fleet-") == 20
    assert "_480 more clusters: see `guard status <execution>`._" in markdown
    # AND the whole description stays well inside GitLab's limit, with no raw HTML
    assert len(description) < BODY_LIMIT
    assert "<details>" not in description


def _rollback_section(markdown: str):  # type: ignore[no-untyped-def]
    from guard.services.report import RollbackSection

    return RollbackSection(reason="500 clusters failed validation", failure_markdown=markdown)


def test_a_body_over_the_limit_ends_at_a_line_with_a_note_and_no_open_fence():
    # GIVEN a note whose log tail alone is far over the limit
    body = "## Failure data\n\n| cluster | outcome |\n|---|---|\n| `a` | fail |\n\n" + untrusted_code(
        "\n".join(f"line {i} " + "y" * 80 for i in range(10_000)))
    # WHEN it passes GitLab's last pass
    sent = gitlab_body(body, limit=50_000)
    # THEN it is under the limit, keeps the summary on top, closes the fence and says what was left out
    assert len(sent) <= 50_000
    assert sent.startswith("## Failure data")
    lines = sent.splitlines()
    assert lines[-3] == "```" and "more lines" in lines[-1] and "left out" in lines[-1]
    # AND a body under the limit is untouched by the cut
    assert gitlab_body("short note") == "short note"


def test_the_first_clusters_and_a_count_when_many_clusters_are_missing_from_the_registry():
    # GIVEN a batch of 800 clusters none of which is registered
    # WHEN the plan names them in its error
    text = f"batch 'fleet' lists clusters missing from the registry: {names_digest(_names(800))}"
    # THEN ten are named and the other 790 counted
    assert text.count("eks-fleet-") == FIRST and text.endswith("… and 790 more (800 clusters)")
