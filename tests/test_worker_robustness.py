"""Issue 4, point 6: workers survive what Redis and agents throw at them.

After a Redis restart (with and without the data) and after ``XGROUP DESTROY`` (NOGROUP),
workers reconnect with backoff, recreate what is missing and serve new calls. A malformed inbox
entry goes to the dead-letter stream with the reason, and the worker goes on. A call that keeps
crashing workers (SIGKILL or ``os._exit``) goes to the dead-letter stream once its delivery
budget is spent, and its caller gets a ``CallFailedError``. An agent that raises has its error
delivered, and the worker goes on.
"""

from __future__ import annotations

import asyncio
import json
import signal
from pathlib import Path

import pytest

from brokeragents import MiniAgent, TextMessage
from brokeragents._embedded import EmbeddedServer
from brokeragents.errors import CallFailedError
from helpers import wait_until
from worker_fixtures import Cluster, acluster

pytest_plugins = ("worker_fixtures",)
pytestmark = pytest.mark.real_redis


async def _echo_once(cluster: Cluster, text: str) -> list[str]:
    async with cluster.mini_agents():
        return [str(message) for message in await MiniAgent(alias="ECHO").trigger(text)]


@pytest.mark.parametrize("appendonly", [True, False], ids=["data-kept", "data-lost"])
async def test_workers_recover_after_a_redis_restart(tmp_path: Path, appendonly: bool) -> None:
    server = EmbeddedServer(appendonly=appendonly)
    url = server.start()
    try:
        async with acluster(url, tmp_path) as cluster:
            worker = await cluster.aworker("echo_app:echo")
            assert await _echo_once(cluster, "before") == ["echo: before"]
            await cluster.redis.set(cluster.key("marker"), "1")
            server.restart()
            await cluster.areconnect()
            assert await cluster.redis.exists(cluster.key("marker")) == int(appendonly)  # data kept or lost
            # The worker reconnects, re-registers (heartbeat) and recreates its group if needed.
            await cluster.await_ready(worker)
            assert await _echo_once(cluster, "after") == ["echo: after"]
            assert worker.is_running()
            groups = await cluster.redis.xinfo_groups(cluster.keys.agent_inbox("ECHO"))
            assert [group["name"] for group in groups] == [b"workers"]
            if not appendonly:
                assert "recreating it" in worker.output()
    finally:
        server.stop()


async def test_workers_recreate_a_destroyed_consumer_group(cluster: Cluster) -> None:
    worker = await cluster.aworker("echo_app:echo")
    assert await _echo_once(cluster, "before") == ["echo: before"]
    inbox = cluster.keys.agent_inbox("ECHO")
    assert await cluster.redis.xgroup_destroy(inbox, "workers") == 1
    assert await _echo_once(cluster, "after") == ["echo: after"]
    assert "recreating it" in worker.output()
    assert [group["name"] for group in await cluster.redis.xinfo_groups(inbox)] == [b"workers"]
    assert worker.is_running()


async def test_a_malformed_inbox_entry_is_dead_lettered_and_the_worker_goes_on(cluster: Cluster) -> None:
    worker = await cluster.aworker("echo_app:echo")
    inbox = cluster.keys.agent_inbox("ECHO")
    bad_entries = [
        {"garbage": "no call at all"},
        {"call_id": "abc123", "agent": "ECHO", "kwargs": "{not json"},
        {"call_id": "abc124", "agent": "OTHER", "kwargs": json.dumps({"class_": "CallKwargs"})},
        {"call_id": "bad id!", "agent": "ECHO", "kwargs": json.dumps({"class_": "CallKwargs"})},
        {"call_id": "abc125", "agent": "ECHO", "kwargs": json.dumps({"class_": "Pickle", "x": 1})},
    ]
    ids = [(await cluster.redis.xadd(inbox, fields)).decode() for fields in bad_entries]
    await wait_until(lambda: _dead_letters_are(cluster, len(bad_entries)), 10, "the dead letters")
    # Served concurrently: the dead letters may come in any order.
    dead = {letter["entry_id"]: letter for letter in await cluster.adead_letters()}
    assert sorted(dead) == sorted(ids)
    assert all(letter["stream"] == inbox and letter["reason"] for letter in dead.values())
    assert "call_id" in dead[ids[0]]["reason"]
    assert "garbage" in dead[ids[0]]["fields"]
    assert "JSON" in dead[ids[1]]["reason"] or "json" in dead[ids[1]]["reason"]
    assert "agent 'OTHER'" in dead[ids[2]]["reason"]
    assert "call_id" in dead[ids[3]]["reason"]
    assert "CallKwargs" in dead[ids[4]]["reason"]
    # Acknowledged and deleted: the inbox keeps nothing of them, and the worker still serves.
    assert await _echo_once(cluster, "still here") == ["echo: still here"]
    await wait_until(lambda: _inbox_is_empty(cluster, "ECHO"), 10, "an empty inbox")
    assert worker.is_running()


