"""``brokeragents status``: agents, live workers, calls in flight and queued, dead letters.

Everything is read from what workers keep in Redis (see docs/redis-layout.md): heartbeats in the
registry, the ``workers`` consumer group of each agent inbox (XPENDING: calls delivered to a
worker and not finished yet; XINFO GROUPS ``lag``: calls no worker has read yet) and the length of
the dead-letter stream. Only keys under the given prefix are read.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, TextIO

from redis.asyncio import Redis
from redis.exceptions import RedisError, ResponseError

from brokeragents._ops import EXIT_OK, EXIT_UNREACHABLE, format_age, text, write_json, write_table
from brokeragents.keys import WORKER_GROUP, Keys
from brokeragents.registry import DEFAULT_WORKER_TIMEOUT_S, Registry
from brokeragents.store import create_redis_client
from brokeragents.urls import redact_url, scrub

_LAG_COUNT_LIMIT = 10_000


@dataclass(frozen=True, slots=True)
class AgentStatus:
    alias: str
    heartbeat_age_s: float
    live_workers: int
    in_flight: int
    """Calls read by a worker and not acknowledged yet (XPENDING)."""
    queued: int
    """Calls in the inbox that no worker has read yet (the group's lag)."""
    pending_per_worker: dict[str, int] = field(default_factory=dict)
    inbox_length: int = 0


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    name: str
    alive: bool
    heartbeat_age_s: float
    agents: list[str]
    host: str
    pid: str
    concurrency: str
    in_flight: str
    served: str


@dataclass(frozen=True, slots=True)
class Status:
    redis: str
    """The server's URL, credentials masked."""
    key_prefix: str
    agents: list[AgentStatus]
    workers: list[WorkerStatus]
    dead_letters: int
    calls_logged: int

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


async def acollect_status(
    redis: Redis,
    keys: Keys,
    *,
    url: str = "",
    worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S,
) -> Status:
    """Read the status of every agent and worker under ``keys.prefix``."""
    client: Any = redis  # reply shapes are checked here (see Registry)
    registry = Registry(redis, keys, worker_timeout_s=worker_timeout_s)
    workers = [
        WorkerStatus(
            name=info.name,
            alive=info.heartbeat_age_s < worker_timeout_s,
            heartbeat_age_s=round(info.heartbeat_age_s, 3),
            agents=[alias for alias in info.fields.get("agents", "").split(",") if alias],
            host=info.fields.get("host", ""),
            pid=info.fields.get("pid", ""),
            concurrency=info.fields.get("concurrency", ""),
            in_flight=info.fields.get("in_flight", ""),
            served=info.fields.get("served", ""),
        )
        for info in await registry.aworkers()
    ]
    live_names = {worker.name for worker in workers if worker.alive}
    agents = []
    for alias, age_s in await registry.aagents():
        serving = await client.zrange(keys.agent_workers(alias), 0, -1)
        live = sum(1 for name in serving if text(name) in live_names)
        agents.append(await _aagent_status(client, keys, alias, age_s, live))
    return Status(
        redis=redact_url(url) if url else "",
        key_prefix=keys.prefix,
        agents=agents,
        workers=workers,
        dead_letters=int(await client.xlen(keys.dead_letters())),
        calls_logged=int(await client.xlen(keys.calls_log())),
    )


async def _aagent_status(client: Any, keys: Keys, alias: str, age_s: float, live_workers: int) -> AgentStatus:
    inbox = keys.agent_inbox(alias)
    length = int(await client.xlen(inbox))
    in_flight, queued, per_worker = 0, length, {}
    group = await _agroup(client, inbox)
    if group is not None:
        summary = await client.xpending(inbox, WORKER_GROUP)
        in_flight = int(summary.get("pending") or 0)
        per_worker = {text(item["name"]): int(item["pending"]) for item in summary.get("consumers") or []}
        lag = group.get("lag")
        if lag is None:  # unknown to Redis after deletions past the group's position: count them
            after = f"({text(group.get('last-delivered-id') or '0-0')}"
            lag = len(await client.xrange(inbox, min=after, max="+", count=_LAG_COUNT_LIMIT))
        queued = int(lag)
    return AgentStatus(
        alias=alias,
        heartbeat_age_s=round(age_s, 3),
        live_workers=live_workers,
        in_flight=in_flight,
        queued=queued,
        pending_per_worker=per_worker,
        inbox_length=length,
    )


async def _agroup(client: Any, inbox: str) -> dict[str, Any] | None:
    try:
        groups = await client.xinfo_groups(inbox)
    except ResponseError:  # no inbox yet
        return None
    for group in groups:
        if text(group.get("name")) == WORKER_GROUP:
            return dict(group)
    return None


def write_status(status: Status, out: TextIO, *, as_json: bool = False) -> None:
    """Print ``status`` as tables (or as one JSON document)."""
    if as_json:
        write_json(out, status.as_json())
        return
    where = f"Redis {status.redis}" if status.redis else "Redis"
    out.write(f"{where}  (key prefix {status.key_prefix!r})\n\n")
    if status.agents:
        write_table(
            out,
            ["AGENT", "LIVE WORKERS", "IN FLIGHT", "QUEUED", "LAST HEARTBEAT"],
            [
                [a.alias, str(a.live_workers), str(a.in_flight), str(a.queued), format_age(a.heartbeat_age_s) + " ago"]
                for a in status.agents
            ],
        )
    else:
        out.write("No agents: no worker has served under this prefix yet.\n")
    out.write("\n")
    if status.workers:
        write_table(
            out,
            ["WORKER", "STATE", "HEARTBEAT", "HOST", "PID", "AGENTS", "IN FLIGHT", "SERVED"],
            [
                [
                    w.name,
                    "alive" if w.alive else "dead",
                    format_age(w.heartbeat_age_s) + " ago",
                    w.host,
                    w.pid,
                    ",".join(w.agents),
                    f"{w.in_flight}/{w.concurrency}" if w.concurrency else w.in_flight,
                    w.served,
                ]
                for w in status.workers
            ],
        )
    else:
        out.write("No workers.\n")
    out.write(f"\nDead letters: {status.dead_letters}    Calls logged: {status.calls_logged}\n")
    out.flush()


async def arun_status(
    *,
    redis_url: str,
    key_prefix: str,
    out: TextIO,
    err: TextIO,
    as_json: bool = False,
    worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S,
) -> int:
    """The ``status`` command; return its exit code."""
    client = create_redis_client(redis_url)
    try:
        status = await acollect_status(client, Keys(key_prefix), url=redis_url, worker_timeout_s=worker_timeout_s)
    except (RedisError, OSError) as exc:
        err.write(f"Error: cannot read the status from {redact_url(redis_url)}: {scrub(str(exc), redis_url)}\n")
        return EXIT_UNREACHABLE
    finally:
        await client.aclose()
    write_status(status, out, as_json=as_json)
    return EXIT_OK


__all__ = ("AgentStatus", "Status", "WorkerStatus", "acollect_status", "arun_status", "write_status")
