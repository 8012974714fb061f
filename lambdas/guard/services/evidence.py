"""Collect the evidence of a failed (or inconclusive) upgrade, per failing cluster.

From the state table: the verdict (violations with their numbers, post-checks) and a
min/mean/max/last summary of each query's baseline and current window. From the cluster:
pod statuses in istio-system and in the namespaces of unhealthy pods, their recent events,
and the tail of istiod's log. Nothing here raises for a cluster that cannot be read: the
gap is written down in `notes`, because evidence feeds a rollback that must not wait.
"""

from __future__ import annotations

from guard.config.models import TenantConfig
from guard.core.evidence import ClusterEvidence, EventInfo, FailureEvidence, PodStatus, SeriesSummary, Violation
from guard.core.istio import ISTIO_NAMESPACE, ISTIOD_CONTAINER
from guard.core.models import Cluster
from guard.core.run import ClusterVerdict, MetricSummary, RunRecord, VerdictOutcome
from guard.errors import GuardError
from guard.ports import Clock, EvidenceConnector
from guard.services.fanout import for_each_cluster
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore

MAX_PODS = 40
MAX_NAMESPACES = 5


def failing_clusters(state: StateStore, run: RunRecord) -> list[str]:
    """Clusters whose verdict is not a pass; all of the run's when none is recorded as failing."""
    failing = []
    for cluster_id in run.clusters:
        verdict = state.get_verdict(run.run_id, cluster_id)
        if verdict is None or verdict.outcome != VerdictOutcome.PASS:
            failing.append(cluster_id)
    return failing or list(run.clusters)


def stats(summary: MetricSummary | None) -> dict[str, float] | None:
    """min / mean / max / last of a window's points, or None without data."""
    values = [v for _, v in sorted(summary.points)] if summary else []
    if not values:
        return None
    return {"min": round(min(values), 6), "mean": round(sum(values) / len(values), 6),
            "max": round(max(values), 6), "last": round(values[-1], 6), "points": len(values)}


def violations(verdict: ClusterVerdict) -> list[Violation]:
    found = [Violation(name=f.query_name, outcome=f.outcome.value, baseline=f.baseline, current=f.current,
                       threshold=f.threshold, explanation=f.explanation)
             for f in verdict.findings if f.outcome != VerdictOutcome.PASS]
    found += [Violation(name=c.check_name, outcome="fail", explanation=f"{c.check_name}: {c.message}")
              for c in verdict.post_checks if not c.passed]
    return found


