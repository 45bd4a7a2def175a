"""StreamStore: the Redis side of a connected context.

Producers never wait on Redis. Every write (a token, a final message, a sequence entry) is put in
an in-memory buffer, and one owned flusher task sends the buffer as a pipeline. When the producer
outruns Redis, the buffer grows between flushes and consecutive tokens of one message are
coalesced into a single stream entry, so the cost per token stays far below a round trip.

Retention: every stream written in a batch gets its TTL (``finished_stream_ttl_s``) reset in that
batch, so a finished stream expires that long after its last entry, and so does one whose
producer died half-way. A call's hash gets its TTL once the call is finished.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError

from brokeragents import wire
from brokeragents.errors import BrokerAgentsError, MessageTooLargeError
from brokeragents.keys import Keys, new_id
from brokeragents.messages import Message, Token

if TYPE_CHECKING:
    from brokeragents.context import PromisingContext
    from brokeragents.message_promise import MessagePromise

logger = logging.getLogger("brokeragents.store")

_DEAD_LETTER_MAXLEN = 10_000
_RETRY_DELAYS_S = (0.05, 0.1, 0.2, 0.5, 1.0, 2.0)  # the last one repeats
_CLOSE_RETRY_BUDGET_S = 10.0
# Hash keys known to be written; bounded, since a worker may run for weeks.
_STORED_HASHES_MAX = 100_000


CALLS_LOG_MAXLEN = 10_000
FLUSH_INTERVAL_S = 0.0005
TTL_REFRESH_S = 60.0
_TTL_TRACKED_MAX = 100_000


class RedisUnavailableError(BrokerAgentsError, ConnectionError):
    """Raised when the context cannot reach its Redis server."""


# Longer than any blocking read (XREAD/XREADGROUP BLOCK are at most a few seconds): redis-py 6+
# defaults socket_timeout to 5 s, which made every BLOCK 5000 read fail with a TimeoutError.
_SOCKET_TIMEOUT_S = 30.0
_REDIS_PY_DEFAULT_SOCKET_TIMEOUT_S = 5.0
_MIN_BLOCK_MS = 100


# A cluster client opens one connection per concurrent command per node and raises (instead of
# waiting) past max_connections, while every tailing reader holds one in XREAD BLOCK: allow many.
_CLUSTER_MAX_CONNECTIONS_PER_NODE = 10_000
CLUSTER_SCHEMES = {"redis+cluster": "redis", "rediss+cluster": "rediss"}


def is_cluster_url(url: str) -> bool:
    """True for ``redis+cluster://`` / ``rediss+cluster://`` URLs or a ``cluster=true`` query."""
    parts = urlsplit(url)
    if parts.scheme in CLUSTER_SCHEMES:
        return True
    return any(name == "cluster" and value.lower() in ("1", "true", "yes") for name, value in parse_qsl(parts.query))


def _plain_url(url: str) -> str:
    """The URL redis-py understands: the scheme without ``+cluster``, the query without ``cluster``."""
    parts = urlsplit(url)
    query = urlencode([(name, value) for name, value in parse_qsl(parts.query) if name != "cluster"])
    return urlunsplit(parts._replace(scheme=CLUSTER_SCHEMES.get(parts.scheme, parts.scheme), query=query))


def create_redis_client(url: str) -> Redis:
    """A client for ``url`` with RESP2 pinned, so reply shapes do not depend on the redis-py version.

    A cluster URL (``redis+cluster://host:port``, ``rediss+cluster://...``, or any URL with
    ``?cluster=true``) gives a :class:`redis.asyncio.RedisCluster` seeded by that node; it is typed
    as ``Redis`` because it has the same command methods (see docs/dashboard-and-cluster.md).
    """
    options: dict[str, Any] = {"protocol": 2, "health_check_interval": 30, "socket_timeout": _SOCKET_TIMEOUT_S}
    if is_cluster_url(url):
        cluster = RedisCluster.from_url(_plain_url(url), max_connections=_CLUSTER_MAX_CONNECTIONS_PER_NODE, **options)
        return cast(Redis, cluster)
    # The same for one node: redis-py's asyncio pool raises MaxConnectionsError past
    # max_connections (100 by default since redis-py 6) instead of waiting, and a process with
    # more than 100 calls or readers in flight holds more than 100 connections in XREAD BLOCK.
    # A max_connections=N in the URL's query still wins.
    return Redis.from_url(
        _plain_url(url) if "cluster=" in url else url, max_connections=_CLUSTER_MAX_CONNECTIONS_PER_NODE, **options
    )


