"""Repository layouts teams really keep an Istio install in: Kustomize overlays that patch the version,
components, Flux Kustomizations ordered by dependsOn, several clusters' files side by side, variables from a
configMapGenerator or a Secret, chartRef to a HelmChart, version ranges. GUARD finds where each version lives
and bumps exactly that text, or refuses naming the file and what it found."""

from __future__ import annotations

import pytest
from guard.checks.install import upgrade_order
from guard.core.models import CheckStatus
from guard.errors import ConfigError
from guard.gitops.istio_install import Files, Install, apply_edits, plan_edits, read_install

from sandbox import layouts

URL = "https://istio-release.storage.googleapis.com/charts"
OLD, NEW = "1.22.3", "1.23.0"
SOURCES = {"sources/istio.yaml": layouts.HELM_REPO.format(url=URL)}
KUSTOMIZE = "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"


def files_of(tree: dict[str, str]) -> Files:
    return Files(tree.get, lambda d: [p for p in tree if p.startswith(d.strip("/") + "/" if d else "")])


def bump(tree: dict[str, str], cluster: str, entry: str) -> tuple[Install, dict[str, str]]:
    """Read the cluster's install and bump it to NEW; returns the install and the changed files."""
    files = files_of(tree)
    install = read_install(files, cluster, entry)
    return install, apply_edits(files, plan_edits({cluster: install}, {cluster: NEW}))


def changed(before: dict[str, str], after: dict[str, str]) -> list[tuple[str, str, str]]:
    """(path, old line, new line) of every changed line; each differs from its old self by the version only."""
    lines = []
    for path, text in after.items():
        old, new = before[path].splitlines(), text.splitlines()
        assert len(old) == len(new), path
        for x, y in zip(old, new, strict=True):
            if x != y:
                assert y.replace(NEW, OLD) == x, f"{path}: {x!r} -> {y!r} changes more than the version"
                lines.append((path, x, y))
    return lines


def base(version: str = OLD) -> dict[str, str]:
    """A shared base: base + istiod HelmReleases with a literal version, and the chart source."""
    return {
        "base/istio/base.yaml": layouts.release("istio-base", "base", version, extra=layouts.CRDS),
        "base/istio/istiod.yaml": layouts.release("istiod", "istiod", version, depends=("istio-base",)),
        "base/istio/kustomization.yaml": KUSTOMIZE + "resources:\n  - base.yaml\n  - istiod.yaml\n"
                                         "  - ../../sources\n",
    } | SOURCES


SMP = ("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {name}\n"
       "  namespace: istio-system\nspec:\n  chart:\n    spec:\n      version: \"{version}\"  # this cluster's pin\n")


# ---------------------------------------------------------------- Kustomize overlays that patch the version

def test_an_overlay_patch_file_sets_the_version_and_is_what_gets_bumped() -> None:
    # GIVEN a shared base (at 1.0.0, never applied as is) and per-cluster overlays whose `patches` set the version
    tree = base("1.0.0")
    for cluster in ("eks-a", "eks-b"):
        tree[f"overlays/{cluster}/kustomization.yaml"] = (
            KUSTOMIZE + "resources:\n  - ../../base/istio\npatches:\n  - path: versions.yaml\n")
        tree[f"overlays/{cluster}/versions.yaml"] = (SMP.format(name="istio-base", version=OLD) + "---\n"
                                                     + SMP.format(name="istiod", version=OLD))
    # WHEN eks-a is read and bumped
    install, after = bump(tree, "eks-a", "overlays/eks-a/kustomization.yaml")
    # THEN both versions live in eks-a's patch file; only its two version lines change, the base and eks-b untouched
    assert {loc.path for loc in install.locations()} == {"overlays/eks-a/versions.yaml"}
    assert all("set by patches[0] of overlays/eks-a/kustomization.yaml" in loc.field for loc in install.locations())
    assert [p for p, _, _ in changed(tree, after)] == ["overlays/eks-a/versions.yaml"] * 2


