"""Sanity checks of the fake/real backend matrix, focused on XREADGROUP ... BLOCK.

Unpatched fakeredis 2.30-2.40 fails these (see ``_fakeredis_patch``); real servers pass.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import redis.asyncio

from helpers import Backend, wait_until

STREAM = "test:backends:stream"
GROUP = "workers"


def _entries(reply: Any) -> list[tuple[bytes, dict[bytes, bytes]]]:
    """Flatten an XREADGROUP reply (RESP2-shaped list or RESP3 dict) into ``(id, fields)`` pairs."""
    if not reply:
        return []
    if isinstance(reply, dict):
        per_stream = [batch for batches in reply.values() for batch in batches]
    else:
        per_stream = [entries for _stream, entries in reply]
    return [(entry_id, fields) for entries in per_stream for entry_id, fields in entries]


async def _create_group(client: redis.asyncio.Redis) -> None:
    await client.xgroup_create(STREAM, GROUP, id="0", mkstream=True)


async def _read(client: redis.asyncio.Redis, *, block_ms: int, count: int | None = None) -> Any:
    return await client.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=count, block=block_ms)


async def test_xreadgroup_block_with_count_delivers_present_entries(redis_backend: Backend) -> None:
    client = redis_backend.client()
    await _create_group(client)
    ids = [await client.xadd(STREAM, {"n": str(i)}) for i in range(3)]

    reply = await client.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=10, block=1000)

    assert [entry_id for entry_id, _ in _entries(reply)] == ids
    assert [fields[b"n"] for _, fields in _entries(reply)] == [b"0", b"1", b"2"]


async def test_xreadgroup_block_without_count_does_not_lose_entries(redis_backend: Backend) -> None:
    client = redis_backend.client()
    await _create_group(client)
    ids = [await client.xadd(STREAM, {"n": str(i)}) for i in range(3)]

    reply = await client.xreadgroup(GROUP, "c1", {STREAM: ">"}, block=300)

    assert [entry_id for entry_id, _ in _entries(reply)] == ids
    pending = await client.xpending(STREAM, GROUP)
    assert pending["pending"] == 3


async def test_xreadgroup_block_with_count_waits_on_empty_stream(redis_backend: Backend) -> None:
    client = redis_backend.client()
    await _create_group(client)

    started = time.monotonic()
    reply = await client.xreadgroup(GROUP, "c1", {STREAM: ">"}, count=1, block=300)

    assert _entries(reply) == []
    assert time.monotonic() - started >= 0.25, "XREADGROUP COUNT BLOCK returned without blocking"


async def test_xreadgroup_block_ignores_unrelated_writes(redis_backend: Backend) -> None:
    reader = redis_backend.client()
    writer = redis_backend.client()
    await _create_group(reader)

    started = time.monotonic()
    read = asyncio.create_task(_read(reader, block_ms=300))
    await writer.set("test:backends:unrelated", "x")
    reply = await read

    assert _entries(reply) == []
    assert time.monotonic() - started >= 0.25, "an unrelated write woke XREADGROUP BLOCK"


async def test_blocked_xreadgroup_wakes_on_xadd(redis_backend: Backend) -> None:
    reader = redis_backend.client(client_name="blocked-reader")
    writer = redis_backend.client()
    await _create_group(reader)

    read = asyncio.create_task(_read(reader, block_ms=10_000, count=5))
    if redis_backend.url is not None:
        # On a real server, make sure the read is parked on the server before writing.
        async def reader_is_blocked() -> bool:
            clients = await writer.client_list()
            return any(c["name"] == "blocked-reader" and "b" in c["flags"] for c in clients)

        await wait_until(reader_is_blocked, what="the reader to block in XREADGROUP")
    started = time.monotonic()
    entry_id = await writer.xadd(STREAM, {"token": "hello"})
    reply = await asyncio.wait_for(read, timeout=5)

    assert _entries(reply) == [(entry_id, {b"token": b"hello"})]
    assert time.monotonic() - started < 5
