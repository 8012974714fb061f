"""LLM failure analysis: a `FailureAnalyst` port, OpenAI and Anthropic backends, a factory.

The SDKs are imported only inside the backend modules, which the factory imports lazily.
"""

from guard.llm.base import Analysis, AnalystBase
from guard.ports import FailureAnalyst

__all__ = ["Analysis", "AnalystBase", "FailureAnalyst"]
