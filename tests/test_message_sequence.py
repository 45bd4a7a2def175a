"""MessageSequence: input normalization (E1-E13), flattening (D5, D6) and errors as messages (I3-I5)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from pydantic import BaseModel

from brokeragents import (
    NO_VALUE,
    AppenderClosedError,
    AppenderNotOpenError,
    ErrorMessage,
    InteractionContext,
    Message,
    MessagePromise,
    MessageSequence,
    MessageSequencePromise,
    MessageTokenAppender,
    MiniAgents,
    NoActiveContextError,
    Promise,
    PromisingContext,
    Sentinel,
    TextMessage,
    TextToken,
    WrongActiveContextError,
    miniagent,
)

START_SOON = pytest.mark.parametrize("start_soon", [True, False, NO_VALUE], ids=["soon", "lazy", "default"])
COLLECT = pytest.mark.parametrize("collect", ["await", "messages", "tokens"])
ASYNC_ITERATOR_WARNING = "An async iterator is being passed to a message sequence"


class Point(BaseModel):
    a: int
    b: str


@miniagent
async def echo(ctx: InteractionContext) -> None:
    ctx.reply(ctx.message_promises)


async def collect_sequence(sequence: MessageSequencePromise, how: str) -> list[Any]:
    if how == "await":
        return list(await sequence)
    if how == "messages":
        return [await promise async for promise in sequence]
    return [token async for promise in sequence async for token in promise]


async def outcomes_of(sequence: MessageSequencePromise) -> list[Any]:
    """Every message, or the raised exception's text, iterating past exceptions to the end."""
    outcomes: list[Any] = []
    iterator = aiter(sequence)
    while True:
        try:
            promise = await anext(iterator)
        except StopAsyncIteration:
            return outcomes
        except Exception as exc:
            outcomes.append(f"raised {type(exc).__name__}: {exc}")
        else:
            outcomes.append(await promise)


def sequence_of(messages: Any) -> MessageSequencePromise:
    return MessageSequence.turn_into_sequence_promise(messages)


# --- context requirements (A1) -------------------------------------------------------------------


def test_message_sequence_needs_a_context() -> None:
    with pytest.raises(NoActiveContextError):
        MessageSequence()


async def test_message_sequence_needs_mini_agents_unless_errors_as_messages_is_given() -> None:
    async with PromisingContext():
        with pytest.raises(WrongActiveContextError):
            MessageSequence()
        sequence = MessageSequence(errors_as_messages=False)
        with sequence.message_appender as appender:
            appender.append("works")
        assert await sequence.sequence_promise == (TextMessage("works"),)


# --- the flat sequence under MiniAgents ---------------------------------------------------------


@pytest.mark.parametrize("errors_as_messages", [True, False, NO_VALUE], ids=["safe", "unsafe", "default"])
@START_SOON
async def test_message_sequence(errors_as_messages: bool | Sentinel, start_soon: bool | Sentinel) -> None:
    async with MiniAgents():
        sequence1 = MessageSequence(start_soon=start_soon, errors_as_messages=errors_as_messages)
        with sequence1.message_appender as appender1:
            appender1.append("msg1")
            appender1.append({"content": "msg2", "some_attr": 2})
            appender1.append(TextMessage("msg3", another_attr=3))
            sequence2 = MessageSequence(start_soon=start_soon, errors_as_messages=errors_as_messages)
            with sequence2.message_appender as appender2:
                appender2.append("msg4")
                sequence3 = MessageSequence(start_soon=start_soon, errors_as_messages=errors_as_messages)
                with sequence3.message_appender as appender3:
                    appender3.append("msg5")
                    appender3.append(["msg6", "msg7"])
                    appender3.append([[TextMessage("msg8", another_attr=8)]])
                appender2.append(sequence3.sequence_promise)
                appender2.append("msg9")
            appender1.append(sequence2.sequence_promise)
            appender1.append(TextMessage.promise("msg10", yet_another_attr=10))

        expected = [
            TextMessage("msg1"),
            Message(content="msg2", some_attr=2),
            TextMessage("msg3", another_attr=3),
            TextMessage("msg4"),
            TextMessage("msg5"),
            TextMessage("msg6"),
            TextMessage("msg7"),
            TextMessage("msg8", another_attr=8),
            TextMessage("msg9"),
            TextMessage("msg10", yet_another_attr=10),
        ]
        for how in ("await", "messages", "tokens"):
            collected = await collect_sequence(sequence1.sequence_promise, how)
            assert collected == expected
            assert [type(message) for message in collected] == [type(message) for message in expected]


