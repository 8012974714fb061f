"""Reading a cluster's whole Istio install from real repository layouts, and bumping it with a
versions-only diff."""

from __future__ import annotations

import pytest
from guard.checks.install import ambient_skew, crds_upgraded, kubernetes_compatible, upgrade_order
from guard.core.models import CheckStatus, Cluster
from guard.errors import ConfigError
from guard.gitops.istio_install import Files, apply_edits, plan_edits, read_install
from guard.services.install import planned_changes

from sandbox import layouts
from sandbox.world import HELM_REPOSITORY, HELM_REPOSITORY_PATH, HELMRELEASE

URL = "https://istio-release.storage.googleapis.com/charts"


def files_of(tree: dict[str, str]) -> Files:
    return Files(tree.get, lambda d: [p for p in tree if p.startswith(d.strip("/") + "/" if d else "")])


def changed_lines(before: str, after: str) -> list[tuple[str, str]]:
    """(old, new) of every changed line; asserts the diff changes lines one for one."""
    a, b = before.splitlines(), after.splitlines()
    assert len(a) == len(b)
    return [(x, y) for x, y in zip(a, b, strict=True) if x != y]


def assert_versions_only(before: dict[str, str], after: dict[str, str], old: str, new: str) -> int:
    """Every changed line differs from its old self by the version token only; returns how many changed."""
    count = 0
    for path, text in after.items():
        for x, y in changed_lines(before[path], text):
            assert y.replace(new, old) == x, f"{path}: {x!r} -> {y!r} changes more than the version"
            count += 1
    assert all(before[p] == after.get(p, before[p]) for p in before if p not in after)
    return count


def test_whole_ambient_install_is_found_in_order_and_bumped_versions_only() -> None:
    # GIVEN base, istiod, a gateway and (multi-document) cni + ztunnel, each in its own HelmRelease
    tree = layouts.whole_install("c1", "1.23.2", URL, ambient=True)
    files = files_of(tree)
    # WHEN the install is read
    install = read_install(files, "c1", "clusters/c1/istio/istiod.yaml")
    # THEN every component is there, in upgrade order, with its chart source
    assert [c.component for c in install.components] == ["base", "istiod", "cni", "ztunnel", "gateway"]
    assert all(c.source and c.source.kind == "helm" and c.source.url == URL for c in install.components)
    assert upgrade_order(install).status == CheckStatus.PASS
    assert crds_upgraded(install, "1.24.0").status == CheckStatus.PASS
    # AND bumping changes exactly five version lines, nothing else
    after = apply_edits(files, plan_edits({"c1": install}, {"c1": "1.24.0"}))
    assert assert_versions_only(tree, after, "1.23.2", "1.24.0") == 5
    assert "# bumped by GUARD" in after["clusters/c1/istio/base.yaml"]


def test_missing_depends_on_and_crds_policy_are_refused_with_what_to_add() -> None:
    # GIVEN istiod that does not wait for base, and a base chart keeping CRDs in crds/ (a 1.23 chart)
    tree = {"c/istiod.yaml": layouts.release("istiod", "istiod", "1.22.3"),
            "c/base.yaml": layouts.release("istio-base", "base", "1.22.3"),
            "c/src.yaml": layouts.HELM_REPO.format(url=URL)}
    install = read_install(files_of(tree), "c1", "c/istiod.yaml")
    # WHEN the order and CRD checks run for 1.23.0
    order, crds = upgrade_order(install), crds_upgraded(install, "1.23.0")
    # THEN both fail, saying what to add
    assert order.status == CheckStatus.FAIL and "dependsOn: [{name: istio-base" in order.message
    assert crds.status == CheckStatus.FAIL and "spec.upgrade.crds: CreateReplace" in crds.message


def test_postbuild_substitute_variable_is_bumped_in_the_cluster_kustomization() -> None:
    # GIVEN shared HelmReleases with ${istio_version}, set per cluster in postBuild.substitute
    tree = layouts.postbuild_fleet(["a", "b"], {"a": "1.22.3", "b": "1.22.3"}, URL)
    files = files_of(tree)
    installs = {c: read_install(files, c, f"clusters/{c}/istio.yaml") for c in ("a",)}
    # WHEN cluster a alone goes to 1.23.0
    edits = plan_edits(installs, {"a": "1.23.0"})
    after = apply_edits(files, edits)
    # THEN only a's variable line changes (the shared HelmReleases are untouched)
    assert list(after) == ["clusters/a/istio.yaml"]
    assert assert_versions_only(tree, after, "1.22.3", "1.23.0") == 1
    assert {c.component for c in installs["a"].components} == {"base", "istiod"}


