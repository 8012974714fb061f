"""`FailureAnalyst` on the Anthropic Messages API (base URL configurable)."""

from __future__ import annotations

from datetime import UTC, datetime

import anthropic

from guard.errors import AnalysisUnavailable, TransientError
from guard.llm.base import AnalystBase
from guard.retry import retry_after_seconds


class AnthropicAnalyst(AnalystBase):
    """Messages API; the system prompt asks for one JSON object, validated like any backend's."""

    provider = "anthropic"

    def __init__(self, client: anthropic.Anthropic, model: str, max_prompt_chars: int = 24_000,
                 max_output_tokens: int = 1_024) -> None:
        super().__init__(model, max_prompt_chars, max_output_tokens)
        self._client = client

    @classmethod
    def from_key(cls, api_key: str, model: str, *, base_url: str | None = None, timeout_seconds: float = 30,
                 max_prompt_chars: int = 24_000, max_output_tokens: int = 1_024) -> AnthropicAnalyst:
        client = anthropic.Anthropic(api_key=api_key, base_url=base_url, timeout=timeout_seconds, max_retries=0)
        return cls(client, model, max_prompt_chars, max_output_tokens)

    def _complete(self, system: str, user: str) -> str:
        try:
            message = self._client.messages.create(
                model=self.model,
                max_tokens=self.max_output_tokens,
                system=system,
                messages=[{"role": "user", "content": user}],
            )
        except anthropic.APITimeoutError as e:
            # Not retried: a timeout has spent the analysis's budget, and the rollback waits for it.
            raise AnalysisUnavailable(f"{self.provider} timed out") from e
        except anthropic.APIStatusError as e:
            if e.status_code == 429 or e.status_code >= 500:
                asked = retry_after_seconds(e.response.headers.get("retry-after"), datetime.now(UTC))
                raise TransientError(f"{self.provider} answered HTTP {e.status_code}", retry_after=asked) from e
            raise AnalysisUnavailable(f"{self.provider} answered HTTP {e.status_code}") from e
        except anthropic.APIConnectionError as e:
            raise TransientError(f"{self.provider} unreachable ({type(e).__name__})") from e
        except anthropic.AnthropicError as e:
            raise AnalysisUnavailable(f"{self.provider} error ({type(e).__name__})") from e
        if message.stop_reason == "max_tokens":
            raise AnalysisUnavailable(f"{self.provider} answer was cut at {self.max_output_tokens} tokens")
        return "".join(getattr(block, "text", "") for block in message.content if block.type == "text")