async def _dead_letters_are(cluster: Cluster, count: int) -> bool:
    return int(await cluster.redis.xlen(cluster.keys.dead_letters())) == count


async def _inbox_is_empty(cluster: Cluster, alias: str) -> bool:
    inbox = cluster.keys.agent_inbox(alias)
    return await cluster.redis.xlen(inbox) == 0 and await cluster.apending(alias) == {}


@pytest.mark.parametrize("alias", ["CRASHER", "EXITER"])
async def test_a_call_that_keeps_crashing_workers_is_dead_lettered(cluster: Cluster, alias: str) -> None:
    """Each delivery kills the worker; the worker restarted under the same name takes the call
    back at once (a new delivery), until the budget (3) is spent and the call is given up."""
    targets = ("control:crasher", "control:exiter", "echo_app:echo")
    exit_code = -signal.SIGKILL if alias == "CRASHER" else 3
    async with cluster.mini_agents():
        call = MiniAgent(alias=alias).initiate_call()
        reply = call.reply_sequence()
        for delivery in (1, 2, 3):
            worker = await cluster.aworker(*targets, name="dyno.1")
            assert await worker.await_exit() == exit_code, f"delivery {delivery}"
        survivor = await cluster.aworker(*targets, name="dyno.1")
        with pytest.raises(CallFailedError, match="delivered 4 times without finishing"):
            await asyncio.wait_for(asyncio.ensure_future(reply), 60)
    assert len(await cluster.alist("started")) == 3
    dead = await cluster.adead_letters()
    assert len(dead) == 1
    assert dead[0]["call_id"] == call.call_id
    assert dead[0]["agent"] == alias
    assert "delivered 4 times" in dead[0]["reason"]
    assert (await cluster.acall_hash(call.call_id))["state"] == "failed"
    await wait_until(lambda: _inbox_is_empty(cluster, alias), 10, "the call acknowledged")
    # The worker that gave up goes on serving.
    assert await _echo_once(cluster, "alive") == ["echo: alive"]
    assert survivor.is_running()


async def test_a_call_that_keeps_crashing_is_given_up_across_different_workers(cluster: Cluster) -> None:
    """The same budget holds when the deliveries go to different workers (takeovers)."""
    async with cluster.mini_agents():
        reply = MiniAgent(alias="CRASHER").trigger()
        workers = []
        for _ in range(3):
            workers.append(await cluster.aworker("control:crasher", worker_timeout_s=1.5))
            assert await workers[-1].await_exit(30) == -signal.SIGKILL
        workers.append(await cluster.aworker("control:crasher", worker_timeout_s=1.5))
        with pytest.raises(CallFailedError):
            await asyncio.wait_for(asyncio.ensure_future(reply), 60)
    assert [int(pid) for pid in await cluster.alist("started")] == [worker.pid for worker in workers[:3]]
    assert workers[-1].is_running()


async def test_an_agent_that_raises_has_its_error_delivered_and_the_worker_goes_on(cluster: Cluster) -> None:
    worker = await cluster.aworker("echo_app:failing", "echo_app:echo")
    async with cluster.mini_agents():
        for _ in range(3):
            with pytest.raises(ValueError, match="the agent failed on purpose"):
                await MiniAgent(alias="FAILING").trigger(after=0)
        assert await MiniAgent(alias="ECHO").trigger("fine") == (TextMessage("echo: fine"),)
    await wait_until(lambda: _inbox_is_empty(cluster, "FAILING"), 10, "the failed calls acknowledged")
    assert worker.is_running()
    assert await cluster.adead_letters() == []  # an agent error is a reply, not a dead letter