def test_environment_configmap_variable_is_one_location_for_every_cluster() -> None:
    # GIVEN two clusters reading istio_version from one ConfigMap via substituteFrom
    tree = layouts.postbuild_fleet(["a", "b"], {"a": "1.22.3", "b": "1.22.3"}, URL, environment_map=True)
    files = files_of(tree)
    a = read_install(files, "a", "clusters/a/istio.yaml")
    b = read_install(files, "b", "clusters/b/istio.yaml")
    # THEN both resolve to the ConfigMap's data line
    assert {loc.path for loc in a.locations()} == {"environments/dev/istio-version.yaml"}
    assert a.locations() == b.locations()


def test_oci_chart_ref_is_bumped_in_the_oci_repository_ref() -> None:
    for semver in (False, True):
        # GIVEN istiod through chartRef to an OCIRepository pinned by tag (or semver)
        tree = layouts.oci_install("c1", "1.22.3", "127.0.0.1:5000", semver=semver)
        files = files_of(tree)
        install = read_install(files, "c1", "clusters/c1/istio/istiod.yaml")
        # WHEN bumped
        after = apply_edits(files, plan_edits({"c1": install}, {"c1": "1.23.0"}))
        # THEN only the ref line changed, and the source is the OCI repository
        assert assert_versions_only(tree, after, "1.22.3", "1.23.0") == 1
        source = install.components[0].source
        assert source is not None and (source.kind, source.url) == ("oci", "oci://127.0.0.1:5000/charts/istiod")
        assert ("semver" if semver else "tag") in install.components[0].location.field


def test_shared_base_locations_are_the_same_for_every_cluster() -> None:
    # GIVEN three clusters whose kustomization.yaml pull one base with a literal version
    tree = layouts.shared_base(["a", "b", "c"], "1.22.3", URL)
    files = files_of(tree)
    installs = {c: read_install(files, c, f"clusters/{c}/istio/kustomization.yaml") for c in "abc"}
    # THEN they share one location; two of them at different versions are refused
    assert len({loc.key for i in installs.values() for loc in i.locations()}) == 1
    with pytest.raises(ConfigError, match="shared by a"):
        plan_edits({"a": installs["a"], "b": installs["b"]}, {"a": "1.23.0", "b": "1.23.1"})


def test_a_variable_nobody_sets_and_no_istio_release_are_refused() -> None:
    tree = {"c/istiod.yaml": layouts.release("istiod", "istiod", "${istio_version}")}
    with pytest.raises(ConfigError, match="no Flux Kustomization"):
        read_install(files_of(tree), "c1", "c/istiod.yaml")
    with pytest.raises(ConfigError, match="no HelmRelease of an Istio chart"):
        read_install(files_of({"c/x.yaml": "kind: ConfigMap\napiVersion: v1\n"}), "c1", "c/x.yaml")


@pytest.mark.parametrize(("target", "kube", "status"), [
    ("1.20.0", "v1.29.3-eks-1234567", CheckStatus.PASS),
    ("1.24.1", "v1.27.9", CheckStatus.WARN),      # tested, not supported
    ("1.24.1", "v1.32.0", CheckStatus.FAIL),      # unsupported
    ("1.99.0", "v1.29.0", CheckStatus.FAIL),      # not in the table
    ("1.22.0", "garbage", CheckStatus.FAIL),
])
def test_kubernetes_compatibility_from_the_table(target: str, kube: str, status: CheckStatus) -> None:
    result = kubernetes_compatible("c1", target, kube)
    assert result.status == status
    assert "2026-12-01" in result.message or status == CheckStatus.FAIL


def test_diff_helper_catches_a_non_version_change() -> None:
    with pytest.raises(AssertionError):
        assert_versions_only({"f": "a: 1.0.0\nb: x\n"}, {"f": "a: 1.1.0\nb: y\n"}, "1.0.0", "1.1.0")


def test_a_flux_sync_kustomization_of_the_cluster_directory_reads_each_release_once() -> None:
    # GIVEN the cluster directory holds Flux's own sync Kustomization (path: the directory itself) and
    # a Kustomization applying shared HelmReleases with a postBuild variable
    tree = layouts.postbuild_fleet(["a"], {"a": "1.22.3"}, URL)
    tree["clusters/a/flux-system.yaml"] = (
        "apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n  name: flux-system\n"
        "  namespace: flux-system\nspec:\n  interval: 10m\n  path: ./clusters/a\n  prune: true\n"
        "  sourceRef:\n    kind: GitRepository\n    name: flux-system\n")
    # WHEN read THEN each chart is found once, its version in the cluster's postBuild variable
    install = read_install(files_of(tree), "a", "clusters/a/istio.yaml")
    assert [c.component for c in install.components] == ["base", "istiod"]
    assert {loc.path for loc in install.locations()} == {"clusters/a/istio.yaml"}


