"""Rehearsal scenario files: the fleet, how each cluster's metrics behave before and after
the upgrade, what the human does with the MR, and faults. Format: docs/scenarios.md."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from guard.config.loader import format_validation_error
from guard.core.version import Version
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class ScenarioError(Exception):
    """A scenario file is missing or invalid; the message names the key path."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MetricBehaviour(_Strict):
    """Value of one named query: `before` until the cluster runs the new version, then `after`."""

    before: float | None = Field(description="null = no data at all")
    after: float | None = None  # default: same as before
    jitter: float = Field(default=0.05, ge=0, le=1, description="± fraction of noise per point")

    def value_after(self) -> float | None:
        # `after` left out means "unchanged"; `after: null` means the data stops.
        return self.after if "after" in self.model_fields_set else self.before


class WorkloadSpec(_Strict):
    namespace: str
    name: str
    kind: Literal["Deployment", "StatefulSet", "DaemonSet"] = "Deployment"
    replicas: int = Field(default=3, ge=0, description="ignored for a DaemonSet (one pod per node)")
    injected: bool = True
    pdb: bool = True
    pdb_min_available: int | str | None = Field(default=None, description="null: the PDB has maxUnavailable: 1")
    pdb_selector: Literal["labels", "expressions", "empty"] = Field(
        default="labels", description="matchLabels, matchExpressions (In + DoesNotExist), or {} (all pods)")
    native_sidecar: bool = Field(default=False, description="istio-proxy as an init container, restartPolicy Always")
    proxy_digest: bool = Field(default=False, description="the proxy image is pinned by digest (no tag)")


class JobSpec(_Strict):
    """A Job's pod carrying a sidecar: completed (Succeeded) or still running."""

    namespace: str
    name: str
    completed: bool = True


class IstioSpec(_Strict):
    """How Istio is installed on the cluster."""

    revision: str | None = Field(default=None, description="istiod-<revision>, namespaces labelled istio.io/rev")
    image_variant: Literal["", "debug", "distroless"] = Field(default="", description="image tag suffix")


HelmApiVersion = Literal["v2beta1", "v2beta2", "v2"]


def _all_helm_versions() -> list[HelmApiVersion]:
    return ["v2beta1", "v2beta2", "v2"]


class FluxSpec(_Strict):
    """The cluster's Flux helm-controller."""

    api_versions: list[HelmApiVersion] = Field(
        default_factory=_all_helm_versions, min_length=1,
        description="helm.toolkit.fluxcd.io versions served (v0.37: v2beta1+v2beta2; v1.5: v2 only)")


Layout = Literal["single", "whole", "ambient", "postbuild", "postbuild-env", "version-map", "oci", "shared-base",
                 "overlay", "flux-chain"]
Extra = Literal["base", "gateway", "cni", "ztunnel"]


class Faults(_Strict):
    unreachable: bool = False
    node_not_ready: bool = False
    crash_loop: str | None = Field(default=None, description="'namespace/pod-prefix' to crash-loop")
    flux_stuck: bool = False
    flux_suspended: bool = Field(default=False, description="the HelmRelease has spec.suspend: true")
    flux_suspended_after_precheck: bool = Field(
        default=False, description="suspended when the MR is merged (after the prechecks passed)")
    flux_failed_upgrades: int = Field(default=0, ge=0, description="upgrades that fail and are rolled back by "
                                                                    "Flux's remediation before one succeeds")
    flux_stalls: bool = Field(default=False, description="after flux_failed_upgrades the retries are exhausted")
    firing_monitor: str | None = Field(default=None, description="name of a Datadog monitor in Alert")


class ClusterSpec(_Strict):
    cluster: str
    istio_version: str
    environment: str = "dev"
    region: str = "us-east-1"
    role_arn: str | None = None
    flux_config_path: str | None = None  # default clusters/<cluster>/istio/helmrelease.yaml
    layout: Layout = Field(default="single", description=(
        "how the GitOps repo holds the install (sandbox/layouts.py): single (one istiod HelmRelease file), whole "
        "(base, istiod, gateway), ambient (+ cni, ztunnel), postbuild / postbuild-env (shared HelmReleases, the "
        "version in a per-cluster postBuild.substitute / one environment ConfigMap), version-map (one ConfigMap, "
        "one line per cluster on neighbouring lines), oci (chartRef to an OCIRepository), shared-base (one base "
        "every cluster of that layout pulls), overlay (a Kustomize overlay's patches set the versions), flux-chain "
        "(a Flux Kustomization per chart, ordered by their dependsOn; istiod through a HelmChart chartRef)"))
    unmanaged: list[Extra] = Field(default_factory=list, description=(
        "Istio charts running on the cluster that its Flux path does not hold (they stay on the old version)"))
    kubernetes_version: str = Field(default="1.29.3", description="what the API server reports (GET /version)")
    workloads: list[WorkloadSpec] = Field(default_factory=lambda: [WorkloadSpec(namespace="shop", name="cart")])
    jobs: list[JobSpec] = Field(default_factory=list)
    istio: IstioSpec = IstioSpec()
    flux: FluxSpec = FluxSpec()
    metrics: dict[str, MetricBehaviour] = Field(default_factory=dict)
    faults: Faults = Faults()
    owner_team: str | None = "platform"  # the registry's owner fields (GUARD mentions them on its MRs)
    owner_handle: str | None = None

    @model_validator(mode="after")
    def _version(self) -> ClusterSpec:
        Version.parse(self.istio_version)
        return self


