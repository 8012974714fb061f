"""`ClusterConnector` for EKS: assume the cluster's role, find its endpoint, sign a token.

The token is the aws-iam-authenticator one `aws eks get-token` prints: a presigned STS
GetCallerIdentity URL whose signature covers the `x-k8s-aws-id: <cluster name>` header,
base64url-encoded without padding, behind `k8s-aws-v1.`. Tokens are never logged.
"""

from __future__ import annotations

import base64
import functools
import ipaddress
import logging
import os
import re
import threading
import time
import weakref
from collections.abc import Sequence
from typing import Any
from urllib.parse import urlsplit

import boto3
import botocore.loaders
import botocore.session
from botocore.exceptions import BotoCoreError, ClientError, HTTPClientError
from botocore.exceptions import ConnectionError as AwsConnectionError
from kubernetes.client.api_client import ApiClient
from kubernetes.client.configuration import Configuration

from guard.adapters.kubernetes_api import KubernetesApi
from guard.config.registry_policy import connection_problems
from guard.core.models import Cluster
from guard.errors import ConfigError, ExternalServiceError, TransientError
from guard.retry import RetryPolicy
from guard.vendor_slots import VendorSlots

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "k8s-aws-v1."
CLUSTER_ID_HEADER = "x-k8s-aws-id"
PRESIGN_EXPIRES_SECONDS = 60
# EKS accepts a token for 15 minutes; renew well before, for Lambda tasks that run long.
TOKEN_REFRESH_SECONDS = 600.0

_TRANSIENT_AWS_CODES = {
    "Throttling",
    "ThrottlingException",
    "RequestLimitExceeded",
    "TooManyRequestsException",
    "ServiceUnavailable",
    "ServiceUnavailableException",
    "ServerException",
    "InternalFailure",
    "IDPCommunicationError",
}


def _move_cluster_id_to_context(params: dict[str, Any], context: dict[str, Any], **_: Any) -> None:
    if CLUSTER_ID_HEADER in params:
        context[CLUSTER_ID_HEADER] = params.pop(CLUSTER_ID_HEADER)


def _add_cluster_id_header(request: Any, **_: Any) -> None:
    if CLUSTER_ID_HEADER in request.context:
        request.headers[CLUSTER_ID_HEADER] = request.context[CLUSTER_ID_HEADER]


# A chunk's task connects to several clusters at once (guard.services.fanout), and a boto3 Session is
# not thread-safe while it creates a client (it loads and caches components); the clients it returns
# are. So clients are created one at a time; the calls on them run concurrently.
_CLIENT_CREATION = threading.Lock()
# The clients each session has made, by service and region. Creating one costs 1.5-7 ms of CPU (its
# class, endpoint rules and handlers), and a connection used to create three (STS for the role, EKS,
# STS for each token): Plan and Finish connect to every cluster of the batch in one invocation. The
# Lambda's own session keeps one STS and one EKS client per region; an assumed role's session (one
# per cluster) is dropped with its clients when its connection is.
# A client keeps the endpoint it was made with: the key holds the endpoint variables botocore reads, so
# the rehearsal's emulator address (which changes between runs in one process) never gets a stale one.
_CLIENTS: weakref.WeakKeyDictionary[boto3.session.Session, dict[tuple[str, ...], Any]] = weakref.WeakKeyDictionary()


def _client(session: boto3.session.Session, service: str, region: str) -> Any:
    key = (service, region, os.environ.get("AWS_ENDPOINT_URL", ""),
           os.environ.get(f"AWS_ENDPOINT_URL_{service.upper()}", ""))
    with _CLIENT_CREATION:
        made = _CLIENTS.setdefault(session, {})
        if key not in made:
            made[key] = session.client(service, region_name=region)
        return made[key]


def eks_token(session: boto3.session.Session, cluster_name: str, region: str) -> str:
    """Bearer token for the EKS cluster `cluster_name`, signed with `session`'s credentials."""
    # botocore resolves the regional STS endpoint of the region's partition.
    sts = _client(session, "sts", region)
    # The header travels through the request context so the client stays reusable.
    sts.meta.events.register(
        "provide-client-params.sts.GetCallerIdentity",
        _move_cluster_id_to_context,
        unique_id="guard-k8s-aws-id-params",
    )
    sts.meta.events.register(
        "before-sign.sts.GetCallerIdentity", _add_cluster_id_header, unique_id="guard-k8s-aws-id-header"
    )
    url = sts.generate_presigned_url(
        "get_caller_identity",
        Params={CLUSTER_ID_HEADER: cluster_name},
        ExpiresIn=PRESIGN_EXPIRES_SECONDS,
        HttpMethod="GET",
    )
    return TOKEN_PREFIX + base64.urlsafe_b64encode(url.encode()).decode().rstrip("=")


