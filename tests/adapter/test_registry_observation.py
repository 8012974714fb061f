"""The registry records what runs (services/observation.py): versions read from the Kubernetes simulator
over HTTP through the real EKS connector, the registry and run records on moto DynamoDB.

The failure world: the upgrade to NEW was merged and both clusters run NEW, while the registry still
says OLD (what it said before the run): the state a Datadog outage during validation leaves behind.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from guard.core.models import Cluster
from guard.errors import VersionNotAllowed
from guard.services.ending import EndingService, ExecutionEnded
from guard.services.finish import FinishService
from guard.services.notification import build_notification
from guard.services.observation import RegistryObserver
from guard.services.outcome import OutcomeRecorder
from guard.services.plan import BatchPlanner, parse_input
from guard.vocabulary.events import NotificationEvent
from guard.vocabulary.outcomes import OBSERVED, Outcome
from moto import mock_aws

from sandbox.sims.gitlab_sim import GitLabSimulator
from sandbox.sims.kubernetes_sim import KubernetesSimulator
from tests.adapter.failure_world import CLUSTERS, NEW, OLD, PROJECT, REGION, RUN_ID, TOKEN, World, build, path
from tests.support.clock import FakeClock

PROD_1, PROD_2 = CLUSTERS


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": REGION}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    clock = FakeClock()
    with mock_aws(), GitLabSimulator(token=TOKEN, clock=clock) as gitlab, \
            KubernetesSimulator(clock, pod_ready_seconds=5) as k8s:
        yield build(gitlab, k8s, clock)


class Warnings:
    """A `log_warning` that keeps what it was told (the Powertools logger's signature)."""

    def __init__(self) -> None:
        self.told: list[tuple[str, dict]] = []

    def __call__(self, message: str, extra: dict | None = None) -> None:
        self.told.append((message, extra or {}))


def observer(w: World, warnings: Warnings | None = None) -> RegistryObserver:
    return RegistryObserver(w.registry, w.connector, w.clock, log_warning=warnings)


def versions(w: World) -> dict[str, str]:
    return {c: w.registry.get(c).current_istio_version for c in CLUSTERS}


# ---------------------------------------------------------------- the observation itself
def test_a_registry_behind_its_clusters_is_set_to_what_they_run_once(world: World) -> None:
    # GIVEN the registry says OLD while both clusters run NEW
    warnings = Warnings()
    clusters = list(world.registry.get_many(list(CLUSTERS)).values())
    # WHEN the clusters are observed
    found = observer(world, warnings).reconcile(clusters, run_id="r-1")
    # THEN the registry says NEW, each correction is in the history, and the disagreement is reported and logged
    assert versions(world) == dict.fromkeys(CLUSTERS, NEW)
    assert [(h.from_version, h.to_version, h.outcome, h.run_id) for h in world.registry.get(PROD_1).upgrade_history] \
        == [(OLD, NEW, OBSERVED, "r-1")]
    assert [u.cluster_id for u in found.updated] == list(CLUSTERS) and not found.agrees
    assert found.notes()[0] == f"{PROD_1}: the registry said {OLD}, the cluster runs {NEW}: registry updated"
    assert warnings.told[0][1]["updated"] == list(CLUSTERS)
    # AND observing again changes nothing and reports nothing
    again = observer(world, warnings).reconcile(list(world.registry.get_many(list(CLUSTERS)).values()),
                                                run_id="r-2")
    assert again.agrees and again.unchanged == list(CLUSTERS) and len(warnings.told) == 1
    assert len(world.registry.get(PROD_1).upgrade_history) == 1


def test_an_unreachable_cluster_keeps_its_registry_version_and_says_why(world: World) -> None:
    # GIVEN eks-prod-2's API answers 503 to everything
    world.kubernetes.set_unreachable(PROD_2)
    # WHEN the batch is observed
    found = observer(world).reconcile(list(world.registry.get_many(list(CLUSTERS)).values()), run_id="r-1")
    # THEN eks-prod-1 is corrected, eks-prod-2 keeps OLD, and the report says it could not be observed
    assert versions(world) == {PROD_1: NEW, PROD_2: OLD}
    assert [(u.cluster_id, u.reachable) for u in found.unobserved] == [(PROD_2, False)]
    note = found.notes()[-1]
    assert note.startswith(f"{PROD_2}: could not observe its version (cluster unreachable: ")
    assert note.endswith(f"the registry keeps {OLD}")


def test_a_helm_release_flux_cannot_reconcile_gives_no_version(world: World) -> None:
    # GIVEN Flux is stuck on eks-prod-1 (HelmRelease Ready=False) after main asked for 1.21.1; istiod runs NEW
    world.kubernetes.set_flux_stuck(PROD_1)
    world.kubernetes.apply_chart_version(PROD_1, "1.21.1", reconcile_after_seconds=0)
    # WHEN it is observed
    found = observer(world).reconcile([world.registry.get(PROD_1)], run_id="r-1")
    # THEN no version is taken from a cluster that has not settled, and the registry keeps OLD
    assert versions(world)[PROD_1] == OLD
    [seen] = found.unobserved
    assert seen.reachable and f"HelmRelease istio-system/istiod at {NEW} ready=False" in (seen.problem or "")
    assert f"istiod runs {NEW} (2/2 ready)" in (seen.problem or "")


def test_many_clusters_are_observed_together_each_with_its_own_version(world: World) -> None:
    # GIVEN twelve more clusters, half on OLD and half on NEW, all registered at OLD
    fleet = [f"eks-fleet-{i}" for i in range(12)]
    for i, cluster_id in enumerate(fleet):
        world.kubernetes.add_cluster(cluster_id, NEW if i % 2 else OLD)
        world.registry.put(Cluster(cluster_id=cluster_id, batch_id="fleet", environment="production", region=REGION,
                                   gitlab_project=PROJECT, flux_config_path=path(cluster_id),
                                   current_istio_version=OLD, api_endpoint=world.kubernetes.endpoint(cluster_id)))
    # WHEN they are observed at once (a thread pool)
    found = RegistryObserver(world.registry, world.connector, world.clock, max_workers=4).reconcile(
        [world.registry.get(c) for c in fleet], run_id="r-1")
    # THEN each cluster's version is its own, in the order given
    assert found.versions == {c: NEW if i % 2 else OLD for i, c in enumerate(fleet)}
    assert [u.cluster_id for u in found.updated] == fleet[1::2] and found.unchanged == fleet[0::2]


# ---------------------------------------------------------------- before planning
def test_plan_plans_from_what_the_clusters_run(world: World) -> None:
    # GIVEN the registry says OLD but both clusters already run NEW (and the old run's lock is gone)
    world.state.release_lock("prod-canary", RUN_ID)
    planner = BatchPlanner(world.config, world.registry, world.state, world.clock, observer=observer(world))
    # WHEN an upgrade to NEW is planned
    with pytest.raises(VersionNotAllowed) as refused:
        planner.plan(parse_input({"batch": "prod-canary", "target_version": NEW}), "run-2", "arn:exec:run-2")
    # THEN it is refused as no upgrade (the clusters run it), and the registry says what they run
    assert f"{PROD_1}:" in str(refused.value)
    assert versions(world) == dict.fromkeys(CLUSTERS, NEW)


def test_plan_keeps_the_registry_version_of_a_cluster_it_cannot_read_and_records_that(world: World) -> None:
    # GIVEN eks-prod-2 is unreachable; eks-prod-1 runs NEW, the registry says OLD for both
    world.state.release_lock("prod-canary", RUN_ID)
    world.kubernetes.set_unreachable(PROD_2)
    planner = BatchPlanner(world.config, world.registry, world.state, world.clock, observer=observer(world))
    # WHEN an upgrade to 1.21.1 is planned
    plan = planner.plan(parse_input({"batch": "prod-canary", "target_version": "1.21.1"}), "run-2", "arn:exec:run-2")
    # THEN planning goes on (the precheck judges reachability) from the observed and the kept versions
    run = world.state.get_run(plan.run_id)
    assert run.from_versions == {PROD_1: NEW, PROD_2: OLD}
    # AND the run record says where the registry and the clusters disagreed, and the plan stays small
    assert [n.split(":")[0:2] for n in run.registry_notes] == [["at plan", f" {PROD_1}"], ["at plan", f" {PROD_2}"]]
    assert "could not observe" in run.registry_notes[1] and "registry_notes" not in plan.payload()


# ---------------------------------------------------------------- at the end of a run
def test_a_failed_run_records_what_the_clusters_run_not_what_it_assumed(world: World) -> None:
    # GIVEN validation could not reach Datadog after the merge: the clusters run NEW, the registry says OLD
    finish = FinishService(world.registry, world.state, world.repo, world.clock, observer=observer(world))
    # WHEN the failure is recorded
    finish.fail(RUN_ID, "validate", {"Error": "TransientError", "Cause": "Datadog: 503 Service Unavailable"})
    # THEN the registry says NEW, the run record says the registry was behind, and so does the MR comment
    assert versions(world) == dict.fromkeys(CLUSTERS, NEW)
    run = world.run()
    assert run.outcome == Outcome.FAILED
    assert run.registry_notes == [f"at the end: {c}: the registry said {OLD}, the cluster runs {NEW}: registry updated"
                                  for c in CLUSTERS]
    assert "did not all run what GUARD expected" in world.gitlab.notes(PROJECT, world.upgrade_iid)[-1]
    told = build_notification(world.config, world.state, world.failures, RUN_ID, NotificationEvent.FAILED)
    assert (told.detail or "").startswith(f"Registry: {PROD_1}: the registry said {OLD}, the cluster runs {NEW}")
    # AND recording it again (a retried task) keeps one set of notes
    finish.fail(RUN_ID, "validate", {"Error": "TransientError", "Cause": "Datadog: 503 Service Unavailable"})
    assert world.run().registry_notes == run.registry_notes


def test_a_success_where_a_cluster_does_not_run_the_target_says_so(world: World) -> None:
    # GIVEN eks-prod-2 was put back to OLD by hand after validation (its HelmRelease and istiod settle on OLD)
    world.kubernetes.apply_chart_version(PROD_2, OLD, reconcile_after_seconds=0)
    world.clock.advance(60)
    finish = FinishService(world.registry, world.state, world.repo, world.clock, observer=observer(world))
    # WHEN the success is recorded
    summary = finish.succeed(RUN_ID, None)["summary"]
    # THEN the registry says what runs: NEW on eks-prod-1, OLD on eks-prod-2, and the summary says GUARD was wrong
    assert versions(world) == {PROD_1: NEW, PROD_2: OLD}
    assert summary["registry_notes"] == [
        f"at the end: {PROD_2}: the registry said {NEW}, the cluster runs {OLD}: registry updated; "
        f"GUARD expected {NEW}"]
    # AND the history keeps both what GUARD did and what was then observed
    history = world.registry.get(PROD_2).upgrade_history
    assert [(h.outcome, h.to_version) for h in history] == [(Outcome.SUCCEEDED, NEW), (OBSERVED, OLD)]


def test_a_stopped_execution_records_what_the_clusters_run(world: World) -> None:
    # GIVEN the run was stopped from the console after the merge, eks-prod-2 unreachable
    world.kubernetes.set_unreachable(PROD_2)
    outcomes = OutcomeRecorder(world.registry, world.state, world.repo, world.clock, observer=observer(world))
    ending = EndingService(world.state, world.failures, outcomes)
    # WHEN the end of its execution arrives
    result = ending.ended(ExecutionEnded.model_validate({
        "executionArn": world.run().execution_arn, "name": RUN_ID, "status": "ABORTED"}))
    # THEN the reachable cluster is recorded as it runs, the other keeps its version, and the result says both
    assert result.action == "recorded"
    assert versions(world) == {PROD_1: NEW, PROD_2: OLD}
    assert [n.split(":")[1].strip() for n in result.registry_notes] == [PROD_1, PROD_2]
    assert "could not observe" in result.registry_notes[1]
