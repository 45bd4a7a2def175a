"""A chain of three agents, each served by its own process: A calls B, which calls C."""

from __future__ import annotations

import os

from brokeragents import InteractionContext, miniagent


@miniagent
async def chain_c(ctx: InteractionContext) -> None:
    async for promise in ctx.message_promises:
        ctx.reply(f"C({await promise}) pid={os.getpid()}")


@miniagent
async def chain_b(ctx: InteractionContext) -> None:
    ctx.reply(f"B pid={os.getpid()}")
    ctx.reply(chain_c.trigger(ctx.message_promises))


@miniagent
async def chain_a(ctx: InteractionContext) -> None:
    ctx.reply(f"A pid={os.getpid()}")
    ctx.reply(chain_b.trigger(ctx.message_promises))
