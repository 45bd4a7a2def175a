"""Issue 6, point 2: workers count calls, errors, tokens, latency, takeovers and dead letters.

Counters are read from a registry of the test's own; ``worker --metrics-port`` is scraped over
HTTP from a worker process.
"""

from __future__ import annotations

import asyncio
import urllib.request
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from brokeragents import MiniAgent
from brokeragents.keys import WORKER_GROUP, Keys
from brokeragents.metrics import WorkerMetrics
from helpers import Backend, wait_until
from ops_support import aserving, broken, caller, free_port, words
from worker_fixtures import Cluster

pytest_plugins = ("worker_fixtures",)


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def test_calls_tokens_errors_latency_and_malformed_entries(redis_backend: Backend) -> None:
    client = redis_backend.client()
    registry = CollectorRegistry()
    async with aserving([words, broken], client, metrics=WorkerMetrics(registry)), caller(client):
        replies = await MiniAgent(alias="WORDS").trigger(["one two three", "four"])
        assert [str(m) for m in replies] == ["one two three ", "four "]
        with pytest.raises(ValueError):
            await MiniAgent(alias="BROKEN").trigger()
        await client.xadd(Keys().agent_inbox("WORDS"), {"call_id": "bad entry"})

        def counted() -> bool:
            return _value(registry, "brokeragents_dead_letters_total", agent="WORDS", reason="malformed") == 1

        await wait_until(counted, what="the malformed entry to be counted")
        await wait_until(lambda: _value(registry, "brokeragents_calls_total", agent="BROKEN", outcome="error") == 1)
    assert _value(registry, "brokeragents_calls_total", agent="WORDS", outcome="ok") == 1
    assert _value(registry, "brokeragents_tokens_total", agent="WORDS") == 4
    assert _value(registry, "brokeragents_call_duration_seconds_count", agent="WORDS") == 1
    assert 0 < _value(registry, "brokeragents_call_duration_seconds_sum", agent="WORDS") < 30
    assert _value(registry, "brokeragents_call_duration_seconds_bucket", agent="WORDS", le="+Inf") == 1
    assert _value(registry, "brokeragents_errors_total", agent="BROKEN", kind="reply") == 1
    assert _value(registry, "brokeragents_tokens_total", agent="BROKEN") == 1  # "partial", then the error
    assert _value(registry, "brokeragents_takeovers_total", agent="WORDS") == 0


async def _leave_a_call_with_a_dead_worker(client: object, alias: str, prefix: str) -> None:
    """Send a call nobody serves, and have a consumer that never heartbeats read it."""
    redis: object = client
    inbox = Keys(prefix).agent_inbox(alias)
    await redis.xgroup_create(inbox, WORKER_GROUP, id="0", mkstream=True)  # type: ignore[attr-defined]

    async def delivered_to_ghost() -> bool:
        reply = await redis.xreadgroup(WORKER_GROUP, "ghost", {inbox: ">"}, count=1)  # type: ignore[attr-defined]
        return bool(reply and reply[0][1])

    await wait_until(delivered_to_ghost, what="the call to reach the dead consumer")


async def test_takeovers_and_calls_given_up_are_counted(redis_backend: Backend) -> None:
    client = redis_backend.client()
    registry = CollectorRegistry()
    async with caller(client, "tk"):
        taken_over = MiniAgent(alias="WORDS").trigger("taken over")
        await _leave_a_call_with_a_dead_worker(client, "WORDS", "tk")
        async with aserving([words], client, prefix="tk", metrics=WorkerMetrics(registry), claim_interval_s=0.1):
            assert [str(m) for m in await taken_over] == ["taken over "]
    assert _value(registry, "brokeragents_takeovers_total", agent="WORDS") == 1
    assert _value(registry, "brokeragents_calls_total", agent="WORDS", outcome="ok") == 1

    async with caller(client, "gu"):
        given_up = MiniAgent(alias="WORDS").trigger("given up")
        await _leave_a_call_with_a_dead_worker(client, "WORDS", "gu")
        settings: dict[str, Any] = {"claim_interval_s": 0.1, "max_deliveries": 1}
        async with aserving([words], client, prefix="gu", metrics=WorkerMetrics(registry), **settings):
            with pytest.raises(Exception, match="Gave up"):
                await given_up
    assert _value(registry, "brokeragents_dead_letters_total", agent="WORDS", reason="gave_up") == 1
    assert _value(registry, "brokeragents_calls_total", agent="WORDS", outcome="gave_up") == 1
    assert _value(registry, "brokeragents_takeovers_total", agent="WORDS") == 2


def test_workers_of_one_process_share_the_metrics_of_a_registry() -> None:
    registry = CollectorRegistry()
    first, second = WorkerMetrics(registry), WorkerMetrics(registry)
    first.takeover("A")
    second.takeover("A")
    assert _value(registry, "brokeragents_takeovers_total", agent="A") == 2
    WorkerMetrics()  # the default registry, twice: no duplicate registration
    WorkerMetrics()


@pytest.mark.real_redis
async def test_worker_serves_metrics_on_its_port(cluster: Cluster) -> None:
    port = free_port()
    worker = await cluster.aworker("echo_app:echo", extra_args=("--metrics-port", str(port)))
    async with cluster.mini_agents():
        assert [str(m) for m in await MiniAgent(alias="ECHO").trigger("hi")] == ["echo: hi"]

    def scrape() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
            return str(response.read().decode())

    async def served_once() -> bool:
        text = await asyncio.to_thread(scrape)
        return 'brokeragents_calls_total{agent="ECHO",outcome="ok"} 1.0' in text

    await wait_until(served_once, what="the call in the scraped metrics")
    text = await asyncio.to_thread(scrape)
    assert 'brokeragents_call_duration_seconds_count{agent="ECHO"} 1.0' in text
    assert 'brokeragents_tokens_total{agent="ECHO"} 1.0' in text
    assert f"Serving metrics on http://127.0.0.1:{port}/metrics" in worker.output()
