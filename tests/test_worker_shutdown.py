"""Issue 4, point 5: graceful shutdown on SIGTERM.

The worker stops taking new calls at once, gives the calls in flight --shutdown-grace-s to
finish, leaves what did not finish pending (taken over by another worker), deregisters and exits
with code 0.
"""

from __future__ import annotations

import json
import signal

import pytest

from brokeragents import MiniAgent, TextMessage
from brokeragents.keys import new_id
from brokeragents.nodes import CallKwargs
from helpers import wait_until
from worker_fixtures import Cluster, WorkerProc, consume_live

pytest_plugins = ("worker_fixtures",)
pytestmark = pytest.mark.real_redis

FULL = "tok0 tok1 tok2 tok3 "


async def _stopping(worker: WorkerProc) -> bool:
    return "stopping" in worker.output()


async def test_a_call_in_flight_finishes_within_the_grace_period(cluster: Cluster) -> None:
    worker = await cluster.aworker("control:streamer", shutdown_grace_s=30)
    inbox = cluster.keys.agent_inbox("STREAMER")
    async with cluster.mini_agents():
        in_flight = MiniAgent(alias="STREAMER").initiate_call(tokens=4, gate="gate")
        reply = in_flight.reply_sequence()
        await wait_until(lambda: _started(cluster, 1), 20, "the call to start")
        worker.send(signal.SIGTERM)
        await wait_until(lambda: _stopping(worker), 10, "the worker to begin its shutdown")

        # Stopped reading: a call sent now stays in the inbox, delivered to nobody.
        late = MiniAgent(alias="STREAMER").initiate_call(tokens=4)
        late_reply = late.reply_sequence()
        await wait_until(lambda: _xlen_is(cluster, inbox, 2), 10, "the late call in the inbox")
        assert worker.is_running()
        assert await cluster.apending("STREAMER") == {worker.name: 1}

        await cluster.redis.rpush(cluster.key("gate"), "go")  # the call in flight can finish
        assert await reply == (TextMessage(FULL),)
        assert await worker.await_exit() == 0
        assert await cluster.apending("STREAMER") == {}
        assert await cluster.redis.xlen(inbox) == 1  # only the late call, never read
        assert await _started(cluster, 1)
        assert (await cluster.acall_hash(in_flight.call_id))["attempt"] == "1"
        # Deregistered: the registry no longer lists it.
        assert await cluster.redis.zscore(cluster.keys.agent_workers("STREAMER"), worker.name) is None
        assert await cluster.redis.exists(cluster.keys.worker(worker.name)) == 0

        # The late call is served by whoever comes next.
        await cluster.aworker("control:streamer")
        assert await late_reply == (TextMessage(FULL),)
    assert "Leaving" not in worker.output()  # nothing was left for takeover


async def test_a_call_that_cannot_finish_is_left_pending_and_taken_over(cluster: Cluster) -> None:
    stopping = await cluster.aworker("control:streamer", shutdown_grace_s=0.5)
    async with cluster.mini_agents():
        call = MiniAgent(alias="STREAMER").initiate_call(tokens=4, gate="gate")
        reply = call.reply_sequence()
        await wait_until(lambda: _started(cluster, 1), 20, "the call to start")
        survivor = await cluster.aworker("control:streamer")
        stopping.send(signal.SIGTERM)
        assert await stopping.await_exit() == 0
        assert "Leaving 1 call(s) pending for takeover" in stopping.output()
        # The survivor takes the call over at once (the stopped worker deregistered itself)
        # and runs it again; its second attempt waits for the gate too.
        await wait_until(lambda: _started(cluster, 2), 10, "the takeover")
        await cluster.redis.rpush(cluster.key("gate"), "go")
        assert await reply == (TextMessage(FULL),)
        # The handed-back attempt did not end the reply: a consumer sees it cut, then the restart.
        assert await consume_live(reply) == [("cut", "tok0 "), ("restart", ""), ("message", FULL)]
    runs = await cluster.alist("started")
    assert runs == [f"{stopping.pid}:1", f"{survivor.pid}:2"]
    assert (await cluster.acall_hash(call.call_id))["state"] == "done"
    await wait_until(lambda: _no_pending(cluster), 10, "the acknowledgement")


async def test_sigterm_on_an_idle_worker_exits_0_at_once(cluster: Cluster) -> None:
    worker = await cluster.aworker("echo_app:echo", shutdown_grace_s=30)
    worker.send(signal.SIGTERM)
    assert await worker.await_exit(10) == 0  # far less than the grace period
    assert await cluster.redis.zscore(cluster.keys.workers(), worker.name) is None


async def test_a_call_whose_caller_vanished_does_not_keep_the_worker_alive(cluster: Cluster) -> None:
    """A call whose input never ends (its caller died before finishing it) is handed back at
    the end of the grace period; the worker still exits 0."""
    worker = await cluster.aworker("echo_app:echo", shutdown_grace_s=0.5)
    call_id = new_id()
    fields = {"call_id": call_id, "agent": "ECHO", "kwargs": json.dumps(CallKwargs().serialize())}
    await cluster.redis.xadd(cluster.keys.agent_inbox("ECHO"), fields)  # no input stream, ever
    await wait_until(lambda: _running(cluster, call_id), 10, "the call to start")
    worker.send(signal.SIGTERM)
    assert await worker.await_exit(15) == 0
    assert "Leaving 1 call(s) pending for takeover" in worker.output()
    assert await cluster.apending("ECHO") == {worker.name: 1}


async def _running(cluster: Cluster, call_id: str) -> bool:
    return (await cluster.acall_hash(call_id)).get("state") == "running"


async def _started(cluster: Cluster, count: int) -> bool:
    return len(await cluster.alist("started")) == count


async def _xlen_is(cluster: Cluster, key: str, length: int) -> bool:
    return int(await cluster.redis.xlen(key)) == length


async def _no_pending(cluster: Cluster) -> bool:
    return await cluster.apending("STREAMER") == {}
