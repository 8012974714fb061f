"""Precheck one cluster before the change, and capture its metric baseline.

The baseline is also a precheck: a run whose baseline cannot be judged would open an MR, change
the cluster and then end inconclusive whatever happened, so the precheck refuses it first
(`baseline_judgeable`, docs/validation.md#baseline-precheck).
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

from pydantic import BaseModel

from guard.checks import builtin
from guard.checks.snapshot import read_snapshot
from guard.config.models import TenantConfig
from guard.core.models import CheckStatus, Cluster, HealthCheckResult
from guard.core.run import MetricSummary, PrecheckReport, RunRecord
from guard.errors import PrecheckFailed, RateLimited, TransientError
from guard.judge import JudgeSettings, baseline_coverage, window_coverage
from guard.ports import AlertsSnapshot, ChartRepository, Clock, ClusterConnector, GitOpsRepo, MetricsProvider
from guard.rules import TRAFFIC_QUERY
from guard.services.custom_checks import CustomChecks, InProcessChecks
from guard.services.fanout import ClusterOutcome, chunk_error, crash_text, for_each_cluster
from guard.services.install_precheck import InstallPrecheck
from guard.services.metrics import ChunkWindows, chunk_windows, read_window, render_queries
from guard.services.validate import judge_settings
from guard.stores.registry import ClusterRegistry
from guard.stores.state import StateStore


def _unanswered(result: HealthCheckResult) -> str:
    return " (inconclusive)" if result.status == CheckStatus.INCONCLUSIVE else ""


def _refusal(report: PrecheckReport) -> str:
    """PrecheckFailed's message: the cluster and each failed check's reason."""
    failures = "; ".join(f"{r.check_name}{_unanswered(r)}: {r.message}" for r in report.failures())
    return f"{report.cluster_id}: {failures}"


class ChunkCounts(BaseModel):
    """What a chunk's precheck task returns: counts, never the clusters' reports (they are stored)."""

    chunk: int
    clusters: int
    passed: int


def baseline_judgeable(cluster_id: str, baseline: dict[str, MetricSummary], thresholds: dict[str, float],
                       settings: JudgeSettings) -> HealthCheckResult:
    """`baseline_coverage`: fails naming each query whose baseline the judge could not compare against.

    Which queries must be judgeable: those a relative rule (`_max_increase_percent`,
    `_max_decrease_percent`, `latency_increase_percent`) compares with the baseline. Absolute
    `_min`/`_max` limits and `min_request_count` read only the window after the upgrade, and a
    query without any rule is never judged, so their baselines may be empty. With
    `min_request_count`, a baseline whose whole window saw fewer requests is refused too: the
    window after the upgrade is never longer than the baseline's, so with the same traffic every
    other query would be "too little traffic to judge".
    """
    problems: list[str] = []
    found: dict[str, str] = {}
    coverages = baseline_coverage(baseline, thresholds, settings)
    for name, coverage in sorted(coverages.items()):
        if coverage is None or not coverage.enough:
            text = coverage.text() if coverage else "not read"
            problems.append(f"{name}: {text}")
            found[name] = text
    minimum = thresholds.get("min_request_count")
    traffic = baseline.get(TRAFFIC_QUERY)
    if minimum is not None and traffic is not None and TRAFFIC_QUERY not in found:
        # Missing request_count buckets are buckets without requests, as the judge counts them.
        total = sum(window_coverage(traffic, settings, missing_is_zero=True)[0])
        if total < minimum:
            problems.append(f"{TRAFFIC_QUERY}: {total:g} requests in the baseline window, below "
                            f"min_request_count {minimum:g} (too little traffic to judge)")
            found[TRAFFIC_QUERY] = f"{total:g} requests"
    if problems:
        return HealthCheckResult(
            cluster_id=cluster_id, check_name="baseline_coverage", status=CheckStatus.FAIL, details=found,
            message="the metric baseline cannot be judged, so validation after the upgrade could only be "
                    "inconclusive: " + "; ".join(problems))
    judged = ", ".join(sorted(coverages)) or "no relative rule"
    return HealthCheckResult(cluster_id=cluster_id, check_name="baseline_coverage", status=CheckStatus.PASS,
                             message=f"baseline judgeable ({judged})")


def zero_downtime_policy(config: TenantConfig, run: RunRecord) -> builtin.ZeroDowntimePolicy:
    """Config `execution` overlaid with the run's `ensure_pdb` / `min_replicas` / `max_unavailable`."""
    options = run.options
    return builtin.ZeroDowntimePolicy(
        pdb_required=options.ensure_pdb if options.ensure_pdb is not None
        else config.execution.pod_disruption_budget_required,
        min_ready_replicas_percent=config.execution.min_ready_replicas_percent,
        min_replicas=options.min_replicas,
        max_unavailable=options.max_unavailable,
    )


