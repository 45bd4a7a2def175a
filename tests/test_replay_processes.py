"""Replay across OS processes: one writer, readers that start late, mid-stream and together.

Each side is ``tests/_replay_worker.py`` in its own process, on a real server. They coordinate by
what they print and by a Redis list the writer blocks on (BLPOP), never by sleeping.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from brokeragents.keys import new_id

pytestmark = pytest.mark.real_redis

WORKER = Path(__file__).resolve().parent / "_replay_worker.py"
ROOT = WORKER.parent.parent
LINE_TIMEOUT_S = 60.0
HALF = 25  # tokens written before the writer blocks; as many after


class Worker:
    """One ``_replay_worker.py`` process and the JSON lines it prints."""

    def __init__(self, process: asyncio.subprocess.Process, stderr: Path) -> None:
        self.process = process
        self.stderr = stderr

    async def expect(self, event: str) -> dict[str, Any]:
        assert self.process.stdout is not None
        line = await asyncio.wait_for(self.process.stdout.readline(), LINE_TIMEOUT_S)
        if not line:
            await self.process.wait()
            raise AssertionError(f"the worker exited ({self.process.returncode}):\n{self.stderr.read_text()}")
        report: dict[str, Any] = json.loads(line)
        assert report["event"] == event, report
        return report

    async def finish(self) -> None:
        returncode = await asyncio.wait_for(self.process.wait(), LINE_TIMEOUT_S)
        assert returncode == 0, self.stderr.read_text()


@pytest.fixture
async def spawn(tmp_path: Path) -> AsyncIterator[Any]:
    """Start workers; any still running at the end is killed (by its own pid) and reaped."""
    workers: list[Worker] = []
    env = {**os.environ, "PYTHONPATH": str(ROOT)}

    async def start(*args: str) -> Worker:
        stderr = tmp_path / f"worker-{len(workers)}.stderr"
        with stderr.open("wb") as stderr_file:
            process = await asyncio.create_subprocess_exec(
                sys.executable, str(WORKER), *args, stdout=asyncio.subprocess.PIPE, stderr=stderr_file, env=env
            )
        worker = Worker(process, stderr)
        workers.append(worker)
        return worker

    try:
        yield start
    finally:
        for worker in workers:
            if worker.process.returncode is None:
                worker.process.kill()
            await worker.process.wait()


@pytest.fixture
async def prefix(real_redis_url: str) -> AsyncIterator[str]:
    """A key prefix of this test's own; its keys are deleted afterwards."""
    value = f"batest-{new_id()[:12]}"
    yield value
    client = redis.asyncio.Redis.from_url(real_redis_url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{value}:*")]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def test_readers_in_other_processes_see_identical_content(real_redis_url: str, prefix: str, spawn: Any) -> None:
    control = redis.asyncio.Redis.from_url(real_redis_url)
    go_key = f"{prefix}:test-go"
    try:
        writer = await spawn("write", real_redis_url, prefix, go_key, str(HALF))
        sequence_key = (await writer.expect("half"))["sequence"]

        # Started while the writer is blocked half-way: each must see the first half live.
        announce_after = 2 + HALF  # two whole messages (one token each), then half the stream
        mid_stream = [await spawn("read", real_redis_url, prefix, sequence_key, str(announce_after)) for _ in range(4)]
        for reader in mid_stream:
            assert (await reader.expect("progress"))["tokens"] == announce_after
        await control.rpush(go_key, "go")

        written = (await writer.expect("done"))["items"]
        await writer.finish()
        late = await spawn("read", real_redis_url, prefix, sequence_key)
        results = [(await reader.expect("done"))["items"] for reader in [*mid_stream, late]]
        for reader in [*mid_stream, late]:
            await reader.finish()
    finally:
        await control.aclose()

    assert [item.get("class", item.get("error")) for item in written] == [
        "TextMessage",
        "Message",
        "TextMessage",
        ["MyErr", "custom trouble"],
        ["ValueError", "plain trouble"],
        "TextMessage",
    ]
    streamed = written[2]
    assert streamed["tokens"] == [f"tok{n} " for n in range(2 * HALF)]
    assert streamed["known_beforehand"] == {"class_": "Frozen", "content_template": None, "role": "assistant"}
    assert len(written[1]["sub_messages"]) == 3
    for result in results:
        assert result == written  # every piece, every hash key, every error: identical