def test_a_substitution_default_nobody_overrides_is_bumped_in_place() -> None:
    # GIVEN version: "${istio_version:=1.22.3}" applied by a Kustomization whose postBuild sets other variables
    tree = layouts.postbuild_fleet(["a"], {"a": "1.22.3"}, URL)
    tree["infrastructure/istio/istiod.yaml"] = layouts.release("istiod", "istiod", "${istio_version:=1.22.3}",
                                                               depends=("istio-base",))
    tree["clusters/a/istio.yaml"] = tree["clusters/a/istio.yaml"].replace('      istio_version: "1.22.3"\n', "")
    tree["infrastructure/istio/base.yaml"] = layouts.release("istio-base", "base", "${istio_version:=1.22.3}",
                                                             extra=layouts.CRDS)
    files = files_of(tree)
    install = read_install(files, "a", "clusters/a/istio.yaml")
    # WHEN bumped THEN only the default's digits change, in both shared files
    after = apply_edits(files, plan_edits({"a": install}, {"a": "1.23.0"}))
    assert assert_versions_only(tree, after, "1.22.3", "1.23.0") == 2
    assert 'version: "${istio_version:=1.23.0}"' in after["infrastructure/istio/istiod.yaml"]


def test_ambient_data_plane_one_minor_behind_istiod_passes() -> None:
    # GIVEN an ambient install on 1.23.2 (ztunnel and cni wait for istiod)
    install = read_install(files_of(layouts.whole_install("c1", "1.23.2", URL, ambient=True)), "c1",
                           "clusters/c1/istio/istiod.yaml")
    # WHEN the skew check runs for the next minor, and for a patch
    # THEN it passes: ztunnel and cni trail istiod by one minor at most while istiod goes first
    assert ambient_skew(install, "1.24.0").status == CheckStatus.PASS
    assert ambient_skew(install, "1.23.5").status == CheckStatus.PASS


def test_ambient_data_plane_that_would_trail_two_minors_is_refused_naming_it() -> None:
    # GIVEN an ambient install on 1.22.3
    install = read_install(files_of(layouts.whole_install("c1", "1.22.3", URL, ambient=True)), "c1",
                           "clusters/c1/istio/istiod.yaml")
    # WHEN the target is two minors ahead
    result = ambient_skew(install, "1.24.0")
    # THEN it fails, naming ztunnel and cni, the skew and the rule
    assert result.status == CheckStatus.FAIL
    assert "ztunnel istio-system/ztunnel" in result.message and "cni istio-system/istio-cni" in result.message
    assert "by 2 minor versions" in result.message and "at most 1" in result.message


def test_ambient_data_plane_ahead_of_istiod_is_refused() -> None:
    # GIVEN ztunnel already on 1.24.1 while the target is 1.24.0
    tree = layouts.whole_install("c1", "1.24.0", URL, ambient=True)
    path = "clusters/c1/istio/ambient.yaml"
    second = tree[path].rfind('"1.24.0"')
    tree[path] = tree[path][:second] + '"1.24.1"' + tree[path][second + len('"1.24.0"'):]
    install = read_install(files_of(tree), "c1", "clusters/c1/istio/istiod.yaml")
    # WHEN the skew check runs
    result = ambient_skew(install, "1.24.0")
    # THEN ztunnel running ahead of the control plane is refused
    assert result.status == CheckStatus.FAIL and "ztunnel" in result.message and "ahead" in result.message


def test_ambient_data_plane_without_istiod_in_the_plan_is_refused() -> None:
    # GIVEN a Flux path with ztunnel and cni but no istiod (the control plane lives elsewhere)
    tree = layouts.whole_install("c1", "1.23.2", URL, ambient=True)
    only = {p: t for p, t in tree.items() if p.endswith(("ambient.yaml", "istio.yaml"))}
    install = read_install(files_of(only), "c1", "clusters/c1/istio/ambient.yaml")
    # WHEN the skew check runs
    result = ambient_skew(install, "1.24.0")
    # THEN GUARD refuses to move the data plane ahead of a control plane it does not upgrade
    assert result.status == CheckStatus.FAIL and "no istiod HelmRelease" in result.message


