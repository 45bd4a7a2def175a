"""The Redis backing of a connected context: what each promise writes, where, and when.

Every test runs on fakeredis and on a real server (``redis_backend``). Entries are read back with
a second, plain client, exactly as ``redis-cli`` would show them.
"""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest
import redis.asyncio
from redis.asyncio import Redis

from brokeragents import (
    InteractionContext,
    Message,
    MessagePromise,
    MessageSequence,
    MessageTokenAppender,
    MiniAgents,
    TextMessage,
    TextToken,
    aload_message,
    aopen_message_promise,
    as_single_text_promise,
    miniagent,
)
from brokeragents.keys import Keys
from brokeragents.replay import NotConnectedError
from brokeragents.store import StreamStore
from helpers import Backend, wait_until

KEYS = Keys()
RANDOM_MESSAGE_KEY = re.compile(r"^ba:msg:\{[0-9a-f]{32}\}$")


def text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


async def read_entries(client: Redis, key: str) -> list[dict[str, str]]:
    """The entries of a stream as ``{field: text}`` dicts, in order."""
    entries: Any = await client.xrange(key)
    return [{text(k): text(v) for k, v in fields.items()} for _id, fields in entries]


def key_of(promise: MessagePromise) -> str:
    key = promise.redis_key
    assert key is not None
    return key


def store_of(context: MiniAgents) -> StreamStore:
    store = context.store
    assert store is not None
    return store


def joined_tokens(entries: list[dict[str, str]]) -> list[Any]:
    """Every token of the ``tokens`` entries of a message stream, in order."""
    return [token for entry in entries if entry["kind"] == "tokens" for token in json.loads(entry["tokens"])]


def assert_consecutive_token_positions(entries: list[dict[str, str]]) -> None:
    position = 0
    for entry in entries:
        if entry["kind"] == "tokens":
            assert int(entry["i"]) == position, entries
            position += len(json.loads(entry["tokens"]))


class GatedRedis:
    """A client whose pipelines wait for ``gate`` before running, and which records them.

    It stands in for a slow or unreachable server: while the gate is closed, no write lands.
    """

    def __init__(self, inner: Redis) -> None:
        self._inner = inner
        self.gate = asyncio.Event()
        self.gate.set()
        self.waiting = 0
        self.pipelines: list[list[tuple[Any, ...]]] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def pipeline(self, transaction: bool = True, shard_hint: Any = None) -> Any:
        pipe = self._inner.pipeline(transaction=transaction, shard_hint=shard_hint)
        execute = pipe.execute

        async def gated_execute(raise_on_error: bool = True) -> Any:
            commands = [tuple(args) for args, _options in pipe.command_stack]
            self.waiting += 1
            try:
                await self.gate.wait()
            finally:
                self.waiting -= 1
            result = await execute(raise_on_error=raise_on_error)
            self.pipelines.append(commands)
            return result

        pipe.execute = gated_execute  # type: ignore[method-assign]
        return pipe

    def xadds(self) -> list[str]:
        """The key of every XADD sent, in order."""
        return [text(c[1]) for p in self.pipelines for c in p if text(c[0]).upper() == "XADD"]


def connected(client: Redis | GatedRedis, **kwargs: Any) -> MiniAgents:
    return MiniAgents(redis=cast(Redis, client), remote_calls="never", **kwargs)


# --- message streams --------------------------------------------------------------------------------


