"""Where a run is (`RunRecord.stage`) and where it failed (`RunRecord.failed_stage`).

The two used to share one free string; a stored record of schema version 1 is read by
`guard.core.run.RunRecord`, which sorts its old value into these two fields.
"""

from __future__ import annotations

from enum import StrEnum


class Stage(StrEnum):
    """Progress of a run, in the order the state machine reaches them."""

    PLANNED = "plan"
    WAITING_FOR_MERGE = "waiting_for_merge"
    WAITING_FOR_FLUX = "waiting_for_flux"
    RESTARTING_SIDECARS = "restarting_sidecars"
    SOAKING = "soaking"
    WAITING_FOR_DECISION = "waiting_for_decision"
    ROLLBACK_PLANNED = "rollback"
    WAITING_FOR_ROLLBACK_MERGE = "waiting_for_rollback_merge"
    VERIFYING_ROLLBACK = "verifying_rollback"
    DONE = "done"


class FailedStage(StrEnum):
    """The stage a failure is recorded against: what the ASL's failure recorders pass to RecordFailure."""

    PRECHECKS = "prechecks"
    MERGE = "merge"
    MERGE_TIMEOUT = "merge_timeout"
    FLUX = "flux"
    SIDECARS = "sidecars"
    VALIDATE = "validate"
    VALIDATION = "validation"
    ROLLBACK = "rollback"
    ROLLBACK_NOT_CREATED = "rollback_not_created"
    UNKNOWN = "unknown"

    @classmethod
    def parse(cls, value: object) -> FailedStage:
        """The stage a state machine named; an unknown name is recorded as UNKNOWN rather than lost."""
        try:
            return cls(str(value))
        except ValueError:
            return cls.UNKNOWN
