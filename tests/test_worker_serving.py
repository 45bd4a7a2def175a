"""Issue 4, point 1: ``brokeragents worker`` serves agents from real processes.

The CLI serves a MiniAgent or a list; REDIS_URL is read when --redis-url is absent; the current
directory is importable; two processes share the load of one consumer group; --concurrency N
bounds both the calls run at once and the entries read ahead.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path

import pytest

from brokeragents import MiniAgent, aopen_sequence_promise
from brokeragents.keys import new_id
from brokeragents.nodes import CallKwargs
from helpers import wait_until
from worker_fixtures import Cluster

pytest_plugins = ("worker_fixtures",)
pytestmark = pytest.mark.real_redis


async def _texts(reply: object) -> list[str]:
    return [str(message) for message in await reply]  # type: ignore[attr-defined]


async def test_serves_an_agent_and_a_list_of_agents(cluster: Cluster) -> None:
    worker = await cluster.aworker("echo_app:whoami", "echo_app:agents")
    async with cluster.mini_agents():
        assert await _texts(MiniAgent(alias="WHOAMI").trigger()) == [f"pid={worker.pid}"]
        assert await _texts(MiniAgent(alias="ECHO").trigger(["a", "b"])) == ["echo: a", "echo: b"]
        assert await _texts(MiniAgent(alias="UPPER").trigger("shout")) == ["SHOUT"]
    fields = await cluster.redis.hgetall(cluster.keys.worker(worker.name))
    assert fields[b"agents"].decode().split(",") == ["WHOAMI", "ECHO", "UPPER"]


async def test_reads_redis_url_from_the_environment(cluster: Cluster) -> None:
    worker = await cluster.aworker("echo_app:whoami", url_from_env=True)
    assert "--redis-url" not in worker.popen.args  # type: ignore[operator]
    async with cluster.mini_agents():
        assert await _texts(MiniAgent(alias="WHOAMI").trigger()) == [f"pid={worker.pid}"]


async def test_the_current_directory_is_importable(cluster: Cluster, tmp_path: Path) -> None:
    app_dir = tmp_path / "app"
    app_dir.mkdir()
    (app_dir / "only_here.py").write_text(
        "from brokeragents import miniagent\n\n\n"
        "@miniagent\n"
        "async def local_agent(ctx):\n"
        "    ctx.reply('served from the current directory')\n"
    )
    await cluster.aworker("only_here:local_agent", cwd=app_dir)
    async with cluster.mini_agents():
        assert await _texts(MiniAgent(alias="LOCAL_AGENT").trigger()) == ["served from the current directory"]


async def test_a_bad_import_path_fails_clearly(cluster: Cluster) -> None:
    worker = cluster.start_worker("no_such_module:agent")
    assert await worker.await_exit() == 2  # click usage error
    assert "Cannot import 'no_such_module'" in worker.output()
    worker = cluster.start_worker("echo_app:prefix_not_an_agent")
    assert await worker.await_exit() == 2
    assert "has no attribute" in worker.output()


async def test_two_processes_share_the_load_through_one_group(cluster: Cluster) -> None:
    first, second = await cluster.aworkers(2, "control:blocker", concurrency=1)
    async with cluster.mini_agents():
        replies = [MiniAgent(alias="BLOCKER").trigger() for _ in range(4)]
        # Each process holds one call (concurrency 1); the other two wait in the inbox.
        await wait_until(
            lambda: _pending_is(cluster, {first.name: 1, second.name: 1}), 20, "one call in flight per worker"
        )
        groups = await cluster.redis.xinfo_groups(cluster.keys.agent_inbox("BLOCKER"))
        assert [group["name"] for group in groups] == [b"workers"]
        await cluster.redis.rpush(cluster.key("gate"), *["go"] * 4)
        served_by = [texts[0] for texts in await asyncio.gather(*(_texts(reply) for reply in replies))]
    assert set(served_by) == {f"pid={first.pid}", f"pid={second.pid}"}
    # Acknowledged once each reply is complete (a moment after the caller has it).
    await wait_until(lambda: _pending_is(cluster, {}), 10, "every call acknowledged")


async def _pending_is(cluster: Cluster, expected: dict[str, int]) -> bool:
    return await cluster.apending("BLOCKER") == expected


async def test_concurrency_bounds_calls_run_at_once_and_entries_read(cluster: Cluster) -> None:
    inbox = cluster.keys.agent_inbox("BLOCKER")
    async with cluster.mini_agents():
        replies = [MiniAgent(alias="BLOCKER").trigger() for _ in range(10)]
        await wait_until(lambda: _xlen_is(cluster, inbox, 10), 10, "10 queued calls")
        worker = await cluster.aworker("control:blocker", concurrency=2)

        samples: list[int] = []
        stop = asyncio.Event()

        async def sample_pending() -> None:
            while not stop.is_set():
                samples.append((await cluster.apending("BLOCKER")).get(worker.name, 0))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.005)

        sampler = asyncio.create_task(sample_pending())
        try:
            for done in range(10):
                # Two calls run; the other entries are not even read (no read-ahead).
                running = min(2, 10 - done)
                await wait_until(lambda n=running: _running_is(cluster, n), 20, f"{running} calls running")
                assert (await cluster.apending("BLOCKER")).get(worker.name, 0) == running
                await cluster.redis.rpush(cluster.key("gate"), "go")
                await wait_until(lambda n=9 - done: _xlen_is(cluster, inbox, n), 20, "one call acknowledged")
            texts = [await _texts(reply) for reply in replies]
        finally:
            stop.set()
            await sampler
    assert texts == [[f"pid={worker.pid}"]] * 10
    assert max(samples) == 2, samples
    assert await cluster.redis.zscore(cluster.key("max_running"), "max") == 2


async def _xlen_is(cluster: Cluster, key: str, length: int) -> bool:
    return int(await cluster.redis.xlen(key)) == length


async def _running_is(cluster: Cluster, count: int) -> bool:
    return int(await cluster.redis.get(cluster.key("running")) or 0) == count


async def test_reads_stay_bounded_with_several_agents_in_one_worker(cluster: Cluster) -> None:
    """Each inbox it blocks on costs a slot, never more: pending entries <= concurrency overall."""
    async with cluster.mini_agents():
        blocked = [MiniAgent(alias="BLOCKER").trigger() for _ in range(4)]
        echoed = [MiniAgent(alias="ECHO").trigger(str(index)) for index in range(4)]
        await wait_until(lambda: _xlen_is(cluster, cluster.keys.agent_inbox("ECHO"), 4), 10, "queued calls")
        worker = await cluster.aworker("control:blocker", "echo_app:echo", concurrency=2)
        samples: list[int] = []
        stop = asyncio.Event()

        async def sample_pending() -> None:
            while not stop.is_set():
                pipe = cluster.redis.pipeline(transaction=True)  # one snapshot of both inboxes
                for alias in ("BLOCKER", "ECHO"):
                    pipe.xpending(cluster.keys.agent_inbox(alias), "workers")
                per_agent = await pipe.execute()
                samples.append(
                    sum(
                        int(consumer["pending"])
                        for summary in per_agent
                        for consumer in summary.get("consumers") or []
                        if consumer["name"].decode() == worker.name
                    )
                )
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.005)

        sampler = asyncio.create_task(sample_pending())
        try:
            await wait_until(lambda: _running_is(cluster, 2), 20, "two blocker calls running")
            await cluster.redis.rpush(cluster.key("gate"), *["go"] * 4)
            echo_texts = [[str(m) for m in await reply] for reply in echoed]
            blocker_texts = [[str(m) for m in await reply] for reply in blocked]
        finally:
            stop.set()
            await sampler
    assert echo_texts == [[f"echo: {index}"] for index in range(4)]
    assert blocker_texts == [[f"pid={worker.pid}"]] * 4
    assert max(samples) == 2, samples
    assert await cluster.redis.zscore(cluster.key("max_running"), "max") == 2


async def test_entries_with_the_same_id_in_two_inboxes_are_both_served(cluster: Cluster) -> None:
    """Entry ids are per stream: a worker serving two agents tells their entries apart."""
    worker = await cluster.aworker("control:blocker", "echo_app:whoami", concurrency=2)
    call_ids = {alias: new_id() for alias in ("BLOCKER", "WHOAMI")}
    for alias, call_id in call_ids.items():
        fields = {"call_id": call_id, "agent": alias, "kwargs": json.dumps(CallKwargs().serialize())}
        await cluster.redis.xadd(cluster.keys.agent_inbox(alias), fields, id="1-1")  # the same id twice
    async with cluster.mini_agents():
        whoami = await aopen_sequence_promise(cluster.keys.call_reply(call_ids["WHOAMI"]))
        assert [str(message) for message in await whoami] == [f"pid={worker.pid}"]
        await cluster.redis.rpush(cluster.key("gate"), "go")
        blocker = await aopen_sequence_promise(cluster.keys.call_reply(call_ids["BLOCKER"]))
        assert [str(message) for message in await blocker] == [f"pid={worker.pid}"]
    # Served on their first delivery, not as orphans found later by the claimer.
    assert "left pending" not in worker.output()
