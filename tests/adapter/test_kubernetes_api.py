"""KubernetesApi through the real kubernetes client against the local Kubernetes simulator."""

from __future__ import annotations

import base64
import socket
from collections.abc import Iterator
from datetime import UTC, datetime

import pytest
from guard.adapters.kubernetes_api import KubernetesApi, image_tag
from guard.errors import ExternalServiceError, RateLimited, TransientError
from guard.ports import KubernetesCluster
from guard.retry import RetryPolicy
from kubernetes import client as k8s

from sandbox.sims.kubernetes_sim import KubernetesSimulator, Workload
from tests.support.clock import FakeClock

START = datetime(2025, 3, 1, 9, 0, 0, tzinfo=UTC)
OLD, NEW = "1.20.3", "1.21.1"
# A token in the aws-iam-authenticator shape the simulator checks (it cannot verify signatures).
PRESIGNED = (
    "https://sts.us-east-1.amazonaws.com/?Action=GetCallerIdentity&Version=2011-06-15"
    "&X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-SignedHeaders=host%3Bx-k8s-aws-id&X-Amz-Signature=abc123"
)
TOKEN = "k8s-aws-v1." + base64.urlsafe_b64encode(PRESIGNED.encode()).decode().rstrip("=")
NO_WAIT = RetryPolicy(sleep=lambda _: None)  # the project's policy, without sleeping the test
WORKLOADS = [
    ("payments", "api", 3, True, True),
    ("payments", "worker", 2, True, False),
    ("batch", "cron-runner", 1, False, False),
]


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock(START)


@pytest.fixture
def sim(clock: FakeClock) -> Iterator[KubernetesSimulator]:
    with KubernetesSimulator(clock, pod_ready_seconds=5) as simulator:
        simulator.add_cluster("prod-use1", OLD, nodes=3, workloads=WORKLOADS)
        simulator.add_cluster("prod-euw1", OLD, nodes=2, workloads=[Workload("shop", "web", 2)])
        yield simulator


def connect(
    sim: KubernetesSimulator, cluster_id: str, token: str | None = TOKEN, page_size: int = 500
) -> KubernetesApi:
    configuration = k8s.Configuration(host=sim.endpoint(cluster_id), retries=0)
    if token is not None:
        configuration.api_key = {"authorization": token}
        configuration.api_key_prefix = {"authorization": "Bearer"}
    return KubernetesApi(k8s.ApiClient(configuration), request_timeout=5, page_size=page_size, retry=NO_WAIT)


@pytest.fixture
def api(sim: KubernetesSimulator) -> KubernetesApi:
    return connect(sim, "prod-use1")


def by_name(pods: list, prefix: str) -> list:
    return [p for p in pods if p.name.startswith(prefix)]


def test_adapter_satisfies_the_port(api: KubernetesApi) -> None:
    # GIVEN the adapter WHEN used where services expect the port THEN it type-checks and works
    port: KubernetesCluster = api
    assert len(port.list_nodes()) == 3


def test_reads_nodes_namespaces_and_injection_labels(api: KubernetesApi) -> None:
    # GIVEN a 3-node cluster with two app namespaces, one injected
    # WHEN listing nodes and namespaces
    nodes = api.list_nodes()
    namespaces = {ns.name: ns.labels for ns in api.list_namespaces()}

    # THEN every node is ready and only the injected namespace carries the injection label
    assert [n.ready for n in nodes] == [True, True, True]
    assert namespaces["payments"].get("istio-injection") == "enabled"
    assert "istio-injection" not in namespaces["batch"]
    assert {"istio-system", "kube-system", "flux-system"} <= set(namespaces)


def test_pods_carry_readiness_owner_and_proxy_version(api: KubernetesApi) -> None:
    # GIVEN injected and non-injected workloads WHEN listing pods of all namespaces
    pods = api.list_pods()

    # THEN injected pods report the sidecar version, owners resolve to their Deployment or DaemonSet
    payments_api = by_name(pods, "api-")
    assert len(payments_api) == 3
    assert {p.proxy_version for p in payments_api} == {OLD}
    assert {p.owner for p in payments_api} == {"Deployment/api"}
    assert all(p.ready and p.phase == "Running" and p.restarts == 0 for p in payments_api)
    cron = by_name(pods, "cron-runner-")
    assert [p.proxy_version for p in cron] == [None]
    assert {p.owner for p in by_name(pods, "aws-node-")} == {"DaemonSet/aws-node"}
    # AND a namespace filter returns only that namespace
    assert {p.namespace for p in api.list_pods("payments")} == {"payments"}