@functools.cache
def _model_loader() -> botocore.loaders.Loader:
    """One loader of botocore's service models per process: it caches what it reads."""
    return botocore.loaders.create_loader()


def _forget_repeated_search_paths() -> None:
    """Each boto3 Session appends boto3's data directory to its loader's search paths: on the shared
    loader, one more entry per assumed role, for as long as the Lambda environment lives."""
    loader = _model_loader()
    with _CLIENT_CREATION:
        loader.search_paths[:] = list(dict.fromkeys(loader.search_paths))


def _botocore_session() -> botocore.session.Session:
    """A fresh botocore session (its own credentials) that shares the process's model loader.

    A plain new session re-reads and re-parses botocore's JSON models for each assumed role:
    measured at about 30% of the CPU of a nine-batch rehearsal, and the same cost per cluster
    per poll in Lambda.
    """
    session = botocore.session.Session()
    session.register_component("data_loader", _model_loader())
    return session


class EksConnector:
    """Builds a `KubernetesApi` for a registry cluster.

    `session` holds the Lambda's own credentials; when the cluster names `aws_role_arn`,
    that role is assumed first (session name `guard-<cluster_id>`). `allowed_endpoints` is the
    tenant's `aws.allowed_api_endpoints`: a registry `api_endpoint` elsewhere (without a pinned
    CA) is refused before any role is assumed or token signed.
    """

    def __init__(
        self,
        session: boto3.session.Session,
        request_timeout: float = 10.0,
        token_refresh_seconds: float = TOKEN_REFRESH_SECONDS,
        retries: int = 1,
        retry: RetryPolicy | None = None,
        allowed_endpoints: Sequence[str] = (),
        slots: VendorSlots | None = None,
    ) -> None:
        self.session = session
        self.slots = slots  # every cluster's API calls share them (execution.vendor_concurrency.kubernetes)
        self.allowed_endpoints = tuple(allowed_endpoints)
        self.request_timeout = request_timeout
        self.token_refresh_seconds = token_refresh_seconds
        self.retries = retries
        self.retry = retry  # the clusters' API calls (guard.retry); None: the default policy

    def connect(self, cluster: Cluster) -> KubernetesApi:
        # Before anything is signed: the registry may have changed since Plan checked it.
        problems = connection_problems(cluster, self.allowed_endpoints)
        if problems:
            raise ConfigError("; ".join(problems))
        override = (self._override_endpoint(cluster), _pinned_ca(cluster)) if cluster.api_endpoint else None
        session = self.session_for(cluster)
        cluster_name = cluster.eks_cluster_name or cluster.cluster_id
        host, ca_data = override or self._describe(session, cluster, cluster_name)
        configuration = self._configuration(session, cluster_name, cluster.region, host, ca_data)
        return KubernetesApi(ApiClient(configuration), request_timeout=self.request_timeout, retry=self.retry,
                             slots=self.slots)

    def _configuration(
        self,
        session: boto3.session.Session,
        cluster_name: str,
        region: str,
        host: str,
        ca_data: str | None,
    ) -> Configuration:
        """Client configuration with a bearer token the client renews before it expires."""
        configuration = Configuration(host=host.rstrip("/"), retries=self.retries)
        if ca_data is not None:
            configuration.ca_cert_data = ca_data
        # Plain http only reaches here for a loopback override (see _override_endpoint).
        configuration.verify_ssl = not host.startswith("http://")
        configuration.api_key_prefix = {"authorization": "Bearer"}
        issued = {"at": float("-inf")}

        def refresh(cfg: Configuration) -> None:
            if time.monotonic() - issued["at"] < self.token_refresh_seconds:
                return
            cfg.api_key = {"authorization": self._token(session, cluster_name, region)}
            issued["at"] = time.monotonic()

        refresh(configuration)
        configuration.refresh_api_key_hook = refresh  # type: ignore[assignment]
        return configuration

    # ------------------------------------------------------------ steps

    def session_for(self, cluster: Cluster) -> boto3.session.Session:
        """The session that reaches `cluster`: the cluster's role when it names one."""
        if not cluster.aws_role_arn:
            return self.session
        session_name = re.sub(r"[^\w+=,.@-]", "-", f"guard-{cluster.cluster_id}")[:64]
        sts = _client(self.session, "sts", cluster.region)
        try:
            creds = sts.assume_role(RoleArn=cluster.aws_role_arn, RoleSessionName=session_name)["Credentials"]
        except (ClientError, BotoCoreError) as e:
            raise _aws_error(f"sts:AssumeRole {cluster.aws_role_arn} for cluster {cluster.cluster_id}", e) from e
        session = boto3.session.Session(
            aws_access_key_id=creds["AccessKeyId"],
            aws_secret_access_key=creds["SecretAccessKey"],
            aws_session_token=creds["SessionToken"],
            region_name=cluster.region,
            botocore_session=_botocore_session(),
        )
        _forget_repeated_search_paths()
        return session

    def _describe(self, session: boto3.session.Session, cluster: Cluster, name: str) -> tuple[str, str]:
        eks = _client(session, "eks", cluster.region)
        try:
            described = eks.describe_cluster(name=name)["cluster"]
        except (ClientError, BotoCoreError) as e:
            raise _aws_error(f"eks:DescribeCluster {name} (cluster {cluster.cluster_id})", e) from e
        endpoint = described.get("endpoint")
        ca = (described.get("certificateAuthority") or {}).get("data")
        if not endpoint or not ca:
            status = described.get("status", "unknown")
            raise ExternalServiceError(f"EKS cluster {name} has no endpoint or CA yet (status {status})")
        try:
            ca_pem = base64.b64decode(ca).decode("ascii", errors="replace")
        except ValueError as e:
            raise ExternalServiceError(f"EKS cluster {name}: certificate authority data is not base64") from e
        return endpoint, ca_pem

    @staticmethod
    def _override_endpoint(cluster: Cluster) -> str:
        endpoint = cluster.api_endpoint or ""
        parts = urlsplit(endpoint)
        if parts.scheme == "https":
            return endpoint
        if parts.scheme == "http" and _is_loopback(parts.hostname):
            return endpoint
        # The bearer token must not cross a network in clear text.
        raise ConfigError(f"clusters.{cluster.cluster_id}.api_endpoint: must be https:// (http:// only on loopback)")

    def _token(self, session: boto3.session.Session, cluster_name: str, region: str) -> str:
        try:
            token = eks_token(session, cluster_name, region)
        except (ClientError, BotoCoreError) as e:
            raise _aws_error(f"signing an EKS token for {cluster_name}", e) from e
        logger.debug("issued EKS token for cluster %s", cluster_name)
        return token


