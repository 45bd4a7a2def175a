"""Agents and their calls: scheduling, ordering, full duplex, kwargs and the call lifecycle (A5-A7, D3-D4, E, H)."""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import AsyncIterator
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict, ValidationError

from brokeragents import (
    NO_VALUE,
    AgentCall,
    AppenderClosedError,
    Frozen,
    InteractionContext,
    Message,
    MessageSequencePromise,
    MiniAgent,
    MiniAgents,
    Sentinel,
    TextMessage,
    display_agent_trace,
    miniagent,
)

START_SOON = pytest.mark.parametrize("start_soon", [True, False, NO_VALUE], ids=["soon", "lazy", "default"])
SOON_BY_DEFAULT = pytest.mark.parametrize("soon_by_default", [True, False], ids=["soon", "lazy"])


@miniagent
async def echo(ctx: InteractionContext) -> None:
    ctx.reply(ctx.message_promises)


def texts(messages: tuple[Message, ...] | list[Message]) -> list[str]:
    return [str(message) for message in messages]


# --- the decorator (H1) and aliases --------------------------------------------------------------


def test_default_alias_is_the_normalized_name() -> None:
    async def MyCamelAgent(ctx: InteractionContext) -> None:
        pass

    async def OpenAIAgent(ctx: InteractionContext) -> None:
        pass

    assert echo.alias == "ECHO"
    assert miniagent(MyCamelAgent).alias == "MY_CAMEL_AGENT"
    assert miniagent(OpenAIAgent).alias == "OPENAI_AGENT"
    assert miniagent(OpenAIAgent, normalize_func_or_class_name=False).alias == "OpenAIAgent"
    assert miniagent(alias="CUSTOM")(OpenAIAgent).alias == "CUSTOM"


def test_description_comes_from_the_docstring_with_the_alias_substituted() -> None:
    @miniagent
    async def helper(ctx: InteractionContext) -> None:
        """I am   {AGENT_ALIAS},
        a helper."""

    assert helper.description == "I am HELPER, a helper."
    assert helper.wrapped_func_or_class is not None
    assert helper.serialize() == {"alias": "HELPER", "class_": "MiniAgent"}


def test_only_async_functions_and_classes_can_be_agents() -> None:
    def sync_function(ctx: InteractionContext) -> None:
        pass

    class SyncCall:
        def __call__(self) -> None:
            pass

    with pytest.raises(ValueError):
        miniagent(sync_function)
    with pytest.raises(ValueError):
        miniagent(SyncCall)


async def test_class_based_agents_get_ctx_and_kwargs_as_keywords() -> None:
    class Greeter(BaseModel):
        model_config = ConfigDict(arbitrary_types_allowed=True)

        ctx: InteractionContext
        greeting: str
        name: str

        async def __call__(self) -> None:
            self.ctx.reply(f"{self.greeting}, {self.name}")

    greeter = miniagent(greeting="hello")(Greeter)
    assert greeter.alias == "GREETER"
    async with MiniAgents():
        assert texts(await greeter.trigger(name="Bob")) == ["hello, Bob"]


# --- scheduling (A5-A7) ----------------------------------------------------------------------------


async def test_trigger_never_runs_the_agent_synchronously() -> None:
    events: list[str] = []

    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        events.append("body")

    async with MiniAgents() as mini_agents:
        replies = agent.trigger()
        assert isinstance(replies, MessageSequencePromise)
        assert events == []
        await mini_agents.aflush_tasks()
        assert events == ["body"]


async def test_a_lazy_agent_runs_only_when_its_replies_are_consumed() -> None:
    events: list[str] = []

    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        events.append("body")
        ctx.reply("done")

    async with MiniAgents() as mini_agents:
        replies = agent.trigger(start_soon=False)
        never_consumed = agent.trigger(start_soon=False)
        await mini_agents.aflush_tasks()
        assert events == []
        assert texts(await replies) == ["done"]
        assert events == ["body"]
    assert events == ["body"]  # the other call was never consumed, so it never ran
    assert never_consumed is not replies


