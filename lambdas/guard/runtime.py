"""The handler edge: the only place that reads the environment and builds clients.

Services get everything passed in. Heavy SDKs (kubernetes, datadog, gitlab) are imported
inside the builder that needs them, so a function imports only what it uses.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from guard.clock import SystemClock
from guard.config.loader import parse_config
from guard.config.models import TenantConfig
from guard.errors import ConfigError, ExternalServiceError, GuardError

if TYPE_CHECKING:
    from guard.ports import (
        ChartRepository,
        Clock,
        ClusterConnector,
        EvidenceConnector,
        FailureAnalyst,
        GitOpsRepo,
        MetricsProvider,
        Notifier,
        ProjectMembers,
        TaskCallbacks,
    )
    from guard.services.custom_checks import CustomChecks
    from guard.services.decision import DecisionService
    from guard.services.markers import UpgradeMarkers
    from guard.services.observation import RegistryObserver
    from guard.stores.deliveries import Deliveries
    from guard.stores.failure import FailureStore
    from guard.stores.registry import ClusterRegistry
    from guard.stores.rollouts import RolloutStore
    from guard.stores.state import StateStore
    from guard.vendor_slots import VendorSlots

_TASK_ROOT = Path(os.environ.get("LAMBDA_TASK_ROOT", Path(__file__).resolve().parent.parent))

# The rehearsal swaps this for a ScaledClock so deadlines and metric windows compress.
clock: Clock = SystemClock()


def env(name: str) -> str:
    value = os.environ.get(name)
    if not value:
        raise ConfigError(f"environment variable {name} is not set")
    return value


@cache
def config() -> TenantConfig:
    path = Path(os.environ.get("GUARD_CONFIG_FILE", "tenant/config.json"))
    if not path.is_absolute():
        path = _TASK_ROOT / path
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read tenant config {path}: {e}") from e
    return parse_config(data, str(path))


def checks_dir() -> Path:
    path = Path(os.environ.get("GUARD_CHECKS_DIR", "tenant/checks"))
    return path if path.is_absolute() else _TASK_ROOT / path


@cache
def _boto3_session() -> Any:
    import boto3

    return boto3.session.Session()


def aws_client(service: str) -> Any:
    return _aws_client(service, os.environ.get("AWS_ENDPOINT_URL"))


@cache
def _aws_client(service: str, _endpoint: str | None) -> Any:
    # Keyed on the endpoint so the rehearsal's emulator address is never served a stale client.
    return _boto3_session().client(service, config=_aws_config())


def _aws_config() -> Any:
    """Every AWS client's retries (guard.retry.AWS_RETRIES: standard mode, jittered backoff on
    throttling and 5xx) and bounded timeouts."""
    from botocore.config import Config

    from guard.retry import AWS_RETRIES

    return Config(retries=AWS_RETRIES, connect_timeout=5, read_timeout=20)


def own_account() -> str:
    """The account GUARD runs in: GUARD_ACCOUNT_ID (the stack sets it to its own account), else
    STS GetCallerIdentity (the rehearsal), asked once per cold start."""
    return os.environ.get("GUARD_ACCOUNT_ID") or _caller_account(os.environ.get("AWS_ENDPOINT_URL"))


@cache
def _caller_account(_endpoint: str | None) -> str:
    from botocore.exceptions import BotoCoreError, ClientError

    try:
        return str(aws_client("sts").get_caller_identity()["Account"])
    except (ClientError, BotoCoreError) as e:
        raise ExternalServiceError(f"sts:GetCallerIdentity (the account GUARD runs in): {e}") from e


def registry() -> ClusterRegistry:
    # Imported here, like every store: a function that never reads the registry (WebhookAuthorizer)
    # does not load the stores and the run models at cold start.
    from guard.stores.registry import ClusterRegistry

    return ClusterRegistry(_table(env("GUARD_REGISTRY_TABLE")), env("GUARD_TENANT"))


def state() -> StateStore:
    from guard.stores.state import StateStore

    return StateStore(_table(env("GUARD_STATE_TABLE")))


def rollouts() -> RolloutStore:
    """Rollout records, in the same state table as runs."""
    from guard.stores.rollouts import RolloutStore

    return RolloutStore(_table(env("GUARD_STATE_TABLE")))


def _table(name: str) -> Any:
    return _resource("dynamodb", os.environ.get("AWS_ENDPOINT_URL")).Table(name)


@cache
def _resource(service: str, _endpoint: str | None) -> Any:
    return _boto3_session().resource(service, config=_aws_config())


def secret(name: str) -> str:
    """A Secrets Manager secret's string (cached per cold start)."""
    return _secret(name, os.environ.get("AWS_ENDPOINT_URL"))


