"""OpenAI: the chat agent (``OpenAIAgent``) and the embedding agent, on the official async SDK.

The SDK reads its own environment: ``OPENAI_API_KEY``, ``OPENAI_BASE_URL`` (any compatible
server), ``OPENAI_ORG_ID``, ``OPENAI_PROJECT_ID``. Retries are the SDK's: ``max_retries`` (default
2, so 3 attempts) on connection errors, 408, 409, 429 and 5xx, with exponential backoff from 0.5 s
to 8 s that honours ``Retry-After``. Only a request that has not started streaming is retried; a
stream cut in the middle ends the reply with the error. ``timeout`` (seconds) goes to the SDK
call; its default is 600 s (5 s to connect).

Unlike MiniAgents 0.0.35, the system prompt is the *first* message, where OpenAI expects it, not
the last one.
"""

from __future__ import annotations

from typing import Any, cast

from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletion, ChatCompletionChunk, ChatCompletionMessageParam

from brokeragents.agents import MiniAgent, miniagent
from brokeragents.calls import InteractionContext
from brokeragents.ext.llms.base import (
    EmbeddingMessage,
    IncompleteLLMResponseError,
    LLMAgent,
    MessageDict,
    aopen_client,
    aprepare_chat_dicts,
    message_to_llm_dict,
    thaw,
)
from brokeragents.ext.llms.tools import ToolCallCollector, openai_tool_fields
from brokeragents.frozen import Frozen
from brokeragents.message_promise import MessageTokenAppender
from brokeragents.utils import as_single_text_promise


async def aprepare_dicts_for_openai(messages: Any, *, system: str | None = None) -> list[MessageDict]:
    """OpenAI chat message dicts: ``system`` first, then every message in order.

    A message without a role is a user message. System messages inside ``messages`` stay where
    they are. Tool calls and tool results keep their OpenAI fields.
    """
    return await aprepare_chat_dicts(
        messages, system=system, convert=lambda message: openai_tool_fields(message, message_to_llm_dict(message))
    )


class OpenAILLM(LLMAgent):
    """The class behind :data:`OpenAIAgent`; subclass it to change how a request is built.

    :ivar async_client: an ``AsyncOpenAI`` client to use (pass it as a non-freezable kwarg);
        by default each call makes its own from the environment
    :ivar max_retries: overrides the client's retry count
    """

    async_client: AsyncOpenAI | None = None
    max_retries: int | None = None

    async def _aprepare_message_dicts(self) -> list[MessageDict]:
        return await aprepare_dicts_for_openai(self.ctx.message_promises, system=self.system)

    async def _aproduce_tokens(self, message_dicts: list[MessageDict], appender: MessageTokenAppender) -> None:
        kwargs = self._sdk_kwargs()
        if kwargs.pop("n", 1) != 1:
            raise ValueError("OpenAIAgent supports only n=1: one reply message per call.")
        messages = cast("list[ChatCompletionMessageParam]", message_dicts)
        async with aopen_client(self.async_client, AsyncOpenAI, self.max_retries) as client:
            if not self.stream:
                completion = await client.chat.completions.create(
                    model=self.model, messages=messages, stream=False, **kwargs
                )
                _append_completion(cast(ChatCompletion, completion), appender)
                return
            if "stream_options" not in kwargs:  # usage comes in a last chunk, only when asked for
                kwargs["stream_options"] = {"include_usage": True}
            elif kwargs["stream_options"] is None:
                del kwargs["stream_options"]  # for compatible servers that reject it
            chunks = await client.chat.completions.create(model=self.model, messages=messages, stream=True, **kwargs)
            reader = _ChunkReader(appender)
            async for chunk in cast(AsyncStream[ChatCompletionChunk], chunks):
                reader.feed(chunk)
            reader.finish()


class _ChunkReader:
    """Turns streamed chunks into tokens and metadata; knows whether the stream was complete."""

    def __init__(self, appender: MessageTokenAppender) -> None:
        self.appender = appender
        self.aux = appender.auxiliary_field_collector
        self.tool_calls = ToolCallCollector(appender)
        self.finish_reason: str | None = None

    def feed(self, chunk: ChatCompletionChunk) -> None:
        self.aux["id"] = chunk.id
        if chunk.usage is not None:
            self.aux["usage"] = chunk.usage.model_dump(exclude_none=True)
        for choice in chunk.choices:
            delta = choice.delta
            if delta.content:
                self.appender.append(delta.content)
            if delta.refusal:
                self.aux["refusal"] = self.aux.get("refusal", "") + delta.refusal
            for call in delta.tool_calls or ():
                function = call.function
                self.tool_calls.add(
                    call.index,
                    call_id=call.id,
                    name=function.name if function else None,
                    arguments=(function.arguments or "") if function else "",
                )
            if choice.finish_reason is not None:
                self.finish_reason = self.aux["finish_reason"] = choice.finish_reason

    def finish(self) -> None:
        self.tool_calls.store()
        if self.finish_reason is None:
            # The SDK ends quietly when the body ends without "[DONE]": that is a cut, not an end.
            raise IncompleteLLMResponseError("The OpenAI stream ended before its finish_reason.")


def _append_completion(completion: ChatCompletion, appender: MessageTokenAppender) -> None:
    aux = appender.auxiliary_field_collector
    aux["id"] = completion.id
    if completion.usage is not None:
        aux["usage"] = completion.usage.model_dump(exclude_none=True)
    choice = completion.choices[0]
    aux["finish_reason"] = choice.finish_reason
    message = choice.message
    if message.content:
        appender.append(message.content)
    if message.refusal:
        aux["refusal"] = message.refusal
    tool_calls = ToolCallCollector(appender)
    for index, call in enumerate(message.tool_calls or ()):
        function = getattr(call, "function", None)  # only function calls have a name and arguments
        if function is not None:
            tool_calls.add(index, call_id=call.id, name=function.name, arguments=function.arguments)
    tool_calls.store()


OpenAIAgent: MiniAgent = miniagent(OpenAILLM, alias="OPENAI_AGENT")


async def _openai_embedding_agent(
    ctx: InteractionContext,
    model: str,
    *,
    async_client: AsyncOpenAI | None = None,
    batch_mode: bool = False,
    response_metadata: Frozen | None = None,
    llm_logger_agent: Any = None,  # accepted as in MiniAgents; embeddings are not logged
    max_retries: int | None = None,
    **kwargs: Any,
) -> None:
    """Embed the input: the whole of it as one text, or each message apart (``batch_mode``).

    Replies with one :class:`EmbeddingMessage` per embedded text, in input order.
    """
    if batch_mode:
        texts = [str(message) for message in await ctx.message_promises]
    else:
        texts = [str(await as_single_text_promise(ctx.message_promises))]
    metadata = response_metadata.as_kwargs() if response_metadata is not None else {}
    async with aopen_client(async_client, AsyncOpenAI, max_retries) as client:
        response = await client.embeddings.create(model=model, input=texts, **thaw(dict(kwargs)))
    for item in sorted(response.data, key=lambda item: item.index):
        ctx.reply(EmbeddingMessage(embedding=tuple(item.embedding), **metadata))


openai_embedding_agent: MiniAgent = miniagent(_openai_embedding_agent, alias="OPENAI_EMBEDDING_AGENT")

__all__ = (
    "EmbeddingMessage",
    "OpenAIAgent",
    "OpenAILLM",
    "aprepare_dicts_for_openai",
    "openai_embedding_agent",
)
