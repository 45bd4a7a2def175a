"""Aggregator agents: agent_chain, agent_loop, dialog_loop and prompt_agent (semantics 1.7, H12).

Expected orders and results were observed on MiniAgents 0.0.35, except where a test says it
differs on purpose.
"""

from __future__ import annotations

from types import ModuleType
from typing import Any

import pytest

import brokeragents.ext
from brokeragents import InteractionContext, Message, MiniAgent, MiniAgents, TextMessage, miniagent
from brokeragents.ext import AWAIT, CLEAR, agent_chain, agent_loop, dialog_loop
from brokeragents.ext.aggregators import prompt_agent
from helpers import Backend


@miniagent
async def upper(ctx: InteractionContext, log: list[str]) -> None:
    log.append("upper start")
    async for message_promise in ctx.message_promises:
        ctx.reply(str(await message_promise).upper())
    log.append("upper end")


@miniagent
async def exclaim(ctx: InteractionContext, log: list[str]) -> None:
    log.append("exclaim start")
    messages = await ctx.message_promises
    log.append(f"exclaim got {texts(messages)}")
    ctx.reply([f"{message}!" for message in messages])


@miniagent
async def counter(ctx: InteractionContext, log: list[str], stop_after: int = 3) -> None:
    """Reply c1, c2, ... one per turn; raise KeyboardInterrupt (the user quitting) after `stop_after`."""
    received = texts(await ctx.message_promises)
    turn = sum(entry.startswith("counter") for entry in log) + 1
    log.append(f"counter turn {turn} got {received}")
    if turn > stop_after:
        raise KeyboardInterrupt
    ctx.reply(f"c{turn}")


@miniagent
async def prefix_echo(ctx: InteractionContext, log: list[str]) -> None:
    received = texts(await ctx.message_promises)
    log.append(f"echo got {received}")
    ctx.reply([f"e:{text}" for text in received])


def texts(messages: tuple[Message, ...] | list[Message]) -> list[str]:
    return [str(message) for message in messages]


@pytest.fixture
def log() -> list[str]:
    return []


@pytest.fixture
def agents(log: list[str]) -> dict[str, MiniAgent]:
    """The test agents, all writing to one `log`."""
    return {
        agent.alias: agent.fork(non_freezable_kwargs={"log": log}) for agent in (upper, exclaim, counter, prefix_echo)
    }


# --- agent_chain ---------------------------------------------------------------------------------


async def test_h12_await_then_clear_leaves_nothing(agents: dict[str, MiniAgent], log: list[str]) -> None:
    async with MiniAgents():
        replies = await agent_chain.trigger(["a"], agents=[agents["UPPER"], AWAIT, CLEAR, agents["EXCLAIM"]])

    assert replies == ()
    assert log == ["upper start", "upper end", "exclaim start", "exclaim got []"]


async def test_chain_pipes_each_agent_into_the_next(agents: dict[str, MiniAgent]) -> None:
    async with MiniAgents():
        replies = await agent_chain.trigger(["a", "b"], agents=[agents["UPPER"], agents["EXCLAIM"]])

    assert texts(replies) == ["A!", "B!"]


async def test_await_completes_the_sequence_before_the_next_agent_starts(
    agents: dict[str, MiniAgent], log: list[str]
) -> None:
    async with MiniAgents():
        replies = await agent_chain.trigger(["a", "b"], agents=[agents["UPPER"], AWAIT, agents["EXCLAIM"]])

    assert texts(replies) == ["A!", "B!"]
    assert log == ["upper start", "upper end", "exclaim start", "exclaim got ['A', 'B']"]


async def test_none_entries_are_skipped(agents: dict[str, MiniAgent]) -> None:
    async with MiniAgents():
        replies = await agent_chain.trigger(["a", "b"], agents=[None, agents["UPPER"], None])

    assert texts(replies) == ["A", "B"]


