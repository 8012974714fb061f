"""Contract tests: the adapter reads objects in the published shapes (tests/fixtures/kubernetes_shapes.py,
each naming its source), and the simulator answers in those same shapes.

The simulator is checked by the Kubernetes OpenAPI schemas (`kubernetes-validate`, pinned in
requirements.txt for tests) where they exist, and for Flux's HelmRelease by the field paths GUARD
reads in each served version.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from guard.adapters.kubernetes_api import _helm_release_status, _pdb_info, _pod_info

from sandbox.sims.kubernetes_sim import KubernetesSimulator, Workload
from tests.fixtures import kubernetes_shapes as shapes
from tests.support.clock import FakeClock
from tests.support.kubernetes import TOKEN

K8S_VERSION = "1.31.0"  # the schema set kubernetes-validate checks against (EKS 1.29-1.31 share these fields)


def answer(obj: shapes.Json) -> Any:
    """`obj` as the adapter reads it: the API's JSON answer, parsed (it reads no typed models)."""
    return json.loads(json.dumps(obj))


# ---------------------------------------------------------------- the adapter against published shapes


def test_a_native_sidecar_in_a_statefulset_pod_is_a_proxy_with_its_version_and_revision() -> None:
    # GIVEN a StatefulSet's pod whose istio-proxy is an init container with restartPolicy Always, tagged -debug
    pod = _pod_info(answer(shapes.STATEFULSET_POD_NATIVE_SIDECAR))
    # THEN it is injected, owned by the StatefulSet, on 1.24.2 (variant dropped), revision "stable"
    assert pod.injected and pod.owner == "StatefulSet/redis"
    assert (pod.proxy_version, pod.proxy_revision) == ("1.24.2", "stable")


def test_a_digest_only_proxy_is_injected_with_an_unknown_version() -> None:
    # GIVEN a pod whose istio-proxy image is pinned by digest only
    pod = _pod_info(answer(shapes.DIGEST_PINNED_POD))
    # THEN it is injected (never "not injected"), its version cannot be read, its revision can
    assert pod.injected and pod.proxy_version is None and pod.proxy_revision == "default"
    assert pod.owner == "Deployment/search"


def test_a_completed_job_pod_is_finished_and_owned_by_its_job() -> None:
    pod = _pod_info(answer(shapes.COMPLETED_JOB_POD))
    assert pod.finished and pod.owner == "Job/nightly-report-28978560" and pod.proxy_version == "1.23.4"


def test_pdb_match_expressions_are_evaluated() -> None:
    # GIVEN a PDB selecting app In (search, search-canary) and job-name DoesNotExist
    pdb = _pdb_info(answer(shapes.PDB_MATCH_EXPRESSIONS))
    assert pdb.selector is not None
    # THEN it covers the app's pods and the canary's, not a Job's pod nor another app
    assert pdb.selector.matches({"app": "search", "pod-template-hash": "x"})
    assert pdb.selector.matches({"app": "search-canary"})
    assert not pdb.selector.matches({"app": "search", "job-name": "reindex"})
    assert not pdb.selector.matches({"app": "cart"})


def test_an_empty_pdb_selector_covers_every_pod_and_one_replica_min_available_one_never_allows_disruption() -> None:
    pdb = _pdb_info(answer(shapes.PDB_EMPTY_SELECTOR_ONE_REPLICA))
    assert pdb.selector is not None and pdb.selector.matches({"app": "anything"})
    assert pdb.never_allows_disruption(replicas=1)
    assert not pdb.never_allows_disruption(replicas=2) or pdb.disruptions_allowed == 0


@pytest.mark.parametrize("fixture, version, ready, applied", [
    (shapes.HELMRELEASE_V2BETA1, "v2beta1", True, "1.24.2"),
    (shapes.HELMRELEASE_V2BETA2_REMEDIATED, "v2beta2", False, "1.24.2"),
])
def test_helm_release_status_is_read_from_each_versions_fields(fixture: shapes.Json, version: str, ready: bool,
                                                              applied: str) -> None:
    # GIVEN a HelmRelease as its version publishes it WHEN read
    status = _helm_release_status(fixture, "istio-system", "istiod", version)
    # THEN the running version comes from lastAppliedRevision (v2beta1) or the newest deployed snapshot
    # (v2beta2/v2: a remediated upgrade runs the previous chart, never the failed one attempted)
    assert (status.ready, status.last_applied_version, status.api_version) == (ready, applied, version)


def test_a_suspended_release_is_named_and_never_ready_and_an_oci_revision_loses_its_digest() -> None:
    status = _helm_release_status(shapes.HELMRELEASE_V2_SUSPENDED, "istio-system", "istiod", "v2")
    assert status.suspended and not status.ready and "spec.suspend: true" in status.message
    assert status.last_applied_version == "1.24.2"


def test_a_stalled_release_is_reported_stalled_with_its_reason() -> None:
    status = _helm_release_status(shapes.HELMRELEASE_V2_STALLED, "istio-system", "istiod", "v2")
    assert status.stalled and not status.ready and "Failed to upgrade after 3 attempt(s)" in status.message


# ---------------------------------------------------------------- the simulator against the same shapes


