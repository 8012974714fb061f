"""The local world a rehearsal runs in: moto (AWS), the GitLab, Datadog and Kubernetes
simulators, the API Gateway shim for the webhook, and the person who merges the MR.

Everything listens on 127.0.0.1 and every thread is a daemon that stops with `close()`.
A world runs on its own moto server, or on one it is given (a test session shares one).
"""

from __future__ import annotations

import bisect
import hashlib
import json
import os
import secrets
import tempfile
import threading
from collections.abc import Callable
from contextlib import ExitStack
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar
from unittest import mock

from guard import runtime
from guard.clock import ScaledClock
from guard.config.loader import load_config, parse_config
from guard.config.models import TenantConfig
from guard.core.models import Cluster
from guard.datadog_query import split as split_query
from guard.gitops.istio_install import Doc, Files, Install, read_install
from guard.services.metrics import render_queries
from guard.stores.registry import ClusterRegistry
from guard.stores.state import BatchResult, StateStore
from guard.vocabulary.outcomes import Outcome

from sandbox import layouts
from sandbox.apigw import ApiGatewayShim
from sandbox.engine import HANG_SECONDS, LocalEngine
from sandbox.scenario import ClusterSpec, DecisionComment, HumanAction, MetricBehaviour, Scenario
from sandbox.sims.chart_repo_sim import ChartRepositorySimulator
from sandbox.sims.datadog_sim import DatadogSimulator
from sandbox.sims.gitlab_sim import GitLabSimulator
from sandbox.sims.kubernetes_sim import KubernetesSimulator, Workload
from sandbox.sims.llm_sim import LlmSimulator
from sandbox.sims.slack_sim import SlackRecorder

T = TypeVar("T")
STEADY_VOLUME = 1000.0  # requests per bucket behind a ratio whose denominator no other query defines

HELMRELEASE = """\
# Istio control plane for {cluster}, managed by Flux. GUARD bumps spec.chart.spec.version.
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: istiod
  namespace: istio-system
spec:
  interval: 5m
  chart:
    spec:
      chart: istiod
      version: "{version}"  # upgraded by GUARD merge requests
      sourceRef:
        kind: HelmRepository
        name: istio
        namespace: flux-system
  values:
    pilot:
      autoscaleMin: 2
"""
HELM_REPOSITORY_PATH = "infrastructure/sources/istio.yaml"
HELM_REPOSITORY = """\
# Istio's charts, mirrored; every istio HelmRelease's sourceRef.
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: istio
  namespace: flux-system
spec:
  interval: 1h
  url: {url}
"""


def _entry_path(spec: ClusterSpec) -> str:
    """The cluster's `flux_config_path` in its layout."""
    if spec.flux_config_path:
        return spec.flux_config_path
    return {
        "single": f"clusters/{spec.cluster}/istio/helmrelease.yaml",
        "whole": f"clusters/{spec.cluster}/istio/istiod.yaml",
        "ambient": f"clusters/{spec.cluster}/istio/istiod.yaml",
        "oci": f"clusters/{spec.cluster}/istio/istiod.yaml",
        "postbuild": f"clusters/{spec.cluster}/istio.yaml",
        "postbuild-env": f"clusters/{spec.cluster}/istio.yaml",
        "version-map": f"clusters/{spec.cluster}/istio.yaml",
        "overlay": f"clusters/{spec.cluster}/istio/kustomization.yaml",
        "flux-chain": f"clusters/{spec.cluster}/istio/flux.yaml",
        "shared-base": f"clusters/{spec.cluster}/istio/kustomization.yaml",
    }[spec.layout]