def test_an_inline_strategic_merge_patch_with_a_target_is_bumped_inside_the_kustomization() -> None:
    # GIVEN an overlay whose kustomization.yaml patches istiod's version inline (`patch: |`), selected by target
    tree = base() | {"overlays/eks-a/kustomization.yaml": (
        KUSTOMIZE + "resources:\n  - ../../base/istio\npatches:\n  - target:\n      kind: HelmRelease\n"
        "      name: istio-(base|d)\n    patch: |\n      apiVersion: helm.toolkit.fluxcd.io/v2\n"
        "      kind: HelmRelease\n      metadata:\n        name: not-used\n      spec:\n        chart:\n"
        "          spec:\n            version: 1.22.3\n")}
    # WHEN read and bumped
    install, after = bump(tree, "eks-a", "overlays/eks-a/kustomization.yaml")
    # THEN the release the target selects (istio-base; `istiod` does not match istio-(base|d)) gets the inline value,
    # istiod keeps the base's; both lines change versions only
    where = {c.name: c.location.path for c in install.components}
    assert where == {"istio-base": "overlays/eks-a/kustomization.yaml", "istiod": "base/istio/istiod.yaml"}
    assert sorted(p for p, _, _ in changed(tree, after)) == ["base/istio/istiod.yaml",
                                                             "overlays/eks-a/kustomization.yaml"]
    assert "            version: 1.23.0\n" in after["overlays/eks-a/kustomization.yaml"]


def test_an_inline_json6902_patch_on_the_version_is_bumped() -> None:
    # GIVEN `patches` with a JSON6902 replace of /spec/chart/spec/version for istiod, inline
    tree = base() | {"overlays/eks-a/kustomization.yaml": (
        KUSTOMIZE + "resources:\n  - ../../base/istio\npatches:\n  - target:\n      kind: HelmRelease\n"
        "      name: istiod\n    patch: |-\n      - op: replace\n        path: /spec/chart/spec/version\n"
        "        value: \"1.22.3\"\n")}
    # WHEN read and bumped
    install, after = bump(tree, "eks-a", "overlays/eks-a/kustomization.yaml")
    # THEN istiod's version is the patch's value, bumped in place
    istiod = next(c for c in install.components if c.name == "istiod")
    assert istiod.location.path == "overlays/eks-a/kustomization.yaml" and istiod.location.current == OLD
    assert ('        value: "1.22.3"', '        value: "1.23.0"') in [(x, y) for _, x, y in changed(tree, after)]


def test_legacy_patches_strategic_merge_and_json6902_files_are_followed() -> None:
    # GIVEN patchesStrategicMerge (a file) for istio-base and patchesJson6902 (a file) for istiod
    tree = base() | {
        "overlays/eks-a/kustomization.yaml": (
            KUSTOMIZE + "resources:\n  - ../../base/istio\npatchesStrategicMerge:\n  - base-version.yaml\n"
            "patchesJson6902:\n  - target:\n      group: helm.toolkit.fluxcd.io\n      version: v2\n"
            "      kind: HelmRelease\n      name: istiod\n      namespace: istio-system\n    path: istiod.yaml\n"),
        "overlays/eks-a/base-version.yaml": SMP.format(name="istio-base", version=OLD),
        "overlays/eks-a/istiod.yaml": "- op: replace\n  path: /spec/chart/spec/version\n  value: 1.22.3  # pin\n",
    }
    # WHEN read and bumped
    install, after = bump(tree, "eks-a", "overlays/eks-a/kustomization.yaml")
    # THEN each version lives in its patch file
    assert {c.name: c.location.path for c in install.components} == {
        "istio-base": "overlays/eks-a/base-version.yaml", "istiod": "overlays/eks-a/istiod.yaml"}
    assert len(changed(tree, after)) == 2


def test_a_kustomize_component_that_patches_the_version_is_followed() -> None:
    # GIVEN an overlay pulling a component whose kustomization patches every Istio HelmRelease's version
    tree = base() | {
        "overlays/eks-a/kustomization.yaml": (KUSTOMIZE + "resources:\n  - ../../base/istio\n"
                                              "components:\n  - ../../components/istio-pin\n"),
        "components/istio-pin/kustomization.yaml": (
            "apiVersion: kustomize.config.k8s.io/v1alpha1\nkind: Component\npatches:\n  - path: pin.yaml\n"
            "    target:\n      kind: HelmRelease\n      labelSelector: app.kubernetes.io/part-of=istio\n"),
        "components/istio-pin/pin.yaml": SMP.format(name="any", version=OLD),
    }
    for name in ("base", "istiod"):
        path = f"base/istio/{name}.yaml"
        labelled = "  namespace: istio-system\n  labels:\n    app.kubernetes.io/part-of: istio\n"
        tree[path] = tree[path].replace("  namespace: istio-system\n", labelled, 1)
    # WHEN read and bumped
    install, after = bump(tree, "eks-a", "overlays/eks-a/kustomization.yaml")
    # THEN both releases take the component's one line, which is the one line bumped
    assert {loc.path for loc in install.locations()} == {"components/istio-pin/pin.yaml"}
    assert [p for p, _, _ in changed(tree, after)] == ["components/istio-pin/pin.yaml"]


