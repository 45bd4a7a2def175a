"""A writer or a reader of one message sequence, run as its own OS process by test_replay_processes.

Usage::

    python _replay_worker.py write URL PREFIX GO_KEY HALF
    python _replay_worker.py read URL PREFIX SEQUENCE_KEY [ANNOUNCE_AFTER]

It reports on stdout, one JSON object per line:

- the writer: ``{"event": "half", "sequence": KEY}`` once the first HALF tokens of its streamed
  message are in Redis; it then blocks (BLPOP, bounded) until the test pushes to GO_KEY, writes
  the rest and reports ``{"event": "done", "items": [...]}``, what its own consumers saw;
- a reader: ``{"event": "progress"}`` once it has seen ANNOUNCE_AFTER tokens in all, then
  ``{"event": "done", "items": [...]}`` in the same shape as the writer's.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from redis.asyncio import Redis

from brokeragents import (
    Frozen,
    Message,
    MessageSequence,
    MessageTokenAppender,
    MiniAgents,
    TextMessage,
    aopen_sequence_promise,
)
from brokeragents.wire import encode_token

GO_TIMEOUT_S = 60


class MyErr(Exception):
    """An error class only this script defines: readers rebuild it as a RemoteError look-alike."""


def report(event: str, **fields: Any) -> None:
    print(json.dumps({"event": event, **fields}), flush=True)


async def describe(sequence: Any, announce_after: int | None = None) -> list[dict[str, Any]]:
    """Everything a consumer can observe of a sequence, as JSON-able data."""
    items: list[dict[str, Any]] = []
    seen_tokens = 0
    iterator = sequence.__aiter__()
    while True:
        try:
            promise = await iterator.__anext__()
        except StopAsyncIteration:
            return items
        except Exception as exc:
            items.append({"error": [type(exc).__name__, str(exc)]})
            continue
        tokens = []
        async for token in promise:
            tokens.append(encode_token(token))
            seen_tokens += 1
            if seen_tokens == announce_after:
                report("progress", tokens=seen_tokens)
        message = await promise
        items.append(
            {
                "class": promise.message_class.__name__,
                "known_beforehand": Frozen.serialize(promise.known_beforehand),
                "tokens": tokens,
                "hash_key": message.hash_key,
                "message": message.serialize(),
                "text": str(message),
                "sub_messages": [sub.hash_key for sub in message.sub_messages()],
            }
        )


async def awrite(url: str, prefix: str, go_key: str, half: int) -> None:
    # BLPOP waits longer than redis-py's default socket timeout (5 s) would allow.
    control = Redis.from_url(url, socket_timeout=GO_TIMEOUT_S + 10)
    try:
        async with MiniAgents(redis_url=url, key_prefix=prefix, remote_calls="never") as context:
            assert context.store is not None
            sequence = MessageSequence(appender_capture_errors=True, errors_as_messages=False)
            appender = MessageTokenAppender()
            with sequence.message_appender as items:
                items.append(TextMessage("hello", role="user"))
                items.append(
                    Message(note="nested", child=TextMessage("child"), pair=(TextMessage("a"), TextMessage("b")))
                )
                with appender:
                    items.append(TextMessage.promise(message_token_streamer=appender, role="assistant"))
                    for n in range(half):
                        appender.append(f"tok{n} ")
                    await context.store.aflush()
                    report("half", sequence=sequence.sequence_promise.redis_key)
                    if await control.blpop([go_key], timeout=GO_TIMEOUT_S) is None:
                        raise TimeoutError(f"nobody pushed to {go_key} within {GO_TIMEOUT_S} s")
                    for n in range(half, 2 * half):
                        appender.append(f"tok{n} ")
                items.append(MyErr("custom trouble"))
                items.append(ValueError("plain trouble"))
                items.append(TextMessage("bye"))
            described = await describe(sequence.sequence_promise)
        report("done", items=described)
    finally:
        await control.aclose()


async def aread(url: str, prefix: str, sequence_key: str, announce_after: int | None) -> None:
    async with MiniAgents(redis_url=url, key_prefix=prefix, remote_calls="never"):
        sequence = await aopen_sequence_promise(sequence_key, idle_timeout_s=GO_TIMEOUT_S)
        described = await describe(sequence, announce_after)
    report("done", items=described)


def main(argv: list[str]) -> None:
    role, url, prefix, key, *rest = argv
    if role == "write":
        asyncio.run(awrite(url, prefix, key, int(rest[0])))
    elif role == "read":
        asyncio.run(aread(url, prefix, key, int(rest[0]) if rest else None))
    else:
        raise SystemExit(f"unknown role {role!r}")


if __name__ == "__main__":
    main(sys.argv[1:])
