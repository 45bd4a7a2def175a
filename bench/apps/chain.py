"""The agents of the chain benchmarks, the twins of the baselines' producer and relay.

``producer_agent`` replies with one text message of ``n`` tokens ``"tok_"``, each carrying the
monotonic-ns time it was made (``ts``; CLOCK_MONOTONIC is system-wide on Linux, so a consumer in
another process can compute the latency). ``relay_agent`` re-streams every incoming message token
by token as a new message, like ``b7_miniagents_chain.py``'s relay. Modes:

* ``burst``: the token generator never awaits (the framework's ceiling);
* ``sleep0``: one event-loop turn per token (``await asyncio.sleep(0)``), as network-arriving
  LLM tokens would get;
* ``paced``: token ``i`` is due at ``start + i / rate`` (an LLM streaming at ``rate`` tok/s).

Worker processes serve them as ``bench.apps.chain:producer_agent`` and
``bench.apps.chain:relay_agent``; the in-process case calls them directly.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from brokeragents import InteractionContext, TextMessage, TextToken, miniagent

TOKEN = "tok_"


async def _tokens(n: int, mode: str, rate: float) -> AsyncIterator[TextToken]:
    t_first = time.monotonic_ns()
    for i in range(n):
        if mode == "sleep0":
            await asyncio.sleep(0)
        elif mode == "paced":
            delay_s = (t_first + i * 1e9 / rate - time.monotonic_ns()) / 1e9
            await asyncio.sleep(max(0.0, delay_s))
        yield TextToken(TOKEN, ts=time.monotonic_ns())


@miniagent
async def producer_agent(ctx: InteractionContext, n: int, mode: str = "burst", rate: float = 0.0) -> None:
    """One message of ``n`` timestamped tokens."""

    async def tokens(_aux: dict[str, Any]) -> AsyncIterator[TextToken]:
        async for token in _tokens(n, mode, rate):
            yield token

    ctx.reply(TextMessage.promise(message_token_streamer=tokens))


@miniagent
async def relay_agent(ctx: InteractionContext) -> None:
    """Re-streams every incoming message, token by token, as a new message."""
    async for message_promise in ctx.message_promises:

        async def relay_tokens(_aux: dict[str, Any], source: Any = message_promise) -> AsyncIterator[Any]:
            async for token in source:
                yield token

        ctx.reply(TextMessage.promise(message_token_streamer=relay_tokens))


# The two relay hops of the 3-hop chain run in two worker processes, like stream_chain.py's B and
# C: two aliases, so that each hop has its own inbox and therefore its own process.
relay_b_agent = relay_agent.fork(alias="RELAY_B_AGENT")
relay_c_agent = relay_agent.fork(alias="RELAY_C_AGENT")

__all__ = ("TOKEN", "producer_agent", "relay_agent", "relay_b_agent", "relay_c_agent")
