"""Issue 4, point 4: crash safety with real processes killed by SIGKILL.

A worker killed at any point of a call (before the first token, mid-stream, after the last
token, right before the acknowledgement) has the call taken over by another worker, one already
running or one started later, once its heartbeat is older than --worker-timeout-s. The caller's
final reply is exactly one complete attempt; live consumers see the restart as a
``ReplyRestartedError`` (at the cut in the message that was streaming, and as a piece of the
reply sequence) followed by the new attempt. A slow turn of a live worker is never taken over,
and a worker restarted under the same --name takes its own pending call back at once.
"""

from __future__ import annotations

import asyncio
import json
import signal
import time
from typing import Any

import pytest

from brokeragents import MiniAgent, TextMessage
from helpers import wait_until
from worker_fixtures import WORKER_TIMEOUT_S, Cluster, WorkerProc, consume_live

pytest_plugins = ("worker_fixtures",)
pytestmark = pytest.mark.real_redis

TOKENS = 6
FULL = "".join(f"tok{index} " for index in range(TOKENS))
# Generous bounds: a takeover needs the heartbeat to age past the timeout, then a claim round.
TAKEOVER_LIMIT_S = WORKER_TIMEOUT_S * 3 + 5
# What a live consumer saw of the message that was streaming when its worker died.
CUT_AT = {"before_first": None, "mid": "tok0 tok1 tok2 ", "after_last": FULL}


async def within(awaitable: Any, timeout_s: float = 60.0) -> Any:
    """Await ``awaitable``, failing the test instead of hanging if a regression loses the reply."""
    return await asyncio.wait_for(asyncio.ensure_future(awaitable), timeout_s)


def expected_live_view(kill_at: str) -> list[tuple[str, str]]:
    cut = CUT_AT[kill_at]
    before = [] if cut is None else [("cut", cut)]
    return [*before, ("restart", ""), ("message", FULL)]


async def started(cluster: Cluster) -> list[tuple[int, int]]:
    """(pid, attempt) of each run of the streamer, in order."""
    return [(int(pid), int(attempt)) for pid, attempt in (item.split(":") for item in await cluster.alist("started"))]


async def assert_clean_finish(cluster: Cluster, call_id: str, attempts: int) -> None:
    """The call is done after ``attempts`` attempts and nothing of it is left in the inbox."""
    call = await cluster.acall_hash(call_id)
    assert (call["state"], call["attempt"]) == ("done", str(attempts))
    await wait_until(lambda: _inbox_empty(cluster, "STREAMER"), 10, "the call to be acknowledged")


async def _inbox_empty(cluster: Cluster, alias: str) -> bool:
    return await cluster.apending(alias) == {} and await cluster.redis.xlen(cluster.keys.agent_inbox(alias)) == 0


def victim_and_survivor(workers: list[WorkerProc], pid: int) -> tuple[WorkerProc, WorkerProc]:
    victim = next(worker for worker in workers if worker.pid == pid)
    return victim, next(worker for worker in workers if worker is not victim)


@pytest.mark.parametrize("kill_at", ["before_first", "mid", "after_last"])
async def test_a_running_worker_takes_over_a_killed_workers_call(cluster: Cluster, kill_at: str) -> None:
    workers = await cluster.aworkers(2, "control:streamer")
    async with cluster.mini_agents():
        call = MiniAgent(alias="STREAMER").initiate_call(tokens=TOKENS, kill_at=kill_at)
        reply = call.reply_sequence()
        live_view = await within(consume_live(reply))
        final = await within(reply)
        runs = await started(cluster)
    assert final == (TextMessage(FULL),)
    assert live_view == expected_live_view(kill_at)
    victim, survivor = victim_and_survivor(workers, runs[0][0])
    assert runs == [(victim.pid, 1), (survivor.pid, 2)]
    assert victim.returncode == -signal.SIGKILL
    assert survivor.is_running()
    await assert_clean_finish(cluster, call.call_id, attempts=2)


async def test_killed_before_the_acknowledgement_the_reply_is_not_produced_again(cluster: Cluster) -> None:
    workers = await cluster.aworkers(2, "control:streamer")
    await cluster.redis.set(cluster.key("kill_before_ack"), "1")
    async with cluster.mini_agents():
        call = MiniAgent(alias="STREAMER").initiate_call(tokens=TOKENS)
        reply = call.reply_sequence()
        live_view = await within(consume_live(reply))
        final = await within(reply)
    assert final == (TextMessage(FULL),)
    assert live_view == [("message", FULL)]  # complete before the kill: no restart to see
    runs = await started(cluster)
    victim, survivor = victim_and_survivor(workers, runs[0][0])
    assert await victim.await_exit() == -signal.SIGKILL
    # The survivor takes the entry over, sees the call finished and only acknowledges it.
    started_at = time.monotonic()
    await wait_until(lambda: _inbox_empty(cluster, "STREAMER"), TAKEOVER_LIMIT_S, "takeover of the acknowledgement")
    print(f"acknowledgement taken over {time.monotonic() - started_at:.2f} s after the kill")
    assert await started(cluster) == runs == [(victim.pid, 1)]
    assert (await cluster.acall_hash(call.call_id))["attempt"] == "1"
    assert survivor.is_running()


