"""Agents that combine other agents: chains, loops and a user/assistant dialog.

A chain is a list of entries applied in turn to a message sequence. A ``MiniAgent`` is triggered
with the current messages, and its replies become the current messages. ``AWAIT`` waits until the
current sequence is complete (a tuple from then on). ``CLEAR`` drops the current messages. ``None``
is skipped, so optional agents can be written inline.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from brokeragents.agents import MiniAgent, miniagent
from brokeragents.calls import InteractionContext
from brokeragents.message_sequence import MessageSequencePromise
from brokeragents.messages import Message

AWAIT = "AWAIT"
CLEAR = "CLEAR"

ChainEntry = MiniAgent | str | None

_LOOP_NEEDS_AWAIT_AND_AGENT = (
    "agent_loop needs at least one AWAIT entry and at least one MiniAgent: without them the loop "
    "would schedule turns forever without ever running them."
)


def validate_chain(agents: Iterable[ChainEntry]) -> tuple[ChainEntry, ...]:
    """Return the entries as a tuple.

    :raises ValueError: an entry is neither a ``MiniAgent``, ``AWAIT``, ``CLEAR`` nor ``None``
    """
    entries = tuple(agents)
    for entry in entries:
        if not (entry is None or isinstance(entry, MiniAgent) or entry in (AWAIT, CLEAR)):
            raise ValueError(f"Invalid agent: {entry}")
    return entries


async def achain_agents(agents: Sequence[ChainEntry], messages: Any) -> Any:
    """Pipe ``messages`` through the (validated) chain; return the last messages, ``None`` if cleared.

    The result is what the last entry produced: usually a reply sequence still being streamed,
    a tuple of messages after a trailing ``AWAIT``.
    """
    for entry in agents:
        if entry is None:
            continue
        if isinstance(entry, MiniAgent):
            messages = entry.trigger(messages)
        elif entry == AWAIT:
            if isinstance(messages, MessageSequencePromise):
                messages = await messages
        else:  # CLEAR
            messages = None
    return messages


@miniagent
async def agent_chain(ctx: InteractionContext, agents: Iterable[ChainEntry]) -> None:
    """Pipe the input through `agents` one after another and reply with what the last one replies.

    Besides agents, the list may hold AWAIT, CLEAR and None (see brokeragents.ext.aggregators).
    """
    messages = await achain_agents(validate_chain(agents), ctx.message_promises)
    if messages is not None:  # a trailing CLEAR: nothing to reply
        ctx.reply(messages)


@miniagent
async def agent_loop(
    ctx: InteractionContext, agents: Iterable[ChainEntry], raise_keyboard_interrupt: bool = True
) -> None:
    """Run the chain of `agents` again and again, each turn fed with what the previous turn produced.

    A KeyboardInterrupt (e.g. the user typing "exit") ends the loop; it is re-raised only if
    `raise_keyboard_interrupt` is true. The loop itself replies with nothing.
    """
    entries = validate_chain(agents)
    if AWAIT not in entries or not any(isinstance(entry, MiniAgent) for entry in entries):
        raise ValueError(_LOOP_NEEDS_AWAIT_AND_AGENT)
    messages: Any = ctx.message_promises
    try:
        while True:
            messages = await achain_agents(entries, messages)
    except KeyboardInterrupt:
        if raise_keyboard_interrupt:
            raise


@miniagent
async def prompt_agent(
    ctx: InteractionContext,
    target_agent: MiniAgent,
    prompt_prefix: Message | tuple[Message, ...] = (),
    prompt_suffix: Message | tuple[Message, ...] = (),
    **target_kwargs: Any,
) -> None:
    """Trigger `target_agent` with the input between `prompt_prefix` and `prompt_suffix`."""
    ctx.reply(target_agent.trigger([prompt_prefix, ctx.message_promises, prompt_suffix], **target_kwargs))


@miniagent
async def dialog_loop(
    ctx: InteractionContext,
    user_agent: MiniAgent | None,
    assistant_agent: MiniAgent | None,
    prompt_at_the_end: bool = True,
) -> None:
    """Alternate between `user_agent` and `assistant_agent` until the user quits.

    The dialog's own input is a prompt for the assistant: added after (or, with
    `prompt_at_the_end=False`, before) what the user agent replies each turn. The user agent
    never sees it, so it stays out of the chat history.
    """
    prompt = await ctx.message_promises
    assistant = None
    if assistant_agent is not None:
        placement = "prompt_suffix" if prompt_at_the_end else "prompt_prefix"
        prompt_kwargs: dict[str, Any] = {placement: prompt}
        assistant = prompt_agent.fork(target_agent=assistant_agent, **prompt_kwargs)
    ctx.reply(agent_loop.trigger(agents=[user_agent, AWAIT, assistant], raise_keyboard_interrupt=False))


__all__ = (
    "AWAIT",
    "CLEAR",
    "ChainEntry",
    "achain_agents",
    "agent_chain",
    "agent_loop",
    "dialog_loop",
    "prompt_agent",
    "validate_chain",
)
