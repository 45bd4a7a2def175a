"""Promise and StreamedPromise: resolve once, stream once, replay to every consumer.

A :class:`StreamedPromise` pulls each piece from its streamer at most once and caches it. Every
``__aiter__()`` replays the cache from piece 0 and then pulls the next pieces under a lock, so any
number of consumers see the same pieces in the same order (semantics B1-B7). Exceptions are
pieces too: they are raised to each consumer at their position.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable, Generator, Iterable
from typing import Any, Generic, TypeVar, cast

from brokeragents.context import PromisingContext
from brokeragents.errors import FunctionNotProvidedError
from brokeragents.sentinels import NO_VALUE, Sentinel

T = TypeVar("T")
PIECE = TypeVar("PIECE")
WHOLE = TypeVar("WHOLE")

PromiseResolver = Callable[[Any], Awaitable[Any]]
PromiseStreamer = Callable[[Any], AsyncIterator[Any]]

# Cancellation and generator shutdown are control flow, never stored as a result or a piece.
_CONTROL_FLOW = (asyncio.CancelledError, GeneratorExit)


class Promise(Generic[T]):
    """A value computed at most once by an async resolver; awaiting it gives that value."""

    def __init__(
        self,
        *,
        start_soon: bool | Sentinel = NO_VALUE,
        resolver: PromiseResolver | None = None,
        prefill_result: T | Sentinel = NO_VALUE,
    ) -> None:
        self._context = PromisingContext.get_current()
        if resolver is not None and prefill_result is not NO_VALUE:
            raise ValueError("Cannot pass both `resolver` and `prefill_result`.")
        if resolver is None and prefill_result is NO_VALUE and not self._has_own_resolver():
            raise FunctionNotProvidedError(
                f"{type(self).__name__} needs a `resolver` or a `prefill_result`."
            )
        self._resolver = resolver
        self._result: Any = NO_VALUE  # the value, or the exception raised by the resolver
        self._resolve_lock = asyncio.Lock()
        if prefill_result is not NO_VALUE:
            self._result = prefill_result
            self._context.fire_promise_resolved(self, prefill_result)
        elif self._resolve_start_soon(start_soon):
            self._context.start_soon(self._aresolve_quietly())

    def _resolve_start_soon(self, start_soon: bool | Sentinel) -> bool:
        if isinstance(start_soon, Sentinel):
            return self._context.start_everything_soon_by_default
        return start_soon

    def _has_own_resolver(self) -> bool:
        return type(self)._aresolver is not Promise._aresolver

    async def _aresolver(self) -> T:
        """Compute the value; subclasses override this instead of passing ``resolver``."""
        raise FunctionNotProvidedError(f"{type(self).__name__} has no resolver.")

    @property
    def is_resolved(self) -> bool:
        """True once the value (or the resolver's exception) is known."""
        return self._result is not NO_VALUE

    @property
    def is_failed(self) -> bool:
        """True once the resolver raised (awaiting the promise re-raises that exception)."""
        return isinstance(self._result, _Failure)

    async def aresolve(self) -> T:
        """Resolve once; every later call returns the same object or raises the same exception."""
        if self._result is NO_VALUE:
            async with self._resolve_lock:
                if self._result is NO_VALUE:
                    try:
                        if self._resolver is not None:
                            result = await self._resolver(self)
                        else:
                            result = await self._aresolver()
                    except _CONTROL_FLOW:
                        raise
                    except BaseException as exc:
                        result = exc
                        self._result = _Failure(exc)
                        self._on_resolved(exc, failed=True)
                    else:
                        self._result = result
                        self._on_resolved(result, failed=False)
                    self._context.fire_promise_resolved(self, result)
        if isinstance(self._result, _Failure):
            raise self._result.exc
        return cast("T", self._result)

    def _on_resolved(self, result: Any, *, failed: bool) -> None:
        """Hook: called once when the resolver finished (``result`` is the exception if it failed)."""

    async def _aresolve_quietly(self) -> None:
        # The failure is kept for whoever awaits; a background resolution never logs it.
        try:
            await self.aresolve()
        except _CONTROL_FLOW:
            raise
        except BaseException:
            pass

    def __await__(self) -> Generator[Any, None, T]:
        return self.aresolve().__await__()


class _Failure:
    """Wraps an exception stored as a resolution result, so a resolver may return exceptions."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class StreamedPromise(Promise[WHOLE], Generic[PIECE, WHOLE]):
    """A promise of a whole made of pieces that stream first and replay to every consumer."""

    def __init__(
        self,
        *,
        streamer: PromiseStreamer | None = None,
        prefill_pieces: Iterable[PIECE] | Sentinel = NO_VALUE,
        resolver: PromiseResolver | None = None,
        prefill_result: WHOLE | Sentinel = NO_VALUE,
        start_soon: bool | Sentinel = NO_VALUE,
    ) -> None:
        if streamer is not None and prefill_pieces is not NO_VALUE:
            raise ValueError("Cannot pass both `streamer` and `prefill_pieces`.")
        self._pieces: list[Any] = []  # pieces, with exceptions wrapped in _Failure
        self._stream_done = False
        self._streamer = streamer
        self._source: AsyncIterator[Any] | None = None
        self._pull_lock = asyncio.Lock()
        self._driven = False
        if not isinstance(prefill_pieces, Sentinel):
            self._pieces.extend(prefill_pieces)
            self._stream_done = True
        elif streamer is None and not self._has_own_streamer():
            raise FunctionNotProvidedError(
                f"{type(self).__name__} needs a `streamer` or `prefill_pieces`."
            )
        super().__init__(start_soon=False, resolver=resolver, prefill_result=prefill_result)
        if self._resolve_start_soon(start_soon):
            self._context.start_soon(self._adrive())

    def _has_own_resolver(self) -> bool:
        return True  # the default resolver collects the pieces

    def _has_own_streamer(self) -> bool:
        return type(self)._astreamer is not StreamedPromise._astreamer

    def _astreamer(self) -> AsyncIterator[PIECE]:
        """Produce the pieces; subclasses override this instead of passing ``streamer``."""
        raise FunctionNotProvidedError(f"{type(self).__name__} has no streamer.")

    async def _aresolver(self) -> WHOLE:
        return cast("WHOLE", tuple([piece async for piece in self]))

    async def _adrive(self) -> None:
        """Pull every piece and resolve, for start_soon promises nobody may be consuming yet."""
        if self._driven:
            return  # one driver is enough; more would only contend for the pull lock
        self._driven = True
        index = 0
        while await self._apiece_ready(index):
            index += 1
        if not self.is_resolved:
            await self._aresolve_quietly()

    def __aiter__(self) -> AsyncIterator[PIECE]:
        return _ReplayIterator(self)

    def __call__(self, *_args: object) -> AsyncIterator[PIECE]:
        # Lets a StreamedPromise act as the streamer of another promise.
        return self.__aiter__()

    @property
    def pieces_so_far(self) -> tuple[Any, ...]:
        """The pieces pulled so far (exceptions included as exception objects)."""
        return tuple(p.exc if isinstance(p, _Failure) else p for p in self._pieces)

    @property
    def is_stream_done(self) -> bool:
        """True once the streamer is exhausted."""
        return self._stream_done

    async def _apiece_ready(self, index: int) -> bool:
        """Make sure piece ``index`` is cached if it exists; return False at the end of the stream."""
        if index < len(self._pieces):
            return True
        if self._stream_done:
            return False
        async with self._pull_lock:
            if index >= len(self._pieces) and not self._stream_done:
                await self._apull_one()
        return index < len(self._pieces)

    async def _apull_one(self) -> None:
        try:
            if self._source is None:
                self._source = self._open_source()
            piece = await self._source.__anext__()
        except StopAsyncIteration:
            self._finish_stream()
            return
        except _CONTROL_FLOW:
            raise
        except BaseException as exc:
            self._pieces.append(_Failure(exc))
            self._on_piece(exc, is_error=True)
            if self._source is None:  # a broken streamer: nothing more will come (B5)
                self._finish_stream()
            return
        self._pieces.append(piece)
        self._on_piece(piece, is_error=False)

    def _open_source(self) -> AsyncIterator[Any]:
        source: Any = self._streamer(self) if self._streamer is not None else self._astreamer()
        if asyncio.iscoroutine(source):
            source.close()  # an `async def` that is not a generator; close it so it never warns
            raise TypeError(
                "The streamer must return an async iterator (an async generator function); "
                "got a coroutine."
            )
        if not hasattr(source, "__anext__"):
            if hasattr(source, "__aiter__"):
                return cast("AsyncIterator[Any]", source.__aiter__())
            raise TypeError(
                f"The streamer must return an async iterator; got {type(source).__name__}."
            )
        return cast("AsyncIterator[Any]", source)

    def _finish_stream(self) -> None:
        self._stream_done = True
        self._on_stream_done()

    def _on_piece(self, piece: Any, *, is_error: bool) -> None:
        """Hook: called once per piece as it is pulled (used to mirror pieces to Redis)."""

    def _on_stream_done(self) -> None:
        """Hook: called once when the streamer is exhausted."""


async def apieces_and_errors(promise: StreamedPromise[PIECE, Any]) -> AsyncIterator[PIECE | Exception]:
    """Every piece of ``promise`` in order; an error piece is yielded as its exception, not raised.

    A stream goes on after an error piece (B4), so readers that must see all of it (forwarding,
    draining, tailing) iterate with this instead of stopping at the first error.
    """
    iterator = StreamedPromise.__aiter__(promise)
    while True:
        try:
            yield await iterator.__anext__()
        except StopAsyncIteration:
            return
        except Exception as exc:
            yield exc


class _ReplayIterator(AsyncIterator[PIECE]):
    """An independent cursor over a StreamedPromise's pieces, starting at piece 0."""

    __slots__ = ("_index", "_promise")

    def __init__(self, promise: StreamedPromise[PIECE, Any]) -> None:
        self._promise = promise
        self._index = 0

    def __aiter__(self) -> _ReplayIterator[PIECE]:
        return self

    async def __anext__(self) -> PIECE:
        promise = self._promise
        index = self._index
        if index >= len(promise._pieces) and not await promise._apiece_ready(index):
            raise StopAsyncIteration
        piece = promise._pieces[index]
        self._index = index + 1
        if isinstance(piece, _Failure):
            raise piece.exc
        return cast("PIECE", piece)


__all__ = ("Promise", "PromiseResolver", "PromiseStreamer", "StreamedPromise", "apieces_and_errors")
