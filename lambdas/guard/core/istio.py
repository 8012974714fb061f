"""Where Istio's control plane lives and how its running version is read: written once here.

The istiod chart names its Deployment `istiod`, or `istiod-<revision>` when installed with a
revision, and labels it `app: istiod` and `istio.io/rev: <revision|default>`. Several may run
side by side during a canary (revision-based) upgrade; the one a HelmRelease manages carries
Flux's `helm.toolkit.fluxcd.io/name` label.
"""

from __future__ import annotations

from guard.ports import DeploymentInfo

ISTIO_NAMESPACE = "istio-system"
ISTIOD_NAME = "istiod"
ISTIOD_CONTAINER = "discovery"  # istiod's pilot-discovery container: its image tag is the control plane's version
REVISION_LABEL = "istio.io/rev"
FLUX_RELEASE_LABEL = "helm.toolkit.fluxcd.io/name"
# Recent charts label the Deployment with the chart's appVersion: the version when the image is digest-pinned.
APP_VERSION_LABEL = "app.kubernetes.io/version"


def is_istiod(d: DeploymentInfo) -> bool:
    """An istiod Deployment: in istio-system, labelled `app: istiod` or named `istiod` / `istiod-<rev>`."""
    return d.namespace == ISTIO_NAMESPACE and d.kind == "Deployment" and (
        d.labels.get("app") == ISTIOD_NAME or d.name == ISTIOD_NAME or d.name.startswith(f"{ISTIOD_NAME}-"))


def revision_of(istiod: DeploymentInfo) -> str:
    """The revision an istiod serves (`default` when unlabelled)."""
    return istiod.labels.get(REVISION_LABEL) or (
        istiod.name.removeprefix(f"{ISTIOD_NAME}-") if istiod.name != ISTIOD_NAME else "default")


def find_istiod(deployments: list[DeploymentInfo], release: str | None = None,
                revision: str | None = None) -> DeploymentInfo | None:
    """The istiod Deployment among `deployments`, if there is one.

    With several (a canary upgrade), the one Flux's HelmRelease `release` manages, else the one of
    `revision`, else the `default` revision; failing all of these, the newest by name.
    """
    found = sorted((d for d in deployments if is_istiod(d)), key=lambda d: d.name)
    if len(found) <= 1:
        return found[0] if found else None
    for pick in (
        lambda d: release is not None and d.labels.get(FLUX_RELEASE_LABEL) == release,
        lambda d: revision is not None and revision_of(d) == revision,
        lambda d: revision_of(d) == "default",
    ):
        chosen = [d for d in found if pick(d)]
        if len(chosen) == 1:
            return chosen[0]
    return found[-1]


def control_plane_version(istiod: DeploymentInfo | None) -> str | None:
    """The version istiod runs: its discovery container's image tag (variant dropped), or, for a
    digest-pinned image, the chart's `app.kubernetes.io/version` label."""
    if istiod is None:
        return None
    return istiod.image_versions.get(ISTIOD_CONTAINER) or istiod.labels.get(APP_VERSION_LABEL)


# ---------------------------------------------------------------- the rest of the install
# ztunnel's DaemonSet (ambient) is `ztunnel`, labelled `app: ztunnel`; the CNI node agent's is
# `istio-cni-node`, labelled `k8s-app: istio-cni-node`. Their images are tagged with the chart version.
ZTUNNEL = "ztunnel"
CNI_NODE = "istio-cni-node"
GATEWAY_NAMESPACES = ("istio-system", "istio-ingress", "istio-gateways")


def is_ztunnel(d: DeploymentInfo) -> bool:
    return d.kind == "DaemonSet" and (d.name == ZTUNNEL or d.labels.get("app") == ZTUNNEL)


def is_cni_node(d: DeploymentInfo) -> bool:
    return d.kind == "DaemonSet" and (d.name == CNI_NODE or d.labels.get("k8s-app") == CNI_NODE)


def is_gateway(d: DeploymentInfo) -> bool:
    """A gateway Deployment by the gateway chart's naming, in the usual namespaces (as the prechecks see them)."""
    return d.kind == "Deployment" and d.namespace in GATEWAY_NAMESPACES and "gateway" in d.name


def daemonset_version(d: DeploymentInfo) -> str | None:
    """The version a ztunnel / CNI DaemonSet runs: its one Istio image's tag (all containers agree), else the
    chart's `app.kubernetes.io/version` label."""
    tags = set(d.image_versions.values())
    return tags.pop() if len(tags) == 1 else d.labels.get(APP_VERSION_LABEL)


# ---------------------------------------------------------------- charts
# Upgrade order (Istio's Helm upgrade guide): CRDs + base, istiod, then ztunnel and cni, then gateways.
COMPONENT_RANK = {"base": 0, "istiod": 1, "cni": 2, "ztunnel": 2, "gateway": 3}
# Chart name -> component. The names Istio publishes, and the older `istio-*` spellings teams mirror.
CHARTS = {
    "base": "base", "istio-base": "base",
    "istiod": "istiod", "istio-discovery": "istiod",
    "cni": "cni", "istio-cni": "cni",
    "ztunnel": "ztunnel", "istio-ztunnel": "ztunnel",
    "gateway": "gateway", "istio-gateway": "gateway", "istio-ingress": "gateway", "istio-egress": "gateway",
}
