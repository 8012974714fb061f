"""Domain models shared by services, adapters and custom checks.

`Cluster`, `HealthCheckResult` and `CheckStatus` are public: tenant custom checks import
them as `from guard.core.models import HealthCheckResult, CheckStatus, Cluster`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

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


class Cluster(BaseModel):
    """One EKS cluster as the registry knows it."""

    model_config = ConfigDict(extra="forbid")

    cluster_id: str = Field(min_length=1)
    batch_id: str = Field(min_length=1)
    environment: str = Field(min_length=1)
    region: str = Field(min_length=1)
    gitlab_project: str = Field(min_length=1, description="Project path or numeric id of the GitOps repo")
    flux_config_path: str = Field(min_length=1, description="Path of the Istio HelmRelease file in the repo")
    aws_role_arn: str | None = Field(default=None, description="Role assumed to reach the EKS API")
    api_endpoint: str | None = Field(default=None, description="Overrides the endpoint from eks:DescribeCluster")
    eks_cluster_name: str | None = None
    current_istio_version: str
    datadog_tags: dict[str, str] = Field(default_factory=dict)
    owner_team: str | None = None
    owner_handle: str | None = None
    status: str = "healthy"
    helm_release_name: str = "istiod"
    helm_release_namespace: str = "istio-system"
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
