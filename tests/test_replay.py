"""Opening promises by key from a second context: replay from the start, tailing, errors, hashes.

The writer and the reader are two contexts with two clients on the same data (as two processes
would be), each in its own task. They coordinate with events, never with sleeps.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime
from typing import Any, TypeVar

import pytest
from redis.asyncio import Redis

from brokeragents import (
    ErrorMessage,
    Frozen,
    InteractionContext,
    Message,
    MessagePromise,
    MessageSequence,
    MessageTokenAppender,
    MessageTooLargeError,
    MiniAgents,
    RemoteError,
    StrictMessage,
    TextMessage,
    TextToken,
    aload_message,
    aopen_message_promise,
    aopen_sequence_promise,
    miniagent,
)
from brokeragents.keys import Keys
from helpers import Backend

T = TypeVar("T")
KEYS = Keys()


class MyErr(Exception):
    """An exception class the reading side cannot know."""


class Ticket(StrictMessage):
    title: str
    when: datetime
    tags: tuple[str, ...] = ()
    parent: TextMessage | None = None


class Point(Frozen):
    x: int
    y: int


def context_on(client: Redis, **kwargs: Any) -> MiniAgents:
    return MiniAgents(redis=client, remote_calls="never", **kwargs)


async def in_context(client: Redis, body: Callable[[], Awaitable[T]], **kwargs: Any) -> T:
    """Run ``body`` in a context of its own on ``client`` (in its own task), flushed at exit."""

    async def run() -> T:
        async with context_on(client, **kwargs):
            return await body()

    return await asyncio.create_task(run())


def tokens_of(*tokens: Any) -> Any:
    async def streamer(_aux: dict[str, Any]) -> AsyncIterator[Any]:
        for token in tokens:
            yield token

    return streamer


async def collect(iterable: AsyncIterable[Any]) -> list[Any]:
    return [piece async for piece in iterable]


async def outcomes(sequence: Any) -> list[Any]:
    """Each item of a sequence: its message promise, or the exception raised at its position."""
    items: list[Any] = []
    iterator = sequence.__aiter__()
    while True:
        try:
            items.append(await iterator.__anext__())
        except StopAsyncIteration:
            return items
        except Exception as exc:
            items.append(exc)


# --- replay from the start --------------------------------------------------------------------------


async def test_message_replays_every_piece_in_a_second_context(redis_backend: Backend) -> None:
    async def write() -> tuple[str, Message, list[Any]]:
        promise = TextMessage.promise(message_token_streamer=tokens_of("Hel", "lo", TextToken(" you", p=1)), role="bot")
        message = await promise
        assert promise.redis_key is not None
        return promise.redis_key, message, await collect(promise)

    key, written, written_tokens = await in_context(redis_backend.client(), write)

    async def read() -> None:
        promise = await aopen_message_promise(key)
        assert promise.message_class is TextMessage
        assert promise.known_beforehand == Frozen(role="bot", content_template=None)
        assert await collect(promise) == written_tokens
        assert await collect(promise) == written_tokens  # a second consumer replays from piece 0
        message = await promise
        assert message == written
        assert message.hash_key == written.hash_key
        assert await aload_message(written.hash_key) == written

    await in_context(redis_backend.client(), read)


async def test_whole_message_replays_as_itself_and_empty_stream_as_nothing(redis_backend: Backend) -> None:
    async def write() -> tuple[str, str]:
        whole = TextMessage("whole", role="user").as_promise
        empty = TextMessage.promise(message_token_streamer=tokens_of())
        await empty
        assert whole.redis_key is not None and empty.redis_key is not None
        return whole.redis_key, empty.redis_key

    whole_key, empty_key = await in_context(redis_backend.client(), write)

    async def read() -> None:
        whole = await aopen_message_promise(whole_key)
        assert await collect(whole) == [TextMessage("whole", role="user")]  # G5: one token, itself
        assert whole.known_beforehand == TextMessage("whole", role="user")
        empty = await aopen_message_promise(empty_key)
        assert await collect(empty) == []
        assert await empty == TextMessage("")

    await in_context(redis_backend.client(), read)


async def test_sequence_replays_every_item_in_a_second_context(redis_backend: Backend) -> None:
    async def write() -> str:
        sequence = MessageSequence(appender_capture_errors=True, errors_as_messages=False)
        with sequence.message_appender as appender:
            appender.append("one")
            appender.append(TextMessage.promise(message_token_streamer=tokens_of("t", "w", "o")))
            appender.append(ValueError("in between"))
            appender.append([{"content": "three", "n": 3}, TextMessage("four")])
        await outcomes(sequence.sequence_promise)
        assert sequence.sequence_promise.redis_key is not None
        return sequence.sequence_promise.redis_key

    key = await in_context(redis_backend.client(), write)

    async def read() -> None:
        sequence = await aopen_sequence_promise(key)
        items = await outcomes(sequence)
        assert [type(item).__name__ for item in items] == [
            "RemoteMessagePromise",
            "RemoteMessagePromise",
            "ValueError",
            "RemoteMessagePromise",
            "RemoteMessagePromise",
        ]
        assert str(items[2]) == "in between"
        assert [await collect(item) for item in items[1:2]] == [[TextToken("t"), TextToken("w"), TextToken("o")]]
        messages = [await item for item in items if isinstance(item, MessagePromise)]
        assert [message["content"] for message in messages] == ["one", "two", "three", "four"]
        assert type(messages[2]) is Message and messages[2]["n"] == 3  # a dict becomes a Message
        assert [type(item).__name__ for item in await outcomes(sequence)] == [
            type(item).__name__ for item in items
        ]  # replays again

    await in_context(redis_backend.client(), read)


async def test_an_agent_reply_opened_by_its_call_keys(redis_backend: Backend) -> None:
    @miniagent
    async def counter(ctx: InteractionContext, upto: int) -> None:
        for n in range(1, upto + 1):
            ctx.reply(f"{n}")

    async def write() -> str:
        call = counter.initiate_call(upto=3)
        replies = await call.reply_sequence()
        assert [str(reply) for reply in replies] == ["1", "2", "3"]
        return str(call.call_id)

    call_id = await in_context(redis_backend.client(), write)

    async def read() -> None:
        reply = await aopen_sequence_promise(KEYS.call_reply(call_id))
        assert [str(message) for message in await reply] == ["1", "2", "3"]
        inputs = await aopen_sequence_promise(KEYS.call_input(call_id))
        assert await inputs == ()

    await in_context(redis_backend.client(), read)


# --- tailing -------------------------------------------------------------------------------------------


async def test_tailing_a_message_while_it_streams(redis_backend: Backend) -> None:
    key_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    opened = asyncio.Event()
    first_two_seen = asyncio.Event()

    async def write() -> Message:
        context = MiniAgents.get_current()
        assert context.store is not None
        appender = MessageTokenAppender()
        with appender:
            promise = TextMessage.promise(message_token_streamer=appender, topic="tailing")
            assert promise.redis_key is not None
            await context.store.aflush()  # only the start entry so far
            key_ready.set_result(promise.redis_key)
            await opened.wait()
            appender.append("a")
            appender.append("b")
            await first_two_seen.wait()
            appender.append("c")
            appender.append("d")
        return await promise

    async def read() -> tuple[list[str], Message]:
        promise = await aopen_message_promise(await key_ready)
        # Known before any token was written.
        assert promise.message_class is TextMessage
        assert promise.known_beforehand["topic"] == "tailing"
        assert promise.pieces_so_far == ()
        opened.set()
        seen: list[str] = []
        async for token in promise:
            seen.append(str(token))
            if len(seen) == 2:
                first_two_seen.set()  # the writer only goes on once the reader saw these live
        return seen, await promise

    reader = asyncio.create_task(in_context(redis_backend.client(), read))
    written = await in_context(redis_backend.client(), write)
    seen, read_back = await reader
    assert seen == ["a", "b", "c", "d"]
    assert read_back == written and read_back.hash_key == written.hash_key


async def test_tailing_a_sequence_while_it_grows(redis_backend: Backend) -> None:
    key_ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    item_seen = asyncio.Event()

    async def write() -> tuple[Message, ...]:
        sequence = MessageSequence(errors_as_messages=False)
        with sequence.message_appender as appender:
            appender.append("first")
            context = MiniAgents.get_current()
            assert context.store is not None
            assert sequence.sequence_promise.redis_key is not None
            driver = asyncio.create_task(outcomes(sequence.sequence_promise))
            await context.store.aflush()
            key_ready.set_result(sequence.sequence_promise.redis_key)
            await item_seen.wait()
            appender.append("second")
            appender.append("third")
        await driver
        return await sequence.sequence_promise

    async def read() -> list[str]:
        sequence = await aopen_sequence_promise(await key_ready)
        texts = []
        async for promise in sequence:
            texts.append(str(await promise))
            item_seen.set()
        return texts

    reader = asyncio.create_task(in_context(redis_backend.client(), read))
    written = await in_context(redis_backend.client(), write)
    assert await reader == [str(message) for message in written] == ["first", "second", "third"]


# --- errors ---------------------------------------------------------------------------------------------


async def _write_failing_message(error: BaseException) -> str:
    appender = MessageTokenAppender(capture_errors=True)
    with appender:
        promise = TextMessage.promise(message_token_streamer=appender)
        appender.append("tok1")
        appender.append("tok2")
        raise error
    with pytest.raises(type(error)):
        await promise
    assert promise.redis_key is not None
    return promise.redis_key


@pytest.mark.parametrize(
    ("error", "type_name", "text"),
    [
        (ValueError("bad value"), "ValueError", "bad value"),
        (KeyError("missing"), "KeyError", "'missing'"),
        (MyErr("custom trouble"), "MyErr", "custom trouble"),
        (MessageTooLargeError("too big"), "MessageTooLargeError", "too big"),
    ],
    ids=["builtin", "keyerror", "custom", "ours"],
)
async def test_error_entry_reraises_the_same_type_name_and_message(
    redis_backend: Backend, error: Exception, type_name: str, text: str
) -> None:
    key = await in_context(redis_backend.client(), lambda: _write_failing_message(error))

    async def read() -> None:
        promise = await aopen_message_promise(key)
        tokens: list[str] = []
        with pytest.raises(Exception) as raised:
            async for token in promise:
                tokens.append(str(token))
        assert tokens == ["tok1", "tok2"]
        assert type(raised.value).__name__ == type_name
        assert str(raised.value) == text
        if isinstance(error, MyErr):
            assert isinstance(raised.value, RemoteError)  # not importable here: a look-alike
        else:
            assert type(raised.value) is type(error)
        with pytest.raises(type(raised.value)):
            await promise

    await in_context(redis_backend.client(), read)


async def test_sequence_error_entries_reraise_and_the_sequence_goes_on(redis_backend: Backend) -> None:
    async def write() -> str:
        sequence = MessageSequence(appender_capture_errors=True, errors_as_messages=False)
        with sequence.message_appender as appender:
            appender.append("before")
            appender.append(MyErr("seq trouble"))
            appender.append(ValueError("seq value"))
            appender.append("after")
        await outcomes(sequence.sequence_promise)
        assert sequence.sequence_promise.redis_key is not None
        return sequence.sequence_promise.redis_key

    key = await in_context(redis_backend.client(), write)

    async def read() -> None:
        items = await outcomes(await aopen_sequence_promise(key))
        assert str(await items[0]) == "before"
        assert isinstance(items[1], RemoteError) and type(items[1]).__name__ == "MyErr"
        assert str(items[1]) == "seq trouble"
        assert type(items[2]) is ValueError and str(items[2]) == "seq value"
        assert str(await items[3]) == "after"

    await in_context(redis_backend.client(), read)


async def test_errors_as_messages_applies_to_replayed_sequences(redis_backend: Backend) -> None:
    async def write() -> str:
        sequence = MessageSequence(appender_capture_errors=True, errors_as_messages=False)
        appender = MessageTokenAppender(capture_errors=True)
        with sequence.message_appender as sequence_appender:
            sequence_appender.append("msg 1")
            sequence_appender.append(ValueError("sequence level"))
            with appender:
                failing = TextMessage.promise(message_token_streamer=appender)
                sequence_appender.append(failing)
                appender.append("tok1")
                appender.append("tok2")
                raise ValueError("error1")
        sequence_appender_done = await outcomes(sequence.sequence_promise)
        assert len(sequence_appender_done) == 3
        assert sequence.sequence_promise.redis_key is not None
        return sequence.sequence_promise.redis_key

    key = await in_context(redis_backend.client(), write)

    async def read() -> None:
        sequence = await aopen_sequence_promise(key, errors_as_messages=True)
        promises = await collect(sequence)  # no exception reaches the consumer
        assert len(promises) == 3
        assert await promises[0] == TextMessage("msg 1")
        # I3: a sequence-level error becomes an ErrorMessage.
        assert await promises[1] == ErrorMessage("ValueError: sequence level")
        # I4: a token-level error becomes an extra token and an ErrorMessage of everything so far.
        assert [str(token) for token in await collect(promises[2])] == ["tok1", "tok2", "\nValueError: error1"]
        assert promises[2].message_class is TextMessage
        assert await promises[2] == ErrorMessage("tok1tok2\nValueError: error1")
        assert [str(m) for m in await sequence] == [
            "msg 1",
            "ValueError: sequence level",
            "tok1tok2\nValueError: error1",
        ]

    await in_context(redis_backend.client(), read)


async def test_idle_timeout_bounds_the_wait_for_a_stalled_writer(redis_backend: Backend) -> None:
    release = asyncio.Event()
    key_ready: asyncio.Future[tuple[str, str]] = asyncio.get_running_loop().create_future()

    async def write() -> None:
        context = MiniAgents.get_current()
        assert context.store is not None
        appender = MessageTokenAppender()
        sequence = MessageSequence(errors_as_messages=False)
        with appender, sequence.message_appender as sequence_appender:
            promise = TextMessage.promise(message_token_streamer=appender)
            sequence_appender.append(promise)
            driver = asyncio.create_task(outcomes(sequence.sequence_promise))
            appender.append("stalled")
            await context.store.aflush()
            assert promise.redis_key is not None and sequence.sequence_promise.redis_key is not None
            key_ready.set_result((promise.redis_key, sequence.sequence_promise.redis_key))
            await release.wait()
        await driver

    async def read() -> None:
        message_key, sequence_key = await key_ready
        promise = await aopen_message_promise(message_key, idle_timeout_s=0.3, block_ms=100)
        with pytest.raises(TimeoutError):
            await collect(promise)
        assert [str(token) for token in promise.pieces_so_far[:1]] == ["stalled"]
        sequence = await aopen_sequence_promise(sequence_key, idle_timeout_s=0.3, block_ms=100)
        items = await outcomes(sequence)  # one message, then the timeout, then the end
        assert [type(item).__name__ for item in items] == ["RemoteMessagePromise", "TimeoutError"]
        with pytest.raises(TimeoutError):
            await items[0]

    writer = asyncio.create_task(in_context(redis_backend.client(), write))
    try:
        await in_context(redis_backend.client(), read)
    finally:
        release.set()
        await writer


# --- hash keys survive the round trip ------------------------------------------------------------------


async def test_rebuilt_messages_have_the_same_hash_keys(redis_backend: Backend) -> None:
    leaf = TextMessage("leaf", score=0.25)
    when = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
    originals: list[Message] = [
        TextMessage("plain"),
        Message(text="é ü 漢字 🙂", n=7, ratio=1.5, flag=True, nothing=None, big=10**15),
        Message(items=[1, "two", [3, [4]], {"five": 5}], mapping={"a": {"b": {"c": "d"}}}),
        Message(child=leaf, children=(leaf, TextMessage("other")), nested={"deep": leaf}),
        Message(points=(Point(x=1, y=2), Point(x=3, y=4)), one=Point(x=0, y=0)),
        Message(grand=Message(parent=Message(child=leaf))),
        Ticket(title="t", when=when, tags=("a", "b"), parent=leaf),
        ErrorMessage("ValueError: x"),
    ]

    async def write() -> list[str]:
        keys = [message.as_promise.redis_key for message in originals]
        streamed = TextMessage.promise(message_token_streamer=tokens_of("s", "t"), meta={"k": [1, 2]}, ref=leaf)
        await streamed
        keys.append(streamed.redis_key)
        return [key for key in keys if key is not None]

    keys = await in_context(redis_backend.client(), write)
    expected = [*originals, TextMessage("st", meta={"k": [1, 2]}, ref=leaf)]

    async def read() -> None:
        for key, original in zip(keys, expected, strict=True):
            rebuilt = await aload_message(key)
            assert rebuilt == original
            assert type(rebuilt) is type(original)
            assert rebuilt.hash_key == original.hash_key
            assert rebuilt.keys() == original.keys()  # the field order survives too
            assert str(rebuilt) == str(original)
            assert [m.hash_key for m in rebuilt.sub_messages()] == [m.hash_key for m in original.sub_messages()]

    await in_context(redis_backend.client(), read)


async def test_values_that_are_not_json_keep_their_hash_key(redis_backend: Backend) -> None:
    # datetime, bytes and friends travel as their JSON form; the hash key is computed from that.
    original = Message(when=datetime(2026, 1, 2, 3, 4, 5), raw=b"bytes", s=frozenset({"x"}))
    key = await in_context(redis_backend.client(), lambda: _as_key(original))
    rebuilt = await in_context(redis_backend.client(), lambda: aload_message(key))
    assert rebuilt.hash_key == original.hash_key
    assert rebuilt["when"] == "2026-01-02T03:04:05"
    assert rebuilt["raw"] == "bytes"


async def test_message_tokens_round_trip_inline(redis_backend: Backend) -> None:
    token_message = TextMessage("inner", sub=TextMessage("sub"))

    async def write() -> str:
        promise = TextMessage.promise(message_token_streamer=tokens_of("a", token_message, "b"))
        await promise
        assert promise.redis_key is not None
        return promise.redis_key

    key = await in_context(redis_backend.client(), write)

    async def read() -> None:
        promise = await aopen_message_promise(key)
        tokens = await collect(promise)
        assert tokens[1] == token_message and tokens[1].hash_key == token_message.hash_key
        assert str(await promise) == "ainnerb"

    await in_context(redis_backend.client(), read)


async def _as_key(message: Message) -> str:
    key = message.as_promise.redis_key
    assert key is not None
    return key


async def test_blocking_reads_stay_within_the_client_socket_timeout(
    redis_backend: Backend, caplog: pytest.LogCaptureFixture
) -> None:
    # redis-py times out any read longer than socket_timeout, XREAD BLOCK included.
    client = redis_backend.client(socket_timeout=1.0)

    key = KEYS.message("stalled-writer")  # a start entry, then nothing: a stalled writer
    await client.xadd(key, {"kind": "start", "class": "TextMessage", "known_beforehand": '{"class_":"Frozen"}'})

    async def read() -> None:
        async with context_on(client):
            promise = await aopen_message_promise(key, idle_timeout_s=2.0, block_ms=5_000)
            with pytest.raises(TimeoutError, match="No new entry"):
                await collect(promise)

    with caplog.at_level("WARNING", logger="brokeragents.replay"):
        await asyncio.create_task(read())
    assert "retrying" not in caplog.text  # no read ever timed out on the socket
