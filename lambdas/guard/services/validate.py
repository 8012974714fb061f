"""Validate one cluster after the soak, and conclude a batch from its stored verdicts."""

from __future__ import annotations

from datetime import datetime, timedelta

from pydantic import BaseModel

from guard.checks import builtin
from guard.checks.snapshot import read_snapshot
from guard.config.models import TenantConfig, ValidationConfig
from guard.core.models import HealthCheckResult
from guard.core.run import ClusterVerdict, MetricFinding, PrecheckReport, RunRecord, VerdictOutcome
from guard.digest import Issue, issues_digest
from guard.errors import RateLimited, TransientError, ValidationFailed, ValidationInconclusive
from guard.judge import JudgeSettings, judge_batch, judge_cluster, outcome_of
from guard.ports import Clock, ClusterConnector, MetricsProvider
from guard.services.fanout import chunk_error, crash_text, for_each_cluster
from guard.services.metrics import ChunkWindows, chunk_windows, read_window, render_queries
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore


class VerdictCounts(BaseModel):
    """What a chunk's validation task returns: counts per outcome, never the verdicts (they are stored)."""

    chunk: int
    clusters: int
    passed: int
    failed: int
    inconclusive: int


class ValidationService:
    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore,
                 connector: ClusterConnector, metrics: MetricsProvider, clock: Clock) -> None:
        self._config = config
        self._registry = registry
        self._state = state
        self._connector = connector
        self._metrics = metrics
        self._clock = clock

    def validate(self, run_id: str, cluster_id: str) -> ClusterVerdict:
        """Judges one cluster of the run against its baseline and stores the verdict."""
        return self._validate(self._state.get_run(run_id), cluster_id)

    def validate_chunk(self, run_id: str, chunk: int) -> VerdictCounts:
        """Validates chunk `chunk` of the run's clusters, `execution.max_concurrent_clusters` at a time.

        Every cluster's verdict is stored; the counts per outcome are returned (Conclude reads the
        verdicts). A cluster whose validation crashed gets an inconclusive verdict saying so: no
        data is never a pass, and one cluster's crash never loses the others' verdicts. A rate
        limit or a store that kept failing leaves as the chunk's error (fanout.chunk_error), so
        the state machine runs the chunk again.
        """
        run = self._state.get_run(run_id)
        clusters = run.chunk(chunk)
        # The chunk's metrics in one request per query group (guard.datadog_groups), not one per cluster.
        start, end = self._window(run)
        windows = chunk_windows(self._metrics, self._config.datadog.queries,
                                list(self._registry.get_many(clusters).values()), start, end)
        outcomes = for_each_cluster(clusters, lambda cluster_id: self._validate(run, cluster_id, windows),
                                    max_workers=self._config.execution.max_concurrent_clusters)
        error = chunk_error(outcomes)
        if error is not None:
            raise error
        counts = {outcome: 0 for outcome in VerdictOutcome}
        for outcome in outcomes:
            verdict = outcome.result
            if verdict is None:
                verdict = ClusterVerdict(cluster_id=outcome.cluster_id, outcome=VerdictOutcome.INCONCLUSIVE, findings=[
                    MetricFinding(query_name="validation", query="", rule="validation_ran",
                                  outcome=VerdictOutcome.INCONCLUSIVE,
                                  explanation=f"validation crashed: {crash_text(outcome.error)}")])
                self._state.put_verdict(run, verdict)
            counts[verdict.outcome] += 1
        return VerdictCounts(chunk=chunk, clusters=len(clusters), passed=counts[VerdictOutcome.PASS],
                             failed=counts[VerdictOutcome.FAIL], inconclusive=counts[VerdictOutcome.INCONCLUSIVE])

    def _window(self, run: RunRecord) -> tuple[datetime, datetime]:
        """The current window: ends now, starts when the new version was live, never before it."""
        end = self._clock.now()
        start = end - timedelta(minutes=self._config.validation.baseline_window_minutes)
        if run.flux_synced_at and run.flux_synced_at > start:
            start = run.flux_synced_at
        return start, end

    def _validate(self, run: RunRecord, cluster_id: str, windows: ChunkWindows | None = None) -> ClusterVerdict:
        cluster = self._registry.get(cluster_id)
        precheck = self._state.get_precheck(run.run_id, cluster_id)
        baseline = precheck.baseline if precheck else {}

        queries = render_queries(self._config.datadog.queries, cluster)
        try:
            if windows is not None:
                current = windows.read(cluster_id, queries)
            else:
                start, end = self._window(run)
                current = read_window(self._metrics, queries, start, end)
        except RateLimited:
            raise  # the state machine waits the reset out and validates again
        except TransientError as e:
            # Datadog kept failing past the retry policy: no data is no verdict, never a pass or a fail.
            verdict = ClusterVerdict(cluster_id=cluster_id, outcome=VerdictOutcome.INCONCLUSIVE, findings=[
                MetricFinding(query_name=name, query=query, rule="metrics_read", outcome=VerdictOutcome.INCONCLUSIVE,
                              explanation=f"{name}: Datadog could not be read after the upgrade: {e}")
                for name, query in queries.items()])
        else:
            verdict = judge_cluster(cluster_id, baseline, current, self._config.thresholds_for(run.batch),
                                    judge_settings(self._config.validation))
        verdict.post_checks = self._post_checks(cluster_id, run.target_version, precheck)
        # A failed post-check is a failure whatever the metrics say (even with too little data); a
        # post-check that got no answer makes a passing verdict inconclusive, never a failure.
        verdict.outcome = outcome_of(verdict.findings, verdict.post_checks)
        self._state.put_verdict(run, verdict)
        return verdict

    def _post_checks(self, cluster_id: str, target: str, precheck: PrecheckReport | None) -> list[HealthCheckResult]:
        cluster = self._registry.get(cluster_id)
        snap = read_snapshot(self._connector, cluster, "after the upgrade")
        if isinstance(snap, HealthCheckResult):
            return [snap]
        before = next((list(r.details.get("workloads", [])) for r in (precheck.results if precheck else [])
                       if r.check_name == "no_crash_loops"), [])
        checks = [builtin.istiod_ready(cluster, snap, expected_version=target),
                  builtin.no_new_crash_loops(cluster, snap, before),
                  builtin.gateways_ready(cluster, snap)]
        if self._config.execution.enable_rollout_sequencing:
            # The sidecar restart waves ran, so every proxy must now be on the target.
            checks.append(builtin.proxies_on_version(cluster, snap, target, "proxies_on_target_version"))
        return checks


