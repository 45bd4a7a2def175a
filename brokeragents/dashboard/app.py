"""The dashboard server: JSON and Server-Sent Events over aiohttp, and one static page.

``GET /api/overview`` gives the agents and workers of the registry and the newest calls (the
capped calls log ``<prefix>:calls`` joined with each call's hash: state, worker, attempt and
``parent_call``, from which the page draws the call graph). ``GET /api/calls/{id}/stream``
replays a call's reply from its first entry and then tails it live, as SSE events: ``message``
(a reply message starts), ``token``, ``restart``, ``failure`` (an error at its position) and
``end``. Replies are read as any consumer reads them, with
:func:`brokeragents.replay.aopen_sequence_promise` inside the dashboard's own ``MiniAgents``.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import json
import logging
from collections.abc import Callable
from importlib import resources
from typing import Any

from aiohttp import web

from brokeragents.errors import ReplyRestartedError
from brokeragents.promise import apieces_and_errors
from brokeragents.registry import Registry
from brokeragents.replay import aopen_sequence_promise
from brokeragents.runtime import MiniAgents
from brokeragents.store import StreamStore
from brokeragents.wire import as_text

logger = logging.getLogger("brokeragents.dashboard")

DEFAULT_PORT = 8765
DEFAULT_MAX_CALLS = 200
_SSE_PING_S = 15.0
_MAX_CALL_ID = 64
_DASHBOARD: web.AppKey[Dashboard] = web.AppKey("dashboard")


class Dashboard:
    """Serves the dashboard of the agents stored under ``key_prefix`` on the Redis at ``redis_url``.

    :param worker_timeout_s: heartbeat age after which a worker (or an agent) is shown as dead
    :param max_calls: how many of the newest calls the overview lists
    """

    def __init__(
        self,
        *,
        redis_url: str,
        key_prefix: str = "ba",
        worker_timeout_s: float = 10.0,
        max_calls: int = DEFAULT_MAX_CALLS,
    ) -> None:
        self.redis_url = redis_url
        self.key_prefix = key_prefix
        self.worker_timeout_s = worker_timeout_s
        self.max_calls = max_calls
        self._store: StreamStore | None = None
        self._context: contextvars.Context | None = None
        self._pumps: set[asyncio.Task[None]] = set()
        self._page = (resources.files(__package__) / "static" / "index.html").read_bytes()

    def application(self) -> web.Application:
        app = web.Application()
        app[_DASHBOARD] = self
        app.router.add_get("/", self._index)
        app.router.add_get("/api/overview", self._overview)
        app.router.add_get("/api/calls/{call_id}", self._call)
        app.router.add_get("/api/calls/{call_id}/stream", self._stream)
        return app

    async def aserve(
        self, host: str, port: int, *, stop: asyncio.Event, on_ready: Callable[[str], None] | None = None
    ) -> None:
        """Serve on ``host:port`` (0 picks a free port) until ``stop`` is set."""
        async with MiniAgents(redis_url=self.redis_url, key_prefix=self.key_prefix, remote_calls="never") as context:
            self._store = context.store
            # Reply readers run in this context: promises find their MiniAgents through it.
            self._context = contextvars.copy_context()
            runner = web.AppRunner(self.application(), shutdown_timeout=1.0, access_log=None)
            await runner.setup()
            try:
                site = web.TCPSite(runner, host, port)
                await site.start()
                bound_host, bound_port = runner.addresses[0][:2]
                if on_ready is not None:
                    on_ready(f"http://{f'[{bound_host}]' if ':' in bound_host else bound_host}:{bound_port}/")
                await stop.wait()
            finally:
                for pump in list(self._pumps):
                    pump.cancel()
                await asyncio.gather(*self._pumps, return_exceptions=True)
                await runner.cleanup()

    def _redis_store(self) -> StreamStore:
        if self._store is None:
            raise web.HTTPServiceUnavailable(text="The dashboard is not connected to Redis.")
        return self._store

    # --- handlers ----------------------------------------------------------------------------------

    async def _index(self, _request: web.Request) -> web.Response:
        return web.Response(body=self._page, content_type="text/html", charset="utf-8")

    async def _overview(self, _request: web.Request) -> web.Response:
        store = self._redis_store()
        redis: Any = store.redis
        keys = store.keys
        registry = Registry(store.redis, keys, worker_timeout_s=self.worker_timeout_s)
        agents = [
            {"alias": alias, "age_s": round(age_s, 2), "alive": age_s < self.worker_timeout_s}
            for alias, age_s in await registry.aagents()
        ]
        workers = [
            {**worker.fields, "name": worker.name, "age_s": round(worker.heartbeat_age_s, 2),
             "alive": worker.heartbeat_age_s < self.worker_timeout_s}
            for worker in await registry.aworkers()
        ]  # fmt: skip
        logged = [(as_text(entry_id), _texts(fields)) for entry_id, fields in
                  await redis.xrevrange(keys.calls_log(), count=self.max_calls)]  # fmt: skip
        calls = []
        if logged:
            # Not a transaction: the call hashes live in different cluster slots.
            pipe = redis.pipeline(transaction=False)
            for _entry_id, fields in logged:
                pipe.hgetall(keys.call(fields.get("call_id", "") or "-"))
            described = await pipe.execute()
            for (entry_id, fields), call in zip(logged, described, strict=True):
                calls.append({**fields, **_texts(call), "logged_at_ms": entry_id.split("-")[0]})
        body = {"prefix": keys.prefix, "worker_timeout_s": self.worker_timeout_s,
                "agents": agents, "workers": workers, "calls": calls}  # fmt: skip
        return web.json_response(body)

    async def _call(self, request: web.Request) -> web.Response:
        store = self._redis_store()
        call_id = _call_id(request)
        fields = _texts(await store.redis.hgetall(store.keys.call(call_id)))
        if not fields:
            raise web.HTTPNotFound(text=f"No call {call_id} (expired or never made).")
        return web.json_response({"call_id": call_id, **fields})

    async def _stream(self, request: web.Request) -> web.StreamResponse:
        store = self._redis_store()
        call_id = _call_id(request)
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        events: asyncio.Queue[tuple[str, dict[str, Any]] | None] = asyncio.Queue()
        assert self._context is not None
        pump = asyncio.create_task(_apump_reply(store.keys.call_reply(call_id), events), context=self._context.copy())
        self._pumps.add(pump)
        try:
            while True:
                try:
                    event = await asyncio.wait_for(events.get(), timeout=_SSE_PING_S)
                except TimeoutError:
                    await response.write(b": ping\n\n")  # finds a browser that went away
                    continue
                if event is None:
                    break
                name, data = event
                await response.write(f"event: {name}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode())
        except (ConnectionResetError, asyncio.CancelledError):
            pass  # the browser left, or the server is stopping
        finally:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pump
            self._pumps.discard(pump)
        return response


async def _apump_reply(reply_key: str, events: asyncio.Queue[tuple[str, dict[str, Any]] | None]) -> None:
    """Put the events of one call's reply on ``events``, then ``None``."""
    put = events.put_nowait
    try:
        reply = await aopen_sequence_promise(reply_key)
        index = 0
        async for promise in apieces_and_errors(reply):
            if isinstance(promise, ReplyRestartedError):
                put(("restart", {"message": str(promise)}))
                continue
            if isinstance(promise, Exception):  # an agent error at its position: the reply goes on
                put(("failure", _error(promise)))
                continue
            put(("message", {"index": index}))
            try:
                async for token in promise:
                    put(("token", {"index": index, "token": str(token)}))
            except Exception as exc:
                put(("restart" if isinstance(exc, ReplyRestartedError) else "failure", {"index": index, **_error(exc)}))
            index += 1
        put(("end", {}))
    except Exception as exc:
        logger.warning("Reading %s failed: %s", reply_key, exc)
        put(("failure", _error(exc)))
    finally:
        put(None)


def _error(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def _call_id(request: web.Request) -> str:
    call_id = request.match_info["call_id"]
    if not call_id.isascii() or not call_id.isalnum() or len(call_id) > _MAX_CALL_ID:
        raise web.HTTPBadRequest(text="A call id is made of letters and digits.")
    return call_id


def _texts(fields: dict[Any, Any] | None) -> dict[str, str]:
    return {as_text(key): as_text(value) for key, value in (fields or {}).items()}


def run_dashboard(
    *, redis_url: str, host: str, port: int, key_prefix: str, worker_timeout_s: float, announce: Callable[[str], None]
) -> int:
    """Serve until SIGINT/SIGTERM; ``announce`` gets the page's URL once it is listening."""
    import signal

    dashboard = Dashboard(redis_url=redis_url, key_prefix=key_prefix, worker_timeout_s=worker_timeout_s)

    async def _amain() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await dashboard.aserve(host, port, stop=stop, on_ready=announce)

    asyncio.run(_amain())
    return 0


__all__ = ("DEFAULT_PORT", "Dashboard", "run_dashboard")
