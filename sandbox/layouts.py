"""Repository layouts teams keep an Istio install in, as {path: text}: used by the layout tests and
the rehearsal's scenarios (`layout:` in a scenario's fleet entry)."""

from __future__ import annotations

HELM_REPO = """\
apiVersion: source.toolkit.fluxcd.io/v1
kind: HelmRepository
metadata:
  name: istio
  namespace: flux-system
spec:
  interval: 1h
  url: {url}
"""


def release(name: str, chart: str, version: str, *, namespace: str = "istio-system", depends: tuple[str, ...] = (),
            extra: str = "", comment: str = "") -> str:
    """One HelmRelease document of an Istio chart from the `istio` HelmRepository."""
    deps = "".join(f"    - name: {d}\n" for d in depends)
    return (f"# {comment or chart}\n"
            "apiVersion: helm.toolkit.fluxcd.io/v2\n"
            "kind: HelmRelease\n"
            "metadata:\n"
            f"  name: {name}\n"
            f"  namespace: {namespace}\n"
            "spec:\n"
            "  interval: 10m\n"
            + (f"  dependsOn:\n{deps}" if deps else "")
            + "  chart:\n"
            "    spec:\n"
            f"      chart: {chart}\n"
            f"      version: \"{version}\"   # bumped by GUARD\n"
            "      sourceRef:\n"
            "        kind: HelmRepository\n"
            "        name: istio\n"
            "        namespace: flux-system\n"
            + extra)


CRDS = "  upgrade:\n    crds: CreateReplace\n"


def whole_install(cluster: str, version: str, url: str, ambient: bool = False) -> dict[str, str]:
    """base, istiod, (ambient) cni + ztunnel, and a gateway: one file per chart plus a multi-document one."""
    gateway_deps = ("istiod", "istio-cni", "ztunnel") if ambient else ("istiod",)
    files = {
        f"clusters/{cluster}/istio/base.yaml": release("istio-base", "base", version, extra=CRDS),
        f"clusters/{cluster}/istio/istiod.yaml": release("istiod", "istiod", version, depends=("istio-base",)),
        f"clusters/{cluster}/istio/gateway.yaml": release("istio-ingressgateway", "gateway", version,
                                                           namespace="istio-system", depends=gateway_deps),
        f"clusters/{cluster}/sources/istio.yaml": HELM_REPO.format(url=url),
    }
    if ambient:
        files[f"clusters/{cluster}/istio/ambient.yaml"] = (
            release("istio-cni", "cni", version, depends=("istiod",)) + "---\n"
            + release("ztunnel", "ztunnel", version, depends=("istiod",)))
    return files


def postbuild_fleet(clusters: list[str], versions: dict[str, str], url: str, *,
                    environment_map: bool = False) -> dict[str, str]:
    """Shared HelmReleases in infrastructure/istio with `${istio_version}`; each cluster's Flux Kustomization
    sets it in postBuild.substitute, or (`environment_map`) reads it from one ConfigMap for the environment."""
    files = {
        "infrastructure/istio/base.yaml": release("istio-base", "base", "${istio_version}", extra=CRDS),
        "infrastructure/istio/istiod.yaml": release("istiod", "istiod", "${istio_version}", depends=("istio-base",)),
        "infrastructure/istio/kustomization.yaml": ("apiVersion: kustomize.config.k8s.io/v1beta1\n"
                                                    "kind: Kustomization\nresources:\n  - base.yaml\n"
                                                    "  - istiod.yaml\n  - ../sources\n"),
        "infrastructure/sources/istio.yaml": HELM_REPO.format(url=url),
    }
    if environment_map:
        files["environments/dev/istio-version.yaml"] = (
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio-version\n  namespace: flux-system\n"
            "data:\n  # one version for the whole dev environment\n"
            f"  istio_version: \"{next(iter(versions.values()))}\"\n")
    for cluster in clusters:
        post = ("    substituteFrom:\n      - kind: ConfigMap\n        name: istio-version\n" if environment_map
                else f"    substitute:\n      cluster_name: {cluster}\n      istio_version: \"{versions[cluster]}\"\n")
        files[f"clusters/{cluster}/istio.yaml"] = (
            f"# Istio for {cluster}\n"
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\n"
            "kind: Kustomization\n"
            "metadata:\n  name: istio\n  namespace: flux-system\n"
            "spec:\n  interval: 10m\n  path: ./infrastructure/istio\n  prune: true\n"
            "  sourceRef:\n    kind: GitRepository\n    name: flux-system\n"
            "  postBuild:\n" + post)
    return files


