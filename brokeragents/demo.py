"""``brokeragents demo``: an embedded server, worker processes, and a pipeline streaming live.

The supervisor owns every process it starts: workers first to stop, the server last, and both
die with it if it is killed (PR_SET_PDEATHSIG), so nothing is left behind.
"""

from __future__ import annotations

import asyncio
import ctypes
import signal
import subprocess
import sys
import time
from typing import Any
from urllib.parse import urlparse

from brokeragents._embedded import EmbeddedServer
from brokeragents.demo_agents import research_agent, writer_agent
from brokeragents.keys import Keys
from brokeragents.registry import Registry
from brokeragents.runtime import MiniAgents

_WORKERS = (
    ("brokeragents.demo_agents:search_agent", "SEARCH_AGENT"),
    ("brokeragents.demo_agents:research_agent", "RESEARCH_AGENT"),
    ("brokeragents.demo_agents:writer_agent", "WRITER_AGENT"),
)
_WORKER_START_TIMEOUT_S = 30.0
_WORKER_STOP_TIMEOUT_S = 30.0
_COLORS = {"SEARCH_AGENT": "36", "RESEARCH_AGENT": "33", "WRITER_AGENT": "32"}


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _say(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _start_workers(redis_url: str, workers_per_agent: int, verbose: bool) -> list[subprocess.Popen[bytes]]:
    processes = []
    for target, alias in _WORKERS:
        for index in range(workers_per_agent):
            processes.append(
                subprocess.Popen(
                    [sys.executable, "-m", "brokeragents", "worker", target, "--redis-url", redis_url,
                     "--name", f"demo.{alias.lower()}.{index + 1}"],
                    stdout=None if verbose else subprocess.DEVNULL,
                    stderr=None if verbose else subprocess.DEVNULL,
                    preexec_fn=_die_with_parent,
                    start_new_session=True,  # Ctrl-C reaches the supervisor, which stops them in order
                )
            )
    return processes


def _stop_workers(processes: list[subprocess.Popen[bytes]]) -> None:
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + _WORKER_STOP_TIMEOUT_S
    for process in processes:
        try:
            process.wait(timeout=max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


async def _await_workers(mini_agents: MiniAgents, processes: list[subprocess.Popen[bytes]]) -> None:
    store = mini_agents.store
    assert store is not None
    registry = Registry(store.redis, store.keys)
    deadline = time.monotonic() + _WORKER_START_TIMEOUT_S
    for _target, alias in _WORKERS:
        while not await registry.ais_served(alias):
            if any(process.poll() is not None for process in processes):
                raise RuntimeError("A demo worker exited while starting; run with --verbose to see why.")
            if time.monotonic() > deadline:
                raise TimeoutError(f"No worker for {alias} after {_WORKER_START_TIMEOUT_S:g} s.")
            await asyncio.sleep(0.05)  # waiting for child processes to register


async def _apipeline(redis_url: str, processes: list[subprocess.Popen[bytes]]) -> str:
    async with MiniAgents(redis_url=redis_url) as mini_agents:
        await _await_workers(mini_agents, processes)
        question = "How do agents stream replies across processes?"
        _say(f"\nQuestion: {question}\n\n")
        research = research_agent.trigger(question)
        answer = writer_agent.trigger(research)
        for sequence in (research, answer):
            async for message_promise in sequence:
                alias = str(message_promise.known_beforehand.get("agent_alias") or "AGENT")
                _say(f"\033[{_COLORS.get(alias, '37')};1m[{alias}]\033[0m ")
                async for token in message_promise:
                    _say(str(token))
                _say("\n")
        key: str | None = answer.redis_key
        assert key is not None
        return key


def _show_redis(redis_url: str, reply_key: str) -> None:
    import redis as redis_sync

    parsed = urlparse(redis_url)
    cli = f"redis-cli -h {parsed.hostname or '127.0.0.1'} -p {parsed.port or 6379}"
    call_key = reply_key.removesuffix(":reply")
    keys = Keys()
    inbox = keys.agent_inbox("WRITER_AGENT")
    client: Any = redis_sync.Redis.from_url(redis_url, decode_responses=True)
    try:
        commands: list[tuple[str, Any]] = [
            (f"ZRANGE '{keys.workers()}' 0 -1 WITHSCORES", client.zrange(keys.workers(), 0, -1, withscores=True)),
            (f"HGETALL '{call_key}'", client.hgetall(call_key)),
            (f"XRANGE '{reply_key}' - +", client.xrange(reply_key)),
            (f"XINFO GROUPS '{inbox}'", client.xinfo_groups(inbox)),
        ]
        _say("\nWhat happened, as redis-cli shows it:\n")
        for command, result in commands:
            _say(f"\n$ {cli} {command}\n{_pretty(result)}\n")
    finally:
        client.close()


def _pretty(result: Any) -> str:
    if isinstance(result, dict):
        return "\n".join(f"  {key}: {value}" for key, value in result.items())
    if isinstance(result, list):
        return "\n".join(f"  {item}" for item in result)
    return f"  {result}"


def run_demo(*, redis_url: str | None, workers_per_agent: int = 1, verbose: bool = False) -> int:
    """Run the demo end to end; return the exit code (0 also after Ctrl-C)."""
    server: EmbeddedServer | None = None
    processes: list[subprocess.Popen[bytes]] = []
    try:
        if redis_url is None:
            server = EmbeddedServer()
            redis_url = server.start()
            _say(f"Started an embedded Valkey server at {redis_url} (pid {server.pid}).\n")
        else:
            _say("Using the Redis server at $REDIS_URL.\n")
        processes = _start_workers(redis_url, workers_per_agent, verbose)
        _say(f"Started {len(processes)} worker processes: {', '.join(alias for _t, alias in _WORKERS)}.\n")
        reply_key = asyncio.run(_apipeline(redis_url, processes))
        _show_redis(redis_url, reply_key)
    except KeyboardInterrupt:
        _say("\nInterrupted: stopping workers, then the server.\n")
    finally:
        _stop_workers(processes)
        if server is not None:
            server.stop()
    _say("\nDone: workers stopped" + (", server stopped.\n" if server is not None else ".\n"))
    return 0


__all__ = ("run_demo",)
