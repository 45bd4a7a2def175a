"""Issue 8, point 4: load through one worker process.

``LOAD_CALLS`` (1000) calls are made at once to one worker process serving with
``--concurrency 100``. Every call completes with its own reply, nothing is left in the inbox, and
the worker's peak resident memory (``VmHWM`` in ``/proc/<pid>/status``) stays under a generous
bound: the inbox read-ahead never exceeds the free slots, so the worker holds at most 100 calls
at a time however many wait. The bound is on memory, not on time.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path

import pytest

from brokeragents import MiniAgent, TextMessage
from helpers import wait_until
from worker_fixtures import Cluster

pytest_plugins = ("worker_fixtures",)
pytestmark = [pytest.mark.real_redis, pytest.mark.slow]

CALLS = int(os.environ.get("LOAD_CALLS", "1000"))
CONCURRENCY = 100
PEAK_RSS_BOUND_MB = 500
CALL_TIMEOUT_S = 240.0


def memory_kb(pid: int, field: str) -> int:
    """A ``VmHWM``/``VmRSS``-like line of ``/proc/<pid>/status``, in kB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc (Linux)")
@pytest.mark.timeout(300)
async def test_1000_concurrent_calls_through_one_worker(cluster: Cluster) -> None:
    worker = await cluster.aworker("echo_app:echo", concurrency=CONCURRENCY)
    rss_at_start_kb = memory_kb(worker.pid, "VmRSS")
    started = time.monotonic()
    async with cluster.mini_agents(remote_calls="always"):
        replies = await asyncio.wait_for(
            asyncio.gather(*(MiniAgent(alias="ECHO").trigger(f"call {n}") for n in range(CALLS))),
            CALL_TIMEOUT_S,
        )
    took_s = time.monotonic() - started
    peak_kb = memory_kb(worker.pid, "VmHWM")
    info = await cluster.redis.hgetall(cluster.keys.worker(worker.name))
    print(
        f"LOAD calls={CALLS} concurrency={CONCURRENCY} took={took_s:.1f}s "
        f"worker_peak_rss={peak_kb / 1024:.1f}MB (at start {rss_at_start_kb / 1024:.1f}MB)"
    )

    assert [list(reply) for reply in replies] == [[TextMessage(f"echo: call {n}")] for n in range(CALLS)]
    assert peak_kb < PEAK_RSS_BOUND_MB * 1024
    inbox = cluster.keys.agent_inbox("ECHO")

    async def inbox_empty() -> bool:
        pending = (await cluster.redis.xpending(inbox, "workers"))["pending"]
        return bool(await cluster.redis.xlen(inbox) == 0 and pending == 0)

    await wait_until(inbox_empty, 10, "every call to be acknowledged")
    assert int(info.get(b"concurrency", b"0")) == CONCURRENCY
    assert worker.is_running()
