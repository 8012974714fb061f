"""How a change ended, as recorded in the registry history, the batch result and the run."""

from __future__ import annotations

from enum import StrEnum


class Outcome(StrEnum):
    """The end of an upgrade (or of the rollback that followed it)."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"
    # A dry run (`guard run --dry-run`) whose prechecks all passed: nothing was changed. Recorded on
    # the run only, never as a batch result or in the registry history.
    PRECHECKED = "prechecked"


class RollbackStatus(StrEnum):
    """Where a rollback is (`RollbackRecord.status`); the last two are its outcomes."""

    PLANNED = "planned"
    NOT_CREATED = "not_created"
    WAITING_FOR_MERGE = "waiting_for_merge"
    ROLLED_BACK = "rolled_back"
    ROLLBACK_FAILED = "rollback_failed"


class ChangeKind(StrEnum):
    """What a merge request GUARD waits on changes; also the kind of its stored task token."""

    UPGRADE = "upgrade"
    ROLLBACK = "rollback"
    DECISION = "decision"  # not a change: the wait for a `/guard` comment on the upgrade MR


# Not an Outcome: the word of a registry history entry that corrected the registry to what the
# cluster was seen to run (guard.services.observation). A manual rollback ignores such entries.
OBSERVED = "observed"
