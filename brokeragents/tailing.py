"""``brokeragents tail``: calls as they start (from the calls log) and their reply tokens, live.

Every context connected to Redis appends each call it starts to the calls log stream; the tail
reads it from its current end (or from the start with ``from_start``) and follows the reply
stream of each new call, token by token, through the same replay path callers use. Events are
printed as lines of text, or as one JSON object per line (``as_json``).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any, TextIO

from redis.exceptions import RedisError

from brokeragents import wire
from brokeragents._ops import EXIT_OK, EXIT_UNREACHABLE, aconnected_store, text, write_json
from brokeragents._tail_text import TextRenderer
from brokeragents.errors import ReplyRestartedError, WireFormatError
from brokeragents.promise import apieces_and_errors
from brokeragents.replay import StreamTail, aopen_sequence_promise
from brokeragents.store import RedisUnavailableError, StreamStore
from brokeragents.urls import redact_url, scrub

_BLOCK_MS = 1_000


class CallTail:
    """Writes tail events to ``out``; :meth:`arun` reads the calls log until stopped."""

    def __init__(self, store: StreamStore, out: TextIO, *, as_json: bool = False) -> None:
        self._store = store
        self._out = out
        self._as_json = as_json
        self._text = None if as_json else TextRenderer(out)
        self._followers: set[asyncio.Task[None]] = set()
        self._log = StreamTail(store, store.keys.calls_log(), block_ms=_BLOCK_MS)
        self.calls_seen = 0

    async def askip_past_calls(self) -> None:
        """Start after the calls logged so far: only calls started from now on are followed."""
        redis: Any = self._store.redis
        newest = await redis.xrevrange(self._store.keys.calls_log(), count=1)
        self._log.last_id = text(newest[0][0]) if newest else "0-0"

    async def arun(self, *, max_calls: int | None = None) -> None:
        """Follow calls (all of them, or the first ``max_calls`` and then their replies)."""
        log = self._log
        try:
            while max_calls is None or self.calls_seen < max_calls:
                fields = await log.anext_entry()
                self._start_following(fields, log.last_id)
            if self._followers:
                await asyncio.gather(*self._followers)
        finally:
            for task in self._followers:
                task.cancel()
            await asyncio.gather(*self._followers, return_exceptions=True)
            if self._text is not None:
                self._text.close()

    def _start_following(self, fields: wire.Fields, entry_id: str) -> None:
        try:
            call_id = wire.require_field(fields, "call_id", max_bytes=64)
            agent = wire.require_field(fields, "agent", max_bytes=256)
            parent = wire.field(fields, "parent_call", max_bytes=64, required=False) or ""
        except WireFormatError:
            return  # not a call entry this version writes: nothing to follow
        if not call_id.isalnum():
            return
        self.calls_seen += 1
        ms = entry_id.partition("-")[0]
        at_ms = int(ms) if ms.isdigit() else None
        self._emit({"event": "call", "call_id": call_id, "agent": agent, "parent_call": parent, "at_ms": at_ms})
        task = asyncio.create_task(self._afollow(call_id, agent))
        self._followers.add(task)
        task.add_done_callback(self._followers.discard)

    async def _afollow(self, call_id: str, agent: str) -> None:
        base = {"call_id": call_id, "agent": agent}
        reply = await aopen_sequence_promise(self._store.keys.call_reply(call_id), block_ms=_BLOCK_MS)
        index = messages = errors = 0
        async for promise in apieces_and_errors(reply):
            if isinstance(promise, ReplyRestartedError):
                self._emit({"event": "restart", **base, "reason": str(promise)})
                continue
            if isinstance(promise, Exception):
                errors += 1
                self._emit({"event": "error", **base, "index": index, "scope": "reply", **_error(promise)})
                index += 1
                continue
            errors += await self._afollow_message(base, index, promise)
            messages += 1
            index += 1
        self._emit({"event": "reply_end", **base, "messages": messages, "errors": errors})

    async def _afollow_message(self, base: dict[str, Any], index: int, promise: Any) -> int:
        """Emit the tokens, then the message; return 1 if it failed."""
        self._emit({"event": "message_start", **base, "index": index, "class": promise.message_class.__name__})
        try:
            async for token in promise:
                self._emit({"event": "token", **base, "index": index, "token": str(token)})
            message = await promise
        except Exception as exc:
            self._emit({"event": "error", **base, "index": index, "scope": "message", **_error(exc)})
            return 1
        final = {"class": type(message).__name__, "hash_key": message.hash_key, "content": str(message)}
        self._emit({"event": "message", **base, "index": index, **final})
        return 0

    # --- output ------------------------------------------------------------------------------------

    def _emit(self, event: dict[str, Any]) -> None:
        if self._text is None:
            write_json(self._out, event, indent=None)
        else:
            self._text.handle(event)


def _error(exc: BaseException) -> dict[str, str]:
    return {"error_type": type(exc).__name__, "error_message": str(exc)}


async def arun_tail(
    *,
    out: TextIO,
    err: TextIO,
    redis_url: str | None = None,
    redis: Any = None,
    key_prefix: str = "ba",
    as_json: bool = False,
    max_calls: int | None = None,
    timeout_s: float | None = None,
    from_start: bool = False,
) -> int:
    """The ``tail`` command; return its exit code once stopped (by the limits or Ctrl-C)."""
    where = redact_url(redis_url) if redis_url else "Redis"
    try:
        async with aconnected_store(redis_url=redis_url, redis=redis, key_prefix=key_prefix) as store:
            tail = CallTail(store, out, as_json=as_json)
            if not from_start:
                await tail.askip_past_calls()
            err.write(f"Tailing calls under the key prefix {key_prefix!r} on {where} (Ctrl-C to stop)\n")
            err.flush()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(timeout_s):
                    await tail.arun(max_calls=max_calls)
    except (RedisUnavailableError, RedisError, OSError) as exc:
        err.write(f"Error: cannot read calls from {where}: {scrub(str(exc), redis_url or '')}\n")
        return EXIT_UNREACHABLE
    return EXIT_OK


__all__ = ("CallTail", "arun_tail")
