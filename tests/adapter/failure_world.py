"""A small world for the failure-path tests: moto DynamoDB, the GitLab simulator with a merged
upgrade MR, the Kubernetes simulator, and a run whose validation failed on one cluster."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from guard.adapters.eks_connector import EksConnector
from guard.adapters.gitlab_repo import GitLabMembers, GitLabRepo
from guard.config.models import TenantConfig
from guard.core.models import CheckStatus, Cluster, HealthCheckResult
from guard.core.run import (
    ClusterVerdict,
    ExecutionInput,
    MetricFinding,
    MetricSummary,
    PrecheckReport,
    RunRecord,
    VerdictOutcome,
)
from guard.gitops.helm_release import set_chart_version
from guard.ports import FileChange
from guard.retry import RetryPolicy
from guard.stores.failure import FailureStore
from guard.stores.registry import ClusterRegistry
from guard.stores.schema import create_tables
from guard.stores.state import StateStore
from moto import mock_aws

from sandbox.sims.gitlab_sim import GitLabSimulator
from sandbox.sims.kubernetes_sim import KubernetesSimulator
from tests.support.clock import FakeClock

REGION = "us-east-1"
TOKEN = "sim-gitlab-token"
PROJECT = "platform/istio-fleet"
OLD, NEW = "1.20.3", "1.21.0"
RUN_ID = "7f3a9c2e-1b4d-4e8f-9a0b-5c6d7e8f9a0b"
CLUSTERS = ("eks-prod-1", "eks-prod-2")
START = datetime(2025, 3, 1, 9, 0, tzinfo=UTC)
RELEASE = """\
# Istio control plane for {cluster}; GUARD edits spec.chart.spec.version only.
apiVersion: helm.toolkit.fluxcd.io/v2
kind: HelmRelease
metadata:
  name: istiod
  namespace: istio-system
spec:
  interval: 5m
  chart:
    spec:
      chart: istiod
      version: "{version}"  # upgraded by GUARD merge requests
  values:
    pilot: {{autoscaleMin: 2}}
"""


class RecordingStepFunctions:
    """`TaskCallbacks` that records what would resume or fail an execution."""

    def __init__(self) -> None:
        self.successes: list[dict[str, Any]] = []
        self.failures: list[dict[str, str]] = []

    def send_task_success(self, *, taskToken: str, output: str) -> dict[str, Any]:
        self.successes.append({"taskToken": taskToken, "output": json.loads(output)})
        return {}

    def send_task_failure(self, *, taskToken: str, error: str, cause: str) -> dict[str, Any]:
        self.failures.append({"taskToken": taskToken, "error": error, "cause": cause})
        return {}


def refusing_writes(sk: str = "TOKEN") -> Any:
    """The state table (a boto3 Table) through a client whose PutItem of `sk` items (task tokens by default) is
    throttled every time, as if past boto3's own retries."""
    table = boto3.resource("dynamodb", region_name=REGION).Table("state")

    def refuse(params: dict[str, Any], **kwargs: Any) -> None:
        if params.get("Item", {}).get("sk") in (sk, {"S": sk}):
            raise ClientError({"Error": {"Code": "ProvisionedThroughputExceededException", "Message": "throttled"}},
                              "PutItem")

    table.meta.client.meta.events.register("provide-client-params.dynamodb.PutItem", refuse)
    return table


def path(cluster: str) -> str:
    return f"clusters/{cluster}/istio/helmrelease.yaml"


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{s.getsockname()[1]}/webhooks/gitlab"


@dataclass
class World:
    config: TenantConfig
    clock: FakeClock
    gitlab: GitLabSimulator
    kubernetes: KubernetesSimulator
    registry: ClusterRegistry
    state: StateStore
    failures: FailureStore
    repo: GitLabRepo
    members: GitLabMembers
    connector: EksConnector
    sfn: RecordingStepFunctions = field(default_factory=RecordingStepFunctions)
    upgrade_iid: int = 0

    def run(self) -> RunRecord:
        return self.state.get_run(RUN_ID)


