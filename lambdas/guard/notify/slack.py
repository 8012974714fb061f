"""`Notifier` on a Slack incoming webhook (the URL is a secret: it is never logged)."""

from __future__ import annotations

from typing import Any

import requests

from guard.errors import ExternalServiceError, TransientError
from guard.notify.base import Notification


class SlackNotifier:
    name = "slack"

    def __init__(self, webhook_url: str, timeout_seconds: float = 5, session: requests.Session | None = None) -> None:
        self._url = webhook_url
        self._timeout = timeout_seconds
        self._http = session or requests.Session()

    @staticmethod
    def payload(event: Notification) -> dict[str, Any]:
        """Slack message: `text` for notifications and clients without blocks, blocks for the rest."""
        body = "\n".join(event.lines())
        return {
            "text": f"{event.headline()}\n{body}",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{event.headline()}*"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": body}},
            ],
        }

    def send(self, event: Notification) -> None:
        try:
            response = self._http.post(self._url, json=self.payload(event), timeout=self._timeout)
        except requests.RequestException as e:
            raise TransientError(f"Slack webhook unreachable: {type(e).__name__}") from e
        if response.status_code == 429 or response.status_code >= 500:
            raise TransientError(f"Slack webhook answered HTTP {response.status_code}")
        if response.status_code >= 400:
            raise ExternalServiceError(f"Slack webhook refused the message: HTTP {response.status_code} "
                                       f"{response.text[:100]}")
