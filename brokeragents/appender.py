"""StreamAppender: the push side of a stream (semantics C1-C5).

An appender is a single-consumer queue: open it, append pieces, close it. Wrap it in a
:class:`~brokeragents.promise.StreamedPromise` (pass it as the streamer) to get replay.
"""

from __future__ import annotations

import asyncio
from collections import deque
from types import TracebackType
from typing import Any, Generic, NoReturn, Self, TypeVar

from brokeragents.context import PromisingContext
from brokeragents.errors import AppenderClosedError, AppenderNotOpenError
from brokeragents.sentinels import END_OF_QUEUE, NO_VALUE, Sentinel

PIECE = TypeVar("PIECE")


class _Raise:
    """A captured exception travelling through the queue."""

    __slots__ = ("exc",)

    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


class StreamAppender(Generic[PIECE]):
    """Push pieces into a stream from synchronous code; consume them as an async iterator."""

    def __init__(self, capture_errors: bool | Sentinel = NO_VALUE) -> None:
        context = PromisingContext.get_current()
        self.capture_errors = (
            context.appenders_capture_errors_by_default
            if isinstance(capture_errors, Sentinel)
            else capture_errors
        )
        self._queue: deque[Any] = deque()
        self._waiter: asyncio.Future[None] | None = None
        self._was_open = False
        self._is_open = False

    @property
    def was_open(self) -> bool:
        """True once the appender was opened (it may be closed by now)."""
        return self._was_open

    @property
    def is_open(self) -> bool:
        """True between open() and close()."""
        return self._is_open

    def open(self) -> Self:
        """Open the appender; reopening a closed one raises AppenderClosedError."""
        if self._was_open and not self._is_open:
            raise AppenderClosedError("The appender is closed and cannot be reopened.")
        self._was_open = True
        self._is_open = True
        return self

    def close(self, exc: BaseException | None = None) -> None:
        """Close the appender (idempotent); ``exc``, if given, becomes the last piece."""
        if not self._is_open:
            if not self._was_open:
                # Closing an appender nobody opened still ends the stream for its consumer.
                self._was_open = True
                self._push(END_OF_QUEUE)
            return
        self._is_open = False
        if exc is not None:
            self._push(_Raise(exc))
        self._push(END_OF_QUEUE)

    def append(self, piece: PIECE) -> Self:
        """Append one piece."""
        if not self._was_open:
            raise AppenderNotOpenError("Open the appender (`with appender:` or `.open()`) first.")
        if not self._is_open:
            raise AppenderClosedError("The appender is closed.")
        self._push(piece)
        return self

    def _push(self, item: Any) -> None:
        self._queue.append(item)
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        if exc is not None and self.capture_errors and not isinstance(exc, AppenderClosedError):
            if self._is_open:
                self._push(_Raise(exc))
            self.close()
            return True  # the error now lives in the stream
        self.close()
        return False

    async def __aenter__(self) -> NoReturn:
        raise RuntimeError("Use `with appender:` (a plain `with`), not `async with`.")

    async def __aexit__(self, *args: object) -> None:  # pragma: no cover - __aenter__ raises
        return None

    def __call__(self, *_args: object) -> Self:
        # Lets the appender be passed as a promise's streamer.
        return self

    def __aiter__(self) -> Self:
        return self

    async def __anext__(self) -> PIECE:
        queue = self._queue
        while not queue:
            if self._waiter is None or self._waiter.done():
                self._waiter = asyncio.get_running_loop().create_future()
            await self._waiter
        item = queue.popleft()
        if item is END_OF_QUEUE:
            queue.appendleft(item)  # stay at the end for every later call
            raise StopAsyncIteration
        if isinstance(item, _Raise):
            raise item.exc
        return item  # type: ignore[no-any-return]


__all__ = ("StreamAppender",)
