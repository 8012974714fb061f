"""Which cluster roles GUARD may assume: `aws.cluster_accounts` checked against the registry.

The cluster-facing functions may only `sts:AssumeRole` on `arn:<partition>:iam::<account>:role/guard-*`
for the listed accounts (infra/lambda_functions.py). A registry cluster whose `aws_role_arn` is
outside that is refused before anything changes (at `registry import` and at Plan), instead of
failing later with AccessDenied halfway through a run.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence

from guard.core.models import Cluster
from guard.errors import ConfigError

CONFIG_KEY = "aws.cluster_accounts"
ROLE_NAME_PREFIX = "guard-"
# arn:<partition>:iam::<account>:role/<path/><name>; IAM allows [\w+=,.@-] in names, 64 characters.
_ROLE_ARN = re.compile(r"arn:aws(?:-[a-z]+)*:iam::(?P<account>[0-9]{12}):role/(?P<path>(?:[\w+=,.@-]+/)*)"
                       r"(?P<name>[\w+=,.@-]{1,64})")


def role_account(role_arn: str) -> str:
    """The account of an IAM role ARN; ValueError when it is not one GUARD may assume."""
    match = _ROLE_ARN.fullmatch(role_arn)
    if match is None:
        raise ValueError(f"'{role_arn}' is not an IAM role ARN (arn:aws:iam::<12-digit account>:role/<name>)")
    if match["path"] or not match["name"].startswith(ROLE_NAME_PREFIX):
        raise ValueError(f"role '{role_arn}' is not named {ROLE_NAME_PREFIX}* without a path; GUARD may only "
                         f"assume roles arn:aws:iam::<account>:role/{ROLE_NAME_PREFIX}*")
    return match["account"]


def account_problems(clusters: Iterable[Cluster], listed: Sequence[str] | None,
                     own_account: Callable[[], str]) -> list[str]:
    """One line per cluster whose role GUARD may not assume; [] when all may be reached.

    `listed` is `aws.cluster_accounts`; None (left out) allows only the account GUARD runs in,
    which `own_account` tells, asked only when a role has to be checked. A cluster without
    `aws_role_arn` is reached with the function's own role (no AssumeRole).
    """
    problems: list[str] = []
    allowed: list[str] | None = None
    for cluster in clusters:
        if cluster.aws_role_arn is None:
            continue
        try:
            account = role_account(cluster.aws_role_arn)
        except ValueError as e:
            problems.append(f"cluster {cluster.cluster_id}: aws_role_arn {e}")
            continue
        if allowed is None:
            allowed = list(listed) if listed is not None else [own_account()]
        if account not in allowed:
            why = (f"{CONFIG_KEY} lists {', '.join(allowed)}" if listed is not None
                   else f"{CONFIG_KEY} is not set, so only the account GUARD runs in ({allowed[0]}) is allowed")
            problems.append(f"cluster {cluster.cluster_id}: its role {cluster.aws_role_arn} is in account {account}, "
                            f"which GUARD may not reach: {why}; add {account} to {CONFIG_KEY} and deploy")
    return problems


def refuse_unreachable(clusters: Iterable[Cluster], listed: Sequence[str] | None, own_account: Callable[[], str],
                       what: str) -> None:
    """ConfigError naming every cluster (and its account) whose role GUARD may not assume."""
    problems = account_problems(clusters, listed, own_account)
    if problems:
        raise ConfigError(f"{what}: " + "; ".join(problems))