@cache
def _secret(name: str, _endpoint: str | None) -> str:
    from botocore.exceptions import ClientError

    try:
        value = aws_client("secretsmanager").get_secret_value(SecretId=name)["SecretString"]
    except ClientError as e:
        code = e.response.get("Error", {}).get("Code", "")
        raise ExternalServiceError(f"cannot read secret '{name}': {code}") from e
    return str(value)


def gitops_repo() -> GitOpsRepo:
    from guard.adapters.gitlab_repo import GitLabRepo

    cfg = config()
    return GitLabRepo.from_token(cfg.gitlab.url, secret(cfg.aws.secrets_manager.gitlab_token_secret),
                                 timeout_seconds=cfg.gitlab.timeout_seconds, clock=clock, slots=vendor_slots("gitlab"))


def gitlab_reader_repo() -> GitOpsRepo:
    """The GitLab adapter with the Reporter account's token (`gitlab_reader_token_secret`, else the push
    token): for reading merge requests and writing comments, never for commits."""
    from guard.adapters.gitlab_repo import GitLabRepo

    cfg = config()
    return GitLabRepo.from_token(cfg.gitlab.url, secret(cfg.aws.secrets_manager.gitlab_reader_secret),
                                 timeout_seconds=cfg.gitlab.timeout_seconds, clock=clock, slots=vendor_slots("gitlab"))


def gitops_repo_for_comments(log_warning: Callable[..., Any]) -> GitOpsRepo | None:
    """The GitLab adapter, or None when GitLab cannot be reached: recording an outcome must not
    wait on it, and only the MR comment is lost."""
    try:
        return gitops_repo()
    except GuardError as e:
        log_warning("GitLab unavailable; the merge request gets no comment", extra={"error": str(e)})
        return None


def decision_service(sfn: TaskCallbacks) -> DecisionService:
    """The `/guard proceed|rollback` service that answers decision waits through `sfn` (webhook, reconciler)."""
    from guard.services.decision import DecisionService

    return DecisionService(state(), failure_store(), sfn, project_members(), gitlab_reader_repo(), clock,
                           timeout_hours=config().rollback.decision_timeout_hours,
                           bot_usernames=config().gitlab.bot_usernames)


@cache
def vendor_slots(vendor: str) -> VendorSlots | None:
    """The Lambda environment's one cap on calls in flight to `vendor`, shared by every client of it
    (execution.vendor_concurrency split across the Lambdas that run at once); None: not capped."""
    from guard.vendor_slots import VendorSlots

    slots = config().execution.vendor_slots(vendor)
    return VendorSlots(vendor, slots) if slots is not None else None


def datadog_keys(raw: str, secret_name: str) -> tuple[str, str]:
    """(api key, application key) from the Datadog secret's JSON; ConfigError naming the secret otherwise."""
    try:
        keys = json.loads(raw)
        return str(keys["api_key"]), str(keys["app_key"])
    except (ValueError, KeyError, TypeError) as e:
        raise ConfigError(f"secret '{secret_name}' must be JSON " '{"api_key": ..., "app_key": ...}') from e


def metrics_provider() -> MetricsProvider:
    from guard.adapters.datadog_metrics import DatadogMetrics

    cfg = config()
    name = cfg.aws.secrets_manager.datadog_credentials_secret
    api_key, app_key = datadog_keys(secret(name), name)
    return DatadogMetrics.from_keys(api_key, app_key, site=cfg.datadog.site,
                                    host=os.environ.get("GUARD_DATADOG_HOST") or None,
                                    timeout_seconds=cfg.datadog.timeout_seconds, clock=clock,
                                    interval_seconds=cfg.validation.metric_interval_seconds,
                                    slots=vendor_slots("datadog"))


def upgrade_markers(log_warning: Callable[..., Any] | None = None) -> UpgradeMarkers:
    """Datadog events and graph snapshots (`guard.services.markers`), best effort: without readable Datadog
    credentials, markers that post nothing (logged), never an error that fails the task."""
    from guard.adapters.datadog_metrics import DatadogMetrics
    from guard.retry import policy
    from guard.services.markers import UpgradeMarkers

    cfg = config()
    try:
        name = cfg.aws.secrets_manager.datadog_credentials_secret
        api_key, app_key = datadog_keys(secret(name), name)
    except GuardError as e:
        (log_warning or (lambda *a, **k: None))("no Datadog markers", extra={"error": str(e)})
        return UpgradeMarkers(None, cfg.tenant, log_warning)
    # A marker is never worth a long wait: a longer rate limit gives up (the run goes on).
    client = DatadogMetrics.from_keys(api_key, app_key, site=cfg.datadog.site,
                                      host=os.environ.get("GUARD_DATADOG_HOST") or None,
                                      timeout_seconds=cfg.datadog.timeout_seconds, clock=clock,
                                      retry=policy(clock.sleep, attempts=3, max_inline_wait_seconds=5),
                                      slots=vendor_slots("datadog"))
    return UpgradeMarkers(client, cfg.tenant, log_warning)