def test_a_patch_that_removes_the_version_is_refused_naming_it() -> None:
    tree = base() | {"overlays/eks-a/kustomization.yaml": (
        KUSTOMIZE + "resources:\n  - ../../base/istio\npatches:\n  - target: {kind: HelmRelease, name: istiod}\n"
        "    patch: |-\n      - op: remove\n        path: /spec/chart/spec/version\n")}
    with pytest.raises(ConfigError, match=r"istiod.yaml.*changed by patches\[0\] of overlays/eks-a/kustomization.yaml"
                                          r" \(remove /spec/chart/spec/version\)"):
        read_install(files_of(tree), "eks-a", "overlays/eks-a/kustomization.yaml")


def test_an_inline_patch_in_a_quoted_string_is_refused_naming_the_file() -> None:
    tree = base() | {"overlays/eks-a/kustomization.yaml": (
        KUSTOMIZE + "resources:\n  - ../../base/istio\npatches:\n  - target: {kind: HelmRelease, name: istiod}\n"
        "    patch: '[{\"op\": \"replace\", \"path\": \"/spec/chart/spec/version\", \"value\": \"1.22.3\"}]'\n")}
    with pytest.raises(ConfigError, match=r"overlays/eks-a/kustomization.yaml: the inline patch at line 7 is not a "
                                          "literal block"):
        read_install(files_of(tree), "eks-a", "overlays/eks-a/kustomization.yaml")


def test_a_replacement_into_the_version_is_refused_naming_it() -> None:
    tree = base() | {"overlays/eks-a/kustomization.yaml": (
        KUSTOMIZE + "resources:\n  - ../../base/istio\n  - versions.yaml\nreplacements:\n  - source:\n"
        "      kind: ConfigMap\n      name: versions\n      fieldPath: data.istio\n    targets:\n"
        "      - select:\n          kind: HelmRelease\n        fieldPaths:\n          - spec.chart.spec.version\n"),
        "overlays/eks-a/versions.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: versions\n"
                                        "data:\n  istio: 1.22.3\n"}
    with pytest.raises(ConfigError, match=r"spec\.chart\.spec\.version is written by replacements\[0\] of "
                                          r"overlays/eks-a/kustomization\.yaml"):
        read_install(files_of(tree), "eks-a", "overlays/eks-a/kustomization.yaml")


# ---------------------------------------------------------------- Flux Kustomization ordering

def flux(name: str, path: str, *, depends: str = "", wait: bool = True, health: str = "") -> str:
    return ("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n"
            f"  name: {name}\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: {path}\n  prune: true\n"
            + ("  wait: true\n" if wait else "") + (f"  dependsOn:\n    - name: {depends}\n" if depends else "")
            + (f"  healthChecks:\n{health}" if health else "")
            + "  sourceRef:\n    kind: GitRepository\n    name: flux-system\n")


def kustomization_chain(wait: bool, health: str = "") -> dict[str, str]:
    """base, istiod and a gateway each applied by its own Flux Kustomization, chained by Kustomization dependsOn;
    the HelmReleases have no dependsOn of their own."""
    return {
        "clusters/eks-a/istio.yaml": (flux("istio-base", "./istio/base", wait=wait, health=health) + "---\n"
                                      + flux("istiod", "./istio/istiod", depends="istio-base", wait=wait) + "---\n"
                                      + flux("istio-gateway", "./istio/gateway", depends="istiod", wait=wait)),
        "istio/base/base.yaml": layouts.release("istio-base", "base", OLD, extra=layouts.CRDS),
        "istio/istiod/istiod.yaml": layouts.release("istiod", "istiod", OLD),
        "istio/gateway/gateway.yaml": layouts.release("istio-ingressgateway", "gateway", OLD),
    } | SOURCES


def test_flux_kustomizations_chained_by_depends_on_with_wait_order_the_upgrade() -> None:
    # GIVEN each chart in its own Flux Kustomization, each waiting (wait: true) and depending on the one before
    install = read_install(files_of(kustomization_chain(wait=True)), "eks-a", "clusters/eks-a/istio.yaml")
    # WHEN the order is checked
    result = upgrade_order(install)
    # THEN Flux's Kustomization dependsOn is the order: base -> istiod -> gateway
    assert result.status == CheckStatus.PASS, result.message
    assert [c.kustomization for c in install.components] == ["flux-system/istio-base", "flux-system/istiod",
                                                             "flux-system/istio-gateway"]


