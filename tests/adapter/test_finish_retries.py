"""RecordSuccess / RecordFailure retried by Step Functions: the MR gets one comment, not two."""

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
from guard.stores.state import StateStore
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
        registry, state = ClusterRegistry(ddb.Table("registry")), StateStore(ddb.Table("state"))
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
