"""Evidence through the real kubernetes client against a tiny local stub of the two new API reads
(events, pod log), then the analysis task with the real openai SDK against the LLM simulator.

The stub serves exactly what the Kubernetes simulator must add for evidence:
  GET /api/v1/namespaces/{ns}/events                        -> v1 EventList
  GET /api/v1/namespaces/{ns}/pods/{pod}/log?container=&tailLines=&limitBytes= -> text/plain
plus GET /api/v1/pods (already served by the simulator) for pod statuses.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from guard.adapters.kubernetes_api import KubernetesApi, KubernetesEvidence
from guard.core.models import Cluster
from guard.core.run import ClusterVerdict, VerdictOutcome
from guard.errors import TransientError
from guard.llm.factory import build_analyst
from guard.redact import redact
from guard.services.analysis import AnalysisService
from guard.services.evidence import EvidenceService
from kubernetes import client as k8s

from sandbox.sims.llm_sim import LlmSimulator
from tests.adapter.failure_world import RUN_ID, World, opened

LOG = "\n".join(f"2025-03-01T09:00:{i:02d}Z info ads XDS: Pushing:{i} Services:42" for i in range(30))
# Built at run time so no secret scanner mistakes this fake for a committed token.
FAKE_TOKEN = "glpat" + "-AbCdEfGhIjKlMnOpQrSt"
LOG += f"\n2025-03-01T09:00:31Z warn token={FAKE_TOKEN} rejected"


def _pod(ns: str, name: str, ready: bool, restarts: int = 0, waiting: str | None = None) -> dict[str, Any]:
    state = {"waiting": {"reason": waiting}} if waiting else {"running": {}}
    return {"metadata": {"namespace": ns, "name": name, "labels": {"app": name.split("-")[0]}},
            "spec": {"containers": [{"name": "main", "image": "x:1"}]},
            "status": {"phase": "Running", "conditions": [{"type": "Ready", "status": str(ready)}],
                       "containerStatuses": [{"name": "main", "ready": ready, "restartCount": restarts,
                                              "image": "x:1", "imageID": "", "state": state}]}}


class KubeStub:
    """Plays the events and pod-log reads; records each request's path and query."""

    def __init__(self) -> None:
        self.requests: list[tuple[str, dict[str, list[str]]]] = []
        self.fail_events = False
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urlsplit(self.path)
                stub.requests.append((url.path, parse_qs(url.query)))
                status, ctype, body = stub.answer(url.path)
                self.send_response(status)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    def answer(self, path: str) -> tuple[int, str, bytes]:
        if path == "/api/v1/pods":
            pods = [_pod("istio-system", "istiod-7d9f-a", True), _pod("istio-system", "istiod-7d9f-b", False, 4),
                    _pod("payments", "api-5c-x", False, 7, "CrashLoopBackOff"), _pod("payments", "api-5c-y", True)]
            return 200, "application/json", json.dumps({"kind": "PodList", "apiVersion": "v1", "metadata": {},
                                                         "items": pods}).encode()
        if path.endswith("/events"):
            if self.fail_events:
                return 503, "application/json", b'{"kind":"Status","code":503}'
            ns = path.split("/")[4]
            items = [{"metadata": {"namespace": ns, "name": f"e{i}"}, "involvedObject": {"kind": "Pod", "name": n},
                      "reason": r, "message": m, "type": t, "count": c, "lastTimestamp": ts}
                     for i, (n, r, m, t, c, ts) in enumerate([
                         ("istiod-7d9f-b", "Unhealthy", "Readiness probe failed: HTTP 503", "Warning", 12,
                          "2025-03-01T09:05:00Z"),
                         ("istiod-7d9f-b", "Pulled", "image pulled", "Normal", 1, "2025-03-01T09:06:00Z")])]
            return 200, "application/json", json.dumps({"kind": "EventList", "apiVersion": "v1", "metadata": {},
                                                         "items": items}).encode()
        if path.endswith("/log"):
            return 200, "text/plain", LOG.encode()
        return 404, "application/json", b'{"kind":"Status","code":404}'

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def stub() -> Iterator[KubeStub]:
    s = KubeStub()
    yield s
    s.close()


def evidence_api(stub: KubeStub) -> KubernetesEvidence:
    return KubernetesEvidence(KubernetesApi(k8s.ApiClient(k8s.Configuration(host=stub.url)), request_timeout=2))