def build(gitlab: GitLabSimulator, kubernetes: KubernetesSimulator, clock: FakeClock,
          **config: Any) -> World:
    """GIVEN-state shared by the tests: the upgrade to NEW is merged and running; eks-prod-1 failed validation."""
    registry_table, state_table = create_tables(boto3.resource("dynamodb", region_name=REGION), "registry", "state")
    # The clusters' API servers are the local simulator: allowed as a deployer would allow a proxy.
    cfg = TenantConfig.model_validate({"tenant": "unit", "gitlab": {"url": gitlab.url},
                                       "aws": {"allowed_api_endpoints": ["127.0.0.1"]},
                                       "batches": [{"name": "prod-canary", "clusters": list(CLUSTERS)}], **config})
    gitlab.add_project(PROJECT, {path(c): RELEASE.format(cluster=c, version=OLD) for c in CLUSTERS} |
                       {"README.md": "fleet\n"})
    # The project's retry policy, without sleeping the tests' time away (a retry still happens).
    no_wait = RetryPolicy(sleep=lambda _: None)
    repo = GitLabRepo.from_token(gitlab.url, TOKEN, timeout_seconds=5, retry=no_wait)
    world = World(cfg, clock, gitlab, kubernetes, ClusterRegistry(registry_table, cfg.tenant), StateStore(state_table),
                  FailureStore(state_table), repo,
                  GitLabMembers.from_token(gitlab.url, TOKEN, timeout_seconds=5, retry=no_wait),
                  EksConnector(boto3.session.Session(region_name=REGION), request_timeout=5, retry=no_wait,
                               allowed_endpoints=["127.0.0.1"]))
    for c in CLUSTERS:
        kubernetes.add_cluster(c, NEW)
        world.registry.put(Cluster(cluster_id=c, batch_id="prod-canary", environment="production", region=REGION,
                                   gitlab_project=PROJECT, flux_config_path=path(c), current_istio_version=OLD,
                                   api_endpoint=kubernetes.endpoint(c)))
    # The upgrade MR, merged (main now pins NEW everywhere).
    branch = "guard/istio-upgrade/prod-canary-1.21.0"
    repo.ensure_branch(PROJECT, branch, "main")
    repo.commit_files(PROJECT, branch, [FileChange(path=path(c), content=set_chart_version(
        RELEASE.format(cluster=c, version=OLD), NEW)) for c in CLUSTERS], "upgrade")
    mr = repo.ensure_merge_request(PROJECT, branch, "main", "Upgrade Istio to 1.21.0", "health report")
    gitlab.merge(PROJECT, mr.iid)
    world.upgrade_iid = mr.iid
    world.state.put_run(RunRecord(
        run_id=RUN_ID, execution_arn=f"arn:aws:states:{REGION}:123456789012:execution:guard:{RUN_ID}",
        batch="prod-canary", target_version=NEW, clusters=list(CLUSTERS), from_versions=dict.fromkeys(CLUSTERS, OLD),
        gitlab_project=PROJECT, options=ExecutionInput(batch="prod-canary", target_version=NEW), stage="validation",
        started_at=START, merge_request_url=mr.web_url, merge_request_iid=mr.iid,
        error="ValidationFailed", cause="eks-prod-1: fail: latency_p95 212.6 → 264.5 (+24.4%) exceeds +10%"))
    world.state.acquire_lock("prod-canary", RUN_ID, START, 24)
    points = [(START.timestamp() + 60 * i, 210.0 + i % 5) for i in range(10)]
    run = world.run()
    for c in CLUSTERS:
        world.state.put_precheck(run, PrecheckReport(cluster_id=c, results=[], baseline={
            "latency_p95": MetricSummary(query="q", start=START, end=START, points=points)}))
    world.state.put_verdict(run, ClusterVerdict(
        cluster_id="eks-prod-1", outcome=VerdictOutcome.FAIL,
        findings=[MetricFinding(query_name="latency_p95", query="q", rule="latency_increase_percent",
                                outcome=VerdictOutcome.FAIL, baseline=212.6, current=264.5, threshold=10,
                                explanation="latency_p95 212.6 → 264.5 (+24.4%) exceeds +10%")],
        post_checks=[HealthCheckResult(cluster_id="eks-prod-1", check_name="no_crash_loops",
                                       status=CheckStatus.PASS, message="no pod crash-loops")],
        current={"latency_p95": MetricSummary(query="q", start=START, end=START,
                                              points=[(p[0], v + 52) for p, v in zip(points, [p[1] for p in points],
                                                                                      strict=True)])}))
    world.state.put_verdict(run, ClusterVerdict(cluster_id="eks-prod-2", outcome=VerdictOutcome.PASS))
    return world


@contextmanager
def opened(monkeypatch: pytest.MonkeyPatch, **config: Any) -> Iterator[World]:
    """The world of `build` on moto and fresh GitLab and Kubernetes simulators, with test AWS credentials
    and no emulator endpoint; `config` as for `build`."""
    for name, value in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_DEFAULT_REGION": "us-east-1"}.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    clock = FakeClock()
    with mock_aws(), GitLabSimulator(token=TOKEN, clock=clock) as gitlab, KubernetesSimulator(clock) as k8s:
        yield build(gitlab, k8s, clock, **config)