@START_SOON
async def test_message_sequence_error(start_soon: bool | Sentinel) -> None:
    async with MiniAgents(appenders_capture_errors_by_default=True):
        sequence1 = MessageSequence(start_soon=start_soon)
        with sequence1.message_appender as appender1:
            appender1.append("msg1")
            sequence2 = MessageSequence(start_soon=start_soon)
            with sequence2.message_appender as appender2:
                appender2.append("msg2")
                sequence3 = MessageSequence(start_soon=start_soon)
                appender2.append(sequence3.sequence_promise)
                with sequence3.message_appender as appender3:
                    appender3.append("msg3")
                    raise ValueError("error1")
            appender1.append(sequence2.sequence_promise)

        received: list[Message] = []
        with pytest.raises(ValueError, match="error1"):
            async for promise in sequence1.sequence_promise:
                received.append(await promise)
        assert received == [TextMessage("msg1"), TextMessage("msg2"), TextMessage("msg3")]
        with pytest.raises(ValueError, match="error1"):
            await sequence1.sequence_promise


@START_SOON
async def test_items_after_a_failed_item_still_arrive(start_soon: bool | Sentinel) -> None:
    async with MiniAgents():
        inner = MessageSequence(appender_capture_errors=True, start_soon=start_soon)
        with inner.message_appender as inner_appender:
            inner_appender.append("inner 1")
            raise ValueError("inner broke")
        outer = MessageSequence(start_soon=start_soon)
        with outer.message_appender as appender:
            appender.append("before")
            appender.append(inner.sequence_promise)
            appender.append("after")
        assert await outcomes_of(outer.sequence_promise) == [
            TextMessage("before"),
            TextMessage("inner 1"),
            "raised ValueError: inner broke",
            TextMessage("after"),
        ]


@COLLECT
@START_SOON
async def test_message_sequence_error_to_message(collect: str, start_soon: bool | Sentinel) -> None:
    async with MiniAgents():
        sequence = MessageSequence(appender_capture_errors=True, start_soon=start_soon, errors_as_messages=True)
        with sequence.message_appender as appender:
            appender.append("msg1")
            raise ValueError("error1")

        collected = await collect_sequence(sequence.sequence_promise, collect)
        assert collected == [TextMessage("msg1"), ErrorMessage("ValueError: error1")]
        assert type(collected[-1]) is ErrorMessage
        promises = [promise async for promise in sequence.sequence_promise]
        assert issubclass(promises[-1].message_class, ErrorMessage)


@COLLECT
@START_SOON
async def test_message_sequence_token_error_to_message(collect: str, start_soon: bool | Sentinel) -> None:
    async with MiniAgents():
        sequence = MessageSequence(start_soon=start_soon, errors_as_messages=True)
        with sequence.message_appender as appender:
            appender.append("msg1")
            with MessageTokenAppender(capture_errors=True) as token_appender:
                appender.append(Message.promise(message_token_streamer=token_appender))
                token_appender.append("token1")
                token_appender.append("token2")
                raise ValueError("error1")

        collected = await collect_sequence(sequence.sequence_promise, collect)
        if collect == "tokens":
            assert collected == [
                TextMessage("msg1"),
                TextToken("token1"),
                TextToken("token2"),
                TextToken("\nValueError: error1"),
            ]
        else:
            assert collected == [TextMessage("msg1"), ErrorMessage("token1token2\nValueError: error1")]
        promises = [promise async for promise in sequence.sequence_promise]
        assert promises[-1].message_class is Message  # only the resolved object is an ErrorMessage
        assert type(await promises[-1]) is ErrorMessage


@START_SOON
async def test_token_error_is_raised_without_conversion(start_soon: bool | Sentinel) -> None:
    async with MiniAgents():
        sequence = MessageSequence(start_soon=start_soon, errors_as_messages=False)
        with sequence.message_appender as appender, MessageTokenAppender(capture_errors=True) as token_appender:
            appender.append(TextMessage.promise(message_token_streamer=token_appender))
            token_appender.append("token1")
            raise ValueError("token broke")
        promises = [promise async for promise in sequence.sequence_promise]
        assert len(promises) == 1
        with pytest.raises(ValueError, match="token broke"):
            await sequence.sequence_promise
        with pytest.raises(ValueError, match="token broke"):
            await promises[0]


