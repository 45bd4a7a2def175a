"""Worker: serve agents from one process, sharing the load with other workers through Redis.

Each served agent has an inbox stream read by the consumer group ``workers``. A worker reads
only as many calls as it has free slots (``concurrency``), runs each call here, and acknowledges
its inbox entry only once the reply is complete and written. It heartbeats into the registry, and
takes over the pending calls of workers whose heartbeat stopped; a worker restarted under the
same name (Heroku's ``DYNO``) takes back its own pending calls at once. A call that keeps
crashing workers goes to the dead-letter stream after ``max_deliveries`` and its caller gets an
error. On shutdown it stops reading, gives calls in flight ``shutdown_grace_s`` to finish, and
leaves the rest pending for takeover.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from dataclasses import dataclass, field
from typing import Any

from redis.asyncio import Redis, RedisCluster
from redis.crc import key_slot
from redis.exceptions import RedisError, ResponseError

from brokeragents import tracing, wire
from brokeragents.agents import MiniAgent
from brokeragents.calls import AgentCall
from brokeragents.errors import CallFailedError, ReplyRestartedError, WireFormatError
from brokeragents.frozen import Frozen
from brokeragents.keys import WORKER_GROUP
from brokeragents.metrics import WorkerMetrics, areply_stats
from brokeragents.nodes import CallKwargs
from brokeragents.promise import StreamedPromise, apieces_and_errors
from brokeragents.registry import DEFAULT_HEARTBEAT_INTERVAL_S, DEFAULT_WORKER_TIMEOUT_S, Registry, now_ms
from brokeragents.replay import aopen_sequence_promise
from brokeragents.runtime import MiniAgents
from brokeragents.store import StreamStore

logger = logging.getLogger("brokeragents.worker")

# On a Redis Cluster a worker serving agents in several slots polls their inboxes in turn.
_CLUSTER_BLOCK_MS = 100
_RETRY_DELAYS_S = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
_MAX_ENTRY_FIELD_BYTES = 1024 * 1024
# An own pending entry idle this long that no task serves is served again (its serving failed).
_ORPHAN_IDLE_MS = 1_000
_PRUNE_INTERVAL_S = 30.0


@dataclass(frozen=True, slots=True)
class WorkerSettings:
    """How a worker behaves; every duration carries its unit in its name."""

    concurrency: int = 10
    heartbeat_interval_s: float = DEFAULT_HEARTBEAT_INTERVAL_S
    worker_timeout_s: float = DEFAULT_WORKER_TIMEOUT_S
    claim_interval_s: float | None = None
    """How often dead workers' calls are looked for; by default half of ``worker_timeout_s``
    (at most 2 s), so a crashed worker's call restarts within about 1.5 x ``worker_timeout_s``."""
    block_ms: int = 5_000
    shutdown_grace_s: float = 25.0
    max_deliveries: int = 3
    key_prefix: str = "ba"
    mini_agents_kwargs: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1.")
        if self.worker_timeout_s <= self.heartbeat_interval_s:
            raise ValueError("worker_timeout_s must be longer than heartbeat_interval_s.")
        if self.claim_interval_s is not None and self.claim_interval_s <= 0:
            raise ValueError("claim_interval_s must be positive.")
        if self.max_deliveries < 1:
            raise ValueError("max_deliveries must be at least 1.")

    @property
    def claim_every_s(self) -> float:
        if self.claim_interval_s is not None:
            return self.claim_interval_s
        return min(2.0, self.worker_timeout_s / 2)

    @property
    def stale_after_s(self) -> float:
        """Age after which a dead worker is dropped from the registry and its idle consumer deleted."""
        return max(60.0, self.worker_timeout_s * 6)


def default_worker_name() -> str:
    return f"{socket.gethostname()}-{os.getpid()}"


@dataclass(slots=True)
class _Request:
    call_id: str
    alias: str
    kwargs: Any
    errors_as_messages: bool


