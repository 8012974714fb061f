"""The chunked fan-out: chunks of a run's clusters, done concurrently inside one task (guard.services.fanout)."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from types import SimpleNamespace

import pytest
from guard.core.run import MAX_CHUNKS, ExecutionInput, RunRecord, chunk_size_for
from guard.errors import InvalidInput, PrecheckFailed, RateLimited, TransientError
from guard.retry import lambda_budget, seconds_left
from guard.services.fanout import ClusterOutcome, chunk_error, for_each_cluster


def run_of(clusters: int, chunk_size: int) -> RunRecord:
    return RunRecord(run_id="r1", execution_arn="arn", batch="b", target_version="1.20.0",
                     clusters=[f"c{i:03d}" for i in range(clusters)], from_versions={}, gitlab_project="p",
                     options=ExecutionInput(batch="b", target_version="1.20.0"), started_at=datetime.now(UTC),
                     cluster_chunk_size=chunk_size)


@pytest.mark.parametrize(("clusters", "size", "chunks"), [(1, 25, 1), (25, 25, 1), (26, 25, 2), (500, 25, 20),
                                                          (7, 3, 3)])
def test_every_cluster_is_in_exactly_one_chunk_in_run_order(clusters: int, size: int, chunks: int) -> None:
    # GIVEN a run of `clusters` clusters, `size` a chunk
    run = run_of(clusters, size)
    # WHEN its chunks are read THEN there are `chunks` of them and together they are the run's clusters, in order
    assert run.chunk_count() == chunks
    assert [c for i in range(chunks) for c in run.chunk(i)] == run.clusters
    assert all(len(run.chunk(i)) <= size for i in range(chunks))


@pytest.mark.parametrize(("clusters", "configured", "size"), [(2_000, 25, 25), (2_000, 1, 4), (20_000, 25, 40),
                                                             (12_501, 25, 26), (0, 25, 25), (3, 1, 1)])
def test_the_chunk_size_is_the_configured_one_raised_only_past_the_chunk_bound(clusters: int, configured: int,
                                                                              size: int) -> None:
    # GIVEN a batch of `clusters` and the configured chunk size WHEN the run's chunk size is chosen
    chosen = chunk_size_for(clusters, configured)
    # THEN it is `size`, which leaves at most MAX_CHUNKS chunks
    assert chosen == size
    assert -(-clusters // chosen) <= MAX_CHUNKS


@pytest.mark.parametrize("index", [-1, 3, "0", True, None])
def test_a_chunk_outside_the_run_is_refused_by_name(index: object) -> None:
    # GIVEN a run of 3 chunks WHEN a chunk it does not have is asked for THEN InvalidInput names the range
    with pytest.raises(InvalidInput, match=r"chunks 0\.\.2 \(7 clusters, 3 a chunk\)"):
        run_of(7, 3).chunk(index)  # type: ignore[arg-type]


def test_clusters_run_concurrently_but_never_more_than_the_limit() -> None:
    # GIVEN 12 clusters whose work takes a moment, and a limit of 3 at a time
    running, most, lock = 0, 0, threading.Lock()

    def work(cluster_id: str) -> str:
        nonlocal running, most
        with lock:
            running += 1
            most = max(most, running)
        time.sleep(0.02)
        with lock:
            running -= 1
        return cluster_id.upper()

    # WHEN they are done
    outcomes = for_each_cluster([f"c{i}" for i in range(12)], work, max_workers=3)
    # THEN all ran, in the clusters' order, 3 at a time at most (and more than one at a time)
    assert [o.result for o in outcomes] == [f"C{i}" for i in range(12)]
    assert most == 3


def test_one_clusters_crash_is_its_outcome_and_the_others_still_run() -> None:
    # GIVEN a chunk where one cluster's work crashes
    def work(cluster_id: str) -> str:
        if cluster_id == "c1":
            raise KeyError("spec")
        return "ok"

    # WHEN the chunk runs THEN that cluster's outcome is the exception; the others have their results
    outcomes = for_each_cluster(["c0", "c1", "c2"], work, max_workers=2)
    assert [(o.cluster_id, o.result, type(o.error).__name__) for o in outcomes] == [
        ("c0", "ok", "NoneType"), ("c1", None, "KeyError"), ("c2", "ok", "NoneType")]


def test_stop_leaves_out_the_clusters_not_started_yet() -> None:
    # GIVEN one worker and the first cluster refused
    started: list[str] = []

    def work(cluster_id: str) -> str:
        started.append(cluster_id)
        if cluster_id == "c0":
            raise PrecheckFailed("c0: nodes_ready: node-1 NotReady")
        time.sleep(0.01)
        return "ok"

    # WHEN the run stops at a refusal
    outcomes = for_each_cluster([f"c{i}" for i in range(10)], work, max_workers=1,
                                stop=lambda o: isinstance(o.error, PrecheckFailed))
    # THEN the refused cluster is reported and nothing after it started
    assert [o.cluster_id for o in outcomes] == started == ["c0"] and isinstance(outcomes[0].error, PrecheckFailed)


def test_the_lambda_budget_bounds_the_retries_in_every_worker_thread() -> None:
    # GIVEN a handler's Lambda budget of 60 s
    context = SimpleNamespace(get_remaining_time_in_millis=lambda: 60_000)
    # WHEN clusters run in worker threads inside it
    with lambda_budget(context):
        outcomes = for_each_cluster(["c0", "c1", "c2"], lambda _: seconds_left(), max_workers=3)
    # THEN each thread sees the budget (a bare thread would see no deadline: infinite retries)
    assert all(o.result is not None and 0 < o.result <= 60 for o in outcomes)


def test_a_rate_limit_wins_over_a_vendor_failure_with_the_longest_wait() -> None:
    # GIVEN a chunk with a cluster done, one whose vendor kept failing and two rate limited (60 s and 3,600 s)
    outcomes: list[ClusterOutcome[str]] = [
        ClusterOutcome("c0", result="ok"), ClusterOutcome("c1", error=TransientError("Datadog 503")),
        ClusterOutcome("c2", error=RateLimited.after(60, "monitors")),
        ClusterOutcome("c3", error=RateLimited.after(3600, "metrics query"))]
    # WHEN the chunk's error is decided THEN it is RateLimited, waiting the longest, saying how many
    error = chunk_error(outcomes)
    assert isinstance(error, RateLimited) and error.retry_after_seconds == 3600
    assert "2 of 4 clusters rate limited" in str(error) and "metrics query" in str(error)
    # AND without a rate limit the vendor failure leaves as TransientError naming the cluster
    error = chunk_error(outcomes[:2])
    assert type(error) is TransientError and "c1: Datadog 503" in str(error)
    # AND a chunk without either has no error
    assert chunk_error([ClusterOutcome("c0", result="ok"), ClusterOutcome("c1", error=KeyError("x"))]) is None
