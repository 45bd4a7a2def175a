"""The worker, call, takeover and replay flows on a 3-master Redis Cluster (``redis+cluster://``).

The cluster is started from the server binary once per session (tests/cluster_fixtures.py). The
keys of every call made here are checked to map to one slot (``CLUSTER KEYSLOT`` on the server);
``cluster_prefix`` fails a test whose commands made a server answer CROSSSLOT, and
``cluster_workers`` fails one whose worker logged a cross-slot error (raised client-side by redis-py).
"""

from __future__ import annotations

import asyncio
import re
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import aiohttp

from brokeragents import (
    MessagePromise,
    MessageSequence,
    MessageTokenAppender,
    MiniAgent,
    MiniAgents,
    TextMessage,
    aopen_message_promise,
    aopen_sequence_promise,
)
from brokeragents.dashboard import Dashboard
from brokeragents.errors import ReplyRestartedError
from brokeragents.keys import Keys, new_id
from brokeragents.registry import Registry
from brokeragents.store import create_redis_client, is_cluster_url
from helpers import wait_until

if TYPE_CHECKING:
    from cluster_fixtures import LocalCluster, WorkerGroup, WorkerProcess

pytest_plugins = ("cluster_fixtures",)

HASH_TAG = re.compile(r"\{([^}]*)\}")


async def wait_for_worker(context: MiniAgents, alias: str, worker: WorkerProcess) -> None:
    store = context.store
    assert store is not None
    registry = Registry(store.redis, store.keys)

    async def served() -> bool:
        assert worker.process.poll() is None, worker.output()
        return await registry.ais_served(alias)

    await wait_until(served, timeout_s=20, what=f"a worker serving {alias}")


def assert_call_keys_share_a_slot(cluster: LocalCluster, prefix: str) -> set[str]:
    """Every call key under ``prefix`` is in one slot with the other keys of its call; returns the call ids."""
    by_call: dict[str, set[str]] = defaultdict(set)
    for key in cluster.keys(f"{prefix}:call:*"):
        tag = HASH_TAG.search(key)
        assert tag is not None, key
        by_call[tag.group(1)].add(key)
    keys = Keys(prefix)
    for call_id, call_keys in by_call.items():
        assert {keys.call(call_id), keys.call_input(call_id), keys.call_reply(call_id)} >= call_keys
        assert keys.call_reply(call_id) in call_keys
        assert len({cluster.keyslot(key) for key in call_keys}) == 1, call_keys
    return set(by_call)


async def logged_calls(context: MiniAgents) -> list[dict[str, str]]:
    store = context.store
    assert store is not None
    entries = await store.redis.xrange(store.keys.calls_log())
    return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries]


async def collect_reply(reply: Any) -> tuple[list[str], list[BaseException]]:
    """Every token of every reply message, and the restart errors met on the way (as a live caller sees them)."""
    tokens: list[str] = []
    errors: list[BaseException] = []
    iterator = reply.__aiter__()
    while True:
        try:
            promise = await iterator.__anext__()
        except StopAsyncIteration:
            return tokens, errors
        except ReplyRestartedError as exc:  # the restart marker in the sequence
            errors.append(exc)
            continue
        assert isinstance(promise, MessagePromise)
        try:
            async for token in promise:
                tokens.append(str(token))
        except ReplyRestartedError as exc:  # the message the dead worker was streaming
            errors.append(exc)


def test_cluster_urls() -> None:
    assert is_cluster_url("redis+cluster://127.0.0.1:7000")
    assert is_cluster_url("rediss+cluster://user:pw@h:7000")
    assert is_cluster_url("redis://h:7000?cluster=true")
    assert not is_cluster_url("redis://h:6379/0")
    assert not is_cluster_url("redis://h:6379/0?cluster=false")


