"""The tenant config schema. Keys are named as the seed's YAML names them.

Every model forbids unknown keys so a misspelt key fails loudly (and fails the synth)
instead of silently falling back to a default.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from guard.datadog_query import UnsplittableQuery
from guard.datadog_query import split as split_query
from guard.rules import overlay, parse_key, parse_rules
from guard.vocabulary.events import NotificationEvent

_NAME = r"^[a-z0-9]([a-z0-9-]*[a-z0-9])?$"
NAME_PATTERN = _NAME
# The tenant of a config that names none and of `config.yaml` (guard.config.loader).
DEFAULT_TENANT = "default"
_PLACEHOLDERS = {"environment", "cluster_name", "cluster_id", "region"}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class DynamoDbConfig(_Strict):
    table_name: str = "guard-cluster-registry"
    state_table_name: str = "guard-state"


class SecretsConfig(_Strict):
    gitlab_token_secret: str = "guard/gitlab-token"
    datadog_credentials_secret: str = "guard/datadog-credentials"
    webhook_secret: str = "guard/gitlab-webhook-token"
    # A GitLab token of a Reporter account (reads members and MRs, writes comments) for the
    # internet-facing webhook and the decision comments; None: the one gitlab_token_secret, so
    # configs written before the split keep working (docs/security.md#gitlab-accounts).
    gitlab_reader_token_secret: str | None = None

    @property
    def gitlab_reader_secret(self) -> str:
        """The secret the reading functions use: the Reporter token, else the push token."""
        return self.gitlab_reader_token_secret or self.gitlab_token_secret


class AwsConfig(_Strict):
    region: str = "us-east-1"
    dynamodb: DynamoDbConfig = DynamoDbConfig()
    secrets_manager: SecretsConfig = SecretsConfig()
    # Accounts whose guard-* roles the cluster-facing functions may assume. None: only the
    # account GUARD runs in (resolved at synth when the stack's account is known, else at run time).
    cluster_accounts: list[str] | None = None

    @field_validator("cluster_accounts", mode="before")
    @classmethod
    def _account_ids(cls, value: Any) -> Any:
        if not isinstance(value, list):
            return value  # None, or pydantic's own "should be a valid list"
        for account in value:
            if not isinstance(account, str):
                # YAML reads an unquoted id as a number, which can lose leading zeros.
                raise ValueError(f"account id {account!r} must be a quoted string of 12 digits ('111122223333')")
            if not re.fullmatch(r"[0-9]{12}", account):
                raise ValueError(f"account id '{account}' is not 12 digits")
        dupes = sorted({a for a in value if value.count(a) > 1})
        if dupes:
            raise ValueError(f"account listed twice: {', '.join(dupes)}")
        if not value:
            raise ValueError("list at least one account, or leave the key out for the account GUARD runs in")
        return value

    # Hosts a registry cluster's `api_endpoint` may name ("k8s-proxy.internal.example", or
    # "*.internal.example" for any name under it). Empty: an override is only used with the
    # cluster's CA pinned in the registry (`api_ca_data`); otherwise GUARD uses the endpoint and
    # CA of eks:DescribeCluster. Never list a pattern anyone can get a name under (such as
    # *.eks.amazonaws.com): the token GUARD sends there is accepted by the cluster it names.
    allowed_api_endpoints: list[str] = Field(default_factory=list)

    @field_validator("allowed_api_endpoints")
    @classmethod
    def _host_patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not re.fullmatch(r"(\*\.)?[A-Za-z0-9-]+(\.[A-Za-z0-9-]+)*", pattern):
                raise ValueError(f"'{pattern}' is not a host name or '*.<domain>' (no scheme, port or path)")
            if pattern.startswith("*.") and "." not in pattern[2:]:
                raise ValueError(f"'{pattern}' would allow a whole top-level domain")
        return value


class GitLabConfig(_Strict):
    url: str = "https://gitlab.com"
    target_branch: str = "main"
    branch_prefix: str = "guard/istio-upgrade"
    merge_timeout_hours: float = Field(default=72, gt=0, le=24 * 365)
    timeout_seconds: float = Field(default=10, gt=0, le=60)
    # Every this many minutes the reconciler asks GitLab about each MR an execution waits on (lost webhooks).
    reconcile_minutes: int = Field(default=5, ge=1, le=24 * 60)
    # Ask GitLab to merge GUARD's MRs once their pipeline succeeds (auto-merge); a person still approves
    # where the project requires it. Off: a person clicks Merge.
    auto_merge: bool = False
    # Accounts whose comments are never commands, besides the token's own (read from GET /user): e.g.
    # an older bot account, or another automation that quotes GUARD's notes.
    bot_usernames: list[str] = Field(default_factory=list, max_length=50)
    # The GitOps projects registry clusters may name (path or numeric id); None: not restricted
    # (`registry import` warns). A cluster naming another project is refused at import and at Plan.
    projects: list[str] | None = None
    # Prefixes a cluster's flux_config_path must start with: GUARD commits only under them.
    allowed_path_prefixes: list[str] = Field(default_factory=lambda: ["clusters/"], min_length=1)
    # Only GitLab's egress addresses may call the webhook (WAF); None: any source, rate-limited per IP.
    webhook_source_cidrs: list[str] | None = None
    # Requests one source address may make to the webhook per 5 minutes before WAF blocks it.
    webhook_rate_limit_per_5_minutes: int = Field(default=300, ge=10, le=2_000_000_000)

    @field_validator("webhook_source_cidrs")
    @classmethod
    def _cidrs(cls, value: list[str] | None) -> list[str] | None:
        import ipaddress

        for cidr in value or []:
            try:
                ipaddress.ip_network(cidr)
            except ValueError as e:
                raise ValueError(f"'{cidr}' is not a CIDR block ({e})") from None
        if value is not None and not value:
            raise ValueError("list at least one CIDR, or leave the key out")
        return value


class DatadogConfig(_Strict):
    site: str = "datadoghq.com"
    queries: dict[str, str] = Field(
        default_factory=lambda: {
            "error_rate": "sum:trace.http.request.errors{env:{environment},cluster_name:{cluster_name}}.as_count()"
            " / sum:trace.http.request.hits{env:{environment},cluster_name:{cluster_name}}.as_count()",
            "latency_p95": "avg:trace.http.request.duration.by.service.95p{env:{environment},"
            "cluster_name:{cluster_name}}",
        }
    )
    timeout_seconds: float = Field(default=10, gt=0, le=60)

    @field_validator("queries")
    @classmethod
    def _placeholders_known(cls, queries: dict[str, str]) -> dict[str, str]:
        for name, query in queries.items():
            if not re.match(r"^[a-z][a-z0-9_]*$", name):
                raise ValueError(f"query name '{name}' must be lower_snake_case")
            for placeholder in re.findall(r"\{([a-z_]+)\}", query):
                if placeholder not in _PLACEHOLDERS:
                    raise ValueError(
                        f"query '{name}' uses unknown placeholder {{{placeholder}}}; "
                        f"known: {', '.join(sorted(_PLACEHOLDERS))}"
                    )
            # Datadog's v2 API refuses arithmetic in a query; GUARD sends it as queries plus a formula
            # (guard.datadog_query). Refuse here what cannot be split, rather than at the first validation.
            try:
                rendered = re.sub(r"\{([a-z_]+)\}", lambda m: "x" if m.group(1) in _PLACEHOLDERS else m.group(0), query)
                split_query(rendered)
            except UnsplittableQuery as e:
                raise ValueError(f"query '{name}' is not a Datadog metric query or a formula over them: {e}") from e
        return queries


class ValidationConfig(_Strict):
    soak_period_minutes: float = Field(default=60, ge=0, le=60 * 24 * 7)
    # An inconclusive batch is validated once more after this extra soak before a person is asked
    # (data that arrived late, a quiet hour); 0 asks at once.
    revalidate_after_minutes: float = Field(default=15, ge=0, le=24 * 60)
    flux_sync_timeout_minutes: float = Field(default=15, gt=0, le=24 * 60)
    flux_poll_seconds: int = Field(default=30, ge=1, le=3600)
    baseline_window_minutes: float = Field(default=60, gt=0, le=7 * 24 * 60)
    metric_interval_seconds: int = Field(default=60, ge=10, le=3600)
    # A window is judged only with at least this many complete buckets...
    min_data_points: int = Field(default=5, ge=1)
    # ...and only when they cover this share of the buckets its length implies (both windows).
    min_coverage: float = Field(default=0.7, gt=0, le=1)
    # From this many points in both windows a relative rule is decided by a rank test (Mann-Whitney U
    # against the limit); below it the robust change alone decides.
    significance_min_points: int = Field(default=8, ge=3)
    # Per comparison: a relative rule fails only when p <= 1 - confidence, p testing "the change is
    # still within the limit". 0.85: healthy changes (well inside the limit) then fail about 0.2% of
    # the time on the judge benchmark while most regressions are caught (docs/validation.md).
    confidence: float = Field(default=0.85, gt=0.5, lt=1)
    # Per batch: the rank tests of all clusters are corrected together so that a healthy batch is
    # rolled back with at most this probability (holm: family-wise error; bh: false discovery rate),
    # counting only the tests whose change lies past the limit (guard.judge.judge_batch).
    batch_error_rate: float = Field(default=0.01, gt=0, lt=0.5)
    batch_correction: Literal["holm", "bh"] = "holm"
    # Thresholds: the standard ones plus `<query>_min` / `<query>_max` for any named query.
    thresholds: dict[str, float] = Field(
        default_factory=lambda: {"latency_increase_percent": 10.0, "error_rate_max": 0.001}
    )


# What an execution input may set that this config also decides (guard.config.overrides).
OverrideName = Literal["ensure_pdb", "ignore_alerts", "soak_period_minutes", "on_failure", "max_concurrent_batches"]


VENDORS = ("datadog", "gitlab", "kubernetes")


class VendorConcurrency(_Strict):
    """Fleet-wide caps on calls in flight to each vendor (None: no cap beyond the fan-out's own).

    Split evenly across the Lambdas that may run at once (`ExecutionConfig.vendor_slots`)."""

    datadog: int | None = Field(default=None, ge=1, le=10_000)
    gitlab: int | None = Field(default=None, ge=1, le=10_000)
    kubernetes: int | None = Field(default=None, ge=1, le=10_000)


class ExecutionConfig(_Strict):
    max_concurrent_clusters: int = Field(default=5, ge=1, le=40)
    # The per-cluster stages (Prechecks, Validate) run as one Map iteration per chunk of this many
    # clusters, each a Lambda doing its chunk's clusters `max_concurrent_clusters` at a time: the
    # execution's history grows with the chunks, not the clusters (docs/scale.md).
    cluster_chunk_size: int = Field(default=25, ge=1, le=200)
    max_concurrent_chunks: int = Field(default=4, ge=1, le=40)
    max_concurrent_batches: int = Field(default=3, ge=1, le=40)
    enable_rollout_sequencing: bool = True
    pod_disruption_budget_required: bool = False
    min_ready_replicas_percent: float = Field(default=80, ge=0, le=100)
    max_minor_version_skip: int = Field(default=1, ge=1, le=2)
    # Rollout sequencing: injected Deployments restarted per wave (per cluster), and how long
    # all waves may take before the batch fails with SidecarRestartTimeout.
    sidecar_restart_wave_size: int = Field(default=2, ge=1, le=50)
    sidecar_restart_timeout_minutes: float = Field(default=30, gt=0, le=24 * 60)
    lock_ttl_hours: float = Field(default=24 * 8, gt=0)
    # Execution-input fields that may loosen this config for one run (guard.config.overrides);
    # an input that loosens any other is refused. Stricter inputs are always allowed.
    allowed_overrides: list[OverrideName] = Field(default_factory=list)
    # At most this many calls to a vendor at once across the tenant's running per-cluster work
    # (docs/config.md "Vendor load"): each Lambda gets vendor_slots() of them.
    vendor_concurrency: VendorConcurrency = Field(default_factory=VendorConcurrency)

    @property
    def concurrent_lambdas(self) -> int:
        """How many per-cluster Lambdas of this tenant may run at once: chunks of each batch x batches."""
        return self.max_concurrent_chunks * self.max_concurrent_batches

    def vendor_slots(self, vendor: str) -> int | None:
        """Calls to `vendor` one Lambda environment may have in flight (None: not capped).

        The fleet-wide cap divided by `concurrent_lambdas`, rounded down, so that all of them together
        stay within it."""
        if vendor not in VENDORS:
            raise ValueError(f"unknown vendor {vendor!r}; one of {', '.join(VENDORS)}")
        cap = getattr(self.vendor_concurrency, vendor)
        return None if cap is None else cap // self.concurrent_lambdas

    @model_validator(mode="after")
    def _caps_cover_every_lambda(self) -> ExecutionConfig:
        for vendor in VENDORS:
            cap = getattr(self.vendor_concurrency, vendor)
            if cap is not None and cap < self.concurrent_lambdas:
                raise ValueError(
                    f"vendor_concurrency.{vendor}: {cap} is fewer than the Lambdas that may run at once "
                    f"(max_concurrent_chunks {self.max_concurrent_chunks} x max_concurrent_batches "
                    f"{self.max_concurrent_batches} = {self.concurrent_lambdas}); each needs at least one call")
        return self


class LlmConfig(_Strict):
    enabled: bool = False
    provider: Literal["openai", "anthropic"] = "openai"
    model: str = "gpt-4"
    api_key_secret: str = "guard/llm-api-key"
    base_url: str | None = None
    timeout_seconds: float = Field(default=30, gt=0, le=300)
    # The prompt is cut to this many characters, least important evidence first.
    max_prompt_chars: int = Field(default=24_000, ge=2_000, le=400_000)
    max_output_tokens: int = Field(default=1_024, ge=128, le=16_384)
    # Analyse an inconclusive verdict too (a failed one always is, when enabled).
    analyze_inconclusive: bool = True
    # Evidence gathered per failing cluster (also shown in the decision comment).
    log_tail_lines: int = Field(default=200, ge=0, le=5_000)
    max_events: int = Field(default=30, ge=0, le=500)


class BatchConfig(_Strict):
    name: str = Field(pattern=_NAME)
    description: str = ""
    clusters: list[str] = Field(min_length=1)
    soak_period_minutes: float | None = Field(default=None, ge=0, le=60 * 24 * 7)
    thresholds: dict[str, float] = Field(default_factory=dict)

    @field_validator("clusters")
    @classmethod
    def _unique(cls, clusters: list[str]) -> list[str]:
        dupes = sorted({c for c in clusters if clusters.count(c) > 1})
        if dupes:
            raise ValueError(f"cluster listed twice: {', '.join(dupes)}")
        return clusters


class CustomCheckConfig(_Strict):
    module: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_.]*$")
    class_: str = Field(alias="class", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")


NOTIFICATION_EVENTS = tuple(e.value for e in NotificationEvent)


class NotificationsConfig(_Strict):
    slack_webhook_secret: str | None = None
    sns_topic: bool = False
    events: list[str] = Field(
        default_factory=lambda: list(NOTIFICATION_EVENTS)
    )
    timeout_seconds: float = Field(default=5, gt=0, le=30)

    @field_validator("events")
    @classmethod
    def _known_events(cls, events: list[str]) -> list[str]:
        unknown = [e for e in events if e not in NOTIFICATION_EVENTS]
        if unknown:
            raise ValueError(f"unknown event(s) {', '.join(unknown)}; known: {', '.join(NOTIFICATION_EVENTS)}")
        return events


class ScheduleConfig(_Strict):
    name: str = Field(pattern=_NAME)
    cron: str
    timezone: str = "UTC"
    flexible_window_minutes: int = Field(default=0, ge=0, le=1440)
    enabled: bool = True
    batch: str | None = None
    rollout: list[str] | None = None
    target_version: str


class RolloutConfig(_Strict):
    """How a rollout execution (many batches in `batch_order`) reacts to a failed batch."""

    # halt: start nothing new after a failure; continue_independent: finish what does not depend on it.
    on_failure: Literal["halt", "continue_independent"] = "halt"
    # How long a batch whose prerequisites are still running waits before it looks again.
    poll_seconds: int = Field(default=900, ge=10, le=3600)


_WINDOW_TIME = r"^((Mon|Tue|Wed|Thu|Fri|Sat|Sun) )?([01][0-9]|2[0-3]):[0-5][0-9]$"


class DenyWindowConfig(_Strict):
    """A recurring period in which no upgrade of the listed environments may start."""

    name: str | None = None
    environments: list[str] = Field(min_length=1)
    # "Fri 15:00" (weekly) or "22:00" (daily; then `to` must be daily too), local to `timezone`.
    from_: str = Field(alias="from", pattern=_WINDOW_TIME)
    to: str = Field(pattern=_WINDOW_TIME)
    timezone: str = "UTC"

    @model_validator(mode="after")
    def _consistent(self) -> DenyWindowConfig:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        if (" " in self.from_) != (" " in self.to):
            raise ValueError("from and to must both name a weekday ('Fri 15:00') or neither ('22:00')")
        if self.from_ == self.to:
            raise ValueError("from and to are the same time; the window would be empty")
        try:
            ZoneInfo(self.timezone)
        except (ZoneInfoNotFoundError, ValueError) as e:
            raise ValueError(f"unknown timezone '{self.timezone}' (use an IANA name like Europe/Berlin)") from e
        return self

    def label(self) -> str:
        return self.name or f"{'/'.join(self.environments)} {self.from_} to {self.to} {self.timezone}"


class ChangeWindowsConfig(_Strict):
    deny: list[DenyWindowConfig] = Field(default_factory=list)
    # refuse: the batch's Plan fails with ChangeWindowClosed; wait: a rollout waits for the window to open
    # (a single-batch execution still refuses).
    on_deny: Literal["refuse", "wait"] = "refuse"


class RollbackConfig(_Strict):
    auto_create_mr: bool = True
    require_manual_approval: bool = False
    scope: Literal["failing_clusters", "batch"] = "failing_clusters"
    # How long a `/guard proceed|rollback` decision is awaited on the MR; then GUARD rolls back.
    decision_timeout_hours: float = Field(default=24, gt=0, le=24 * 30)
    # How long the rollback merge request may wait for a merge.
    merge_timeout_hours: float = Field(default=72, gt=0, le=24 * 365)
    # After the rollback merge, how long clusters may take to report the previous version
    # (default: validation.flux_sync_timeout_minutes).
    verify_timeout_minutes: float | None = Field(default=None, gt=0, le=24 * 60)
    # How long the raw failure evidence (events, logs, pod statuses; redacted) is kept in the state table.
    evidence_retention_days: int = Field(default=30, ge=1, le=400)


class TenantConfig(_Strict):
    """Everything one tenant configures; see docs/config.md."""

    tenant: str = Field(default=DEFAULT_TENANT, pattern=_NAME)
    aws: AwsConfig = AwsConfig()
    gitlab: GitLabConfig = GitLabConfig()
    datadog: DatadogConfig = DatadogConfig()
    validation: ValidationConfig = ValidationConfig()
    execution: ExecutionConfig = ExecutionConfig()
    llm: LlmConfig = LlmConfig()
    rollback: RollbackConfig = RollbackConfig()
    batches: list[BatchConfig] = Field(min_length=1)
    batch_order: dict[str, list[str]] = Field(default_factory=dict)
    custom_checks: list[CustomCheckConfig] = Field(default_factory=list)
    # Folder of custom check modules, relative to the config file; packaged with the functions.
    custom_checks_path: str = "checks"
    notifications: NotificationsConfig = NotificationsConfig()
    schedules: list[ScheduleConfig] = Field(default_factory=list)
    rollout: RolloutConfig = RolloutConfig()
    change_windows: ChangeWindowsConfig = ChangeWindowsConfig()

    @model_validator(mode="after")
    def _cross_references(self) -> TenantConfig:
        names = [b.name for b in self.batches]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"batches: batch name used twice: {', '.join(dupes)}")
        seen: dict[str, str] = {}
        for batch in self.batches:
            for cluster in batch.clusters:
                if cluster in seen:
                    raise ValueError(
                        f"batches: cluster {cluster} is in both {seen[cluster]} and {batch.name}"
                    )
                seen[cluster] = batch.name
        known = set(names)
        for dependent, prereqs in self.batch_order.items():
            if dependent not in known:
                raise ValueError(f"batch_order.{dependent}: unknown batch (defined: {', '.join(names)})")
            for prereq in prereqs:
                if prereq not in known:
                    raise ValueError(f"batch_order.{dependent}: unknown prerequisite batch '{prereq}'")
                if prereq == dependent:
                    raise ValueError(f"batch_order.{dependent}: a batch cannot depend on itself")
        cycle = _find_cycle(self.batch_order)
        if cycle:
            raise ValueError(f"batch_order: dependency cycle {' -> '.join(cycle)}")
        if "thresholds" not in self.validation.model_fields_set:
            # The default rules name the standard queries; a tenant that defined other queries and no
            # thresholds keeps the defaults that still apply instead of being refused for a key it never wrote.
            queries = frozenset(self.datadog.queries)
            self.validation.thresholds = {k: v for k, v in self.validation.thresholds.items()
                                          if _applies(k, queries)}
        _check_thresholds("validation.thresholds", self.validation.thresholds, self.datadog.queries)
        for i, batch in enumerate(self.batches):
            _check_thresholds(f"batches[{i}].thresholds", batch.thresholds, self.datadog.queries)
        if self.aws.secrets_manager.gitlab_reader_token_secret and not self.gitlab.bot_usernames:
            # The decision service ignores comments of its own token's account (the Reporter) and of
            # gitlab.bot_usernames: the push account comments too, so it must be listed.
            raise ValueError("gitlab.bot_usernames: list the push account's username when "
                             "aws.secrets_manager.gitlab_reader_token_secret sets a separate Reporter account")
        for schedule in self.schedules:
            if (schedule.batch is None) == (schedule.rollout is None):
                raise ValueError(f"schedules.{schedule.name}: set exactly one of batch or rollout")
            for target in [schedule.batch] if schedule.batch else (schedule.rollout or []):
                if target not in known:
                    raise ValueError(f"schedules.{schedule.name}: unknown batch '{target}'")
        return self

    def batch(self, name: str) -> BatchConfig | None:
        """The batch called `name`, or None."""
        return next((b for b in self.batches if b.name == name), None)

    def thresholds_for(self, batch: str) -> dict[str, float]:
        """Tenant thresholds overlaid with the batch's own (a canary may be stricter)."""
        found = self.batch(batch)
        if not found:
            return dict(self.validation.thresholds)
        return overlay(self.validation.thresholds, found.thresholds, frozenset(self.datadog.queries))


def _check_thresholds(where: str, thresholds: dict[str, float], queries: dict[str, str]) -> None:
    try:
        parse_rules(thresholds, frozenset(queries))
    except ValueError as e:
        raise ValueError(f"{where}.{e}") from None


def _find_cycle(edges: dict[str, list[str]]) -> list[str] | None:
    """A dependency cycle as a path (first node repeated at the end), or None."""
    state: dict[str, int] = {}  # 1 = on the stack, 2 = done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in edges.get(node, []):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(edges):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def _applies(key: str, queries: frozenset[str]) -> bool:
    try:
        parse_key(key, queries)
    except ValueError:
        return False
    return True
