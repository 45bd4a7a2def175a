"""Open a message promise or a message sequence promise by its Redis key, from any process.

Reading replays the stream from its first entry (XRANGE), then tails it (XREAD BLOCK) until the
end entry, so a reader that starts late or mid-stream sees exactly what an in-process consumer
sees. Every entry is validated; a bad one becomes a :class:`WireFormatError` piece, is recorded
in the dead-letter stream, and ends that stream instead of hanging or being dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import Any

from brokeragents import wire
from brokeragents.context import PromisingContext
from brokeragents.errors import BrokerAgentsError, ReplyRestartedError, WireFormatError
from brokeragents.frozen import Frozen
from brokeragents.message_promise import MessagePromise
from brokeragents.message_sequence import MessageSequencePromise, SafeMessageSequencePromise
from brokeragents.messages import Message
from brokeragents.store import StreamStore

DEFAULT_BLOCK_MS = 5_000
_PAGE = 1_000
_HASH_RE = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")


class NotConnectedError(BrokerAgentsError, RuntimeError):
    """Raised when opening a promise by key in a context that is not connected to Redis."""


def _store() -> StreamStore:
    store = PromisingContext.get_current().store
    if store is None:
        raise NotConnectedError("Open promises by key inside a context connected to Redis (redis_url=...).")
    return store


def message_key(store: StreamStore, key_or_hash: str) -> str:
    """Accept a full key (``ba:msg:{...}``) or a bare hash key / message id."""
    if ":" in key_or_hash:
        return key_or_hash
    return store.keys.message(key_or_hash)


class StreamTail:
    """Every entry of one stream from the start, then new ones as they arrive."""

    def __init__(self, store: StreamStore, key: str, *, block_ms: int = DEFAULT_BLOCK_MS,
                 idle_timeout_s: float | None = None) -> None:
        self._store = store
        self.key = key
        self._block_ms = block_ms
        self._idle_timeout_s = idle_timeout_s
        self._last_id = "0-0"
        self._buffer: list[tuple[bytes, dict[bytes, bytes]]] = []
        self._replaying = True

    async def anext_entry(self) -> dict[bytes, bytes]:
        redis = self._store.redis
        waited_ms = 0
        while not self._buffer:
            if self._replaying:
                page = await redis.xrange(self.key, min=f"({self._last_id}", max="+", count=_PAGE)
                if len(page) < _PAGE:
                    self._replaying = False
            else:
                reply = await redis.xread({self.key: self._last_id}, count=_PAGE, block=self._block_ms)
                page = reply[0][1] if reply else []
                if not page:
                    waited_ms += self._block_ms
                    if self._idle_timeout_s is not None and waited_ms >= self._idle_timeout_s * 1000:
                        raise TimeoutError(f"No new entry in {self.key} for {self._idle_timeout_s} s.")
            self._buffer.extend(page)
        entry_id, fields = self._buffer.pop(0)
        self._last_id = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        return fields


def _kind(fields: dict[bytes, bytes]) -> str:
    kind = wire.field(fields, "kind", max_bytes=16)
    assert kind is not None
    return kind


def _position(fields: dict[bytes, bytes]) -> int:
    raw = wire.field(fields, "i", max_bytes=20)
    assert raw is not None
    if not raw.isdigit():
        raise WireFormatError(f"The entry position {raw!r} is not a number.")
    return int(raw)


def _attempt(fields: dict[bytes, bytes]) -> int:
    raw = wire.field(fields, "a", max_bytes=20, required=False)
    if raw is None:
        return 1
    if not raw.isdigit():
        raise WireFormatError(f"The attempt number {raw!r} is not a number.")
    return int(raw)


def _error_from(fields: dict[bytes, bytes], limit: int) -> BaseException:
    type_name = wire.field(fields, "error_type", max_bytes=256) or "RemoteError"
    message = wire.field(fields, "error_message", max_bytes=limit, required=False) or ""
    return wire.rebuild_error(type_name, message)


async def aload_message(key_or_hash: str, *, idle_timeout_s: float | None = 30.0) -> Message:
    """Load the whole message stored under a key or hash key (waiting for it to finish)."""
    promise = await aopen_message_promise(key_or_hash, idle_timeout_s=idle_timeout_s)
    return await promise


async def _aload_by_hash(store: StreamStore, hash_key: str) -> Message:
    if not _HASH_RE.match(hash_key):
        raise WireFormatError(f"{hash_key!r} is not a hash key.")
    entries = await store.redis.xrange(store.keys.message(hash_key), count=16)
    for _entry_id, fields in entries:
        if _kind(fields) == wire.KIND_MESSAGE:
            return await _amessage_from(store, fields)
    raise WireFormatError(f"The message {hash_key} is not in Redis (expired or never written).")


async def _amessage_from(store: StreamStore, fields: dict[bytes, bytes]) -> Message:
    raw = wire.field(fields, "message", max_bytes=store.max_message_bytes)
    assert raw is not None
    hash_key = wire.field(fields, "hash_key", max_bytes=64)
    data = wire.load_json(raw, "message")
    return await wire.abuild_message(data, hash_key, lambda h: _aload_by_hash(store, h))


class RemoteMessagePromise(MessagePromise):
    """A message promise replayed from its Redis stream."""

    def __init__(self, store: StreamStore, tail: StreamTail, known_beforehand: Frozen,
                 message_class: type[Message], first: dict[bytes, bytes] | None) -> None:
        self._tail = tail
        self._remote_store = store
        self._first = first
        self._final: Message | None = None
        super().__init__(message_token_streamer=self._aread_tokens, message_class=message_class, start_soon=False)
        self.known_beforehand = known_beforehand
        self._source_key = tail.key

    def _mirrors_to_redis(self) -> bool:
        return False

    @property
    def redis_key(self) -> str | None:
        return self._source_key

    async def _aread_tokens(self, _aux: dict[str, Any]) -> AsyncIterator[Any]:
        store = self._remote_store
        expected = 0
        fields = self._first
        self._first = None
        while True:
            if fields is None:
                fields = await self._tail.anext_entry()
            try:
                kind = _kind(fields)
                if kind == wire.KIND_TOKENS:
                    first_index = _position(fields)
                    raw = wire.field(fields, "tokens", max_bytes=store.max_message_bytes)
                    assert raw is not None
                    tokens = wire.load_json(raw, "token batch")
                    if not isinstance(tokens, list):
                        raise WireFormatError("A token batch must be a JSON array.")
                    if first_index > expected:
                        raise WireFormatError(f"Tokens {expected}..{first_index - 1} are missing.")
                    for raw_token in tokens[expected - first_index:]:
                        yield wire.decode_token(raw_token)
                        expected += 1
                elif kind == wire.KIND_MESSAGE:
                    self._final = await _amessage_from(store, fields)
                    if expected == 0:
                        yield self._final  # a message stored whole streams as itself (G5)
                    return
                elif kind == wire.KIND_ERROR:
                    raise _error_from(fields, store.max_message_bytes)
                elif kind != wire.KIND_START:
                    raise WireFormatError(f"Unexpected entry kind {kind!r} in a message stream.")
            except WireFormatError as exc:
                await store.arecord_dead_letter(str(exc), key=self._tail.key)
                raise
            fields = None

    async def _aresolver(self) -> Message:
        async for _token in self:
            pass
        if self._final is None:
            raise WireFormatError(f"{self._tail.key} ended without a final message.")
        return self._final


async def aopen_message_promise(key_or_hash: str, *, idle_timeout_s: float | None = None,
                                block_ms: int = DEFAULT_BLOCK_MS) -> MessagePromise:
    """Open the message stored under ``key_or_hash`` (a key, a hash key or a message id).

    It returns once the message's first entry exists, so ``known_beforehand`` and
    ``message_class`` are available at once; its tokens replay and then tail live.
    """
    store = _store()
    tail = StreamTail(store, message_key(store, key_or_hash), block_ms=block_ms, idle_timeout_s=idle_timeout_s)
    first = await tail.anext_entry()
    try:
        kind = _kind(first)
        if kind == wire.KIND_START:
            class_name = wire.field(first, "class", max_bytes=256)
            raw_known = wire.field(first, "known_beforehand", max_bytes=store.max_message_bytes)
            assert class_name is not None and raw_known is not None
            known = wire.build_frozen(wire.load_json(raw_known, "known_beforehand"), {})
            from brokeragents.frozen import lookup_frozen_class

            message_class = lookup_frozen_class(class_name)
            if not issubclass(message_class, Message):
                raise WireFormatError(f"{class_name!r} is not a message class.")
            return RemoteMessagePromise(store, tail, known, message_class, None)
        if kind == wire.KIND_MESSAGE:
            message = await _amessage_from(store, first)
            promise = RemoteMessagePromise(store, tail, message, type(message), first)
            return promise
        raise WireFormatError(f"A message stream cannot start with a {kind!r} entry.")
    except WireFormatError as exc:
        await store.arecord_dead_letter(str(exc), key=tail.key)
        raise


class _RemoteSequenceStream(AsyncIterator[MessagePromise]):
    """Sequence entries as message promises; error entries raise and the stream goes on."""

    def __init__(self, store: StreamStore, tail: StreamTail) -> None:
        self._store = store
        self._tail = tail
        self._expected = 0
        self._attempt = 1
        self._ended = False

    def __aiter__(self) -> _RemoteSequenceStream:
        return self

    async def __anext__(self) -> MessagePromise:
        while not self._ended:
            fields = await self._tail.anext_entry()
            try:
                attempt = _attempt(fields)
                if attempt < self._attempt:
                    continue  # written late by a worker whose call was already taken over
                if _kind(fields) == wire.KIND_RESTART:
                    self._attempt = attempt
                    self._expected = 0
                    raise ReplyRestartedError(
                        f"The worker serving this call was lost; the reply restarts (attempt {attempt})."
                    )
                position = _position(fields)
                if position < self._expected:
                    continue  # a repeat written by a retried pipeline
                if position > self._expected:
                    raise WireFormatError(f"Sequence entries {self._expected}..{position - 1} are missing.")
                self._expected += 1
                kind = _kind(fields)
                if kind == wire.KIND_END:
                    self._ended = True
                    break
                if kind == wire.KIND_ERROR:
                    raise _error_from(fields, self._store.max_message_bytes)
                if kind != wire.KIND_MESSAGE:
                    raise WireFormatError(f"Unexpected entry kind {kind!r} in a sequence stream.")
                key = wire.field(fields, "key", max_bytes=512)
                assert key is not None
                return await aopen_message_promise(key)
            except WireFormatError as exc:
                self._ended = True  # a corrupt sequence cannot be trusted past this point
                await self._store.arecord_dead_letter(str(exc), key=self._tail.key)
                raise
        raise StopAsyncIteration


class RemoteSequencePromise(MessageSequencePromise):
    """A message sequence promise replayed from its Redis stream."""

    def _mirrors_to_redis(self) -> bool:
        return False


class RemoteSafeSequencePromise(SafeMessageSequencePromise):
    """The ``errors_as_messages`` view of a sequence replayed from Redis."""

    def _mirrors_to_redis(self) -> bool:
        return False


async def aopen_sequence_promise(key: str, *, errors_as_messages: bool = False,
                                 block_ms: int = DEFAULT_BLOCK_MS) -> MessageSequencePromise:
    """Open the message sequence stored under ``key`` (``ba:seq:{...}`` or a call's reply key)."""
    store = _store()
    tail = StreamTail(store, key, block_ms=block_ms)

    def streamer(_promise: Any) -> AsyncIterator[MessagePromise]:
        return _RemoteSequenceStream(store, tail)

    promise: MessageSequencePromise
    if errors_as_messages:
        promise = RemoteSafeSequencePromise(streamer=streamer, start_soon=False)
    else:
        promise = RemoteSequencePromise(streamer=streamer, start_soon=False)
    promise._redis_key = key
    return promise


__all__ = (
    "NotConnectedError",
    "RemoteMessagePromise",
    "StreamTail",
    "aload_message",
    "aopen_message_promise",
    "aopen_sequence_promise",
)