VERSION_MAP = "clusters/istio-versions.yaml"


def map_key(cluster: str) -> str:
    """A cluster's variable in the version map (Flux variable names: letters, digits and `_`)."""
    return "istio_version_" + "".join(ch if ch.isalnum() else "_" for ch in cluster)


def version_map_fleet(clusters: list[str], versions: dict[str, str], url: str, *,
                      share: dict[str, str] | None = None) -> dict[str, str]:
    """One per-cluster version map for the fleet: a ConfigMap in clusters/ with one `istio_version_<cluster>` line
    per cluster, neighbouring lines. Each cluster's Flux Kustomization applies its own HelmReleases
    (`${istio_version_<cluster>}`) with `substituteFrom` that ConfigMap. `share` maps a cluster to another whose
    line it reads (one line serving several clusters)."""
    share = share or {}
    own = [c for c in clusters if c not in share]
    files = {
        VERSION_MAP: ("# Every cluster's Istio chart version, one line per cluster (applied to every cluster by its\n"
                      "# flux-system Kustomization; each cluster's istio Kustomization substitutes its own line).\n"
                      "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio-versions\n"
                      "  namespace: flux-system\ndata:\n"
                      + "".join(f"  {map_key(c)}: \"{versions[c]}\"\n" for c in own)),
        "fleet/sources/istio.yaml": HELM_REPO.format(url=url),
    }
    for cluster in clusters:
        var = "${" + map_key(share.get(cluster, cluster)) + "}"
        files[f"clusters/{cluster}/istio.yaml"] = (
            f"# Istio for {cluster}\n"
            "apiVersion: kustomize.toolkit.fluxcd.io/v1\n"
            "kind: Kustomization\n"
            "metadata:\n  name: istio\n  namespace: flux-system\n"
            f"spec:\n  interval: 10m\n  path: ./istio/{cluster}\n  prune: true\n"
            "  sourceRef:\n    kind: GitRepository\n    name: flux-system\n"
            "  postBuild:\n    substituteFrom:\n      - kind: ConfigMap\n        name: istio-versions\n")
        files[f"istio/{cluster}/base.yaml"] = release("istio-base", "base", var, extra=CRDS)
        files[f"istio/{cluster}/istiod.yaml"] = release("istiod", "istiod", var, depends=("istio-base",))
    return files


OVERLAY_BASE = "base/istio-overlay"