def test_deployments_and_pdbs(api: KubernetesApi) -> None:
    # GIVEN workloads, one with a PDB WHEN listing deployments and PDBs
    deployments = {(d.namespace, d.name): d for d in api.list_deployments()}
    pdbs = {(b.namespace, b.name): b for b in api.list_pdbs()}

    # THEN replica counts, container versions and selectors come back
    istiod = deployments[("istio-system", "istiod")]
    assert istiod.image_versions == {"discovery": OLD}
    assert (istiod.replicas, istiod.ready_replicas) == (2, 2)
    assert deployments[("payments", "api")].selector == {"app": "api"}
    # AND the PDBs that exist allow a disruption; the workload without one has none
    assert pdbs[("payments", "api")].max_unavailable == "1"
    assert pdbs[("payments", "api")].disruptions_allowed == 1
    assert pdbs[("istio-system", "istiod")].min_available == "1"
    assert ("payments", "worker") not in pdbs
    assert {d.namespace for d in api.list_deployments("payments")} == {"payments"}
    assert list(api.list_pdbs("batch")) == []


def test_lists_are_paged(sim: KubernetesSimulator) -> None:
    # GIVEN a page size smaller than the pod count
    api = connect(sim, "prod-use1", page_size=4)

    # WHEN listing pods THEN every pod arrives once, over several requests
    pods = api.list_pods()
    names = [p.name for p in pods]
    assert len(names) == len(set(names)) > 4
    pages = [r for r in sim.requests if r.path.endswith("/api/v1/pods")]
    assert len(pages) == -(-len(names) // 4)
    assert "continue=" in pages[-1].query


def test_helm_release_follows_flux_reconcile(sim: KubernetesSimulator, api: KubernetesApi, clock: FakeClock) -> None:
    # GIVEN a release at the old version
    before = api.get_helm_release("istio-system", "istiod")
    assert (before.ready, before.chart_version, before.last_applied_version) == (True, OLD, OLD)

    # WHEN Flux applies the new chart version, due to reconcile in 60 s
    sim.apply_chart_version("prod-use1", NEW, reconcile_after_seconds=60)
    pending = api.get_helm_release("istio-system", "istiod")

    # THEN the spec moved but the release is not ready at it yet (stale status is not readiness)
    assert (pending.ready, pending.chart_version, pending.last_applied_version) == (False, NEW, OLD)
    assert "not yet reconciled" in pending.message

    # WHEN the reconcile time passes THEN the release is Ready at the new version
    clock.advance(61)
    after = api.get_helm_release("istio-system", "istiod")
    assert (after.ready, after.chart_version, after.last_applied_version) == (True, NEW, NEW)
    # AND istiod rolls to the new image; once its new pods are ready the old ones are gone
    istiod = next(d for d in api.list_deployments("istio-system") if d.name == "istiod")
    assert istiod.image_versions == {"discovery": NEW}
    clock.advance(10)
    istiod_pods = [p for p in api.list_pods("istio-system") if p.owner == "Deployment/istiod"]
    assert len(istiod_pods) == 2 and all(p.ready for p in istiod_pods)
    # AND sidecars stay on the old version until their workloads restart
    assert {p.proxy_version for p in by_name(api.list_pods("payments"), "api-")} == {OLD}
    # AND the other cluster is untouched
    other = connect(sim, "prod-euw1").get_helm_release("istio-system", "istiod")
    assert other.last_applied_version == OLD


def test_restart_picks_up_the_new_proxy_version(
    sim: KubernetesSimulator, api: KubernetesApi, clock: FakeClock
) -> None:
    # GIVEN the control plane upgraded to the new version
    sim.apply_chart_version("prod-use1", NEW, reconcile_after_seconds=30)
    clock.advance(31)

    # WHEN the workload is restarted
    api.restart_deployment("payments", "api", at=clock.now())

    # THEN new pods come up at the new version, not ready at first, while the old ones keep serving
    during = by_name(api.list_pods("payments"), "api-")
    assert sorted(p.proxy_version or "" for p in during) == [OLD] * 3 + [NEW] * 3
    assert all(p.ready for p in during if p.proxy_version == OLD)
    assert not any(p.ready for p in during if p.proxy_version == NEW)
    # AND the patch used a strategic merge patch on the restartedAt annotation
    patch = next(r for r in sim.requests if r.method == "PATCH")
    assert patch.content_type == "application/strategic-merge-patch+json"
    assert patch.path.endswith("/apis/apps/v1/namespaces/payments/deployments/api")

    # WHEN the pods turn ready THEN only new-version pods remain
    clock.advance(6)
    after = by_name(api.list_pods("payments"), "api-")
    assert [(p.proxy_version, p.ready) for p in after] == [(NEW, True)] * 3
    # AND the untouched workload still runs the old proxy
    assert {p.proxy_version for p in by_name(api.list_pods("payments"), "worker-")} == {OLD}


def test_restart_with_the_same_timestamp_is_idempotent(
    sim: KubernetesSimulator, api: KubernetesApi, clock: FakeClock
) -> None:
    # GIVEN a restart already issued at time T
    at = clock.now()
    api.restart_deployment("payments", "worker", at=at)
    clock.advance(6)
    first = {p.name for p in by_name(api.list_pods("payments"), "worker-")}

    # WHEN a retried task issues it again with the same T THEN no second rollout happens
    api.restart_deployment("payments", "worker", at=at)
    assert {p.name for p in by_name(api.list_pods("payments"), "worker-")} == first


def test_faults_show_up_in_the_read_model(sim: KubernetesSimulator, api: KubernetesApi, clock: FakeClock) -> None:
    # GIVEN a NotReady node, a crash-looping workload and a removed PDB
    node = sim.node_names("prod-use1")[0]
    sim.set_node_ready("prod-use1", node, False)
    sim.crash_loop("prod-use1", "payments", "api-")
    sim.remove_pdb("prod-use1", "payments", "api")
    clock.advance(180)

    # WHEN reading the cluster
    nodes = {n.name: n.ready for n in api.list_nodes()}
    crashing = by_name(api.list_pods("payments"), "api-")

    # THEN the node is not ready, the pods crash-loop with restarts counted, the PDB is gone
    assert nodes[node] is False and sum(nodes.values()) == 2
    assert all(p.crash_looping and not p.ready for p in crashing)
    assert all(p.restarts >= 3 for p in crashing)
    assert ("payments", "api") not in {(b.namespace, b.name) for b in api.list_pdbs()}
    api_dep = next(d for d in api.list_deployments("payments") if d.name == "api")
    assert api_dep.ready_replicas == 0


def test_flux_stuck_does_not_reconcile_until_unstuck(
    sim: KubernetesSimulator, api: KubernetesApi, clock: FakeClock
) -> None:
    # GIVEN Flux cannot reconcile the release
    sim.set_flux_stuck("prod-use1")

    # WHEN a new chart version is applied and far more than the reconcile delay passes
    sim.apply_chart_version("prod-use1", NEW, reconcile_after_seconds=30)
    clock.advance(3600)
    status = api.get_helm_release("istio-system", "istiod")

    # THEN the release is not ready, still runs the old version, and says why
    assert (status.ready, status.chart_version, status.last_applied_version) == (False, NEW, OLD)
    assert "chart pull error" in status.message
    istiod = next(d for d in api.list_deployments("istio-system") if d.name == "istiod")
    assert istiod.image_versions == {"discovery": OLD}

    # WHEN the cause is fixed THEN the pending version reconciles
    sim.set_flux_stuck("prod-use1", False)
    clock.advance(1)
    status = api.get_helm_release("istio-system", "istiod")
    assert (status.ready, status.last_applied_version) == (True, NEW)


def test_unreachable_cluster_is_transient(sim: KubernetesSimulator, api: KubernetesApi) -> None:
    # GIVEN the API server answers 503 WHEN reading THEN a retryable TransientError is raised
    sim.set_unreachable("prod-use1", True)
    with pytest.raises(TransientError, match="503"):
        api.list_nodes()
    # AND reads work again once it recovers
    sim.set_unreachable("prod-use1", False)
    assert len(api.list_nodes()) == 3


def test_one_503_or_429_is_retried_before_anything_is_judged(sim: KubernetesSimulator) -> None:
    # GIVEN the API server answers the next pod list with 503, then the one after with 429
    sleeps: list[float] = []
    api = KubernetesApi(connect(sim, "prod-use1").api_client, request_timeout=5, retry=RetryPolicy(sleep=sleeps.append))
    sim.fail_next("prod-use1", r"^/api/v1/pods$", 503)
    sim.fail_next("prod-use1", r"^/api/v1/pods$", 429, retry_after=2)

    # WHEN GUARD lists pods
    pods = api.list_pods()

    # THEN the third attempt answered: one jittered backoff, then the wait the server asked for
    assert pods and sim.faults_left() == 0
    assert len(sleeps) == 2 and sleeps[1] == 2.0


def test_a_long_retry_after_is_raised_for_the_state_machine_to_wait_out(
        sim: KubernetesSimulator, api: KubernetesApi) -> None:
    # GIVEN an API server asking clients to come back in ten minutes
    sim.fail_next("prod-use1", r"^/api/v1/nodes$", 429, retry_after=600)

    # WHEN / THEN the error carries the wait (no Lambda sleeps through it)
    with pytest.raises(RateLimited) as raised:
        api.list_nodes()
    assert raised.value.retry_after_seconds == 600


def test_connection_refused_is_transient() -> None:
    # GIVEN a loopback port nobody listens on
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    configuration = k8s.Configuration(host=f"http://127.0.0.1:{port}", retries=0)
    api = KubernetesApi(k8s.ApiClient(configuration), request_timeout=2, retry=NO_WAIT)

    # WHEN reading THEN the failure is a TransientError chained to the transport error
    with pytest.raises(TransientError) as caught:
        api.list_nodes()
    assert caught.value.__cause__ is not None


def test_missing_token_is_refused(sim: KubernetesSimulator) -> None:
    # GIVEN a client without a bearer token WHEN reading THEN the 401 is not worth retrying
    api = connect(sim, "prod-use1", token=None)
    with pytest.raises(ExternalServiceError, match="401"):
        api.list_pods()


def test_token_that_is_not_an_eks_token_is_refused(sim: KubernetesSimulator) -> None:
    # GIVEN a bearer token that is not an aws-iam-authenticator token
    api = connect(sim, "prod-use1", token="k8s-aws-v1.bm90LWEtdXJs")
    # WHEN reading THEN access is refused
    with pytest.raises(ExternalServiceError, match="401"):
        api.list_nodes()


def test_missing_helm_release_names_the_object(api: KubernetesApi) -> None:
    # GIVEN no HelmRelease by that name WHEN reading it THEN the error names what was missing
    with pytest.raises(ExternalServiceError, match="HelmRelease istio-system/istio-base"):
        api.get_helm_release("istio-system", "istio-base")


def test_restarting_an_unknown_deployment_names_it(api: KubernetesApi, clock: FakeClock) -> None:
    # GIVEN no such deployment WHEN restarting it THEN the error names it
    with pytest.raises(ExternalServiceError, match="Deployment payments/nope"):
        api.restart_deployment("payments", "nope", at=clock.now())


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("docker.io/istio/proxyv2:1.21.1", "1.21.1"),
        ("registry.local:5000/istio/proxyv2:1.21.1-distroless", "1.21.1"),
        ("gcr.io/istio-release/proxyv2:1.20.3@sha256:" + "a" * 64, "1.20.3"),
        ("registry.local:5000/istio/proxyv2", None),
    ],
)
def test_image_tag(image: str, tag: str | None) -> None:
    # GIVEN an image reference WHEN reading its tag THEN registry ports and digests do not confuse it
    assert image_tag(image) == tag