def test_kustomization_depends_on_without_wait_does_not_order_the_releases() -> None:
    # GIVEN the same chain but no `wait`: a Kustomization is Ready once applied, before its HelmRelease upgraded
    install = read_install(files_of(kustomization_chain(wait=False)), "eks-a", "clusters/eks-a/istio.yaml")
    result = upgrade_order(install)
    # THEN the order is refused, saying what to add
    assert result.status == CheckStatus.FAIL
    assert "make Flux Kustomization flux-system/istiod dependsOn flux-system/istio-base, which must have `wait: " \
           "true`" in result.message


def test_a_health_check_on_the_release_orders_like_wait() -> None:
    health = "    - apiVersion: helm.toolkit.fluxcd.io/v2\n      kind: HelmRelease\n      name: istio-base\n" \
             "      namespace: istio-system\n"
    tree = kustomization_chain(wait=False, health=health)
    tree["clusters/eks-a/istio.yaml"] = tree["clusters/eks-a/istio.yaml"].replace(
        "  name: istiod\n  namespace: flux-system\nspec:\n", "  name: istiod\n  namespace: flux-system\nspec:\n"
        "  wait: true\n", 1)
    install = read_install(files_of(tree), "eks-a", "clusters/eks-a/istio.yaml")
    assert upgrade_order(install).status == CheckStatus.PASS, upgrade_order(install).message


def test_kustomize_namespace_and_flux_target_namespace_place_the_releases() -> None:
    # GIVEN releases without metadata.namespace, put in istio-system by their kustomization's `namespace:`, and a
    # gateway whose Flux Kustomization's targetNamespace overrides the namespace it names
    def bare(name: str, chart: str, depends: tuple[str, ...] = ()) -> str:
        return layouts.release(name, chart, OLD, depends=depends).replace("  namespace: istio-system\n", "")
    tree = dict(SOURCES) | {
        "clusters/eks-a/istio.yaml": (flux("istio", "./istio/control") + "---\n"
                                      + flux("gateways", "./istio/gateways", depends="istio").replace(
                                          "  prune: true\n", "  prune: true\n  targetNamespace: istio-ingress\n")),
        "istio/control/kustomization.yaml": KUSTOMIZE + "namespace: istio-system\nresources:\n  - base.yaml\n"
                                                        "  - istiod.yaml\n",
        "istio/control/base.yaml": bare("istio-base", "base").replace("  interval: 10m\n", "  interval: 10m\n"
                                                                       "  upgrade:\n    crds: CreateReplace\n"),
        "istio/control/istiod.yaml": bare("istiod", "istiod", depends=("istio-base",)),
        "istio/gateways/gateway.yaml": layouts.release("ingress", "gateway", OLD, namespace="somewhere-else"),
    }
    # WHEN read
    install = read_install(files_of(tree), "eks-a", "clusters/eks-a/istio.yaml")
    # THEN the namespaces are the ones Flux applies, and istiod's dependsOn (no namespace) finds istio-base
    assert [c.ref for c in install.components] == ["istio-system/istio-base", "istio-system/istiod",
                                                   "istio-ingress/ingress"]
    assert upgrade_order(install).status == CheckStatus.PASS, upgrade_order(install).message


def test_a_flux_kustomization_applying_an_oci_artifact_is_not_read_from_this_repository() -> None:
    tree = dict(SOURCES) | {
        "clusters/eks-a/istio.yaml": (flux("istio", "./istio/eks-a") + "---\n" + flux("addons", "./istio").replace(
            "    kind: GitRepository\n    name: flux-system\n", "    kind: OCIRepository\n    name: addons\n")),
        "istio/eks-a/istiod.yaml": layouts.release("istiod", "istiod", OLD),
        "istio/gateway.yaml": layouts.release("istio-ingress", "gateway", OLD),  # same path, this repository
    }
    install = read_install(files_of(tree), "eks-a", "clusters/eks-a/istio.yaml")
    assert [c.name for c in install.components] == ["istiod"]
    assert install.remote == [
        "./istio of OCIRepository addons (Flux Kustomization addons in clusters/eks-a/istio.yaml)"]