class StubConnector:
    def __init__(self, stub: KubeStub) -> None:
        self.stub = stub

    def connect(self, cluster: Cluster) -> KubernetesEvidence:
        return evidence_api(self.stub)


def test_events_and_log_tail_are_read_with_the_kubernetes_client(stub):
    api = evidence_api(stub)

    # WHEN events and istiod's log tail are read
    events = api.list_events("istio-system")
    log = api.pod_log_tail("istio-system", "istiod-7d9f-b", "discovery", 50)

    # THEN they come back typed and raw, and the client asked for the container and tail
    assert [(e.involved_object, e.reason, e.type, e.count) for e in events] == [
        ("Pod/istiod-7d9f-b", "Unhealthy", "Warning", 12), ("Pod/istiod-7d9f-b", "Pulled", "Normal", 1)]
    assert log == LOG
    path, query = stub.requests[-1]
    assert path == "/api/v1/namespaces/istio-system/pods/istiod-7d9f-b/log"
    assert query["container"] == ["discovery"] and query["tailLines"] == ["50"]


def test_a_503_on_events_is_transient(stub):
    stub.fail_events = True
    with pytest.raises(TransientError, match="events in istio-system"):
        evidence_api(stub).list_events("istio-system")


@pytest.fixture
def world(monkeypatch) -> Iterator[World]:
    with opened(monkeypatch, llm={"enabled": True, "model": "sim-model"}) as w:
        yield w


def test_evidence_of_the_failing_cluster_has_numbers_pods_events_and_istiod_log(world, stub):
    # WHEN evidence is collected for the failed run
    evidence = EvidenceService(world.config, world.registry, world.state, StubConnector(stub),
                               world.clock).collect(RUN_ID)

    # THEN only the failing cluster is in it, with its violation, series summary, unhealthy pods and events
    assert [c.cluster_id for c in evidence.clusters] == ["eks-prod-1"]
    c = evidence.clusters[0]
    assert [(v.name, v.baseline, v.current) for v in c.violations] == [("latency_p95", 212.6, 264.5)]
    assert c.series[0].baseline == {"min": 210.0, "mean": 212.0, "max": 214.0, "last": 214.0, "points": 10}
    assert c.series[0].current is not None and c.series[0].current["mean"] == 264.0
    assert {p.name for p in c.pods} == {"istiod-7d9f-a", "istiod-7d9f-b", "api-5c-x"}
    assert c.events[0].reason == "Unhealthy"  # warnings first
    # AND the log is that of the unhealthy istiod, from istio-system and the failing workload's namespace
    asked = [p for p, _ in stub.requests]
    assert "/api/v1/namespaces/istio-system/pods/istiod-7d9f-b/log" in asked
    assert "/api/v1/namespaces/payments/events" in asked
    assert c.istiod_log == LOG


class CountingConnector(StubConnector):
    def __init__(self, stub: KubeStub) -> None:
        super().__init__(stub)
        self.connected: list[str] = []

    def connect(self, cluster: Cluster) -> KubernetesEvidence:
        self.connected.append(cluster.cluster_id)
        return super().connect(cluster)


def test_with_many_failing_clusters_only_the_shown_ones_are_read_from_their_clusters(world, stub):
    # GIVEN 60 more clusters in the run, every one failing validation: 55 on latency, 5 inconclusive
    run = world.run()
    extra = [f"eks-prod-x{i:02d}" for i in range(60)]
    for i, c in enumerate(extra):
        world.registry.put(world.registry.get("eks-prod-1").model_copy(update={"cluster_id": c}))
        failing = world.state.get_verdict(RUN_ID, "eks-prod-1")
        world.state.put_verdict(run, failing.model_copy(update={"cluster_id": c}) if i % 12 else ClusterVerdict(
            cluster_id=c, outcome=VerdictOutcome.INCONCLUSIVE))
    world.state.put_run(run.model_copy(update={"clusters": [*run.clusters, *extra]}))
    connector = CountingConnector(stub)

    # WHEN the evidence is collected for a report that details the first 20 and an analysis that samples 20
    evidence = EvidenceService(world.config, world.registry, world.state, connector, world.clock).collect(
        RUN_ID, sample=20, first=20)

    # THEN every failing cluster is in it, in the run's order, with what the state table holds
    assert [c.cluster_id for c in evidence.clusters] == ["eks-prod-1", *extra]
    assert all(c.violations for c in evidence.clusters if c.outcome == "fail")
    # AND only the first 20 and the sample (which holds the inconclusive kind too) were read, each once
    sampled = {c.cluster_id for c in evidence.sample(20).clusters}
    first = {c.cluster_id for c in evidence.clusters[:20]}
    assert sorted(connector.connected) == sorted(first | sampled)
    assert any(c in sampled for c in extra[::12]) and len(connector.connected) < 40
    # AND a cluster read has its pods, one not read says why it has none
    by_id = {c.cluster_id: c for c in evidence.clusters}
    assert all(by_id[c].pods for c in connector.connected)
    unread = next(c for c in evidence.clusters if c.cluster_id not in connector.connected)
    assert unread.pods == [] and any("read for" in n and "of the 61 failing clusters only" in n for n in unread.notes)


