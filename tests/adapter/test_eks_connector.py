"""EksConnector: STS and EKS through boto3 on moto, the Kubernetes side on the local simulator."""

from __future__ import annotations

import base64
import logging
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

import boto3
import pytest
from guard.adapters.eks_connector import _CLIENTS, EksConnector, _client, eks_token
from guard.core.models import Cluster
from guard.errors import ConfigError, ExternalServiceError
from moto import mock_aws

from sandbox.sims.kubernetes_sim import KubernetesSimulator
from tests.support.clock import FakeClock

REGION = "eu-west-1"
ROLE_ARN = "arn:aws:iam::123456789012:role/guard-eks-reader"


def registry_cluster(**overrides: Any) -> Cluster:
    fields: dict[str, Any] = {
        "cluster_id": "prod-euw1",
        "batch_id": "prod",
        "environment": "production",
        "region": REGION,
        "gitlab_project": "platform/gitops",
        "flux_config_path": "clusters/prod-euw1/istio/helmrelease.yaml",
        "current_istio_version": "1.20.3",
    }
    return Cluster(**(fields | overrides))


def decode_token(token: str) -> tuple[str, dict[str, str]]:
    encoded = token.removeprefix("k8s-aws-v1.")
    url = base64.urlsafe_b64decode(encoded + "=" * (-len(encoded) % 4)).decode()
    return url, {k: v[-1] for k, v in parse_qs(urlsplit(url).query).items()}


def test_one_session_signs_every_clusters_token_with_one_sts_client_each_for_its_own_cluster() -> None:
    # GIVEN the Lambda's own session (plain credentials; presigning is local)
    session = boto3.session.Session(
        aws_access_key_id="ASIAGUARDTEST0000000", aws_secret_access_key="secret", region_name=REGION
    )

    # WHEN tokens are signed for two clusters, one of them twice
    first, again, other = (eks_token(session, name, REGION) for name in ("eks-a", "eks-a", "eks-b"))

    # THEN the session made one STS client for the region, not one a token
    assert [key[:2] for key in _CLIENTS[session]] == [("sts", REGION)]
    # AND each token's signature covers its own cluster's header: the clusters' signatures differ
    signatures = [decode_token(t)[1] for t in (first, again, other)]
    assert all("x-k8s-aws-id" in q["X-Amz-SignedHeaders"] for q in signatures)
    if signatures[0]["X-Amz-Date"] == signatures[2]["X-Amz-Date"]:
        assert signatures[0]["X-Amz-Signature"] != signatures[2]["X-Amz-Signature"]
    if signatures[0]["X-Amz-Date"] == signatures[1]["X-Amz-Date"]:
        assert signatures[0]["X-Amz-Signature"] == signatures[1]["X-Amz-Signature"]


