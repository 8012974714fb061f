"""Notifications: a `Notifier` port, Slack incoming webhook and SNS backends, a fan-out service."""

from guard.notify.base import Notification, Notifier, NotifyService

__all__ = ["Notification", "Notifier", "NotifyService"]
