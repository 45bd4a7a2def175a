"""Helpers of the operations tests (status, inspect, tail, metrics, tracing, access control).

In-process workers run on either backend (the ``redis_backend`` fixture); CLI commands run as
``python -m brokeragents`` subprocesses against a real server. Agents here are in-process only;
worker processes serve the agents of ``tests/worker_apps``.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import redis.asyncio

from brokeragents import InteractionContext, MiniAgent, MiniAgents, TextMessage, miniagent
from brokeragents.metrics import WorkerMetrics
from brokeragents.worker import Worker, WorkerSettings
from helpers import wait_until
from worker_fixtures import APPS_DIR

CLI_TIMEOUT_S = 60.0
GATES: dict[str, asyncio.Event] = {}


@miniagent
async def gated(ctx: InteractionContext, gate: str = "main") -> None:
    """Replies one token, waits for ``GATES[gate]``, then finishes its message."""

    async def tokens(_aux: dict[str, Any]) -> AsyncIterator[str]:
        yield "before "
        await GATES[gate].wait()
        yield "after"

    ctx.reply(TextMessage.promise(message_token_streamer=tokens))


@miniagent
async def words(ctx: InteractionContext) -> None:
    """Streams each input message back word by word."""
    async for promise in ctx.message_promises:
        text = str(await promise)

        async def tokens(_aux: dict[str, Any], text: str = text) -> AsyncIterator[str]:
            for word in text.split(" "):
                yield word + " "

        ctx.reply(TextMessage.promise(message_token_streamer=tokens))


@miniagent
async def broken(ctx: InteractionContext) -> None:
    ctx.reply("partial")
    raise ValueError("broken on purpose")


@miniagent
async def where(ctx: InteractionContext) -> None:
    """Replies with the key prefix of the worker serving the call."""
    store = ctx.miniagents.store
    ctx.reply(f"served under {store.keys.prefix if store else None}")


@asynccontextmanager
async def aserving(
    agents: list[MiniAgent],
    client: redis.asyncio.Redis,
    *,
    prefix: str = "ba",
    name: str = "w-test",
    concurrency: int = 4,
    metrics: WorkerMetrics | None = None,
    **settings: Any,
) -> AsyncIterator[Worker]:
    """An in-process worker serving ``agents`` until the block ends."""
    worker = Worker(
        agents,
        redis=client,
        name=name,
        metrics=metrics,
        settings=WorkerSettings(
            concurrency=concurrency,
            key_prefix=prefix,
            worker_timeout_s=settings.pop("worker_timeout_s", 3.0),
            heartbeat_interval_s=settings.pop("heartbeat_interval_s", 0.5),
            block_ms=settings.pop("block_ms", 500),
            **settings,
        ),
    )
    task = asyncio.create_task(worker.arun())
    await wait_until(lambda: worker.ready.is_set() or task.done(), what="the worker to be ready")
    if task.done():
        task.result()  # raises what stopped it
    try:
        yield worker
    finally:
        worker.stop()
        await task


def caller(client: redis.asyncio.Redis, prefix: str = "ba") -> MiniAgents:
    return MiniAgents(redis=client, key_prefix=prefix, remote_calls="always")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli_env(**extra: str) -> dict[str, str]:
    inherited = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DYNO")}
    return {**inherited, "PYTHONUNBUFFERED": "1", **extra}


async def arun_cli(
    *args: str, env: dict[str, str] | None = None, timeout_s: float = CLI_TIMEOUT_S
) -> tuple[int, str, str]:
    """Run ``brokeragents ARGS`` to the end; return (exit code, stdout, stderr)."""
    process = await astart_cli(*args, env=env)
    try:
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
    assert process.returncode is not None
    return process.returncode, stdout.decode(), stderr.decode()


async def astart_cli(*args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brokeragents", *args,
        cwd=APPS_DIR, env=env or cli_env(), stdin=subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]