class PrecheckService:
    """Runs every precheck on one cluster, stores the report, raises PrecheckFailed on a failure."""

    def __init__(self, config: TenantConfig, registry: ClusterRegistry, state: StateStore,
                 connector: ClusterConnector, metrics: MetricsProvider, clock: Clock,
                 checks_dir: Path | None = None, custom_checks: CustomChecks | None = None,
                 repo: GitOpsRepo | None = None, charts: ChartRepository | None = None) -> None:
        self._config = config
        # The GitOps repository and the chart repositories: the whole Istio install's prechecks
        # (guard.services.install_precheck) run when both are given.
        self._install = (InstallPrecheck(registry, repo, charts, config.gitlab.target_branch,
                                         config.gitlab.allowed_path_prefixes, revision_cache=config.gitlab.url)
                         if repo is not None and charts is not None else None)
        # Production runs the tenant's checks in their own function (services.custom_checks); without
        # one they run here, from `checks_dir` (the local rehearsal, tests).
        self._custom_checks = custom_checks
        self._registry = registry
        self._state = state
        self._connector = connector
        self._metrics = metrics
        self._clock = clock
        self._checks_dir = checks_dir

    def run(self, run_id: str, cluster_id: str) -> PrecheckReport:
        """Prechecks one cluster of the run: stores its report, raises PrecheckFailed when it fails."""
        return self._check(self._state.get_run(run_id), cluster_id)

    def run_chunk(self, run_id: str, chunk: int) -> ChunkCounts:
        """Prechecks chunk `chunk` of the run's clusters, `execution.max_concurrent_clusters` at a time.

        Every cluster's report is stored. A cluster that fails its prechecks fails the chunk with
        PrecheckFailed naming it and its reasons, as one cluster's task did (the first failing
        cluster in the chunk's order; clusters not started yet are left out: the batch stops
        anyway). A check that crashed is that cluster's failed, inconclusive result, not a lost
        chunk. Otherwise a rate limit or a vendor that kept failing leaves as the chunk's error
        (guard.services.fanout.chunk_error), so the state machine runs the chunk again.
        """
        run = self._state.get_run(run_id)
        clusters = run.chunk(chunk)

        def refused(outcome: ClusterOutcome[PrecheckReport]) -> bool:
            return outcome.error is not None and not isinstance(outcome.error, TransientError)

        # The baseline: a window ending now, before anything changes, asked for the chunk's clusters in
        # one request per query group (guard.datadog_groups), not one per cluster.
        end = self._clock.now()
        start = end - timedelta(minutes=self._config.validation.baseline_window_minutes)
        windows = chunk_windows(self._metrics, self._config.datadog.queries,
                                list(self._registry.get_many(clusters).values()), start, end)
        alerts = self._alerts_snapshot()
        outcomes = for_each_cluster(clusters, lambda cluster_id: self._check(run, cluster_id, windows, alerts),
                                    max_workers=self._config.execution.max_concurrent_clusters, stop=refused)
        for outcome in outcomes:
            if isinstance(outcome.error, PrecheckFailed):
                raise outcome.error
            if refused(outcome):
                report = PrecheckReport(cluster_id=outcome.cluster_id, results=[HealthCheckResult.inconclusive(
                    outcome.cluster_id, "precheck", f"the precheck crashed: {crash_text(outcome.error)}")],
                    ignored_alerts=run.options.ignore_alerts)
                self._state.put_precheck(run, report)
                raise PrecheckFailed(_refusal(report))
        error = chunk_error(outcomes)
        if error is not None:
            raise error
        return ChunkCounts(chunk=chunk, clusters=len(clusters), passed=len(outcomes))

    def _check(self, run: RunRecord, cluster_id: str, windows: ChunkWindows | None = None,
               alerts: AlertsSnapshot | None = None) -> PrecheckReport:
        cluster = self._registry.get(cluster_id)
        results = self._cluster_checks(run, cluster)
        if self._install is not None:
            results += self._install.run(run, cluster, self._connector)
        results.append(self._alerts(cluster, ignore=run.options.ignore_alerts, snapshot=alerts))
        if self._config.custom_checks:
            runner = self._custom_checks or (InProcessChecks(self._config.custom_checks, self._checks_dir)
                                             if self._checks_dir is not None else None)
            if runner is not None:
                results += runner.run(cluster)

        # Baseline: a window ending now, before anything changes (never the post-upgrade period).
        queries = render_queries(self._config.datadog.queries, cluster)
        if windows is not None:
            baseline = windows.read(cluster_id, queries)
        else:
            end = self._clock.now()
            start = end - timedelta(minutes=self._config.validation.baseline_window_minutes)
            baseline = read_window(self._metrics, queries, start, end)
        results.append(baseline_judgeable(cluster_id, baseline, self._config.thresholds_for(run.batch),
                                          judge_settings(self._config.validation)))

        report = PrecheckReport(cluster_id=cluster_id, results=results, baseline=baseline,
                                ignored_alerts=run.options.ignore_alerts)
        self._state.put_precheck(run, report)
        if not report.passed:
            raise PrecheckFailed(_refusal(report))
        return report

    def _alerts_snapshot(self) -> AlertsSnapshot | None:
        """The alerting monitors and monitor groups, asked once for the chunk; None (each cluster asks)
        when Datadog kept failing, so each cluster's check says so as it did alone."""
        try:
            return self._metrics.alerts_snapshot()
        except RateLimited:
            raise  # the state machine waits the reset out and runs the chunk again
        except TransientError:
            return None

    def _alerts(self, cluster: Cluster, *, ignore: bool,
                snapshot: AlertsSnapshot | None = None) -> HealthCheckResult:
        """Datadog's alerting monitors; inconclusive when Datadog kept failing past the retry policy."""
        try:
            alerts = self._metrics.active_alerts(cluster.datadog_tags, snapshot)
        except RateLimited:
            raise  # the state machine waits the reset out and runs the precheck again
        except TransientError as e:
            return HealthCheckResult.inconclusive(cluster.cluster_id, "datadog_alerts", f"Datadog monitors: {e}")
        return builtin.datadog_alerts(cluster, alerts, ignore=ignore)

    def _cluster_checks(self, run: RunRecord, cluster: Cluster) -> list[HealthCheckResult]:
        snap = read_snapshot(self._connector, cluster, "before the upgrade")
        if isinstance(snap, HealthCheckResult):
            return [snap]
        policy = zero_downtime_policy(self._config, run)
        current = cluster.current_istio_version
        return [
            HealthCheckResult(cluster_id=cluster.cluster_id, check_name="api_reachable", status=CheckStatus.PASS,
                              message="Kubernetes API reachable"),
            builtin.nodes_ready(cluster, snap),
            builtin.helm_release_ready(cluster, snap),
            builtin.system_pods_ready(cluster, snap),
            builtin.no_crash_loops(cluster, snap),
            builtin.istiod_ready(cluster, snap, expected_version=current),
            builtin.proxies_on_version(cluster, snap, current, "proxies_on_current_version"),
            builtin.version_skew(cluster, snap, run.target_version, self._config.execution.max_minor_version_skip),
            builtin.sidecar_injector(cluster, snap),
            builtin.gateways_ready(cluster, snap),
            builtin.injection_labels_consistent(cluster, snap),
            builtin.pdbs_present(cluster, snap, policy),
            builtin.pdb_disruptions(cluster, snap),
            builtin.ready_replicas(cluster, snap, policy),
            builtin.max_unavailable(cluster, snap, policy),
        ]
