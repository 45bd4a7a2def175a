"""FlatSequence: merge an ordered and an unordered input stream, flattening every item.

Ordered items are flattened one after another, each completely before the next (D1). Unordered
items are flattened in their own tasks and interleaved as soon as they produce (D2). An item that
raises while being flattened puts the exception at its position and the next item goes on (D5).
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, TypeVar

from brokeragents.context import PromisingContext
from brokeragents.errors import FunctionNotProvidedError
from brokeragents.promise import PromiseStreamer, StreamedPromise
from brokeragents.sentinels import NO_VALUE, Sentinel

IN = TypeVar("IN")
OUT = TypeVar("OUT")

SequenceFlattener = Callable[[Any, Any], AsyncIterator[Any]]

_CONTROL_FLOW = (asyncio.CancelledError, GeneratorExit)


class _Raise:
    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class FlatSequence(Generic[IN, OUT]):
    """Flattens items of one ordered and one optional unordered stream into ``sequence_promise``."""

    def __init__(
        self,
        normal_streamer: PromiseStreamer,
        *,
        unordered_streamer: PromiseStreamer | None = None,
        flattener: SequenceFlattener | None = None,
        start_soon: bool | Sentinel = NO_VALUE,
        sequence_promise_class: Callable[..., StreamedPromise[Any, Any]] = StreamedPromise,
    ) -> None:
        self._context = PromisingContext.get_current()
        if flattener is None and type(self)._aflattener is FlatSequence._aflattener:
            raise FunctionNotProvidedError("FlatSequence needs a `flattener`.")
        self._normal_streamer = normal_streamer
        self._unordered_streamer = unordered_streamer
        self._flattener = flattener
        self.sequence_promise: StreamedPromise[OUT, tuple[OUT, ...]] = sequence_promise_class(
            streamer=self._open_flat_stream, start_soon=start_soon
        )

    def _aflattener(self, zero_or_more_items: Any) -> AsyncIterator[OUT]:
        """Flatten one item; subclasses override this instead of passing ``flattener``."""
        raise FunctionNotProvidedError("FlatSequence needs a `flattener`.")

    def _flatten(self, item: Any) -> AsyncIterator[OUT]:
        if self._flattener is not None:
            return self._flattener(self, item)
        return self._aflattener(item)

    def _open_flat_stream(self, promise: StreamedPromise[Any, Any]) -> AsyncIterator[OUT]:
        self._flat_stream = _FlatStream(self, promise)
        return self._flat_stream

    async def await_unordered_drained(self) -> None:
        """Wait until every unordered item appended so far is flattened (its stream must be closed)."""
        stream = getattr(self, "_flat_stream", None)
        if stream is not None:
            await stream.unordered_drained.wait()

    async def _abefore_end(self) -> None:
        """Hook: awaited once after the last item, before the sequence ends."""


class _FlatStream(AsyncIterator[OUT]):
    """The merged output. It raises an item's exception at its position and keeps going."""

    def __init__(self, sequence: FlatSequence[Any, OUT], promise: StreamedPromise[Any, Any]) -> None:
        self._sequence = sequence
        self._promise = promise
        self._queue: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._producers = 0
        self._unordered_active = 0
        self.unordered_drained = asyncio.Event()
        self._started = False
        self._before_end_done = False

    def __aiter__(self) -> _FlatStream[OUT]:
        return self

    def _push(self, item: Any) -> None:
        self._queue.append(item)
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def _start(self) -> None:
        self._started = True
        context = self._sequence._context
        self._producers = 1
        context.start_soon(self._aproduce_ordered())
        if self._sequence._unordered_streamer is not None:
            self._producers += 1
            self._unordered_active = 1
            context.start_soon(self._aproduce_unordered())
        else:
            self.unordered_drained.set()

    async def __anext__(self) -> OUT:
        if not self._started:
            self._start()
        queue = self._queue
        while not queue:
            if self._producers == 0:
                if self._before_end_done:
                    raise StopAsyncIteration
                self._before_end_done = True
                await self._sequence._abefore_end()  # an exception here becomes the last piece
                continue
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        item = queue.popleft()
        if isinstance(item, _Raise):
            raise item.exc
        return item  # type: ignore[no-any-return]

    async def _aflatten_into_queue(self, item: Any) -> None:
        try:
            async for out in self._sequence._flatten(item):
                # A flattener yields an exception for an error piece after which it goes on.
                self._push(_Raise(out) if isinstance(out, BaseException) else out)
        except _CONTROL_FLOW:
            raise
        except BaseException as exc:
            self._push(_Raise(exc))

    async def _aitems(self, streamer: PromiseStreamer) -> AsyncIterator[Any]:
        """Yield the source's items; an exception from the source is yielded as an item."""
        try:
            source = streamer(self._promise)
            iterator = source.__aiter__() if not hasattr(source, "__anext__") else source
        except _CONTROL_FLOW:
            raise
        except BaseException as exc:
            yield exc
            return
        while True:
            try:
                item = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except _CONTROL_FLOW:
                raise
            except BaseException as exc:
                item = exc
            yield item

    async def _aproduce_ordered(self) -> None:
        try:
            async for item in self._aitems(self._sequence._normal_streamer):
                await self._aflatten_into_queue(item)
        finally:
            self._producer_done()

    async def _aproduce_unordered(self) -> None:
        streamer = self._sequence._unordered_streamer
        assert streamer is not None
        context = self._sequence._context
        try:
            async for item in self._aitems(streamer):
                self._producers += 1
                self._unordered_active += 1
                context.start_soon(self._aflatten_unordered(item))
        finally:
            self._unordered_done()
            self._producer_done()

    async def _aflatten_unordered(self, item: Any) -> None:
        try:
            await self._aflatten_into_queue(item)
        finally:
            self._unordered_done()
            self._producer_done()

    def _unordered_done(self) -> None:
        self._unordered_active -= 1
        if self._unordered_active == 0:
            self.unordered_drained.set()

    def _producer_done(self) -> None:
        self._producers -= 1
        self._wake()


__all__ = ("FlatSequence", "SequenceFlattener")
