"""LLM support: the chat message classes (the LLM agents are not implemented yet)."""

from __future__ import annotations

from brokeragents.ext.llms.messages import AssistantMessage as AssistantMessage
from brokeragents.ext.llms.messages import LLMMessage as LLMMessage
from brokeragents.ext.llms.messages import SystemMessage as SystemMessage
from brokeragents.ext.llms.messages import UserMessage as UserMessage

__all__ = ("AssistantMessage", "LLMMessage", "SystemMessage", "UserMessage")
