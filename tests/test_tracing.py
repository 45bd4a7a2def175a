"""Issue 6, point 2: OpenTelemetry trace context travels with calls, so a chain is one trace.

The caller puts ``traceparent`` into the inbox entry, the worker serves the call in a span that
continues it, and calls made from there carry the worker's span on. Without a tracer provider (or
without opentelemetry) nothing is added and nothing changes.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from brokeragents import InteractionContext, MiniAgent, miniagent, tracing
from helpers import Backend, wait_until
from ops_support import aserving, caller
from worker_fixtures import Cluster

sdk_trace = pytest.importorskip("opentelemetry.sdk.trace")
from opentelemetry import trace  # noqa: E402  (after the skip)

pytest_plugins = ("worker_fixtures",)


@pytest.fixture
def tracer() -> Iterator[Any]:
    """A tracer of an SDK provider of the test's own (the global provider stays untouched)."""
    provider = sdk_trace.TracerProvider()
    yield provider.get_tracer("tests")
    provider.shutdown()


def _trace_id(traceparent: str) -> str:
    return traceparent.split("-")[1]


@miniagent
async def trace_report(ctx: InteractionContext) -> None:
    """Replies with the trace context its worker would pass on to the calls it makes."""
    ctx.reply(json.dumps(tracing.trace_fields()))


def test_no_trace_fields_outside_a_span() -> None:
    assert tracing.trace_fields() == {}


def test_trace_fields_carry_the_current_span(tracer: Any) -> None:
    with tracer.start_as_current_span("root") as span:
        fields = tracing.trace_fields()
    context = span.get_span_context()
    assert fields["traceparent"].startswith(f"00-{context.trace_id:032x}-{context.span_id:016x}-")


def test_a_served_call_continues_the_trace_of_its_entry(tracer: Any) -> None:
    with tracer.start_as_current_span("caller"):
        fields = {name.encode(): value.encode() for name, value in tracing.trace_fields().items()}
    with tracing.served_call_span("AGENT", "c1", fields):
        inside = tracing.trace_fields()
        assert trace.get_current_span().get_span_context().is_valid
    assert _trace_id(inside["traceparent"]) == _trace_id(fields[b"traceparent"].decode())
    with tracing.served_call_span("AGENT", "c2", {b"traceparent": b"garbage"}):
        assert tracing.trace_fields() == {}  # a bad context is ignored (no SDK here: no new trace)


def test_without_opentelemetry_nothing_is_added(monkeypatch: pytest.MonkeyPatch, tracer: Any) -> None:
    monkeypatch.setattr(tracing, "propagate", None)
    monkeypatch.setattr(tracing, "trace", None)
    with tracer.start_as_current_span("root"):
        assert tracing.trace_fields() == {}
        with tracing.served_call_span("AGENT", "c1", {b"traceparent": b"00-" + b"1" * 32 + b"-" + b"2" * 16 + b"-01"}):
            pass


async def test_the_caller_context_reaches_the_agent_on_the_worker(redis_backend: Backend, tracer: Any) -> None:
    client = redis_backend.client()
    async with aserving([trace_report], client), caller(client):
        with tracer.start_as_current_span("root") as root:
            (reply,) = await MiniAgent(alias="TRACE_REPORT").trigger()
        (untraced,) = await MiniAgent(alias="TRACE_REPORT").trigger()
    seen = json.loads(str(reply))
    assert _trace_id(seen["traceparent"]) == f"{root.get_span_context().trace_id:032x}"
    assert json.loads(str(untraced)) == {}


@pytest.mark.real_redis
async def test_a_chain_over_three_workers_is_one_trace(cluster: Cluster, tracer: Any, tmp_path: Path) -> None:
    spans_file = tmp_path / "spans.jsonl"
    env = {"BA_TEST_SPANS_FILE": str(spans_file)}
    for name in ("chain_a", "chain_b", "chain_c"):
        cluster.start_worker(f"otel_spans:{name}", env=env)
    for proc in cluster.procs:
        await cluster.await_ready(proc)  # type: ignore[arg-type]
    async with cluster.mini_agents():
        with tracer.start_as_current_span("root") as root:
            replies = await MiniAgent(alias="CHAIN_A").trigger("hi")
    assert [str(m).split(" ")[0] for m in replies] == ["A", "B", "C(hi)"]

    def spans() -> list[dict[str, Any]]:
        lines = spans_file.read_text().splitlines() if spans_file.exists() else []
        return [json.loads(line) for line in lines]

    await wait_until(lambda: len(spans()) >= 3, what="a span from each worker")
    by_agent = {span["attributes"]["brokeragents.agent"]: span for span in spans()}
    assert set(by_agent) == {"CHAIN_A", "CHAIN_B", "CHAIN_C"}
    assert len({span["pid"] for span in by_agent.values()}) == 3
    context = root.get_span_context()
    assert {span["trace_id"] for span in by_agent.values()} == {f"{context.trace_id:032x}"}
    assert by_agent["CHAIN_A"]["parent_id"] == f"{context.span_id:016x}"
    assert by_agent["CHAIN_B"]["parent_id"] == by_agent["CHAIN_A"]["span_id"]
    assert by_agent["CHAIN_C"]["parent_id"] == by_agent["CHAIN_B"]["span_id"]
    assert by_agent["CHAIN_A"]["name"] == "serve CHAIN_A"