class HumanAction(_Strict):
    """What the person does once GUARD opens the MR."""

    action: Literal["merge", "close", "ignore"] = "merge"
    after_seconds: float = Field(default=300, ge=0, description="scenario seconds after the MR opens")
    drop_webhook: bool = Field(default=False, description="GitLab never delivers this merge/close webhook ("
                                                          "no redelivery of a failed one); the reconciler must notice")
    fast_forward: bool = Field(default=False, description="the project merges by fast-forward: no merge commit, "
                                                          "merge_commit_sha is null")
    approve: bool = Field(default=False, description="the reviewer approves it (again after a push removed the "
                                                     "approval) where the project's approval rule asks")
    when_mergeable: bool = Field(default=False, description="the reviewer clicks Merge once GitLab enables it "
                                                            "(detailed_merge_status mergeable), not before")


class GitLabSpec(_Strict):
    """The GitOps project's merge settings, by GitLab's names."""

    merge_method: Literal["merge", "rebase_merge", "ff"] = "merge"
    approvals_required: int = Field(default=0, ge=0, le=10, description="one approval rule: this many approvals")
    only_allow_merge_if_pipeline_succeeds: bool = False
    pipeline_seconds: float | None = Field(default=None, gt=0, description="CI: every pushed head gets a pipeline "
                                                                           "that succeeds after this many scenario "
                                                                           "seconds; null: no CI")


class MainCommit(_Strict):
    """A teammate commits on the target branch right after the Nth merge: in each of `paths`, `old` becomes
    `new` (a change GUARD's open MRs must keep)."""

    after_merges: int = Field(ge=1)
    paths: list[str] = Field(min_length=1)
    old: str = Field(min_length=1)
    new: str
    message: str = "A teammate's change"


class DecisionComment(_Strict):
    """A comment a person posts on the upgrade MR once GUARD asks for a decision."""

    user: str = "alice"
    access: Literal["maintainer", "developer", "owner", "none"] = "maintainer"
    body: str = "/guard proceed"
    after_seconds: float = Field(default=120, ge=0, description="scenario seconds after GUARD asks")
    drop_webhook: bool = Field(default=False, description="GitLab never delivers this comment's Note Hook; only "
                                                          "reading the MR's notes finds it")


class LlmBehaviour(_Strict):
    """The local OpenAI/Anthropic-compatible endpoint: `off` keeps config.llm.enabled as it is."""

    mode: Literal["off", "json", "garbage", "hang", "error"] = "off"
    provider: Literal["openai", "anthropic"] = "openai"


class Expectation(_Strict):
    outcome: Literal["succeeded", "failed"]
    error: str | None = None
    cause_contains: list[str] = Field(default_factory=list)
    # Rollout scenarios: the status each batch must end in (succeeded, failed, rolled_back, skipped).
    batches: dict[str, str] = Field(default_factory=dict)


class RolloutSpec(_Strict):
    """Run a rollout (the rollout state machine) instead of one batch."""

    batches: list[str] | Literal["all"] = "all"
    input: dict[str, Any] = Field(default_factory=dict, description="extra rollout input (soak_overrides, ...)")


class Scenario(_Strict):
    name: str
    description: str = ""
    config: str = Field(description="tenant config file, relative to the scenario file")
    batch: str | None = None  # exactly one of batch / rollout
    rollout: RolloutSpec | None = None
    target_version: str
    input: dict[str, Any] = Field(default_factory=dict, description="extra execution input fields")
    config_overrides: dict[str, Any] = Field(
        default_factory=dict, description="merged over the tenant config (e.g. a short merge timeout)")
    speedup: float = Field(default=300, gt=0, le=100_000)
    gitlab_project: str = "platform/istio-fleet"
    flux_reconcile_seconds: float = Field(default=90, ge=0)
    human: HumanAction = HumanAction()
    gitlab: GitLabSpec = GitLabSpec()
    main_commits: list[MainCommit] = Field(default_factory=list)
    rollback_human: HumanAction = Field(
        default_factory=lambda: HumanAction(action="merge", after_seconds=300),
        description="what the person does with GUARD's rollback MR")
    decision_comments: list[DecisionComment] = Field(default_factory=list)
    llm: LlmBehaviour = LlmBehaviour()
    fleet: list[ClusterSpec] = Field(min_length=1)
    unpublished_versions: list[str] = Field(
        default_factory=list, description="chart versions the Helm repository does not publish (a typo'd target)")
    succeeded_before: list[str] = Field(
        default_factory=list, description="batches recorded as already upgraded to target_version")
    timeout_seconds: float = Field(
        default=240, gt=0,
        description="hang guard: real seconds after which the rehearsal stops a stuck execution (TIMED_OUT)")
    expect: Expectation | None = None

    source: Path = Field(default=Path("."), exclude=True)

    @model_validator(mode="after")
    def _one_kind(self) -> Scenario:
        if (self.batch is None) == (self.rollout is None):
            raise ValueError("set exactly one of batch (one batch) or rollout (many batches)")
        return self

    def config_path(self) -> Path:
        return (self.source.parent / self.config).resolve()


def load_scenario(path: str | Path) -> Scenario:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as e:
        raise ScenarioError(f"{path}: cannot read scenario: {e.strerror}") from e
    except yaml.YAMLError as e:
        raise ScenarioError(f"{path}: not valid YAML: {e}") from e
    if not isinstance(data, dict):
        raise ScenarioError(f"{path}: the top level must be a mapping")
    try:
        scenario = Scenario.model_validate(data)
    except ValidationError as e:
        raise ScenarioError(format_validation_error(e, str(path)).replace("invalid config", "invalid scenario")) from e
    scenario.source = path.resolve()
    if not scenario.config_path().is_file():
        raise ScenarioError(f"{path}: config: file {scenario.config_path()} not found")
    return scenario