def test_analysis_task_stores_evidence_and_a_validated_analysis(world, stub):
    # GIVEN an OpenAI-compatible endpoint that answers well
    with LlmSimulator(api_key="sk-sim") as llm:
        world.config.llm.base_url = f"{llm.url}/v1"
        evidence = EvidenceService(world.config, world.registry, world.state, StubConnector(stub), world.clock)
        service = AnalysisService(world.config, world.state, world.failures, evidence,
                                  lambda: build_analyst(world.config.llm, "sk-sim"), world.clock)

        # WHEN the failure is analysed
        outcome = service.analyze(RUN_ID)

        # THEN the outcome is small and says a rollback needs no decision for a plain failure
        assert outcome.available and outcome.verdict == "fail" and not outcome.needs_decision
        assert (outcome.failing_clusters, outcome.failing_count) == (["eks-prod-1"], 1)
        assert outcome.first_violation == "eks-prod-1: latency_p95 212.6 → 264.5 (+24.4%) exceeds +10%"
        # AND the analysis and evidence are stored, and the token in istiod's log never reached the LLM
        analysis = world.failures.get_analysis(RUN_ID)
        assert analysis.available and (analysis.sampled_clusters, analysis.failing_clusters) == (["eks-prod-1"], 1)
        stored_log = world.failures.get_evidence(RUN_ID).clusters[0].istiod_log  # redacted before it is stored
        assert FAKE_TOKEN not in stored_log and stored_log == redact(LOG)
        assert FAKE_TOKEN not in llm.requests[0].prompt_text()


@pytest.mark.parametrize(("mode", "reason"), [("error", "LLM: openai answered HTTP 500"), ("hang", "openai timed out"),
                                              ("garbage", "the model's answer is not JSON")])
def test_llm_down_gives_analysis_unavailable_and_never_raises(world, stub, mode, reason):
    # GIVEN the LLM endpoint is failing in some way
    with LlmSimulator(api_key="sk-sim", mode=mode, hang_seconds=5) as llm:
        world.config.llm.base_url, world.config.llm.timeout_seconds = f"{llm.url}/v1", 0.5
        evidence = EvidenceService(world.config, world.registry, world.state, StubConnector(stub), world.clock)
        service = AnalysisService(world.config, world.state, world.failures, evidence,
                                  lambda: build_analyst(world.config.llm, "sk-sim"), world.clock)

        # WHEN the failure is analysed
        outcome = service.analyze(RUN_ID)

    # THEN the task succeeds with "analysis unavailable: <reason>", and the evidence is still stored
    assert not outcome.available and outcome.text.startswith(f"analysis unavailable: {reason}")
    assert world.failures.get_analysis(RUN_ID).reason
    assert world.failures.get_evidence(RUN_ID) is not None


def test_llm_disabled_or_turned_off_for_the_run(world, stub):
    evidence = EvidenceService(world.config, world.registry, world.state, None, world.clock)
    service = AnalysisService(world.config, world.state, world.failures, evidence, None, world.clock)
    assert service.analyze(RUN_ID, enable_llm_analysis=False).text == (
        "analysis unavailable: LLM analysis was turned off for this run (enable_llm_analysis: false)")
    world.config.llm.enabled = False
    assert "llm.enabled: false" in service.analyze(RUN_ID).text
