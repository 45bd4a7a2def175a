"""Open a message promise or a message sequence promise by its Redis key, from any process.

Reading replays the stream from its first entry (XRANGE), then tails it (XREAD BLOCK) until the
end entry, so a reader that starts late or mid-stream sees exactly what an in-process consumer
sees. Every entry is validated; a bad one becomes a :class:`WireFormatError` piece, is recorded
in the dead-letter stream, and ends that stream instead of hanging or being dropped silently.
A bad reference in a sequence (a missing or corrupt message stream) is an error at its position
only: the sequence goes on.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import deque
from collections.abc import AsyncIterator
from typing import Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from brokeragents import wire
from brokeragents.context import PromisingContext
from brokeragents.errors import (
    BrokerAgentsError,
    ReplyRestartedError,
    UnknownMessageClassError,
    WireFormatError,
)
from brokeragents.frozen import Frozen, lookup_frozen_class
from brokeragents.message_promise import MessagePromise
from brokeragents.message_sequence import MessageSequencePromise, SafeMessageSequencePromise
from brokeragents.messages import Message
from brokeragents.store import StreamStore

DEFAULT_BLOCK_MS = 5_000
_PAGE = 1_000
_HASH_RE = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
_MAX_KEY_BYTES = 512
_MAX_CLASS_NAME_BYTES = 256
_RETRY_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)

logger = logging.getLogger("brokeragents.replay")

Entry = tuple[Any, wire.Fields]


class NotConnectedError(BrokerAgentsError, RuntimeError):
    """Raised when opening a promise by key in a context that is not connected to Redis."""


def _store() -> StreamStore:
    store = PromisingContext.get_current().store
    if store is None:
        raise NotConnectedError("Open promises by key inside a context connected to Redis (redis_url=...).")
    return store


def message_key(store: StreamStore, key_or_hash: str) -> str:
    """Accept a full message key or a bare hash key / message id.

    :raises ValueError: a full key that is not a message key under the store's prefix
    """
    if ":" in key_or_hash:
        if not store.keys.is_message_key(key_or_hash):
            raise ValueError(f"{key_or_hash!r} is not a message key under the prefix {store.keys.prefix!r}.")
        return key_or_hash
    return store.keys.message(key_or_hash)


def _entries_of(reply: Any) -> list[Entry]:
    """The entries of an XREAD reply on one stream, RESP2 (list) or RESP3 (dict) shaped."""
    if not reply:
        return []
    if isinstance(reply, dict):
        return [entry for batches in reply.values() for batch in batches for entry in batch]
    return list(reply[0][1])


async def _axrange(store: StreamStore, key: str, *, min_id: str, count: int) -> list[Entry]:
    try:
        entries: Any = await store.redis.xrange(key, min=min_id, max="+", count=count)
    except ResponseError as exc:  # e.g. WRONGTYPE
        raise WireFormatError(f"{key} cannot be read as a stream: {exc}") from exc
    return list(entries or [])


class StreamTail:
    """Every entry of one stream from the start, then new ones as they arrive."""

    def __init__(
        self,
        store: StreamStore,
        key: str,
        *,
        block_ms: int = DEFAULT_BLOCK_MS,
        idle_timeout_s: float | None = None,
    ) -> None:
        self._store = store
        self.key = key
        self._block_ms = block_ms
        self._idle_timeout_s = idle_timeout_s
        self.last_id = "0-0"
        self._buffer: deque[Entry] = deque()
        self._replaying = True

    async def anext_entry(self, *, missing_ok: bool = True) -> wire.Fields:
        """The next entry, waiting for it; ``missing_ok=False`` fails at once on a missing stream.

        :raises TimeoutError: no new entry came within ``idle_timeout_s``
        :raises WireFormatError: the key is missing (when not ``missing_ok``) or not a stream
        """
        started = time.monotonic()
        failures = 0
        while not self._buffer:
            try:
                page = await self._aread_page(started)
            except ResponseError as exc:  # e.g. WRONGTYPE on XREAD
                raise WireFormatError(f"{self.key} cannot be read as a stream: {exc}") from exc
            except (RedisConnectionError, RedisTimeoutError) as exc:
                # A blip (a restart, a failover) must not fail a long call; a lasting outage does.
                if failures == len(_RETRY_DELAYS_S):
                    raise
                logger.warning("Reading %s failed (%s); retrying", self.key, exc)
                await asyncio.sleep(_RETRY_DELAYS_S[failures])
                failures += 1
                continue
            if not page and not missing_ok and self.last_id == "0-0":
                raise WireFormatError(f"The stream {self.key} does not exist (expired or never written).")
            self._buffer.extend(page)
        entry_id, fields = self._buffer.popleft()
        self.last_id = wire.as_text(entry_id)
        return fields

    async def _aread_page(self, started: float) -> list[Entry]:
        redis = self._store.redis
        if self._replaying:
            page = await _axrange(self._store, self.key, min_id=f"({self.last_id}", count=_PAGE)
            self._replaying = len(page) == _PAGE
            return page
        block_ms = self._store.safe_block_ms(self._block_ms)
        if self._idle_timeout_s is not None:
            left_ms = int((self._idle_timeout_s - (time.monotonic() - started)) * 1000)
            if left_ms <= 0:
                raise TimeoutError(f"No new entry in {self.key} for {self._idle_timeout_s} s.")
            block_ms = min(block_ms, left_ms)
        reply = await redis.xread({self.key: self.last_id}, count=_PAGE, block=block_ms)
        return _entries_of(reply)


async def _areject(store: StreamStore, tail: StreamTail, exc: WireFormatError) -> WireFormatError:
    """Record a bad entry as a dead letter; return the error to raise, naming the entry."""
    await store.arecord_dead_letter(str(exc), key=tail.key, entry_id=tail.last_id)
    return type(exc)(f"Bad entry {tail.last_id} in {tail.key}: {exc}")


def _kind(fields: wire.Fields) -> str:
    return wire.require_field(fields, "kind", max_bytes=16)


def _position(fields: wire.Fields) -> int:
    raw = wire.require_field(fields, "i", max_bytes=20)
    if not raw.isdigit():
        raise WireFormatError(f"The entry position {raw!r} is not a number.")
    return int(raw)


def _attempt(fields: wire.Fields) -> int:
    raw = wire.field(fields, "a", max_bytes=20, required=False)
    if raw is None:
        return 1
    if not raw.isdigit():
        raise WireFormatError(f"The attempt number {raw!r} is not a number.")
    return int(raw)


def _error_from(fields: wire.Fields, limit: int) -> BaseException:
    type_name = wire.require_field(fields, "error_type", max_bytes=_MAX_CLASS_NAME_BYTES) or "RemoteError"
    message = wire.field(fields, "error_message", max_bytes=limit, required=False) or ""
    error = wire.rebuild_error(type_name, message)
    abandoned = wire.field(fields, "abandoned", max_bytes=20, required=False)
    if abandoned is not None and isinstance(error, ReplyRestartedError):
        if not abandoned.isdigit():
            raise WireFormatError(f"The abandoned count {abandoned!r} is not a number.")
        error.abandoned = int(abandoned)
    return error


async def aload_message(key_or_hash: str, *, idle_timeout_s: float | None = 30.0) -> Message:
    """Load the whole message stored under a key or hash key (waiting for it to finish)."""
    promise = await aopen_message_promise(key_or_hash, idle_timeout_s=idle_timeout_s)
    return await promise


async def _aload_by_hash(store: StreamStore, hash_key: str) -> Message:
    """The message stored whole under ``hash_key`` (a sub-message); it must be there already."""
    if not _HASH_RE.match(hash_key):
        raise WireFormatError(f"{hash_key!r} is not a hash key.")
    key = store.keys.message(hash_key)
    for _entry_id, fields in await _axrange(store, key, min_id="-", count=16):
        if _kind(fields) == wire.KIND_MESSAGE:
            return await _amessage_from(store, fields, stored_under=hash_key)
    raise WireFormatError(f"The message {hash_key} is not in Redis (expired or never written).")


def _hash_of(key: str) -> str | None:
    """The hash key a message key is named after (``ba:msg:{<hash>}``), None for a random id."""
    tag = key[key.find("{") + 1 : key.rfind("}")]
    return tag if _HASH_RE.match(tag) else None


async def _amessage_from(store: StreamStore, fields: wire.Fields, *, stored_under: str | None = None) -> Message:
    """The message of a ``message`` entry; ``stored_under``: the hash key its stream is named after."""
    raw = wire.require_field(fields, "message", max_bytes=store.max_message_bytes)
    hash_key = wire.require_field(fields, "hash_key", max_bytes=64)
    if stored_under is not None and hash_key != stored_under:
        # Content-addressed: whatever is stored under a hash key must be that content.
        raise WireFormatError(f"The message stored under the hash key {stored_under} records {hash_key}.")
    data = wire.load_json(raw, "message")
    return await wire.abuild_message(data, hash_key, lambda h: _aload_by_hash(store, h))


def _start_of(store: StreamStore, fields: wire.Fields) -> tuple[Frozen, type[Message]]:
    """``known_beforehand`` and the message class from a start entry."""
    class_name = wire.require_field(fields, "class", max_bytes=_MAX_CLASS_NAME_BYTES)
    message_class = lookup_frozen_class(class_name)
    if not issubclass(message_class, Message):
        raise UnknownMessageClassError(f"{class_name!r} is not a Message class.")
    raw_known = wire.require_field(fields, "known_beforehand", max_bytes=store.max_message_bytes)
    known = wire.build_frozen(wire.load_json(raw_known, "known_beforehand"), {})
    return known, message_class


class RemoteMessagePromise(MessagePromise):
    """A message promise replayed from its Redis stream."""

    def __init__(
        self,
        store: StreamStore,
        tail: StreamTail,
        known_beforehand: Frozen,
        message_class: type[Message],
        whole: Message | None,
    ) -> None:
        self._tail = tail
        self._remote_store = store
        # Opened at a message entry: stored whole, it streams as its own tokens (G5).
        self._whole = whole
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
        if self._whole is not None:
            self._final = self._whole
            for token in self._whole.message_to_tokens():
                yield token
            return
        store = self._remote_store
        expected = 0
        while True:
            fields = await self._tail.anext_entry()
            error: BaseException | None = None
            try:
                kind = _kind(fields)
                if kind == wire.KIND_TOKENS:
                    first_index = _position(fields)
                    tokens = self._token_batch(fields)
                    if first_index > expected:
                        raise WireFormatError(f"Tokens {expected}..{first_index - 1} are missing.")
                    # Decoded before yielding any, so a bad batch raises at its first position.
                    decoded = [wire.decode_token(raw) for raw in tokens[expected - first_index :]]
                elif kind == wire.KIND_MESSAGE:
                    self._final = await _amessage_from(store, fields)
                    decoded = []
                elif kind == wire.KIND_ERROR:
                    # Raised below, outside this try: a remote WireFormatError is not a bad entry.
                    error = _error_from(fields, store.max_message_bytes)
                    decoded = []
                elif kind == wire.KIND_START:
                    decoded = []  # a repeat written by a retried pipeline
                else:
                    raise WireFormatError(f"Unexpected entry kind {kind!r} in a message stream.")
            except WireFormatError as exc:
                raise await _areject(store, self._tail, exc) from exc
            if error is not None:
                raise error
            for token in decoded:
                yield token
            if self._final is not None:
                return
            expected += len(decoded)

    def _token_batch(self, fields: wire.Fields) -> list[Any]:
        raw = wire.require_field(fields, "tokens", max_bytes=self._remote_store.max_message_bytes)
        tokens = wire.load_json(raw, "token batch")
        if not isinstance(tokens, list):
            raise WireFormatError("A token batch must be a JSON array.")
        return tokens

    async def _aresolver(self) -> Message:
        async for _token in self:
            pass
        if self._final is None:
            raise WireFormatError(f"{self._tail.key} ended without a final message.")
        return self._final


async def aopen_message_promise(
    key_or_hash: str, *, idle_timeout_s: float | None = None, block_ms: int = DEFAULT_BLOCK_MS
) -> MessagePromise:
    """Open the message stored under ``key_or_hash`` (a key, a hash key or a message id).

    It returns once the message's first entry exists, so ``known_beforehand`` and
    ``message_class`` are available at once; its tokens replay and then tail live.

    :raises TimeoutError: the stream got no entry within ``idle_timeout_s``
    :raises WireFormatError: the first entry is malformed (it is recorded as a dead letter)
    """
    store = _store()
    return await _aopen_message(
        store, message_key(store, key_or_hash), idle_timeout_s=idle_timeout_s, block_ms=block_ms
    )


async def _aopen_message(
    store: StreamStore,
    key: str,
    *,
    idle_timeout_s: float | None,
    block_ms: int,
    missing_ok: bool = True,
) -> RemoteMessagePromise:
    tail = StreamTail(store, key, block_ms=block_ms, idle_timeout_s=idle_timeout_s)
    try:
        first = await tail.anext_entry(missing_ok=missing_ok)
        kind = _kind(first)
        if kind == wire.KIND_START:
            known, message_class = _start_of(store, first)
            return RemoteMessagePromise(store, tail, known, message_class, None)
        if kind == wire.KIND_MESSAGE:
            message = await _amessage_from(store, first, stored_under=_hash_of(key))
            return RemoteMessagePromise(store, tail, message, type(message), message)
        raise WireFormatError(f"A message stream cannot start with an entry of kind {kind!r}.")
    except WireFormatError as exc:
        raise await _areject(store, tail, exc) from exc


class _RemoteSequenceStream(AsyncIterator[MessagePromise]):
    """Sequence entries as message promises; error entries raise and the stream goes on."""

    def __init__(self, store: StreamStore, tail: StreamTail, idle_timeout_s: float | None) -> None:
        self._store = store
        self._tail = tail
        self._idle_timeout_s = idle_timeout_s
        self._expected = 0
        self._attempt = 1
        self._ended = False

    def __aiter__(self) -> _RemoteSequenceStream:
        return self

    async def __anext__(self) -> MessagePromise:
        while not self._ended:
            try:
                fields = await self._tail.anext_entry()
            except TimeoutError:
                self._ended = True  # the reader gives up: one error, then the end
                raise
            try:
                key = self._accept(fields)
            except WireFormatError as exc:
                self._ended = True  # a corrupt sequence cannot be trusted past this point
                raise await _areject(self._store, self._tail, exc) from exc
            if isinstance(key, BaseException):
                raise key  # an error entry (or a restart): the sequence goes on after it
            if key is not None:
                # The writer adds a message's first entry before any reference to it, so a
                # missing stream is an error here (at this position only), not a reason to wait.
                return await _aopen_message(
                    self._store,
                    key,
                    idle_timeout_s=self._idle_timeout_s,
                    block_ms=self._tail._block_ms,
                    missing_ok=False,
                )
        raise StopAsyncIteration

    def _accept(self, fields: wire.Fields) -> str | BaseException | None:
        """Check one entry: the message key it refers to, the error it stands for, or None."""
        attempt = _attempt(fields)
        if attempt < self._attempt:
            return None  # written late by a worker whose call was already taken over
        if _kind(fields) == wire.KIND_RESTART:
            self._attempt = attempt
            self._expected = 0
            return ReplyRestartedError(
                f"The worker serving this call was lost; the reply restarts (attempt {attempt})."
            )
        position = _position(fields)
        if position < self._expected:
            return None  # a repeat written by a retried pipeline
        if position > self._expected:
            raise WireFormatError(f"Sequence entries {self._expected}..{position - 1} are missing.")
        self._expected += 1
        kind = _kind(fields)
        if kind == wire.KIND_END:
            self._ended = True
            return None
        if kind == wire.KIND_ERROR:
            return _error_from(fields, self._store.max_message_bytes)
        if kind != wire.KIND_MESSAGE:
            raise WireFormatError(f"Unexpected entry kind {kind!r} in a sequence stream.")
        key = wire.require_field(fields, "key", max_bytes=_MAX_KEY_BYTES)
        if not self._store.keys.is_message_key(key):
            raise WireFormatError(f"The entry refers to {key!r}, which is not a message key.")
        return key


class RemoteSequencePromise(MessageSequencePromise):
    """A message sequence promise replayed from its Redis stream."""

    def _mirrors_to_redis(self) -> bool:
        return False


class RemoteSafeSequencePromise(SafeMessageSequencePromise):
    """The ``errors_as_messages`` view of a sequence replayed from Redis."""

    def _mirrors_to_redis(self) -> bool:
        return False


async def aopen_sequence_promise(
    key: str,
    *,
    errors_as_messages: bool = False,
    block_ms: int = DEFAULT_BLOCK_MS,
    idle_timeout_s: float | None = None,
) -> MessageSequencePromise:
    """Open the message sequence stored under ``key`` (``<prefix>:seq:{id}`` or a call's input/reply).

    ``idle_timeout_s`` bounds every wait for a new entry, of the sequence and of its messages.

    :raises ValueError: ``key`` is not a sequence key under the context's prefix
    """
    store = _store()
    if not store.keys.is_sequence_key(key):
        raise ValueError(f"{key!r} is not a sequence key under the prefix {store.keys.prefix!r}.")
    tail = StreamTail(store, key, block_ms=block_ms, idle_timeout_s=idle_timeout_s)

    def streamer(_promise: Any) -> AsyncIterator[MessagePromise]:
        return _RemoteSequenceStream(store, tail, idle_timeout_s)

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