async def test_context_exit_finishes_open_calls_and_waits_for_agents() -> None:
    received: list[str] = []

    @miniagent
    async def listener(ctx: InteractionContext) -> None:
        async for promise in ctx.message_promises:
            received.append(str(await promise))
        received.append("input closed")

    async with MiniAgents():
        call = listener.initiate_call()
        call.send_message("one")
        assert not call.is_finished
    assert received == ["one", "input closed"]
    assert call.is_finished


def test_run_agent_triggers_and_awaits() -> None:
    assert texts(MiniAgents().run_agent(echo, ["a", "b"])) == ["a", "b"]


@pytest.mark.parametrize(
    ("start_soon", "expected"),
    [
        (True, ["start 1", "start 2", "end 1", "end 2"]),
        (NO_VALUE, ["start 1", "start 2", "end 1", "end 2"]),
        (False, ["start 1", "end 1", "start 2", "end 2"]),
    ],
    ids=["soon", "default", "lazy"],
)
async def test_agents_run_in_parallel(start_soon: bool | Sentinel, expected: list[str]) -> None:
    events: list[str] = []

    @miniagent
    async def agent(ctx: InteractionContext, number: int) -> None:
        events.append(f"start {number}")
        await asyncio.sleep(0.1)
        events.append(f"end {number}")

    async with MiniAgents():
        replies1 = agent.trigger(number=1, start_soon=start_soon)
        replies2 = agent.trigger(number=2, start_soon=start_soon)
        await replies1
        await replies2
    assert events == expected


@pytest.mark.parametrize(
    ("start_soon", "expected"),
    [
        (True, ["start 1", "start 2", "end 1", "end 2"]),
        (NO_VALUE, ["start 1", "start 2", "end 1", "end 2"]),
        (False, ["start 1", "end 1", "start 2", "end 2"]),
    ],
    ids=["soon", "default", "lazy"],
)
async def test_sub_agents_run_in_parallel(start_soon: bool | Sentinel, expected: list[str]) -> None:
    events: list[str] = []

    @miniagent
    async def agent(ctx: InteractionContext, number: int) -> None:
        events.append(f"start {number}")
        await asyncio.sleep(0.1)
        events.append(f"end {number}")
        ctx.reply(f"reply {number}")

    @miniagent
    async def aggregator(ctx: InteractionContext) -> None:
        ctx.reply(
            [
                agent.trigger(number=1, start_soon=start_soon),
                agent.trigger(number=2, start_soon=start_soon),
            ]
        )

    async with MiniAgents():
        assert texts(await aggregator.trigger(start_soon=start_soon)) == ["reply 1", "reply 2"]
    assert events == expected


# --- ordering (D3, D4) ---------------------------------------------------------------------------


@pytest.mark.parametrize("out_of_order", [False, True], ids=["in_order", "out_of_order"])
@pytest.mark.parametrize("raw_strings", [False, True], ids=["messages", "strings"])
@START_SOON
async def test_agent_multiple_replies_without_task_switching(
    out_of_order: bool, raw_strings: bool, start_soon: bool | Sentinel
) -> None:
    def message(text: str) -> str | TextMessage:
        return text if raw_strings else TextMessage(text)

    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        ctx.reply(message("msg1"), out_of_order=out_of_order)
        ctx.reply(message("msg2"), out_of_order=out_of_order)
        ctx.reply([message("msg3"), message("msg4")], out_of_order=out_of_order)
        ctx.reply(message("msg5"), out_of_order=out_of_order)
        ctx.reply(message("msg6"), out_of_order=out_of_order)

    async with MiniAgents():
        replies = await agent.trigger(start_soon=start_soon)
    assert replies == tuple(TextMessage(f"msg{i}") for i in range(1, 7))


class Progress:
    """What the consumer has received so far: agents wait on it, instead of sleeping, to interleave."""

    def __init__(self) -> None:
        self._seen: defaultdict[str, asyncio.Event] = defaultdict(asyncio.Event)

    def mark(self, text: str) -> None:
        self._seen[text].set()

    async def wait_for(self, text: str) -> None:
        await self._seen[text].wait()


