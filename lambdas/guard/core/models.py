"""Domain models shared by services, adapters and custom checks.

`Cluster`, `HealthCheckResult` and `CheckStatus` are public: tenant custom checks import
them as `from guard.core.models import HealthCheckResult, CheckStatus, Cluster`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from guard.core.version import Version


class CheckStatus(StrEnum):
    """Outcome of one health check."""

    PASS = "pass"
    FAIL = "fail"
    WARN = "warn"
    SKIPPED = "skipped"
    # The check could not get an answer (the API or vendor kept failing past the retry policy):
    # never a pass, and never a "fail" either; the message says why.
    INCONCLUSIVE = "inconclusive"


class UpgradeRecord(BaseModel):
    """One entry of a cluster's upgrade history."""

    run_id: str
    from_version: str
    to_version: str
    outcome: str
    at: datetime
    merge_request_url: str | None = None


# Strict shapes for every registry field. The registry is data anyone with write access to its
# table controls, and GUARD turns its fields into network destinations (api_endpoint), signed
# tokens (eks_cluster_name), Datadog queries (datadog_tags) and commits (gitlab_project,
# flux_config_path): each field may only hold what its use can take without changing meaning.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$"  # cluster ids and EKS names (EKS: 100 chars)
DNS_LABEL_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"  # Kubernetes names, batch ids
REGION_PATTERN = r"^[a-z]{2}(-[a-z]+)+-[0-9]{1,2}$"
# group/subgroup/project (GitLab paths: letters, digits, `_`, `-`, `.`; never a `.` or `..` segment) or an id.
PROJECT_PATTERN = r"^([0-9]+|[A-Za-z0-9_][A-Za-z0-9_.-]*(/[A-Za-z0-9_][A-Za-z0-9_.-]*)*)$"
# A relative file path in the repo without `.`/`..` segments, ending in .yaml or .yml.
REPO_PATH_PATTERN = r"^([A-Za-z0-9_][A-Za-z0-9_.-]*/)*[A-Za-z0-9_][A-Za-z0-9_.-]*\.ya?ml$"
# scheme://host[:port][/path]: no userinfo, query or fragment (they could smuggle a second host).
ENDPOINT_PATTERN = r"^https?://[A-Za-z0-9.-]+(:[0-9]{1,5})?(/[A-Za-z0-9._~-]+)*/?$"
# Datadog tag keys and values: no `*`, `,`, `{`, `}`, spaces or quotes, which would widen or
# rewrite the query they are put into (services/metrics.py).
TAG_KEY_PATTERN = r"^[A-Za-z][A-Za-z0-9_.-]{0,99}$"
TAG_VALUE_PATTERN = r"^[A-Za-z0-9_.:/-]{1,200}$"
OWNER_PATTERN = r"^@?[A-Za-z0-9][A-Za-z0-9_./-]{0,99}$"
ACCOUNT_PATTERN = r"^[0-9]{12}$"
# Base64 of a PEM bundle, as eks:DescribeCluster's certificateAuthority.data.
CA_DATA_PATTERN = r"^[A-Za-z0-9+/=\s]+$"


class Cluster(BaseModel):
    """One EKS cluster as the registry knows it."""

    model_config = ConfigDict(extra="forbid")

    cluster_id: str = Field(pattern=NAME_PATTERN)
    batch_id: str = Field(pattern=DNS_LABEL_PATTERN)
    environment: str = Field(pattern=TAG_VALUE_PATTERN)
    region: str = Field(pattern=REGION_PATTERN)
    gitlab_project: str = Field(pattern=PROJECT_PATTERN, max_length=500,
                                description="Project path or numeric id of the GitOps repo")
    flux_config_path: str = Field(pattern=REPO_PATH_PATTERN, max_length=1024,
                                  description="Path of the Istio HelmRelease file in the repo")
    # Its shape and account are checked by guard.config.accounts (at import and Plan), with the reason.
    aws_role_arn: str | None = Field(default=None, max_length=2048,
                                     description="Role assumed to reach the EKS API")
    # The account the cluster lives in; when given it must be the role's account (the token is
    # signed by the role for `eks_cluster_name`, so both must name the same cluster).
    aws_account_id: str | None = Field(default=None, pattern=ACCOUNT_PATTERN)
    api_endpoint: str | None = Field(default=None, pattern=ENDPOINT_PATTERN, max_length=2048,
                                     description="Overrides the endpoint from eks:DescribeCluster; only to a host "
                                                 "of aws.allowed_api_endpoints or with api_ca_data")
    # The CA that must have signed `api_endpoint`'s certificate (base64 PEM, as EKS reports it):
    # with it, a public CA's certificate for another host is not accepted.
    api_ca_data: str | None = Field(default=None, pattern=CA_DATA_PATTERN, max_length=65536)
    eks_cluster_name: str | None = Field(default=None, pattern=NAME_PATTERN)
    current_istio_version: str
    datadog_tags: dict[Annotated[str, Field(pattern=TAG_KEY_PATTERN)],
                       Annotated[str, Field(pattern=TAG_VALUE_PATTERN)]] = Field(default_factory=dict)
    owner_team: str | None = Field(default=None, pattern=OWNER_PATTERN)
    owner_handle: str | None = Field(default=None, pattern=OWNER_PATTERN)
    status: str = Field(default="healthy", pattern=r"^[a-z_]{1,32}$")
    helm_release_name: str = Field(default="istiod", pattern=DNS_LABEL_PATTERN)
    helm_release_namespace: str = Field(default="istio-system", pattern=DNS_LABEL_PATTERN)
    # What each Istio component was last observed to run ("istiod", "ztunnel", "cni", "gateway ns/name");
    # empty for items written before GUARD tracked components.
    component_versions: dict[Annotated[str, Field(max_length=300)], Annotated[str, Field(max_length=200)]] = Field(
        default_factory=dict)
    upgrade_history: list[UpgradeRecord] = Field(default_factory=list)

    @property
    def version(self) -> Version:
        return Version.parse(self.current_istio_version)


class HealthCheckResult(BaseModel):
    """Result of one check on one cluster; `details` holds the numbers behind it."""

    cluster_id: str
    check_name: str
    status: CheckStatus
    message: str
    timestamp: datetime = Field(default_factory=lambda: datetime.now(UTC))
    details: dict[str, Any] = Field(default_factory=dict)

    @property
    def passed(self) -> bool:
        return self.status in (CheckStatus.PASS, CheckStatus.WARN, CheckStatus.SKIPPED)

    @classmethod
    def inconclusive(cls, cluster_id: str, check_name: str, error: Exception | str) -> HealthCheckResult:
        """The check could not be answered because of `error` (after the retry policy)."""
        return cls(cluster_id=cluster_id, check_name=check_name, status=CheckStatus.INCONCLUSIVE,
                   message=f"could not check: {error}")