# ---------------------------------------------------------------- files side by side, multi-document

def test_several_clusters_files_side_by_side_in_one_directory_are_kept_apart() -> None:
    # GIVEN one directory holding each cluster's whole install in one multi-document file, side by side
    def one_file(cluster: str) -> str:
        return (f"# {cluster}\n" + layouts.release("istio-base", "base", OLD, extra=layouts.CRDS) + "---\n"
                + layouts.release("istiod", "istiod", OLD, depends=("istio-base",)) + "---\n"
                + layouts.HELM_REPO.format(url=URL))
    tree = {f"clusters/dev/{c}.yaml": one_file(c) for c in ("eks-a", "eks-b", "eks-c")}
    # WHEN eks-b is read and bumped
    install, after = bump(tree, "eks-b", "clusters/dev/eks-b.yaml")
    # THEN only eks-b's file is its install and its only change; the others are named as skipped
    assert [c.component for c in install.components] == ["base", "istiod"]
    assert {loc.path for loc in install.locations()} == {"clusters/dev/eks-b.yaml"}
    assert install.skipped == ["clusters/dev/eks-a.yaml", "clusters/dev/eks-c.yaml"]
    assert [p for p, _, _ in changed(tree, after)] == ["clusters/dev/eks-b.yaml"] * 2


def test_clusters_files_of_each_chart_side_by_side_are_kept_apart_by_the_cluster_s_name() -> None:
    # GIVEN one directory with each cluster's base and istiod in files named after the cluster (eks-a2 too)
    tree = dict(SOURCES)
    for c in ("eks-a", "eks-a2", "eks-b"):
        tree[f"clusters/dev/{c}-base.yaml"] = layouts.release("istio-base", "base", OLD, extra=layouts.CRDS)
        tree[f"clusters/dev/{c}-istiod.yaml"] = layouts.release("istiod", "istiod", OLD, depends=("istio-base",))
    # WHEN eks-a is read from its istiod file
    install, after = bump(tree, "eks-a", "clusters/dev/eks-a-istiod.yaml")
    # THEN its own base file is taken (not eks-a2's nor eks-b's), the others are skipped
    assert {c.name: c.release_path for c in install.components} == {
        "istio-base": "clusters/dev/eks-a-base.yaml", "istiod": "clusters/dev/eks-a-istiod.yaml"}
    assert sorted(after) == ["clusters/dev/eks-a-base.yaml", "clusters/dev/eks-a-istiod.yaml"]
    assert len(install.skipped) == 4


@pytest.mark.parametrize("release_name", ["istiod", "istiod-{cluster}"])
def test_clusters_flux_kustomizations_side_by_side_are_kept_apart(release_name: str) -> None:
    # GIVEN one directory of per-cluster Flux Kustomization files (the same name on each cluster), each applying
    # its own cluster's directory, whose istiod HelmRelease has the same name or a per-cluster one
    tree = dict(SOURCES)
    for c in ("eks-a", "eks-b"):
        tree[f"fleet/{c}.yaml"] = flux("istio", f"./istio/{c}")
        tree[f"istio/{c}/istiod.yaml"] = layouts.release(release_name.format(cluster=c), "istiod", OLD)
    # WHEN eks-a is read
    install = read_install(files_of(tree), "eks-a", "fleet/eks-a.yaml")
    # THEN eks-b's Kustomization file is left out
    assert {loc.path for loc in install.locations()} == {"istio/eks-a/istiod.yaml"}
    assert install.skipped == ["fleet/eks-b.yaml"]


def test_a_flux_sync_beside_the_entry_that_applies_the_same_files_is_not_another_cluster() -> None:
    # GIVEN the cluster's flux-system sync (path: the cluster's own directory) beside its istio Kustomization
    tree = dict(SOURCES) | {"clusters/eks-a/istio.yaml": flux("istio", "./istio/eks-a"),
                            "clusters/eks-a/sync.yaml": flux("flux-system", "./clusters/eks-a"),
                            "istio/eks-a/istiod.yaml": layouts.release("istiod", "istiod", OLD)}
    install = read_install(files_of(tree), "eks-a", "clusters/eks-a/istio.yaml")
    assert install.skipped == [] and [c.name for c in install.components] == ["istiod"]