class Worker:
    """Serves ``agents`` until :meth:`stop` is called (the CLI calls it on SIGTERM/SIGINT)."""

    def __init__(
        self,
        agents: list[MiniAgent],
        *,
        redis_url: str | None = None,
        redis: Redis | None = None,
        name: str | None = None,
        settings: WorkerSettings | None = None,
        metrics: WorkerMetrics | None = None,
    ) -> None:
        if not agents:
            raise ValueError("A worker needs at least one agent to serve.")
        aliases = [agent.alias for agent in agents]
        if len(set(aliases)) != len(aliases):
            raise ValueError(f"Two agents share an alias: {aliases}")
        self.agents = {agent.alias: agent for agent in agents}
        self.name = name or default_worker_name()
        self.settings = settings or WorkerSettings()
        self._redis_url = redis_url
        self._redis_client = redis
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()
        self._slots = asyncio.Semaphore(self.settings.concurrency)
        # Keyed by (alias, entry id): entry ids are per stream, two inboxes can have the same one.
        self._in_flight: dict[tuple[str, str], asyncio.Task[None]] = {}
        self._own_pending_read = False  # our pending entries from a previous life were re-read
        self._rotation = -1
        self.calls_served = 0
        self.metrics = metrics or WorkerMetrics()

    # --- lifecycle ---------------------------------------------------------------------------------

    def stop(self) -> None:
        """Ask the worker to shut down gracefully (safe to call from a signal handler)."""
        self._stopping.set()

    async def arun(self) -> None:
        """Serve until stopped; return once everything is handed back or finished."""
        mini_agents = MiniAgents(
            redis_url=self._redis_url,
            redis=self._redis_client,
            key_prefix=self.settings.key_prefix,
            **self.settings.mini_agents_kwargs,
        )
        async with mini_agents:
            mini_agents.served_aliases.update(self.agents)
            store = mini_agents.store
            if store is None:
                raise ValueError("A worker needs a Redis URL.")
            self._mini_agents = mini_agents
            self._store = store
            self._redis: Any = store.redis  # reply shapes checked here (see Registry)
            self._registry = Registry(store.redis, store.keys, worker_timeout_s=self.settings.worker_timeout_s)
            for alias in self.agents:
                await self._aensure_group(alias)
            await self._aheartbeat_once()
            heartbeat = [asyncio.create_task(self._aheartbeat_forever(), name="heartbeat")]
            # The claimer takes calls too: it stops with the readers, before the grace period.
            readers = [
                asyncio.create_task(self._aclaim_forever(), name="claimer"),
                asyncio.create_task(self._aconsume_forever(), name="reader"),
            ]
            logger.info("Worker %s ready: serving %s", self.name, ", ".join(self.agents))
            self.ready.set()
            try:
                await self._stopping.wait()
            finally:
                await self._ashutdown(readers, heartbeat)

    async def _ashutdown(self, readers: list[asyncio.Task[None]], loops: list[asyncio.Task[None]]) -> None:
        logger.info("Worker %s stopping: %d call(s) in flight", self.name, len(self._in_flight))
        await _acancel(readers)  # stop taking new calls first; heartbeats go on meanwhile
        if self._in_flight:
            _done, pending = await asyncio.wait(
                set(self._in_flight.values()), timeout=self.settings.shutdown_grace_s
            )
            if pending:
                logger.warning("Leaving %d call(s) pending for takeover", len(pending))
                await _acancel(list(pending))
        # What is left belongs to calls that are over (acknowledged or left for takeover), e.g.
        # a tail on the input of a call whose caller died: it must not keep the process alive.
        await _acancel(list(self._mini_agents.child_tasks))
        await _acancel(loops)
        try:
            await self._registry.aderegister(self.name, list(self.agents))
        except (RedisError, OSError):
            logger.warning("Could not deregister worker %s", self.name)

    # --- reading -----------------------------------------------------------------------------------

    async def _aensure_group(self, alias: str) -> None:
        try:
            # At 0, so calls sent before any worker existed are served too.
            await self._redis.xgroup_create(self._inbox(alias), WORKER_GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _inbox(self, alias: str) -> str:
        return self._store.keys.agent_inbox(alias)

    async def _areserve_slots(self) -> int:
        """Wait for one free slot, then take every other free one (bounded read-ahead)."""
        await self._slots.acquire()
        taken = 1
        while taken < 100 and not self._slots.locked():
            await self._slots.acquire()
            taken += 1
        return taken

    def _release_slots(self, count: int) -> None:
        for _ in range(count):
            self._slots.release()

    async def _aconsume_forever(self) -> None:
        """Read and serve calls until stopped; no Redis error ends it (it backs off instead)."""
        failures = 0
        while not self._stopping.is_set():
            try:
                if not self._own_pending_read:
                    for alias in self.agents:
                        await self._aread_own_pending(alias)  # our calls from a previous life
                    self._own_pending_read = True
                await self._aread_and_serve()
                failures = 0
                continue
            except asyncio.CancelledError:
                raise
            except ResponseError as exc:
                error: BaseException = exc
                if "NOGROUP" in str(exc):
                    logger.warning("A consumer group is gone (Redis restarted or flushed?); recreating it")
                    try:
                        for alias in self.agents:
                            await self._aensure_group(alias)
                        continue
                    except (RedisError, OSError) as group_exc:
                        error = group_exc  # backs off below
            except (RedisError, OSError) as exc:
                error = exc
            except Exception as exc:  # a bug must not silently stop the reader
                logger.exception("Reading calls failed")
                error = exc
            failures += 1
            delay_s = _RETRY_DELAYS_S[min(failures, len(_RETRY_DELAYS_S)) - 1]
            logger.warning("Reading calls failed (%s); retrying in %.1f s", error, delay_s)
            await asyncio.sleep(delay_s)

    async def _aread_own_pending(self, alias: str) -> None:
        """Serve again every call this consumer name read but never acknowledged (XREADGROUP 0...).

        Read in pages of the free slots, each page after the last id of the previous one, so a
        backlog bigger than ``concurrency`` is taken back whole.
        """
        start_id = "0"
        while True:
            slots = await self._areserve_slots()
            try:
                entries = await self._aread({alias: start_id}, count=slots, block_ms=None)
            finally:
                self._release_slots(slots)
            if not entries:
                return
            for entry_alias, entry_id, fields in entries:
                self._start_serving(entry_alias, entry_id, fields, retried=True)
            start_id = entries[-1][1]

    async def _aread_and_serve(self) -> None:
        """Read new calls of every agent, never more than the free slots, and start serving them.

        First without blocking, agent after agent, while slots are free. When nothing waits, one
        blocking read over the inboxes (COUNT 1 per inbox) holds one slot per inbox it waits on,
        and only those: the other free slots stay available to the claimer meanwhile.
        """
        slots = await self._areserve_slots()
        aliases = self._next_aliases()
        entries: list[tuple[str, str, Any]] = []
        try:
            for alias in aliases:
                if len(entries) == slots:
                    break
                entries += await self._aread({alias: ">"}, count=slots - len(entries), block_ms=None)
            if not entries:
                waiting_on = aliases[:slots]
                self._release_slots(slots - len(waiting_on))
                slots = len(waiting_on)
                entries = await self._aread(dict.fromkeys(waiting_on, ">"), count=1, block_ms=self.settings.block_ms)
        finally:
            # Each entry read keeps one slot (released when its serving ends); the rest go back.
            self._release_slots(max(0, slots - len(entries)))
        if len(entries) > slots:  # COUNT bounds what each inbox gives, so this would be a bug
            logger.error("Read %d entries with only %d free slots", len(entries), slots)
        for entry_alias, entry_id, fields in entries:
            self._start_serving(entry_alias, entry_id, fields, retried=False)

    def _next_aliases(self) -> list[str]:
        """The served aliases, starting one further each time (fair when slots are scarce)."""
        aliases = list(self.agents)
        self._rotation = (self._rotation + 1) % len(aliases)
        return aliases[self._rotation :] + aliases[: self._rotation]

    async def _aread(self, starts: dict[str, str], *, count: int, block_ms: int | None) -> list[tuple[str, str, Any]]:
        """XREADGROUP the inboxes of ``starts`` (alias -> start id); return (alias, entry id, fields)."""
        if isinstance(self._redis, RedisCluster) and len(starts) > 1:
            # A cluster takes the keys of one command from one slot: read the inboxes in the first
            # one's slot, blocking briefly; the caller's next read (rotated) takes the next slot.
            slot = key_slot(self._inbox(next(iter(starts))).encode())
            same_slot = {a: start for a, start in starts.items() if key_slot(self._inbox(a).encode()) == slot}
            if len(same_slot) < len(starts):
                starts, block_ms = same_slot, None if block_ms is None else min(block_ms, _CLUSTER_BLOCK_MS)
        inboxes = {self._inbox(alias): alias for alias in starts}
        reply = await self._redis.xreadgroup(
            WORKER_GROUP,
            self.name,
            {self._inbox(alias): start_id for alias, start_id in starts.items()},
            count=count,
            block=block_ms,
        )
        return [
            (inboxes[wire.as_text(stream)], wire.as_text(entry_id), fields)
            for stream, stream_entries in reply or []
            for entry_id, fields in stream_entries
        ]

    def _start_serving(self, alias: str, entry_id: str, fields: dict[Any, Any] | None, *, retried: bool) -> None:
        """Serve one entry in its own task; the slot reserved for it is released when it ends."""
        if self._stopping.is_set():
            # Read while stopping (redis-py may swallow the reader's cancellation): leave it
            # pending; it is taken over once this worker is gone.
            self._slots.release()
            return
        key = (alias, entry_id)
        if key in self._in_flight:
            # Delivered again while we serve it (its group was recreated): one run is enough.
            self._slots.release()
            return
        task = asyncio.create_task(self._aserve_entry(alias, entry_id, fields, retried=retried))
        self._in_flight[key] = task
        task.add_done_callback(lambda _t: self._finish_slot(key))

    def _finish_slot(self, key: tuple[str, str]) -> None:
        self._in_flight.pop(key, None)
        self._slots.release()

    # --- takeover ----------------------------------------------------------------------------------

    async def _aclaim_forever(self) -> None:
        last_prune = 0.0
        while not self._stopping.is_set():
            for alias in self.agents:
                try:
                    await self._aclaim_from_dead_workers(alias)
                    await self._aretry_own_orphans(alias)
                except asyncio.CancelledError:
                    raise
                except ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        with contextlib.suppress(RedisError, OSError):
                            await self._aensure_group(alias)
                    else:
                        logger.warning("Claiming calls of %s failed: %s", alias, exc)
                except (RedisError, OSError) as exc:
                    logger.warning("Claiming calls of %s failed: %s", alias, exc)
                except Exception:
                    logger.exception("Claiming calls of %s failed", alias)
            if time.monotonic() - last_prune >= _PRUNE_INTERVAL_S:
                last_prune = time.monotonic()
                try:
                    await self._aprune_dead_workers()
                except (RedisError, OSError) as exc:
                    logger.warning("Pruning dead workers failed: %s", exc)
            await asyncio.sleep(self.settings.claim_every_s)

    async def _aclaim_from_dead_workers(self, alias: str) -> None:
        redis = self._redis
        inbox = self._inbox(alias)
        summary = await redis.xpending(inbox, WORKER_GROUP)
        for consumer in summary.get("consumers") or []:
            owner = wire.as_text(consumer["name"])
            if owner == self.name or await self._registry.ais_alive(owner, [alias]):
                continue
            pending = await redis.xpending_range(inbox, WORKER_GROUP, min="-", max="+", count=100, consumername=owner)
            for item in pending:
                if await self._aclaim(alias, wire.as_text(item["message_id"])):
                    logger.info("Took over call entry %s of dead worker %s", wire.as_text(item["message_id"]), owner)
                    self.metrics.takeover(alias)

    async def _aretry_own_orphans(self, alias: str) -> None:
        """Serve again our own pending entries that no task serves (its serving failed)."""
        if not self._own_pending_read:
            return  # the reader takes them back first (claiming them too would count twice)
        pending = await self._redis.xpending_range(
            self._inbox(alias), WORKER_GROUP, min="-", max="+", count=100, consumername=self.name,
            idle=_ORPHAN_IDLE_MS,
        )
        for item in pending:
            entry_id = wire.as_text(item["message_id"])
            if (alias, entry_id) not in self._in_flight and await self._aclaim(alias, entry_id):
                logger.warning("Serving again call entry %s, left pending by a failed attempt", entry_id)

    async def _aclaim(self, alias: str, entry_id: str) -> bool:
        """XCLAIM one entry (counting a delivery) and serve it; False if someone else has it."""
        slots = await self._areserve_slots()
        self._release_slots(slots - 1)
        try:
            claimed = await self._redis.xclaim(
                self._inbox(alias), WORKER_GROUP, self.name, min_idle_time=_ORPHAN_IDLE_MS, message_ids=[entry_id]
            )
        except BaseException:
            self._release_slots(1)
            raise
        if not claimed or not claimed[0][1]:
            self._release_slots(1)  # another worker claimed it first, or it was deleted
            return False
        claimed_id, fields = claimed[0]
        self._start_serving(alias, wire.as_text(claimed_id), fields, retried=True)
        return True

    async def _aprune_dead_workers(self) -> None:
        """Forget workers dead for long: registry entries, and their consumers once they own nothing.

        A consumer is deleted only with no pending entry (DELCONSUMER would drop them) and idle
        for as long, so the group does not collect one consumer per crashed HOST-PID name.
        """
        stale_ms = self.settings.stale_after_s * 1000
        await self._registry.aprune(list(self.agents), older_than_ms=stale_ms)
        for alias in self.agents:
            try:
                consumers = await self._redis.xinfo_consumers(self._inbox(alias), WORKER_GROUP)
            except ResponseError:
                continue  # no group (yet): the reader recreates it
            for consumer in consumers:
                owner = wire.as_text(consumer["name"])
                if (
                    owner != self.name
                    and int(consumer.get("pending", 1)) == 0
                    and int(consumer.get("idle", 0)) > stale_ms
                    and not await self._registry.ais_alive(owner, [alias])
                ):
                    await self._redis.xgroup_delconsumer(self._inbox(alias), WORKER_GROUP, owner)
                    logger.info("Deleted the idle consumer %s of dead worker from %s", owner, alias)

    # --- serving one call --------------------------------------------------------------------------

    async def _aserve_entry(self, alias: str, entry_id: str, fields: dict[Any, Any] | None, *, retried: bool) -> None:
        try:
            if not fields:  # deleted from the stream while pending: nothing left to serve
                await self._aack(alias, entry_id)
                return
            try:
                request = _parse_request(alias, fields)
            except WireFormatError as exc:
                logger.error("Rejected a malformed call entry %s in %s: %s", entry_id, alias, exc)
                self.metrics.dead_letter(alias, "malformed")
                await self._store.arecord_dead_letter(
                    str(exc), stream=self._inbox(alias), entry_id=entry_id, fields=_describe(fields)
                )
                await self._aack(alias, entry_id)
                return
            with tracing.served_call_span(alias, request.call_id, fields):
                await self._aserve_call(alias, entry_id, request, retried=retried)
        except asyncio.CancelledError:
            raise
        except Exception:
            # Not acknowledged: the entry stays pending and is served again (delivery budget).
            logger.exception("Serving call entry %s of %s failed", entry_id, alias)
            self.metrics.call_failed(alias)

    async def _aserve_call(self, alias: str, entry_id: str, request: _Request, *, retried: bool) -> None:
        started = time.monotonic()
        store = self._store
        keys = store.keys
        redis = self._redis
        call_key = keys.call(request.call_id)
        reply_key = keys.call_reply(request.call_id)
        state = await redis.hget(call_key, "state")
        if state is not None and wire.as_text(state) in ("done", "failed"):
            # The reply is complete already; only the acknowledgement was lost.
            logger.info("Call %s finished before; acknowledging it without running it again", request.call_id)
            await self._aack(alias, entry_id)
            return
        deliveries = await self._adeliveries(alias, entry_id) if retried else 1
        attempt = int(await redis.hincrby(call_key, "attempt", 1))
        await redis.hset(call_key, mapping={"worker": self.name, "state": "running"})
        if attempt > 1:
            await self._aabandon_attempts_before(reply_key, attempt)
        store.start_sequence_attempt(reply_key, attempt)
        if deliveries > self.settings.max_deliveries:
            await self._agive_up(alias, entry_id, request, reply_key, deliveries, attempt)
            return
        try:
            kwargs_message = await wire.abuild_message(request.kwargs, None, _loader(store))
        except WireFormatError as exc:
            # Unknown classes, missing sub-messages: serving it again would fail the same way.
            await self._areject_kwargs(alias, entry_id, request, reply_key, exc)
            return
        input_promise = await aopen_sequence_promise(keys.call_input(request.call_id))
        call = AgentCall(
            self.agents[alias],
            self._mini_agents,
            None,
            Frozen(**kwargs_message.as_kwargs()),
            True,
            request.errors_as_messages,
            call_id=request.call_id,
            served_input=input_promise,
        )
        try:
            # Complete means every message of the reply is whole, not only the sequence ended.
            await _adrain_whole(call.reply_sequence())
        except asyncio.CancelledError:
            store.abandon_sequence_attempt(reply_key)  # handed back: the next attempt ends it
            raise
        if await self._astill_owner(call_key, attempt):
            store.write_hash(call_key, {"state": "done", "finished_ms": str(now_ms())}, finished=True)
            await store.aflush()
            await self._aack(alias, entry_id)
            self.calls_served += 1
            self.metrics.call_served(alias, await areply_stats(call.reply_sequence()), time.monotonic() - started)
        else:
            await store.aflush()

    async def _adeliveries(self, alias: str, entry_id: str) -> int:
        pending = await self._redis.xpending_range(
            self._inbox(alias), WORKER_GROUP, min=entry_id, max=entry_id, count=1
        )
        return int(pending[0]["times_delivered"]) if pending else 1

    async def _astill_owner(self, call_key: str, attempt: int) -> bool:
        current = await self._redis.hget(call_key, "attempt")
        return current is not None and int(current) == attempt

    async def _aabandon_attempts_before(self, reply_key: str, attempt: int) -> None:
        """End the unfinished message streams of earlier attempts with a restart error."""
        redis = self._redis
        restart = ReplyRestartedError(f"The worker serving this call was lost; restarted as attempt {attempt}.")
        for _entry_id, fields in await redis.xrange(reply_key, count=10_000):
            key = fields.get(b"key")
            if fields.get(b"kind") != b"message" or key is None:
                continue
            last = await redis.xrevrange(key, count=1)
            if not last or last[0][1].get(b"kind") not in (b"message", b"error"):
                await redis.xadd(key, wire.encode_error(restart))

    async def _areject_kwargs(
        self, alias: str, entry_id: str, request: _Request, reply_key: str, exc: WireFormatError
    ) -> None:
        reason = f"call {request.call_id} to {alias} has malformed kwargs: {exc}"
        logger.error("Rejected a call: %s", reason)
        self.metrics.dead_letter(alias, "malformed")
        await self._store.arecord_dead_letter(
            reason, stream=self._inbox(alias), entry_id=entry_id, call_id=request.call_id, agent=alias
        )
        self._store.sequence_error(reply_key, CallFailedError(f"Rejected: {reason}"))
        self._store.sequence_end(reply_key)
        self._store.write_hash(
            self._store.keys.call(request.call_id), {"state": "failed", "finished_ms": str(now_ms())}, finished=True
        )
        await self._store.aflush()
        await self._aack(alias, entry_id)

    async def _agive_up(
        self, alias: str, entry_id: str, request: _Request, reply_key: str, deliveries: int, attempt: int
    ) -> None:
        reason = f"call {request.call_id} to {alias} was delivered {deliveries} times without finishing"
        logger.error("Giving up: %s", reason)
        self.metrics.dead_letter(alias, "gave_up")
        await self._store.arecord_dead_letter(
            reason, stream=self._inbox(alias), entry_id=entry_id, call_id=request.call_id, agent=alias,
            deliveries=str(deliveries), attempt=str(attempt),
        )
        self._store.sequence_error(reply_key, CallFailedError(f"Gave up: {reason}."))
        self._store.sequence_end(reply_key)
        self._store.write_hash(
            self._store.keys.call(request.call_id), {"state": "failed", "finished_ms": str(now_ms())}, finished=True
        )
        await self._store.aflush()
        await self._aack(alias, entry_id)

    async def _aack(self, alias: str, entry_id: str) -> None:
        # Deleting acknowledged entries keeps the inbox as small as the work still to do.
        pipe = self._redis.pipeline(transaction=False)
        pipe.xack(self._inbox(alias), WORKER_GROUP, entry_id)
        pipe.xdel(self._inbox(alias), entry_id)
        await pipe.execute()

    # --- heartbeats --------------------------------------------------------------------------------

    async def _aheartbeat_once(self) -> None:
        await self._registry.aheartbeat(
            self.name,
            list(self.agents),
            {
                "pid": str(os.getpid()),
                "host": socket.gethostname(),
                "agents": ",".join(self.agents),
                "concurrency": str(self.settings.concurrency),
                "in_flight": str(len(self._in_flight)),
                "served": str(self.calls_served),
            },
        )

    async def _aheartbeat_forever(self) -> None:
        while True:
            await asyncio.sleep(self.settings.heartbeat_interval_s)
            try:
                await self._aheartbeat_once()
            except (RedisError, OSError) as exc:
                logger.warning("Heartbeat failed: %s", exc)


def _describe(fields: dict[Any, Any]) -> str:
    # Garbage may be anything: decoding must never fail here (the entry would be retried forever).
    def shown(raw: Any) -> str:
        return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)

    return repr({shown(k)[:64]: shown(v)[:256] for k, v in fields.items()})[:4096]


