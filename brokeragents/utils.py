"""Helpers: joining a sequence into one text message, and agent traces."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from typing import TYPE_CHECKING, Any

from brokeragents.calls import get_current_agent_trace
from brokeragents.message_promise import MessagePromise
from brokeragents.message_sequence import MessageSequence
from brokeragents.messages import Message, TextMessage
from brokeragents.sentinels import NO_VALUE

if TYPE_CHECKING:
    from brokeragents.agents import MiniAgent

_CONTENT_FIELDS = ("class_", "content", "content_template")


def as_single_text_promise(
    messages: Any,
    *,
    delimiter: str | None = "\n\n",
    strip_leading_newlines: bool = False,
    reference_original_messages: bool = True,
    start_soon: bool = False,
    message_class: type[Message] | None = None,
    **known_beforehand: Any,
) -> MessagePromise:
    """Stream every message of ``messages`` as one text message, ``delimiter`` between them (G6).

    The metadata of the source messages is copied (later ones win), and ``original_messages``
    holds the sources, so they become sub-messages.
    """
    sequence = MessageSequence.turn_into_sequence_promise(messages)

    async def join_tokens(aux_fields: dict[str, Any]) -> AsyncIterator[str]:
        originals: list[Message] = []
        async for message_promise in sequence:
            if originals and delimiter:
                yield delimiter
            at_start = strip_leading_newlines
            async for token in message_promise:
                text = str(token)
                if at_start:
                    text = text.lstrip("\n")
                    at_start = not text
                if text:
                    yield text
            message = await message_promise
            originals.append(message)
            aux_fields.update({k: message[k] for k in message.keys() if k not in _CONTENT_FIELDS})
        if reference_original_messages:
            aux_fields["original_messages"] = tuple(originals)

    cls = message_class or TextMessage
    return cls.promise(start_soon=start_soon, message_token_streamer=join_tokens, **known_beforehand)


def display_agent_trace(trace: Iterable[MiniAgent] | None = None) -> str:
    """``"A <- B <- C"``: the current agent first, then its callers."""
    agents = get_current_agent_trace() if trace is None else list(trace)
    return " <- ".join(agent.alias for agent in agents)


__all__ = ("NO_VALUE", "as_single_text_promise", "display_agent_trace", "get_current_agent_trace")
