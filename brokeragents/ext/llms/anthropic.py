"""Anthropic: the Messages API agent (``AnthropicAgent``), on the official async SDK.

The SDK reads its own environment: ``ANTHROPIC_API_KEY`` (or ``ANTHROPIC_AUTH_TOKEN``),
``ANTHROPIC_BASE_URL``. Retries are the SDK's: ``max_retries`` (default 2, so 3 attempts) on
connection errors, 408, 409, 429 and 5xx (529 "overloaded" included), with exponential backoff
from 0.5 s to 8 s that honours ``Retry-After``. Only a request that has not started streaming is
retried; an ``error`` event or a cut in the middle of a stream ends the reply with the error.
``timeout`` (seconds) goes to the SDK call; its default is 600 s. ``max_tokens`` is required,
as by the API.
"""

from __future__ import annotations

import json
from typing import Any, cast

import httpx2
from anthropic import APIConnectionError, APITimeoutError, AsyncAnthropic, AsyncStream
from anthropic.types import (
    InputJSONDelta,
    MessageParam,
    RawContentBlockDeltaEvent,
    RawContentBlockStartEvent,
    RawMessageDeltaEvent,
    RawMessageStartEvent,
    RawMessageStopEvent,
    RawMessageStreamEvent,
    TextBlock,
    TextDelta,
    ToolUseBlock,
)
from anthropic.types import Message as AnthropicResponse

from brokeragents.agents import MiniAgent, miniagent
from brokeragents.ext.llms.base import (
    IncompleteLLMResponseError,
    LLMAgent,
    MessageDict,
    aopen_client,
    message_to_llm_dict,
)
from brokeragents.ext.llms.tools import ToolCallCollector, anthropic_tool_fields
from brokeragents.message_promise import MessageTokenAppender
from brokeragents.message_sequence import MessageSequence


async def aprepare_dicts_for_anthropic(
    messages: Any,
    *,
    system: str | None = None,
    message_delimiter_for_same_role: str = "\n\n",
    fake_first_user_message: str = "/start",
) -> list[MessageDict]:
    """Anthropic message dicts, with one ``{"role": "system"}`` dict first when there is a prompt.

    The system prompt is ``system`` followed by the text of every system message found in
    ``messages`` (the API takes it apart from the turns). Consecutive messages of the same role
    are merged (the API wants the roles to alternate), and ``fake_first_user_message`` is put
    first when the conversation would not start with a user turn.
    """
    resolved = await MessageSequence.turn_into_sequence_promise(messages)
    system_parts = [system] if system is not None else []
    turns: list[MessageDict] = []
    for message in resolved:
        message_dict = message_to_llm_dict(message)
        if message_dict["role"] == "system":
            system_parts.append(message_dict["content"])
            continue
        message_dict = anthropic_tool_fields(message, message_dict)
        if turns and turns[-1]["role"] == message_dict["role"]:
            turns[-1]["content"] = _merge(
                turns[-1]["content"], message_dict["content"], message_delimiter_for_same_role
            )
        else:
            turns.append(message_dict)
    if not turns or turns[0]["role"] != "user":
        turns.insert(0, {"role": "user", "content": fake_first_user_message})
    if system_parts:
        turns.insert(0, {"role": "system", "content": message_delimiter_for_same_role.join(system_parts)})
    return turns


def _merge(first: Any, second: Any, delimiter: str) -> Any:
    if isinstance(first, str) and isinstance(second, str):
        return f"{first}{delimiter}{second}"
    # Content blocks (tool use and tool results) cannot be joined as text: list them together.
    return _as_blocks(first) + _as_blocks(second)


def _as_blocks(content: Any) -> list[Any]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return list(content)