def judge_settings(validation: ValidationConfig) -> JudgeSettings:
    """The judge's settings from the tenant's `validation` config."""
    return JudgeSettings(interval_seconds=validation.metric_interval_seconds,
                         min_data_points=validation.min_data_points, min_coverage=validation.min_coverage,
                         significance_min_points=validation.significance_min_points,
                         confidence=validation.confidence, batch_error_rate=validation.batch_error_rate,
                         batch_correction=validation.batch_correction)


def conclude(state: StateStore, run_id: str, settings: JudgeSettings | None = None) -> list[ClusterVerdict]:
    """The batch's final verdicts; ValidationFailed / ValidationInconclusive say which cluster and why.

    Every cluster's verdict is read once the batch is validated and judged again together
    (`judge_batch`: the rank tests of all clusters corrected for their number, so a large healthy
    batch is not rolled back by chance); the final verdicts replace the per-cluster ones.
    """
    settings = settings or JudgeSettings()
    run = state.get_run(run_id)
    verdicts = []
    for cluster_id in run.clusters:
        verdict = state.get_verdict(run_id, cluster_id)
        if verdict is None:
            raise ValidationInconclusive(f"{cluster_id}: no validation verdict was recorded")
        verdicts.append(verdict)
    verdicts = judge_batch(verdicts, error_rate=settings.batch_error_rate, correction=settings.batch_correction)
    for verdict in verdicts:
        state.put_verdict(run, verdict)
    failed = [v for v in verdicts if v.outcome == VerdictOutcome.FAIL]
    if failed:
        raise ValidationFailed(issues_digest([verdict_issue(v) for v in failed], what="failed validation"))
    unsure = [v for v in verdicts if v.outcome == VerdictOutcome.INCONCLUSIVE]
    if unsure:
        raise ValidationInconclusive(issues_digest([verdict_issue(v) for v in unsure],
                                                   what="were inconclusive"))
    return verdicts


def verdict_issue(verdict: ClusterVerdict) -> Issue:
    """A verdict that did not pass, for a digest: counted by the queries and post-checks that did not pass."""
    kinds = [f.query_name for f in verdict.findings if f.outcome != VerdictOutcome.PASS]
    kinds += [c.check_name for c in verdict.post_checks if not c.passed]
    # One count per kind per cluster: "latency_p95 500" reads as 500 clusters.
    return Issue(verdict.cluster_id, verdict.summary(), tuple(dict.fromkeys(kinds)) or (verdict.outcome.value,))
