"""Istio ↔ Kubernetes compatibility: the table GUARD keeps, and the verdict for one pairing.

Source: istio.io "Supported Releases" → "Support status of Istio releases" (the page renders
istio/istio.io `data/compatibility/supportStatus.yml`). Each Istio minor lists the Kubernetes
minors it supports, and those it was "tested, but not supported" on. Update the rows and
`TABLE_UPDATED` together when Istio publishes a release (docs/compatibility.md).
"""

from __future__ import annotations

import re
from datetime import date
from enum import StrEnum

from guard.core.version import Version

TABLE_UPDATED = date(2026, 12, 1)
TABLE_SOURCE = "https://istio.io/latest/docs/releases/supported-releases/#support-status-of-istio-releases"


def _minors(first: int, last: int) -> tuple[int, ...]:
    return tuple(range(first, last + 1))


# Istio minor -> (supported Kubernetes 1.x minors, tested-but-not-supported 1.x minors).
ISTIO_KUBERNETES: dict[tuple[int, int], tuple[tuple[int, ...], tuple[int, ...]]] = {
    (1, 18): (_minors(24, 27), _minors(20, 23)),
    (1, 19): (_minors(25, 28), _minors(21, 24)),
    (1, 20): (_minors(25, 29), _minors(23, 24)),
    (1, 21): (_minors(26, 29), _minors(23, 25)),
    (1, 22): (_minors(27, 30), _minors(23, 26)),
    (1, 23): (_minors(27, 30), _minors(23, 26)),
    (1, 24): (_minors(28, 31), _minors(23, 27)),
    (1, 25): (_minors(29, 32), _minors(24, 28)),
    (1, 26): (_minors(29, 33), _minors(24, 28)),
    (1, 27): (_minors(29, 33), _minors(24, 28)),
    (1, 28): (_minors(30, 34), _minors(25, 29)),
    (1, 29): (_minors(31, 35), _minors(26, 30)),
    (1, 30): (_minors(32, 36), _minors(27, 31)),
}

# `v1.29.3-eks-1234567`, `1.29`, `v1.30.0+k3s1`: the major and minor are what the table speaks of.
_KUBE_VERSION = re.compile(r"^v?([0-9]+)\.([0-9]+)(?:[.+-].*)?$", re.ASCII)


class Support(StrEnum):
    SUPPORTED = "supported"
    TESTED = "tested"  # tested but not supported: warn
    UNSUPPORTED = "unsupported"
    UNKNOWN = "unknown"  # the Istio minor is not in the table: refuse until the table is updated


def kubernetes_minor(git_version: str) -> tuple[int, int]:
    """(major, minor) of a Kubernetes server version; ValueError naming it when it is not one."""
    match = _KUBE_VERSION.match(str(git_version).strip())
    if not match:
        raise ValueError(f"{git_version!r} is not a Kubernetes version (e.g. v1.29.3-eks-1234567)")
    return int(match.group(1)), int(match.group(2))


def support(istio: str, kubernetes: str) -> tuple[Support, str]:
    """How Istio `istio` (MAJOR.MINOR.PATCH) stands on Kubernetes `kubernetes`, and a sentence saying why."""
    target = Version.parse(istio)
    major, minor = kubernetes_minor(kubernetes)
    row = ISTIO_KUBERNETES.get((target.major, target.minor))
    where = f"(table of {TABLE_UPDATED.isoformat()}, {TABLE_SOURCE})"
    if row is None:
        return Support.UNKNOWN, (f"Istio {target.major}.{target.minor} is not in GUARD's compatibility table {where}; "
                                 "add its row (guard/core/compatibility.py, docs/compatibility.md)")
    supported, tested = row
    k8s = f"Kubernetes {major}.{minor}"
    ranges = f"supported {_span(supported)}, tested but not supported {_span(tested)}"
    if major == 1 and minor in supported:
        return Support.SUPPORTED, f"Istio {target.major}.{target.minor} supports {k8s} ({ranges}) {where}"
    if major == 1 and minor in tested:
        return Support.TESTED, (f"Istio {target.major}.{target.minor} was tested on {k8s} but does not support it "
                                f"({ranges}) {where}")
    return Support.UNSUPPORTED, f"Istio {target.major}.{target.minor} does not support {k8s} ({ranges}) {where}"


def _span(minors: tuple[int, ...]) -> str:
    return f"1.{minors[0]}–1.{minors[-1]}" if minors else "none"