def agent_tree(progress: Progress, *, raise_error: bool = False, agent4_out_of_order: bool = False) -> MiniAgent:
    """Four nested agents mixing ``reply`` and ``reply_out_of_order``; returns the top one.

    Each later group of replies waits until the consumer has seen the previous group, so the
    interleaving is the one MiniAgents' sleep-paced test produces, without depending on timing.
    """

    @miniagent
    async def agent4(ctx: InteractionContext) -> None:
        await progress.wait_for("agent 3 post 4")
        ctx.reply("agent 4 msg 1", out_of_order=agent4_out_of_order)
        ctx.reply("agent 4 msg 2", out_of_order=agent4_out_of_order)
        if raise_error:
            raise ValueError("agent 4 EXCEPTION")

    @miniagent
    async def agent3(ctx: InteractionContext) -> None:
        ctx.reply(agent4.trigger())
        await progress.wait_for("agent 2 PRE 2")
        ctx.reply_out_of_order("agent 3 PRE 1")
        ctx.reply_out_of_order("agent 3 PRE 2")
        await progress.wait_for("agent 2 post 4")
        ctx.reply_out_of_order("agent 3 post 3")
        ctx.reply_out_of_order("agent 3 post 4")

    @miniagent
    async def agent2(ctx: InteractionContext) -> None:
        ctx.reply(agent3.trigger())
        ctx.reply_out_of_order("agent 2 PRE 1")
        ctx.reply_out_of_order("agent 2 PRE 2")
        await progress.wait_for("agent 3 PRE 2")
        ctx.reply_out_of_order("agent 2 post 3")
        ctx.reply_out_of_order("agent 2 post 4")

    @miniagent
    async def agent1(ctx: InteractionContext) -> None:
        ctx.reply("agent 1 msg 1")
        ctx.reply("agent 1 msg 2")
        ctx.reply(agent2.trigger())
        ctx.reply("agent 1 msg 3")
        ctx.reply("agent 1 msg 4")

    return agent1


OUT_OF_ORDER_REPLIES = [
    "agent 1 msg 1",
    "agent 1 msg 2",
    "agent 2 PRE 1",
    "agent 2 PRE 2",
    "agent 3 PRE 1",
    "agent 3 PRE 2",
    "agent 2 post 3",
    "agent 2 post 4",
    "agent 3 post 3",
    "agent 3 post 4",
    "agent 4 msg 1",
    "agent 4 msg 2",
    "agent 1 msg 3",
    "agent 1 msg 4",
]


@SOON_BY_DEFAULT
async def test_agents_reply_out_of_order(soon_by_default: bool) -> None:
    progress = Progress()
    async with asyncio.timeout(10), MiniAgents(start_everything_soon_by_default=soon_by_default):
        replies = agent_tree(progress).trigger()
        streamed: list[str] = []
        async for promise in replies:
            streamed.append(str(await promise))
            progress.mark(streamed[-1])
        assert streamed == OUT_OF_ORDER_REPLIES
        assert texts(await replies) == OUT_OF_ORDER_REPLIES


async def test_send_out_of_order_overtakes_blocked_input() -> None:
    gate = asyncio.Event()

    async def blocked() -> AsyncIterator[str]:
        await gate.wait()
        yield "ordered 2"

    @miniagent
    async def recorder(ctx: InteractionContext) -> None:
        async for promise in ctx.message_promises:
            message = await promise
            ctx.reply(message)
            if str(message) == "out of order":
                gate.set()

    async with MiniAgents():
        call = recorder.initiate_call()
        call.send_message("ordered 1")
        with pytest.warns(UserWarning, match="async iterator"):
            call.send_message(blocked())
        call.send_message("ordered 3")
        call.send_out_of_order("out of order")
        replies = await call.reply_sequence()
    assert texts(replies) == ["ordered 1", "out of order", "ordered 2", "ordered 3"]


