"""Message sequences: any ``MessageType`` input becomes a flat, replayable sequence of messages.

Input is frozen when appended (strings, dicts, models and sync iterables become message promises
or tuples at once, E1-E13) and flattened when consumed (nested sequences and async iterables are
expanded in order). With ``errors_as_messages`` the consumer sees errors as ``ErrorMessage``s.
"""

from __future__ import annotations

import traceback
import warnings
from collections.abc import AsyncIterator, Iterable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypeAlias

from pydantic import BaseModel

from brokeragents.appender import StreamAppender
from brokeragents.errors import ReplyRestartedError
from brokeragents.keys import new_id
from brokeragents.message_promise import MessagePromise
from brokeragents.messages import ErrorMessage, Message, TextMessage, TextToken
from brokeragents.promise import StreamedPromise
from brokeragents.sentinels import NO_VALUE, Sentinel
from brokeragents.sequence import FlatSequence

if TYPE_CHECKING:
    from brokeragents.store import StreamStore

SingleMessageType: TypeAlias = str | dict[str, Any] | BaseModel | Message | MessagePromise | BaseException
MessageType: TypeAlias = SingleMessageType | Iterable[Any] | AsyncIterator[Any]

# Set on an exception raised by an agent: "A <- B <- C", its agent trace (I3).
AGENT_TRACE_ATTRIBUTE = "_brokeragents_agent_trace"

ASYNC_ITERATOR_WARNING = (
    "An async iterator is being passed to a message sequence and will not be consumed immediately."
)


def freeze_message_input(item: Any) -> Any:
    """Turn appended input into message promises, tuples, exceptions or lazy async iterables."""
    if isinstance(item, MessagePromise):
        return item
    if isinstance(item, Message):
        return item.as_promise
    if isinstance(item, BaseModel):
        return Message(**dict(item)).as_promise
    if isinstance(item, dict):
        return Message(**item).as_promise
    if isinstance(item, str):
        return TextMessage(item).as_promise
    if isinstance(item, BaseException):
        return item
    if isinstance(item, StreamedPromise):
        return item
    if hasattr(item, "__iter__"):
        # Sync iterables (lists, generators) are drained now, so their content is frozen now.
        return tuple(freeze_message_input(sub_item) for sub_item in item)
    if hasattr(item, "__aiter__"):
        warnings.warn(ASYNC_ITERATOR_WARNING, UserWarning, stacklevel=4)
        return item
    raise TypeError(f"Unexpected message type: {type(item)}")


async def flatten_message_input(item: Any) -> AsyncIterator[Any]:
    """Expand one frozen item into the message promises it stands for, in order.

    The restart of a reply flattened into it (``ReplyRestartedError``) is yielded, not raised:
    it is an error piece after which the sequence goes on.
    """
    if isinstance(item, MessagePromise):
        yield item
    elif isinstance(item, tuple):
        for sub_item in item:
            async for promise in flatten_message_input(sub_item):
                yield promise
    elif isinstance(item, BaseException):
        raise item
    elif hasattr(item, "__aiter__"):
        iterator = item.__aiter__()
        kept = 0  # pieces of ``item`` yielded since its last restart, as an awaiting reader keeps them
        while True:
            try:
                sub_item = await iterator.__anext__()
            except StopAsyncIteration:
                return
            except ReplyRestartedError as exc:
                # A reply flattened into this sequence restarted (its call was taken over): the
                # marker is a piece here too, scoped to what that reply contributed, and the
                # reply's new attempt follows.
                abandoned = kept if exc.abandoned is None else min(kept, exc.abandoned)
                kept -= abandoned
                yield ReplyRestartedError(*exc.args, abandoned=abandoned)
                continue
            if not isinstance(sub_item, MessagePromise):
                sub_item = freeze_message_input(sub_item)
            async for promise in flatten_message_input(sub_item):
                yield promise
                if isinstance(promise, ReplyRestartedError):
                    kept -= min(kept, promise.abandoned or 0)
                else:
                    kept += 1
    else:
        raise TypeError(f"Unexpected message type: {type(item)}")


