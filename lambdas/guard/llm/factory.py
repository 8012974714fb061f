"""Build the configured `FailureAnalyst`; an unknown provider is refused, never defaulted."""

from __future__ import annotations

from guard.config.models import LlmConfig
from guard.errors import ConfigError
from guard.ports import FailureAnalyst

PROVIDERS = ("openai", "anthropic")


def build_analyst(config: LlmConfig, api_key: str) -> FailureAnalyst:
    """The analyst for `config.provider`; the SDK is imported here, on first use only."""
    if config.provider == "openai":
        from guard.llm.openai_analyst import OpenAiAnalyst

        return OpenAiAnalyst.from_key(api_key, config.model, base_url=config.base_url,
                                      timeout_seconds=config.timeout_seconds,
                                      max_prompt_chars=config.max_prompt_chars,
                                      max_output_tokens=config.max_output_tokens)
    if config.provider == "anthropic":
        from guard.llm.anthropic_analyst import AnthropicAnalyst

        return AnthropicAnalyst.from_key(api_key, config.model, base_url=config.base_url,
                                         timeout_seconds=config.timeout_seconds,
                                         max_prompt_chars=config.max_prompt_chars,
                                         max_output_tokens=config.max_output_tokens)
    raise ConfigError(f"llm.provider: unknown provider {config.provider!r}; known: {', '.join(PROVIDERS)}")
