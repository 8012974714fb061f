"""Where Istio's control plane lives and how its running version is read: written once here."""

from __future__ import annotations

from guard.ports import DeploymentInfo

ISTIO_NAMESPACE = "istio-system"
ISTIOD_NAME = "istiod"
ISTIOD_CONTAINER = "discovery"  # istiod's pilot-discovery container: its image tag is the control plane's version


def find_istiod(deployments: list[DeploymentInfo]) -> DeploymentInfo | None:
    """The istiod Deployment among `deployments`, if there is one."""
    return next((d for d in deployments if d.namespace == ISTIO_NAMESPACE and d.name == ISTIOD_NAME), None)


def control_plane_version(istiod: DeploymentInfo | None) -> str | None:
    """The version istiod runs, read from its discovery container's image tag."""
    return istiod.image_versions.get(ISTIOD_CONTAINER) if istiod else None
