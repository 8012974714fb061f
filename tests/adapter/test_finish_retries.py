"""RecordSuccess / RecordFailure retried by Step Functions: the MR gets one comment, not two.
And RecordFailure after the MR wait timed out: GitLab is asked before "nothing was deployed" is said."""

from __future__ import annotations

from collections.abc import Iterator

import boto3
import pytest
from guard.adapters.gitlab_repo import GitLabRepo
from guard.core.models import Cluster
from guard.core.run import ExecutionInput, RunRecord
from guard.services.finish import FinishService
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from guard.stores.state import StateStore, TaskTokenRecord
from moto import mock_aws

from sandbox.sims.gitlab_sim import GitLabSimulator
from tests.support.clock import FakeClock

PROJECT = "platform/istio-fleet"


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FinishService, GitLabSimulator, int]]:
    for key, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                       "AWS_SECRET_ACCESS_KEY": "testing"}.items():
        monkeypatch.setenv(key, value)
    with mock_aws(), GitLabSimulator(token="sim-token") as gitlab:
        ddb = boto3.resource("dynamodb")
        create_tables(ddb, "registry", "state")
        registry, state = ClusterRegistry(ddb.Table("registry"), "example"), StateStore(ddb.Table("state"))
        gitlab.add_project(PROJECT, {"f.yaml": "x: 1\n"})
        repo = GitLabRepo.from_token(gitlab.url, "sim-token")
        repo.ensure_branch(PROJECT, "b", "main")
        repo.commit_files(PROJECT, "b", [], "nothing")
        mr = repo.ensure_merge_request(PROJECT, "b", "main", "Upgrade", "")
        clock = FakeClock()
        registry.put(Cluster(cluster_id="c1", batch_id="b1", environment="dev", region="us-east-1",
                             gitlab_project=PROJECT, flux_config_path="f.yaml", current_istio_version="1.19.3"))
        state.put_run(RunRecord(run_id="r1", execution_arn="arn", batch="b1", target_version="1.20.0",
                                clusters=["c1"], from_versions={"c1": "1.19.3"}, gitlab_project=PROJECT,
                                options=ExecutionInput(batch="b1", target_version="1.20.0"),
                                started_at=clock.now(), merge_request_iid=mr.iid, merge_request_url=mr.web_url))
        yield FinishService(registry, state, repo, clock), gitlab, mr.iid


def test_a_retried_success_comments_once(world: tuple[FinishService, GitLabSimulator, int]) -> None:
    service, gitlab, iid = world
    # GIVEN RecordSuccess ran WHEN Step Functions retries it
    service.succeed("r1", None)
    service.succeed("r1", None)
    # THEN the MR carries one success comment
    assert sum("validated on 1.20.0" in note for note in gitlab.notes(PROJECT, iid)) == 1


def test_a_retried_failure_comments_once(world: tuple[FinishService, GitLabSimulator, int]) -> None:
    service, gitlab, iid = world
    # GIVEN RecordFailure ran for the flux stage WHEN it is retried
    error = {"Error": "FluxSyncTimeout", "Cause": "{\"errorType\": \"FluxSyncTimeout\", \"errorMessage\": \"stuck\"}"}
    first = service.fail("r1", "flux", error)
    second = service.fail("r1", "flux", error)
    # THEN both return the same summary and the MR carries one failure comment
    assert first == second and first.error == "FluxSyncTimeout"
    assert sum("failed at **flux**" in note for note in gitlab.notes(PROJECT, iid)) == 1


TIMED_OUT = {"Error": "States.Timeout", "Cause": ""}


def test_a_timed_out_open_mr_is_closed_and_nothing_was_deployed(world: tuple[FinishService, GitLabSimulator, int]
                                                                ) -> None:
    service, gitlab, iid = world
    # GIVEN the MR wait timed out while the MR is still open (its token still stored)
    mr_url = gitlab.merge_requests(PROJECT)[0]["web_url"]
    state = service._state
    state.put_task_token(TaskTokenRecord(merge_request_url=mr_url, task_token="t", run_id="r1"),
                         FakeClock().now(), hours=1)

    # WHEN RecordFailure runs for merge_timeout
    summary = service.fail("r1", "merge_timeout", TIMED_OUT)

    # THEN GitLab confirmed it unmerged: GUARD closed it, says nothing was deployed, and forgets the token
    assert summary.error == "MergeRequestTimeout"
    assert "GUARD closed it" in summary.cause and "nothing was deployed" in summary.cause
    assert gitlab.merge_requests(PROJECT)[0]["state"] == "closed"
    assert "nothing was deployed" in gitlab.notes(PROJECT, iid)[-1]
    assert state.get_task_token(mr_url) is None


def test_a_timed_out_mr_that_gitlab_shows_merged_is_reported_truthfully(
        world: tuple[FinishService, GitLabSimulator, int]) -> None:
    service, gitlab, iid = world
    # GIVEN the MR was merged but GUARD never saw it (webhook lost) and its wait timed out
    gitlab.merge(PROJECT, iid, deliver_hooks=False)

    # WHEN RecordFailure runs for merge_timeout
    summary = service.fail("r1", "merge_timeout", TIMED_OUT)

    # THEN the run failed saying it was merged unwatched, the clusters may run the new version, and how to go back
    assert summary.error == "MergeRequestTimeout"
    assert "was merged by guard-sim" in summary.cause and "nothing was deployed" not in summary.cause
    assert "c1 may now run 1.20.0" in summary.cause and "c1=1.19.3" in summary.cause
    assert gitlab.merge_requests(PROJECT)[0]["state"] == "merged"
    assert "nothing was validated" in gitlab.notes(PROJECT, iid)[-1]


def test_when_gitlab_cannot_be_asked_the_cause_does_not_claim_nothing_was_deployed(
        world: tuple[FinishService, GitLabSimulator, int]) -> None:
    service, gitlab, iid = world
    # GIVEN GitLab answers 503 to the look-up, longer than the retry policy tries
    gitlab.fail_next("GET", rf"/merge_requests/{iid}$", 503, times=10)

    # WHEN RecordFailure runs for merge_timeout
    summary = service.fail("r1", "merge_timeout", TIMED_OUT)

    # THEN the cause says what is not known instead of "nothing was deployed"
    assert "could not be asked" in summary.cause and "may run 1.20.0 unvalidated" in summary.cause
    assert "nothing was deployed" not in summary.cause
