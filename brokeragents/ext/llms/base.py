"""LLMAgent: what the OpenAI, Anthropic and fake LLM agents share.

An LLM agent replies with exactly one message promise and closes its reply sequence at once
(``ctx.afinish_early()``, semantics H8), so consumers know there is one reply while its tokens
still stream. Tokens go through a :class:`~brokeragents.MessageTokenAppender`; response metadata
(model, finish or stop reason, usage, tool calls) goes into its ``auxiliary_field_collector`` and
is merged into the final message. A failure at any point (reading the input, the request, the
middle of the stream) ends that message with the error where it happened: the promise raises
there, or resolves to an ``ErrorMessage`` under ``errors_as_messages``. A stream that stops
without the provider's end marker raises :class:`IncompleteLLMResponseError`, so a partial
answer is never passed off as a complete one.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, Protocol, Self, TypeVar

from pydantic import BaseModel, ConfigDict, Field

from brokeragents.agents import MiniAgent
from brokeragents.calls import InteractionContext
from brokeragents.errors import IncompleteLLMResponseError
from brokeragents.ext.llms.messages import AssistantMessage, LLMMessage
from brokeragents.frozen import Frozen
from brokeragents.message_promise import MessagePromise, MessageTokenAppender
from brokeragents.message_sequence import MessageSequence
from brokeragents.messages import Message
from brokeragents.runtime import MiniAgents

MessageDict = dict[str, Any]


def thaw(value: Any) -> Any:
    """Turn frozen kwargs back into what the SDKs expect: Frozen -> dict, tuple -> list."""
    if isinstance(value, Frozen):
        return {key: thaw(value[key]) for key in value.keys() if key != "class_"}
    if isinstance(value, tuple | list):
        return [thaw(item) for item in value]
    return value


def message_to_llm_dict(message: Message, default_role: str = "user") -> MessageDict:
    """``{"role", "content"}`` for a message; a message without a role gets ``default_role``.

    A message with a role contributes its ``content`` field (as in MiniAgents 0.0.35); any other
    message contributes its ``str()`` (the text, or fenced JSON for a non-text message).
    """
    role = message.get("role")
    content = message.get("content")
    if not (isinstance(role, str) and isinstance(content, str)):
        content = str(message)
    return {"role": role if isinstance(role, str) else default_role, "content": content}


async def aprepare_chat_dicts(
    messages: Any, *, system: str | None = None, convert: Callable[[Message], MessageDict] = message_to_llm_dict
) -> list[MessageDict]:
    """The system prompt first (if any), then ``convert(message)`` for each message, in order."""
    resolved = await MessageSequence.turn_into_sequence_promise(messages)
    message_dicts = [{"role": "system", "content": system}] if system is not None else []
    return message_dicts + [convert(message) for message in resolved]


class EmbeddingMessage(Message):
    """An embedding vector (what ``openai_embedding_agent`` replies with)."""

    embedding: tuple[float, ...]


def _default_stream() -> bool:
    return MiniAgents.get_current().stream_llm_tokens_by_default


def _default_logger() -> Any:
    return MiniAgents.get_current().llm_logger_agent


class LLMAgent(BaseModel, ABC):
    """Base of the class-based LLM agents (instantiated with ``ctx=...`` and the call's kwargs).

    Keyword arguments that are not fields (``temperature``, ``max_tokens``, ``tools``...) are
    passed to the provider's SDK call as they are.

    :ivar model: the model to ask; it is also known beforehand on the reply (``known_beforehand``)
    :ivar stream: stream tokens as they come (default ``MiniAgents.stream_llm_tokens_by_default``)
    :ivar system: a system prompt, placed first
    :ivar response_metadata: extra fields known beforehand and set on the reply message
    :ivar response_message_class: the class of the reply (``AssistantMessage``)
    :ivar llm_logger_agent: ``True`` for the markdown logger, an agent, or ``False``
        (default ``MiniAgents.llm_logger_agent``)
    """

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="allow", protected_namespaces=())

    ctx: InteractionContext
    model: str
    stream: bool = Field(default_factory=_default_stream)
    system: str | None = None
    response_metadata: Frozen | None = None
    response_message_class: type[Message] = AssistantMessage
    llm_logger_agent: MiniAgent | bool | None = Field(default_factory=_default_logger)

    async def __call__(self) -> None:
        appender = MessageTokenAppender(capture_errors=False)
        appender.open()  # a promise refuses an appender that was never opened
        reply = self.response_message_class.promise(message_token_streamer=appender, **self._known_beforehand())
        self.ctx.reply(reply)
        await self.ctx.afinish_early()
        try:
            message_dicts = await self._aprepare_message_dicts()
            self._log_request(message_dicts, reply)
            await self._aproduce_tokens(message_dicts, appender)
        except asyncio.CancelledError:
            # The message must not look complete, but its consumers must not see a cancellation
            # of their own either.
            appender.close(IncompleteLLMResponseError("The LLM call was cancelled before it completed."))
            raise
        except Exception as exc:
            if not self.ctx.call.errors_as_messages:
                self.ctx.miniagents.log_background_error_once(exc)
            appender.close(exc)  # the reply raises at this position
        else:
            appender.close()

    @abstractmethod
    async def _aprepare_message_dicts(self) -> list[MessageDict]:
        """Await the input and turn it into the provider's message dicts (system prompt first)."""

    @abstractmethod
    async def _aproduce_tokens(self, message_dicts: list[MessageDict], appender: MessageTokenAppender) -> None:
        """Call the provider; append tokens, and put metadata in ``auxiliary_field_collector``."""

    def _known_beforehand(self) -> dict[str, Any]:
        metadata = self.response_metadata.as_kwargs() if self.response_metadata is not None else {}
        return {"model": self.model, "agent_alias": self.ctx.this_agent.alias, **metadata}

    def _sdk_kwargs(self) -> dict[str, Any]:
        """The extra kwargs, thawed for the SDK."""
        return {key: thaw(value) for key, value in (self.model_extra or {}).items()}

    def _log_request(self, message_dicts: list[MessageDict], reply: MessagePromise) -> None:
        logger = self.llm_logger_agent
        if logger is True:
            from brokeragents.ext.llms.logger import markdown_llm_logger_agent  # the logger is optional

            logger = markdown_llm_logger_agent
        if not isinstance(logger, MiniAgent):
            return
        request = [_as_log_message(message_dict) for message_dict in message_dicts]
        metadata = {"agent_alias": self.ctx.this_agent.alias, "model": self.model, "stream": self.stream}
        # Registered after afinish_early: waiting for it earlier would wait on our own reply.
        self.ctx.make_sure_to_wait(
            logger.trigger([*request, reply], request_metadata={**metadata, **self._sdk_kwargs()})
        )


def _as_log_message(message_dict: MessageDict) -> Message:
    if isinstance(message_dict.get("content"), str):
        return LLMMessage(**message_dict)
    return Message(**message_dict)  # content blocks (tool calls and results) show as JSON


class SDKClient(Protocol):
    """What the agents need of an ``AsyncOpenAI`` or ``AsyncAnthropic`` client."""

    def with_options(self, *, max_retries: int = ...) -> Self: ...

    async def close(self) -> None: ...


ClientT = TypeVar("ClientT", bound=SDKClient)


@asynccontextmanager
async def aopen_client(
    given: ClientT | None, factory: Callable[[], ClientT], max_retries: int | None
) -> AsyncIterator[ClientT]:
    """Use ``given``, or a client made by ``factory`` for this call only and closed after it.

    A client per call, never a module-global one: an SDK client is bound to the event loop it
    first ran in. ``max_retries``, if given, overrides the client's own setting.
    """
    client = given if given is not None else factory()
    try:
        yield client if max_retries is None else client.with_options(max_retries=max_retries)
    finally:
        if given is None:
            await client.close()


__all__ = (
    "EmbeddingMessage",
    "IncompleteLLMResponseError",
    "LLMAgent",
    "MessageDict",
    "SDKClient",
    "aopen_client",
    "aprepare_chat_dicts",
    "message_to_llm_dict",
    "thaw",
)
