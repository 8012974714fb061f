"""Per-cluster work in chunks: one Lambda invocation does a chunk of a run's clusters concurrently.

The per-cluster stages (Prechecks, Validate) are Maps over chunk numbers, not clusters
(statemachines/build.py `per_chunk`): each iteration is one task that reads its chunk's cluster
ids from the run record (`RunRecord.chunk`), runs the stage on them here, at most
`execution.max_concurrent_clusters` at a time, stores each cluster's result in DynamoDB and
returns counts. So the execution's history and payload grow with the chunks, not the clusters
(docs/scale.md).

What one cluster does never decides another's fate: an exception of one cluster is that
cluster's outcome (`ClusterOutcome.error`), which the stage turns into that cluster's result or
into the chunk's error once every started cluster is done (`chunk_error`).
"""

from __future__ import annotations

import contextvars
import json
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from typing import Generic, TypeVar

from guard.errors import RateLimited, TransientError
from guard.redact import redact

# Clusters read at once by a task that reads every cluster of a batch (Plan's and Finish's observation, each
# poll of Flux, the sidecar waves and the rollback). Each read waits on another cluster's API server (one
# connection each), so the bound is the Lambda's threads, not any one server: one after another, at ~0.4 s a
# cluster on EKS (connect, then 2-4 requests), a 120 s poll could read ~300 clusters; 32 at once, ~9,000.
CLUSTER_READERS = 32

T = TypeVar("T")


@dataclass(frozen=True)
class ClusterOutcome(Generic[T]):
    """What the work on one cluster gave: its result, or the exception it raised."""

    cluster_id: str
    result: T | None = None
    error: Exception | None = None


def _never(_: ClusterOutcome[T]) -> bool:
    return False


def for_each_cluster(cluster_ids: Sequence[str], work: Callable[[str], T], *, max_workers: int,
                     stop: Callable[[ClusterOutcome[T]], bool] = _never) -> list[ClusterOutcome[T]]:
    """Runs `work(cluster_id)` for each cluster, at most `max_workers` at a time.

    Each call runs in a copy of the caller's context, so what the handler set there (the Lambda
    budget that bounds every retry wait, guard.retry) holds in the worker threads too; a thread
    started bare would retry with no deadline. Once `stop(outcome)` is true for a finished
    cluster, clusters not started yet are left out (fail fast: a refused precheck needs no more
    vendor calls); the ones running finish. Outcomes come back in `cluster_ids` order.
    """
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, not {max_workers}")

    def attempt(cluster_id: str) -> ClusterOutcome[T]:
        try:
            return ClusterOutcome(cluster_id, result=work(cluster_id))
        except Exception as e:  # one cluster's crash is its outcome, not the chunk's
            return ClusterOutcome(cluster_id, error=e)

    outcomes: dict[str, ClusterOutcome[T]] = {}
    waiting = iter(cluster_ids)
    workers = min(max_workers, max(1, len(cluster_ids)))
    stopped = False
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="cluster") as pool:
        # A cluster is handed to the pool only when a worker is free, so once stopped nothing else starts.
        running: set[Future[ClusterOutcome[T]]] = set()
        while True:
            while not stopped and len(running) < workers and (cluster_id := next(waiting, None)) is not None:
                running.add(pool.submit(contextvars.copy_context().run, attempt, cluster_id))
            if not running:
                break
            done, running = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                outcome = future.result()
                outcomes[outcome.cluster_id] = outcome
                stopped = stopped or stop(outcome)
    return [outcomes[c] for c in cluster_ids if c in outcomes]


def crash_text(error: Exception | None) -> str:
    """One line naming an unexpected exception, redacted (it may reach an MR or a cause)."""
    return redact(f"{type(error).__name__}: {error}")


def chunk_error(outcomes: Sequence[ClusterOutcome[T]]) -> TransientError | None:
    """The error the chunk's task leaves with when a retry may fix some cluster, else None.

    A `RateLimited` cluster wins (the longest wait any cluster was asked for): the state machine
    waits it out and runs the chunk again. Otherwise a cluster whose vendor kept failing past the
    retry policy (`TransientError`) makes the task fail with it, and the state machine's Retry
    runs the chunk again. Either way each cluster's stored result is written again by that run.
    """
    limited = [o.error for o in outcomes if isinstance(o.error, RateLimited)]
    if limited:
        longest = max(limited, key=lambda e: e.retry_after_seconds)
        return RateLimited.after(longest.retry_after_seconds,
                                 f"{len(limited)} of {len(outcomes)} clusters rate limited; the longest wait: "
                                 f"{_reason(longest)}")
    transient = [o for o in outcomes if isinstance(o.error, TransientError)]
    if transient:
        first = transient[0]
        return TransientError(f"{len(transient)} of {len(outcomes)} clusters could not be reached; the first, "
                              f"{first.cluster_id}: {first.error}")
    return None


def _reason(error: RateLimited) -> str:
    """The reason inside a RateLimited's JSON message (the message itself when it is not JSON)."""
    try:
        return str(json.loads(str(error)).get("reason", error))
    except (ValueError, AttributeError):
        return str(error)