class StreamStore:
    """Mirrors promises of one context to Redis Streams through a pipelined background flusher."""

    def __init__(
        self,
        *,
        url: str | None,
        client: Redis | RedisCluster | None,
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
        # A RedisCluster has the same command methods; typed as Redis for the code reading replies.
        self.redis: Redis = cast(Redis, client)
        self.keys = Keys(key_prefix)
        self.max_message_bytes = max_message_bytes
        self.context = context
        self._ttl_s = None if finished_stream_ttl_s is None else max(1, int(finished_stream_ttl_s))
        # Pending writes in order; a _Tokens item keeps growing until the flusher takes it.
        self._pending: list[tuple[str, _Entry | _Tokens | _HashFields | _Expire]] = []
        self._last_tokens: dict[str, _Tokens] = {}
        # Next position per open stream: token index of a message, entry index of a sequence.
        self._positions: dict[str, int] = {}
        self._attempts: dict[str, str] = {}
        # Replies of attempts handed back (a worker stopping): nothing more may be written to them.
        self._abandoned: set[str] = set()
        # Message streams that got an error entry in place of an oversized token: nothing more.
        self._poisoned: set[str] = set()
        self._wakeup = asyncio.Event()
        self._flusher: asyncio.Task[None] | None = None
        self._closing = False
        self._stored_hashes: dict[str, None] = {}  # insertion-ordered: the oldest is evicted
        self._flushed = asyncio.Event()
        self._last_flush_s = 0.0
        self._ttl_set_s: dict[str, float] = {}  # when each open stream's TTL was last set
        self._flushed.set()
        self._max_block_ms = _max_block_ms(client)

    def safe_block_ms(self, block_ms: int) -> int:
        """``block_ms`` cut to half the client's socket timeout, for XREAD/XREADGROUP BLOCK.

        A client given by the user may keep redis-py's default socket timeout (5 s): a BLOCK as
        long as that fails with a TimeoutError instead of returning nothing.
        """
        return block_ms if self._max_block_ms is None else min(block_ms, self._max_block_ms)

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

    def _add(self, key: str, fields: dict[str, str], *, maxlen: int | None = None) -> None:
        self._last_tokens.pop(key, None)  # later tokens must go after this entry
        self._pending.append((key, _Entry(fields, maxlen)))
        self._signal()

    def _signal(self) -> None:
        if not self._wakeup.is_set():
            self._flushed.clear()
            self._wakeup.set()
            if self._flusher is None:
                # No running loop (sync construction): aconnect starts the flusher later.
                with contextlib.suppress(RuntimeError):
                    self._ensure_flusher()

    def _expire(self, key: str) -> None:
        """Reset the TTL of ``key`` in the next batch (keys written by XADD get it anyway)."""
        if self._ttl_s is not None:
            self._pending.append((key, _Expire()))
            self._signal()

    def write_hash(self, key: str, fields: dict[str, str], *, finished: bool = False) -> None:
        """Set fields of a hash (a call's description); ``finished`` starts its TTL."""
        self._pending.append((key, _HashFields(fields)))
        if finished:
            self._expire(key)
        self._signal()

    def log_call(self, fields: dict[str, str]) -> None:
        """Append a call start to the capped calls log (read by ``brokeragents tail``)."""
        self._add(self.keys.calls_log(), fields, maxlen=CALLS_LOG_MAXLEN)

    def register_message_promise(self, promise: MessagePromise) -> str:
        """Give a new message promise its stream key and write what is known already.

        :raises MessageTooLargeError: a prefilled message, one of its sub-messages, or the
            ``known_beforehand`` fields are over ``max_message_bytes``
        """
        if promise.is_resolved:
            message = promise._result
            assert isinstance(message, Message)
            return self.store_message(message)
        fields = _start_fields(promise)
        self._check_size(len(fields["known_beforehand"].encode("utf-8")), "The known_beforehand fields")
        key = self.keys.message(new_id())
        self._add(key, fields)
        return key

    def message_token(self, promise: MessagePromise, token: Token) -> None:
        key = promise.redis_key
        if key is not None:
            self._append_token(key, token)

    def _append_token(self, key: str, token: Token) -> None:
        if key in self._poisoned:
            return
        encoded = wire.encode_token_json(token)
        size = len(encoded.encode("utf-8"))
        if size + 2 > self.max_message_bytes:  # +2: the brackets of the JSON array
            # A reader would reject the entry; tell it why at this position instead.
            self._poisoned.add(key)
            self._positions.pop(key, None)
            self._add(
                key,
                wire.encode_error(
                    MessageTooLargeError(
                        f"A {type(token).__name__} of {size} bytes is over the limit of "
                        f"{self.max_message_bytes} bytes (max_message_bytes)."
                    )
                ),
            )
            return
        index = self._positions.get(key, 0)
        self._positions[key] = index + 1
        batch = self._last_tokens.get(key)
        if batch is not None and batch.size + size + 1 <= self.max_message_bytes:
            batch.add(encoded, size)  # coalesce with the token entry not yet sent
            return
        batch = _Tokens(index, encoded, size)
        self._last_tokens[key] = batch
        self._pending.append((key, batch))
        self._signal()

    def message_resolved(self, promise: MessagePromise, message: Message) -> None:
        key = promise.redis_key
        if key is not None:
            self._finish_resolved(key, message)

    def message_failed(self, promise: MessagePromise, exc: BaseException) -> None:
        key = promise.redis_key
        if key is not None:
            self._finish_failed(key, exc)

    def _finish_resolved(self, key: str, message: Message) -> None:
        # Called from a promise's resolution hook: it must never raise.
        try:
            hash_stream = self.store_message(message)
        except MessageTooLargeError as exc:
            logger.error("Not storing %s: %s", key, exc)
            self._finish_failed(key, exc)
            return
        self._positions.pop(key, None)
        if key in self._poisoned:
            self._poisoned.discard(key)
        elif key != hash_stream:
            self._add(key, _message_fields(message))

    def _finish_failed(self, key: str, exc: BaseException) -> None:
        self._positions.pop(key, None)
        if key in self._poisoned:
            self._poisoned.discard(key)  # its error entry is written already
        else:
            self._add(key, wire.encode_error(exc))

    def store_message(self, message: Message) -> str:
        """Store ``message`` (and its sub-messages first) under its hash key; return that key.

        A message stored before only gets its TTL refreshed, with its sub-messages, so that a
        message still in use never outlives what it refers to.

        :raises MessageTooLargeError: the message or a sub-message is over ``max_message_bytes``
            (checked before anything is buffered)
        """
        new: dict[str, Message] = {}
        known: list[str] = []
        for item in (*message.sub_messages(), message):
            hash_key = item.hash_key
            if hash_key in new:
                continue
            if hash_key in self._stored_hashes:
                known.append(hash_key)
            else:
                self._check_size(len(item.serialized.encode("utf-8")), type(item).__name__)
                new[hash_key] = item
        for hash_key, item in new.items():
            # MAXLEN 1: a hash stream holds one message entry, however often it is stored.
            self._add(self.keys.message(hash_key), _message_fields(item), maxlen=1)
            self._remember(hash_key)
        for hash_key in known:
            self._expire(self.keys.message(hash_key))
            self._remember(hash_key)
        return self.keys.message(message.hash_key)

    def _remember(self, hash_key: str) -> None:
        self._stored_hashes.pop(hash_key, None)
        self._stored_hashes[hash_key] = None
        if len(self._stored_hashes) > _STORED_HASHES_MAX:
            # Forgetting only costs a repeated write, which MAXLEN 1 keeps harmless.
            del self._stored_hashes[next(iter(self._stored_hashes))]

    def _check_size(self, size: int, what: str) -> None:
        if size > self.max_message_bytes:
            raise MessageTooLargeError(
                f"{what} is {size} bytes serialized, over the limit of {self.max_message_bytes} "
                f"bytes (max_message_bytes)."
            )

    def sequence_message(self, sequence_key: str, promise: MessagePromise) -> None:
        message_key = promise.redis_key
        if message_key is None:
            message_key = self._mirror_unconnected(promise)
        elif promise._store is self and not promise.is_resolved:
            # Remote readers wait for this message's end entry, so make sure it gets produced.
            self.context.start_soon(promise._adrive())
        self._add_sequence_entry(sequence_key, {"kind": wire.KIND_MESSAGE, "key": message_key})

    def _mirror_unconnected(self, promise: MessagePromise) -> str:
        """Write a promise of an unconnected context like one of ours; return its stream key."""
        if promise.is_resolved and isinstance(promise._result, Message):
            try:
                return self.store_message(promise._result)
            except MessageTooLargeError:
                pass  # streamed below, where its error entry tells readers why
        key = self.keys.message(new_id())
        # The start entry goes first, so a reference never points at a stream not there yet.
        self._add(key, _start_fields(promise))
        self.context.start_soon(self._amirror(key, promise))
        return key

    async def _amirror(self, key: str, promise: MessagePromise) -> None:
        try:
            async for token in promise:
                self._append_token(key, token)
            message = await promise
        except Exception as exc:
            self._finish_failed(key, exc)
        else:
            self._finish_resolved(key, message)

    def sequence_error(self, sequence_key: str, exc: BaseException) -> None:
        self._add_sequence_entry(sequence_key, wire.encode_error(exc))

    def sequence_end(self, sequence_key: str) -> None:
        self._add_sequence_entry(sequence_key, {"kind": wire.KIND_END})
        self._positions.pop(sequence_key, None)
        self._attempts.pop(sequence_key, None)

    def _add_sequence_entry(self, sequence_key: str, fields: dict[str, str]) -> None:
        if sequence_key in self._abandoned:
            return
        index = self._positions.get(sequence_key, 0)
        self._positions[sequence_key] = index + 1
        fields["i"] = str(index)
        attempt = self._attempts.get(sequence_key)
        if attempt is not None:
            fields["a"] = attempt
        self._add(sequence_key, fields)

    def abandon_sequence_attempt(self, sequence_key: str) -> None:
        """Write nothing more to ``sequence_key`` from this process (its attempt was handed back).

        A cancelled attempt must not end the reply: readers would take a cut attempt for a
        complete one. The attempt that takes over writes the rest.
        """
        self._abandoned.add(sequence_key)

    def start_sequence_attempt(self, sequence_key: str, attempt: int) -> None:
        """Tag the entries this process writes to a call's reply with ``attempt``.

        A retried call (attempt > 1) first writes a restart entry; readers drop what older
        attempts wrote, so a reply never mixes two attempts.
        """
        self._attempts[sequence_key] = str(attempt)
        self._positions.pop(sequence_key, None)
        self._abandoned.discard(sequence_key)
        if attempt > 1:
            self._add(sequence_key, {"kind": wire.KIND_RESTART, "a": str(attempt)})

    async def arecord_dead_letter(self, reason: str, **details: str) -> None:
        """Record a rejected entry in the dead-letter stream (trimmed), never raising."""
        # Typed loosely: redis-py's field mapping type is invariant.
        fields: dict[Any, Any] = {"reason": reason[:4096], "at_ms": str(int(time.time() * 1000))}
        fields.update({k: v[:4096] for k, v in details.items()})
        try:
            await self.redis.xadd(self.keys.dead_letters(), fields, maxlen=_DEAD_LETTER_MAXLEN, approximate=True)
        except (RedisError, OSError):
            logger.exception("Could not record a dead letter: %s", reason)

    # --- the flusher ------------------------------------------------------------------------------

    async def _aflush_forever(self) -> None:
        while True:
            await self._wakeup.wait()
            # While writes keep coming, gather them for a moment: one pipeline then carries many
            # tokens. After a quiet spell the first write still goes out at once.
            since_last_s = time.monotonic() - self._last_flush_s
            if since_last_s < FLUSH_INTERVAL_S and not self._closing:
                await asyncio.sleep(FLUSH_INTERVAL_S - since_last_s)
            self._last_flush_s = time.monotonic()
            self._wakeup.clear()
            if self._pending:
                try:
                    await self._aflush_batch()
                except Exception:
                    # A bug here must not stop every later write, nor leave aflush() waiting.
                    logger.exception("Dropped a batch of Redis writes")
            if not self._pending:
                self._flushed.set()
                if self._closing:
                    return

    def _take_batch(self) -> list[tuple[str, str, Any]]:
        """The pending writes as pipeline commands; each written stream's TTL is reset last."""
        batch, self._pending = self._pending, []
        self._last_tokens.clear()
        commands: list[tuple[str, str, Any]] = []
        expiring: dict[str, None] = {}
        now_s = time.monotonic()
        for key, item in batch:
            if isinstance(item, _Tokens):
                fields = {"kind": wire.KIND_TOKENS, "i": str(item.first_index), "tokens": item.json()}
                commands.append(("xadd", key, (fields, None)))
                self._note_written(key, now_s, expiring)
            elif isinstance(item, _Entry):
                commands.append(("xadd", key, (item.fields, item.maxlen)))
                self._note_written(key, now_s, expiring)
            elif isinstance(item, _HashFields):
                commands.append(("hset", key, item.fields))
            else:  # a stream or hash that is finished: its TTL starts now, always
                expiring[key] = None
                self._ttl_set_s.pop(key, None)
        if self._ttl_s is not None:
            commands.extend(("expire", key, self._ttl_s) for key in expiring)
        return commands

    def _note_written(self, key: str, now_s: float, expiring: dict[str, None]) -> None:
        # A stream gets its TTL when first written, so it expires even if its producer dies;
        # refreshing it on every batch would double the commands, so it is refreshed now and then.
        if now_s - self._ttl_set_s.get(key, -TTL_REFRESH_S) >= TTL_REFRESH_S:
            expiring[key] = None
            if len(self._ttl_set_s) >= _TTL_TRACKED_MAX:
                self._ttl_set_s.clear()  # the worst case is a few extra EXPIREs
            self._ttl_set_s[key] = now_s

    async def _aflush_batch(self) -> None:
        commands = self._take_batch()
        started = time.monotonic()
        attempt = 0
        while True:
            # A failed pipeline may have applied part of its commands; readers skip the repeats
            # by the position index each entry carries.
            pipe = self.redis.pipeline(transaction=False)
            for command, key, argument in commands:
                if command == "xadd":
                    fields, maxlen = argument
                    # Exact trimming: "~" would leave a short stream untrimmed.
                    pipe.xadd(key, fields, maxlen=maxlen, approximate=False)
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
                    logger.error(
                        "Dropping %d Redis writes at shutdown after %d attempts: %s",
                        len(commands),
                        attempt,
                        exc,
                    )
                    return
                delay_s = _RETRY_DELAYS_S[min(attempt, len(_RETRY_DELAYS_S)) - 1]
                logger.warning("Redis write failed (%s); retrying in %.2f s", exc, delay_s)
                await asyncio.sleep(delay_s)


def _max_block_ms(client: Any) -> int | None:
    pool = getattr(client, "connection_pool", None)
    options: dict[str, Any] = getattr(pool, "connection_kwargs", {})
    # Absent means redis-py's own default, 5 s since redis-py 6 (unknown for a cluster client).
    timeout_s = options.get("socket_timeout", _REDIS_PY_DEFAULT_SOCKET_TIMEOUT_S)
    if timeout_s is None:
        return None
    return max(_MIN_BLOCK_MS, int(timeout_s * 1000 / 2))


class _Entry:
    """One stream entry to add; ``maxlen`` trims the stream to that many entries."""

    __slots__ = ("fields", "maxlen")

    def __init__(self, fields: dict[str, str], maxlen: int | None) -> None:
        self.fields = fields
        self.maxlen = maxlen


class _Tokens:
    """Tokens of one message waiting to be written as one entry, already JSON-encoded."""

    __slots__ = ("encoded", "first_index", "size")

    def __init__(self, first_index: int, encoded: str, size: int) -> None:
        self.first_index = first_index
        self.encoded = [encoded]
        self.size = size + 2  # with the brackets

    def add(self, encoded: str, size: int) -> None:
        self.encoded.append(encoded)
        self.size += size + 1  # with the comma

    def json(self) -> str:
        return "[" + ",".join(self.encoded) + "]"


class _HashFields:
    __slots__ = ("fields",)

    def __init__(self, fields: dict[str, str]) -> None:
        self.fields = fields


class _Expire:
    """Marks a key whose TTL the next batch resets."""

    __slots__ = ()


def _start_fields(promise: MessagePromise) -> dict[str, str]:
    return {
        "kind": wire.KIND_START,
        "class": promise.message_class.__name__,
        "known_beforehand": wire.encode_frozen(promise.known_beforehand),
    }


def _message_fields(message: Message) -> dict[str, str]:
    return {
        "kind": wire.KIND_MESSAGE,
        "hash_key": message.hash_key,
        "message": wire.encode_message(message),
    }


__all__ = ("RedisUnavailableError", "StreamStore", "create_redis_client", "is_cluster_url")