async def test_out_of_order_input_does_not_disturb_the_ordered_input() -> None:
    async with MiniAgents():
        call = echo.initiate_call()
        call.send_message("a").send_out_of_order("b").send_message(["c", "d"])
        assert call.reply_sequence(finish_call=False) is call.reply_sequence()
        replies = texts(await call.reply_sequence())
    assert sorted(replies) == ["a", "b", "c", "d"]
    assert [text for text in replies if text != "b"] == ["a", "c", "d"]


# --- messages in agents (E10, E11, E14, G5) --------------------------------------------------------


async def test_trigger_with_no_messages_sends_no_input() -> None:
    async with MiniAgents():
        assert await echo.trigger() == ()
        assert await echo.trigger(None) == ()
        assert await echo.trigger([]) == ()


async def test_input_is_replayable_for_several_sub_agents() -> None:
    @miniagent
    async def fan_out(ctx: InteractionContext) -> None:
        ctx.reply(echo.trigger(ctx.message_promises))
        ctx.reply(echo.trigger(ctx.message_promises))
        ctx.reply(await ctx.message_promises)

    async with MiniAgents():
        replies = await fan_out.trigger(["x", {"content": "y"}])
    assert replies == (TextMessage("x"), Message(content="y")) * 3


async def test_input_sequence_does_not_convert_errors() -> None:
    @miniagent
    async def reader(ctx: InteractionContext) -> None:
        try:
            await ctx.message_promises
        except ValueError as exc:
            ctx.reply(f"input raised {exc}")

    async with MiniAgents(errors_as_messages=True):
        assert texts(await reader.trigger(["ok", ValueError("bad input")])) == ["input raised bad input"]


@pytest.mark.parametrize("bad", [None, 42, 1.5], ids=["none", "int", "float"])
async def test_bad_input_raises_type_error_synchronously(bad: Any) -> None:
    errors: list[str] = []

    @miniagent
    async def replier(ctx: InteractionContext) -> None:
        try:
            ctx.reply(["fine", bad])
        except TypeError as exc:
            errors.append(str(exc))
        ctx.reply("still replying")

    async with MiniAgents():
        with pytest.raises(TypeError, match="Unexpected message type"):
            echo.trigger(["fine", bad])
        call = echo.initiate_call()
        with pytest.raises(TypeError, match="Unexpected message type"):
            call.send_message(bad if bad is not None else [bad])
        call.send_message("after the bad one")
        assert texts(await call.reply_sequence()) == ["after the bad one"]
        assert texts(await replier.trigger()) == ["still replying"]
    assert len(errors) == 1
    assert errors[0].startswith("Unexpected message type")


@pytest.mark.parametrize("text_message", [True, False], ids=["text", "plain"])
@pytest.mark.parametrize("tokens_first", [True, False], ids=["tokens_first", "whole_first"])
@SOON_BY_DEFAULT
async def test_message_str_always_same(text_message: bool, tokens_first: bool, soon_by_default: bool) -> None:
    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        if text_message:
            ctx.reply(TextMessage("Hello world", punctuation="!!!"))
        else:
            ctx.reply(Message(content="Hello world", punctuation="!!!"))

    expected = (
        "Hello world"
        if text_message
        else '```json\n{"class_":"Message","content":"Hello world","punctuation":"!!!"}\n```'
    )
    async with MiniAgents(start_everything_soon_by_default=soon_by_default):
        async for promise in agent.trigger():
            if tokens_first:
                from_tokens = "".join([str(token) async for token in promise])
                whole = str(await promise)
            else:
                whole = str(await promise)
                from_tokens = "".join([str(token) async for token in promise])
            assert from_tokens == expected
            assert whole == expected


# --- the call lifecycle (H4-H10) -----------------------------------------------------------------


async def test_full_duplex_communication() -> None:
    @miniagent
    async def talker(ctx: InteractionContext) -> None:
        async for promise in ctx.message_promises:
            ctx.reply(f"you said: {await promise}")

    async with MiniAgents():
        call = talker.initiate_call()
        assert isinstance(call, AgentCall)
        assert call.agent is talker
        replies = aiter(call.reply_sequence(finish_call=False))
        call.send_message("hello")
        assert str(await (await anext(replies))) == "you said: hello"
        call.send_message("world")
        assert str(await (await anext(replies))) == "you said: world"
        call.finish()
        with pytest.raises(StopAsyncIteration):
            await anext(replies)