def test_a_sidecar_install_has_no_ambient_skew_to_check() -> None:
    install = read_install(files_of(layouts.whole_install("c1", "1.22.3", URL)), "c1", "clusters/c1/istio/istiod.yaml")
    assert ambient_skew(install, "1.24.0").status == CheckStatus.PASS


def test_a_per_cluster_version_map_gives_each_cluster_its_own_line() -> None:
    # GIVEN one ConfigMap with an istio_version_<cluster> line per cluster, on neighbouring lines
    clusters = ["eks-a", "eks-b", "eks-c"]
    tree = layouts.version_map_fleet(clusters, dict.fromkeys(clusters, "1.22.3"), URL)
    files = files_of(tree)
    installs = {c: read_install(files, c, f"clusters/{c}/istio.yaml") for c in clusters}
    # THEN each cluster's base and istiod resolve to its own line of the map, and no two clusters share one
    for c, install in installs.items():
        assert [(loc.path, loc.field.split(" (")[0]) for loc in install.locations()] == [
            (layouts.VERSION_MAP, f"ConfigMap flux-system/istio-versions data.{layouts.map_key(c)}")]
    assert len({loc.key for i in installs.values() for loc in i.locations()}) == 3
    # WHEN a batch of eks-a and eks-b goes to 1.23.0
    after = apply_edits(files, plan_edits({c: installs[c] for c in ("eks-a", "eks-b")},
                                          {"eks-a": "1.23.0", "eks-b": "1.23.0"}))
    # THEN exactly their two lines change, version token only; eks-c's neighbouring line is untouched
    assert list(after) == [layouts.VERSION_MAP]
    assert changed_lines(tree[layouts.VERSION_MAP], after[layouts.VERSION_MAP]) == [
        ('  istio_version_eks_a: "1.22.3"', '  istio_version_eks_a: "1.23.0"'),
        ('  istio_version_eks_b: "1.22.3"', '  istio_version_eks_b: "1.23.0"')]


def test_a_version_map_line_read_by_a_cluster_outside_the_batch_is_refused_naming_it() -> None:
    # GIVEN a version map where eks-c reads eks-a's line
    clusters = ["eks-a", "eks-b", "eks-c"]
    tree = layouts.version_map_fleet(clusters, dict.fromkeys(clusters, "1.22.3"), URL, share={"eks-c": "eks-a"})
    files = files_of(tree)
    fleet = [Cluster(cluster_id=c, batch_id="dev-1", environment="dev", region="us-east-1", gitlab_project="team/p",
                     flux_config_path=f"clusters/{c}/istio.yaml", current_istio_version="1.22.3") for c in clusters]
    installs = {"eks-a": read_install(files, "eks-a", "clusters/eks-a/istio.yaml")}
    # WHEN a batch of eks-a alone plans its change
    # THEN it is refused, listing eks-c and the line it shares
    with pytest.raises(ConfigError, match=r"outside the batch: eks-c \(clusters/istio-versions.yaml .*_eks_a"):
        planned_changes(files, installs, {"eks-a": "1.23.0"}, fleet, "team/p")
    # AND a batch holding both is not
    installs["eks-c"] = read_install(files, "eks-c", "clusters/eks-c/istio.yaml")
    edits = planned_changes(files, installs, {"eks-a": "1.23.0", "eks-c": "1.23.0"}, fleet, "team/p")
    assert len(edits) == 1


def test_a_shared_helm_repository_is_found_without_reading_every_clusters_files() -> None:
    # GIVEN a fleet repository: 300 clusters' HelmReleases under clusters/, the HelmRepository they all use in
    # infrastructure/sources/ (after clusters/ in name order), read through a reader that counts its reads
    tree = {f"clusters/eks-{i:03d}/istio.yaml": HELMRELEASE.format(cluster=f"eks-{i:03d}", version="1.19.3")
            for i in range(300)} | {HELM_REPOSITORY_PATH: HELM_REPOSITORY.format(url="https://charts.example")}
    reads: list[str] = []

    def read(path: str) -> str | None:
        reads.append(path)
        return tree.get(path)

    files = Files(read, lambda d: [p for p in tree if p.startswith(d.strip("/") + "/" if d else "")])
    # WHEN one cluster's install is read
    install = read_install(files, "eks-150", "clusters/eks-150/istio.yaml")
    # THEN its chart source is the shared HelmRepository, found after reading a handful of files, not 300
    assert [c.source.url for c in install.components if c.source] == ["https://charts.example"]
    assert len(reads) < 10, reads
