"""One small interface per external system. Adapters in `guard.adapters` implement them.

Services depend on these Protocols only, so a test or the rehearsal can hand them an
adapter talking to a local simulator.
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Literal, Protocol

from pydantic import BaseModel, Field, field_validator

from guard.core.models import Cluster

if TYPE_CHECKING:  # models only named in signatures; importing them here would cost every handler
    from guard.core.evidence import EventInfo, FailureEvidence
    from guard.datadog_groups import GroupedQuery
    from guard.llm.base import Analysis
    from guard.notify.base import Notification

# ---------------------------------------------------------------- time


class Clock(Protocol):
    """Something that tells the time and can sleep (guard.clock has the system and the scaled one)."""

    def now(self) -> datetime:
        """Current time, timezone-aware UTC."""
        ...

    def sleep(self, seconds: float) -> None:
        """Sleep for `seconds` of this clock's time."""
        ...


# ---------------------------------------------------------------- GitLab (GitOps repo)


class FileChange(BaseModel):
    """New full content of one file in a commit."""

    path: str
    content: str


class MergeRequest(BaseModel):
    """The parts of a merge request GUARD acts on."""

    project: str
    iid: int
    web_url: str
    source_branch: str
    target_branch: str
    state: str  # opened | merged | closed | locked
    merge_commit_sha: str | None = None
    merged_by: str | None = None  # username of who merged it (`merge_user`, older GitLab `merged_by`)
    description: str = ""


class Note(BaseModel):
    """A comment on a merge request."""

    id: int
    body: str
    author_id: int | None = None
    author_username: str = ""
    system: bool = False


# `detailed_merge_status` values that say the source branch must be brought onto the target's head.
STALE_MERGE_STATUSES = frozenset({"need_rebase", "conflict"})


class MergeGates(BaseModel):
    """What stands between an open MR and its merge, as GitLab reports it (the MR, its approvals, the
    project's merge settings). Read from GitLab each time, never assumed."""

    state: str  # opened | merged | closed | locked
    detailed_merge_status: str | None = None  # mergeable, not_approved, ci_must_pass, need_rebase, conflict, ...
    draft: bool = False
    has_conflicts: bool = False
    approvals_required: int = 0
    approvals_left: int = 0
    approved_by: list[str] = Field(default_factory=list)  # usernames
    pipeline_status: str | None = None  # the head pipeline's status; None: no pipeline for the head commit
    pipeline_url: str | None = None
    pipeline_must_succeed: bool = False  # project setting only_allow_merge_if_pipeline_succeeds
    merge_method: str = "merge"  # merge | rebase_merge | ff
    rebase_in_progress: bool = False
    merge_error: str | None = None  # e.g. why the last rebase failed
    auto_merge: bool = False  # set to merge when the pipeline succeeds
    head_sha: str | None = None
    discussions_resolved: bool = True

    @property
    def stale(self) -> bool:
        """The target moved on: the branch needs a rebase, or conflicts with it."""
        return self.has_conflicts or self.detailed_merge_status in STALE_MERGE_STATUSES