async def test_a_worker_started_later_takes_over(cluster: Cluster) -> None:
    first = await cluster.aworker("control:streamer")
    async with cluster.mini_agents():
        call = MiniAgent(alias="STREAMER").initiate_call(tokens=TOKENS, kill_at="mid")
        reply = call.reply_sequence()
        assert await first.await_exit() == -signal.SIGKILL
        killed_at = time.monotonic()
        second = await cluster.aworker("control:streamer")
        final = await within(reply)
        took_over_after_s = time.monotonic() - killed_at
        live_view = await consume_live(reply)  # a replay now shows what a live consumer saw
    print(f"taken over by a worker started later {took_over_after_s:.2f} s after the kill")
    assert final == (TextMessage(FULL),)
    assert live_view == expected_live_view("mid")
    assert await started(cluster) == [(first.pid, 1), (second.pid, 2)]
    assert took_over_after_s < TAKEOVER_LIMIT_S
    await assert_clean_finish(cluster, call.call_id, attempts=2)


async def test_takeover_happens_after_the_worker_timeout(cluster: Cluster) -> None:
    workers = await cluster.aworkers(2, "control:streamer")
    async with cluster.mini_agents():
        call = MiniAgent(alias="STREAMER").initiate_call(tokens=TOKENS, kill_at="mid")
        reply = call.reply_sequence()
        await wait_until(lambda: _runs_are(cluster, 1), 20, "the first attempt to start")
        victim, _survivor = victim_and_survivor(workers, (await started(cluster))[0][0])
        await victim.await_exit()
        killed_at = time.monotonic()
        await wait_until(lambda: _runs_are(cluster, 2), TAKEOVER_LIMIT_S, "the takeover")
        took_over_after_s = time.monotonic() - killed_at
        assert await within(reply) == (TextMessage(FULL),)
    print(f"taken over by a running worker {took_over_after_s:.2f} s after the kill")
    # Not before the dead worker's last heartbeat is worker_timeout_s old (a heartbeat can be
    # up to worker_timeout_s / 3 old at the kill), and within a couple of claim rounds after.
    assert WORKER_TIMEOUT_S * 2 / 3 - 0.2 <= took_over_after_s < TAKEOVER_LIMIT_S


async def _runs_are(cluster: Cluster, count: int) -> bool:
    return len(await cluster.alist("started")) == count


async def test_call_json_after_a_crash_prints_exactly_one_complete_attempt(cluster: Cluster) -> None:
    await cluster.aworkers(2, "control:streamer")
    code, out, err = await cluster.acall_cli("STREAMER", f"tokens={TOKENS} kill_at=mid", "--json")
    assert code == 0, err
    message = TextMessage(FULL)
    assert [json.loads(line) for line in out.splitlines()] == [{**message.serialize(), "hash_key": message.hash_key}]
    assert len(await started(cluster)) == 2


async def test_call_streaming_after_a_crash_reports_the_restart(cluster: Cluster) -> None:
    await cluster.aworkers(2, "control:streamer")
    code, out, err = await cluster.acall_cli("STREAMER", f"tokens={TOKENS} kill_at=mid")
    assert code == 0, err
    assert out == "tok0 tok1 tok2 \n" + FULL + "\n"  # the cut attempt's line, then the new attempt
    assert "the reply restarts (attempt 2)" in err


async def test_a_slow_turn_of_a_live_worker_is_never_taken_over(cluster: Cluster) -> None:
    timeout_s = 1.5  # a worker silent for 1.5 s is dead; the turn lasts three times that
    await cluster.aworkers(2, "control:slow", worker_timeout_s=timeout_s)
    async with cluster.mini_agents():
        call = MiniAgent(alias="SLOW").initiate_call(seconds=timeout_s * 3)
        final = await call.reply_sequence()
    assert final == (TextMessage("thinking... done"),)
    assert len(await cluster.alist("started")) == 1
    assert (await cluster.acall_hash(call.call_id))["attempt"] == "1"
    reply_entries = await cluster.redis.xrange(cluster.keys.call_reply(call.call_id))
    assert all(fields[b"kind"] != b"restart" for _id, fields in reply_entries)


async def test_a_worker_restarted_under_the_same_name_takes_its_call_back_at_once(cluster: Cluster) -> None:
    long_timeout_s = 60.0  # nobody else may take the call over for a minute
    first = await cluster.aworker("control:streamer", name="worker.1", worker_timeout_s=long_timeout_s)
    async with cluster.mini_agents():
        call = MiniAgent(alias="STREAMER").initiate_call(tokens=TOKENS, kill_at="mid")
        reply = call.reply_sequence()
        assert await first.await_exit() == -signal.SIGKILL
        other = await cluster.aworker("control:streamer", name="worker.2", worker_timeout_s=long_timeout_s)
        restarted_at = time.monotonic()
        again = await cluster.aworker("control:streamer", name="worker.1", worker_timeout_s=long_timeout_s)
        assert await within(reply) == (TextMessage(FULL),)
        took_back_after_s = time.monotonic() - restarted_at
    print(f"taken back by the same name {took_back_after_s:.2f} s after the restart")
    assert took_back_after_s < 15 < long_timeout_s
    assert await started(cluster) == [(first.pid, 1), (again.pid, 2)]
    assert other.is_running()
    await assert_clean_finish(cluster, call.call_id, attempts=2)
