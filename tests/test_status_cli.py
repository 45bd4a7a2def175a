"""Issue 6, point 1: ``brokeragents status`` shows agents, workers, calls in flight and queued.

The logic runs on both backends with an in-process worker; the command itself runs as a
subprocess against worker processes on a real server.
"""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator

import pytest

from brokeragents import MiniAgent
from brokeragents.keys import Keys
from brokeragents.registry import now_ms
from brokeragents.status import Status, acollect_status, write_status
from helpers import Backend, wait_until
from ops_support import GATES, arun_cli, aserving, caller, gated
from worker_fixtures import Cluster

pytest_plugins = ("worker_fixtures",)


@pytest.fixture
def gate() -> Iterator[asyncio.Event]:
    GATES["main"] = event = asyncio.Event()
    yield event
    event.set()
    GATES.pop("main", None)


async def test_status_counts_in_flight_queued_and_dead_letters(redis_backend: Backend, gate: asyncio.Event) -> None:
    client = redis_backend.client()
    keys = Keys("st")
    await client.zadd(keys.workers(), {"long-gone": now_ms() - 30_000})  # a worker that stopped heartbeating

    async def status() -> Status:
        return await acollect_status(client, keys, url="redis://app:hunter2@db.example:6379/0")

    async with aserving([gated], client, prefix="st", name="w-status", concurrency=1):
        await client.xadd(keys.agent_inbox("GATED"), {"call_id": "not-valid"})  # rejected: a dead letter
        await wait_until(lambda: _dead_letters(client, keys), what="the dead letter")
        async with caller(client, "st"):
            replies = [MiniAgent(alias="GATED").trigger(str(n)) for n in range(3)]

            async def one_in_flight_two_queued() -> bool:
                agent = (await status()).agents[0]
                return (agent.in_flight, agent.queued) == (1, 2)

            await wait_until(one_in_flight_two_queued, what="1 call in flight and 2 queued")
            current = await status()
            gate.set()
            assert [str(m) for r in replies for m in await r] == ["before after"] * 3

        async def drained() -> bool:
            agent = (await status()).agents[0]
            return (agent.in_flight, agent.queued) == (0, 0)

        await wait_until(drained, what="no call in flight nor queued")

    (agent,) = current.agents
    assert (agent.alias, agent.live_workers, agent.pending_per_worker) == ("GATED", 1, {"w-status": 1})
    workers = {worker.name: worker for worker in current.workers}
    assert workers["w-status"].alive and workers["w-status"].agents == ["GATED"]
    assert workers["w-status"].heartbeat_age_s < 3
    assert not workers["long-gone"].alive and workers["long-gone"].heartbeat_age_s >= 29
    assert current.dead_letters == 1
    assert current.calls_logged == 3
    assert current.redis == "redis://app:***@db.example:6379/0"

    text = io.StringIO()
    write_status(current, text)
    lines = text.getvalue().splitlines()
    assert lines[0] == "Redis redis://app:***@db.example:6379/0  (key prefix 'st')"
    assert any(line.split()[:4] == ["GATED", "1", "1", "2"] for line in lines)
    assert any(line.startswith("w-status") and " alive " in line for line in lines)
    assert any(line.startswith("long-gone") and " dead " in line for line in lines)
    assert "Dead letters: 1" in text.getvalue()
    assert "hunter2" not in text.getvalue()

    as_json = io.StringIO()
    write_status(current, as_json, as_json=True)
    document = json.loads(as_json.getvalue())
    assert document["agents"][0]["in_flight"] == 1 and document["agents"][0]["queued"] == 2
    assert document["dead_letters"] == 1 and document["key_prefix"] == "st"


async def _dead_letters(client: object, keys: Keys) -> bool:
    return bool(await client.xlen(keys.dead_letters()))  # type: ignore[attr-defined]


async def test_status_of_an_empty_prefix(redis_backend: Backend) -> None:
    status = await acollect_status(redis_backend.client(), Keys("empty"))
    assert (status.agents, status.workers, status.dead_letters, status.calls_logged) == ([], [], 0, 0)
    text = io.StringIO()
    write_status(status, text)
    assert "No agents" in text.getvalue() and "No workers." in text.getvalue()


@pytest.mark.real_redis
async def test_status_command_against_worker_processes(cluster: Cluster) -> None:
    worker = await cluster.aworker("echo_app:agents", name="w-cli")
    code, _out, err = await cluster.acall_cli("ECHO", "hello")
    assert code == 0, err
    args = ("status", "--redis-url", cluster.redis_url, "--key-prefix", cluster.prefix)
    code, out, err = await arun_cli(*args, "--json")
    assert code == 0, err
    document = json.loads(out)
    assert {agent["alias"] for agent in document["agents"]} == {"ECHO", "UPPER"}
    assert all(agent["live_workers"] == 1 for agent in document["agents"])
    (listed,) = document["workers"]
    assert (listed["name"], listed["alive"], listed["pid"]) == ("w-cli", True, str(worker.pid))
    assert document["calls_logged"] == 1

    code, out, err = await arun_cli(*args)
    assert code == 0, err
    assert "ECHO" in out and "w-cli" in out and "alive" in out


async def test_status_command_fails_clearly_without_a_server() -> None:
    code, out, err = await arun_cli("status", "--redis-url", "redis://ops:s3cr3t-pw@127.0.0.1:1/0")
    assert code == 2 and out == ""
    assert "redis://ops:***@127.0.0.1:1/0" in err
    assert "s3cr3t" not in err
