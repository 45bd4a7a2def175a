"""MessagePromise and MessageTokenAppender: tokens first, the whole message on await (G1-G7, C5)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel

from brokeragents import (
    NO_VALUE,
    AppenderNotOpenError,
    Message,
    MessagePromise,
    MessageSequence,
    MessageTokenAppender,
    MiniAgents,
    NoActiveContextError,
    PromisingContext,
    Sentinel,
    TextMessage,
    TextToken,
    Token,
    as_single_text_promise,
)

START_SOON = pytest.mark.parametrize("start_soon", [True, False, NO_VALUE], ids=["soon", "lazy", "default"])


class Logprob(BaseModel):
    content: str
    logprob: float


async def collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [piece async for piece in iterator]


def test_messages_need_no_context_but_promises_do() -> None:
    message = TextMessage("hi")
    assert message.hash_key == "10ef4055699791e5e292fa4246b7c41cdb4b573b"
    with pytest.raises(NoActiveContextError):
        MessageTokenAppender()
    with pytest.raises(NoActiveContextError):
        TextMessage.promise("hi")


@START_SOON
async def test_streamed_text_message_from_a_token_function(start_soon: bool | Sentinel) -> None:
    async def streamer(aux_fields: dict[str, Any]) -> AsyncIterator[Any]:
        yield "Hel"
        yield TextToken("lo")
        aux_fields["finish_reason"] = "stop"

    async with PromisingContext():
        promise = TextMessage.promise(start_soon=start_soon, message_token_streamer=streamer, role="assistant")
        assert promise.message_class is TextMessage
        assert promise.known_beforehand["role"] == "assistant"  # known before any token
        # Raw strings from a token function become TextTokens (MiniAgents passes them through as str).
        assert await collect(aiter(promise)) == [TextToken("Hel"), TextToken("lo")]
        message = await promise
        assert message == TextMessage("Hello", role="assistant", finish_reason="stop")
        assert await promise is message


@START_SOON
async def test_known_beforehand_wins_over_auxiliary_fields(start_soon: bool | Sentinel) -> None:
    async with PromisingContext():
        with MessageTokenAppender() as appender:
            promise = TextMessage.promise(
                start_soon=start_soon, message_token_streamer=appender, model="known", role="assistant"
            )
            appender.append("Hel")
            appender.append(TextToken("lo", logprob=0.1))
            appender.append({"content": "!"})
            appender.auxiliary_field_collector["model"] = "aux-model"
            appender.auxiliary_field_collector["finish_reason"] = "stop"
        message = await promise
        # A dict token is a base Token, whose str() is its JSON: MiniAgents does the same.
        assert message["content"] == 'Hello{"class_":"Token","content":"!"}'
        assert message["model"] == "known"
        assert message["role"] == "assistant"
        assert message["finish_reason"] == "stop"


async def test_token_appender_normalizes_what_is_appended() -> None:
    async with PromisingContext():
        with MessageTokenAppender() as appender:
            promise = TextMessage.promise(message_token_streamer=appender)
            appender.append("text")
            appender.append({"content": "from a dict"})
            appender.append(Logprob(content="from a model", logprob=0.5))
            appender.append(TextToken("token"))
        tokens = await collect(aiter(promise))
        assert tokens == [
            TextToken("text"),
            Token(content="from a dict"),
            Token(content="from a model", logprob=0.5),
            TextToken("token"),
        ]
        expected_types: list[type[Token]] = [TextToken, Token, Token, TextToken]
        assert [type(token) for token in tokens] == expected_types


async def test_token_appender_must_be_opened_before_the_promise_takes_it() -> None:
    async with PromisingContext():
        with pytest.raises(AppenderNotOpenError):
            TextMessage.promise(message_token_streamer=MessageTokenAppender())


@START_SOON
async def test_base_message_does_not_support_token_streaming(start_soon: bool | Sentinel) -> None:
    async def streamer(_aux_fields: dict[str, Any]) -> AsyncIterator[str]:
        yield "token"

    async with PromisingContext():
        promise = Message.promise(start_soon=start_soon, message_token_streamer=streamer)
        with pytest.raises(TypeError, match="Message does not support token streaming"):
            await promise


@START_SOON
async def test_token_error_reaches_token_consumers_and_await(start_soon: bool | Sentinel) -> None:
    async with PromisingContext():
        with MessageTokenAppender(capture_errors=True) as appender:
            promise = TextMessage.promise(start_soon=start_soon, message_token_streamer=appender)
            appender.append("token1")
            raise ValueError("token error")
        received: list[Any] = []
        with pytest.raises(ValueError, match="token error"):
            async for token in promise:
                received.append(token)
        assert received == [TextToken("token1")]
        with pytest.raises(ValueError, match="token error"):
            await promise


async def test_prefilled_message_streams_itself_as_the_only_token() -> None:
    message = Message(content="whole", extra=1)
    async with PromisingContext():
        promise = message.as_promise
        assert promise is message.as_promise  # cached
        assert promise.known_beforehand is message
        assert promise.message_class is Message
        assert await collect(aiter(promise)) == [message]
        assert await promise is message


async def test_promise_without_streamer_is_prefilled() -> None:
    async with PromisingContext():
        promise = TextMessage.promise("hello", mood="good")
        assert await promise == TextMessage("hello", mood="good")
        assert [str(token) for token in await collect(aiter(promise))] == ["hello"]


@START_SOON
async def test_tokens_and_whole_message_replay_in_any_order(start_soon: bool | Sentinel) -> None:
    streamer_runs = 0

    async def streamer(_aux_fields: dict[str, Any]) -> AsyncIterator[str]:
        nonlocal streamer_runs
        streamer_runs += 1
        yield "a"
        yield "b"

    async with PromisingContext():
        promise = TextMessage.promise(start_soon=start_soon, message_token_streamer=streamer)
        assert str(await promise) == "ab"
        assert "".join(str(token) for token in await collect(aiter(promise))) == "ab"
        assert "".join(str(token) for token in await collect(aiter(promise))) == "ab"
        assert streamer_runs == 1


async def test_message_promise_needs_a_source() -> None:
    async with PromisingContext():
        with pytest.raises(ValueError):
            MessagePromise()


# --- as_single_text_promise (G6) ---------------------------------------------------------------


async def test_as_single_text_promise_joins_messages_with_a_delimiter() -> None:
    two = TextMessage("\n\ntwo", k=1)
    async with MiniAgents():
        promise = as_single_text_promise(["one", two, "three"])
        tokens = await collect(aiter(promise))
        message = await promise
    assert "".join(str(token) for token in tokens) == "one\n\n\n\ntwo\n\nthree"
    assert isinstance(message, TextMessage)
    assert message["content"] == "one\n\n\n\ntwo\n\nthree"
    assert message["k"] == 1
    assert message["original_messages"] == (TextMessage("one"), two, TextMessage("three"))
    assert message["original_messages"][1] is two


async def test_as_single_text_promise_options() -> None:
    # MiniAgents 0.0.35 ignores strip_leading_newlines; we strip as it documents.
    async with MiniAgents():
        stripped = await as_single_text_promise(
            ["one", TextMessage("\n\ntwo", k=1), "three"],
            delimiter=" | ",
            strip_leading_newlines=True,
            reference_original_messages=False,
            topic="known",
        )
    assert stripped["content"] == "one | two | three"
    assert stripped["topic"] == "known"
    assert "original_messages" not in stripped


async def test_as_single_text_promise_later_metadata_wins() -> None:
    async with MiniAgents():
        message = await as_single_text_promise([TextMessage("a", k=1, x="x"), TextMessage("b", k=2)])
    assert message["content"] == "a\n\nb"
    assert message["k"] == 2
    assert message["x"] == "x"


async def test_as_single_text_promise_is_lazy_by_default() -> None:
    pulled: list[str] = []

    async def messages() -> AsyncIterator[str]:
        pulled.append("pulled")
        yield "only"

    async with MiniAgents() as mini_agents:
        # The warning may come at creation or at resolution: the input is converted lazily.
        with pytest.warns(UserWarning, match="async iterator"):
            promise = as_single_text_promise(messages())
            await mini_agents.aflush_tasks()
            assert pulled == []
            assert str(await promise) == "only"
        assert pulled == ["pulled"]


async def test_message_sequence_promise_as_single_text_promise() -> None:
    async with MiniAgents():
        sequence = MessageSequence.turn_into_sequence_promise(["x", "y"])
        assert str(await sequence.as_single_text_promise(delimiter="-")) == "x-y"
