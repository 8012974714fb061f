"""The whole-install prechecks and change through the real adapters: python-gitlab against the GitLab
simulator, requests against the Helm repository / OCI registry simulator, the kubernetes client against
the Kubernetes simulator, the registry on moto."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

import boto3
import pytest
from guard.adapters.chart_registry import HttpChartRepository
from guard.adapters.gitlab_repo import GitLabRepo
from guard.core.models import CheckStatus, Cluster, HealthCheckResult
from guard.core.run import ExecutionInput, RunRecord
from guard.errors import ConfigError
from guard.retry import RetryPolicy
from guard.services.change import Change, ChangeService
from guard.services.install import repo_files
from guard.services.install_precheck import InstallPrecheck
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from guard.stores.state import StateStore
from guard.vocabulary.outcomes import ChangeKind
from moto import mock_aws

from sandbox import layouts
from sandbox.sims.chart_repo_sim import ChartRepositorySimulator
from sandbox.sims.gitlab_sim import GitLabSimulator
from sandbox.sims.kubernetes_sim import KubernetesSimulator
from tests.support.clock import FakeClock
from tests.support.kubernetes import SimConnector

PROJECT, TOKEN, OLD, NEW = "platform/istio-fleet", "sim-token", "1.22.3", "1.23.1"


@dataclass
class Rig:
    gitlab: GitLabSimulator
    charts: ChartRepositorySimulator
    kubernetes: KubernetesSimulator
    registry: ClusterRegistry
    state: StateStore
    repo: GitLabRepo
    clock: FakeClock

    def seed(self, files: dict[str, str], clusters: dict[str, str]) -> None:
        """The project with `files`, and each cluster (id -> flux_config_path) in the registry and on Kubernetes."""
        self.gitlab.add_project(PROJECT, files)
        for cid, path in clusters.items():
            self.kubernetes.add_cluster(cid, OLD)
            self.registry.put(Cluster(cluster_id=cid, batch_id="dev-1", environment="dev", region="us-east-1",
                                      gitlab_project=PROJECT, flux_config_path=path, current_istio_version=OLD,
                                      api_endpoint=self.kubernetes.endpoint(cid)))

    def precheck(self, cluster_id: str, batch: list[str], prefixes: list[str] | None = None
                 ) -> dict[str, HealthCheckResult]:
        run = RunRecord(run_id="r1", execution_arn="arn", batch="dev-1", target_version=NEW, clusters=batch,
                        from_versions=dict.fromkeys(batch, OLD), gitlab_project=PROJECT,
                        options=ExecutionInput.model_validate({"batch": "dev-1", "target_version": NEW}),
                        started_at=datetime.now(UTC))
        checks = InstallPrecheck(self.registry, self.repo, HttpChartRepository(retry=RetryPolicy(sleep=lambda _: None)),
                                 "main", prefixes)
        results = checks.run(run, self.registry.get(cluster_id), SimConnector(self.kubernetes))
        return {r.check_name: r for r in results}

    def change(self, versions: dict[str, str]) -> None:
        ChangeService(self.registry, self.state, self.repo, self.clock).open(Change(
            run_id="r1", kind=ChangeKind.UPGRADE, project=PROJECT, source_branch="guard/dev-1", target_branch="main",
            versions=versions, title="t", commit_message="m", description="d", wait_hours=1), "token")


@pytest.fixture
def rig(monkeypatch: pytest.MonkeyPatch) -> Iterator[Rig]:
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    clock = FakeClock()
    with mock_aws(), GitLabSimulator(token=TOKEN, clock=clock) as gitlab, KubernetesSimulator(clock) as k8s, \
            ChartRepositorySimulator() as charts:
        registry, state = create_tables(boto3.resource("dynamodb", region_name="us-east-1"), "registry", "state")
        repo = GitLabRepo.from_token(gitlab.url, TOKEN, timeout_seconds=5, retry=RetryPolicy(sleep=lambda _: None))
        yield Rig(gitlab, charts, k8s, ClusterRegistry(registry, "unit"), StateStore(state), repo, clock)


def test_whole_install_passes_and_the_mr_bumps_five_version_lines_only(rig: Rig) -> None:
    # GIVEN an ambient install (base, istiod, cni, ztunnel, gateway) and NEW published for every chart
    files = layouts.whole_install("c1", OLD, "URL", ambient=True)
    rig.charts.publish("base", OLD, NEW)
    rig.charts.publish("istiod", OLD, NEW)
    rig.charts.publish("cni", OLD, NEW)
    rig.charts.publish("ztunnel", OLD, NEW)
    rig.charts.publish("gateway", OLD, NEW)
    files = {p: t.replace("URL", rig.charts.helm_url) for p, t in files.items()}
    rig.seed(files, {"c1": "clusters/c1/istio/istiod.yaml"})
    # WHEN the prechecks run
    results = rig.precheck("c1", ["c1"])
    # THEN every install check passes
    for name in ("istio_install", "istio_upgrade_order", "istio_ambient_skew", "istio_crds_upgraded", "change_scope",
                 "chart_version_published", "kubernetes_compatible"):
        assert results[name].status == CheckStatus.PASS, results[name].message
    # AND the MR's commit changes the five version lines and nothing else
    rig.change({"c1": NEW})
    changed = 0
    for path, before in files.items():
        after = rig.gitlab.file_at(PROJECT, path, "guard/dev-1")
        assert after is not None
        for x, y in zip(before.splitlines(), after.splitlines(), strict=True):
            if x != y:
                assert y.replace(NEW, OLD) == x
                changed += 1
    assert changed == 5
    # AND the MR lists each version line it changes, and the charts in Flux's order
    description = rig.gitlab.merge_requests(PROJECT)[0]["description"]
    assert "### Versions this MR changes" in description
    row = (f"| `clusters/c1/istio/base.yaml` | HelmRelease istio-system/istio-base spec.chart.spec.version "
           f"| {OLD} | {NEW} |")
    assert row in description
    assert "`c1`: base → istiod → cni → ztunnel → gateway" in description


def test_a_version_missing_from_the_helm_repository_is_refused_naming_the_chart(rig: Rig) -> None:
    # GIVEN istiod's NEW is published but base's is not (a typo'd or unpublished version)
    rig.charts.publish("base", OLD)
    rig.charts.publish("istiod", OLD, NEW)
    files = {p: t.replace("URL", rig.charts.helm_url)
             for p, t in layouts.whole_install("c1", OLD, "URL").items() if "gateway" not in p}
    rig.seed(files, {"c1": "clusters/c1/istio/istiod.yaml"})
    # WHEN the prechecks run THEN the published check fails naming base
    result = rig.precheck("c1", ["c1"])["chart_version_published"]
    assert result.status == CheckStatus.FAIL
    assert f"{NEW} is not published for base in {rig.charts.helm_url}" in result.message


def test_oci_chart_ref_reads_the_tags_list_through_the_token_challenge(rig: Rig) -> None:
    # GIVEN istiod through chartRef to an OCIRepository on a registry that demands a Bearer token
    rig.charts.push("charts/istiod", OLD)
    rig.seed(layouts.oci_install("c1", OLD, rig.charts.registry), {"c1": "clusters/c1/istio/istiod.yaml"})
    # WHEN NEW is not pushed THEN refused; once pushed, it passes (after the 401 challenge and a token)
    assert rig.precheck("c1", ["c1"])["chart_version_published"].status == CheckStatus.FAIL
    rig.charts.push("charts/istiod", NEW)
    assert rig.precheck("c1", ["c1"])["chart_version_published"].status == CheckStatus.PASS
    assert "/token" in rig.charts.requests


def test_a_shared_base_is_refused_listing_the_clusters_outside_the_batch(rig: Rig) -> None:
    # GIVEN three clusters on one base with a literal version; the batch holds only a
    files = layouts.shared_base(["a", "b", "c"], OLD, rig.charts.helm_url)
    rig.seed(files, {c: f"clusters/{c}/istio/kustomization.yaml" for c in "abc"})
    # WHEN a is prechecked THEN the scope check fails and lists b and c
    result = rig.precheck("a", ["a"])["change_scope"]
    assert result.status == CheckStatus.FAIL and result.details["outside"] == ["b", "c"]
    # AND the change itself refuses too (no MR is opened)
    with pytest.raises(ConfigError, match="outside the batch: b, c"):
        rig.change({"a": NEW})
    assert rig.gitlab.merge_requests(PROJECT) == []
    # AND with every cluster in the batch it passes
    assert rig.precheck("a", ["a", "b", "c"])["change_scope"].status == CheckStatus.PASS


def test_kubernetes_outside_the_supported_range_is_refused(rig: Rig) -> None:
    rig.seed(layouts.oci_install("c1", OLD, rig.charts.registry), {"c1": "clusters/c1/istio/istiod.yaml"})
    rig.kubernetes.set_kubernetes_version("c1", "1.33.1")
    result = rig.precheck("c1", ["c1"])["kubernetes_compatible"]
    assert result.status == CheckStatus.FAIL and "does not support Kubernetes 1.33" in result.message
    rig.kubernetes.set_kubernetes_version("c1", "1.25.4")
    assert rig.precheck("c1", ["c1"])["kubernetes_compatible"].status == CheckStatus.WARN


def test_an_environment_variable_outside_the_allowed_paths_is_refused_then_scoped(rig: Rig) -> None:
    # GIVEN two clusters reading istio_version from one ConfigMap under environments/
    files = layouts.postbuild_fleet(["a", "b"], {"a": OLD, "b": OLD}, rig.charts.helm_url, environment_map=True)
    rig.seed(files, {c: f"clusters/{c}/istio.yaml" for c in "ab"})
    # WHEN the batch holds both but GUARD may commit under clusters/ only THEN it says which prefix to add
    result = rig.precheck("a", ["a", "b"], ["clusters/"])["change_scope"]
    assert result.status == CheckStatus.FAIL and "environments/dev/istio-version.yaml" in result.message
    assert "gitlab.allowed_path_prefixes" in result.message
    # AND with environments/ allowed, a batch of a alone is refused naming b (one variable for the environment)
    assert rig.precheck("a", ["a"], ["clusters/", "environments/"])["change_scope"].details["outside"] == ["b"]
    assert rig.precheck("a", ["a", "b"], ["clusters/", "environments/"])["change_scope"].status == CheckStatus.PASS


def test_side_by_side_clusters_and_a_remote_base_are_named_in_the_install_check(rig: Rig) -> None:
    # GIVEN two clusters' HelmRelease files side by side in one directory, and a kustomization elsewhere that also
    # pulls a remote base
    release = layouts.release("istiod", "istiod", OLD)
    files = {"clusters/dev/a.yaml": release, "clusters/dev/b.yaml": release,
             "clusters/c/kustomization.yaml": ("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                                               "resources:\n  - istiod.yaml\n"
                                               "  - https://github.com/example/istio-extras//base?ref=v1\n"),
             "clusters/c/istiod.yaml": release,
             "clusters/sources/istio.yaml": layouts.HELM_REPO.format(url=rig.charts.helm_url)}
    rig.seed(files, {"a": "clusters/dev/a.yaml", "b": "clusters/dev/b.yaml", "c": "clusters/c/kustomization.yaml"})
    # WHEN a is prechecked THEN its install is its own file, b's is named as left out, and the scope is a alone
    results = rig.precheck("a", ["a"])
    assert results["istio_install"].status == CheckStatus.PASS
    assert "left out as another cluster's file: clusters/dev/b.yaml" in results["istio_install"].message
    assert results["change_scope"].status == CheckStatus.PASS, results["change_scope"].message
    # AND c's remote base is named (a warning: a chart there would not be upgraded)
    remote = rig.precheck("c", ["c"])["istio_install"]
    assert remote.status == CheckStatus.WARN
    assert "https://github.com/example/istio-extras//base?ref=v1" in remote.message


def test_tasks_at_one_commit_read_the_fleet_once_and_a_new_commit_is_read_again(rig: Rig) -> None:
    # GIVEN three clusters on one shared base, and tasks that keep what they read (as the Lambda's do)
    files = layouts.shared_base(["a", "b", "c"], OLD, rig.charts.helm_url)
    rig.seed(files, {c: f"clusters/{c}/istio/kustomization.yaml" for c in "abc"})

    def task(cluster: str, batch: list[str]) -> HealthCheckResult:
        run = RunRecord(run_id="r1", execution_arn="arn", batch="dev-1", target_version=NEW, clusters=batch,
                        from_versions=dict.fromkeys(batch, OLD), gitlab_project=PROJECT,
                        options=ExecutionInput.model_validate({"batch": "dev-1", "target_version": NEW}),
                        started_at=datetime.now(UTC))
        checks = InstallPrecheck(rig.registry, rig.repo,
                                 HttpChartRepository(retry=RetryPolicy(sleep=lambda _: None)), "main",
                                 revision_cache=rig.gitlab.url)
        results = checks.run(run, rig.registry.get(cluster), SimConnector(rig.kubernetes))
        return {r.check_name: r for r in results}["change_scope"]

    def file_reads() -> int:
        return sum(1 for r in rig.gitlab.requests if "/repository/files/" in r.path)

    # WHEN a first task prechecks a (the batch holds a alone): it reads the installs of b and c
    assert task("a", ["a"]).details["outside"] == ["b", "c"]
    read = file_reads()
    assert read > 0
    # THEN a second task of the run at the same commit reads no file, and finds the same scope
    assert task("a", ["a"]).details["outside"] == ["b", "c"]
    assert file_reads() == read
    # WHEN a teammate gives c its own HelmRelease on main (a new commit)
    own = layouts.release("istiod", "istiod", OLD)
    rig.gitlab.push(PROJECT, "main", {"clusters/c/istio/kustomization.yaml": (
        "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - istiod.yaml\n"),
        "clusters/c/istio/istiod.yaml": own})
    # THEN the next task reads that commit (its changed files; the others' texts are kept by blob id): only b
    # shares the base now
    assert task("a", ["a"]).details["outside"] == ["b"]


def test_a_new_commit_reads_only_the_files_whose_content_changed(rig: Rig) -> None:
    # GIVEN three clusters with their own HelmRelease, read once at main's head
    files = {f"clusters/{c}/istio/helmrelease.yaml": layouts.release("istiod", "istiod", OLD).replace(
        "name: istiod", f"name: istiod-{c}") for c in ("x1", "x2", "x3")}
    rig.seed(files, {c: f"clusters/{c}/istio/helmrelease.yaml" for c in ("x1", "x2", "x3")})
    first = repo_files(rig.repo, PROJECT, "main")
    assert all(first.read(path) == text for path, text in files.items())

    def reads() -> list[str]:
        return [r.path for r in rig.gitlab.requests if "/repository/files/" in r.path]

    before = len(reads())
    # WHEN a commit changes x3's file only, and the next revision is read
    changed = files["clusters/x3/istio/helmrelease.yaml"].replace(OLD, NEW)
    rig.gitlab.push(PROJECT, "main", {"clusters/x3/istio/helmrelease.yaml": changed})
    second = repo_files(rig.repo, PROJECT, "main")
    # THEN every file reads as it is at that commit, and only x3's was fetched again (the others by blob id)
    assert second.read("clusters/x3/istio/helmrelease.yaml") == changed
    assert second.read("clusters/x1/istio/helmrelease.yaml") == files["clusters/x1/istio/helmrelease.yaml"]
    assert second.read("clusters/x2/istio/helmrelease.yaml") == files["clusters/x2/istio/helmrelease.yaml"]
    assert second.read("clusters/missing.yaml") is None
    assert reads()[before:] == [f"/api/v4/projects/{PROJECT}/repository/files/clusters/x3/istio/"
                                             "helmrelease.yaml"]
