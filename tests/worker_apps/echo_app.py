"""Plain agents served by worker processes in the tests (workers run with cwd = tests/worker_apps)."""

from __future__ import annotations

import os

from brokeragents import InteractionContext, miniagent


@miniagent
async def echo(ctx: InteractionContext, prefix: str = "echo: ") -> None:
    """Replies to each input message as soon as it arrives (full duplex)."""
    async for promise in ctx.message_promises:
        ctx.reply(f"{prefix}{await promise}")


@miniagent
async def upper(ctx: InteractionContext) -> None:
    async for promise in ctx.message_promises:
        ctx.reply(str(await promise).upper())


@miniagent
async def whoami(ctx: InteractionContext) -> None:
    """Replies with the pid of the process that serves the call."""
    ctx.reply(f"pid={os.getpid()}")


@miniagent
async def input_report(ctx: InteractionContext) -> None:
    """Replies with one message listing its input in the order the agent saw it, and its kwargs."""
    seen = [str(await promise) async for promise in ctx.message_promises]
    ctx.reply("|".join(seen))


@miniagent
async def failing(ctx: InteractionContext, after: int = 1) -> None:
    """Replies ``after`` messages, then raises ValueError."""
    for index in range(after):
        ctx.reply(f"before error {index}")
    raise ValueError("the agent failed on purpose")


agents = [echo, upper]