@pytest.mark.parametrize("entries", [[], [AWAIT], [None]], ids=["empty", "await", "none"])
async def test_a_chain_without_agents_replies_with_its_input(entries: list[Any]) -> None:
    async with MiniAgents():
        replies = await agent_chain.trigger(["a", "b"], agents=entries)

    assert texts(replies) == ["a", "b"]


async def test_clear_gives_the_next_agent_no_input(agents: dict[str, MiniAgent], log: list[str]) -> None:
    async with MiniAgents():
        replies = await agent_chain.trigger(["a", "b"], agents=[CLEAR, agents["EXCLAIM"]])

    assert replies == ()
    assert log == ["exclaim start", "exclaim got []"]


async def test_trailing_clear_replies_nothing() -> None:
    # On purpose: MiniAgents 0.0.35 replies with None here, which fails with a TypeError.
    async with MiniAgents():
        replies = await agent_chain.trigger(["a", "b"], agents=[CLEAR])

    assert replies == ()


@pytest.mark.parametrize("bad_entry", ["BAD", 5], ids=["string", "int"])
async def test_invalid_entry_fails_before_any_agent_runs(
    agents: dict[str, MiniAgent], log: list[str], bad_entry: Any
) -> None:
    async with MiniAgents():
        with pytest.raises(ValueError, match=f"Invalid agent: {bad_entry}"):
            await agent_chain.trigger(["a"], agents=[agents["UPPER"], bad_entry])

    # On purpose: MiniAgents 0.0.35 triggers the agents before the bad entry first.
    assert log == []


async def test_chain_works_on_a_redis_backed_context(redis_backend: Backend, agents: dict[str, MiniAgent]) -> None:
    async with MiniAgents(redis=redis_backend.client(), remote_calls="never"):
        cleared = await agent_chain.trigger(["a"], agents=[agents["UPPER"], AWAIT, CLEAR, agents["EXCLAIM"]])
        piped = await agent_chain.trigger(["a", "b"], agents=[agents["UPPER"], AWAIT, agents["EXCLAIM"]])

    assert cleared == ()
    assert texts(piped) == ["A!", "B!"]


# --- agent_loop ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "entries",
    [["UPPER"], [AWAIT], [None, AWAIT], [AWAIT, CLEAR, None]],
    ids=["no-await", "no-agent", "none-and-await", "no-agent-with-clear"],
)
async def test_agent_loop_needs_an_await_and_an_agent(agents: dict[str, MiniAgent], entries: list[Any]) -> None:
    resolved = [agents.get(entry, entry) if isinstance(entry, str) else entry for entry in entries]
    async with MiniAgents():
        with pytest.raises(ValueError, match="at least one AWAIT entry and at least one MiniAgent"):
            await agent_loop.trigger(["a"], agents=resolved)


async def test_agent_loop_feeds_each_turn_with_the_previous_one(agents: dict[str, MiniAgent], log: list[str]) -> None:
    async with MiniAgents():
        replies = await agent_loop.trigger(
            ["in1"], agents=[agents["COUNTER"], AWAIT, agents["PREFIX_ECHO"]], raise_keyboard_interrupt=False
        )

    assert replies == ()
    assert log == [
        "counter turn 1 got ['in1']",
        "echo got ['c1']",
        "counter turn 2 got ['e:c1']",
        "echo got ['c2']",
        "counter turn 3 got ['e:c2']",
        "echo got ['c3']",
        "counter turn 4 got ['e:c3']",
    ]


async def test_agent_loop_reraises_keyboard_interrupt_by_default(agents: dict[str, MiniAgent]) -> None:
    async with MiniAgents():
        with pytest.raises(KeyboardInterrupt):
            await agent_loop.trigger(["in1"], agents=[agents["COUNTER"], AWAIT, agents["PREFIX_ECHO"]])


async def test_agent_loop_lets_other_errors_through(agents: dict[str, MiniAgent]) -> None:
    @miniagent
    async def failing(ctx: InteractionContext) -> None:
        raise RuntimeError("boom")

    async with MiniAgents():
        with pytest.raises(RuntimeError, match="boom"):
            await agent_loop.trigger(["x"], agents=[failing, AWAIT], raise_keyboard_interrupt=False)