class MessageSequenceAppender:
    """Append messages to a sequence, in order or out of order (two underlying appenders)."""

    def __init__(self, capture_errors: bool | Sentinel = NO_VALUE) -> None:
        self.normal_appender: StreamAppender[Any] = StreamAppender(capture_errors=capture_errors)
        self.unordered_appender: StreamAppender[Any] = StreamAppender(capture_errors=False)

    @property
    def capture_errors(self) -> bool:
        return self.normal_appender.capture_errors

    @property
    def was_open(self) -> bool:
        return self.normal_appender.was_open

    @property
    def is_open(self) -> bool:
        return self.normal_appender.is_open

    def append(self, piece: Any, out_of_order: bool = False) -> Self:
        """Freeze ``piece`` now and append it (to the unordered stream if ``out_of_order``)."""
        if not self.normal_appender.was_open:
            self.normal_appender.append(piece)  # raises AppenderNotOpenError
        if not self.normal_appender.is_open:
            self.normal_appender.append(piece)  # raises AppenderClosedError
        frozen = freeze_message_input(piece)
        if out_of_order:
            self.unordered_appender.append(frozen)
        else:
            self.normal_appender.append(frozen)
        return self

    def inject_out_of_order(self, piece: Any) -> Self:
        return self.append(piece, out_of_order=True)

    def open(self) -> Self:
        self.normal_appender.open()
        self.unordered_appender.open()
        return self

    def close(self, exc: BaseException | None = None) -> None:
        self.normal_appender.close(exc)
        self.unordered_appender.close()

    def __enter__(self) -> Self:
        return self.open()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        self.unordered_appender.close()
        return self.normal_appender.__exit__(exc_type, exc, tb)


