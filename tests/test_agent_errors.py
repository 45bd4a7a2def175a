"""Errors in agents: position in the reply, propagation, errors as messages and logging (I1-I7, A8)."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest

from brokeragents import (
    ErrorMessage,
    InteractionContext,
    MessageSequencePromise,
    MessageTokenAppender,
    MiniAgents,
    TextMessage,
    miniagent,
)
from test_agents import OUT_OF_ORDER_REPLIES, Progress, agent_tree


@miniagent
async def failing(ctx: InteractionContext, out_of_order: bool = False) -> None:
    ctx.reply("before 1", out_of_order=out_of_order)
    ctx.reply("before 2", out_of_order=out_of_order)
    raise ValueError("agent failed")


async def outcomes_of(sequence: MessageSequencePromise) -> list[str]:
    """Every message's text, or the raised exception, iterating past exceptions to the end."""
    outcomes: list[str] = []
    iterator = aiter(sequence)
    while True:
        try:
            promise = await anext(iterator)
        except StopAsyncIteration:
            return outcomes
        except Exception as exc:
            outcomes.append(f"raised {type(exc).__name__}: {exc}")
        else:
            outcomes.append(str(await promise))


def logged_errors(caplog: pytest.LogCaptureFixture, text: str) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.exc_info is not None and str(record.exc_info[1]) == text]


@pytest.mark.parametrize("agent4_out_of_order", [False, True], ids=["agent4_in_order", "agent4_ooo"])
@pytest.mark.parametrize("errors_as_messages", [False, True], ids=["raise", "as_messages"])
@pytest.mark.parametrize("soon_by_default", [True, False], ids=["soon", "lazy"])
async def test_agents_reply_out_of_order_exception(
    agent4_out_of_order: bool, errors_as_messages: bool, soon_by_default: bool
) -> None:
    # Unlike MiniAgents, agent 4's out-of-order replies need no sleep before the error to be seen (I6).
    progress = Progress()
    tree = agent_tree(progress, raise_error=True, agent4_out_of_order=agent4_out_of_order)
    async with (
        asyncio.timeout(10),
        MiniAgents(start_everything_soon_by_default=soon_by_default, errors_as_messages=errors_as_messages),
    ):
        replies = tree.trigger()
        received: list[str] = []

        async def consume() -> None:
            async for promise in replies:
                received.append(str(await promise))
                progress.mark(received[-1])

        if errors_as_messages:
            await consume()
            assert received == [
                *OUT_OF_ORDER_REPLIES[:12],
                "ValueError: agent 4 EXCEPTION",
                "agent 1 msg 3",
                "agent 1 msg 4",
            ]
            assert type((await replies)[12]) is ErrorMessage
        else:
            with pytest.raises(ValueError, match="agent 4 EXCEPTION"):
                await consume()
            assert received == OUT_OF_ORDER_REPLIES[:12]
            with pytest.raises(ValueError, match="agent 4 EXCEPTION"):
                await replies


async def test_the_error_comes_after_the_replies_already_made(caplog: pytest.LogCaptureFixture) -> None:
    async with MiniAgents():
        replies = failing.trigger()  # the caller's trigger never raises the callee's error
        assert await outcomes_of(replies) == ["before 1", "before 2", "raised ValueError: agent failed"]
        with pytest.raises(ValueError, match="agent failed"):
            await replies
    records = logged_errors(caplog, "agent failed")
    assert len(records) == 1
    assert records[0].levelno == logging.ERROR
    assert records[0].getMessage() == "AN ERROR OCCURRED IN AN ASYNC BACKGROUND TASK"


async def test_out_of_order_replies_made_before_an_error_come_before_it() -> None:
    async with MiniAgents():
        received: list[str] = []
        with pytest.raises(ValueError, match="agent failed"):
            async for promise in failing.trigger(out_of_order=True):
                received.append(str(await promise))
        assert received == ["before 1", "before 2"]


@miniagent
async def middle(ctx: InteractionContext) -> None:
    ctx.reply(failing.trigger())
    ctx.reply("middle after")


@miniagent
async def top(ctx: InteractionContext) -> None:
    ctx.reply(middle.trigger())
    ctx.reply("top after")


async def test_the_error_crosses_levels_and_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async with MiniAgents():
        # The rest of the failed nested sequence (from the parent's point of view) is abandoned (D5).
        assert await outcomes_of(top.trigger()) == [
            "before 1",
            "before 2",
            "raised ValueError: agent failed",
            "top after",
        ]
    assert len(logged_errors(caplog, "agent failed")) == 1


