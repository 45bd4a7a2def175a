"""A chain of three agents for the chaos test: CHAOS_A calls CHAOS_B, which calls CHAOS_C.

Each one reads its input (one message ``n<NUMBER>``), streams its own message of ``TOKENS``
tokens ``<tag><NUMBER>.<i>`` (a short pause between tokens, so that kills land mid-stream), then
calls the next agent by alias (always through its inbox, never in this process) and replies
with that agent's reply. The whole reply to ``n7`` is therefore, deterministically::

    ("a7.0 a7.1 a7.2 a7.3 a7.4 ", "b7.0 ... ", "c7.0 ... ")

``tests/test_chaos.py`` computes the same expectation from the input.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from brokeragents import InteractionContext, MessagePromise, MiniAgent, TextMessage, miniagent

TOKENS = 5
PAUSE_S = 0.01


def tokens_for(tag: str, number: int) -> list[str]:
    return [f"{tag}{number}.{index} " for index in range(TOKENS)]


async def _number(ctx: InteractionContext) -> int:
    texts = [str(await promise) async for promise in ctx.message_promises]
    if len(texts) != 1 or not texts[0].startswith("n") or not texts[0][1:].isdigit():
        raise ValueError(f"expected one message n<NUMBER>, got {texts!r}")
    return int(texts[0][1:])


def _streamed(tag: str, number: int) -> MessagePromise:
    async def produce(_aux: dict[str, Any]) -> AsyncIterator[str]:
        for index, token in enumerate(tokens_for(tag, number)):
            if index:
                await asyncio.sleep(PAUSE_S)  # a slow LLM
            yield token

    return MessagePromise(message_token_streamer=produce, message_class=TextMessage)


async def _serve(ctx: InteractionContext, tag: str, next_alias: str | None) -> None:
    number = await _number(ctx)
    ctx.reply(_streamed(tag, number))
    if next_alias is not None:
        # Known by alias only: always a call through the next agent's inbox.
        ctx.reply(MiniAgent(alias=next_alias).trigger(f"n{number}"))


@miniagent
async def chaos_a(ctx: InteractionContext) -> None:
    await _serve(ctx, "a", "CHAOS_B")


@miniagent
async def chaos_b(ctx: InteractionContext) -> None:
    await _serve(ctx, "b", "CHAOS_C")


@miniagent
async def chaos_c(ctx: InteractionContext) -> None:
    await _serve(ctx, "c", None)
