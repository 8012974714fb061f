"""The registry records what runs: each cluster's version is read from the cluster and the
registry set to what was observed.

Run before a batch is planned, at the end of every run and on demand (`guard registry
reconcile`). After a Datadog outage during validation, or a partial rollback, the registry
would otherwise keep the version GUARD assumed while the cluster runs another, and the next
run would plan from the wrong version. A cluster that cannot be read, or whose HelmRelease and
istiod disagree, keeps its registry version; every such disagreement is reported, not hidden.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from pydantic import BaseModel, Field

from guard.core.models import Cluster, UpgradeRecord
from guard.ports import Clock, ClusterConnector, KubernetesCluster
from guard.services.fanout import CLUSTER_READERS
from guard.services.versions import ObservedVersion, VersionReader
from guard.stores.registry import ClusterRegistry
from guard.vocabulary.outcomes import OBSERVED

# How a run record's notes say when the clusters were observed (`RunRecord.registry_notes`).
AT_PLAN, AT_END = "at plan", "at the end"
MAX_NOTES = 50  # lines a run record keeps: a record stays small whatever the batch's size
# Clusters read at once (guard.services.fanout.CLUSTER_READERS): at 8, Plan's observation of a 2,000-cluster
# batch at ~0.4 s a cluster needed ~100 s of its 120 s (a rehearsal of 2,000 clusters: 95 s).
MAX_WORKERS = CLUSTER_READERS
_PROBLEM_MAX = 300  # characters of one cluster's problem in a note (notes live in the run record)


def for_the_record(prefix: str, notes: list[str]) -> list[str]:
    """`notes` as a run record keeps them: prefixed, and at most MAX_NOTES lines."""
    lines = [f"{prefix}: {note}" for note in notes]
    if len(lines) > MAX_NOTES:
        lines[MAX_NOTES - 1:] = [f"{prefix}: … and {len(lines) - MAX_NOTES + 1} more clusters"]
    return lines


class VersionChange(BaseModel):
    """A registry version corrected to what its cluster runs."""

    cluster_id: str
    recorded: str
    observed: str


class Reconciliation(BaseModel):
    """What observing a set of clusters found, and what it did to the registry."""

    versions: dict[str, str] = Field(default_factory=dict)  # cluster -> its registry version afterwards
    updated: list[VersionChange] = Field(default_factory=list)
    unchanged: list[str] = Field(default_factory=list)
    unobserved: list[ObservedVersion] = Field(default_factory=list)  # the registry kept its version
    expected: dict[str, str] = Field(default_factory=dict)  # what GUARD assumed, when it assumed something
    observed: dict[str, str] = Field(default_factory=dict)
    dry_run: bool = False

    @property
    def unexpected(self) -> dict[str, str]:
        """Clusters observed on another version than GUARD assumed: cluster -> observed version."""
        return {c: v for c, v in self.observed.items() if c in self.expected and self.expected[c] != v}

    @property
    def agrees(self) -> bool:
        """True when every cluster was observed, on the version the registry (and GUARD) held."""
        return not (self.updated or self.unobserved or self.unexpected)

    def notes(self) -> list[str]:
        """One line per cluster where the registry, GUARD or the cluster itself disagreed."""
        lines = []
        changed = {u.cluster_id: u for u in self.updated}
        unexpected = self.unexpected
        verb = "would be updated" if self.dry_run else "registry updated"
        for cluster_id in sorted(set(changed) | set(unexpected)):
            assumed = (f"; GUARD expected {self.expected[cluster_id]}" if cluster_id in unexpected else "")
            if cluster_id in changed:
                u = changed[cluster_id]
                lines.append(f"{cluster_id}: the registry said {u.recorded}, the cluster runs {u.observed}: "
                             f"{verb}{assumed}")
            else:
                lines.append(f"{cluster_id}: the cluster runs {unexpected[cluster_id]}, as the registry says{assumed}")
        for seen in self.unobserved:
            problem = seen.problem or "no version"
            if len(problem) > _PROBLEM_MAX:
                problem = problem[:_PROBLEM_MAX] + "…"
            kept = self.versions.get(seen.cluster_id, "?")
            lines.append(f"{seen.cluster_id}: could not observe its version ({problem}); "
                         f"the registry keeps {kept}")
        return lines


class _OneConnectAtATime:
    """boto3 sessions are not thread-safe: clusters are connected one at a time, read in parallel."""

    def __init__(self, connector: ClusterConnector) -> None:
        self._connector = connector
        self._lock = threading.Lock()

    def connect(self, cluster: Cluster) -> KubernetesCluster:
        with self._lock:
            return self._connector.connect(cluster)


class RegistryObserver:
    """Observes clusters through `connector` and sets their registry version to what they run.

    `log_warning(message, extra=...)` (a Powertools logger's `warning`) is told of every
    disagreement, so it is in the logs whoever called.
    """

    def __init__(self, registry: ClusterRegistry, connector: ClusterConnector, clock: Clock,
                 max_workers: int = MAX_WORKERS, log_warning: Callable[..., Any] | None = None) -> None:
        self._registry = registry
        self._reader = VersionReader(_OneConnectAtATime(connector))
        self._clock = clock
        self._max_workers = max_workers
        self._warn = log_warning or (lambda *a, **k: None)

    def observe(self, clusters: Iterable[Cluster]) -> list[ObservedVersion]:
        """What each cluster runs, in the order given (a small thread pool when there are many)."""
        clusters = list(clusters)
        if len(clusters) <= 1:
            return [self._reader.observe(c) for c in clusters]
        with ThreadPoolExecutor(max_workers=min(self._max_workers, len(clusters)),
                                thread_name_prefix="guard-observe") as pool:
            return list(pool.map(self._reader.observe, clusters))

    def reconcile(self, clusters: Iterable[Cluster], *, run_id: str, expected: dict[str, str] | None = None,
                  dry_run: bool = False) -> Reconciliation:
        """Observe `clusters` and correct their registry version; `expected` (cluster -> version) is
        what GUARD assumes they run, so a difference is reported even when the registry agrees.

        Idempotent: observing again what was recorded writes nothing. `run_id` names the run (or
        the reconcile) in the history entry of each correction.
        """
        clusters = list(clusters)
        result = Reconciliation(versions={c.cluster_id: c.current_istio_version for c in clusters},
                                expected=dict(expected or {}), dry_run=dry_run)
        for seen, cluster in zip(self.observe(clusters), clusters, strict=True):
            if seen.components and not dry_run:
                self._registry.record_components(seen.cluster_id, seen.components)
            if seen.version is None:
                result.unobserved.append(seen)
                continue
            result.observed[seen.cluster_id] = seen.version
            before = cluster.current_istio_version
            if not dry_run:
                before = self._registry.record_observed(seen.cluster_id, seen.version, UpgradeRecord(
                    run_id=run_id, from_version=before, to_version=seen.version, outcome=OBSERVED,
                    at=self._clock.now())) or seen.version
            if before != seen.version:
                result.updated.append(VersionChange(cluster_id=seen.cluster_id, recorded=before,
                                                    observed=seen.version))
            else:
                result.unchanged.append(seen.cluster_id)
            if not dry_run:
                result.versions[seen.cluster_id] = seen.version
        if not result.agrees:
            self._warn("the registry disagreed with the clusters", extra={
                "run_id": run_id, "disagreements": result.notes(), "updated": [u.cluster_id for u in result.updated],
                "unobserved": [u.cluster_id for u in result.unobserved]})
        return result
