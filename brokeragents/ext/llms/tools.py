"""Tool calls: how they stream, how they land on the reply, and how they go back to the model.

While a reply streams, every fragment of a tool call's arguments is a :class:`ToolCallToken`.
Its ``str()`` is empty, so the reply's text (``content``) holds only what the model said, and a
console printing tokens prints no JSON. The final reply has a ``tool_calls`` field: a tuple of
``Frozen(id=..., name=..., arguments=...)`` in the model's order, where ``arguments`` is the JSON
text exactly as streamed (OpenAI ``function.arguments``, Anthropic ``input_json_delta``), not
parsed, so nothing is lost or reordered. A tool's result goes back as a
:class:`ToolResultMessage`; an ``AssistantMessage`` with ``tool_calls`` goes back as the
provider's tool call, so a conversation with tool calls can be sent again.
"""

from __future__ import annotations

import json
from typing import Any

from brokeragents.ext.llms.messages import LLMMessage
from brokeragents.message_promise import MessageTokenAppender
from brokeragents.messages import Message, Token


class ToolCallToken(Token):
    """A fragment of a tool call's arguments, streamed; ``id`` and ``name`` say which call."""

    index: int
    id: str | None = None
    name: str | None = None
    arguments_delta: str = ""

    def _as_string(self) -> str:
        return ""  # not text: the reply's content stays what the model said


class ToolResultMessage(LLMMessage):
    """The result of a tool call, sent back to the model (``content`` is the result text)."""

    role: str = "tool"
    tool_call_id: str

    def __init__(self, content: str | None = None, **metadata: Any) -> None:
        super().__init__(content, **metadata)


class ToolCallCollector:
    """Accumulates streamed tool-call fragments by index and appends them as tokens."""

    def __init__(self, appender: MessageTokenAppender) -> None:
        self._appender = appender
        self._calls: dict[int, dict[str, Any]] = {}

    def add(self, index: int, *, call_id: str | None = None, name: str | None = None, arguments: str = "") -> None:
        call = self._calls.setdefault(index, {"id": None, "name": None, "arguments": ""})
        call["id"] = call_id or call["id"]
        call["name"] = name or call["name"]
        call["arguments"] += arguments
        self._appender.append(ToolCallToken(index=index, id=call["id"], name=call["name"], arguments_delta=arguments))

    def store(self) -> None:
        """Put ``tool_calls`` (if there were any) into the reply's auxiliary fields."""
        if self._calls:
            calls = tuple(self._calls[index] for index in sorted(self._calls))
            self._appender.auxiliary_field_collector["tool_calls"] = calls


def _tool_calls(message: Message) -> tuple[Any, ...]:
    calls = message.get("tool_calls")
    return calls if isinstance(calls, tuple) else ()


def openai_tool_fields(message: Message, message_dict: dict[str, Any]) -> dict[str, Any]:
    """Add OpenAI's ``tool_calls`` / ``tool_call_id`` to a message dict, when the message has them."""
    calls = _tool_calls(message)
    if calls:
        message_dict["tool_calls"] = [
            {"id": call["id"], "type": "function", "function": {"name": call["name"], "arguments": call["arguments"]}}
            for call in calls
        ]
        message_dict["content"] = message_dict["content"] or None  # no text besides the calls
    tool_call_id = message.get("tool_call_id")
    if isinstance(tool_call_id, str):
        message_dict["tool_call_id"] = tool_call_id
    return message_dict


def anthropic_tool_fields(message: Message, message_dict: dict[str, Any]) -> dict[str, Any]:
    """Turn tool calls into ``tool_use`` blocks and a tool result into a user ``tool_result`` block."""
    calls = _tool_calls(message)
    tool_call_id = message.get("tool_call_id")
    if calls:
        text = message_dict["content"]
        blocks: list[dict[str, Any]] = [{"type": "text", "text": text}] if text else []
        blocks += [
            {"type": "tool_use", "id": call["id"], "name": call["name"], "input": json.loads(call["arguments"] or "{}")}
            for call in calls
        ]
        return {"role": "assistant", "content": blocks}
    if isinstance(tool_call_id, str):
        block = {"type": "tool_result", "tool_use_id": tool_call_id, "content": message_dict["content"]}
        return {"role": "user", "content": [block]}
    return message_dict


__all__ = (
    "ToolCallCollector",
    "ToolCallToken",
    "ToolResultMessage",
    "anthropic_tool_fields",
    "openai_tool_fields",
)