def _merge(base: dict[str, Any], extra: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in extra.items():
        merged[key] = _merge(merged[key], value) if isinstance(value, dict) and isinstance(merged.get(key), dict) \
            else value
    return merged


def _with_overrides(config: TenantConfig, overrides: dict[str, Any]) -> TenantConfig:
    """The tenant config with a scenario's overrides, validated like the file itself."""
    if not overrides:
        return config
    return parse_config(_merge(config.model_dump(by_alias=True), overrides), "config with scenario overrides")


def _times(ratio: Callable[[datetime], float | None],
           volume: Callable[[datetime], float | None]) -> Callable[[datetime], float | None]:
    """The numerator series that, over `volume`, reads `ratio` (no data when either has none)."""
    def value(bucket: datetime) -> float | None:
        r, v = ratio(bucket), volume(bucket)
        return None if r is None or v is None else r * v
    return value


def _noise(*parts: object) -> float:
    """Deterministic noise in [-1, 1] so a rehearsal replays identically."""
    digest = hashlib.sha256("|".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 0xFFFFFFFF * 2 - 1


class LocalWorld:
    """Builds and seeds every local system for one scenario.

    `engine`: a moto server already serving (`LocalEngine.serve()`) to run on; by default the
    world starts its own and stops it on `close()`.
    """

    def __init__(self, scenario: Scenario, engine: LocalEngine | None = None) -> None:
        self.scenario = scenario
        self.config: TenantConfig = _with_overrides(load_config(scenario.config_path()), scenario.config_overrides)
        self.clock = ScaledClock(scenario.speedup)
        self._owns_engine = engine is None
        self.engine = engine or LocalEngine(speedup=scenario.speedup)
        self._running = ExitStack()
        self.gitlab_token = "glpat-local-" + secrets.token_hex(8)
        self.webhook_token = secrets.token_hex(16)
        self.gitlab = GitLabSimulator(token=self.gitlab_token, clock=self.clock)
        self.datadog = DatadogSimulator(api_key="dd-local-api", app_key="dd-local-app", clock=self.clock)
        self.kubernetes = KubernetesSimulator(clock=self.clock, pod_ready_seconds=20)
        # The Helm repository the HelmReleases pull from (and an OCI registry): the precheck asks it
        # whether the target chart version is published.
        self.charts = ChartRepositorySimulator()
        self.webhook: ApiGatewayShim | None = None
        self.llm = LlmSimulator(mode=scenario.llm.mode) if scenario.llm.mode != "off" else None
        self.slack = SlackRecorder()
        # cluster -> [(when, version)] as Flux applied them; metrics follow the running version
        self.version_changes: dict[str, list[tuple[datetime, str]]] = {}
        self.upgraded_at: dict[str, datetime] = {}
        # (real time, what the person did): the rehearsal prints it in order with the history
        self.human_log: list[tuple[datetime, str]] = []
        self._stop = threading.Event()
        self._reconciler_thread: threading.Thread | None = None
        # (real time, what one scheduled run of the reconciler did, or how it failed)
        self.reconciler_runs: list[tuple[datetime, str]] = []
        self._tmp = tempfile.TemporaryDirectory(prefix="guard-rehearsal-")
        self.state_machine_arn = ""
        self.rollout_state_machine_arn = ""
        # What Flux last applied from (the repository's files), and what each cluster's install read there.
        self._flux_files: dict[str, str] = {}
        self._install_reads: dict[str, tuple[set[str], set[str]]] = {}

    # ------------------------------------------------------------------ lifecycle
    def open(self) -> LocalWorld:
        """Start and seed everything; on a failure, undo what had started and re-raise (a shared
        engine must not stay taken by a world that never opened)."""
        try:
            self._open()
        except BaseException:
            self.close()
            raise
        return self

    def _open(self) -> None:
        # What started is stopped in reverse order by close(); the environment is undone with it.
        self.engine.serve()
        if self._owns_engine:
            self._running.callback(self.engine.stop)
        self.engine.begin(self.scenario.speedup)
        if not self._owns_engine:
            self._running.callback(self.engine.end)  # only once begun: a failed begin leaves the engine alone
        for simulator in (self.gitlab, self.datadog, self.kubernetes, self.charts, self.slack, self.llm):
            if simulator is not None:
                simulator.start()
                self._running.callback(simulator.stop)
        self._running.callback(runtime.reset)
        self._running.callback(setattr, runtime, "clock", runtime.clock)
        runtime.clock = self.clock
        self._running.enter_context(mock.patch.dict(os.environ, self._write_runtime_files()))
        runtime.reset()
        self.state_machine_arn = self.engine.deploy(self.config.aws.dynamodb.table_name,
                                                    self.config.aws.dynamodb.state_table_name)
        self.rollout_state_machine_arn = self.engine.deploy_rollout(self.state_machine_arn)
        # API Gateway invokes the webhook function like the dispatcher does: one invocation at a time.
        self.webhook = ApiGatewayShim(lambda event: self.engine.invoke("GitLabWebhook", event)).start()
        self._running.callback(self.webhook.stop)
        self._seed()
        threading.Thread(target=self._human, name="human", daemon=True).start()
        self._reconciler_thread = threading.Thread(target=self._reconciler, name="reconciler", daemon=True)
        self._reconciler_thread.start()

    def close(self) -> None:
        self._stop.set()
        if self._reconciler_thread is not None:  # no scheduled run may start while things are torn down
            self._reconciler_thread.join(timeout=HANG_SECONDS)
        self.engine.stop_executions()  # before the simulators go: a stopped execution may still be in a handler
        self._running.close()
        self._tmp.cleanup()

    def wait_until(self, predicate: Callable[[], T | None], what: str, timeout: float = HANG_SECONDS) -> T:
        """The first truthy value of `predicate`, re-checked whenever a Lambda invocation or an
        execution ends; `timeout` (real seconds) only catches a hang."""
        return self.engine.activity.wait_until(predicate, what, timeout)

    def __enter__(self) -> LocalWorld:
        return self.open()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ seeding
    def _write_runtime_files(self) -> dict[str, str]:
        """What CDK packages with each function: the config as JSON and the checks folder.
        Returns the functions' environment variables."""
        config_file = Path(self._tmp.name) / "config.json"
        # The tenant's GitLab URL becomes the simulator's: nothing leaves 127.0.0.1.
        self.config.gitlab.url = self.gitlab.url
        # The clusters' API servers are the local simulator: allowed by the tenant config the
        # rehearsal packages, as a deployer would list an internal proxy (docs/security.md).
        self.config.aws.allowed_api_endpoints = ["127.0.0.1"]
        # A rehearsal compresses hours into minutes: its inputs shorten the configured soaks.
        self.config.execution.allowed_overrides = sorted({*self.config.execution.allowed_overrides,
                                                          "soak_period_minutes"})
        # Notifications go to a local Slack-compatible recorder (its URL is the "secret").
        self.config.notifications.slack_webhook_secret = "guard/local/slack-webhook"
        if self.llm:
            behaviour = self.scenario.llm
            self.config.llm.enabled, self.config.llm.provider = True, behaviour.provider
            self.config.llm.base_url = f"{self.llm.url}/v1" if behaviour.provider == "openai" else self.llm.url
            # A hung endpoint must not hold the rehearsal for the production timeout.
            self.config.llm.timeout_seconds = min(self.config.llm.timeout_seconds, 2)
        config_file.write_text(self.config.model_dump_json(by_alias=True))
        checks = self.scenario.config_path().parent / self.config.custom_checks_path
        return {
            "GUARD_TENANT": self.config.tenant,
            "GUARD_CONFIG_FILE": str(config_file),
            "GUARD_CHECKS_DIR": str(checks),
            "GUARD_REGISTRY_TABLE": self.config.aws.dynamodb.table_name,
            "GUARD_STATE_TABLE": self.config.aws.dynamodb.state_table_name,
            "GUARD_DATADOG_HOST": self.datadog.url,
            # As the stack sets it on Precheck: the tenant's custom checks run in their own function.
            "GUARD_CUSTOM_CHECKS_FUNCTION": self.engine.function_name("CustomChecks"),
        }

    def _seed(self) -> None:
        sm = self.engine.client("secretsmanager")
        names = self.config.aws.secrets_manager
        sm.create_secret(Name=names.gitlab_token_secret, SecretString=self.gitlab_token)
        sm.create_secret(Name=names.datadog_credentials_secret,
                         SecretString=json.dumps({"api_key": "dd-local-api", "app_key": "dd-local-app"}))
        sm.create_secret(Name=names.webhook_secret, SecretString=self.webhook_token)
        sm.create_secret(Name="guard/local/slack-webhook", SecretString=f"{self.slack.url}/services/T0/B0/local")
        if self.llm:
            sm.create_secret(Name=self.config.llm.api_key_secret, SecretString=self.llm.api_key)

        registry = ClusterRegistry(self.engine.resource("dynamodb").Table(self.config.aws.dynamodb.table_name),
                                   self.config.tenant)
        files = self._repository_files()
        self._flux_files = dict(files)
        tree = self._tree(files)  # one parse of the repository for every cluster, not one each
        batch_of = {c: b.name for b in self.config.batches for c in b.clusters}
        for spec in self.scenario.fleet:
            path = _entry_path(spec)
            cluster = Cluster(
                cluster_id=spec.cluster, batch_id=batch_of.get(spec.cluster, "unassigned"),
                environment=spec.environment, region=spec.region, gitlab_project=self.scenario.gitlab_project,
                flux_config_path=path, aws_role_arn=spec.role_arn, api_endpoint=self.kubernetes.endpoint(spec.cluster),
                current_istio_version=spec.istio_version,
                datadog_tags={"env": spec.environment, "cluster_name": spec.cluster},
                owner_team=spec.owner_team, owner_handle=spec.owner_handle,
            )
            registry.put(cluster)
            self._seed_cluster(spec, cluster)
            self._seed_components(spec, tree)
        published = sorted({spec.istio_version for spec in self.scenario.fleet} | {self.scenario.target_version}
                           - set(self.scenario.unpublished_versions))
        for chart in ("base", "istiod", "cni", "ztunnel", "gateway"):
            self.charts.publish(chart, *published)
        self.charts.push("charts/istiod", *published)
        self.gitlab.add_project(self.scenario.gitlab_project, files, default_branch=self.config.gitlab.target_branch)
        settings = self.scenario.gitlab
        self.gitlab.configure(self.scenario.gitlab_project, merge_method=settings.merge_method,
                              approvals_required=settings.approvals_required,
                              only_allow_merge_if_pipeline_succeeds=settings.only_allow_merge_if_pipeline_succeeds,
                              ci=settings.pipeline_seconds is not None, pipeline_seconds=settings.pipeline_seconds)
        assert self.webhook is not None
        self.gitlab.add_hook(self.scenario.gitlab_project, f"{self.webhook.url}/webhooks/gitlab", self.webhook_token)
        self.gitlab.add_merge_listener(self._flux_follows)
        if self.scenario.main_commits:
            self.gitlab.add_merge_listener(self._teammate_commits)
        # The people who may answer a decision request, with their project access.
        for comment in self.scenario.decision_comments:
            levels = {"maintainer": 40, "developer": 30, "owner": 50}
            if comment.access in levels:
                self.gitlab.add_member(self.scenario.gitlab_project, comment.user, levels[comment.access])
            else:
                self.gitlab.add_user(comment.user)
        state = StateStore(self.engine.resource("dynamodb").Table(self.config.aws.dynamodb.state_table_name))
        for batch in self.scenario.succeeded_before:
            state.put_batch_result(BatchResult(batch=batch, target_version=self.scenario.target_version,
                                               status=Outcome.SUCCEEDED, run_id="earlier-rehearsal",
                                               at=self.clock.now()))

    def _repository_files(self) -> dict[str, str]:
        """The GitOps repository: each cluster's install in its scenario layout (sandbox/layouts.py)."""
        url = self.charts.helm_url
        files: dict[str, str] = {HELM_REPOSITORY_PATH: HELM_REPOSITORY.format(url=url)}
        shared: dict[str, list[ClusterSpec]] = {}
        for spec in self.scenario.fleet:
            if spec.layout == "single":
                files[_entry_path(spec)] = HELMRELEASE.format(cluster=spec.cluster, version=spec.istio_version)
            elif spec.layout in ("whole", "ambient"):
                files |= layouts.whole_install(spec.cluster, spec.istio_version, url, ambient=spec.layout == "ambient")
            elif spec.layout == "oci":
                files |= layouts.oci_install(spec.cluster, spec.istio_version, self.charts.registry)
            elif spec.layout == "overlay":
                files |= layouts.overlay(spec.cluster, spec.istio_version)
            elif spec.layout == "flux-chain":
                files |= layouts.flux_chain(spec.cluster, spec.istio_version)
            else:
                shared.setdefault(spec.layout, []).append(spec)
        for layout, specs in shared.items():
            names = [s.cluster for s in specs]
            if layout == "shared-base":
                files |= layouts.shared_base(names, specs[0].istio_version, url)
            elif layout == "version-map":
                files |= layouts.version_map_fleet(names, {s.cluster: s.istio_version for s in specs}, url)
            else:
                files |= layouts.postbuild_fleet(names, {s.cluster: s.istio_version for s in specs}, url,
                                                 environment_map=layout == "postbuild-env")
        return files

    @staticmethod
    def _tree(files: dict[str, str]) -> Files:
        """One revision of the repository; share it between clusters: it parses each file once."""
        paths = sorted(files)

        def listing(directory: str) -> list[str]:
            prefix = directory.strip("/") + "/" if directory.strip("/") else ""
            start = end = bisect.bisect_left(paths, prefix)
            while end < len(paths) and paths[end].startswith(prefix):
                end += 1
            return paths[start:end]
        return Files(files.get, listing)

    def _install(self, spec: ClusterSpec, tree: Files) -> Install:
        """The cluster's install at `tree`; what it read is noted, for `_flux_follows` to skip it while
        none of that changes."""
        seen = _ReadsNoted(tree)
        install = read_install(seen, spec.cluster, _entry_path(spec))
        self._install_reads[spec.cluster] = (seen.paths, seen.directories)
        return install

    def _install_changed(self, cluster: str, changed: set[str], moved: set[str]) -> bool:
        """Whether `cluster`'s install may read differently now that `changed` paths have new texts and
        `moved` paths were added or removed."""
        if cluster not in self._install_reads:
            return True
        paths, directories = self._install_reads[cluster]
        return bool(paths & (changed | moved)) or any(
            p.startswith(d.strip("/") + "/" if d.strip("/") else "") for d in directories for p in moved)

    def _seed_components(self, spec: ClusterSpec, tree: Files) -> None:
        """The cluster runs what its Flux path installs (chained by the same dependsOn), plus `unmanaged`."""
        self.kubernetes.set_kubernetes_version(spec.cluster, spec.kubernetes_version)
        install = self._install(spec, tree)
        for c in install.components:
            # Flux orders a release after its HelmRelease dependsOn and after what its Kustomization waits for.
            self.kubernetes.add_component(
                spec.cluster, c.component, c.name, namespace=c.namespace, version=spec.istio_version,
                depends_on=[name for _, name in install.dependencies(c)], crds=c.crds_policy,
                crd_templates=bool(c.crd_templates))
        for chart in spec.unmanaged:
            self.kubernetes.add_component(spec.cluster, chart, namespace="istio-system", version=spec.istio_version)

    def _seed_cluster(self, spec: ClusterSpec, cluster: Cluster) -> None:
        self.kubernetes.add_cluster(
            spec.cluster, spec.istio_version, nodes=3,
            workloads=[Workload(w.namespace, w.name, w.replicas, w.injected, w.pdb, w.pdb_min_available, w.kind,
                                w.native_sidecar, w.proxy_digest, w.pdb_selector) for w in spec.workloads],
            istio_revision=spec.istio.revision, image_variant=spec.istio.image_variant,
            helm_versions=spec.flux.api_versions)
        for job in spec.jobs:
            self.kubernetes.add_job(spec.cluster, job.namespace, job.name, completed=job.completed)
        faults = spec.faults
        if faults.flux_suspended:
            self.kubernetes.suspend_helm_release(spec.cluster)
        if faults.flux_failed_upgrades:
            self.kubernetes.fail_upgrades(spec.cluster, faults.flux_failed_upgrades, stall=faults.flux_stalls)
        if faults.unreachable:
            self.kubernetes.set_unreachable(spec.cluster)
        if faults.node_not_ready:
            self.kubernetes.set_node_ready(spec.cluster, self.kubernetes.node_names(spec.cluster)[0], False)
        if faults.crash_loop:
            namespace, _, prefix = faults.crash_loop.partition("/")
            self.kubernetes.crash_loop(spec.cluster, namespace, prefix)
        if faults.firing_monitor:
            self.datadog.add_monitor(faults.firing_monitor, tags=cluster.datadog_tags, state="Alert")
        interval = self.config.validation.metric_interval_seconds
        # Datadog serves metric queries; a configured `a / b` reaches it split (guard.datadog_query) and the
        # simulator evaluates the formula. So a ratio's behaviour is served as a numerator over a denominator:
        # the denominator's own series when another query defines it (error_rate over request_count's hits),
        # else a steady volume.
        ratios: list[tuple[str, list[str], MetricBehaviour]] = []
        served: dict[str, Any] = {}
        for name, query in render_queries(self.config.datadog.queries, cluster).items():
            behaviour = spec.metrics.get(name)
            if behaviour is None:
                continue
            parts = split_query(query)
            if parts.formula == "q0":
                served[parts.queries[0]] = self._series(spec, name, behaviour)
                self.datadog.set_series(parts.queries[0], served[parts.queries[0]], interval)
            elif parts.formula.replace(" ", "") == "q0/q1":
                ratios.append((name, parts.queries, behaviour))
            else:
                raise ValueError(f"the sandbox can serve a plain query or a ratio, not {name}: {parts.formula}")
        for name, (numerator, denominator), behaviour in ratios:
            volume = served.get(denominator) or (lambda bucket: STEADY_VOLUME)
            ratio = self._series(spec, name, behaviour)
            self.datadog.set_series(denominator, volume, interval)
            self.datadog.set_series(numerator, _times(ratio, volume), interval)

    def _series(self, spec: ClusterSpec, name: str, behaviour: MetricBehaviour) -> Any:
        # The spec, not its id: looking it up in the fleet for each series made seeding grow as its square.
        cluster_id, original = spec.cluster, spec.istio_version

        def value(bucket: datetime) -> float | None:
            running = original
            for when, version in self.version_changes.get(cluster_id, []):
                if when <= bucket:
                    running = version
            base = behaviour.value_after() if running != original else behaviour.before
            if base is None:
                return None
            return base * (1 + behaviour.jitter * _noise(cluster_id, name, bucket.timestamp()))
        return value

    # ------------------------------------------------------------------ Flux and the human
    def _flux_follows(self, project: str, iid: int, merge_commit_sha: str) -> None:
        """Flux sees the merged commit: each cluster whose HelmRelease changed reconciles."""
        from datetime import timedelta

        delay = self.scenario.flux_reconcile_seconds
        files = self.gitlab.files(project)
        before, self._flux_files = self._flux_files, dict(files)
        changed = {p for p in files.keys() & before.keys() if files[p] != before[p]}
        moved = files.keys() ^ before.keys()
        tree = self._tree(files)
        for spec in self.scenario.fleet:
            if _entry_path(spec) not in files:
                continue
            # A cluster none of whose files changed has nothing new to apply (the same version is a no-op
            # for Flux): reading every cluster's install on each merge made each merge O(fleet).
            if not self._install_changed(spec.cluster, changed, moved):
                continue
            version = ""
            for c in self._install(spec, tree).components:
                if c.component == "istiod":
                    version = c.location.current
                else:  # the other charts: Flux applies them too, in their dependsOn order
                    self.kubernetes.apply_release_version(spec.cluster, c.namespace, c.name, c.location.current,
                                                          reconcile_after_seconds=delay)
            if version and version != self.kubernetes.helm_release_versions(spec.cluster)[0]:
                if spec.faults.flux_suspended_after_precheck:
                    self.kubernetes.suspend_helm_release(spec.cluster)
                self.kubernetes.apply_chart_version(spec.cluster, version, reconcile_after_seconds=delay)
                # A stuck release fails on the new chart (e.g. it cannot be pulled): it was Ready before.
                if spec.faults.flux_stuck:
                    self.kubernetes.set_flux_stuck(spec.cluster)
                failing = spec.faults.flux_failed_upgrades and spec.faults.flux_stalls
                if not (spec.faults.flux_stuck or spec.faults.flux_suspended_after_precheck or failing):
                    at = self.clock.now() + timedelta(seconds=delay)
                    self.upgraded_at[spec.cluster] = at
                    self.version_changes.setdefault(spec.cluster, []).append((at, version))

    def _teammate_commits(self, project: str, iid: int, head: str) -> None:
        """After the Nth merge, a teammate commits the scenario's `main_commits` on the target branch."""
        merged = sum(1 for mr in self.gitlab.merge_requests(project) if mr["state"] == "merged")
        for commit in self.scenario.main_commits:
            if commit.after_merges != merged:
                continue
            files = {}
            for path in commit.paths:
                text = self.gitlab.file_at(project, path) or ""
                if commit.old not in text:
                    raise ValueError(f"main_commits: {commit.old!r} is not in {path}")
                files[path] = text.replace(commit.old, commit.new)
            self.gitlab.push(project, self.config.gitlab.target_branch, files, commit.message)
            self._log(f"a teammate committed on {self.config.gitlab.target_branch}: {commit.message}")

    def _human(self) -> None:
        """Watch for GUARD's MRs (upgrade and rollback) and its decision requests, and answer them
        `after_seconds` of scenario time later as the scenario says."""
        seen: set[int] = set()
        asked: set[int] = set()
        while not self._stop.is_set():
            # MRs and decision requests come from Lambda invocations: look again when one ends.
            since = self.engine.activity.generation()
            for mr in self.gitlab.merge_requests(self.scenario.gitlab_project):
                if mr["iid"] not in seen and mr["state"] == "opened":
                    seen.add(mr["iid"])
                    plan = self.scenario.rollback_human if "/rollback-" in mr["source_branch"] else self.scenario.human
                    threading.Thread(target=self._act, args=(mr["iid"], plan), daemon=True).start()
                if mr["iid"] not in asked and any("/guard proceed" in note for note in
                                                  self.gitlab.notes(self.scenario.gitlab_project, mr["iid"])):
                    asked.add(mr["iid"])
                    for comment in self.scenario.decision_comments:
                        threading.Thread(target=self._comment, args=(mr["iid"], comment), daemon=True).start()
            self.engine.activity.wait(since, timeout=0.25)

    def _reconciler(self) -> None:
        """EventBridge Scheduler's part (moto's never fires): invoke `Reconcile` through the engine every
        `gitlab.reconcile_minutes` of scenario time while the world is open, as the deployed schedule does."""
        period = self.config.gitlab.reconcile_minutes * 60 / self.scenario.speedup
        while not self._stop.wait(period):
            at = datetime.now(UTC)
            try:
                report = self.engine.invoke("Reconcile", {"source": "guard.reconcile"})
            except Exception as e:  # as Lambda records a failed scheduled run; the next one retries
                self.reconciler_runs.append((at, f"failed: {type(e).__name__}: {e}"))
                continue
            settled = list(report.get("settled") or []) if isinstance(report, dict) else []
            self.reconciler_runs.append((at, f"checked {report.get('checked', 0) if isinstance(report, dict) else 0}"
                                             f", settled {len(settled)}"))
            for line in settled:
                self._log(f"the reconciler found {line}", at)
            for line in list(report.get("tended") or []) if isinstance(report, dict) else []:
                self._log(f"the reconciler kept an MR mergeable: {line}", at)

    def _log(self, text: str, at: datetime | None = None) -> None:
        self.human_log.append((at or datetime.now(UTC), text))

    def _comment(self, iid: int, comment: DecisionComment) -> None:
        if self._stop.wait(comment.after_seconds / self.scenario.speedup):
            return
        self.gitlab.comment_as(self.scenario.gitlab_project, iid, comment.user, comment.body,
                               deliver_hooks=not comment.drop_webhook)
        self._log(f"{comment.user} ({comment.access}) commented `{comment.body}` on MR !{iid}"
                  + ("; GitLab's Note Hook is lost" if comment.drop_webhook else ""))

    def _act(self, iid: int, plan: HumanAction) -> None:
        action, after_seconds = plan.action, plan.after_seconds
        if action == "ignore":
            self._log(f"MR !{iid} opened; the reviewer ignores it")
            return
        self._log(f"MR !{iid} opened; the reviewer will {action} it after {after_seconds:g}s")
        if self._stop.wait(after_seconds / self.scenario.speedup):
            return
        at = datetime.now(UTC)  # GitLab delivers the webhook inside merge(): the execution resumes before it returns
        deliver = not plan.drop_webhook
        state = next((mr["state"] for mr in self.gitlab.merge_requests(self.scenario.gitlab_project)
                      if mr["iid"] == iid), None)
        if state != "opened":  # GUARD closed it meanwhile (it stopped watching it): there is nothing to merge
            self._log(f"MR !{iid} is {state}; the reviewer cannot {action} it", at)
            return
        if action == "merge" and (plan.approve or plan.when_mergeable):
            self._merge_through_gates(iid, plan)
            return
        if action == "merge":
            self.gitlab.merge(self.scenario.gitlab_project, iid, deliver_hooks=deliver, fast_forward=plan.fast_forward)
        else:
            self.gitlab.close(self.scenario.gitlab_project, iid, deliver_hooks=deliver)
        self._log(f"MR !{iid} {action}d" + ("" if deliver else "; GitLab's webhook is lost"), at)

    def _merge_through_gates(self, iid: int, plan: HumanAction) -> None:
        """The reviewer approves (again whenever a push removed the approval) and clicks Merge once GitLab
        enables it; looks again whenever a Lambda invocation ends (GUARD may have rebased the MR)."""
        project = self.scenario.gitlab_project
        while not self._stop.is_set():
            since = self.engine.activity.generation()
            state = self.gitlab.merge_request(project, iid)["state"]
            if state != "opened":
                self._log(f"MR !{iid} is {state}; the reviewer leaves it")
                return
            if plan.approve and self.gitlab.approvals_left(project, iid) > 0:
                self.gitlab.approve(project, iid, "reviewer")
                self._log(f"reviewer approved MR !{iid}")
            at = datetime.now(UTC)
            if (plan.when_mergeable and self.gitlab.merge_when_mergeable(project, iid) is not None) or (
                    not plan.when_mergeable and self.gitlab.merge(project, iid)):
                self._log(f"MR !{iid} merged", at)
                return
            self.engine.activity.wait(since, timeout=0.25)


class _ReadsNoted(Files):
    """A shared revision (its parses shared too) that notes the paths and directories one install read."""

    def __init__(self, shared: Files) -> None:
        super().__init__(shared.read, shared.listing)
        self._shared = shared
        self.paths: set[str] = set()
        self.directories: set[str] = set()

    def read(self, path: str) -> str | None:
        self.paths.add(path)
        return self._shared.read(path)

    def docs(self, path: str) -> list[Doc]:
        self.paths.add(path)
        return self._shared.docs(path)

    def listing(self, directory: str) -> list[str]:
        self.directories.add(directory)
        return self._shared.listing(directory)

    def _scan_order(self) -> list[str]:
        self.directories.add("")  # the whole repository, in Files' order
        return self._shared._scan_order()
