"""Notification events: what people are told, on every configured channel."""

from __future__ import annotations

from enum import StrEnum


class NotificationEvent(StrEnum):
    STARTED = "started"
    WAITING_FOR_MERGE = "waiting_for_merge"
    NEEDS_DECISION = "needs_decision"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    ROLLED_BACK = "rolled_back"