class GitOpsRepo(Protocol):
    """The GitLab operations GUARD needs."""

    def read_file(self, project: str, path: str, ref: str) -> str:
        """Text of `path` at `ref`."""
        ...

    def list_files(self, project: str, path: str, ref: str) -> list[str]:
        """Every file below directory `path` at `ref`, recursively ("" for the whole repository);
        empty when the directory does not exist."""
        ...

    def list_blobs(self, project: str, path: str, ref: str) -> dict[str, str]:
        """Like `list_files`, each file with its blob id (git's id of its content)."""
        ...

    def branch_head(self, project: str, branch: str) -> str:
        """The commit id `branch` points at now."""
        ...

    def ensure_branch(self, project: str, branch: str, ref: str) -> None:
        """Create `branch` from `ref` unless it exists already."""
        ...

    def commit_files(self, project: str, branch: str, changes: list[FileChange], message: str) -> str | None:
        """Commit `changes` to `branch`; returns the commit id, or None when nothing changed."""
        ...

    def ensure_merge_request(
        self, project: str, source_branch: str, target_branch: str, title: str, description: str
    ) -> MergeRequest:
        """Return the open MR for `source_branch`, creating it only when there is none."""
        ...

    def get_merge_request(self, project: str, iid: int) -> MergeRequest:
        """Current state of an MR."""
        ...

    def comment(self, project: str, iid: int, body: str) -> None:
        """Add a note to an MR."""
        ...

    def list_notes(self, project: str, iid: int) -> list[Note]:
        """Every note on an MR, oldest first."""
        ...

    def close_merge_request(self, project: str, iid: int) -> MergeRequest:
        """Close an open MR without merging; returns its state afterwards (a merged MR stays merged)."""
        ...

    def merge_gates(self, project: str, iid: int) -> MergeGates:
        """What still blocks merging the MR: approvals, pipeline, draft, conflicts, staleness."""
        ...

    def rebase_merge_request(self, project: str, iid: int) -> MergeGates:
        """Ask GitLab to rebase the source branch onto the target and wait (bounded) for the outcome; the
        gates afterwards (`merge_error` set when the rebase conflicted, `rebase_in_progress` if not done yet)."""
        ...

    def replace_branch(self, project: str, branch: str, start_branch: str, changes: list[FileChange],
                       message: str) -> str | None:
        """Overwrite `branch` with one new commit on `start_branch`'s head carrying `changes` (a force push);
        returns the commit id, or None when `start_branch` has every change already (the branch is left)."""
        ...

    def upsert_note(self, project: str, iid: int, marker: str, body: str, *, create: bool = True) -> int | None:
        """Edit in place GUARD's own note containing `marker`, or add it (unless `create` is false); returns the
        note id, None when there was none and none was added."""
        ...

    def update_description(self, project: str, iid: int, description: str) -> None:
        """Replace the MR's description."""
        ...

    def set_auto_merge(self, project: str, iid: int, sha: str) -> bool:
        """Ask GitLab to merge the MR (head `sha`) once its pipeline succeeds; False when GitLab refuses now."""
        ...


class GitLabUser(BaseModel):
    """A GitLab account."""

    id: int
    username: str


class ProjectMembers(Protocol):
    """Who may decide: a user's effective access level on a project (inherited memberships included)."""

    def access_level(self, project: str, user_id: int) -> int | None:
        """The user's access level on `project`, or None when the user is not a member."""
        ...

    def current_user(self) -> GitLabUser:
        """The account GUARD's token belongs to (`GET /user`): its own notes are never commands."""
        ...


# ---------------------------------------------------------------- chart repositories


class ChartRepository(Protocol):
    """Which versions of a chart are published. Adapter: `guard.adapters.chart_registry`."""

    def published_versions(self, kind: str, url: str, chart: str, insecure: bool = False) -> set[str]:
        """Versions of `chart` in a Helm repository (`kind` "helm": its index.yaml at `url`) or an OCI
        repository (`kind` "oci": `url` is oci://host/path/<chart>, its tags list). Empty when the chart
        is not there; TransientError when a retry may answer, ExternalServiceError otherwise."""
        ...


# ---------------------------------------------------------------- Datadog (metrics)


class Point(BaseModel):
    """One metric bucket."""

    ts: datetime
    value: float


class Alert(BaseModel):
    """A monitor in Alert state."""

    monitor_id: int
    name: str
    state: str
    url: str | None = None


class AlertingGroup(BaseModel):
    """A monitor in Alert with its tags, or a group in Alert of a multi-alert monitor (`... by
    {cluster_name}`) with the group's `key:value` tags."""

    monitor_id: int
    name: str
    group_tags: list[str]


class AlertsSnapshot(BaseModel):
    """What Datadog alerts about, asked once for the clusters of a chunk."""

    monitors: list[AlertingGroup]  # monitors whose overall state is Alert, `group_tags` = their tags
    groups: list[AlertingGroup]    # groups in Alert of multi-alert monitors


