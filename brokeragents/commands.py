"""What the CLI commands do, without argument parsing, logging setup or environment reading."""

from __future__ import annotations

import asyncio
import importlib
import json
import signal
import sys
import time
from collections.abc import AsyncIterator
from typing import Any, TextIO

from brokeragents.agents import MiniAgent
from brokeragents.errors import BrokerAgentsError, ReplyRestartedError
from brokeragents.message_promise import MessagePromise
from brokeragents.messages import Message
from brokeragents.registry import Registry
from brokeragents.runtime import MiniAgents
from brokeragents.worker import Worker, WorkerSettings

EXIT_OK = 0
EXIT_AGENT_ERROR = 1
EXIT_NOT_SERVED = 2


class ImportStringError(BrokerAgentsError, ValueError):
    """Raised when a ``MODULE:ATTR`` path does not name a MiniAgent or a list of them."""


def import_agents(path: str) -> list[MiniAgent]:
    """Import ``MODULE:ATTR``: a MiniAgent or a list/tuple of them."""
    module_name, _, attr = path.partition(":")
    if not module_name or not attr:
        raise ImportStringError(f"{path!r} is not of the form MODULE:ATTR")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ImportStringError(f"Cannot import {module_name!r}: {exc}") from exc
    for part in attr.split("."):
        try:
            target = getattr(target, part)
        except AttributeError as exc:
            raise ImportStringError(f"{module_name!r} has no attribute {attr!r}") from exc
    agents = list(target) if isinstance(target, list | tuple) else [target]
    for agent in agents:
        if not isinstance(agent, MiniAgent):
            raise ImportStringError(f"{path!r} holds {type(agent).__name__}, not a MiniAgent (or a list of them)")
    return agents


def run_worker(agents: list[MiniAgent], *, redis_url: str, name: str | None, settings: WorkerSettings) -> int:
    """Serve ``agents`` until SIGTERM or SIGINT; return the exit code."""
    worker = Worker(agents, redis_url=redis_url, name=name, settings=settings)

    async def _amain() -> None:
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, worker.stop)
        await worker.arun()

    asyncio.run(_amain())
    return EXIT_OK


async def _await_worker(mini_agents: MiniAgents, alias: str, timeout_s: float) -> bool:
    store = mini_agents.store
    assert store is not None
    registry = Registry(store.redis, store.keys)
    deadline = time.monotonic() + timeout_s
    while not await registry.ais_served(alias):
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(0.1)  # a CLI waiting for a worker to appear; nothing to block on
    return True


async def _aiterate(iterable: Any) -> AsyncIterator[Any]:
    """Iterate a promise, passing restart markers through as values instead of stopping."""
    iterator = iterable.__aiter__()
    while True:
        try:
            yield await iterator.__anext__()
        except StopAsyncIteration:
            return
        except ReplyRestartedError as exc:
            yield exc


async def acall(
    alias: str,
    messages: list[str],
    *,
    redis_url: str,
    as_json: bool,
    timeout_s: float,
    key_prefix: str = "ba",
    out: TextIO = sys.stdout,
    err: TextIO = sys.stderr,
) -> int:
    """Trigger ``alias`` on the workers and print its reply; return the exit code."""
    # Replies are rebuilt only from registered message classes: the bundled ones (LLM replies,
    # tool calls) are registered by importing them; `call --import MODULE` adds the user's own.
    importlib.import_module("brokeragents.ext")
    async with MiniAgents(redis_url=redis_url, remote_calls="always", key_prefix=key_prefix) as mini_agents:
        if not await _await_worker(mini_agents, alias, timeout_s):
            err.write(
                f"Error: no worker serves agent {alias!r} (waited {timeout_s:g} s). "
                f"Start one with `brokeragents worker MODULE:ATTR`.\n"
            )
            return EXIT_NOT_SERVED
        reply = MiniAgent(alias=alias).trigger(messages or None)
        try:
            if as_json:
                for message in await reply:
                    out.write(message_json(message))
                    out.write("\n")
            else:
                await _astream(reply, out, err)
        except Exception as exc:
            out.flush()
            err.write(f"Error: {type(exc).__name__}: {exc}\n")
            return EXIT_AGENT_ERROR
    return EXIT_OK


async def _astream(reply: Any, out: TextIO, err: TextIO) -> None:
    """Print tokens as they arrive, one message per line.

    A restart (the worker was lost) ends the line of the cut attempt, is reported on stderr, and
    the new attempt's messages follow from the start.
    """
    first = True
    async for item in _aiterate(reply):
        if isinstance(item, ReplyRestartedError):
            if not first:
                out.write("\n")
                out.flush()
            err.write(f"[brokeragents] {item}\n")
            err.flush()
            first = True
            continue
        assert isinstance(item, MessagePromise)
        if not first:
            out.write("\n")
        first = False
        async for token in _aiterate(item):
            if isinstance(token, ReplyRestartedError):
                break  # the message was cut; the reply's restart marker comes next
            out.write(str(token))
            out.flush()
    out.write("\n")
    out.flush()
    await reply  # raises the agent's error, if any, after what streamed


def message_json(message: Message) -> str:
    return json.dumps({**message.serialize(), "hash_key": message.hash_key}, ensure_ascii=False)


__all__ = (
    "EXIT_AGENT_ERROR",
    "EXIT_NOT_SERVED",
    "EXIT_OK",
    "ImportStringError",
    "acall",
    "import_agents",
    "run_worker",
)
