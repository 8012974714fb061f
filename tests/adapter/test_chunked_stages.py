"""Prechecks and validation of a chunk of clusters in one task: every cluster's result is stored, one
cluster's crash is that cluster's result (Kubernetes, Datadog and DynamoDB are the simulators and moto)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from guard.adapters.datadog_metrics import DatadogMetrics
from guard.core.models import CheckStatus
from guard.core.run import VerdictOutcome
from guard.errors import InvalidInput, PrecheckFailed
from guard.retry import RetryPolicy
from guard.services.precheck import PrecheckService
from guard.services.validate import ValidationService

from sandbox.sims.datadog_sim import DatadogSimulator
from tests.adapter.failure_world import CLUSTERS, RUN_ID, World, opened

GONE = "eks-prod-gone"  # in the run, no longer in the registry: reading it raises UnknownCluster


@pytest.fixture
def world(monkeypatch: pytest.MonkeyPatch) -> Iterator[World]:
    with opened(monkeypatch) as built:
        # GIVEN a run of three clusters in one chunk, the first one removed from the registry since
        run = built.run()
        built.state.put_run(run.model_copy(update={"clusters": [GONE, *CLUSTERS],
                                                   "cluster_chunk_size": 25}))
        yield built


@pytest.fixture
def datadog(world: World) -> Iterator[DatadogMetrics]:
    with DatadogSimulator(clock=world.clock) as sim:
        yield DatadogMetrics.from_keys(sim.api_key, sim.app_key, host=sim.url, timeout_seconds=2, clock=world.clock,
                                       retry=RetryPolicy(sleep=lambda _: None))


def test_a_crash_of_one_clusters_validation_is_its_inconclusive_verdict(world: World, datadog: DatadogMetrics) -> None:
    service = ValidationService(world.config, world.registry, world.state, world.connector, datadog, world.clock)
    # WHEN the chunk is validated
    counts = service.validate_chunk(RUN_ID, 0)
    # THEN every cluster has a stored verdict and the counts add up
    verdicts = {c: world.state.get_verdict(RUN_ID, c) for c in (*CLUSTERS, GONE)}
    assert all(v is not None for v in verdicts.values())
    assert (counts.chunk, counts.clusters, counts.passed + counts.failed + counts.inconclusive) == (0, 3, 3)
    # AND the cluster that crashed is inconclusive (never a pass on missing data), saying why
    gone = verdicts[GONE]
    assert gone is not None and gone.outcome == VerdictOutcome.INCONCLUSIVE
    assert f"validation crashed: UnknownCluster: cluster '{GONE}' is not in the cluster registry" in gone.summary()
    # AND the others were judged on their own
    assert all("crashed" not in (v.summary() if v else "") for c, v in verdicts.items() if c != GONE)


def test_a_crash_of_one_clusters_precheck_fails_the_batch_naming_it(world: World, datadog: DatadogMetrics) -> None:
    # GIVEN one worker, so the clusters run in the chunk's order
    world.config.execution.max_concurrent_clusters = 1
    service = PrecheckService(world.config, world.registry, world.state, world.connector, datadog, world.clock)
    # WHEN the chunk is prechecked THEN the crash fails the chunk as that cluster's refusal, naming it
    with pytest.raises(PrecheckFailed) as refused:
        service.run_chunk(RUN_ID, 0)
    assert str(refused.value) == (f"{GONE}: precheck (inconclusive): could not check: the precheck crashed: "
                                  f"UnknownCluster: cluster '{GONE}' is not in the cluster registry")
    # AND its stored report says so (guard status, the MR)
    gone = world.state.get_precheck(RUN_ID, GONE)
    assert gone is not None and not gone.passed and gone.results[0].status == CheckStatus.INCONCLUSIVE
    # AND the batch stopping, the clusters after it were never started (no vendor calls for nothing): their
    # stored reports are still the world's empty ones
    assert [getattr(world.state.get_precheck(RUN_ID, c), "results", None) for c in CLUSTERS] == [[], []]


def test_a_chunk_the_run_does_not_have_is_refused(world: World, datadog: DatadogMetrics) -> None:
    service = ValidationService(world.config, world.registry, world.state, world.connector, datadog, world.clock)
    # WHEN chunk 1 of a one-chunk run is asked for THEN InvalidInput says which chunks there are
    with pytest.raises(InvalidInput, match=r"chunks 0\.\.0"):
        service.validate_chunk(RUN_ID, 1)
