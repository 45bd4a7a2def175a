"""Agents whose pace and crash points the tests control through Redis keys and call kwargs.

Every control key is ``{PREFIX}:test:{NAME}`` under the worker's key prefix. Kill points end the
process with SIGKILL, on the first attempt of a call only (the attempt a worker got is in the
call's hash), after flushing what the agent produced so far to Redis:

- ``before_first``: before the first token,
- ``mid``: after half of the tokens,
- ``after_last``: after the last token, before the message is finished,
- ``before_ack``: after the reply is complete and flushed, right before XACK (set the key
  ``{PREFIX}:test:kill_before_ack`` to ``1``; the worker that acknowledges next dies instead).
"""

from __future__ import annotations

import os
import signal
from collections.abc import AsyncIterator
from typing import Any

from brokeragents import InteractionContext, MessagePromise, TextMessage, miniagent
from brokeragents import worker as _worker


def _key(ctx: Any, name: str) -> str:
    return f"{ctx.miniagents.store.keys.prefix}:test:{name}"


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


async def _attempt(ctx: Any) -> int:
    store = ctx.miniagents.store
    raw = await store.redis.hget(store.keys.call(ctx.call.call_id), "attempt")
    return int(raw or 1)


def _overrides(text: str) -> dict[str, str]:
    """``"tokens=6 kill_at=mid"`` -> its pairs (how ``brokeragents call`` passes settings)."""
    return dict(part.split("=", 1) for part in text.split() if "=" in part)


@miniagent
async def streamer(
    ctx: InteractionContext,
    tokens: int = 5,
    gate: str = "",
    label: str = "tok",
    kill_at: str = "",
    pause_s: float = 0.0,
) -> None:
    """Streams ``tokens`` tokens ``tok0 tok1 ...`` as one message.

    With ``gate``, it waits after the first token until an item is pushed to the list
    ``{PREFIX}:test:{gate}``. Input messages of the form ``key=value ...`` override the kwargs.
    ``pause_s`` sleeps between tokens (a slow LLM).
    """
    settings: dict[str, Any] = {"tokens": tokens, "gate": gate, "label": label, "kill_at": kill_at, "pause_s": pause_s}
    async for promise in ctx.message_promises:
        settings.update(_overrides(str(await promise)))
    count, gate, label, kill_at = int(settings["tokens"]), settings["gate"], settings["label"], settings["kill_at"]
    pause_s = float(settings["pause_s"])
    store = ctx.miniagents.store
    redis = store.redis
    attempt = await _attempt(ctx)
    await redis.rpush(_key(ctx, "started"), f"{os.getpid()}:{attempt}")
    kill_now = kill_at if attempt == 1 else ""

    async def kill_if(point: str) -> None:
        if kill_now == point:
            await store.aflush()
            _die()

    await kill_if("before_first")

    async def produce(_aux: dict[str, Any]) -> AsyncIterator[str]:
        import asyncio

        for index in range(count):
            if index == 1 and gate and await redis.blpop([_key(ctx, gate)], timeout=20) is None:
                raise TimeoutError(f"nobody opened the gate {gate}")
            if index and pause_s:
                await asyncio.sleep(pause_s)
            yield f"{label}{index} "
            if index == count // 2 - 1:
                await redis.rpush(_key(ctx, "mid"), f"{os.getpid()}:{attempt}")
                await kill_if("mid")
        await kill_if("after_last")

    ctx.reply(MessagePromise(message_token_streamer=produce, message_class=TextMessage))


@miniagent
async def blocker(ctx: InteractionContext) -> None:
    """Counts how many calls run at once, then waits for an item on ``{PREFIX}:test:gate``."""
    redis = ctx.miniagents.store.redis
    running = await redis.incr(_key(ctx, "running"))
    await redis.zadd(_key(ctx, "max_running"), {"max": running}, gt=True)
    await redis.rpush(_key(ctx, "started"), str(os.getpid()))
    try:
        if await redis.blpop([_key(ctx, "gate")], timeout=20) is None:
            raise TimeoutError("nobody opened the gate")
    finally:
        await redis.decr(_key(ctx, "running"))
    ctx.reply(f"pid={os.getpid()}")


@miniagent
async def crasher(ctx: InteractionContext) -> None:
    """Kills the process serving it, every time."""
    await ctx.miniagents.store.redis.rpush(_key(ctx, "started"), str(os.getpid()))
    _die()


@miniagent
async def exiter(ctx: InteractionContext) -> None:
    """Ends the process serving it with os._exit(3), every time."""
    await ctx.miniagents.store.redis.rpush(_key(ctx, "started"), str(os.getpid()))
    os._exit(3)


@miniagent
async def slow(ctx: InteractionContext, seconds: float = 6.0) -> None:
    """A long LLM turn: one token, ``seconds`` of thinking (the event loop stays free), one more."""
    import asyncio

    redis = ctx.miniagents.store.redis
    await redis.rpush(_key(ctx, "started"), f"{os.getpid()}:{await _attempt(ctx)}")

    async def produce(_aux: dict[str, Any]) -> AsyncIterator[str]:
        yield "thinking... "
        await asyncio.sleep(seconds)
        yield "done"

    ctx.reply(MessagePromise(message_token_streamer=produce, message_class=TextMessage))


# --- kill point "before_ack": wrap the worker's acknowledgement ------------------------------------

_original_aack = _worker.Worker._aack


async def _aack_or_die(self: _worker.Worker, alias: str, entry_id: str) -> None:
    flag = f"{self._store.keys.prefix}:test:kill_before_ack"
    if await self._store.redis.getdel(flag):
        await self._store.redis.rpush(f"{self._store.keys.prefix}:test:killed_before_ack", entry_id)
        _die()
    await _original_aack(self, alias, entry_id)


_worker.Worker._aack = _aack_or_die  # type: ignore[method-assign]