def _pinned_ca(cluster: Cluster) -> str | None:
    """The registry's pinned CA as PEM (the only CA the endpoint's certificate may chain to), or None."""
    if not cluster.api_ca_data:
        return None
    try:
        return base64.b64decode("".join(cluster.api_ca_data.split()), validate=True).decode("ascii")
    except ValueError as e:
        raise ConfigError(f"clusters.{cluster.cluster_id}.api_ca_data: not base64 of a PEM bundle") from e


def _is_loopback(hostname: str | None) -> bool:
    if hostname == "localhost":
        return True
    try:
        return ipaddress.ip_address(hostname or "").is_loopback
    except ValueError:
        return False


def _aws_error(what: str, e: Exception) -> Exception:
    if isinstance(e, AwsConnectionError | HTTPClientError):
        return TransientError(f"{what}: {e}")
    if isinstance(e, ClientError):
        code = e.response.get("Error", {}).get("Code", "")
        status = e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in _TRANSIENT_AWS_CODES or status == 429 or status >= 500:
            return TransientError(f"{what}: {code}")
        return ExternalServiceError(f"{what}: {code}: {e.response.get('Error', {}).get('Message', '')}")
    # No credentials, bad parameters, unknown region: a retry will not fix them.
    return ExternalServiceError(f"{what}: {type(e).__name__}: {e}")
