"""Finish's summary is the execution's output, state data (256 KB a state): it names the first clusters and counts
them all, whatever the batch's size; the run record and the registry keep every cluster (moto DynamoDB, the
GitLab simulator)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from guard.core.models import CheckStatus, Cluster, HealthCheckResult
from guard.core.run import PrecheckReport
from guard.digest import FIRST
from guard.services.finish import FinishService

from tests.adapter.failure_world import CLUSTERS, NEW, OLD, PROJECT, REGION, RUN_ID, World, opened, path

MORE = [f"eks-prod-extra-{i:02d}" for i in range(28)]


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with opened(monkeypatch) as built:
        # GIVEN the run holds 30 clusters: the world's two and 28 more, all registered
        for c in MORE:
            built.registry.put(Cluster(cluster_id=c, batch_id="prod-canary", environment="production", region=REGION,
                                       gitlab_project=PROJECT, flux_config_path=path(c), current_istio_version=OLD))
        run = built.run()
        built.state.put_run(run.model_copy(update={"clusters": [*CLUSTERS, *MORE],
                                                   "from_versions": dict.fromkeys([*CLUSTERS, *MORE], OLD)}))
        yield built


def test_a_success_summary_names_the_first_clusters_and_counts_them_all(world: World) -> None:
    clusters = [*CLUSTERS, *MORE]
    finish = FinishService(world.registry, world.state, world.repo, world.clock)
    # WHEN the success is recorded
    summary = finish.succeed(RUN_ID, None)["summary"]
    # THEN the summary names the first clusters and counts all 30
    assert (summary["clusters"], summary["cluster_count"]) == (clusters[:FIRST], 30)
    # AND the run and the registry still have every cluster, at the new version
    assert world.run().clusters == clusters
    assert {world.registry.get(c).current_istio_version for c in clusters} == {NEW}


def test_a_dry_run_summary_counts_the_prechecks_per_result(world: World) -> None:
    clusters = [*CLUSTERS, *MORE]
    run = world.run()
    # GIVEN the last cluster's report says failed and one of the extra clusters has none
    world.state.put_precheck(run, PrecheckReport(cluster_id=MORE[-1], results=[HealthCheckResult(
        cluster_id=MORE[-1], check_name="istiod_healthy", status=CheckStatus.FAIL, message="istiod 0/1 ready")]))
    finish = FinishService(world.registry, world.state, world.repo, world.clock)
    # WHEN the dry run's outcome is recorded
    summary = finish.prechecked(RUN_ID)["summary"]
    # THEN it gives the first clusters' results, the count per result over all 30, and the count of clusters
    assert summary["prechecks"] == {c: "passed" if c in CLUSTERS else "missing" for c in clusters[:FIRST]}
    assert summary["precheck_counts"] == {"passed": 2, "missing": 27, "failed": 1}
    assert (summary["clusters"], summary["cluster_count"]) == (clusters[:FIRST], 30)
