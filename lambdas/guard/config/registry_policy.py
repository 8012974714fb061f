"""What a registry cluster may point GUARD at, checked against the tenant config.

The registry table is data, and GUARD turns its fields into places it sends credentials and
commits: `api_endpoint` receives a bearer token signed for `eks_cluster_name`, and
`gitlab_project` / `flux_config_path` receive commits. The model (guard.core.models.Cluster)
fixes each field's shape; this module fixes where they may lead:

- `api_endpoint` only to a host of `aws.allowed_api_endpoints`, or with the cluster's CA pinned
  (`api_ca_data`); otherwise the endpoint and CA come from eks:DescribeCluster in the role's account.
- `aws_account_id`, when given, is the account of `aws_role_arn`.
- `gitlab_project` one of `gitlab.projects` (when set), `flux_config_path` under
  `gitlab.allowed_path_prefixes`.

`registry import` and Plan refuse a cluster that breaks them, and the EKS connector checks the
endpoint and account again before it signs any token (the registry may change after Plan).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from urllib.parse import urlsplit

from guard.config.accounts import role_account
from guard.config.models import TenantConfig
from guard.core.models import Cluster
from guard.errors import ConfigError

ENDPOINTS_KEY = "aws.allowed_api_endpoints"
PROJECTS_KEY = "gitlab.projects"
PREFIXES_KEY = "gitlab.allowed_path_prefixes"


def host_allowed(host: str, patterns: Sequence[str]) -> bool:
    """Whether `host` is one of `patterns` ("name" exactly, "*.domain" any name under domain)."""
    host = host.lower().rstrip(".")
    for pattern in patterns:
        pattern = pattern.lower()
        if pattern.startswith("*."):
            if host.endswith(pattern[1:]) and len(host) > len(pattern) - 1:
                return True
        elif host == pattern:
            return True
    return False


def endpoint_problem(cluster: Cluster, allowed: Sequence[str]) -> str | None:
    """Why GUARD must not send `cluster`'s token to its `api_endpoint`; None when it may."""
    if not cluster.api_endpoint:
        return None
    host = urlsplit(cluster.api_endpoint).hostname or ""
    if host_allowed(host, allowed) or cluster.api_ca_data:
        return None
    listed = ", ".join(allowed) if allowed else "nothing"
    return (f"cluster {cluster.cluster_id}: api_endpoint host '{host}' is not in {ENDPOINTS_KEY} (which lists "
            f"{listed}) and the registry pins no api_ca_data for it; remove api_endpoint to use the endpoint "
            f"eks:DescribeCluster reports, pin the cluster's CA, or add the host to {ENDPOINTS_KEY}")


def account_problem(cluster: Cluster) -> str | None:
    """Why the registry's account and the role's account disagree; None when they agree (or say nothing)."""
    if cluster.aws_account_id is None or cluster.aws_role_arn is None:
        return None
    try:
        account = role_account(cluster.aws_role_arn)
    except ValueError:
        return None  # reported by guard.config.accounts with the reason
    if account != cluster.aws_account_id:
        return (f"cluster {cluster.cluster_id}: aws_account_id {cluster.aws_account_id} but aws_role_arn is in "
                f"account {account}; the token would be signed for a cluster of another account")
    return None


def connection_problems(cluster: Cluster, allowed: Sequence[str]) -> list[str]:
    """What forbids signing a token for `cluster` and sending it where the registry says."""
    return [p for p in (account_problem(cluster), endpoint_problem(cluster, allowed)) if p]


def registry_problems(clusters: Iterable[Cluster], config: TenantConfig) -> list[str]:
    """One line per registry field that would lead GUARD where the tenant config does not allow."""
    problems: list[str] = []
    projects = config.gitlab.projects
    prefixes = config.gitlab.allowed_path_prefixes
    for cluster in clusters:
        problems += connection_problems(cluster, config.aws.allowed_api_endpoints)
        if projects is not None and cluster.gitlab_project not in projects:
            problems.append(f"cluster {cluster.cluster_id}: gitlab_project '{cluster.gitlab_project}' is not in "
                            f"{PROJECTS_KEY} ({', '.join(projects)})")
        if not any(cluster.flux_config_path.startswith(prefix) for prefix in prefixes):
            problems.append(f"cluster {cluster.cluster_id}: flux_config_path '{cluster.flux_config_path}' is not "
                            f"under {PREFIXES_KEY} ({', '.join(prefixes)})")
    return problems


def refuse_untrusted(clusters: Iterable[Cluster], config: TenantConfig, what: str) -> None:
    """ConfigError naming every registry field the tenant config does not allow."""
    problems = registry_problems(clusters, config)
    if problems:
        raise ConfigError(f"{what}: " + "; ".join(problems))