def test_the_keys_of_one_call_and_of_one_agent_share_a_slot(redis_cluster: LocalCluster) -> None:
    keys = Keys("ba")
    call_id = new_id()
    call_slots = {redis_cluster.keyslot(key) for key in (keys.call(call_id), keys.call_input(call_id),
                                                         keys.call_reply(call_id))}  # fmt: skip
    assert len(call_slots) == 1
    assert redis_cluster.keyslot(keys.agent_inbox("POET")) == redis_cluster.keyslot(keys.agent_workers("POET"))
    # Slots spread: 20 calls do not all land on one of the three masters.
    assert len({redis_cluster.keyslot(keys.call(new_id())) * 3 // 16384 for _ in range(20)}) > 1


async def test_a_cluster_url_gives_a_cluster_client_that_finds_every_master(redis_cluster: LocalCluster) -> None:
    client: Any = create_redis_client(redis_cluster.url)
    try:
        assert await client.ping()
        assert type(client).__name__ == "RedisCluster"
        assert {node.port for node in client.get_primaries()} == set(redis_cluster.ports)
    finally:
        await client.aclose()


async def test_replay_of_a_streamed_message_and_a_sequence_across_two_clients(
    redis_cluster: LocalCluster, cluster_prefix: str
) -> None:
    """A writer and a reader context, each with its own cluster client, in their own tasks."""
    url = redis_cluster.url
    loop = asyncio.get_running_loop()
    message_key: asyncio.Future[str] = loop.create_future()
    sequence_key: asyncio.Future[str] = loop.create_future()
    first_token_seen = asyncio.Event()
    first_item_seen = asyncio.Event()

    async def write() -> tuple[str, list[str]]:
        async with MiniAgents(redis_url=url, key_prefix=cluster_prefix, remote_calls="never") as context:
            assert context.store is not None
            sequence = MessageSequence(errors_as_messages=False)
            with sequence.message_appender as items:
                appender = MessageTokenAppender()
                with appender:
                    promise = TextMessage.promise(message_token_streamer=appender, topic="cluster")
                    items.append(promise)
                    drained = asyncio.create_task(texts_of(sequence.sequence_promise))
                    appender.append("streamed ")
                    await context.store.aflush()
                    assert promise.redis_key is not None and sequence.sequence_promise.redis_key is not None
                    message_key.set_result(promise.redis_key)
                    sequence_key.set_result(sequence.sequence_promise.redis_key)
                    await first_token_seen.wait()  # the reader got the first token live
                    appender.append("across ")
                    appender.append("slots")
                await first_item_seen.wait()
                items.append("second item")
            return str(await promise), await drained

    async def read() -> tuple[list[str], list[str]]:
        async with MiniAgents(redis_url=url, key_prefix=cluster_prefix, remote_calls="never"):
            promise = await aopen_message_promise(await message_key)
            assert promise.known_beforehand["topic"] == "cluster"
            tokens = []
            async for token in promise:
                tokens.append(str(token))
                first_token_seen.set()
            texts = []
            async for item in await aopen_sequence_promise(await sequence_key):
                texts.append(str(await item))
                first_item_seen.set()
            return tokens, texts

    reader = asyncio.create_task(read())
    written_text, written_items = await asyncio.wait_for(asyncio.create_task(write()), timeout=15)
    tokens, texts = await asyncio.wait_for(reader, timeout=15)
    assert tokens == ["streamed ", "across ", "slots"]
    assert "".join(tokens) == written_text
    assert texts == written_items == ["streamed across slots", "second item"]


async def texts_of(sequence: Any) -> list[str]:
    return [str(await item) async for item in sequence]


async def test_a_call_served_by_a_worker_subprocess(
    redis_cluster: LocalCluster, cluster_prefix: str, cluster_workers: WorkerGroup
) -> None:
    worker = cluster_workers.start()
    async with MiniAgents(redis_url=redis_cluster.url, key_prefix=cluster_prefix) as context:
        await wait_for_worker(context, "CLUSTER_BOSS", worker)
        reply = MiniAgent(alias="CLUSTER_BOSS").trigger("hello from a cluster")
        tokens, errors = await asyncio.wait_for(collect_reply(reply), timeout=15)
        calls = await logged_calls(context)

    assert errors == []
    assert "".join(tokens) == "hello from a cluster "
    by_agent = {call["agent"]: call for call in calls}
    assert set(by_agent) == {"CLUSTER_BOSS", "CLUSTER_ECHO"}  # the boss called the echo agent
    assert by_agent["CLUSTER_ECHO"]["parent_call"] == by_agent["CLUSTER_BOSS"]["call_id"]
    assert by_agent["CLUSTER_BOSS"]["parent_call"] == ""
    assert assert_call_keys_share_a_slot(redis_cluster, cluster_prefix) == {call["call_id"] for call in calls}
    overview, events = await read_dashboard(redis_cluster.url, cluster_prefix, by_agent["CLUSTER_ECHO"]["call_id"])
    assert {(call["agent"], call["state"]) for call in overview["calls"]} == {("CLUSTER_BOSS", "done"),
                                                                            ("CLUSTER_ECHO", "done")}  # fmt: skip
    assert [worker["name"] for worker in overview["workers"]] == [worker.name]
    assert events[-2:] == ["event: end", "data: {}"] and 'data: {"index": 0, "token": "cluster "}' in events


async def read_dashboard(url: str, prefix: str, call_id: str) -> tuple[dict[str, Any], list[str]]:
    """The dashboard's overview, and the SSE lines of a call's reply, served from the cluster."""
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = asyncio.create_task(
        Dashboard(redis_url=url, key_prefix=prefix).aserve("127.0.0.1", 0, stop=stop, on_ready=ready.set_result)
    )
    try:
        page = await asyncio.wait_for(ready, timeout=10)
        async with aiohttp.ClientSession() as session:
            async with session.get(page + "api/overview") as response:
                overview = await response.json()
            async with session.get(f"{page}api/calls/{call_id}/stream") as response:
                lines = [line.decode().strip() async for line in response.content if line.strip()]
    finally:
        stop.set()
        await asyncio.wait_for(server, timeout=10)
    return overview, lines


async def test_a_call_is_taken_over_after_its_worker_is_killed(
    redis_cluster: LocalCluster, cluster_prefix: str, cluster_workers: WorkerGroup
) -> None:
    first = cluster_workers.start(token_delay_s=0.1, worker_timeout_s=1.0)
    async with MiniAgents(redis_url=redis_cluster.url, key_prefix=cluster_prefix) as context:
        await wait_for_worker(context, "CLUSTER_ECHO", first)
        reply = MiniAgent(alias="CLUSTER_ECHO").trigger("one two three four five six", repeat=2)
        live = asyncio.create_task(collect_reply(reply))

        def streamed() -> int:
            return sum(len(p.pieces_so_far) for p in reply.pieces_so_far if isinstance(p, MessagePromise))

        await wait_until(lambda: streamed() >= 3, timeout_s=15, what="the first tokens from the first worker")
        first.kill()  # SIGKILL mid-message: no deregistration, the call stays pending in the group
        second = cluster_workers.start(worker_timeout_s=1.0)
        tokens, errors = await asyncio.wait_for(live, timeout=20)
        (call,) = await logged_calls(context)
        assert context.store is not None
        state = await context.store.redis.hgetall(Keys(cluster_prefix).call(call["call_id"]))

    whole = "one two three four five six " * 2
    assert [type(error) for error in errors] == [ReplyRestartedError, ReplyRestartedError]
    text = "".join(tokens)
    assert text.endswith(whole) and whole.startswith(text[: -len(whole)])  # a dead attempt's prefix, then all
    assert len(text) > len(whole)
    assert state[b"attempt"] == b"2"
    assert state[b"worker"].decode() == second.name
    assert state[b"state"] == b"done"
    assert assert_call_keys_share_a_slot(redis_cluster, cluster_prefix) == {call["call_id"]}


def test_every_key_of_one_thing_has_a_hash_tag() -> None:
    keys = Keys()
    some_id = new_id()
    tagged = [keys.message(some_id), keys.sequence(some_id), keys.call(some_id), keys.call_input(some_id),
              keys.call_reply(some_id), keys.agent_inbox("A"), keys.agent_workers("A"), keys.worker("w"),
              keys.persisted(some_id)]  # fmt: skip
    assert all(HASH_TAG.search(key) for key in tagged)
