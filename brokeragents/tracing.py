"""OpenTelemetry trace context across processes, carried in call entries (optional).

With ``opentelemetry-api`` importable (``pip install brokeragents[otel]`` adds the SDK too), a
caller puts the W3C ``traceparent`` (and ``tracestate``) of its current span into each inbox
entry it sends, and the worker serving the entry runs the call in a span that continues that
trace; calls the agent makes from there carry the worker's span on. So a chain of calls over
several workers is one trace. Without a tracer provider (or without opentelemetry) no context
is injected, the spans are no-ops, and nothing else changes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

try:
    from opentelemetry import propagate, trace
except ImportError:  # pragma: no cover - exercised by monkeypatching these to None
    propagate = None  # type: ignore[assignment]
    trace = None  # type: ignore[assignment]

TRACE_FIELDS = ("traceparent", "tracestate")
_MAX_FIELD_BYTES = 512
TRACER_NAME = "brokeragents"


def trace_fields() -> dict[Any, str]:
    """The trace context of the current span, as inbox entry fields (empty without a span)."""
    # Keys typed loosely: redis-py's field mapping type is invariant.
    if propagate is None:
        return {}
    carrier: dict[str, str] = {}
    propagate.inject(carrier)
    return {name: value for name, value in carrier.items() if name in TRACE_FIELDS}


def _carrier(fields: Mapping[Any, Any]) -> dict[str, str]:
    """The trace fields of an entry as read from Redis (bytes or str names); oversized ones dropped."""
    carrier = {}
    for name in TRACE_FIELDS:
        raw = fields.get(name.encode(), fields.get(name))
        if isinstance(raw, bytes) and len(raw) <= _MAX_FIELD_BYTES:
            carrier[name] = raw.decode("ascii", errors="replace")
        elif isinstance(raw, str) and len(raw) <= _MAX_FIELD_BYTES:
            carrier[name] = raw
    return carrier


@contextmanager
def served_call_span(agent: str, call_id: str, fields: Mapping[Any, Any]) -> Iterator[None]:
    """Run a served call in a span continuing the trace of the caller (if the entry carries one)."""
    if trace is None or propagate is None:
        yield
        return
    parent = propagate.extract(_carrier(fields))
    tracer = trace.get_tracer(TRACER_NAME)
    with tracer.start_as_current_span(
        f"serve {agent}",
        context=parent,
        kind=trace.SpanKind.CONSUMER,
        attributes={"brokeragents.agent": agent, "brokeragents.call_id": call_id},
    ):
        yield


__all__ = ("TRACE_FIELDS", "served_call_span", "trace_fields")
