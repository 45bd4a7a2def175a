"""Prometheus metrics of a worker: calls, errors, tokens, latency, takeovers, dead letters.

A :class:`WorkerMetrics` records into a ``prometheus_client`` registry (the default one unless
told otherwise); several workers in one process share its metrics. ``brokeragents worker
--metrics-port P`` serves them on ``http://127.0.0.1:P/metrics`` (see :func:`serve`).
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Histogram, start_http_server

from brokeragents.promise import StreamedPromise

# LLM calls run from milliseconds (cached, scripted) to minutes (long generations).
LATENCY_BUCKETS_S = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0)


@dataclass(slots=True)
class ReplyStats:
    """What one served call replied."""

    messages: int = 0
    tokens: int = 0
    errors: int = 0


class _Families:
    """The metric families of one registry (created once: a registry refuses duplicates)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.calls = Counter(
            "brokeragents_calls", "Calls served, by outcome: ok, error (the reply carries an error), "
            "failed (serving crashed; left pending for another attempt), gave_up (dead-lettered).",
            ["agent", "outcome"], registry=registry,
        )  # fmt: skip
        self.errors = Counter(
            "brokeragents_errors", "Errors: in replies (kind=reply) and crashes while serving (kind=serve).",
            ["agent", "kind"], registry=registry,
        )  # fmt: skip
        self.tokens = Counter("brokeragents_tokens", "Reply tokens streamed.", ["agent"], registry=registry)
        self.latency = Histogram(
            "brokeragents_call_duration_seconds", "Time to serve a call, from its start to its acknowledgement.",
            ["agent"], buckets=LATENCY_BUCKETS_S, registry=registry,
        )  # fmt: skip
        self.takeovers = Counter(
            "brokeragents_takeovers", "Calls taken over from workers that stopped heartbeating.",
            ["agent"], registry=registry,
        )  # fmt: skip
        self.dead_letters = Counter(
            "brokeragents_dead_letters", "Inbox entries dead-lettered: reason=malformed or gave_up.",
            ["agent", "reason"], registry=registry,
        )  # fmt: skip


_families: weakref.WeakKeyDictionary[CollectorRegistry, _Families] = weakref.WeakKeyDictionary()
_families_lock = threading.Lock()


def _families_of(registry: CollectorRegistry) -> _Families:
    with _families_lock:
        families = _families.get(registry)
        if families is None:
            families = _families[registry] = _Families(registry)
        return families


class WorkerMetrics:
    """The points where a worker reports what it did."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else REGISTRY
        self._m = _families_of(self.registry)

    def call_served(self, agent: str, stats: ReplyStats, duration_s: float) -> None:
        """A call was served to the end and acknowledged."""
        self._m.calls.labels(agent, "error" if stats.errors else "ok").inc()
        if stats.errors:
            self._m.errors.labels(agent, "reply").inc(stats.errors)
        self._m.tokens.labels(agent).inc(stats.tokens)
        self._m.latency.labels(agent).observe(duration_s)

    def call_failed(self, agent: str) -> None:
        """Serving a call crashed; it stays pending for another attempt."""
        self._m.calls.labels(agent, "failed").inc()
        self._m.errors.labels(agent, "serve").inc()

    def takeover(self, agent: str) -> None:
        self._m.takeovers.labels(agent).inc()

    def dead_letter(self, agent: str, reason: str) -> None:
        """``reason``: ``malformed`` (a rejected entry) or ``gave_up`` (too many deliveries)."""
        self._m.dead_letters.labels(agent, reason).inc()
        if reason == "gave_up":
            self._m.calls.labels(agent, "gave_up").inc()


async def areply_stats(sequence: StreamedPromise[Any, Any]) -> ReplyStats:
    """Count the messages, tokens and errors of a reply (replayed from memory once it is drained)."""
    stats = ReplyStats()
    iterator = StreamedPromise.__aiter__(sequence)
    while True:
        try:
            promise = await iterator.__anext__()
        except StopAsyncIteration:
            return stats
        except Exception:  # an error at its position in the reply
            stats.errors += 1
            continue
        stats.messages += 1
        try:
            async for _token in promise:
                stats.tokens += 1
        except Exception:  # the message failed
            stats.errors += 1


def serve(port: int, registry: CollectorRegistry | None = None, *, host: str = "127.0.0.1") -> Any:
    """Serve ``/metrics`` on ``host:port`` from a daemon thread; return the server (``shutdown()``)."""
    server, _thread = start_http_server(port, addr=host, registry=registry if registry is not None else REGISTRY)
    return server


__all__ = ("LATENCY_BUCKETS_S", "ReplyStats", "WorkerMetrics", "areply_stats", "serve")