async def test_error_tracebacks_in_messages() -> None:
    async with MiniAgents(errors_as_messages=True, error_tracebacks_in_messages=True):
        sequence = MessageSequence(appender_capture_errors=True)
        with sequence.message_appender:
            raise ValueError("deep error")
        (message,) = await sequence.sequence_promise
    assert isinstance(message, ErrorMessage)
    assert message.content is not None
    assert message.content.startswith("Traceback (most recent call last):")
    assert message.content.rstrip("\n").endswith("\nValueError: deep error")


@START_SOON
async def test_message_promises_come_before_their_tokens_are_complete(start_soon: bool | Sentinel) -> None:
    async with MiniAgents():
        sequence = MessageSequence(start_soon=start_soon)
        appender = sequence.message_appender.open()
        token_appender = MessageTokenAppender().open()
        appender.append(TextMessage.promise(message_token_streamer=token_appender))
        token_appender.append("first token")

        iterator = aiter(sequence.sequence_promise)
        first_message = await anext(iterator)
        tokens = aiter(first_message)
        assert str(await anext(tokens)) == "first token"

        # Neither the rest of message 1 nor message 2 exists yet.
        token_appender.append(" second token")
        token_appender.close()
        appender.append("message 2")
        appender.close()
        assert str(await first_message) == "first token second token"
        assert await (await anext(iterator)) == TextMessage("message 2")
        assert await sequence.sequence_promise == (
            TextMessage("first token second token"),
            TextMessage("message 2"),
        )


# --- input normalization (E1-E13) ----------------------------------------------------------------


async def test_strings_dicts_and_models_become_messages() -> None:
    async with MiniAgents():
        messages = await sequence_of(["text", {"content": "d", "k": 2}, Point(a=1, b="x")])
    assert messages == (TextMessage("text"), Message(content="d", k=2), Message(a=1, b="x"))
    assert [type(message) for message in messages] == [TextMessage, Message, Message]


async def test_messages_and_message_promises_are_passed_through() -> None:
    message = TextMessage("as is")
    async with MiniAgents():
        promise = TextMessage.promise("promised")
        sequence = sequence_of([message, promise])
        promises = [item async for item in sequence]
        assert promises == [message.as_promise, promise]
        assert promises[0] is message.as_promise
        assert promises[1] is promise


async def test_nested_sync_iterables_are_flattened_in_order() -> None:
    def generator() -> Iterator[Any]:
        yield "g1"
        yield ["g2", ("g3",)]

    async with MiniAgents():
        messages = await sequence_of([["a", ["b"]], (), [[TextMessage("deep")]], generator()])
    assert [str(message) for message in messages] == ["a", "b", "deep", "g1", "g2", "g3"]


async def test_sync_generators_are_drained_at_append_time() -> None:
    drained: list[str] = []

    def generator() -> Iterator[str]:
        drained.append("drained")
        yield "from generator"

    async with MiniAgents():
        sequence = MessageSequence(start_soon=False)
        appender = sequence.message_appender.open()
        appender.append(generator())
        assert drained == ["drained"]
        appender.close()
        assert await sequence.sequence_promise == (TextMessage("from generator"),)


async def test_async_iterators_are_consumed_lazily_with_a_warning() -> None:
    pulled: list[str] = []

    async def agen() -> AsyncIterator[Any]:
        pulled.append("pulled")
        yield "ag1"
        yield ["ag2", {"content": "ag3"}]

    async with MiniAgents() as mini_agents:
        sequence = MessageSequence(start_soon=False)
        with sequence.message_appender as appender, pytest.warns(UserWarning, match=ASYNC_ITERATOR_WARNING):
            appender.append(agen())
        await mini_agents.aflush_tasks()
        assert pulled == []
        assert await sequence.sequence_promise == (
            TextMessage("ag1"),
            TextMessage("ag2"),
            Message(content="ag3"),
        )
        assert pulled == ["pulled"]


async def test_streamed_promises_are_iterated_without_a_warning() -> None:
    async with MiniAgents():
        inner = sequence_of(["inner"])
        assert await sequence_of(["outer", inner]) == (TextMessage("outer"), TextMessage("inner"))