async def test_finishing_a_call_closes_its_input() -> None:
    async with MiniAgents():
        call = echo.initiate_call()
        assert not call.is_finished
        assert call.finish() is call
        assert call.is_finished
        call.finish()  # idempotent
        with pytest.raises(AppenderClosedError):
            call.send_message("too late")
        assert await call.reply_sequence() == ()


async def test_calls_left_open_by_an_agent_are_finished_when_its_body_ends() -> None:
    @miniagent
    async def caller(ctx: InteractionContext) -> None:
        call = echo.initiate_call()
        call.send_message("forwarded")
        ctx.reply(call.reply_sequence(finish_call=False))

    async with asyncio.timeout(10):
        async with MiniAgents():
            assert texts(await caller.trigger()) == ["forwarded"]


async def test_make_sure_to_wait_keeps_the_reply_open() -> None:
    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        async def background() -> None:
            await asyncio.sleep(0.01)
            ctx.reply("from background")

        ctx.make_sure_to_wait(background())
        ctx.reply("immediate")

    async with MiniAgents():
        assert texts(await agent.trigger()) == ["immediate", "from background"]


async def test_make_sure_to_wait_starts_coroutines_right_away() -> None:
    events: list[str] = []

    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        async def background() -> None:
            events.append("background ran")

        ctx.make_sure_to_wait(background())
        await asyncio.sleep(0)
        await asyncio.sleep(0)
        events.append(f"body sees {events}")

    async with MiniAgents():
        await agent.trigger()
    assert events == ["background ran", "body sees ['background ran']"]


async def test_await_now_awaits_registered_awaitables() -> None:
    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        done: list[str] = []

        async def work() -> None:
            await asyncio.sleep(0.01)
            done.append("work")

        ctx.make_sure_to_wait(work())
        await ctx.await_now()
        ctx.reply(f"after await_now: {done}")

    async with MiniAgents():
        assert texts(await agent.trigger()) == ["after await_now: ['work']"]


async def test_await_now_warns_while_child_calls_are_open() -> None:
    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        echo.initiate_call()
        with pytest.warns(RuntimeWarning, match="deadlock"):
            await ctx.await_now()
        await ctx.await_now(suppress_deadlock_warning=True)
        ctx.reply("no hang")

    async with MiniAgents():
        assert texts(await agent.trigger()) == ["no hang"]


async def test_afinish_early_closes_the_reply_before_the_body_ends() -> None:
    gate = asyncio.Event()
    errors: list[BaseException] = []

    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        ctx.reply("only reply")
        await ctx.afinish_early()
        await gate.wait()
        try:
            ctx.reply("too late")
        except AppenderClosedError as exc:
            errors.append(exc)

    async with MiniAgents():
        # The replies are complete while the body is still blocked on the gate.
        assert texts(await agent.trigger()) == ["only reply"]
        gate.set()
    assert len(errors) == 1


async def test_reply_through_a_saved_ctx_after_the_agent_returned_raises() -> None:
    saved: list[InteractionContext] = []

    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        saved.append(ctx)

    async with MiniAgents():
        await agent.trigger()
        with pytest.raises(AppenderClosedError):
            saved[0].reply("too late")


async def test_interaction_context_attributes() -> None:
    seen: dict[str, Any] = {}

    @miniagent
    async def agent(ctx: InteractionContext) -> None:
        seen["this_agent"] = ctx.this_agent
        seen["miniagents"] = ctx.miniagents
        seen["current"] = InteractionContext.get_current()
        seen["ctx"] = ctx

    async with MiniAgents() as mini_agents:
        await agent.trigger()
    assert seen["this_agent"] is agent
    assert seen["miniagents"] is mini_agents
    assert seen["current"] is seen["ctx"]


