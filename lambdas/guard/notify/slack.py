"""`Notifier` on a Slack incoming webhook (the URL is a secret: it is never logged)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import requests

from guard.errors import ExternalServiceError, TransientError
from guard.notify.base import Notification
from guard.outbound import slack_text
from guard.retry import RetryPolicy, policy, retry_after_seconds


class SlackNotifier:
    name = "slack"

    def __init__(self, webhook_url: str, timeout_seconds: float = 5, session: requests.Session | None = None,
                 retry: RetryPolicy | None = None) -> None:
        self._url = webhook_url
        self._timeout = timeout_seconds
        self._http = session or requests.Session()
        # A notification is never worth a long wait: a longer Retry-After gives up (the workflow goes on).
        self._retry = retry or policy(attempts=3, max_inline_wait_seconds=5)

    @staticmethod
    def payload(event: Notification) -> dict[str, Any]:
        """Slack message: `text` for notifications and clients without blocks, blocks for the rest.

        Every part is Slack-escaped (`guard.outbound.slack_text`): a monitor name or a cause carrying
        `<!channel>` or `<https://evil|text>` arrives as those characters, not as a broadcast or a link."""
        body = slack_text("\n".join(event.lines()))
        headline = slack_text(event.headline())
        return {
            "text": f"{headline}\n{body}",
            "blocks": [
                {"type": "section", "text": {"type": "mrkdwn", "text": f"*{headline}*"}},
                {"type": "section", "text": {"type": "mrkdwn", "text": body}},
            ],
        }

    def send(self, event: Notification) -> None:
        """Posts the message, retried as guard.retry says (Slack's `Retry-After` honoured)."""
        body = self.payload(event)
        self._retry.call("Slack webhook", lambda: self._post(body))

    def _post(self, body: dict[str, Any]) -> None:
        try:
            response = self._http.post(self._url, json=body, timeout=self._timeout)
        except requests.RequestException as e:
            raise TransientError(f"Slack webhook unreachable: {type(e).__name__}") from e
        if response.status_code == 429 or response.status_code >= 500:
            asked = retry_after_seconds(response.headers.get("Retry-After"), datetime.now(UTC))
            raise TransientError(f"Slack webhook answered HTTP {response.status_code}", retry_after=asked)
        if response.status_code >= 400:
            raise ExternalServiceError(f"Slack webhook refused the message: HTTP {response.status_code} "
                                       f"{response.text[:100]}")
