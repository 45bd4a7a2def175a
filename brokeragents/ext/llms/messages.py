"""Chat messages with a role, as LLM APIs see them (the LLM agents themselves come later)."""

from __future__ import annotations

from typing import Any

from brokeragents.messages import TextMessage


class LLMMessage(TextMessage):
    """A text message in a chat with an LLM; ``role`` is required."""

    role: str

    # Repeated in each class: the pydantic mypy plugin would otherwise synthesize a keyword-only
    # __init__ from the fields and reject the positional `content` of TextMessage.
    def __init__(self, content: str | None = None, **metadata: Any) -> None:
        super().__init__(content, **metadata)


class UserMessage(LLMMessage):
    """A message typed by the user."""

    role: str = "user"

    def __init__(self, content: str | None = None, **metadata: Any) -> None:
        super().__init__(content, **metadata)


class SystemMessage(LLMMessage):
    """A system prompt."""

    role: str = "system"

    def __init__(self, content: str | None = None, **metadata: Any) -> None:
        super().__init__(content, **metadata)


class AssistantMessage(LLMMessage):
    """A message produced by a model; ``agent_alias`` names the agent that replied with it."""

    role: str = "assistant"
    model: str | None = None
    agent_alias: str | None = None

    def __init__(self, content: str | None = None, **metadata: Any) -> None:
        super().__init__(content, **metadata)


__all__ = ("AssistantMessage", "LLMMessage", "SystemMessage", "UserMessage")