class MetricsProvider(Protocol):
    """The Datadog operations GUARD needs."""

    def query(self, queries: dict[str, str], start: datetime, end: datetime) -> dict[str, list[Point]]:
        """Points of each named query in [start, end], in one request. Missing data -> []."""
        ...

    def query_groups(self, queries: list[GroupedQuery], start: datetime,
                     end: datetime) -> list[dict[str, list[Point]]]:
        """Points per cluster id of each grouped query (guard.datadog_groups), in one request.

        A cluster whose group Datadog did not answer gets [] (missing data)."""
        ...

    def active_alerts(self, tags: dict[str, str], snapshot: AlertsSnapshot | None = None) -> list[Alert]:
        """Monitors in Alert state scoped to all of `tags`; from `snapshot` when given (a recent
        `alerts_snapshot()` shared by the clusters of a chunk), else asked for this cluster."""
        ...

    def alerts_snapshot(self) -> AlertsSnapshot:
        """Every monitor and multi-alert monitor group in Alert state (about any cluster)."""
        ...

    def dashboard_url(self, query: str, start: datetime, end: datetime) -> str:
        """Link a person can open to see `query` over the window."""
        ...


class MarkerEvent(BaseModel):
    """A Datadog event marking a step of an upgrade on dashboards (v1 `POST /api/v1/events`)."""

    title: str = Field(min_length=1, max_length=100)
    text: str = Field(min_length=1, max_length=4000)
    tags: list[str] = Field(default_factory=list)
    alert_type: Literal["info", "success", "warning", "error"] = "info"
    aggregation_key: str | None = Field(default=None, max_length=100)  # the run: its events group together


class DashboardMarkers(Protocol):
    """What GUARD writes to Datadog for people: events on dashboards, graph snapshots for the MR."""

    def post_event(self, event: MarkerEvent) -> str | None:
        """Post `event`; the event's URL when Datadog gives one."""
        ...

    def graph_snapshot(self, metric_query: str, start: datetime, end: datetime, title: str) -> str:
        """The URL of a PNG of `metric_query` over [start, end] (v1 graph snapshot)."""
        ...

    def dashboard_url(self, query: str, start: datetime, end: datetime) -> str:
        """Link a person can open to see `query` over the window (no request is made)."""
        ...


# ---------------------------------------------------------------- Kubernetes (one cluster)


class NodeInfo(BaseModel):
    name: str
    ready: bool


class PodInfo(BaseModel):
    namespace: str
    name: str
    phase: str
    ready: bool
    restarts: int = 0
    crash_looping: bool = False
    labels: dict[str, str] = Field(default_factory=dict)
    owner: str | None = None  # "Kind/name" of the controller: Deployment, StatefulSet, DaemonSet, Job; None if bare
    proxy_version: str | None = None  # version read from the istio-proxy image tag; None if not injected or unreadable
    proxy_image: str | None = None  # the istio-proxy image (a container or a native-sidecar init container)
    proxy_revision: str | None = None  # the Istio revision that injected it (`istio.io/rev`, sidecar status)

    @property
    def injected(self) -> bool:
        """The pod runs an istio-proxy, whether or not its version can be read (digest-pinned images)."""
        return self.proxy_image is not None or self.proxy_version is not None

    @property
    def finished(self) -> bool:
        """A completed pod (Succeeded/Failed): its proxy serves nothing and cannot be restarted."""
        return self.phase in ("Succeeded", "Failed")


class DeploymentInfo(BaseModel):
    """A Deployment, or a StatefulSet / DaemonSet (`kind`): the workloads a rollout restart reaches."""

    namespace: str
    name: str
    replicas: int  # DaemonSet: status.desiredNumberScheduled
    ready_replicas: int  # DaemonSet: status.numberReady
    image_versions: dict[str, str] = Field(default_factory=dict)  # container -> version read from its image
    selector: dict[str, str] = Field(default_factory=dict)
    kind: str = "Deployment"
    labels: dict[str, str] = Field(default_factory=dict)  # metadata.labels (istio.io/rev, app, ...)
    updated_replicas: int | None = None  # pods on the current template (None: not reported)
    # spec.strategy (Deployment) / spec.updateStrategy (DaemonSet): the type, and a rolling update's
    # maxUnavailable as written ("25%" or "1"); None when not reported (the API then applies 25%).
    strategy: str | None = None
    max_unavailable: str | None = None


