"""Issue 4, point 7: nothing a worker writes grows without bound.

Finished call and message streams get a TTL (as does the call's hash); inbox entries are deleted
when acknowledged; the dead-letter stream is trimmed (MAXLEN ~); dead workers are dropped from
the registry.
"""

from __future__ import annotations

import pytest

from brokeragents import MiniAgent, TextMessage
from brokeragents import store as store_module
from brokeragents.registry import now_ms
from helpers import wait_until
from worker_fixtures import Cluster

pytest_plugins = ("worker_fixtures",)
pytestmark = pytest.mark.real_redis

DAY_S = 24 * 3600


async def _ttl_s(cluster: Cluster, key: str) -> int:
    return int(await cluster.redis.ttl(key))


async def test_finished_call_and_message_streams_expire(cluster: Cluster) -> None:
    await cluster.aworker("control:streamer")
    async with cluster.mini_agents():
        call = MiniAgent(alias="STREAMER").initiate_call(tokens=3)
        assert await call.reply_sequence() == (TextMessage("tok0 tok1 tok2 "),)
    await wait_until(lambda: _call_done(cluster, call.call_id), 10, "the call to be finished")
    keys = cluster.keys
    reply_key, input_key = keys.call_reply(call.call_id), keys.call_input(call.call_id)
    message_keys = {
        fields[b"key"].decode()
        for _id, fields in await cluster.redis.xrange(reply_key)
        if fields[b"kind"] == b"message"
    }
    message_keys.add(keys.message(TextMessage("tok0 tok1 tok2 ").hash_key))  # the final message by hash
    assert message_keys
    for key in [reply_key, input_key, keys.call(call.call_id), *message_keys]:
        assert await cluster.redis.exists(key) == 1, key
        assert 0 < await _ttl_s(cluster, key) <= DAY_S, key


async def test_a_call_whose_caller_died_still_expires(cluster: Cluster) -> None:
    await cluster.aworker("control:streamer")
    caller = await cluster.start_call_cli("STREAMER", "tokens=3 gate=gate")
    await wait_until(lambda: _started(cluster), 20, "the call to start")
    caller.kill()
    await caller.wait()
    await cluster.redis.rpush(cluster.key("gate"), "go")
    call_keys = [key.decode() async for key in cluster.redis.scan_iter(match=f"{cluster.prefix}:call:*")]
    call_hashes = [key for key in call_keys if not key.endswith(("}:reply", "}:input"))]
    assert len(call_hashes) == 1
    call_id = call_hashes[0].split("{")[1].rstrip("}")
    await wait_until(lambda: _call_done(cluster, call_id), 10, "the worker to finish the call")
    for key in [call_hashes[0], cluster.keys.call_reply(call_id), cluster.keys.call_input(call_id)]:
        assert 0 < await _ttl_s(cluster, key) <= DAY_S, key


async def _started(cluster: Cluster) -> bool:
    return bool(await cluster.alist("started"))


async def _call_done(cluster: Cluster, call_id: str) -> bool:
    return (await cluster.acall_hash(call_id)).get("state") == "done"


async def test_acknowledged_inbox_entries_are_deleted(cluster: Cluster) -> None:
    worker = await cluster.aworker("echo_app:echo", "echo_app:failing")
    async with cluster.mini_agents():
        for index in range(20):
            assert await MiniAgent(alias="ECHO").trigger(str(index)) == (TextMessage(f"echo: {index}"),)
        with pytest.raises(ValueError):
            await MiniAgent(alias="FAILING").trigger()
    for alias in ("ECHO", "FAILING"):
        await wait_until(lambda a=alias: _inbox_empty(cluster, a), 10, f"the inbox of {alias} to be empty")
    consumers = await cluster.redis.xinfo_consumers(cluster.keys.agent_inbox("ECHO"), "workers")
    assert [consumer["name"].decode() for consumer in consumers] == [worker.name]


async def _inbox_empty(cluster: Cluster, alias: str) -> bool:
    inbox = cluster.keys.agent_inbox(alias)
    return await cluster.redis.xlen(inbox) == 0 and await cluster.apending(alias) == {}


async def test_the_dead_letter_stream_is_trimmed(cluster: Cluster, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(store_module, "_DEAD_LETTER_MAXLEN", 100)
    async with cluster.mini_agents() as mini_agents:
        store = mini_agents.store
        assert store is not None
        for index in range(1000):
            await store.arecord_dead_letter(f"rejected entry {index}", stream="somewhere")
    length = int(await cluster.redis.xlen(cluster.keys.dead_letters()))
    # "~" trims whole stream nodes (100 entries each by default): between 100 and about 200 stay.
    assert 100 <= length <= 250, length
    newest = await cluster.redis.xrevrange(cluster.keys.dead_letters(), count=1)
    assert newest[0][1][b"reason"] == b"rejected entry 999"


async def test_dead_workers_are_dropped_from_the_registry(cluster: Cluster) -> None:
    keys = cluster.keys
    long_dead = now_ms() - 3600 * 1000  # an hour ago: far past max(60 s, 6 x worker_timeout_s)
    await cluster.redis.zadd(keys.workers(), {"crashed-long-ago": long_dead})
    await cluster.redis.zadd(keys.agent_workers("ECHO"), {"crashed-long-ago": long_dead})
    recently = now_ms() - 5_000  # dead, but recently: still shown (status, takeover)
    await cluster.redis.zadd(keys.agent_workers("ECHO"), {"crashed-just-now": recently})
    worker = await cluster.aworker("echo_app:echo")
    await wait_until(lambda: _not_registered(cluster, "crashed-long-ago"), 10, "the long-dead worker dropped")
    assert await cluster.redis.zscore(keys.agent_workers("ECHO"), "crashed-just-now") is not None
    assert await cluster.redis.zscore(keys.agent_workers("ECHO"), worker.name) is not None


async def _not_registered(cluster: Cluster, name: str) -> bool:
    keys = cluster.keys
    return (
        await cluster.redis.zscore(keys.workers(), name) is None
        and await cluster.redis.zscore(keys.agent_workers("ECHO"), name) is None
    )
