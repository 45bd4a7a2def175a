"""LLM support: chat message classes, the LLM agents (OpenAI, Anthropic, a fake one) and the logger.

The OpenAI and Anthropic agents are imported on first use: their SDKs take seconds to import, and
most programs need one of them or none.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from brokeragents.errors import FakeLLMError as FakeLLMError
from brokeragents.errors import IncompleteLLMResponseError as IncompleteLLMResponseError
from brokeragents.ext.llms.base import EmbeddingMessage as EmbeddingMessage
from brokeragents.ext.llms.base import LLMAgent as LLMAgent
from brokeragents.ext.llms.base import message_to_llm_dict as message_to_llm_dict
from brokeragents.ext.llms.fake import FakeLLM as FakeLLM
from brokeragents.ext.llms.fake import FakeLLMAgent as FakeLLMAgent
from brokeragents.ext.llms.logger import markdown_llm_logger_agent as markdown_llm_logger_agent
from brokeragents.ext.llms.messages import AssistantMessage as AssistantMessage
from brokeragents.ext.llms.messages import LLMMessage as LLMMessage
from brokeragents.ext.llms.messages import SystemMessage as SystemMessage
from brokeragents.ext.llms.messages import UserMessage as UserMessage
from brokeragents.ext.llms.tools import ToolCallToken as ToolCallToken
from brokeragents.ext.llms.tools import ToolResultMessage as ToolResultMessage

if TYPE_CHECKING:
    from brokeragents.ext.llms.anthropic import AnthropicAgent as AnthropicAgent
    from brokeragents.ext.llms.anthropic import AnthropicLLM as AnthropicLLM
    from brokeragents.ext.llms.anthropic import aprepare_dicts_for_anthropic as aprepare_dicts_for_anthropic
    from brokeragents.ext.llms.openai import OpenAIAgent as OpenAIAgent
    from brokeragents.ext.llms.openai import OpenAILLM as OpenAILLM
    from brokeragents.ext.llms.openai import aprepare_dicts_for_openai as aprepare_dicts_for_openai
    from brokeragents.ext.llms.openai import openai_embedding_agent as openai_embedding_agent

_LAZY = {
    "AnthropicAgent": "brokeragents.ext.llms.anthropic",
    "AnthropicLLM": "brokeragents.ext.llms.anthropic",
    "aprepare_dicts_for_anthropic": "brokeragents.ext.llms.anthropic",
    "OpenAIAgent": "brokeragents.ext.llms.openai",
    "OpenAILLM": "brokeragents.ext.llms.openai",
    "aprepare_dicts_for_openai": "brokeragents.ext.llms.openai",
    "openai_embedding_agent": "brokeragents.ext.llms.openai",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


__all__ = (
    "AnthropicAgent",
    "AnthropicLLM",
    "AssistantMessage",
    "EmbeddingMessage",
    "FakeLLM",
    "FakeLLMAgent",
    "FakeLLMError",
    "IncompleteLLMResponseError",
    "LLMAgent",
    "LLMMessage",
    "OpenAIAgent",
    "OpenAILLM",
    "SystemMessage",
    "ToolCallToken",
    "ToolResultMessage",
    "UserMessage",
    "aprepare_dicts_for_anthropic",
    "aprepare_dicts_for_openai",
    "markdown_llm_logger_agent",
    "message_to_llm_dict",
    "openai_embedding_agent",
)