class LabelRequirement(BaseModel):
    """One `matchExpressions` entry of a label selector (meta/v1 LabelSelectorRequirement)."""

    key: str
    operator: str  # In | NotIn | Exists | DoesNotExist
    values: list[str] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        present = self.key in labels
        if self.operator == "In":
            return present and labels[self.key] in self.values
        if self.operator == "NotIn":
            return not present or labels[self.key] not in self.values
        if self.operator == "Exists":
            return present
        if self.operator == "DoesNotExist":
            return not present
        return False  # the API server refuses other operators; never match what we cannot read


class LabelSelector(BaseModel):
    """A meta/v1 LabelSelector: every matchLabels pair and every requirement must hold.

    The empty selector (`{}`) matches every pod of the namespace; a PDB with no selector at all
    (`PdbInfo.selector` None) matches none.
    """

    match_labels: dict[str, str] = Field(default_factory=dict)
    match_expressions: list[LabelRequirement] = Field(default_factory=list)

    def matches(self, labels: dict[str, str]) -> bool:
        return (all(labels.get(k) == v for k, v in self.match_labels.items())
                and all(r.matches(labels) for r in self.match_expressions))


class PdbInfo(BaseModel):
    namespace: str
    name: str
    selector: LabelSelector | None = None  # None: a null selector, which covers no pod
    min_available: str | None = None
    max_unavailable: str | None = None
    disruptions_allowed: int = 0
    current_healthy: int | None = None
    expected_pods: int | None = None

    @field_validator("selector", mode="before")
    @classmethod
    def _plain_labels(cls, value: object) -> object:
        # A plain {key: value} mapping is shorthand for matchLabels (an empty one matches everything).
        if isinstance(value, dict) and not {"match_labels", "match_expressions"} & set(value):
            return {"match_labels": value}
        return value

    def never_allows_disruption(self, replicas: int) -> bool:
        """True when this PDB would not allow one disruption even with all `replicas` healthy.

        Read from the spec (minAvailable >= replicas, maxUnavailable 0) or from a status that
        shows every expected pod healthy and still no disruption allowed.
        """
        if self.max_unavailable in ("0", "0%"):
            return True
        if self.min_available is not None:
            text = self.min_available
            needed = (-(-int(text[:-1]) * replicas // 100) if text.endswith("%") else int(text)
                      ) if text.rstrip("%").isdigit() else 0
            if replicas > 0 and needed >= replicas:
                return True
        healthy, expected = self.current_healthy, self.expected_pods
        return (self.disruptions_allowed == 0 and healthy is not None and expected is not None
                and expected > 0 and healthy >= expected)


class NamespaceInfo(BaseModel):
    name: str
    labels: dict[str, str] = Field(default_factory=dict)


class MutatingWebhookInfo(BaseModel):
    """A MutatingWebhookConfiguration and the service its webhooks call."""

    name: str
    service_namespace: str | None = None
    service_name: str | None = None


class HelmReleaseStatus(BaseModel):
    """Flux HelmRelease as the cluster reports it."""

    name: str
    namespace: str
    ready: bool
    chart_version: str | None  # spec.chart.spec.version
    last_applied_version: str | None  # status.history[0] (v2, v2beta2) / status.lastAppliedRevision (v2beta1)
    message: str = ""
    suspended: bool = False  # spec.suspend: Flux leaves the release (and its status) as it is
    stalled: bool = False  # Stalled=True: Flux gave up retrying until the spec changes
    reason: str = ""  # the Ready condition's reason (UpgradeFailed, Progressing, ...)
    api_version: str = ""  # the helm.toolkit.fluxcd.io version it was read through
    chart: str | None = None  # spec.chart.spec.chart (or, with chartRef, the deployed chart's name)


class KubernetesCluster(Protocol):
    """Read (and restart) operations on one cluster's API."""

    def list_nodes(self) -> list[NodeInfo]:
        ...

    def server_version(self) -> str:
        """The API server's `gitVersion` (`GET /version`), e.g. `v1.29.3-eks-1234567`."""
        ...

    def list_pods(self, namespace: str | None = None) -> list[PodInfo]:
        ...

    def list_deployments(self, namespace: str | None = None) -> list[DeploymentInfo]:
        ...

    def list_pdbs(self, namespace: str | None = None) -> list[PdbInfo]:
        ...

    def list_namespaces(self) -> list[NamespaceInfo]:
        ...

    def list_mutating_webhooks(self) -> list[MutatingWebhookInfo]:
        ...

    def get_helm_release(self, namespace: str, name: str) -> HelmReleaseStatus:
        ...

    def list_statefulsets(self, namespace: str | None = None) -> list[DeploymentInfo]:
        ...

    def list_helm_releases(self) -> list[HelmReleaseStatus]:
        """Every HelmRelease of the cluster, all namespaces."""
        ...

    def list_daemonsets(self, namespace: str | None = None) -> list[DeploymentInfo]:
        ...

    def restart_workload(self, kind: str, namespace: str, name: str, at: datetime) -> None:
        """Rolling restart of a Deployment, StatefulSet or DaemonSet (the same annotation)."""
        ...


class ClusterConnector(Protocol):
    """Builds an authenticated client for a registry cluster (EKS role + token, or override)."""

    def connect(self, cluster: Cluster) -> KubernetesCluster:
        ...


class EvidenceSource(Protocol):
    """Read-only views of one cluster the failure evidence needs (besides `KubernetesCluster`)."""

    def list_pods(self, namespace: str | None = None) -> list[PodInfo]:
        ...

    def list_events(self, namespace: str) -> list[EventInfo]:
        """Events of `namespace` (core/v1), any order."""
        ...

    def pod_log_tail(self, namespace: str, pod: str, container: str, lines: int) -> str:
        """The last `lines` lines of a container's log."""
        ...


class EvidenceConnector(Protocol):
    def connect(self, cluster: Cluster) -> EvidenceSource:
        ...


# ---------------------------------------------------------------- LLM


class FailureAnalyst(Protocol):
    """Explains a failed upgrade from its evidence."""

    provider: str
    model: str

    def analyze(self, evidence: FailureEvidence) -> Analysis:
        """The analysis, or AnalysisUnavailable(reason) on a timeout, an error or a malformed answer."""
        ...


# ---------------------------------------------------------------- notifications (Slack, SNS)


class Notifier(Protocol):
    """One channel. `send` raises on failure; `NotifyService` decides what a failure means."""

    name: str

    def send(self, event: Notification) -> None:
        ...


# ---------------------------------------------------------------- Step Functions (task tokens)


class TaskCallbacks(Protocol):
    """Answers a paused `.waitForTaskToken` task. Adapter: `guard.adapters.step_functions`.

    Keyword names follow the Step Functions API (`taskToken`) so callers written against the
    boto3 client keep working. Raises TaskNoLongerWaiting when nothing waits on the token,
    TransientError when a retry may succeed, ExternalServiceError otherwise.
    """

    def send_task_success(self, *, taskToken: str, output: str) -> None:
        """Resume the execution with `output` (a JSON document) as the task's result."""
        ...

    def send_task_failure(self, *, taskToken: str, error: str, cause: str) -> None:
        """Fail the task with `error` (what the ASL's Catch matches) and a human `cause`."""
        ...


class ExecutionStatus(BaseModel):
    """What DescribeExecution says about one execution (`status`: RUNNING, SUCCEEDED, FAILED, TIMED_OUT,
    ABORTED, PENDING_REDRIVE, or GONE when Step Functions no longer knows it)."""

    execution_arn: str
    status: str
    stop_date: datetime | None = None

    @property
    def ended(self) -> bool:
        """True when the execution can no longer hold anything (PENDING_REDRIVE may still resume)."""
        return self.status in ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED", "GONE")


class Executions(Protocol):
    """Reads the status of an execution. Adapter: `guard.adapters.step_functions`."""

    def describe_execution(self, execution_arn: str) -> ExecutionStatus:
        """The execution's status; GONE when it does not exist; TransientError when a retry may succeed."""
        ...
