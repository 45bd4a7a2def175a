"""Which workers are alive and which agents they serve, from their heartbeats in Redis.

Each worker refreshes, every ``heartbeat_interval_s``, its score (unix ms) in ``ba:workers``, in
``ba:agent:{ALIAS}:workers`` for each agent it serves, and the agent's score in ``ba:agents``. A
worker whose heartbeat is older than ``worker_timeout_s`` is dead: its calls are taken over.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis

from brokeragents.keys import Keys
from brokeragents.wire import as_text

DEFAULT_HEARTBEAT_INTERVAL_S = 2.0
DEFAULT_WORKER_TIMEOUT_S = 10.0
_SERVED_CACHE_S = 1.0


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(frozen=True, slots=True)
class WorkerInfo:
    """A worker as seen in the registry."""

    name: str
    heartbeat_age_s: float
    fields: dict[str, str]


class Registry:
    """Reads and writes worker heartbeats."""

    def __init__(self, redis: Redis, keys: Keys, *, worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S) -> None:
        # redis-py types replies as unions over every protocol/decoding setting; we pin RESP2
        # with bytes and check shapes ourselves.
        self.redis: Any = redis
        self.keys = keys
        self.worker_timeout_s = worker_timeout_s
        self._served_until: dict[str, float] = {}

    async def aheartbeat(self, worker_name: str, aliases: list[str], fields: dict[str, str]) -> None:
        """Record that ``worker_name`` is alive and serves ``aliases``."""
        stamp = now_ms()
        pipe = self.redis.pipeline(transaction=False)
        pipe.zadd(self.keys.workers(), {worker_name: stamp})
        for alias in aliases:
            pipe.zadd(self.keys.agent_workers(alias), {worker_name: stamp})
            pipe.zadd(self.keys.agents(), {alias: stamp})
        pipe.hset(self.keys.worker(worker_name), mapping={**fields, "heartbeat_ms": str(stamp)})
        pipe.expire(self.keys.worker(worker_name), max(60, int(self.worker_timeout_s * 6)))
        await pipe.execute()

    async def aderegister(self, worker_name: str, aliases: list[str]) -> None:
        """Remove a stopping worker, so its pending calls are taken over without waiting."""
        pipe = self.redis.pipeline(transaction=False)
        pipe.zrem(self.keys.workers(), worker_name)
        for alias in aliases:
            pipe.zrem(self.keys.agent_workers(alias), worker_name)
        pipe.delete(self.keys.worker(worker_name))
        await pipe.execute()

    async def aprune(self, aliases: list[str], *, older_than_ms: float) -> None:
        """Drop workers whose last heartbeat is older than ``older_than_ms`` from the registry sets."""
        cutoff = now_ms() - older_than_ms
        pipe = self.redis.pipeline(transaction=False)
        pipe.zremrangebyscore(self.keys.workers(), "-inf", f"({cutoff}")
        for alias in aliases:
            pipe.zremrangebyscore(self.keys.agent_workers(alias), "-inf", f"({cutoff}")
        await pipe.execute()

    async def ais_alive(self, worker_name: str, aliases: list[str]) -> bool:
        """True when ``worker_name`` heartbeated recently (for any of ``aliases``)."""
        for alias in aliases:
            score = await self.redis.zscore(self.keys.agent_workers(alias), worker_name)
            if score is not None and now_ms() - score < self.worker_timeout_s * 1000:
                return True
        return False

    async def ais_served(self, alias: str) -> bool:
        """True when a live worker serves ``alias`` (cached for a second)."""
        until = self._served_until.get(alias, 0.0)
        if until > time.monotonic():
            return True
        cutoff = now_ms() - self.worker_timeout_s * 1000
        live = await self.redis.zrangebyscore(self.keys.agent_workers(alias), cutoff, "+inf", start=0, num=1)
        if live:
            self._served_until[alias] = time.monotonic() + _SERVED_CACHE_S
        return bool(live)

    async def aworkers(self) -> list[WorkerInfo]:
        """Every registered worker with its heartbeat age (dead ones included)."""
        entries = await self.redis.zrange(self.keys.workers(), 0, -1, withscores=True)
        workers = []
        for raw_name, score in entries:
            name = as_text(raw_name)
            raw_fields = await self.redis.hgetall(self.keys.worker(name))
            fields = {as_text(k): as_text(v) for k, v in raw_fields.items()}
            workers.append(WorkerInfo(name, (now_ms() - score) / 1000, fields))
        return workers

    async def aagents(self) -> list[tuple[str, float]]:
        """Every agent alias ever served, with the age in seconds of its freshest heartbeat."""
        entries = await self.redis.zrange(self.keys.agents(), 0, -1, withscores=True)
        return [
            (as_text(raw), (now_ms() - score) / 1000)
            for raw, score in entries
        ]


__all__ = ("DEFAULT_HEARTBEAT_INTERVAL_S", "DEFAULT_WORKER_TIMEOUT_S", "Registry", "WorkerInfo", "now_ms")