# --- dialog_loop and prompt_agent ----------------------------------------------------------------


@pytest.mark.parametrize("at_the_end", [True, False], ids=["suffix", "prefix"])
async def test_dialog_loop_prompts_the_assistant_with_its_own_input(
    agents: dict[str, MiniAgent], log: list[str], at_the_end: bool
) -> None:
    async with MiniAgents():
        # The user quitting (KeyboardInterrupt) ends the dialog quietly.
        replies = await dialog_loop.trigger(
            ["SYS"], user_agent=agents["COUNTER"], assistant_agent=agents["PREFIX_ECHO"], prompt_at_the_end=at_the_end
        )

    assert replies == ()

    def pair(user_text: str) -> list[str]:
        return [user_text, "SYS"] if at_the_end else ["SYS", user_text]

    assert log == [
        "counter turn 1 got []",  # the user agent never sees the dialog's input
        f"echo got {pair('c1')}",
        f"counter turn 2 got {['e:' + text for text in pair('c1')]}",
        f"echo got {pair('c2')}",
        f"counter turn 3 got {['e:' + text for text in pair('c2')]}",
        f"echo got {pair('c3')}",
        f"counter turn 4 got {['e:' + text for text in pair('c3')]}",
    ]


async def test_dialog_loop_without_a_user_agent_loops_the_assistant(
    agents: dict[str, MiniAgent], log: list[str]
) -> None:
    async with MiniAgents():
        replies = await dialog_loop.trigger(["SYS"], user_agent=None, assistant_agent=agents["COUNTER"])

    assert replies == ()
    assert log == [
        "counter turn 1 got ['SYS']",
        "counter turn 2 got ['c1', 'SYS']",
        "counter turn 3 got ['c2', 'SYS']",
        "counter turn 4 got ['c3', 'SYS']",
    ]


async def test_dialog_loop_without_an_assistant_loops_the_user(agents: dict[str, MiniAgent], log: list[str]) -> None:
    # On purpose: MiniAgents 0.0.35 fails with AttributeError ('NoneType' has no 'trigger').
    async with MiniAgents():
        replies = await dialog_loop.trigger(["SYS"], user_agent=agents["COUNTER"], assistant_agent=None)

    assert replies == ()
    assert log[:2] == ["counter turn 1 got []", "counter turn 2 got ['c1']"]


async def test_prompt_agent_surrounds_the_input_and_passes_kwargs() -> None:
    @miniagent
    async def show(ctx: InteractionContext, tag: str) -> None:
        ctx.reply([f"{tag}:{message}" for message in await ctx.message_promises])

    async with MiniAgents():
        replies = await prompt_agent.trigger(
            ["middle"],
            target_agent=show,
            prompt_prefix=TextMessage("before"),
            prompt_suffix=(TextMessage("after 1"), TextMessage("after 2")),
            tag="t",
        )

    assert texts(replies) == ["t:before", "t:middle", "t:after 1", "t:after 2"]


# --- the package ---------------------------------------------------------------------------------


def test_aliases_and_sentinels_are_those_of_miniagents() -> None:
    assert (AWAIT, CLEAR) == ("AWAIT", "CLEAR")
    assert [agent.alias for agent in (agent_chain, agent_loop, dialog_loop, prompt_agent)] == [
        "AGENT_CHAIN",
        "AGENT_LOOP",
        "DIALOG_LOOP",
        "PROMPT_AGENT",
    ]


def test_ext_exports_exactly_its_all() -> None:
    public = {
        name
        for name, value in vars(brokeragents.ext).items()
        # `annotations` is the `from __future__ import annotations` feature, not an export.
        if not name.startswith("_") and not isinstance(value, ModuleType) and name != "annotations"
    }
    assert isinstance(brokeragents.ext.__all__, tuple)
    assert set(brokeragents.ext.__all__) == public