async def test_with_errors_as_messages_the_nested_sequence_goes_on(caplog: pytest.LogCaptureFixture) -> None:
    async with MiniAgents(errors_as_messages=True):
        assert await outcomes_of(top.trigger()) == [
            "before 1",
            "before 2",
            "ValueError: agent failed",
            "middle after",
            "top after",
        ]
    assert logged_errors(caplog, "agent failed") == []


async def test_log_level_for_errors(caplog: pytest.LogCaptureFixture) -> None:
    async with MiniAgents(log_level_for_errors=logging.WARNING):
        with pytest.raises(ValueError):
            await failing.trigger()
    (record,) = logged_errors(caplog, "agent failed")
    assert record.levelno == logging.WARNING


async def test_errors_as_messages_per_call(caplog: pytest.LogCaptureFixture) -> None:
    async with MiniAgents():
        replies = failing.trigger(errors_as_messages=True)
        messages = await replies
        assert messages == (TextMessage("before 1"), TextMessage("before 2"), ErrorMessage("ValueError: agent failed"))
        assert type(messages[2]) is ErrorMessage
        # The same call without conversion still raises.
        with pytest.raises(ValueError):
            await failing.trigger(errors_as_messages=False)
    # A converted error is not logged; only the unconverted one is.
    assert len(logged_errors(caplog, "agent failed")) == 1


async def test_errors_as_messages_context_default_can_be_switched_off_per_call() -> None:
    async with MiniAgents(errors_as_messages=True):
        assert str((await failing.trigger())[-1]) == "ValueError: agent failed"
        with pytest.raises(ValueError, match="agent failed"):
            await failing.trigger(errors_as_messages=False)


async def test_error_tracebacks_in_messages() -> None:
    async with MiniAgents(errors_as_messages=True, error_tracebacks_in_messages=True):
        *_, error = await failing.trigger()
    assert isinstance(error, ErrorMessage)
    assert str(error).startswith("Traceback (most recent call last):")
    assert 'raise ValueError("agent failed")' in str(error)
    assert "ValueError: agent failed\nAgent trace: FAILING" in str(error)  # I3: traceback plus agent trace


async def test_a_token_error_in_a_reply_becomes_an_error_message() -> None:
    @miniagent
    async def streaming(ctx: InteractionContext) -> None:
        with MessageTokenAppender(capture_errors=True) as appender:
            ctx.reply(TextMessage.promise(message_token_streamer=appender))
            appender.append("partial")
            raise ValueError("stream broke")

    async with MiniAgents(errors_as_messages=True):
        promises = [promise async for promise in streaming.trigger()]
        assert len(promises) == 1
        assert [str(token) async for token in promises[0]] == ["partial", "\nValueError: stream broke"]
        assert await promises[0] == ErrorMessage("partial\nValueError: stream broke")
    async with MiniAgents():
        with pytest.raises(ValueError, match="stream broke"):
            await streaming.trigger()


async def test_an_error_after_finish_early_is_only_logged(caplog: pytest.LogCaptureFixture) -> None:
    @miniagent
    async def early(ctx: InteractionContext) -> None:
        ctx.reply("done")
        await ctx.afinish_early()
        raise ValueError("after finishing")

    async with MiniAgents():
        assert await early.trigger() == (TextMessage("done"),)
    assert len(logged_errors(caplog, "after finishing")) == 1


async def test_an_error_in_a_waited_awaitable_fails_the_reply() -> None:
    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        async def background() -> None:
            raise ValueError("background failed")

        ctx.make_sure_to_wait(background())
        ctx.reply("replied")

    async with MiniAgents():
        assert await outcomes_of(agent.trigger()) == ["replied", "raised ValueError: background failed"]


async def test_trigger_with_bad_input_raises_and_the_context_exits_cleanly() -> None:
    received: list[Any] = []

    @miniagent
    async def listener(ctx: InteractionContext) -> None:
        received.append(await ctx.message_promises)

    async with asyncio.timeout(10):  # MiniAgents hangs here forever (A8)
        async with MiniAgents():
            with pytest.raises(TypeError, match="Unexpected message type"):
                listener.trigger(["ok", 42])
    # The agent had started; its input was closed with nothing in it, so it did not wait forever.
    assert received == [()]


async def test_a_message_error_in_the_input_reaches_the_agent_not_the_caller() -> None:
    @miniagent
    async def reader(ctx: InteractionContext) -> None:
        async for promise in ctx.message_promises:
            ctx.reply(f"read {await promise}")

    async with MiniAgents():
        assert await outcomes_of(reader.trigger(["one", ValueError("bad input")])) == [
            "read one",
            "raised ValueError: bad input",
        ]