class MessageSequencePromise(StreamedPromise[MessagePromise, tuple[Message, ...]]):
    """A replayable sequence of message promises; awaiting it gives the tuple of messages."""

    def __init__(self, *, redis_key: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._store: StreamStore | None = None
        self._redis_key: str | None = None
        store = self._context.store
        if store is not None and self._mirrors_to_redis():
            self._store = store
            self._redis_key = redis_key or store.keys.sequence(new_id())

    def _mirrors_to_redis(self) -> bool:
        return True

    @property
    def redis_key(self) -> str | None:
        """The key of this sequence's stream, or None when the context is not connected."""
        return self._redis_key

    async def _aresolver(self) -> tuple[Message, ...]:
        collected: list[MessagePromise] = []
        iterator = StreamedPromise.__aiter__(self)
        index = 0
        while True:
            try:
                piece: MessagePromise | BaseException = await iterator.__anext__()
            except StopAsyncIteration:
                break
            except ReplyRestartedError as exc:
                # The whole reply is the attempt that completed, alone (or, for the reply of an
                # inner call flattened into it, that part of it).
                if exc.abandoned is None:
                    collected.clear()
                else:
                    del collected[max(0, len(collected) - exc.abandoned) :]
                index += 1
                continue
            except Exception as exc:
                piece = exc
            collected.append(self._resolved_piece(index, piece))
            index += 1
        return tuple([await promise for promise in collected])

    def _resolved_piece(self, index: int, piece: MessagePromise | BaseException) -> MessagePromise:
        """What ``await`` makes of one piece: errors raise here (the safe view converts them)."""
        if isinstance(piece, BaseException):
            raise piece
        return piece

    def _on_piece(self, piece: Any, *, is_error: bool) -> None:
        if self._store is not None and self._redis_key is not None:
            if is_error:
                self._store.sequence_error(self._redis_key, piece)
            else:
                self._store.sequence_message(self._redis_key, piece)

    def _on_stream_done(self) -> None:
        if self._store is not None and self._redis_key is not None:
            self._store.sequence_end(self._redis_key)

    def as_single_text_promise(self, **kwargs: Any) -> MessagePromise:
        """Join the messages into one streamed text message (see ``as_single_text_promise``)."""
        from brokeragents.utils import as_single_text_promise

        return as_single_text_promise(self, **kwargs)


def error_to_text(exc: BaseException, *, with_traceback: bool = False) -> str:
    """``"<ExcType>: <message>"``, or the whole traceback when ``with_traceback``."""
    if with_traceback:
        text = "".join(traceback.format_exception(exc)).rstrip("\n")
        trace = getattr(exc, AGENT_TRACE_ATTRIBUTE, None)
        return f"{text}\nAgent trace: {trace}" if trace else text
    return f"{type(exc).__name__}: {exc}"


class SafeMessageSequencePromise(MessageSequencePromise):
    """The view with ``errors_as_messages``: errors become ``ErrorMessage`` promises (I3, I4).

    The stream underneath (and its Redis mirror) keeps the errors; only what consumers of this
    promise see is converted, each converted item cached so replays see the same objects.
    """

    def __init__(self, *, error_tracebacks: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._error_tracebacks = error_tracebacks
        self._converted: dict[int, MessagePromise] = {}

    def __aiter__(self) -> AsyncIterator[MessagePromise]:
        return _ConvertingIterator(self, super().__aiter__())

    def _resolved_piece(self, index: int, piece: MessagePromise | BaseException) -> MessagePromise:
        return self._convert(index, piece)

    def _convert(self, index: int, piece: MessagePromise | BaseException) -> MessagePromise:
        converted = self._converted.get(index)
        if converted is None:
            if isinstance(piece, BaseException):
                text = error_to_text(piece, with_traceback=self._error_tracebacks)
                converted = ErrorMessage(text).as_promise
            elif piece.is_resolved and not piece.is_failed:
                converted = piece  # nothing left that could fail
            else:
                converted = ErrorConvertingMessagePromise(piece, error_tracebacks=self._error_tracebacks)
            self._converted[index] = converted
        return converted


class _ConvertingIterator(AsyncIterator[MessagePromise]):
    def __init__(self, promise: SafeMessageSequencePromise, inner: AsyncIterator[MessagePromise]) -> None:
        self._promise = promise
        self._inner = inner
        self._index = 0

    async def __anext__(self) -> MessagePromise:
        index = self._index
        try:
            piece: MessagePromise | BaseException = await self._inner.__anext__()
        except StopAsyncIteration:
            raise
        except Exception as exc:
            piece = exc
        self._index = index + 1
        return self._promise._convert(index, piece)


class ErrorConvertingMessagePromise(MessagePromise):
    """A view of a message promise whose token error becomes a last token and an ErrorMessage."""

    def __init__(self, original: MessagePromise, *, error_tracebacks: bool = False) -> None:
        self._original = original
        self._error_tracebacks = error_tracebacks
        super().__init__(message_token_streamer=self._aconvert_tokens, message_class=original.message_class)
        self.known_beforehand = original.known_beforehand

    def _mirrors_to_redis(self) -> bool:
        return False

    async def _aconvert_tokens(self, _aux: dict[str, Any]) -> AsyncIterator[Any]:
        try:
            async for token in self._original:
                yield token
        except Exception as exc:
            yield TextToken("\n" + error_to_text(exc, with_traceback=self._error_tracebacks))

    async def _aresolver(self) -> Message:
        try:
            return await self._original
        except Exception as exc:
            so_far = "".join(
                str(token) for token in self._original.pieces_so_far if not isinstance(token, BaseException)
            )
            return ErrorMessage(so_far + "\n" + error_to_text(exc, with_traceback=self._error_tracebacks))


class MessageSequence(FlatSequence[Any, MessagePromise]):
    """An appendable message sequence; ``sequence_promise`` is what consumers read."""

    def __init__(
        self,
        appender_capture_errors: bool | Sentinel = NO_VALUE,
        start_soon: bool | Sentinel = NO_VALUE,
        errors_as_messages: bool | Sentinel = NO_VALUE,
        *,
        redis_key: str | None = None,
    ) -> None:
        error_tracebacks = False
        if isinstance(errors_as_messages, Sentinel):
            from brokeragents.runtime import MiniAgents  # runtime builds on this module

            mini_agents = MiniAgents.get_current()
            errors_as_messages = mini_agents.errors_as_messages
            error_tracebacks = mini_agents.error_tracebacks_in_messages
        else:
            error_tracebacks = _context_error_tracebacks()
        self.message_appender = MessageSequenceAppender(capture_errors=appender_capture_errors)

        def make_promise(**kwargs: Any) -> MessageSequencePromise:
            if errors_as_messages:
                return SafeMessageSequencePromise(
                    error_tracebacks=error_tracebacks, redis_key=redis_key, **kwargs
                )
            return MessageSequencePromise(redis_key=redis_key, **kwargs)

        super().__init__(
            normal_streamer=self.message_appender.normal_appender,
            unordered_streamer=self.message_appender.unordered_appender,
            start_soon=start_soon,
            sequence_promise_class=make_promise,
        )
        self.sequence_promise: MessageSequencePromise  # type: ignore[assignment]

    async def _aflattener(self, zero_or_more_items: Any) -> AsyncIterator[MessagePromise]:
        async for promise in flatten_message_input(zero_or_more_items):
            yield promise

    @classmethod
    def turn_into_sequence_promise(cls, messages: Any) -> MessageSequencePromise:
        """Any ``MessageType`` as a flat sequence promise; an existing one is returned as it is."""
        if isinstance(messages, MessageSequencePromise):
            return messages
        sequence = cls(appender_capture_errors=True, start_soon=False)
        with sequence.message_appender:
            sequence.message_appender.append(messages)
        return sequence.sequence_promise


def _context_error_tracebacks() -> bool:
    from brokeragents.context import current_context_or_none

    context = current_context_or_none()
    return bool(getattr(context, "error_tracebacks_in_messages", False))


__all__ = (
    "ASYNC_ITERATOR_WARNING",
    "ErrorConvertingMessagePromise",
    "MessageSequence",
    "MessageSequenceAppender",
    "MessageSequencePromise",
    "MessageType",
    "SafeMessageSequencePromise",
    "SingleMessageType",
    "error_to_text",
    "flatten_message_input",
    "freeze_message_input",
)