def test_an_oci_repository_pinned_by_digest_is_refused_and_semver_wins_over_tag() -> None:
    oci = layouts.oci_install("eks-a", OLD, "127.0.0.1:5000")
    path = "clusters/eks-a/istio/istiod.yaml"
    both = {path: oci[path].replace(f'    tag: "{OLD}"', f'    tag: "1.0.0"\n    semver: "{OLD}"')}
    install = read_install(files_of(both), "eks-a", path)
    assert "spec.ref.semver" in install.components[0].location.field
    digest = {path: oci[path].replace(f'    tag: "{OLD}"', '    digest: "sha256:' + "a" * 64 + '"')}
    with pytest.raises(ConfigError, match=r"spec\.ref\.digest pins the chart by digest"):
        read_install(files_of(digest), "eks-a", path)


# ---------------------------------------------------------------- variables

def postbuild(var_sources: str) -> dict[str, str]:
    return {
        "clusters/eks-a/istio.yaml": flux("istio", "./istio/app").replace(
            "  sourceRef:", f"  postBuild:\n    substituteFrom:\n{var_sources}  sourceRef:"),
        "istio/app/istiod.yaml": layouts.release("istiod", "istiod", "${istio_version}"),
    } | SOURCES


def shared_sync(patch: str) -> dict[str, str]:
    """One Flux Kustomization for every cluster (a placeholder istio_version) that each cluster's kustomization
    pulls and patches with its own postBuild."""
    return {
        "fleet/istio-sync/sync.yaml": flux("istio", "./infrastructure/istio").replace(
            "  sourceRef:", "  postBuild:\n    substitute:\n      istio_version: \"1.0.0\"\n  sourceRef:"),
        "fleet/istio-sync/kustomization.yaml": KUSTOMIZE + "resources:\n  - sync.yaml\n",
        "infrastructure/istio/base.yaml": layouts.release("istio-base", "base", "${istio_version}", extra=layouts.CRDS),
        "infrastructure/istio/istiod.yaml": layouts.release("istiod", "istiod", "${istio_version}",
                                                            depends=("istio-base",)),
        "clusters/eks-a/kustomization.yaml": KUSTOMIZE + "resources:\n  - ../../fleet/istio-sync\npatches:\n"
                                             + patch,
    } | SOURCES


@pytest.mark.parametrize("patch", [
    "  - target:\n      kind: Kustomization\n      name: istio\n    patch: |\n"
    "      apiVersion: kustomize.toolkit.fluxcd.io/v1\n      kind: Kustomization\n      metadata:\n"
    "        name: istio\n      spec:\n        postBuild:\n          substitute:\n"
    "            istio_version: \"1.22.3\"\n",
    "  - target:\n      kind: Kustomization\n      name: istio\n    patch: |\n"
    "      - op: add\n        path: /spec/postBuild/substitute/istio_version\n        value: \"1.22.3\"\n",
])
def test_a_cluster_s_patch_on_a_shared_flux_kustomization_s_postbuild_is_where_its_version_lives(patch: str) -> None:
    # GIVEN a Flux Kustomization shared by every cluster, which each cluster's kustomization patches with its
    # own postBuild.substitute.istio_version (strategic merge or JSON6902)
    tree = shared_sync(patch)
    # WHEN the cluster is read and bumped
    install, after = bump(tree, "eks-a", "clusters/eks-a/kustomization.yaml")
    # THEN both charts' version is the cluster's patched variable, bumped in its kustomization, not the placeholder
    assert {loc.path for loc in install.locations()} == {"clusters/eks-a/kustomization.yaml"}
    assert all("set by patches[0] of clusters/eks-a/kustomization.yaml" in loc.field for loc in install.locations())
    assert [p for p, _, _ in changed(tree, after)] == ["clusters/eks-a/kustomization.yaml"]


def test_a_cluster_s_patch_replacing_substitute_from_reads_its_own_config_map() -> None:
    tree = shared_sync("  - path: vars.yaml\n") | {
        "clusters/eks-a/vars.yaml": ("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\n"
                                     "metadata:\n  name: istio\nspec:\n  postBuild:\n    substituteFrom:\n"
                                     "      - kind: ConfigMap\n        name: eks-a-vars\n"),
        "clusters/eks-a/config.yaml": CONFIG_MAP.replace("cluster-vars", "eks-a-vars")}
    tree["fleet/istio-sync/sync.yaml"] = tree["fleet/istio-sync/sync.yaml"].replace(
        "    substitute:\n      istio_version: \"1.0.0\"\n", "    substituteFrom:\n      - kind: ConfigMap\n"
        "        name: placeholder\n")
    install, after = bump(tree, "eks-a", "clusters/eks-a/kustomization.yaml")
    assert {loc.path for loc in install.locations()} == {"clusters/eks-a/config.yaml"}
    assert len(changed(tree, after)) == 1