async def test_agent_trace_lists_this_agent_then_its_callers() -> None:
    traces: list[str] = []

    @miniagent
    async def inner(ctx: InteractionContext) -> None:
        traces.append(display_agent_trace(ctx.get_agent_trace()))
        traces.append(display_agent_trace())

    @miniagent
    async def middle(ctx: InteractionContext) -> None:
        await inner.trigger()

    @miniagent
    async def outer(ctx: InteractionContext) -> None:
        await middle.trigger()

    async with MiniAgents():
        await outer.trigger()
    assert traces == ["INNER <- MIDDLE <- OUTER", "INNER <- MIDDLE <- OUTER"]


# --- kwargs and forks (H2, H3, H11) --------------------------------------------------------------


@miniagent(k1="decorator", k2="decorator")
async def kwargs_agent(ctx: InteractionContext, **kwargs: Any) -> None:
    ctx.reply(str(sorted(kwargs.items())))


async def test_kwargs_precedence_static_then_non_freezable_then_call() -> None:
    forked = kwargs_agent.fork(k3="fork", non_freezable_kwargs={"k1": "non_freezable", "k3": "non_freezable"})
    async with MiniAgents():
        assert texts(await forked.trigger()) == [
            "[('k1', 'non_freezable'), ('k2', 'decorator'), ('k3', 'non_freezable')]"
        ]
        assert texts(await forked.trigger(k1="call", k4="call")) == [
            "[('k1', 'call'), ('k2', 'decorator'), ('k3', 'non_freezable'), ('k4', 'call')]"
        ]


async def test_fork_kwargs_override_the_originals() -> None:
    # MiniAgents 0.0.35 raises TypeError ("multiple values") here; we let the fork win.
    forked = kwargs_agent.fork(k2="fork")
    async with MiniAgents():
        assert texts(await forked.trigger()) == ["[('k1', 'decorator'), ('k2', 'fork')]"]
        assert texts(await kwargs_agent.trigger()) == ["[('k1', 'decorator'), ('k2', 'decorator')]"]


async def test_fork_keeps_or_overrides_alias_description_and_metadata() -> None:
    @miniagent(description="original", interaction_metadata={"team": "a", "x": 1})
    async def original(ctx: InteractionContext) -> None:
        pass

    same = original.fork()
    renamed = original.fork("RENAMED", "new description", interaction_metadata={"team": "b"})
    assert (same.alias, same.description) == ("ORIGINAL", "original")
    assert (renamed.alias, renamed.description) == ("RENAMED", "new description")
    assert renamed.interaction_metadata == Frozen(team="b", x=1)
    assert original.interaction_metadata == Frozen(team="a", x=1)
    assert renamed.wrapped_func_or_class is original.wrapped_func_or_class


async def test_non_freezable_kwargs_are_shared_not_copied() -> None:
    shared: set[str] = set()

    @miniagent(non_freezable_kwargs={"seen": shared})
    async def collector(ctx: InteractionContext, seen: set[str], suffix: str = "") -> None:
        seen.update(f"{message}{suffix}" for message in await ctx.message_promises)

    forked = collector.fork(non_freezable_kwargs={"suffix": "!"})  # merged with the original's
    async with MiniAgents():
        await collector.trigger("a")
        await forked.trigger("b")
    assert shared == {"a", "b!"}


async def test_call_kwargs_are_frozen_and_validated_at_trigger() -> None:
    received: dict[str, Any] = {}

    @miniagent
    async def agent(ctx: InteractionContext, **kwargs: Any) -> None:
        received.update(kwargs)

    message = TextMessage("m")
    async with MiniAgents():
        with pytest.raises(ValidationError):
            agent.trigger(bad={1, 2})
        with pytest.raises(ValidationError):
            agent.trigger(bad=message.as_promise)
        await agent.trigger(items=[1, 2], mapping={"a": 1}, message=message, many=(message,))
    assert received["items"] == (1, 2)
    assert received["mapping"] == Frozen(a=1)
    assert received["message"] is message
    assert received["many"] == (message,)


def test_agents_are_frozen_values() -> None:
    assert isinstance(echo, MiniAgent)
    with pytest.raises(ValidationError):
        echo.alias = "OTHER"  # type: ignore[misc]
    assert echo.fork().hash_key == echo.hash_key
