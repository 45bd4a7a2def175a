"""Issue 4, point 2: calls from one process reach agents served by other processes.

Every entry point of the MiniAgents API (trigger, initiate_call, send_message, send_out_of_order,
reply_sequence) reaches the worker; tokens stream back while the agent still produces them;
errors and errors_as_messages behave as when the agent runs in the caller's process; input can
still be sent after the first reply token arrived (full duplex); and a chain of agents runs
across three processes.
"""

from __future__ import annotations

from typing import Any

import pytest

from brokeragents import ErrorMessage, MiniAgent, MiniAgents, TextMessage
from helpers import wait_until
from worker_apps import chain, echo_app
from worker_fixtures import Cluster

pytest_plugins = ("worker_fixtures",)
pytestmark = pytest.mark.real_redis


async def _run_in_process(agent: MiniAgent, drive: Any, **context: Any) -> Any:
    """What ``drive(agent)`` gives when the agent runs in this process (no Redis at all)."""
    async with MiniAgents(**context):
        return await drive(agent)


async def test_trigger_of_a_served_agent_runs_on_the_worker(cluster: Cluster) -> None:
    worker = await cluster.aworker("echo_app:whoami", "echo_app:echo")
    async with cluster.mini_agents():  # remote_calls="auto": the registry says a worker serves them
        assert [str(m) for m in await echo_app.whoami.trigger()] == [f"pid={worker.pid}"]
        replies = await echo_app.echo.trigger(["one", TextMessage("two")], prefix="> ")
    assert replies == (TextMessage("> one"), TextMessage("> two"))
    async with cluster.mini_agents(remote_calls="never"):  # the same code, run here
        assert [str(m) for m in await echo_app.whoami.trigger()] != [f"pid={worker.pid}"]


async def test_initiate_call_send_message_out_of_order_and_reply_sequence(cluster: Cluster) -> None:
    await cluster.aworker("echo_app:input_report")

    async def drive(agent: MiniAgent) -> Any:
        call = agent.initiate_call()
        call.send_message("first")
        call.send_out_of_order("out of order")
        call.send_message(["second", "third"])
        reply = call.reply_sequence()
        assert call.reply_sequence() is reply
        return await reply

    expected = await _run_in_process(echo_app.input_report, drive)
    async with cluster.mini_agents():
        remote = await drive(MiniAgent(alias="INPUT_REPORT"))
    assert remote == expected
    assert set(str(remote[0]).split("|")) == {"first", "out of order", "second", "third"}


async def test_tokens_stream_back_while_the_agent_produces_them(cluster: Cluster) -> None:
    await cluster.aworker("control:streamer")
    async with cluster.mini_agents():
        reply = MiniAgent(alias="STREAMER").trigger(tokens=4, gate="gate")
        tokens: list[str] = []
        async for message_promise in reply:
            async for token in message_promise:
                tokens.append(str(token))
                if len(tokens) == 1:
                    # The agent waits for this gate before its second token: the first token
                    # reached us while the agent was still producing the message.
                    assert not message_promise.is_resolved
                    assert await cluster.redis.llen(cluster.key("gate")) == 0
                    assert await cluster.alist("started")  # it runs on the worker
                    await cluster.redis.rpush(cluster.key("gate"), "go")
        messages = await reply
    assert tokens == ["tok0 ", "tok1 ", "tok2 ", "tok3 "]
    assert messages == (TextMessage("tok0 tok1 tok2 tok3 "),)


@pytest.mark.parametrize("errors_as_messages", [False, True])
async def test_errors_behave_as_in_one_process(cluster: Cluster, errors_as_messages: bool) -> None:
    await cluster.aworker("echo_app:failing")

    async def drive(agent: MiniAgent) -> Any:
        reply = agent.trigger(after=2, errors_as_messages=errors_as_messages)
        seen: list[Any] = []
        iterator = reply.__aiter__()
        while True:
            try:
                seen.append(await (await iterator.__anext__()))
            except StopAsyncIteration:
                break
            except ValueError as exc:
                seen.append(f"raised {type(exc).__name__}: {exc}")
        try:
            whole: Any = await reply
        except ValueError as exc:
            whole = f"raised {type(exc).__name__}: {exc}"
        return seen, whole

    expected = await _run_in_process(echo_app.failing, drive, errors_as_messages=errors_as_messages)
    async with cluster.mini_agents(errors_as_messages=errors_as_messages):
        remote = await drive(MiniAgent(alias="FAILING"))
    assert remote == expected
    failure = "ValueError: the agent failed on purpose"
    if errors_as_messages:
        assert remote[1] == (TextMessage("before error 0"), TextMessage("before error 1"), ErrorMessage(failure))
    else:
        assert remote[1] == f"raised {failure}"


async def test_full_duplex_input_sent_after_the_first_reply_token(cluster: Cluster) -> None:
    await cluster.aworker("echo_app:echo")
    async with cluster.mini_agents():
        call = MiniAgent(alias="ECHO").initiate_call()
        call.send_message("one")
        reply = call.reply_sequence(finish_call=False)
        iterator = reply.__aiter__()
        first = await iterator.__anext__()
        first_token = await first.__aiter__().__anext__()  # the reply streams; the input is still open
        assert str(first_token) == "echo: one"
        assert not call.is_finished
        call.send_message("two")
        call.finish()
        second = await iterator.__anext__()
        assert str(await second) == "echo: two"
        assert await reply == (TextMessage("echo: one"), TextMessage("echo: two"))


async def test_a_chain_of_three_agents_in_three_processes(cluster: Cluster) -> None:
    worker_c = await cluster.aworker("chain:chain_c")
    worker_b = await cluster.aworker("chain:chain_b")
    worker_a = await cluster.aworker("chain:chain_a")
    async with cluster.mini_agents():
        replies = [str(message) for message in await chain.chain_a.trigger("x")]
    assert replies == [f"A pid={worker_a.pid}", f"B pid={worker_b.pid}", f"C(x) pid={worker_c.pid}"]
    assert len({worker_a.pid, worker_b.pid, worker_c.pid}) == 3
    # Each hop was a call through an inbox, acknowledged by the process that served it.
    for alias in ("CHAIN_A", "CHAIN_B", "CHAIN_C"):
        await wait_until(lambda a=alias: _acknowledged(cluster, a), 10, f"{alias} acknowledged")


async def _acknowledged(cluster: Cluster, alias: str) -> bool:
    """Acknowledged (a moment after the reply is complete): nothing pending, the entry deleted."""
    inbox = cluster.keys.agent_inbox(alias)
    return await cluster.apending(alias) == {} and await cluster.redis.xlen(inbox) == 0