def test_a_variable_from_a_config_map_generator_literal_is_bumped_in_the_literal() -> None:
    tree = postbuild("      - kind: ConfigMap\n        name: cluster-vars\n") | {
        "clusters/eks-a/vars/kustomization.yaml": (
            KUSTOMIZE + "namespace: flux-system\ngeneratorOptions:\n  disableNameSuffixHash: true\n"
            "configMapGenerator:\n  - name: cluster-vars\n    literals:\n      - cluster_name=eks-a\n"
            "      - istio_version=1.22.3\n")}
    install, after = bump(tree, "eks-a", "clusters/eks-a/istio.yaml")
    assert install.components[0].location.path == "clusters/eks-a/vars/kustomization.yaml"
    assert [(x, y) for _, x, y in changed(tree, after)] == [("      - istio_version=1.22.3",
                                                             "      - istio_version=1.23.0")]


def test_a_variable_from_a_config_map_generator_env_file_is_bumped_in_the_file() -> None:
    tree = postbuild("      - kind: ConfigMap\n        name: cluster-vars\n") | {
        "clusters/eks-a/vars/kustomization.yaml": (
            KUSTOMIZE + "generatorOptions:\n  disableNameSuffixHash: true\n"
            "configMapGenerator:\n  - name: cluster-vars\n    namespace: flux-system\n    envs:\n      - vars.env\n"),
        "clusters/eks-a/vars/vars.env": "cluster_name=eks-a\nistio_version=1.22.3\nregion=us-east-1\n"}
    install, after = bump(tree, "eks-a", "clusters/eks-a/istio.yaml")
    assert install.components[0].location.path == "clusters/eks-a/vars/vars.env"
    assert after == {"clusters/eks-a/vars/vars.env": "cluster_name=eks-a\nistio_version=1.23.0\nregion=us-east-1\n"}


SECRET = ("apiVersion: v1\nkind: Secret\nmetadata:\n  name: cluster-secrets\n  namespace: flux-system\n"
          "stringData:\n  {key}: ENC[AES256_GCM,data:abc=,type:str]\n")
CONFIG_MAP = ("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: cluster-vars\n  namespace: flux-system\n"
              "data:\n  istio_version: \"1.22.3\"\n")


def test_a_version_from_a_secret_is_refused_saying_why() -> None:
    # GIVEN istio_version set by a (SOPS-encrypted) Secret that substituteFrom reads after a ConfigMap setting it too
    tree = postbuild("      - kind: ConfigMap\n        name: cluster-vars\n      - kind: Secret\n"
                     "        name: cluster-secrets\n") | {
        "clusters/eks-a/vars.yaml": CONFIG_MAP, "clusters/eks-a/secret.yaml": SECRET.format(key="istio_version")}
    # THEN the Secret (the later source wins, as in Flux) is named, and GUARD refuses to edit it
    with pytest.raises(ConfigError, match=r"istio_version comes from Secret flux-system/cluster-secrets "
                                          r"\(clusters/eks-a/secret.yaml\): GUARD does not edit Secrets"):
        read_install(files_of(tree), "eks-a", "clusters/eks-a/istio.yaml")


def test_a_version_nowhere_but_perhaps_in_a_secret_outside_the_repository_is_refused_saying_so() -> None:
    tree = postbuild("      - kind: Secret\n        name: cluster-secrets\n")
    with pytest.raises(ConfigError, match=r"perhaps in Secret flux-system/cluster-secrets, which is not in the "
                                          r"repository: GUARD does not edit Secrets"):
        read_install(files_of(tree), "eks-a", "clusters/eks-a/istio.yaml")


def test_a_secret_without_the_version_leaves_it_to_the_config_map() -> None:
    tree = postbuild("      - kind: Secret\n        name: cluster-secrets\n      - kind: ConfigMap\n"
                     "        name: cluster-vars\n") | {
        "clusters/eks-a/vars.yaml": CONFIG_MAP, "clusters/eks-a/secret.yaml": SECRET.format(key="db_password")}
    install, after = bump(tree, "eks-a", "clusters/eks-a/istio.yaml")
    assert install.components[0].location.path == "clusters/eks-a/vars.yaml" and len(changed(tree, after)) == 1