class EvidenceService:
    """`collect(run_id)` -> FailureEvidence for the run's failing clusters."""

    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore,
                 connector: EvidenceConnector | None, clock: Clock) -> None:
        self._config = config
        self._registry = registry
        self._state = state
        self._connector = connector
        self._clock = clock

    def collect(self, run_id: str, cluster_ids: list[str] | None = None, *, sample: int | None = None,
                first: int = 0) -> FailureEvidence:
        """The evidence of `cluster_ids` (default: the run's failing clusters), in the run's order.

        Every cluster's verdict and series come from the state table. The clusters themselves are read
        for every cluster when `sample` is None; otherwise only for the first `first` and for
        `FailureEvidence.sample(sample)`'s clusters (what a failure report shows in full and what the
        analysis reads), `max_concurrent_clusters` at a time, and the others say so in `notes`: with
        hundreds of failing clusters, reading each one's pods, events and istiod log one after another
        would outlast the Lambda's timeout, for details nobody reads."""
        run = self._state.get_run(run_id)
        targets = cluster_ids or failing_clusters(self._state, run)
        clusters = self._registry.get_many(targets)
        evidence = FailureEvidence(run_id=run_id, batch=run.batch, target_version=run.target_version)
        for cluster_id in targets:
            evidence.clusters.append(self._recorded(run, cluster_id, clusters.get(cluster_id)))
        if self._connector is None:
            return evidence
        found = {c.cluster_id: c for c in evidence.clusters}
        readable = [c for c in targets if c in clusters]
        wanted = set(readable)
        if sample is not None:
            sampled = {c.cluster_id for c in evidence.sample(sample).clusters}
            wanted = set(readable[:first]) | (sampled & wanted)
        read = [c for c in readable if c in wanted]  # the run's order, each once
        for outcome in for_each_cluster(read, lambda c: self._kubernetes(found[c], clusters[c]),
                                        max_workers=self._config.execution.max_concurrent_clusters):
            if outcome.error is not None:
                found[outcome.cluster_id].notes.append(
                    f"Kubernetes evidence unavailable: {type(outcome.error).__name__}: {outcome.error}")
        for cluster_id in readable:
            if cluster_id not in wanted:
                found[cluster_id].notes.append(
                    f"Kubernetes evidence read for {len(read)} of the {len(targets)} failing clusters only "
                    "(the first ones and the analysis sample)")
        return evidence

    def _recorded(self, run: RunRecord, cluster_id: str, cluster: Cluster | None) -> ClusterEvidence:
        """What the state table holds about the cluster: its verdict, violations and series."""
        verdict = self._state.get_verdict(run.run_id, cluster_id)
        precheck = self._state.get_precheck(run.run_id, cluster_id)
        found = ClusterEvidence(cluster_id=cluster_id, outcome=verdict.outcome.value if verdict else "unknown",
                                from_version=run.from_versions.get(cluster_id, "?"), to_version=run.target_version,
                                summary=verdict.summary() if verdict else "")
        if verdict:
            found.violations = violations(verdict)
            baseline = precheck.baseline if precheck else {}
            for name in dict.fromkeys([*baseline, *verdict.current]):
                found.series.append(SeriesSummary(query_name=name, baseline=stats(baseline.get(name)),
                                                  current=stats(verdict.current.get(name))))
        else:
            found.notes.append("no validation verdict was recorded for this cluster")
        if cluster is None:
            found.notes.append("cluster is not in the registry; no Kubernetes evidence")
        return found

    def _kubernetes(self, found: ClusterEvidence, cluster: Cluster) -> None:
        try:
            api = self._connector.connect(cluster) if self._connector else None
        except GuardError as e:
            found.notes.append(f"Kubernetes API unavailable: {e}")
            return
        if api is None:
            return
        try:
            pods = api.list_pods(None)
        except GuardError as e:
            found.notes.append(f"pods unavailable: {e}")
            pods = []
        istio = [p for p in pods if p.namespace == ISTIO_NAMESPACE]
        unhealthy = [p for p in pods if p.namespace != ISTIO_NAMESPACE
                     and (not p.ready or p.crash_looping or p.restarts > 0 or p.phase not in ("Running", "Succeeded"))]
        unhealthy.sort(key=lambda p: (not p.crash_looping, p.ready, -p.restarts))
        found.pods = [PodStatus(namespace=p.namespace, name=p.name, phase=p.phase, ready=p.ready, restarts=p.restarts,
                                crash_looping=p.crash_looping, proxy_version=p.proxy_version)
                      for p in [*istio, *unhealthy][:MAX_PODS]]
        namespaces = list(dict.fromkeys([ISTIO_NAMESPACE, *(p.namespace for p in unhealthy)]))[:MAX_NAMESPACES]
        events: list[EventInfo] = []
        for namespace in namespaces:
            try:
                events += api.list_events(namespace)
            except GuardError as e:
                found.notes.append(f"events in {namespace} unavailable: {e}")
        # Warnings first, then the most recent.
        events.sort(key=lambda e: (e.type != "Warning", -(e.last_seen.timestamp() if e.last_seen else 0)))
        found.events = events[: self._config.llm.max_events]
        lines = self._config.llm.log_tail_lines
        istiods = [p for p in istio if p.labels.get("app") == "istiod" or p.name.startswith("istiod")]
        if lines and istiods:
            worst = sorted(istiods, key=lambda p: (p.ready, -p.restarts, p.name))[0]
            try:
                found.istiod_log = api.pod_log_tail(ISTIO_NAMESPACE, worst.name, ISTIOD_CONTAINER, lines)
            except GuardError as e:
                found.notes.append(f"istiod log of {worst.name} unavailable: {e}")
        elif lines:
            found.notes.append("no istiod pod found in istio-system")
