"""Models of a rollout: its execution input and the record kept in the state table.

The state machine carries only the rollout id, batch names and one claim per Map iteration; everything else lives in
one `ROLLOUT#<id>` item, so a nine-batch rollout's payloads stay a few KB.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from guard.core.run import BATCH_MAX, REQUESTED_BY_MAX, VERSION_MAX
from guard.core.version import Version

BatchStatus = Literal["pending", "running", "succeeded", "failed", "rolled_back", "skipped"]


class RolloutInput(BaseModel):
    """What a person, a schedule or CI passes to StartExecution of the rollout state machine."""

    model_config = ConfigDict(extra="forbid")

    target_version: str = Field(max_length=VERSION_MAX)
    batches: list[Annotated[str, Field(max_length=BATCH_MAX)]] | Literal["all"] = "all"
    # Soak of every batch (overrides the batch's and the config's); soak_overrides wins per batch.
    soak_period_minutes: float | None = Field(default=None, ge=0, le=60 * 24 * 7)
    soak_overrides: dict[str, float] = Field(default_factory=dict)
    on_failure: Literal["halt", "continue_independent"] | None = None
    max_concurrent_batches: int | None = Field(default=None, ge=1, le=40)
    ignore_alerts: bool = False
    requested_by: str | None = Field(default=None, max_length=REQUESTED_BY_MAX)

    @field_validator("target_version")
    @classmethod
    def _semver(cls, value: str) -> str:
        return str(Version.parse(value))

    @field_validator("batches")
    @classmethod
    def _some(cls, value: list[str] | str) -> list[str] | str:
        if isinstance(value, list) and not value:
            raise ValueError("give at least one batch, or \"all\"")
        return value

    @field_validator("soak_overrides")
    @classmethod
    def _soaks(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [k for k, v in value.items() if not 0 <= v <= 60 * 24 * 7]
        if bad:
            raise ValueError(f"soak must be 0..10080 minutes: {', '.join(bad)}")
        return value


class BatchEntry(BaseModel):
    """One batch of a rollout: where it stands and why."""

    batch: str
    status: BatchStatus = "pending"
    wave: int | None = None
    reason: str | None = None
    error: str | None = None
    execution_name: str | None = None
    execution_arn: str | None = None
    soak_period_minutes: float | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None


class RolloutRecord(BaseModel):
    """One rollout execution (state table, `ROLLOUT#<id>` / `META`)."""

    rollout_id: str
    execution_arn: str
    target_version: str
    on_failure: Literal["halt", "continue_independent"]
    max_concurrency: int
    order: list[str]  # a valid sequential order of the selected batches
    waves: list[list[str]]  # the planned topological waves (the actual ones may differ on failure)
    entries: dict[str, BatchEntry]
    options: RolloutInput
    status: Literal["running", "succeeded", "failed"] = "running"
    halted_by: str | None = None
    wave_count: int = 0
    started_at: datetime
    finished_at: datetime | None = None

    def outcomes(self) -> dict[str, str]:
        """batch -> final status, for the batches that have one (what the DAG planner reads)."""
        return {b: e.status for b, e in self.entries.items() if e.status not in ("pending", "running")}
