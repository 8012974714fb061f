"""`FailureAnalyst` on the OpenAI chat completions API (or any OpenAI-compatible endpoint)."""

from __future__ import annotations

from datetime import UTC, datetime

import openai

from guard.errors import AnalysisUnavailable, TransientError
from guard.llm.base import AnalystBase
from guard.retry import retry_after_seconds


class OpenAiAnalyst(AnalystBase):
    """Chat completions with `response_format={"type": "json_object"}`; no SDK retries (AnalystBase retries)."""

    provider = "openai"

    def __init__(self, client: openai.OpenAI, model: str, max_prompt_chars: int = 24_000,
                 max_output_tokens: int = 1_024) -> None:
        super().__init__(model, max_prompt_chars, max_output_tokens)
        self._client = client

    @classmethod
    def from_key(cls, api_key: str, model: str, *, base_url: str | None = None, timeout_seconds: float = 30,
                 max_prompt_chars: int = 24_000, max_output_tokens: int = 1_024) -> OpenAiAnalyst:
        # max_retries=0: guard.retry (AnalystBase) owns retries, bounded by the rollback's time budget.
        client = openai.OpenAI(api_key=api_key, base_url=base_url, timeout=timeout_seconds, max_retries=0)
        return cls(client, model, max_prompt_chars, max_output_tokens)

    def _complete(self, system: str, user: str) -> str:
        try:
            response = self._client.chat.completions.create(
                model=self.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                response_format={"type": "json_object"},
                max_completion_tokens=self.max_output_tokens,
            )
        except openai.APITimeoutError as e:
            # Not retried: a timeout has spent the analysis's budget, and the rollback waits for it.
            raise AnalysisUnavailable(f"{self.provider} timed out") from e
        except openai.APIStatusError as e:
            if e.status_code == 429 or e.status_code >= 500:
                asked = retry_after_seconds(e.response.headers.get("retry-after"), datetime.now(UTC))
                raise TransientError(f"{self.provider} answered HTTP {e.status_code}", retry_after=asked) from e
            raise AnalysisUnavailable(f"{self.provider} answered HTTP {e.status_code}") from e
        except openai.APIConnectionError as e:
            raise TransientError(f"{self.provider} unreachable ({type(e).__name__})") from e
        except openai.OpenAIError as e:  # e.g. an answer the SDK cannot parse
            raise AnalysisUnavailable(f"{self.provider} error ({type(e).__name__})") from e
        if not response.choices:
            raise AnalysisUnavailable(f"{self.provider} returned no choices")
        choice = response.choices[0]
        if choice.finish_reason == "length":
            raise AnalysisUnavailable(f"{self.provider} answer was cut at {self.max_output_tokens} tokens")
        return choice.message.content or ""
