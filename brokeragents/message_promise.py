"""MessagePromise: a message that streams as tokens and resolves to the whole message.

When the context is connected to Redis, each message promise mirrors itself to its own stream
(semantics G1-G7 plus the Redis backing): a start entry with what is known beforehand, batches
of tokens as they are pulled, then the final message, or the error.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from brokeragents.appender import StreamAppender
from brokeragents.errors import AppenderNotOpenError, FunctionNotProvidedError, MessageTooLargeError
from brokeragents.frozen import Frozen
from brokeragents.messages import Message, TextToken, Token
from brokeragents.promise import StreamedPromise
from brokeragents.sentinels import NO_VALUE, Sentinel

if TYPE_CHECKING:
    from brokeragents.store import StreamStore

MessageTokenStreamer = Callable[[dict[str, Any]], AsyncIterator[Any]]


def as_token(piece: Any) -> Token:
    """Normalize what a token streamer produced: str -> TextToken, dict/model -> Token."""
    if isinstance(piece, Token):
        return piece
    if isinstance(piece, str):
        return TextToken(piece)
    if isinstance(piece, dict):
        return Token(**piece)
    if isinstance(piece, BaseModel):
        return Token(**dict(piece))
    raise TypeError(f"Unexpected token type: {type(piece).__name__}")


class MessageTokenAppender(StreamAppender[Token]):
    """Push tokens of one message; extra fields go to ``auxiliary_field_collector``."""

    def __init__(self, capture_errors: bool | Sentinel = NO_VALUE) -> None:
        super().__init__(capture_errors=capture_errors)
        self.auxiliary_field_collector: dict[str, Any] = {}

    def append(self, piece: Any) -> MessageTokenAppender:
        super().append(as_token(piece))
        return self


class MessagePromise(StreamedPromise[Token, Message]):
    """Iterate it for tokens; await it for the whole :class:`Message`."""

    known_beforehand: Frozen
    message_class: type[Message]

    def __init__(
        self,
        start_soon: bool | Sentinel = NO_VALUE,
        message_token_streamer: MessageTokenStreamer | MessageTokenAppender | None = None,
        prefill_message: Message | None = None,
        message_class: type[Message] | None = None,
        **known_beforehand: Any,
    ) -> None:
        self._mirror_key: str | None = None
        self._store: StreamStore | None = None
        if prefill_message is not None:
            if message_token_streamer is not None or known_beforehand:
                raise ValueError("A prefilled message takes no streamer and no known_beforehand fields.")
            self.known_beforehand = prefill_message
            self.message_class = type(prefill_message)
            self._token_streamer: MessageTokenStreamer | MessageTokenAppender | None = None
            super().__init__(
                prefill_pieces=prefill_message.message_to_tokens(), prefill_result=prefill_message
            )
        else:
            if message_token_streamer is None:
                raise FunctionNotProvidedError(
                    "MessagePromise needs a `message_token_streamer` or a `prefill_message`."
                )
            if isinstance(message_token_streamer, MessageTokenAppender) and not message_token_streamer.was_open:
                # A never-opened appender would leave every consumer waiting forever (C5).
                raise AppenderNotOpenError(
                    "Open the MessageTokenAppender before giving it to a MessagePromise."
                )
            self.known_beforehand = Frozen(**known_beforehand)
            self.message_class = message_class or Message
            self._token_streamer = message_token_streamer
            self._aux_fields: dict[str, Any] = (
                message_token_streamer.auxiliary_field_collector
                if isinstance(message_token_streamer, MessageTokenAppender)
                else {}
            )
            super().__init__(start_soon=False)
            self._attach_store()
            if self._resolve_start_soon(start_soon):
                self._context.start_soon(self._adrive())
            return
        self._attach_store()

    # --- streaming and resolution ---------------------------------------------------------------

    async def _astreamer(self) -> AsyncIterator[Token]:
        streamer = self._token_streamer
        source = streamer if isinstance(streamer, MessageTokenAppender) else streamer(self._aux_fields)  # type: ignore[misc]
        async for piece in source:
            yield as_token(piece)

    async def _aresolver(self) -> Message:
        tokens = [token async for token in self]
        fields = {**self._aux_fields, **self.known_beforehand.as_kwargs()}
        message = self.message_class.tokens_to_message(tokens, **fields)
        self._check_size(message)
        return message

    def _check_size(self, message: Message) -> None:
        limit = self._context.max_message_bytes
        size = len(message.serialized.encode("utf-8"))
        if size > limit:
            raise MessageTooLargeError(
                f"{type(message).__name__} is {size} bytes serialized, over the limit of {limit} "
                f"bytes (max_message_bytes)."
            )

    # --- the Redis mirror -----------------------------------------------------------------------

    def _attach_store(self) -> None:
        store = self._context.store
        if store is None or not self._mirrors_to_redis():
            return
        self._store = store
        self._mirror_key = store.register_message_promise(self)

    def _mirrors_to_redis(self) -> bool:
        """Promises replayed from Redis or derived views override this to avoid writing twice."""
        return True

    @property
    def redis_key(self) -> str | None:
        """The key of this message's stream, or None when the context is not connected."""
        return self._mirror_key

    def _on_piece(self, piece: Any, *, is_error: bool) -> None:
        if self._store is not None and not is_error:
            self._store.message_token(self, piece)

    def _on_stream_done(self) -> None:
        if self._store is not None and not self.is_resolved:
            # Remote readers wait for the final entry, so resolve even if nobody awaits here.
            self._context.start_soon(self._aresolve_quietly())

    def _on_resolved(self, result: Any, *, failed: bool) -> None:
        if self._store is None:
            return
        if failed:
            self._store.message_failed(self, result)
        else:
            self._store.message_resolved(self, result)


__all__ = ("MessagePromise", "MessageTokenAppender", "MessageTokenStreamer", "as_token")