def _parse_request(alias: str, fields: dict[Any, Any]) -> _Request:
    """Validate an inbox entry; anything unexpected raises WireFormatError."""
    call_id = wire.field(fields, "call_id", max_bytes=64)
    agent = wire.field(fields, "agent", max_bytes=256)
    raw_kwargs = wire.field(fields, "kwargs", max_bytes=_MAX_ENTRY_FIELD_BYTES)
    errors_flag = wire.field(fields, "errors_as_messages", max_bytes=1, required=False) or "0"
    assert call_id is not None and agent is not None and raw_kwargs is not None
    if not call_id.isalnum():
        raise WireFormatError(f"Invalid call_id {call_id!r}.")
    if agent != alias:
        raise WireFormatError(f"The entry is for agent {agent!r}, not {alias!r}.")
    if errors_flag not in ("0", "1"):
        raise WireFormatError(f"Invalid errors_as_messages flag {errors_flag!r}.")
    kwargs = wire.load_json(raw_kwargs, "kwargs")
    if not isinstance(kwargs, dict) or kwargs.get("class_") != CallKwargs.__name__:
        raise WireFormatError("The kwargs must be a serialized CallKwargs object.")
    return _Request(call_id, agent, kwargs, errors_flag == "1")


def _loader(store: StreamStore) -> Any:
    from brokeragents.replay import _aload_by_hash

    async def load(hash_key: str) -> Any:
        return await _aload_by_hash(store, hash_key)

    return load


async def _adrain_whole(sequence: StreamedPromise[Any, Any]) -> None:
    """Pull every piece of a reply and wait until each of its messages is whole."""
    async for piece in apieces_and_errors(sequence):
        if isinstance(piece, Exception):
            continue  # the agent's error is in the reply stream already
        with contextlib.suppress(Exception):  # a message's error is in its stream already
            await piece


async def _acancel(tasks: list[asyncio.Task[Any]], *, rounds: int = 20, wait_s: float = 0.25) -> None:
    """Cancel ``tasks`` and wait for them, cancelling again those that did not stop.

    redis-py's asyncio client can swallow a cancellation that arrives at the wrong moment of a
    command (redis/redis-py#2028): the task goes on until its next await, so one cancel() is not
    enough to be sure it ends.
    """
    pending = {task for task in tasks if not task.done()}
    for _ in range(rounds):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=wait_s)
    if pending:
        logger.error("%d task(s) did not stop when cancelled: %s", len(pending), [t.get_name() for t in pending])
    await asyncio.gather(*(task for task in tasks if task.done()), return_exceptions=True)


__all__ = ("Worker", "WorkerSettings", "default_worker_name")

