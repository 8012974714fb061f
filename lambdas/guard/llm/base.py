"""The `FailureAnalyst` port and the base class every backend extends.

`AnalystBase.analyze` owns everything that must hold whatever the vendor: secrets are
redacted, the prompt is capped, the vendor call is retried by the project's policy
(guard.retry), the answer is validated. A backend implements only
`_complete(system, user) -> text` and maps its SDK's errors: `TransientError` for timeouts,
429, 5xx and connection trouble (with the `retry-after` it was given), `AnalysisUnavailable`
for the rest.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod

from pydantic import BaseModel, Field, ValidationError

from guard.core.evidence import FailureEvidence
from guard.errors import AnalysisUnavailable, TransientError
from guard.llm.prompt import SYSTEM_PROMPT, build_prompt
from guard.redact import redact
from guard.retry import RetryPolicy, policy


class Analysis(BaseModel):
    """What the LLM must answer (validated; anything else is a malformed answer)."""

    summary: str = Field(min_length=1, max_length=4_000)
    root_cause: str = Field(min_length=1, max_length=8_000)
    evidence: list[str] = Field(default_factory=list, max_length=50)
    recommended_actions: list[str] = Field(default_factory=list, max_length=50)


class AnalystBase(ABC):
    """Redaction, prompt cap and answer validation around one vendor call."""

    provider = "unknown"

    def __init__(self, model: str, max_prompt_chars: int = 24_000, max_output_tokens: int = 1_024,
                 retry: RetryPolicy | None = None) -> None:
        self.model = model
        self.max_prompt_chars = max_prompt_chars
        self.max_output_tokens = max_output_tokens
        self.last_prompt_chars = 0
        # Two attempts: the analysis shares one time budget with the rollback it must never delay,
        # and a wait too long for the Lambda ends the analysis (AnalysisUnavailable), not the run.
        self._retry = retry or policy(attempts=2, max_inline_wait_seconds=10)

    def analyze(self, evidence: FailureEvidence) -> Analysis:
        # The cap counts the system prompt, the user prompt and one separator between them.
        user = build_prompt(evidence, self.max_prompt_chars - len(SYSTEM_PROMPT) - 1)
        self.last_prompt_chars = len(SYSTEM_PROMPT) + 1 + len(user)
        try:
            text = self._retry.call("LLM", lambda: self._complete(SYSTEM_PROMPT, user))
        except TransientError as e:  # RateLimited included: the rollback does not wait for an analysis
            raise AnalysisUnavailable(str(e)) from e
        return parse_analysis(text)

    @abstractmethod
    def _complete(self, system: str, user: str) -> str:
        """The model's text answer to one system + user prompt; TransientError when a retry may help,
        AnalysisUnavailable on any other failure."""


_FENCE = re.compile(r"^\s*```(?:json)?\s*(.*?)\s*```\s*$", re.S)


def parse_analysis(text: str | None) -> Analysis:
    """Validate the model's JSON answer (a ```json fence around it is tolerated)."""
    if not text or not text.strip():
        raise AnalysisUnavailable("the model returned an empty answer")
    fenced = _FENCE.match(text)
    body = fenced.group(1) if fenced else text.strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise AnalysisUnavailable(f"the model's answer is not JSON ({e.msg} at char {e.pos})") from e
    if not isinstance(data, dict):
        raise AnalysisUnavailable("the model's answer is not a JSON object")
    try:
        analysis = Analysis.model_validate(data)
    except ValidationError as e:
        fields = ", ".join(".".join(str(p) for p in err["loc"]) or "answer" for err in e.errors())
        raise AnalysisUnavailable(f"the model's answer does not match the schema ({fields})") from e
    # The model may echo something secret-looking from the evidence; it goes into an MR.
    return Analysis(
        summary=redact(analysis.summary),
        root_cause=redact(analysis.root_cause),
        evidence=[redact(e) for e in analysis.evidence],
        recommended_actions=[redact(a) for a in analysis.recommended_actions],
    )
