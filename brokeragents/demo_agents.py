"""The agents of ``brokeragents demo``: a small research pipeline, each agent in its own worker.

``RESEARCH_AGENT`` asks ``SEARCH_AGENT`` for two searches in parallel (out of order), then
``WRITER_AGENT`` turns the findings into a short answer. Without an API key every "LLM" is a
scripted, deterministic token stream, so the demo runs anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from brokeragents import InteractionContext, TextMessage, miniagent

TOKEN_DELAY_S = 0.02

_FINDINGS = {
    "streams": "Redis Streams keep an append-only log per key; XRANGE replays it and XREAD BLOCK tails it.",
    "groups": "Consumer groups share work between processes; XAUTOCLAIM and XCLAIM take over stuck entries.",
}


async def _scripted_tokens(text: str) -> AsyncIterator[str]:
    # Word-sized tokens at a steady pace, like an LLM streaming its answer.
    words = text.split(" ")
    for index, word in enumerate(words):
        await asyncio.sleep(TOKEN_DELAY_S)
        yield word if index == len(words) - 1 else word + " "


def _streamed(text: str, alias: str) -> Any:
    async def tokens(_aux: dict[str, Any]) -> AsyncIterator[str]:
        async for token in _scripted_tokens(text):
            yield token

    return TextMessage.promise(message_token_streamer=tokens, agent_alias=alias)


@miniagent
async def search_agent(ctx: InteractionContext, topic: str) -> None:
    """Finds one fact about a topic."""
    finding = _FINDINGS.get(topic, f"Nothing much is known about {topic}.")
    ctx.reply(_streamed(f"On {topic}: {finding}", ctx.this_agent.alias))


@miniagent
async def research_agent(ctx: InteractionContext) -> None:
    """Runs searches in parallel and replies with their findings as they come."""
    question = " ".join(str(message) for message in await ctx.message_promises)
    ctx.reply(_streamed(f"Researching: {question}", ctx.this_agent.alias))
    for topic in ("streams", "groups"):
        ctx.reply_out_of_order(search_agent.trigger(topic=topic))


@miniagent
async def writer_agent(ctx: InteractionContext) -> None:
    """Writes a short answer from the research it receives."""
    notes = [str(message) for message in await ctx.message_promises]
    facts = [note.split(": ", 1)[-1] for note in notes if note.startswith("On ")]
    answer = "In short: " + " ".join(facts) + " That is how brokeragents streams agent replies between workers."
    ctx.reply(_streamed(answer, ctx.this_agent.alias))


__all__ = ("research_agent", "search_agent", "writer_agent")