def overlay(cluster: str, version: str) -> dict[str, str]:
    """A Kustomize overlay per cluster over one base (base, istiod, a gateway, all at 1.0.0, never applied as
    is): the overlay's `patches` set each chart's version, a strategic-merge file for base and istiod and an
    inline JSON6902 patch for the gateway."""
    smp = ("apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\nmetadata:\n  name: {name}\n"
           "  namespace: istio-system\nspec:\n  chart:\n    spec:\n      version: \"{version}\"\n")
    return {
        f"{OVERLAY_BASE}/base.yaml": release("istio-base", "base", "1.0.0", extra=CRDS),
        f"{OVERLAY_BASE}/istiod.yaml": release("istiod", "istiod", "1.0.0", depends=("istio-base",)),
        f"{OVERLAY_BASE}/gateway.yaml": release("istio-ingressgateway", "gateway", "1.0.0", depends=("istiod",)),
        f"{OVERLAY_BASE}/kustomization.yaml": ("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                                               "resources:\n  - base.yaml\n  - istiod.yaml\n  - gateway.yaml\n"),
        f"clusters/{cluster}/istio/kustomization.yaml": (
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            f"resources:\n  - ../../../{OVERLAY_BASE}\n"
            "patches:\n  - path: versions.yaml\n"
            "  - target:\n      kind: HelmRelease\n      name: istio-ingressgateway\n    patch: |-\n"
            "      - op: replace\n        path: /spec/chart/spec/version\n"
            f"        value: \"{version}\"  # the gateway follows istiod\n"),
        f"clusters/{cluster}/istio/versions.yaml": (smp.format(name="istio-base", version=version) + "---\n"
                                                    + smp.format(name="istiod", version=version)),
    }


def flux_chain(cluster: str, version: str) -> dict[str, str]:
    """Each chart applied by its own Flux Kustomization (`wait: true`), ordered by the Kustomizations' dependsOn;
    the HelmReleases have no dependsOn of their own. istiod comes through spec.chartRef to a HelmChart whose
    spec.version pins the chart."""
    def kustomization(name: str, path: str, depends: str = "") -> str:
        return ("apiVersion: kustomize.toolkit.fluxcd.io/v1\nkind: Kustomization\nmetadata:\n"
                f"  name: {name}\n  namespace: flux-system\nspec:\n  interval: 10m\n  path: {path}\n"
                "  prune: true\n  wait: true\n  timeout: 10m\n"
                + (f"  dependsOn:\n    - name: {depends}\n" if depends else "")
                + "  sourceRef:\n    kind: GitRepository\n    name: flux-system\n")
    root = f"clusters/{cluster}/istio"
    return {
        f"{root}/flux.yaml": "---\n".join([
            kustomization("istio-base", f"./{root}/base"),
            kustomization("istiod", f"./{root}/istiod", depends="istio-base"),
            kustomization("istio-gateways", f"./{root}/gateways", depends="istiod")]),
        f"{root}/base/release.yaml": release("istio-base", "base", version, extra=CRDS),
        f"{root}/istiod/release.yaml": (
            "apiVersion: source.toolkit.fluxcd.io/v1\nkind: HelmChart\n"
            "metadata:\n  name: istiod\n  namespace: istio-system\n"
            "spec:\n  interval: 10m\n  chart: istiod\n"
            f"  version: \"{version}\"  # the chart version\n"
            "  sourceRef:\n    kind: HelmRepository\n    name: istio\n    namespace: flux-system\n"
            "---\n"
            "apiVersion: helm.toolkit.fluxcd.io/v2\nkind: HelmRelease\n"
            "metadata:\n  name: istiod\n  namespace: istio-system\n"
            "spec:\n  interval: 10m\n  chartRef:\n    kind: HelmChart\n    name: istiod\n"
            "    namespace: istio-system\n"),
        f"{root}/gateways/release.yaml": release("istio-ingressgateway", "gateway", version),
    }


def oci_install(cluster: str, version: str, registry: str, *, semver: bool = False) -> dict[str, str]:
    """istiod through spec.chartRef to an OCIRepository whose ref pins the chart version."""
    ref = f"semver: \"{version}\"" if semver else f"tag: \"{version}\""
    return {f"clusters/{cluster}/istio/istiod.yaml": (
        "apiVersion: source.toolkit.fluxcd.io/v1beta2\n"
        "kind: OCIRepository\n"
        "metadata:\n  name: istiod\n  namespace: istio-system\n"
        "spec:\n  interval: 10m\n"
        f"  url: oci://{registry}/charts/istiod\n"
        "  insecure: true\n"
        "  layerSelector:\n    mediaType: application/vnd.cncf.helm.chart.content.v1.tar+gzip\n"
        "    operation: copy\n"
        f"  ref:\n    {ref}  # the chart version\n"
        "---\n"
        "apiVersion: helm.toolkit.fluxcd.io/v2\n"
        "kind: HelmRelease\n"
        "metadata:\n  name: istiod\n  namespace: istio-system\n"
        "spec:\n  interval: 10m\n"
        "  chartRef:\n    kind: OCIRepository\n    name: istiod\n")}


def shared_base(clusters: list[str], version: str, url: str) -> dict[str, str]:
    """Every cluster's kustomization.yaml pulls one base whose HelmReleases carry the version literally."""
    files = {
        "base/istio/istiod.yaml": release("istiod", "istiod", version),
        "base/istio/kustomization.yaml": ("apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
                                          "resources:\n  - istiod.yaml\n"),
        "base/sources/istio.yaml": HELM_REPO.format(url=url),
    }
    for cluster in clusters:
        files[f"clusters/{cluster}/istio/kustomization.yaml"] = (
            "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\n"
            "resources:\n  - ../../../base/istio\n  - ../../../base/sources\n")
    return files