async def test_a_sync_iterable_wins_over_an_async_iterable() -> None:
    class Both:
        def __iter__(self) -> Iterator[str]:
            return iter(["sync"])

        def __aiter__(self) -> AsyncIterator[str]:
            raise AssertionError("the async side must not be used")

    async with MiniAgents():
        assert await sequence_of(Both()) == (TextMessage("sync"),)


async def test_an_exception_item_is_raised_at_its_position() -> None:
    async with MiniAgents():
        sequence = MessageSequence()
        with sequence.message_appender as appender:
            appender.append("one")
            appender.append(ValueError("in the input"))
            appender.append("two")
        assert await outcomes_of(sequence.sequence_promise) == [
            TextMessage("one"),
            "raised ValueError: in the input",
            TextMessage("two"),
        ]
        # Inside one appended list, the rest of that list is abandoned after the exception (D5).
        assert await outcomes_of(sequence_of(["one", ValueError("in a list"), "lost"])) == [
            TextMessage("one"),
            "raised ValueError: in a list",
        ]


async def _coroutine() -> None:
    pass


@pytest.mark.parametrize("bad", ["none", "int", "coroutine", "promise"])
async def test_bad_input_raises_type_error_at_append(bad: str) -> None:
    async with MiniAgents():
        coroutine = _coroutine()
        bad_items: dict[str, Any] = {
            "none": ["ok", None],
            "int": 42,
            "coroutine": coroutine,
            "promise": Promise(prefill_result=1),
        }
        sequence = MessageSequence()
        with sequence.message_appender as appender:
            with pytest.raises(TypeError, match="Unexpected message type"):
                appender.append(bad_items[bad])
            appender.append("still open")
        coroutine.close()
        assert await sequence.sequence_promise == (TextMessage("still open"),)


async def test_bad_input_to_turn_into_sequence_promise_surfaces_on_await() -> None:
    async with MiniAgents():
        sequence = sequence_of(["ok", 42])
        with pytest.raises(TypeError, match="Unexpected message type"):
            await sequence


async def test_turn_into_sequence_promise_returns_a_sequence_promise_as_is() -> None:
    async with MiniAgents():
        sequence = sequence_of("x")
        assert sequence_of(sequence) is sequence
        assert isinstance(sequence, MessageSequencePromise)


async def test_full_input_normalization_example() -> None:
    def gen() -> Iterator[str]:
        yield "g1"
        yield "g2"

    async def agen() -> AsyncIterator[Any]:
        yield "ag1"
        yield ["ag2", {"content": "ag3"}]

    async with MiniAgents():
        with pytest.warns(UserWarning, match=ASYNC_ITERATOR_WARNING):
            messages = await sequence_of(
                [
                    "s",
                    {"content": "d", "k": 2},
                    Point(a=1, b="x"),
                    TextMessage("tm"),
                    Message(x=1),
                    TextMessage.promise("promised", extra=1),
                    [["deep"]],
                    gen(),
                    agen(),
                    echo.trigger("echoed"),
                ]
            )
    assert messages == (
        TextMessage("s"),
        Message(content="d", k=2),
        Message(a=1, b="x"),
        TextMessage("tm"),
        Message(x=1),
        TextMessage("promised", extra=1),
        TextMessage("deep"),
        TextMessage("g1"),
        TextMessage("g2"),
        TextMessage("ag1"),
        TextMessage("ag2"),
        Message(content="ag3"),
        TextMessage("echoed"),
    )


# --- the appender --------------------------------------------------------------------------------


async def test_message_sequence_appender_open_and_close() -> None:
    async with MiniAgents():
        sequence = MessageSequence()
        appender = sequence.message_appender
        with pytest.raises(AppenderNotOpenError):
            appender.append("too early")
        with appender:
            assert appender.was_open
            assert appender.is_open
            appender.append("in order")
            appender.inject_out_of_order("out of order")
        assert not appender.is_open
        with pytest.raises(AppenderClosedError):
            appender.append("too late")
        assert sorted(str(message) for message in await sequence.sequence_promise) == [
            "in order",
            "out of order",
        ]


async def test_a_sequence_yields_message_promises() -> None:
    async with MiniAgents():
        sequence = sequence_of(["a", "b"])
        promises = [promise async for promise in sequence]
        assert [type(promise) for promise in promises] == [MessagePromise, MessagePromise]
