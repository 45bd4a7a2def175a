"""Persistence hooks and interaction nodes (J1-J6, K1-K4).

Deliberate fixes over MiniAgents 0.0.35 tested here: dedup by hash_key (J3), no deadlock on a
repeated unpersisted sub-message (J5), and ``fork`` keeping ``await_reply_persistence`` (J6).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

import pytest

from brokeragents import (
    NO_VALUE,
    AgentCallNode,
    AgentInteractionNode,
    AgentReplyNode,
    ErrorMessage,
    Frozen,
    InteractionContext,
    Message,
    MessageTokenAppender,
    MiniAgents,
    Promise,
    Sentinel,
    TextMessage,
    miniagent,
)

START_SOON = pytest.mark.parametrize("start_soon", [True, False, NO_VALUE], ids=["soon", "lazy", "default"])


class Recorder:
    """A persistence handler that records every batch it is given."""

    def __init__(self) -> None:
        self.batches: list[list[Message]] = []

    async def __call__(self, messages: Iterable[Message]) -> None:
        self.batches.append(list(messages))

    @property
    def messages(self) -> list[Message]:
        return [message for batch in self.batches for message in batch]

    def of_class(self, cls: type[Message]) -> list[Any]:
        return [message for message in self.messages if type(message) is cls]


def recording_context(recorder: Recorder, **kwargs: Any) -> MiniAgents:
    async def on_persist(messages: Iterable[Message]) -> None:
        await recorder(messages)

    return MiniAgents(on_persist_messages=on_persist, **kwargs)


@miniagent
async def echo(ctx: InteractionContext) -> None:
    ctx.reply(ctx.message_promises)


# --- J1-J3: what gets persisted, and when --------------------------------------------------------


@START_SOON
async def test_message_is_persisted_only_once(start_soon: bool | Sentinel) -> None:
    recorder = Recorder()
    resolved: list[Any] = []
    message = TextMessage("once")
    async with recording_context(recorder) as mini_agents:

        @mini_agents.on_promise_resolved
        async def on_resolved(_promise: Promise[Any], result: Any) -> None:
            resolved.append(result)

        Promise(start_soon=start_soon, prefill_result=message)
        Promise(start_soon=start_soon, prefill_result=message)
    assert resolved == [message, message]
    assert recorder.messages == [message]


@START_SOON
async def test_four_messages_are_persisted(start_soon: bool | Sentinel) -> None:
    recorder = Recorder()
    messages = [TextMessage("one"), Message(content="two"), TextMessage("three", x=1), Message(four=4)]
    async with recording_context(recorder):
        for message in messages:
            Promise(start_soon=start_soon, prefill_result=message)
    assert sorted(message.hash_key for message in recorder.messages) == sorted(m.hash_key for m in messages)


@START_SOON
async def test_on_persist_messages_event_not_called(start_soon: bool | Sentinel) -> None:
    recorder = Recorder()
    resolved: list[Any] = []
    frozen = Frozen(content="not a message")

    async def on_resolved(_promise: Promise[Any], result: Any) -> None:
        resolved.append(result)

    async with recording_context(recorder, on_promise_resolved=on_resolved):
        Promise(start_soon=start_soon, prefill_result=frozen)
        Promise(start_soon=start_soon, prefill_result=frozen)
    assert resolved == [frozen, frozen]
    assert recorder.batches == []


async def test_equal_distinct_instances_are_persisted_once() -> None:
    # MiniAgents deduplicates per instance and would persist this message twice.
    recorder = Recorder()
    first, second = TextMessage("same"), TextMessage("same")
    assert first is not second
    async with recording_context(recorder):
        Promise(prefill_result=first)
        Promise(prefill_result=second)
    assert recorder.messages == [first]


async def test_a_repeated_unpersisted_sub_message_does_not_deadlock() -> None:
    # MiniAgents deadlocks here: its per-message lock is taken twice for `shared`.
    recorder = Recorder()
    shared = TextMessage("shared")
    parent = Message(a=shared, b=shared, many=(shared, shared))
    async with asyncio.timeout(10), recording_context(recorder) as mini_agents:
        assert await mini_agents.apersist_messages(parent) == [shared, parent]
    assert recorder.messages == [shared, parent]


async def test_a_streamed_message_is_persisted_after_its_last_token() -> None:
    recorder = Recorder()
    async with recording_context(recorder) as mini_agents:
        with MessageTokenAppender() as appender:
            promise = TextMessage.promise(start_soon=False, message_token_streamer=appender)
            appender.append("partial")
            assert str(await anext(aiter(promise))) == "partial"
            await mini_agents.aflush_tasks()
            assert recorder.batches == []
        message = await promise
        await mini_agents.aflush_tasks()
        assert recorder.messages == [message]


async def test_a_prefilled_message_is_persisted_when_its_promise_is_created() -> None:
    recorder = Recorder()
    message = TextMessage("prefilled")
    async with recording_context(recorder) as mini_agents:
        await mini_agents.aflush_tasks()
        assert recorder.batches == []
        TextMessage.promise("prefilled")
        await mini_agents.aflush_tasks()
        assert recorder.messages == [message]


async def test_messages_can_opt_out_of_persistence() -> None:
    recorder = Recorder()
    message = TextMessage("private")
    assert await message.aset_persistence_not_needed() is True
    assert message.persistence_not_needed
    async with recording_context(recorder) as mini_agents:
        Promise(prefill_result=message)
        assert await mini_agents.apersist_messages(message) == []
    assert recorder.batches == []


async def test_a_message_whose_handler_failed_is_not_retried() -> None:
    calls: list[list[Message]] = []

    async def failing_handler(messages: Iterable[Message]) -> None:
        calls.append(list(messages))
        raise RuntimeError("storage down")

    message = TextMessage("lost")
    async with MiniAgents(on_persist_messages=failing_handler) as mini_agents:
        with pytest.raises(RuntimeError, match="storage down"):
            await mini_agents.apersist_messages(message)
        assert await mini_agents.apersist_messages(message) == []
        assert await mini_agents.apersist_messages(TextMessage("other"), raise_on_error=False) == [TextMessage("other")]
    assert calls == [[message], [TextMessage("other")]]


async def test_persisting_a_message_in_flight_waits_for_it() -> None:
    gate = asyncio.Event()
    recorder = Recorder()

    async def gated(messages: Iterable[Message]) -> None:
        await gate.wait()
        await recorder(messages)

    message = TextMessage("slow to persist")
    async with MiniAgents(on_persist_messages=gated) as mini_agents:
        first = asyncio.create_task(mini_agents.apersist_messages(message))
        second = asyncio.create_task(mini_agents.apersist_messages(message))
        await asyncio.sleep(0)  # let both calls start: the first one is now blocked in the handler
        await asyncio.sleep(0)
        assert not second.done()
        gate.set()
        assert await second == []  # handed over by the first call, not again...
        assert recorder.messages == [message]  # ...but only returned once it was persisted
        assert await first == [message]


async def test_a_handler_persisting_its_own_batch_does_not_deadlock() -> None:
    recorder = Recorder()
    message = TextMessage("re-entrant")

    async with asyncio.timeout(10), MiniAgents() as mini_agents:

        @mini_agents.on_persist_messages
        async def reentrant(messages: Iterable[Message]) -> None:
            batch = list(messages)
            assert await mini_agents.apersist_messages(batch) == []
            await recorder(batch)

        assert await mini_agents.apersist_messages(message) == [message]
    assert recorder.messages == [message]


def test_persistence_handlers_must_be_async() -> None:
    def sync_handler(messages: Iterable[Message]) -> None:
        pass

    with pytest.raises(ValueError):
        MiniAgents().on_persist_messages(sync_handler)  # type: ignore[arg-type]


# --- J4: manual and batch persistence -----------------------------------------------------------


async def test_sub_messages_are_persisted_first_children_before_parents() -> None:
    recorder = Recorder()
    leaf1, leaf2, leaf3 = TextMessage("leaf1"), TextMessage("leaf2"), TextMessage("leaf3")
    middle = Message(child=leaf1, kids=(leaf2,))
    top = Message(middle=middle, nested=Frozen(deep=leaf3))
    async with recording_context(recorder) as mini_agents:
        persisted = await mini_agents.apersist_messages([top, leaf2])
        assert persisted == [leaf1, leaf2, middle, leaf3, top]
        assert await mini_agents.apersist_messages([top, leaf2]) == []
    assert recorder.batches == [[leaf1, leaf2, middle, leaf3, top]]


async def test_persisting_without_sub_messages() -> None:
    recorder = Recorder()
    leaf = TextMessage("leaf")
    top = Message(child=leaf)
    async with recording_context(recorder) as mini_agents:
        assert await mini_agents.apersist_messages(top, extend_with_sub_messages=False) == [top]
        assert await mini_agents.apersist_messages(leaf) == [leaf]


@pytest.mark.parametrize(
    ("parallelise", "expected"),
    [
        (False, ["h1 start", "h1 end", "h2 start", "h2 end"]),
        (True, ["h1 start", "h2 start", "h1 end", "h2 end"]),
    ],
    ids=["sequential", "parallel"],
)
async def test_handlers_run_sequentially_unless_parallelised(parallelise: bool, expected: list[str]) -> None:
    events: list[str] = []

    def handler(name: str) -> Any:
        async def handle(_messages: Iterable[Message]) -> None:
            events.append(f"{name} start")
            await asyncio.sleep(0)
            events.append(f"{name} end")

        return handle

    async with MiniAgents(on_persist_messages=[handler("h1"), handler("h2")]) as mini_agents:
        await mini_agents.apersist_messages(TextMessage("x"), parallelise_handlers=parallelise)
    assert events == expected


def test_sub_messages_are_listed_depth_first_without_dedup() -> None:
    child, other = TextMessage("i"), TextMessage("k2")
    message = Message(child=child, kids=[child, other], blob={"m": child})
    assert list(message.sub_messages()) == [child, child, other, child]


# --- J6: awaiting reply persistence ---------------------------------------------------------------


def slow_recorder(recorder: Recorder) -> Any:
    async def on_persist(messages: Iterable[Message]) -> None:
        await asyncio.sleep(0.01)  # part of the scenario: persistence takes a while
        await recorder(messages)

    return on_persist


@miniagent
async def streaming_replier(ctx: InteractionContext) -> None:
    with MessageTokenAppender() as appender:
        ctx.reply(TextMessage.promise(message_token_streamer=appender))
        appender.append("streamed reply")


@pytest.mark.parametrize("how", ["decorator", "fork", "context"])
async def test_await_reply_persistence(how: str) -> None:
    recorder = Recorder()
    agent = streaming_replier
    context_kwargs: dict[str, Any] = {}
    if how == "decorator":
        agent = miniagent(await_reply_persistence=True)(streaming_replier.wrapped_func_or_class)
    elif how == "fork":
        # MiniAgents' fork drops await_reply_persistence; ours keeps it.
        agent = miniagent(await_reply_persistence=True)(streaming_replier.wrapped_func_or_class).fork()
    else:
        context_kwargs["await_reply_persistence_before_agent_finish"] = True
    async with MiniAgents(on_persist_messages=slow_recorder(recorder), **context_kwargs):
        replies = await agent.trigger()
        assert replies == (TextMessage("streamed reply"),)
        assert TextMessage("streamed reply") in recorder.messages


async def test_replies_do_not_wait_for_persistence_by_default() -> None:
    gate = asyncio.Event()
    recorder = Recorder()

    async def gated(messages: Iterable[Message]) -> None:
        await gate.wait()
        await recorder(messages)

    async with MiniAgents(on_persist_messages=gated):
        assert await streaming_replier.trigger() == (TextMessage("streamed reply"),)
        assert recorder.batches == []
        gate.set()
    assert TextMessage("streamed reply") in recorder.messages


# --- K: interaction nodes -----------------------------------------------------------------------


@miniagent(static="not in the node", interaction_metadata={"team": "a"})
async def parent(ctx: InteractionContext, **_kwargs: Any) -> None:
    ctx.reply("direct reply")
    ctx.reply(echo.trigger(ctx.message_promises))


async def test_agent_call_node_shape() -> None:
    recorder = Recorder()
    hi, there = TextMessage("hi"), TextMessage("there")
    async with recording_context(recorder):
        await parent.trigger([hi, there], extra="E")
    (call_node,) = [node for node in recorder.of_class(AgentCallNode) if node.agent.alias == "PARENT"]
    assert isinstance(call_node, AgentCallNode)
    assert issubclass(AgentCallNode, AgentInteractionNode)
    assert issubclass(AgentReplyNode, AgentInteractionNode)
    assert call_node.agent is parent
    assert call_node.messages == (hi, there)
    assert call_node.serialize() == {
        "agent": {"alias": "PARENT", "class_": "MiniAgent"},
        "class_": "AgentCallNode",
        "extra": "E",
        "messages__hash_keys": [hi.hash_key, there.hash_key],
        "team": "a",
    }


async def test_agent_reply_node_shape() -> None:
    recorder = Recorder()
    async with recording_context(recorder):
        await parent.trigger("hi", extra="E")
    (call_node,) = [node for node in recorder.of_class(AgentCallNode) if node.agent.alias == "PARENT"]
    (reply_node,) = [node for node in recorder.of_class(AgentReplyNode) if node.agent.alias == "PARENT"]
    # The replies are the flattened ones, including those that came from the nested agent.
    assert reply_node.replies == (TextMessage("direct reply"), TextMessage("hi"))
    assert reply_node.agent_call == call_node
    assert reply_node.serialize() == {
        "agent": {"alias": "PARENT", "class_": "MiniAgent"},
        "agent_call__hash_key": call_node.hash_key,
        "class_": "AgentReplyNode",
        "replies__hash_keys": [TextMessage("direct reply").hash_key, TextMessage("hi").hash_key],
        "team": "a",
    }
    # Sub-messages reach the handlers before the nodes that reference them.
    order = [message.hash_key for message in recorder.messages]
    assert order.index(call_node.hash_key) < order.index(reply_node.hash_key)
    assert order.index(TextMessage("hi").hash_key) < order.index(call_node.hash_key)


async def test_a_failed_agent_has_a_call_node_but_no_reply_node() -> None:
    @miniagent
    async def broken(ctx: InteractionContext) -> None:
        ctx.reply("partial")
        raise ValueError("broken agent")

    recorder = Recorder()
    async with recording_context(recorder):
        with pytest.raises(ValueError):
            await broken.trigger("input")
    assert [node.messages for node in recorder.of_class(AgentCallNode)] == [(TextMessage("input"),)]
    assert recorder.of_class(AgentReplyNode) == []

    recorder = Recorder()
    async with recording_context(recorder, errors_as_messages=True):
        await broken.trigger("input")
    (reply_node,) = recorder.of_class(AgentReplyNode)
    assert reply_node.replies == (TextMessage("partial"), ErrorMessage("ValueError: broken agent"))


async def test_a_shared_message_is_persisted_once_and_referenced_by_both_calls() -> None:
    recorder = Recorder()
    shared = TextMessage("shared")
    async with recording_context(recorder):
        await echo.trigger(shared)
        await echo.fork("ECHO2").trigger(shared)
    assert recorder.messages.count(shared) == 1
    call_nodes = recorder.of_class(AgentCallNode)
    assert sorted(node.agent.alias for node in call_nodes) == ["ECHO", "ECHO2"]
    assert all(node.serialize()["messages__hash_keys"] == [shared.hash_key] for node in call_nodes)


@miniagent(alias="PARENT", interaction_metadata={"team": "a"}, static="s")
async def hashed_parent(ctx: InteractionContext, **_kwargs: Any) -> None:
    ctx.reply("direct")
    ctx.reply(hashed_child.trigger(ctx.message_promises, mode="x"))


@miniagent(alias="CHILD")
async def hashed_child(ctx: InteractionContext, **_kwargs: Any) -> None:
    async for promise in ctx.message_promises:
        message = await promise
        ctx.reply(Message(content=f"child {message}", ref=message))


async def test_persisted_hash_keys_match_miniagents() -> None:
    # Computed by running this same scenario on MiniAgents 0.0.35 (the oracle).
    recorder = Recorder()
    async with recording_context(recorder):
        await hashed_parent.trigger(["hi", TextMessage("there", k=1)], extra="E")
    assert sorted((type(message).__name__, message.hash_key) for message in recorder.messages) == [
        ("AgentCallNode", "4862bff2e8112ea70ecdb578d46a419a5d539b09"),
        ("AgentCallNode", "fcf7e4f6fe160d8f8877c394ee38ed8d79153f40"),
        ("AgentReplyNode", "9256512af4f1056a59a1ff1e495bc5b633b94933"),
        ("AgentReplyNode", "e586dea42d43e888bf926b65fa1b554564306c4f"),
        ("Message", "2a2232452893b882e943dab8fc3165b10d226a45"),
        ("Message", "398dc558610b6f0897821866273765a214918089"),
        ("TextMessage", "07c64fcd804700ff8faf3cc73da0cfe823e89040"),
        ("TextMessage", "10ef4055699791e5e292fa4246b7c41cdb4b573b"),
        ("TextMessage", "34b20ffd72b0045883741ee6cfa762c6d17b2e00"),
    ]