def test_a_kept_client_is_not_served_after_the_endpoint_moved(monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a session whose EKS client was made while AWS_ENDPOINT_URL named one emulator
    session = boto3.session.Session(aws_access_key_id="A", aws_secret_access_key="s", region_name=REGION)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4001")
    before = _client(session, "eks", REGION)
    # WHEN the endpoint moves (the rehearsal starts another emulator in the same process)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:4002")
    after = _client(session, "eks", REGION)
    # THEN the client asked for now reaches the new endpoint, and asking again gives the same one
    assert (before.meta.endpoint_url, after.meta.endpoint_url) == ("http://127.0.0.1:4001", "http://127.0.0.1:4002")
    assert _client(session, "eks", REGION) is after


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[boto3.session.Session]:
    for key, value in {
        "AWS_ACCESS_KEY_ID": "ASIAGUARDTEST0000000",
        "AWS_SECRET_ACCESS_KEY": "guard-test-secret",
        "AWS_DEFAULT_REGION": REGION,
    }.items():
        monkeypatch.setenv(key, value)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    with mock_aws():
        yield boto3.session.Session(region_name=REGION)


@pytest.fixture
def sim() -> Iterator[KubernetesSimulator]:
    with KubernetesSimulator(FakeClock(datetime(2025, 3, 1, tzinfo=UTC))) as simulator:
        simulator.add_cluster("prod-euw1", "1.20.3", nodes=2, workloads=[("shop", "web", 2, True, True)])
        yield simulator


def test_token_is_a_presigned_get_caller_identity_url() -> None:
    # GIVEN plain credentials (presigning is local; no AWS call is made)
    session = boto3.session.Session(
        aws_access_key_id="ASIAGUARDTEST0000000", aws_secret_access_key="secret", region_name=REGION
    )

    # WHEN signing a token for an EKS cluster
    token = eks_token(session, "eks-prod-euw1", REGION)

    # THEN it is the aws-iam-authenticator format: prefix + unpadded base64url of a presigned URL
    assert token.startswith("k8s-aws-v1.") and not token.endswith("=")
    url, query = decode_token(token)
    assert urlsplit(url).scheme == "https"
    assert urlsplit(url).hostname == f"sts.{REGION}.amazonaws.com"
    assert query["Action"] == "GetCallerIdentity"
    assert query["X-Amz-Expires"] == "60"
    # AND the signature covers the x-k8s-aws-id header, scoped to the cluster's region
    assert "x-k8s-aws-id" in query["X-Amz-SignedHeaders"].split(";")
    assert query["X-Amz-Credential"].startswith("ASIAGUARDTEST0000000/")
    assert f"/{REGION}/sts/aws4_request" in query["X-Amz-Credential"]
    assert "x-k8s-aws-id" not in query  # the name travels as a signed header, not a parameter


def test_connect_assumes_the_role_and_reads_endpoint_and_ca_from_eks(aws: boto3.session.Session) -> None:
    # GIVEN an EKS cluster whose name differs from the registry id, reached through a role
    eks = aws.client("eks")
    created = eks.create_cluster(
        name="eks-prod-euw1",
        roleArn="arn:aws:iam::123456789012:role/eks-service",
        resourcesVpcConfig={"subnetIds": ["subnet-1"]},
    )["cluster"]
    cluster = registry_cluster(aws_role_arn=ROLE_ARN, eks_cluster_name="eks-prod-euw1")
    connector = EksConnector(aws, request_timeout=3)

    # WHEN connecting
    api = connector.connect(cluster)

    # THEN the client targets the EKS endpoint and verifies TLS with the cluster's CA
    configuration = api.api_client.configuration
    assert configuration.host == created["endpoint"].rstrip("/")
    assert configuration.verify_ssl is True
    expected_ca = base64.b64decode(created["certificateAuthority"]["data"]).decode("ascii", errors="replace")
    assert configuration.ca_cert_data == expected_ca
    assert api.request_timeout == 3
    # AND the token is signed by the assumed role's session named after the cluster
    identity = connector.session_for(cluster).client("sts").get_caller_identity()
    assert identity["Arn"].endswith("/guard-eks-reader/guard-prod-euw1")
    _, query = decode_token(configuration.api_key["authorization"])
    signing_key = query["X-Amz-Credential"].split("/")[0]
    assert signing_key.startswith("ASIA") and signing_key != "ASIAGUARDTEST0000000"


def test_each_assumed_role_gets_its_own_credentials_but_reads_the_service_models_once(
        aws: boto3.session.Session) -> None:
    # GIVEN two clusters reached through their roles
    connector = EksConnector(aws)
    first = connector.session_for(registry_cluster(aws_role_arn=ROLE_ARN))
    second = connector.session_for(registry_cluster(aws_role_arn=ROLE_ARN, cluster_id="eks-other"))

    # WHEN their sessions make clients
    # THEN the credentials are each role session's own
    assert first.get_credentials().access_key != second.get_credentials().access_key
    # AND botocore's models are loaded once per process, not once per assumed role
    assert first.get_available_services() == second.get_available_services()
    assert first._session.get_component("data_loader") is second._session.get_component("data_loader")
    # AND the shared loader's search paths do not grow with every role session a warm Lambda makes
    for i in range(20):
        connector.session_for(registry_cluster(aws_role_arn=ROLE_ARN, cluster_id=f"eks-more-{i}"))
    paths = first._session.get_component("data_loader").search_paths
    assert len(paths) == len(set(paths))


def test_endpoint_override_reaches_the_simulator_end_to_end(
    aws: boto3.session.Session, sim: KubernetesSimulator, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a registry cluster whose API endpoint is overridden to the local simulator (no EKS cluster exists)
    cluster = registry_cluster(aws_role_arn=ROLE_ARN, api_endpoint=sim.endpoint("prod-euw1"))
    caplog.set_level(logging.DEBUG)

    # WHEN connecting and reading through the real kubernetes client
    api = EksConnector(aws, allowed_endpoints=["127.0.0.1"]).connect(cluster)
    nodes = api.list_nodes()
    pods = api.list_pods("shop")

    # THEN the simulator accepted the signed EKS token and served the cluster
    assert len(nodes) == 2 and all(n.ready for n in nodes)
    assert {p.proxy_version for p in pods} == {"1.20.3"}
    assert all(r.status == 200 for r in sim.requests)
    # AND the token never reached the logs
    token = api.api_client.configuration.api_key["authorization"]
    assert token not in caplog.text


def test_plain_http_override_off_loopback_is_refused(aws: boto3.session.Session) -> None:
    # GIVEN an http:// override that would send the token over the network in clear text
    cluster = registry_cluster(api_endpoint="http://10.0.0.12:8080")

    # WHEN connecting THEN the config error names the field
    with pytest.raises(ConfigError, match=r"clusters\.prod-euw1\.api_endpoint"):
        EksConnector(aws, allowed_endpoints=["10.0.0.12"]).connect(cluster)


def test_https_override_keeps_tls_verification(aws: boto3.session.Session) -> None:
    # GIVEN an https override (e.g. a private proxy in front of the API)
    cluster = registry_cluster(api_endpoint="https://k8s-proxy.internal.example:6443/")

    # WHEN connecting THEN certificates are still verified
    connector = EksConnector(aws, allowed_endpoints=["*.internal.example"])
    configuration = connector.connect(cluster).api_client.configuration
    assert configuration.verify_ssl is True
    assert configuration.host == "https://k8s-proxy.internal.example:6443"


def test_unknown_eks_cluster_is_named(aws: boto3.session.Session) -> None:
    # GIVEN no EKS cluster by the registry's name WHEN connecting THEN the error names it
    with pytest.raises(ExternalServiceError, match="eks:DescribeCluster prod-euw1"):
        EksConnector(aws).connect(registry_cluster())


# --- the registry cannot redirect credentials ---------------------------------------------------------

class _SigningRecorder:
    """Counts what the connector asks of STS: a refused cluster must get no role and no token."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.tokens = 0
        self.assumed = 0
        import guard.adapters.eks_connector as module

        real_token, real_session_for = module.eks_token, EksConnector.session_for

        def token(*args: Any, **kwargs: Any) -> str:
            self.tokens += 1
            return real_token(*args, **kwargs)

        def session_for(connector: EksConnector, cluster: Cluster) -> Any:
            self.assumed += 1
            return real_session_for(connector, cluster)

        monkeypatch.setattr(module, "eks_token", token)
        monkeypatch.setattr(EksConnector, "session_for", session_for)


def test_an_unlisted_endpoint_is_refused_before_any_token_is_made(
        aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a registry item that names the victim's EKS cluster and a guard-* role, but an attacker's host
    cluster = registry_cluster(aws_role_arn=ROLE_ARN, eks_cluster_name="eks-prod-euw1",
                               api_endpoint="https://attacker.example")
    recorder = _SigningRecorder(monkeypatch)
    # WHEN GUARD connects with a tenant config that allows only its internal proxy
    with pytest.raises(ConfigError) as refused:
        EksConnector(aws, allowed_endpoints=["k8s-proxy.internal.example"]).connect(cluster)
    # THEN the error names the field and the host, and no role was assumed and no token signed
    assert "api_endpoint host 'attacker.example' is not in aws.allowed_api_endpoints" in str(refused.value)
    assert (recorder.assumed, recorder.tokens) == (0, 0)


def test_an_endpoint_with_its_ca_pinned_trusts_only_that_ca(aws: boto3.session.Session) -> None:
    # GIVEN an override to an unlisted host, with the cluster's CA pinned in the registry
    pem = "-----BEGIN CERTIFICATE-----\nMIIBpinned\n-----END CERTIFICATE-----\n"
    cluster = registry_cluster(api_endpoint="https://10.1.2.3:443",
                               api_ca_data=base64.b64encode(pem.encode()).decode())
    # WHEN connecting with no allowed endpoints
    configuration = EksConnector(aws).connect(cluster).api_client.configuration
    # THEN TLS is verified against the pinned CA alone (no public CA bundle is consulted)
    assert configuration.verify_ssl is True
    assert configuration.ca_cert_data == pem
    assert configuration.ssl_ca_cert is None


def test_a_registry_account_that_is_not_the_roles_is_refused_before_any_token(
        aws: boto3.session.Session, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN a registry item saying account 210987654321 but naming a role of 123456789012
    cluster = registry_cluster(aws_role_arn=ROLE_ARN, aws_account_id="210987654321")
    recorder = _SigningRecorder(monkeypatch)
    # WHEN connecting THEN it is refused naming both accounts, before the role is assumed
    with pytest.raises(ConfigError, match="aws_account_id 210987654321 but aws_role_arn is in account 123456789012"):
        EksConnector(aws).connect(cluster)
    assert (recorder.assumed, recorder.tokens) == (0, 0)