class AnthropicLLM(LLMAgent):
    """The class behind :data:`AnthropicAgent`; subclass it to change how a request is built.

    :ivar async_client: an ``AsyncAnthropic`` client to use (pass it as a non-freezable kwarg);
        by default each call makes its own from the environment
    :ivar max_retries: overrides the client's retry count
    """

    async_client: AsyncAnthropic | None = None
    max_retries: int | None = None
    fake_first_user_message: str = "/start"
    message_delimiter_for_same_role: str = "\n\n"

    async def _aprepare_message_dicts(self) -> list[MessageDict]:
        return await aprepare_dicts_for_anthropic(
            self.ctx.message_promises,
            system=self.system,
            message_delimiter_for_same_role=self.message_delimiter_for_same_role,
            fake_first_user_message=self.fake_first_user_message,
        )

    async def _aproduce_tokens(self, message_dicts: list[MessageDict], appender: MessageTokenAppender) -> None:
        kwargs = self._sdk_kwargs()
        if "max_tokens" not in kwargs:
            raise ValueError("AnthropicAgent needs max_tokens (the API requires it), e.g. max_tokens=1024.")
        turns = list(message_dicts)
        if turns and turns[0]["role"] == "system":
            kwargs["system"] = turns.pop(0)["content"]
        messages = cast("list[MessageParam]", turns)
        async with aopen_client(self.async_client, AsyncAnthropic, self.max_retries) as client:
            if not self.stream:
                response = await client.messages.create(model=self.model, messages=messages, stream=False, **kwargs)
                _append_response(cast(AnthropicResponse, response), appender)
                return
            events = await client.messages.create(model=self.model, messages=messages, stream=True, **kwargs)
            reader = _EventReader(appender)
            try:
                async for event in cast(AsyncStream[RawMessageStreamEvent], events):
                    reader.feed(event)
            # The SDK wraps network errors of the request but not of the stream; wrap them the same
            # way (as the OpenAI SDK does), so one `except anthropic.APIError` catches them all.
            except httpx2.TimeoutException as exc:
                raise APITimeoutError(request=exc.request) from exc
            except httpx2.TransportError as exc:
                raise APIConnectionError(request=exc.request) from exc
            reader.finish()


class _EventReader:
    """Turns stream events into tokens and metadata; knows whether the stream was complete."""

    def __init__(self, appender: MessageTokenAppender) -> None:
        self.appender = appender
        self.aux = appender.auxiliary_field_collector
        self.tool_calls = ToolCallCollector(appender)
        self.tool_indexes: set[int] = set()
        self.stopped = False

    def feed(self, event: RawMessageStreamEvent) -> None:
        if isinstance(event, RawMessageStartEvent):
            self.aux["id"] = event.message.id
            self.aux["usage"] = event.message.usage.model_dump(exclude_none=True)
        elif isinstance(event, RawContentBlockStartEvent):
            block = event.content_block
            if isinstance(block, ToolUseBlock):
                self.tool_indexes.add(event.index)
                self.tool_calls.add(event.index, call_id=block.id, name=block.name)
            elif isinstance(block, TextBlock) and block.text:
                self.appender.append(block.text)
        elif isinstance(event, RawContentBlockDeltaEvent):
            delta = event.delta
            if isinstance(delta, TextDelta):
                self.appender.append(delta.text)
            elif isinstance(delta, InputJSONDelta) and event.index in self.tool_indexes:
                self.tool_calls.add(event.index, arguments=delta.partial_json)
        elif isinstance(event, RawMessageDeltaEvent):
            self.aux["stop_reason"] = event.delta.stop_reason
            self.aux["stop_sequence"] = event.delta.stop_sequence
            # The delta's counts are cumulative; fields it leaves out keep message_start's.
            self.aux["usage"] = {**self.aux.get("usage", {}), **event.usage.model_dump(exclude_none=True)}
        elif isinstance(event, RawMessageStopEvent):
            self.stopped = True

    def finish(self) -> None:
        self.tool_calls.store()
        if not self.stopped:
            raise IncompleteLLMResponseError("The Anthropic stream ended before message_stop.")


def _append_response(response: AnthropicResponse, appender: MessageTokenAppender) -> None:
    aux = appender.auxiliary_field_collector
    aux["id"] = response.id
    aux["stop_reason"] = response.stop_reason
    aux["stop_sequence"] = response.stop_sequence
    aux["usage"] = response.usage.model_dump(exclude_none=True)
    tool_calls = ToolCallCollector(appender)
    for index, block in enumerate(response.content):
        if isinstance(block, TextBlock):
            appender.append(block.text)
        elif isinstance(block, ToolUseBlock):
            tool_calls.add(index, call_id=block.id, name=block.name, arguments=json.dumps(block.input))
    tool_calls.store()


AnthropicAgent: MiniAgent = miniagent(AnthropicLLM, alias="ANTHROPIC_AGENT")

__all__ = ("AnthropicAgent", "AnthropicLLM", "aprepare_dicts_for_anthropic")
