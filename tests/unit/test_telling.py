"""The sentences GUARD says about a run's decision (guard.services.telling)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from guard.core.models import Cluster
from guard.outbound import gitlab_body
from guard.services.report import cluster_owners, owners_line
from guard.services.telling import Doubts, decided, duration, proceeded
from guard.stores.failure import DecisionRecord

AT = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize(("hours", "said"), [(0.5, "30 min"), (1, "1 h"), (1.5, "1 h 30 min"), (24, "24 h"),
                                             (0.25, "15 min")])
def test_a_timeout_reads_as_a_person_says_it(hours: float, said: str) -> None:
    # GIVEN a decision timeout in hours WHEN it is said THEN in minutes under an hour, hours above
    assert duration(hours) == said


def test_an_override_names_the_person_and_what_validation_did_not_confirm() -> None:
    # GIVEN validation found request_count inconclusive and latency failing
    doubts = Doubts(failing=["latency_p95"], inconclusive=["request_count"])
    # WHEN @maria proceeded THEN the sentence says so, never "validated"
    assert proceeded("maria", doubts) == \
        "proceeded by @maria despite failing latency_p95 and inconclusive request_count"
    assert proceeded("maria", Doubts(inconclusive=["request_count"])) == \
        "proceeded by @maria despite inconclusive request_count"


def test_a_decision_nobody_took_says_nobody_answered_within_the_timeout() -> None:
    # GIVEN the decision wait timed out after 30 min
    record = DecisionRecord(run_id="r", decision="rollback", by=None, at=AT, timed_out=True, timeout_hours=0.5)
    # THEN it reads as nobody's decision
    assert decided(record, Doubts(inconclusive=["x"])) == "no Maintainer answered within 30 min: rolled back"
    # AND a Maintainer's rollback names the Maintainer; no decision asked, no sentence
    by_alice = DecisionRecord(run_id="r", decision="rollback", by="alice", at=AT)
    assert decided(by_alice, Doubts(failing=["error_rate"])) == \
        "rolled back by @alice (`/guard rollback`) after failing error_rate"
    assert decided(None, Doubts()) is None


def test_many_doubted_queries_are_counted_not_listed() -> None:
    doubts = Doubts(inconclusive=[f"q{i}" for i in range(8)])
    assert doubts.text() == "inconclusive q0, q1, q2, q3, q4 (+3 more)"


def _cluster(cluster_id: str, handle: str | None, team: str | None) -> Cluster:
    return Cluster(cluster_id=cluster_id, batch_id="b", environment="dev", region="us-east-1",
                   gitlab_project="platform/fleet", flux_config_path="clusters/x/istio/helmrelease.yaml",
                   current_istio_version="1.19.3", owner_handle=handle, owner_team=team)


def test_the_registry_owners_are_mentioned_and_survive_the_last_pass_before_gitlab() -> None:
    # GIVEN clusters owned by a person and a team, and one whose handle GitLab would read as a broadcast
    owners = cluster_owners([_cluster("a", "@alice", "platform/istio"), _cluster("b", "alice", None),
                             _cluster("c", "@all", None)])
    # THEN each owner is mentioned once with its clusters; the broadcast never
    assert owners == {"@alice": ["a", "b"], "@platform/istio": ["a"]}
    line = owners_line(owners)
    assert line == "**Owners:** @alice (a, b), @platform/istio (a)"
    # AND the mentions leave GUARD as mentions (gitlab_body breaks only broadcasts)
    assert gitlab_body(line or "") == line
    assert owners_line({}) is None
