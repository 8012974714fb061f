"""Notifications: a `Notifier` port, Slack incoming webhook and SNS backends, a fan-out service."""

from guard.notify.base import Notification, NotifyService
from guard.ports import Notifier

__all__ = ["Notification", "Notifier", "NotifyService"]
