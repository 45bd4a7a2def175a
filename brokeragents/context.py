"""The promising context: defaults, owned background tasks, resolution events and the Redis link.

A context is activated through a ContextVar, as in MiniAgents. Everything created inside it
(promises, appenders, sequences) finds it there. Every background task it starts is tracked in
``child_tasks`` and awaited before the context finishes, so nothing outlives it.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, NoReturn, Self, TypeVar

from brokeragents.errors import NoActiveContextError, PromisingContextError, WrongActiveContextError
from brokeragents.sentinels import NO_VALUE, Sentinel

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

    from brokeragents.promise import Promise
    from brokeragents.store import StreamStore

T = TypeVar("T")
PromiseResolvedEventHandler = Callable[["Promise[Any]", Any], Awaitable[None]]

_current_context: contextvars.ContextVar[PromisingContext | None] = contextvars.ContextVar(
    "brokeragents_current_context", default=None
)
# Marks an exception that was already logged, so a failure seen by many tasks is logged once.
_LOGGED_MARKER = "_brokeragents_logged"

DEFAULT_MAX_MESSAGE_BYTES = 4 * 1024 * 1024


def current_context_or_none() -> PromisingContext | None:
    """Return the active context, or ``None`` when no context is active."""
    return _current_context.get()


class PromisingContext:
    """Holds defaults, owns background tasks and fires promise-resolved events.

    Pass ``redis_url`` (or a ready ``redis`` client, e.g. fakeredis in tests) to back every
    message promise and message sequence by a Redis Stream. A ``redis+cluster://host:port`` URL
    (or a ``RedisCluster`` client) uses a Redis Cluster. With neither, everything stays in
    memory and no server is needed at all.
    """

    def __init__(
        self,
        *,
        start_everything_soon_by_default: bool = True,
        appenders_capture_errors_by_default: bool = False,
        longer_hash_keys: bool | Sentinel = NO_VALUE,
        logger: logging.Logger | None = None,
        log_level_for_errors: int = logging.ERROR,
        on_promise_resolved: PromiseResolvedEventHandler | Iterable[PromiseResolvedEventHandler] = (),
        redis_url: str | None = None,
        redis: Redis | RedisCluster | None = None,
        key_prefix: str = "ba",
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
        finished_stream_ttl_s: float | None = 24 * 3600.0,
    ) -> None:
        self.start_everything_soon_by_default = start_everything_soon_by_default
        self.appenders_capture_errors_by_default = appenders_capture_errors_by_default
        self.longer_hash_keys = longer_hash_keys
        self.logger = logger or logging.getLogger("brokeragents")
        self.log_level_for_errors = log_level_for_errors
        self.max_message_bytes = max_message_bytes
        self.child_tasks: set[asyncio.Task[Any]] = set()

        self._redis_url = redis_url
        self._redis_client = redis
        self._key_prefix = key_prefix
        self._finished_stream_ttl_s = finished_stream_ttl_s
        self._store: StreamStore | None = None

        self._on_promise_resolved_handlers: list[PromiseResolvedEventHandler] = []
        if callable(on_promise_resolved):
            on_promise_resolved = [on_promise_resolved]
        for handler in on_promise_resolved:
            self.on_promise_resolved(handler)

        self.parent: PromisingContext | None = None
        self._token: contextvars.Token[PromisingContext | None] | None = None
        self._finalized = False

    # --- activation -------------------------------------------------------------------------

    @classmethod
    def get_current(cls) -> Self:
        """Return the active context; raise if none is active or it is of another class."""
        context = _current_context.get()
        if context is None:
            raise NoActiveContextError(
                f"No active {cls.__name__}. Use `async with {cls.__name__}():` "
                f"or `{cls.__name__}().run(...)`."
            )
        if not isinstance(context, cls):
            raise WrongActiveContextError(
                f"The active context is {type(context).__name__}, not {cls.__name__}."
            )
        return context

    def activate(self) -> None:
        """Make this context the active one (for example in a web server's startup hook)."""
        if self._token is not None:
            raise PromisingContextError(f"This {type(self).__name__} is already active.")
        self.parent = _current_context.get()
        self._token = _current_context.set(self)
        if self._redis_url is not None or self._redis_client is not None:
            from brokeragents.store import StreamStore  # the store needs redis; import on demand

            self._store = StreamStore(
                url=self._redis_url,
                client=self._redis_client,
                key_prefix=self._key_prefix,
                finished_stream_ttl_s=self._finished_stream_ttl_s,
                max_message_bytes=self.max_message_bytes,
                context=self,
            )

    async def __aenter__(self) -> Self:
        self.activate()
        if self._store is not None:
            try:
                await self._store.aconnect()
            except BaseException:
                self._deactivate()
                raise
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.afinalize()

    def __enter__(self) -> NoReturn:
        raise PromisingContextError(f"Use `async with {type(self).__name__}()`, not `with`.")

    def __exit__(self, *args: object) -> None:  # pragma: no cover - __enter__ always raises
        return None

    async def afinalize(self) -> None:
        """Wait for every owned task, flush Redis writes, then deactivate."""
        try:
            await self.aflush_tasks()
        finally:
            try:
                if self._store is not None:
                    await self._store.aclose()
            finally:
                self._deactivate()

    def _deactivate(self) -> None:
        if self._token is not None:
            try:
                _current_context.reset(self._token)
            except ValueError:
                # Finalized from another task/context copy: restore the parent explicitly.
                _current_context.set(self.parent)
            self._token = None
        self._finalized = True

    def run(self, awaitable: Awaitable[T]) -> T:
        """Run ``awaitable`` inside this context on a new event loop and return its result."""
        try:
            asyncio.get_running_loop()
            in_loop = True
        except RuntimeError:
            in_loop = False
        if in_loop:
            raise PromisingContextError("run() cannot be called from a running event loop; use arun().")
        return asyncio.run(self.arun(awaitable))

    async def arun(self, awaitable: Awaitable[T]) -> T:
        """Await ``awaitable`` inside this context and finalize the context afterwards."""
        async with self:
            return await awaitable

    # --- the Redis link -----------------------------------------------------------------------

    @property
    def store(self) -> StreamStore | None:
        """The Redis stream store, or ``None`` when the context is not connected to Redis."""
        return self._store

    @property
    def is_connected(self) -> bool:
        """True when promises of this context are backed by Redis Streams."""
        return self._store is not None

    # --- tasks ---------------------------------------------------------------------------------

    def start_soon(
        self, awaitable: Awaitable[T], suppress_errors: bool = True
    ) -> asyncio.Task[T | None]:
        """Schedule ``awaitable`` as a task owned by this context.

        An exception is logged once; it is swallowed unless ``suppress_errors`` is False.
        """
        task: asyncio.Task[T | None] = asyncio.get_running_loop().create_task(
            self._arun_owned(awaitable, suppress_errors)
        )
        self.child_tasks.add(task)
        task.add_done_callback(self.child_tasks.discard)
        return task

    async def _arun_owned(self, awaitable: Awaitable[T], suppress_errors: bool) -> T | None:
        try:
            return await awaitable
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            self.log_background_error_once(exc)
            if suppress_errors:
                return None
            raise

    def log_background_error_once(self, exc: BaseException) -> None:
        """Log ``exc`` at ``log_level_for_errors`` unless it was logged before."""
        if getattr(exc, _LOGGED_MARKER, False):
            return
        self.logger.log(
            self.log_level_for_errors,
            "AN ERROR OCCURRED IN AN ASYNC BACKGROUND TASK",
            exc_info=(type(exc), exc, exc.__traceback__),
        )
        with contextlib.suppress(AttributeError):  # some builtin exceptions refuse new attributes
            setattr(exc, _LOGGED_MARKER, True)

    async def agather(self, *awaitables: Awaitable[Any], return_exceptions: bool = True) -> list[Any]:
        """``asyncio.gather`` that returns exceptions instead of raising them, by default."""
        return list(await asyncio.gather(*awaitables, return_exceptions=return_exceptions))

    async def aflush_tasks(self) -> None:
        """Wait until no task owned by this context is left (tasks may start new ones)."""
        while self.child_tasks:
            await asyncio.gather(*self.child_tasks, return_exceptions=True)

    # --- events --------------------------------------------------------------------------------

    def on_promise_resolved(self, handler: PromiseResolvedEventHandler) -> PromiseResolvedEventHandler:
        """Register an async ``(promise, result)`` handler; usable as a decorator."""
        if not asyncio.iscoroutinefunction(handler):
            raise ValueError(f"The on_promise_resolved handler {handler!r} must be an async function.")
        self._on_promise_resolved_handlers.append(handler)
        return handler

    def fire_promise_resolved(self, promise: Promise[Any], result: Any) -> None:
        """Run the handlers of this context and of all its parents, each as its own task."""
        context: PromisingContext | None = self
        while context is not None:
            for handler in context._on_promise_resolved_handlers:
                self.start_soon(handler(promise, result))
            context = context.parent


__all__ = ("PromiseResolvedEventHandler", "PromisingContext", "current_context_or_none")