def chart_repository() -> ChartRepository:
    """Published chart versions (Helm repository index.yaml, OCI tags list) over HTTPS."""
    from guard.adapters.chart_registry import HttpChartRepository

    return HttpChartRepository(timeout_seconds=config().gitlab.timeout_seconds, clock=clock)


def cluster_connector() -> ClusterConnector:
    from guard.adapters.eks_connector import EksConnector
    from guard.retry import policy

    return EksConnector(_boto3_session(), retry=policy(clock.sleep),
                        allowed_endpoints=config().aws.allowed_api_endpoints, slots=vendor_slots("kubernetes"))


def custom_checks() -> CustomChecks | None:
    """The CustomChecks function when the stack names one (GUARD_CUSTOM_CHECKS_FUNCTION) and the tenant
    has custom checks; None: Precheck runs them itself."""
    from guard.services.custom_checks import LambdaChecks

    name = os.environ.get("GUARD_CUSTOM_CHECKS_FUNCTION")
    if not name or not config().custom_checks:
        return None
    return LambdaChecks(aws_client("lambda"), name)


def registry_observer(log_warning: Callable[..., Any]) -> RegistryObserver:
    """Reads what the clusters run and sets the registry to it (kubernetes imported when a cluster is read)."""
    from guard.services.observation import RegistryObserver

    return RegistryObserver(registry(), cluster_connector(), clock, log_warning=log_warning)


def reset() -> None:
    """Forget cached config, clients and secrets (a new tenant or emulator in the same process)."""
    for cached in (config, _boto3_session, _aws_client, _resource, _secret, _caller_account, vendor_slots):
        cached.cache_clear()


# ---------------------------------------------------------------- failure handling (issue 4)
# Builders for the failure path; each imports its SDK only when called.


def failure_store() -> FailureStore:
    from guard.stores.failure import FailureStore

    return FailureStore(_table(env("GUARD_STATE_TABLE")),
                        evidence_retention_days=config().rollback.evidence_retention_days)


def step_functions() -> Any:
    return aws_client("stepfunctions")


def llm_analyst() -> FailureAnalyst:
    """The configured LLM backend, with its API key from Secrets Manager (openai/anthropic imported here)."""
    from guard.llm.factory import build_analyst

    cfg = config().llm
    return build_analyst(cfg, secret(cfg.api_key_secret))


def evidence_connector() -> EvidenceConnector:
    from guard.adapters.eks_connector import EksConnector
    from guard.adapters.kubernetes_api import KubernetesEvidenceConnector
    from guard.retry import policy

    return KubernetesEvidenceConnector(EksConnector(_boto3_session(), retry=policy(clock.sleep),
                                                    allowed_endpoints=config().aws.allowed_api_endpoints,
                                                    slots=vendor_slots("kubernetes")))


def project_members() -> ProjectMembers:
    from guard.adapters.gitlab_repo import GitLabMembers

    cfg = config()
    return GitLabMembers.from_token(cfg.gitlab.url, secret(cfg.aws.secrets_manager.gitlab_reader_secret),
                                    timeout_seconds=cfg.gitlab.timeout_seconds, clock=clock,
                                    slots=vendor_slots("gitlab"))


def notifiers() -> list[Notifier]:
    """Slack when `notifications.slack_webhook_secret` is set; SNS when `sns_topic` is true
    (topic ARN in GUARD_NOTIFY_TOPIC_ARN, set by the stack)."""
    cfg = config().notifications
    found: list[Notifier] = []
    if cfg.slack_webhook_secret:
        from guard.notify.slack import SlackNotifier

        found.append(SlackNotifier(secret(cfg.slack_webhook_secret), timeout_seconds=cfg.timeout_seconds))
    if cfg.sns_topic:
        from guard.notify.sns import SnsNotifier

        found.append(SnsNotifier(aws_client("sns"), env("GUARD_NOTIFY_TOPIC_ARN")))
    return found


# ---------------------------------------------------------------- webhook deliveries


def deliveries() -> Deliveries:
    """Webhook deliveries applied once, recorded in the state table (Powertools idempotency imported here)."""
    from guard.stores.deliveries import Deliveries

    # A plain client: a Table resource's client re-serializes the typed items Powertools writes.
    return Deliveries(aws_client("dynamodb"), env("GUARD_STATE_TABLE"))