async def test_streamed_message_writes_start_tokens_then_final_message(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with connected(client) as context:
        appender = MessageTokenAppender()
        with appender:
            promise = TextMessage.promise(message_token_streamer=appender, role="assistant")
            key = key_of(promise)
            assert RANDOM_MESSAGE_KEY.match(key), key  # an id from creation on
            appender.append("Hel")
            appender.append(TextToken("lo"))
        message = await promise
        await store_of(context).aflush()

    entries = await read_entries(client, key)
    assert entries[0]["kind"] == "start"
    assert entries[0]["class"] == "TextMessage"
    assert json.loads(entries[0]["known_beforehand"]) == {
        "class_": "Frozen",
        "content_template": None,
        "role": "assistant",
    }
    assert {entry["kind"] for entry in entries[1:-1]} == {"tokens"}
    assert joined_tokens(entries) == ["Hel", "lo"]  # plain text tokens are JSON strings
    final = entries[-1]
    assert final["kind"] == "message"
    assert final["hash_key"] == message.hash_key  # the end entry records the content hash
    assert json.loads(final["message"]) == message.serialize()
    assert message.hash_key not in key


async def test_streamed_message_can_be_found_by_its_hash_key_afterwards(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with connected(client) as context:
        promise = TextMessage.promise(message_token_streamer=_tokens("a", "b", "c"))
        message = await promise
        await store_of(context).aflush()
        by_hash = await aload_message(message.hash_key)

    assert by_hash == message
    assert by_hash.hash_key == message.hash_key
    entries = await read_entries(client, KEYS.message(message.hash_key))
    assert [entry["kind"] for entry in entries] == ["message"]
    assert entries[0]["hash_key"] == message.hash_key


async def test_prefilled_message_lives_under_its_content_hash(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with connected(client) as context:
        message = TextMessage("hi", role="user")
        promise = message.as_promise
        assert promise.redis_key == KEYS.message(message.hash_key)
        # Storing equal content again (another instance, another promise) adds nothing.
        assert TextMessage("hi", role="user").as_promise.redis_key == promise.redis_key
        await store_of(context).aflush()

    entries = await read_entries(client, KEYS.message(message.hash_key))
    assert entries == [
        {
            "kind": "message",
            "hash_key": message.hash_key,
            "message": json.dumps(message.serialize(), separators=(",", ":")),
        }
    ]


async def test_each_message_promise_has_its_own_stream(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with connected(client) as context:
        first = MessageTokenAppender()
        second = MessageTokenAppender()
        with first, second:
            first_promise = TextMessage.promise(message_token_streamer=first)
            second_promise = TextMessage.promise(message_token_streamer=second)
            for n in range(5):
                first.append(f"a{n}")
                second.append(f"b{n}")
        await first_promise
        await second_promise
        await store_of(context).aflush()

    assert first_promise.redis_key != second_promise.redis_key
    assert first_promise.redis_key is not None and second_promise.redis_key is not None
    assert joined_tokens(await read_entries(client, first_promise.redis_key)) == [f"a{n}" for n in range(5)]
    assert joined_tokens(await read_entries(client, second_promise.redis_key)) == [f"b{n}" for n in range(5)]


async def test_tokens_that_are_not_plain_text_are_json_objects(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with connected(client) as context:
        promise = TextMessage.promise(
            message_token_streamer=_tokens(TextToken("x", logprob=-0.5), "y", {"content": "z"})
        )
        await promise
        await store_of(context).aflush()

    assert promise.redis_key is not None
    tokens = joined_tokens(await read_entries(client, promise.redis_key))
    assert tokens == [
        {"class_": "TextToken", "content": "x", "logprob": -0.5},
        "y",
        {"class_": "Token", "content": "z"},
    ]


async def test_failed_message_ends_with_an_error_entry(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with connected(client) as context:
        appender = MessageTokenAppender(capture_errors=True)
        with appender:
            promise = TextMessage.promise(message_token_streamer=appender)
            appender.append("partial")
            raise ValueError("the model went away")
        with pytest.raises(ValueError, match="the model went away"):
            await promise
        await store_of(context).aflush()

    assert promise.redis_key is not None
    entries = await read_entries(client, promise.redis_key)
    assert [entry["kind"] for entry in entries] == ["start", "tokens", "error"]
    assert entries[-1]["error_type"] == "ValueError"
    assert entries[-1]["error_message"] == "the model went away"


async def test_sub_messages_are_stored_before_their_parents(redis_backend: Backend) -> None:
    recording = GatedRedis(redis_backend.client())
    async with connected(recording) as context:
        leaf = TextMessage("leaf")
        child = Message(note="child", leaf=leaf)
        items = (TextMessage("one"), TextMessage("two"))
        parent = Message(child=child, items=items, nested={"deep": TextMessage("deep")})
        parent_promise = parent.as_promise
        joined = as_single_text_promise([TextMessage("x"), TextMessage("y")])
        joined_message = await joined
        await store_of(context).aflush()

    order = recording.xadds()
    first_write = {key: order.index(key) for key in reversed(order)}

    def assert_before(sub: Message, outer: Message) -> None:
        assert first_write[KEYS.message(sub.hash_key)] < first_write[KEYS.message(outer.hash_key)]

    assert parent_promise.redis_key == KEYS.message(parent.hash_key)
    assert_before(leaf, child)
    for sub in (child, *items, parent["nested"]["deep"]):
        assert_before(sub, parent)
    originals = joined_message["original_messages"]
    assert [str(m) for m in originals] == ["x", "y"]
    for original in originals:
        assert_before(original, joined_message)
    assert joined.redis_key is not None
    # The streamed parent's final entry comes after its hash stream is written.
    final_entry = max(n for n, key in enumerate(order) if key == joined.redis_key)
    assert first_write[KEYS.message(joined_message.hash_key)] < final_entry


# --- sequence streams -------------------------------------------------------------------------------


async def test_sequence_writes_references_errors_and_the_end(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with connected(client) as context:
        sequence = MessageSequence(appender_capture_errors=True, errors_as_messages=False)
        streamed = TextMessage.promise(message_token_streamer=_tokens("s1", "s2"))
        with sequence.message_appender as appender:
            appender.append("first")
            appender.append(streamed)
            appender.append(ValueError("bad item"))
            appender.append([TextMessage("nested 1"), TextMessage("nested 2")])
        pieces = await _drain(sequence.sequence_promise)
        await store_of(context).aflush()

    key = sequence.sequence_promise.redis_key
    assert key is not None and key.startswith("ba:seq:{")
    entries = await read_entries(client, key)
    assert [entry["i"] for entry in entries] == [str(n) for n in range(6)]  # consecutive positions
    assert [entry["kind"] for entry in entries] == ["message", "message", "error", "message", "message", "end"]
    assert entries[0]["key"] == KEYS.message(TextMessage("first").hash_key)
    assert entries[1]["key"] == streamed.redis_key
    assert (entries[2]["error_type"], entries[2]["error_message"]) == ("ValueError", "bad item")
    assert entries[3]["key"] == KEYS.message(TextMessage("nested 1").hash_key)
    assert [str(p) for p in pieces] == ["first", "s1s2", "ValueError('bad item')", "nested 1", "nested 2"]
    for entry in entries:
        if entry["kind"] == "message":
            assert await client.exists(entry["key"]), entry  # every reference points at a stream


async def test_an_agent_call_is_a_hash_with_input_and_reply_sequences(redis_backend: Backend) -> None:
    client = redis_backend.client()

    @miniagent
    async def shouter(ctx: InteractionContext) -> None:
        async for message_promise in ctx.message_promises:
            ctx.reply(str(await message_promise).upper())

    async with connected(client) as context:
        replies = await shouter.trigger(["hello", "world"])
        await store_of(context).aflush()
        call_keys = [text(key) async for key in client.scan_iter(match=KEYS.call_pattern())]

    assert [str(reply) for reply in replies] == ["HELLO", "WORLD"]
    hashes = [key for key in call_keys if key.endswith("}")]
    assert len(hashes) == 1
    call = {text(k): text(v) for k, v in (await client.hgetall(hashes[0])).items()}
    assert call["agent"] == "SHOUTER"
    assert call["input"] == f"{hashes[0]}:input" and call["reply"] == f"{hashes[0]}:reply"
    inputs = await read_entries(client, call["input"])
    reply_entries = await read_entries(client, call["reply"])
    assert [entry["kind"] for entry in inputs] == ["message", "message", "end"]
    assert [entry["kind"] for entry in reply_entries] == ["message", "message", "end"]
    assert inputs[0]["key"] == KEYS.message(TextMessage("hello").hash_key)


# --- coalescing, positions, and never waiting on Redis ---------------------------------------------


async def test_tokens_appended_without_awaiting_are_coalesced_and_none_is_lost(redis_backend: Backend) -> None:
    client = redis_backend.client()
    count = 300
    async with connected(client) as context:
        appender = MessageTokenAppender()
        with appender:
            promise = TextMessage.promise(message_token_streamer=appender)
            for n in range(count):
                appender.append(f"<{n}>")
        message = await promise
        await store_of(context).aflush()

    assert promise.redis_key is not None
    entries = await read_entries(client, promise.redis_key)
    token_entries = [entry for entry in entries if entry["kind"] == "tokens"]
    assert 1 <= len(token_entries) < count
    assert joined_tokens(entries) == [f"<{n}>" for n in range(count)]
    assert_consecutive_token_positions(entries)
    assert str(message) == "".join(f"<{n}>" for n in range(count))


async def test_token_positions_are_consecutive_across_many_flushes(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with connected(client) as context:
        store = store_of(context)
        appender = MessageTokenAppender()
        with appender:
            promise = TextMessage.promise(message_token_streamer=appender)
            tokens = promise.__aiter__()
            for n in range(40):
                appender.append(str(n))
                assert str(await tokens.__anext__()) == str(n)  # pulled, so mirrored
                if n % 7 == 0:
                    await store.aflush()  # some tokens alone, some coalesced
        await promise
        await store.aflush()

    assert promise.redis_key is not None
    entries = await read_entries(client, promise.redis_key)
    assert joined_tokens(entries) == [str(n) for n in range(40)]
    assert_consecutive_token_positions(entries)
    assert len([entry for entry in entries if entry["kind"] == "tokens"]) >= 6  # at least one per flush


async def test_the_producer_never_waits_on_redis(redis_backend: Backend) -> None:
    gated = GatedRedis(redis_backend.client())
    observer = redis_backend.client()
    count = 50
    async with connected(gated) as context:
        store = store_of(context)
        gated.gate.clear()  # from now on no write lands until the gate opens
        appender = MessageTokenAppender()
        received: list[str] = []
        with appender:
            promise = TextMessage.promise(message_token_streamer=appender)
            key = key_of(promise)

            async def consume() -> None:
                async for token in promise:
                    received.append(str(token))

            consumer = asyncio.create_task(consume())
            for n in range(count):
                appender.append(f"t{n} ")
                await asyncio.sleep(0)  # let the consumer and the flusher run
        await consumer
        message = await promise

        # Everything was consumed in-process while Redis had received nothing at all.
        assert received == [f"t{n} " for n in range(count)]
        assert str(message) == "".join(received)
        await wait_until(lambda: gated.waiting == 1, what="the first pipeline to wait on the gate")
        assert await observer.exists(key) == 0
        gated.gate.set()
        await store.aflush()

    entries = await read_entries(observer, key)
    assert joined_tokens(entries) == received
    assert_consecutive_token_positions(entries)
    assert len([entry for entry in entries if entry["kind"] == "tokens"]) <= 2  # the backlog is coalesced
    assert entries[-1]["hash_key"] == message.hash_key


async def test_a_token_batch_never_exceeds_the_size_limit(redis_backend: Backend) -> None:
    client = redis_backend.client()
    limit = 1_000
    async with connected(client, max_message_bytes=limit) as context:
        appender = MessageTokenAppender()
        with appender:
            promise = TextMessage.promise(message_token_streamer=appender)
            for n in range(60):
                appender.append(f"{n:03d}" * 5)  # 15 characters each; 900 bytes in all
        await promise
        await store_of(context).aflush()

    assert promise.redis_key is not None
    entries = await read_entries(client, promise.redis_key)
    token_entries = [entry for entry in entries if entry["kind"] == "tokens"]
    assert len(token_entries) > 1
    assert all(len(entry["tokens"].encode()) <= limit for entry in token_entries)
    assert joined_tokens(entries) == [f"{n:03d}" * 5 for n in range(60)]
    assert_consecutive_token_positions(entries)


# --- retention ----------------------------------------------------------------------------------------


async def test_finished_streams_get_the_configured_ttl(redis_backend: Backend) -> None:
    client = redis_backend.client()
    ttl_s = 600
    async with connected(client, finished_stream_ttl_s=ttl_s) as context:
        streamed = TextMessage.promise(message_token_streamer=_tokens("a", "b"))
        sequence = MessageSequence(errors_as_messages=False)
        with sequence.message_appender as appender:
            appender.append(streamed)
            appender.append(TextMessage("whole"))
        messages = await sequence.sequence_promise
        await store_of(context).aflush()

    keys = [
        streamed.redis_key,
        KEYS.message(messages[0].hash_key),
        KEYS.message(messages[1].hash_key),
        sequence.sequence_promise.redis_key,
    ]
    for key in keys:
        assert key is not None
        assert 0 < await client.ttl(key) <= ttl_s, key


async def test_an_abandoned_stream_expires_too(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with connected(client, finished_stream_ttl_s=1) as context:
        appender = MessageTokenAppender()
        appender.open()  # never closed: its producer "died"
        promise = TextMessage.promise(message_token_streamer=appender)
        appender.append("half a thought")
        await store_of(context).aflush()
        key = promise.redis_key
        assert key is not None
        assert 0 < await client.ttl(key) <= 1
        await wait_until(lambda: _gone(client, key), timeout_s=10, what="the abandoned stream to expire")
        appender.close()


async def test_no_ttl_when_retention_is_off(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with connected(client, finished_stream_ttl_s=None) as context:
        promise = TextMessage.promise(message_token_streamer=_tokens("a"))
        await promise
        await store_of(context).aflush()
    assert promise.redis_key is not None
    assert await client.ttl(promise.redis_key) == -1


async def _gone(client: Redis, key: str) -> bool:
    return await client.exists(key) == 0


# --- without Redis ------------------------------------------------------------------------------------


async def test_without_a_url_nothing_touches_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*_args: Any, **_kwargs: Any) -> Any:
        raise AssertionError("an unconnected context touched Redis")

    monkeypatch.setattr(redis.asyncio.Redis, "__init__", refuse)
    monkeypatch.setattr(redis.asyncio.Redis, "from_url", refuse)
    monkeypatch.setattr(redis.asyncio.connection.AbstractConnection, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)

    @miniagent
    async def echo(ctx: InteractionContext) -> None:
        async for message_promise in ctx.message_promises:
            ctx.reply(message_promise)

    async with MiniAgents() as context:
        assert context.store is None and not context.is_connected
        streamed = TextMessage.promise(message_token_streamer=_tokens("a", "b"))
        assert streamed.redis_key is None
        assert TextMessage("x").as_promise.redis_key is None
        sequence = MessageSequence(errors_as_messages=False)
        with sequence.message_appender as appender:
            appender.append(streamed)
        assert sequence.sequence_promise.redis_key is None
        replies = await echo.trigger(await sequence.sequence_promise)
        assert [str(reply) for reply in replies] == ["ab"]
        with pytest.raises(NotConnectedError):
            await aopen_message_promise("0" * 40)


# --- helpers ------------------------------------------------------------------------------------------


def _tokens(*tokens: Any) -> Any:
    async def streamer(_aux: dict[str, Any]) -> AsyncIterator[Any]:
        for token in tokens:
            yield token

    return streamer


async def _drain(sequence: Any) -> list[Any]:
    """Every item of a sequence: the message, or the exception raised at its position."""
    items: list[Any] = []
    iterator = sequence.__aiter__()
    while True:
        try:
            promise: MessagePromise = await iterator.__anext__()
        except StopAsyncIteration:
            return items
        except Exception as exc:
            items.append(repr(exc))
            continue
        items.append(await promise)