@pytest.fixture(scope="module")
def sim() -> Iterator[KubernetesSimulator]:
    with KubernetesSimulator(FakeClock(), pod_ready_seconds=5) as simulator:
        workloads = [Workload("shop", "cart", 2, pdb_selector="expressions", proxy_digest=True),
                     Workload("data", "redis", 3, kind="StatefulSet", native_sidecar=True, pdb_selector="empty"),
                     Workload("obs", "agent", kind="DaemonSet")]
        simulator.add_cluster("new", "1.24.2", workloads=workloads, istio_revision="stable", image_variant="debug")
        simulator.add_cluster("old", "1.24.2", helm_versions=["v2beta1"])
        simulator.add_cluster("mid", "1.24.2", helm_versions=["v2beta1", "v2beta2"])
        simulator.add_job("new", "shop", "nightly-report", completed=True)
        yield simulator


def get(sim: KubernetesSimulator, cluster: str, path: str) -> tuple[int, shapes.Json]:
    request = urllib.request.Request(sim.endpoint(cluster) + path, headers={"Authorization": f"Bearer {TOKEN}"})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


LISTS = [
    ("/api/v1/pods", "Pod", "v1"),
    ("/apis/apps/v1/deployments", "Deployment", "apps/v1"),
    ("/apis/apps/v1/statefulsets", "StatefulSet", "apps/v1"),
    ("/apis/apps/v1/daemonsets", "DaemonSet", "apps/v1"),
    ("/apis/policy/v1/poddisruptionbudgets", "PodDisruptionBudget", "policy/v1"),
    ("/api/v1/namespaces/istio-system/events", "Event", "v1"),
]


@pytest.mark.parametrize("path, kind, api_version", LISTS)
def test_simulator_objects_validate_against_the_kubernetes_openapi_schemas(
        sim: KubernetesSimulator, path: str, kind: str, api_version: str) -> None:
    validate = pytest.importorskip("kubernetes_validate")
    # GIVEN every object of a kind the simulator serves
    status, body = get(sim, "new", path)
    assert status == 200 and body["kind"] == f"{kind}List"
    # WHEN each is checked by the published schema of its kind THEN none is refused
    for item in body["items"]:
        validate.validate({"apiVersion": api_version, "kind": kind, **item}, K8S_VERSION, strict=True)


def test_simulator_serves_the_pod_fields_the_adapter_reads(sim: KubernetesSimulator) -> None:
    # GIVEN the pods of the varied cluster
    _, body = get(sim, "new", "/api/v1/pods")
    pods = body["items"]
    # THEN native sidecars are init containers with restartPolicy Always, a finished Job pod is Succeeded,
    # every pod names its controller, and images carry the variant or a digest
    native = [c for p in pods for c in p["spec"].get("initContainers", []) if c["name"] == "istio-proxy"]
    assert native and all(c["restartPolicy"] == "Always" for c in native)
    assert any(p["status"]["phase"] == "Succeeded" and p["metadata"]["ownerReferences"][0]["kind"] == "Job"
               for p in pods)
    assert all(ref["controller"] for p in pods for ref in p["metadata"]["ownerReferences"])
    proxies = {c["image"] for p in pods for c in [*p["spec"]["containers"], *p["spec"].get("initContainers", [])]
               if c["name"] == "istio-proxy"}
    assert any(i.endswith(":1.24.2-debug") for i in proxies) and any("@sha256:" in i for i in proxies)


def test_simulator_pdb_selectors_take_the_published_forms(sim: KubernetesSimulator) -> None:
    _, body = get(sim, "new", "/apis/policy/v1/poddisruptionbudgets")
    selectors = {b["metadata"]["name"]: b["spec"]["selector"] for b in body["items"]}
    assert selectors["redis"] == {}
    assert {e["operator"] for e in selectors["cart"]["matchExpressions"]} == {"In", "DoesNotExist"}


@pytest.mark.parametrize("cluster, served", [("new", ["v2beta1", "v2beta2", "v2"]), ("old", ["v2beta1"]),
                                             ("mid", ["v2beta1", "v2beta2"])])
def test_simulator_serves_helm_releases_only_at_served_versions_in_their_shapes(
        sim: KubernetesSimulator, cluster: str, served: list[str]) -> None:
    # GIVEN a cluster whose helm-controller serves `served` WHEN discovery is asked
    _, group = get(sim, cluster, "/apis/helm.toolkit.fluxcd.io")
    assert [v["version"] for v in group["versions"]] == served
    for version in ("v2beta1", "v2beta2", "v2"):
        status, obj = get(sim, cluster, f"/apis/helm.toolkit.fluxcd.io/{version}/namespaces/istio-system/"
                                        "helmreleases/istiod")
        if version not in served:
            # THEN an unserved version is refused as the API server refuses it
            assert status == 404 and obj["kind"] == "Status" and obj["reason"] == "NotFound"
            continue
        # THEN a served one carries the fields of the controller's own version at their paths
        assert status == 200 and obj["apiVersion"] == f"helm.toolkit.fluxcd.io/{version}"
        for path in shapes.HELMRELEASE_FIELDS[served[-1]]:
            node: Any = obj
            for key in path.split("."):
                assert key in node, f"{cluster} {version}: {path} missing"
                node = node[key]
        for cond in obj["status"]["conditions"]:
            assert set(shapes.CONDITION_FIELDS) <= set(cond)
        for entry in obj["status"].get("history", []):
            assert set(shapes.HISTORY_FIELDS) <= set(entry)