# ---------------------------------------------------------------- chart references and versions

HELM_CHART = ("apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\nmetadata:\n  name: istiod\n"
              "  namespace: istio-system\nspec:\n  interval: 10m\n  chart: istiod\n  version: \"{version}\"\n"
              "  sourceRef:\n    kind: HelmRepository\n    name: istio\n    namespace: flux-system\n")
CHART_REF = ("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: istiod\n"
             "  namespace: istio-system\nspec:\n  interval: 10m\n  chartRef:\n    kind: {kind}\n    name: istiod\n")


def test_a_chart_ref_to_a_helm_chart_is_bumped_in_the_helm_chart() -> None:
    tree = {"clusters/eks-a/istiod.yaml": HELM_CHART.format(version=OLD) + "---\n" + CHART_REF.format(kind="HelmChart")}
    tree |= SOURCES
    install, after = bump(tree, "eks-a", "clusters/eks-a/istiod.yaml")
    istiod = install.components[0]
    assert istiod.component == "istiod" and "HelmChart istio-system/istiod spec.version" in istiod.location.field
    assert istiod.source is not None and (istiod.source.kind, istiod.source.url) == ("helm", URL)
    assert len(changed(tree, after)) == 1


@pytest.mark.parametrize(("kind", "message"), [
    ("HelmChart", "spec.chartRef names HelmChart istio-system/istiod, which is not in the repository"),
    ("ExternalArtifact", "spec.chartRef to a ExternalArtifact istiod: GUARD bumps"),
])
def test_a_chart_ref_guard_cannot_follow_is_refused_naming_the_file(kind: str, message: str) -> None:
    tree = {"clusters/eks-a/istiod.yaml": CHART_REF.format(kind=kind)}
    with pytest.raises(ConfigError, match=rf"clusters/eks-a/istiod.yaml \(HelmRelease istiod\): {message}"):
        read_install(files_of(tree), "eks-a", "clusters/eks-a/istiod.yaml")


@pytest.mark.parametrize("version", ["1.22.x", ">=1.22.0 <1.23.0", "~1.22.0"])
def test_a_version_range_is_refused_naming_the_file(version: str) -> None:
    tree = {"clusters/eks-a/istiod.yaml": layouts.release("istiod", "istiod", version)} | SOURCES
    with pytest.raises(ConfigError, match=r"clusters/eks-a/istiod.yaml: HelmRelease istio-system/istiod "
                                          "spec.chart.spec.version is .* not one exact version"):
        read_install(files_of(tree), "eks-a", "clusters/eks-a/istiod.yaml")
    oci = layouts.oci_install("eks-a", OLD, "127.0.0.1:5000", semver=True)
    oci = {p: t.replace(f'semver: "{OLD}"', f'semver: "{version}"') for p, t in oci.items()}
    with pytest.raises(ConfigError, match=r"spec\.ref\.semver is .* not one exact version"):
        read_install(files_of(oci), "eks-a", "clusters/eks-a/istio/istiod.yaml")


def test_a_flux_config_path_naming_the_cluster_s_directory_reads_it_all() -> None:
    tree = layouts.whole_install("eks-a", OLD, URL)
    for entry in ("clusters/eks-a/istio", "clusters/eks-a/istio/"):
        install = read_install(files_of(tree), "eks-a", entry)
        assert [c.component for c in install.components] == ["base", "istiod", "gateway"]
    with pytest.raises(ConfigError, match="clusters/eks-z/istio does not exist in the repository"):
        read_install(files_of(tree), "eks-z", "clusters/eks-z/istio")


def test_one_multi_document_file_with_sources_and_every_chart() -> None:
    tree = {"clusters/eks-a/istio.yaml": "---\n".join([
        layouts.HELM_REPO.format(url=URL), layouts.release("istio-base", "base", OLD, extra=layouts.CRDS),
        layouts.release("istiod", "istiod", OLD, depends=("istio-base",)),
        layouts.release("istio-ingress", "gateway", OLD, namespace="istio-ingress", depends=("istiod",)).replace(
            "    - name: istiod\n", "    - name: istiod\n      namespace: istio-system\n")])}
    install, after = bump(tree, "eks-a", "clusters/eks-a/istio.yaml")
    assert [c.component for c in install.components] == ["base", "istiod", "gateway"]
    assert upgrade_order(install).status == CheckStatus.PASS, upgrade_order(install).message
    assert len(changed(tree, after)) == 3
