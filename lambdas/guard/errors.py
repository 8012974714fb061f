"""Errors raised on purpose. Their class names are what the ASL's Retry/Catch match.

The class is the vocabulary: no error name is written as a string elsewhere; use
`SomeError.__name__` (the ASL builder does too).
"""

from __future__ import annotations

import json
import math


class GuardError(Exception):
    """Base class of every error GUARD raises on purpose."""


class InvalidInput(GuardError):
    """The execution input or a request body is malformed; the message names the field."""


class ConfigError(GuardError):
    """The tenant config is invalid; the message names the key path."""


class UnknownBatch(GuardError):
    """The execution names a batch that the tenant config does not define."""


class UnknownCluster(GuardError):
    """A batch lists a cluster that is not in the cluster registry."""


class VersionNotAllowed(GuardError):
    """The target version is a downgrade, a no-op, or a skip the upgrade mode does not support."""


class PrerequisiteNotMet(GuardError):
    """A batch_order prerequisite has not succeeded at the same target version."""


class ChangeWindowClosed(GuardError):
    """The run would start inside a deny change window; the message names the window and when it opens."""


class BatchLocked(GuardError):
    """Another execution holds the batch lock."""


class PrecheckFailed(GuardError):
    """At least one precheck failed on a cluster; the message lists which."""


class MergeRequestClosed(GuardError):
    """The upgrade merge request was closed without being merged."""


class FluxSyncTimeout(GuardError):
    """Flux did not report the target version before the deadline."""


class SidecarRestartTimeout(GuardError):
    """Sidecar restart waves did not bring every proxy to the target version before the deadline."""


class ValidationFailed(GuardError):
    """Post-upgrade validation found a regression; the message names cluster, query and numbers."""


class ValidationInconclusive(GuardError):
    """Post-upgrade validation had too little data to decide; never counted as a pass."""


class OrphanTaskToken(GuardError):
    """A wait's task token had no run record (or named no MR): the reconciler ended the wait."""


class RunAlreadyEnded(GuardError):
    """A task tried to record progress on a run whose end was already recorded (its execution was stopped)."""


class TransientError(GuardError):
    """An external system failed in a way worth retrying (timeouts, 429, 5xx).

    `retry_after`: the seconds the vendor asked us to wait (`Retry-After`, `X-RateLimit-Reset`),
    when it said; guard.retry honours it.
    """

    def __init__(self, message: str = "", *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after

    def again(self, message: str) -> TransientError:
        """The same error with a new message (the attempt count, the operation)."""
        return TransientError(message, retry_after=self.retry_after)


class RateLimited(TransientError):
    """A vendor asked for a wait longer than a Lambda should sleep. The state machine catches it,
    waits `retry_after_seconds` (a `Wait` state) and runs the task again.

    The message is JSON, `{"retry_after_seconds": N, "reason": "..."}`: it becomes the Lambda
    error's `errorMessage`, which the state machine unpacks with `States.StringToJson`.
    """

    # A Wait longer than this is not a rate limit any more: cap it (the next attempt asks again).
    LONGEST_WAIT_SECONDS = 6 * 3600

    @classmethod
    def after(cls, seconds: float, reason: str) -> RateLimited:
        wait = max(1, min(cls.LONGEST_WAIT_SECONDS, math.ceil(seconds)))
        return cls(json.dumps({"retry_after_seconds": wait, "reason": reason[:1000]}), retry_after=wait)

    @property
    def retry_after_seconds(self) -> int:
        return int(self.retry_after or 1)

    def again(self, message: str) -> TransientError:
        return RateLimited.after(self.retry_after_seconds, message)


class ExternalServiceError(GuardError):
    """An external system refused the request in a way a retry will not fix."""


class WebhookUnauthorized(GuardError):
    """A webhook request carried a missing or wrong X-Gitlab-Token."""


# ---------------------------------------------------------------- failure handling (analysis, rollback, decisions)


class AnalysisUnavailable(GuardError):
    """The LLM failure analysis could not be produced (timeout, error, malformed answer); never blocks a rollback."""


class RollbackMergeRequestClosed(GuardError):
    """The rollback merge request was closed without being merged; the clusters stay on the new version."""


class RollbackMergeRequestTimeout(GuardError):
    """Nobody merged the rollback merge request before the wait timed out; GUARD left it open for a person."""


class TaskTokenNotStored(GuardError):
    """A merge request was opened but the token that waits on it could not be stored: an upgrade MR is closed,
    a rollback MR left open for a person."""


class RollbackFailed(GuardError):
    """After the rollback merge, the clusters did not report the previous version in time."""


class RolledBack(GuardError):
    """The upgrade was rolled back and verified; the execution still ends failed with this name."""


class NothingToRollBack(GuardError):
    """A manual rollback names a batch without a succeeded upgrade that is still deployed."""


class RollbackNotCreated(GuardError):
    """Validation failed and `rollback.auto_create_mr` is false: no rollback MR; a person rolls back by hand."""


# ---------------------------------------------------------------- what a failed stage is called
# RecordFailure names a failure after its stage when the error itself is generic
# (States.TaskFailed, States.Timeout, a crash without a name).


class MergeRequestTimeout(GuardError):
    """Nobody merged the upgrade merge request before the wait timed out; nothing was deployed."""


class MergeRequestFailed(GuardError):
    """Opening the upgrade merge request, or waiting for it, failed."""


class FluxSyncFailed(GuardError):
    """Reading Flux's progress failed (not a timeout: that is FluxSyncTimeout)."""


class SidecarRestartFailed(GuardError):
    """Restarting workloads in waves failed (not a timeout: that is SidecarRestartTimeout)."""


class ValidationError(GuardError):
    """The validation stage itself failed (not a verdict: those are ValidationFailed / ValidationInconclusive).

    Not pydantic's ValidationError: the name is kept because executions have always failed with it."""


class UpgradeFailed(GuardError):
    """A failure at a stage GUARD has no more specific name for."""


# ---------------------------------------------------------------- how an execution ended outside the workflow
# Recorded by `guard.services.ending` when an execution ended without recording its own outcome.


class ExecutionStopped(GuardError):
    """The execution was stopped (StopExecution, e.g. from the console); no Catch ran."""


class ExecutionTimedOut(GuardError):
    """The execution reached the state machine's TimeoutSeconds; no Catch ran."""


class OutcomeNotRecorded(GuardError):
    """The execution ended without recording its outcome; its history says what happened."""


# ---------------------------------------------------------------- rollouts


class RolloutFailed(GuardError):
    """A rollout ended with a batch that failed (and none rolled back)."""


class RolloutRolledBack(GuardError):
    """A rollout ended with at least one batch rolled back."""


ROLLED_BACK_ERRORS = frozenset({RolledBack.__name__, RolloutRolledBack.__name__})
"""The names an execution fails with when the change was undone (CLI exit code 3, rollout bookkeeping)."""


# ---------------------------------------------------------------- Step Functions callbacks


class TaskNoLongerWaiting(GuardError):
    """A task token no longer has a waiting execution (timed out, stopped, answered already, or unknown)."""
