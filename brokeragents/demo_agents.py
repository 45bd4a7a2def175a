"""The agents of ``brokeragents demo``: a small research pipeline, each agent in its own worker.

``RESEARCH_AGENT`` asks ``SEARCH_AGENT`` for two searches in parallel (out of order), then
``WRITER_AGENT`` turns the findings into a short answer with an LLM: the one
:func:`~brokeragents.ext.llms.pick.pick_llm_agent` picks, so OpenAI or Anthropic when a key is
set (``OPENAI_API_KEY``, ``ANTHROPIC_API_KEY``...), else a scripted fake LLM whose answer is
deterministic. Searching is canned either way, so the demo runs anywhere.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from brokeragents import InteractionContext, TextMessage, miniagent
from brokeragents.ext.llms.pick import pick_llm_agent

TOKEN_DELAY_S = 0.02

_FINDINGS = {
    "streams": "Redis Streams keep an append-only log per key; XRANGE replays it and XREAD BLOCK tails it.",
    "groups": "Consumer groups share work between processes; XAUTOCLAIM and XCLAIM take over stuck entries.",
}
WRITER_SYSTEM_PROMPT = (
    "You answer the question you are given in two or three sentences, using only the research notes "
    "that come with it. Start with 'In short:'."
)


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
    """Finds one fact about a topic (canned: no search engine is needed)."""
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
    """Writes a short answer from the research it receives, with an LLM (a scripted one without a key)."""
    notes = [str(message) for message in await ctx.message_promises]
    facts = [note.split(": ", 1)[-1] for note in notes if note.startswith("On ")]
    # What the fake LLM says; a real model writes its own answer from the same notes.
    scripted = "In short: " + " ".join(facts) + " That is how brokeragents streams agent replies between workers."
    llm = pick_llm_agent(
        script=scripted,
        token_delay_s=TOKEN_DELAY_S,
        system=WRITER_SYSTEM_PROMPT,
        response_metadata={"agent_alias": ctx.this_agent.alias},  # shown as WRITER_AGENT, not the LLM's alias
    )
    ctx.reply(llm.trigger(ctx.message_promises))


__all__ = ("WRITER_SYSTEM_PROMPT", "research_agent", "search_agent", "writer_agent")
