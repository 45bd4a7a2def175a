"""StreamStore: the Redis side of a connected context.

Producers never wait on Redis. Every write (a token, a final message, a sequence entry) is put in
an in-memory buffer, and one owned flusher task sends the buffer as a pipeline. When the producer
outruns Redis, the buffer grows between flushes and consecutive tokens of one message are
coalesced into a single stream entry, so the cost per token stays far below a round trip.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from brokeragents import wire
from brokeragents.errors import BrokerAgentsError
from brokeragents.keys import Keys, new_id
from brokeragents.messages import Message, Token

if TYPE_CHECKING:
    from brokeragents.context import PromisingContext
    from brokeragents.message_promise import MessagePromise

logger = logging.getLogger("brokeragents.store")

_DEAD_LETTER_MAXLEN = 10_000
_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # the last one repeats
_CLOSE_RETRY_BUDGET_S = 10.0


class RedisUnavailableError(BrokerAgentsError, ConnectionError):
    """Raised when the context cannot reach its Redis server."""


def create_redis_client(url: str) -> Redis:
    """A client with RESP2 pinned, so reply shapes do not depend on the redis-py version."""
    return Redis.from_url(url, protocol=2, health_check_interval=30)


class StreamStore:
    """Mirrors promises of one context to Redis Streams through a pipelined background flusher."""

    def __init__(
        self,
        *,
        url: str | None,
        client: Redis | None,
        key_prefix: str,
        finished_stream_ttl_s: float | None,
        max_message_bytes: int,
        context: PromisingContext,
    ) -> None:
        if client is None:
            if url is None:
                raise ValueError("StreamStore needs a Redis URL or a client.")
            client = create_redis_client(url)
            self._owns_client = True
        else:
            self._owns_client = False
        self.redis: Redis = client
        self.keys = Keys(key_prefix)
        self.max_message_bytes = max_message_bytes
        self.context = context
        self._ttl_s = finished_stream_ttl_s
        # Pending writes in order: (key, fields) or (key, list-of-tokens) for coalesced tokens.
        self._pending: list[tuple[str, Any]] = []
        self._last_tokens: dict[str, _Tokens] = {}
        # Next position per open stream: token index of a message, entry index of a sequence.
        self._positions: dict[str, int] = {}
        self._attempts: dict[str, str] = {}
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._stored_hashes: set[str] = set()
        self._flushed = asyncio.Event()
        self._flushed.set()

    # --- lifecycle --------------------------------------------------------------------------------

    async def aconnect(self) -> None:
        try:
            await self.redis.ping()
        except (RedisError, OSError) as exc:
            raise RedisUnavailableError(f"Cannot reach Redis: {exc}") from exc
        self._ensure_flusher()

    def _ensure_flusher(self) -> None:
        if self._flusher is None:
            self._flusher = asyncio.get_running_loop().create_task(self._aflush_forever())

    async def aflush(self) -> None:
        """Wait until everything buffered so far is written."""
        if self._pending:
            self._ensure_flusher()
            self._flushed.clear()
            self._wakeup.set()
        await self._flushed.wait()

    async def aclose(self) -> None:
        """Write what is buffered, stop the flusher, close the client if we created it."""
        self._closing = True
        self._wakeup.set()
        if self._flusher is not None:
            await self._flusher
            self._flusher = None
        if self._owns_client:
            await self.redis.aclose()

    # --- buffering (synchronous, called on the producer's path) -----------------------------------

    def _add(self, key: str, fields: dict[str, Any]) -> None:
        self._last_tokens.pop(key, None)
        self._pending.append((key, fields))
        self._signal()

    def _signal(self) -> None:
        if not self._wakeup.is_set():
            self._flushed.clear()
            self._wakeup.set()
            if self._flusher is None:
                try:
                    self._ensure_flusher()
                except RuntimeError:  # no running loop (sync construction); aconnect starts it
                    pass

    def _expire(self, key: str) -> None:
        if self._ttl_s is not None:
            self._pending.append((key, _Expire(self._ttl_s)))

    def write_hash(self, key: str, fields: dict[str, str], *, finished: bool = False) -> None:
        """Set fields of a hash (a call's description); ``finished`` starts its TTL."""
        self._pending.append((key, _HashFields(fields)))
        if finished:
            self._expire(key)
        self._signal()

    def register_message_promise(self, promise: MessagePromise) -> str:
        """Give a new message promise its stream key and write what is known already."""
        if promise.is_resolved:
            message = promise._result
            assert isinstance(message, Message)
            return self.store_message(message)
        key = self.keys.message(new_id())
        self._add(
            key,
            {
                "kind": wire.KIND_START,
                "class": promise.message_class.__name__,
                "known_beforehand": promise.known_beforehand.serialized,
            },
        )
        return key

    def message_token(self, promise: MessagePromise, token: Token) -> None:
        key = promise.redis_key
        if key is None:
            return
        index = self._positions.get(key, 0)
        self._positions[key] = index + 1
        batch = self._last_tokens.get(key)
        if batch is not None:
            batch.tokens.append(token)  # coalesce with the token entry not yet sent
            return
        batch = _Tokens(index, token)
        self._last_tokens[key] = batch
        self._pending.append((key, batch))
        self._signal()

    def message_resolved(self, promise: MessagePromise, message: Message) -> None:
        key = promise.redis_key
        if key is None:
            return
        self._positions.pop(key, None)
        hash_key = self.store_message(message)
        if key != hash_key:
            self._add(key, _message_fields(message))
            self._expire(key)

    def message_failed(self, promise: MessagePromise, exc: BaseException) -> None:
        key = promise.redis_key
        if key is not None:
            self._positions.pop(key, None)
            self._add(key, wire.encode_error(exc))
            self._expire(key)

    def store_message(self, message: Message) -> str:
        """Store ``message`` (and its sub-messages first) under its hash key; return that key."""
        key = self.keys.message(message.hash_key)
        if message.hash_key in self._stored_hashes:
            return key
        for sub_message in message.sub_messages():
            self.store_message(sub_message)
        self._stored_hashes.add(message.hash_key)
        self._add(key, _message_fields(message))
        self._expire(key)
        return key

    def sequence_message(self, sequence_key: str, promise: MessagePromise) -> None:
        message_key = promise.redis_key
        if message_key is None:
            # A promise of an unconnected context: reserve its place now, write it when whole.
            message_key = self.keys.message(new_id())
            self._add_sequence_entry(sequence_key, {"kind": wire.KIND_MESSAGE, "key": message_key})
            self.context.start_soon(self._astore_whole(message_key, promise))
            return
        self._add_sequence_entry(sequence_key, {"kind": wire.KIND_MESSAGE, "key": message_key})
        if not promise.is_resolved:
            # Remote readers wait for this message's end entry, so make sure it gets produced.
            self.context.start_soon(promise._adrive())

    async def _astore_whole(self, message_key: str, promise: MessagePromise) -> None:
        try:
            message = await promise
        except Exception as exc:
            self._add(message_key, wire.encode_error(exc))
        else:
            self.store_message(message)
            self._add(message_key, _message_fields(message))
        self._expire(message_key)

    def sequence_error(self, sequence_key: str, exc: BaseException) -> None:
        self._add_sequence_entry(sequence_key, wire.encode_error(exc))

    def sequence_end(self, sequence_key: str) -> None:
        self._add_sequence_entry(sequence_key, {"kind": wire.KIND_END})
        self._positions.pop(sequence_key, None)
        self._attempts.pop(sequence_key, None)
        self._expire(sequence_key)

    def _add_sequence_entry(self, sequence_key: str, fields: dict[str, Any]) -> None:
        index = self._positions.get(sequence_key, 0)
        self._positions[sequence_key] = index + 1
        fields["i"] = str(index)
        attempt = self._attempts.get(sequence_key)
        if attempt is not None:
            fields["a"] = attempt
        self._add(sequence_key, fields)

    def start_sequence_attempt(self, sequence_key: str, attempt: int) -> None:
        """Tag the entries this process writes to a call's reply with ``attempt``.

        A retried call (attempt > 1) first writes a restart entry; readers drop what older
        attempts wrote, so a reply never mixes two attempts.
        """
        self._attempts[sequence_key] = str(attempt)
        self._positions.pop(sequence_key, None)
        if attempt > 1:
            self._add(sequence_key, {"kind": wire.KIND_RESTART, "a": str(attempt)})

    async def arecord_dead_letter(self, reason: str, **details: str) -> None:
        """Record a rejected entry in the dead-letter stream (trimmed), never raising."""
        fields = {"reason": reason[:4096], "at_ms": str(int(time.time() * 1000))}
        fields.update({k: v[:4096] for k, v in details.items()})
        try:
            await self.redis.xadd(
                self.keys.dead_letters(), fields, maxlen=_DEAD_LETTER_MAXLEN, approximate=True
            )
        except (RedisError, OSError):
            logger.exception("Could not record a dead letter: %s", reason)

    # --- the flusher ------------------------------------------------------------------------------

    async def _aflush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            self._wakeup.clear()
            if self._pending:
                await self._aflush_batch()
            if not self._pending:
                self._flushed.set()
                if self._closing:
                    return

    async def _aflush_batch(self) -> None:
        batch, self._pending = self._pending, []
        self._last_tokens.clear()
        commands: list[tuple[str, str, Any]] = []
        for key, item in batch:
            if isinstance(item, _Tokens):
                fields = {"kind": wire.KIND_TOKENS, "i": str(item.first_index), "tokens": wire.encode_tokens(item.tokens)}
                commands.append(("xadd", key, fields))
            elif isinstance(item, _Expire):
                commands.append(("expire", key, max(1, int(item.ttl_s))))
            elif isinstance(item, _HashFields):
                commands.append(("hset", key, item.fields))
            else:
                commands.append(("xadd", key, item))
        started = time.monotonic()
        attempt = 0
        while True:
            # A failed pipeline may have applied part of its commands; readers skip the repeats
            # by the position index each entry carries.
            pipe = self.redis.pipeline(transaction=False)
            for command, key, argument in commands:
                if command == "xadd":
                    pipe.xadd(key, argument)
                elif command == "hset":
                    pipe.hset(key, mapping=argument)
                else:
                    pipe.expire(key, argument)
            try:
                await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                attempt += 1
                if self._closing and time.monotonic() - started > _CLOSE_RETRY_BUDGET_S:
                    logger.error("Dropping %d Redis writes at shutdown after %d attempts: %s",
                                 len(commands), attempt, exc)
                    return
                delay_s = _RETRY_DELAYS_S[min(attempt, len(_RETRY_DELAYS_S)) - 1]
                logger.warning("Redis write failed (%s); retrying in %.2f s", exc, delay_s)
                await asyncio.sleep(delay_s)


class _Tokens:
    """Tokens of one message waiting to be written as one entry."""

    __slots__ = ("first_index", "tokens")

    def __init__(self, first_index: int, token: Token) -> None:
        self.first_index = first_index
        self.tokens = [token]


class _HashFields:
    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields


class _Expire:
    __slots__ = ("ttl_s",)

    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s


def _message_fields(message: Message) -> dict[str, str]:
    return {
        "kind": wire.KIND_MESSAGE,
        "hash_key": message.hash_key,
        "message": json.dumps(message.serialize(), ensure_ascii=False, separators=(",", ":")),
    }


__all__ = ("RedisUnavailableError", "StreamStore", "create_redis_client")
