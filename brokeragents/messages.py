"""Tokens and messages: the immutable values that agents exchange.

A :class:`Message` is a :class:`Token` too, so a whole message can be streamed as a single token.
Messages may hold other messages in any field; their hash key covers only the hash keys of those
sub-messages (Merkle-style), exactly as in MiniAgents.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, Self

from pydantic import ConfigDict

from brokeragents.frozen import Frozen, cached_privately
from brokeragents.sentinels import NO_VALUE, Sentinel

if TYPE_CHECKING:
    from brokeragents.message_promise import MessagePromise, MessageTokenAppender, MessageTokenStreamer

# Kept in the instance __dict__ rather than as a pydantic private attribute, so that it does not
# take part in equality (pydantic compares private attributes).
_PERSISTENCE_NOT_NEEDED = "_persistence_not_needed"


class Token(Frozen):
    """A piece of a message as it is being streamed."""

    @classmethod
    def non_metadata_fields(cls) -> tuple[str, ...]:
        """Return the fields that carry content rather than metadata."""
        return ()


class TextToken(Token):
    """A piece of text; ``str()`` gives the text."""

    content: str | None = None

    def __init__(self, content: str | None = None, **metadata: Any) -> None:
        # One mapping, so the pydantic mypy plugin does not check the keys against the parent's
        # generated signature (it ignores extra="allow" when init_forbid_extra is on).
        super().__init__(**{"content": content, **metadata})

    @classmethod
    def non_metadata_fields(cls) -> tuple[str, ...]:
        return ("content",)

    def _as_string(self) -> str:
        return self.content or ""


class Message(Token):
    """An immutable message; any field may hold further messages."""

    @classmethod
    def token_class(cls) -> type[Token]:
        """Return the class of the tokens this message is streamed as."""
        return Token

    @classmethod
    def tokens_to_message(cls, tokens: Iterable[Token], **extra_fields: Any) -> Self:
        """Build the whole message from its streamed tokens plus extra fields.

        :raises TypeError: the class does not support token streaming (the base ``Message``)
        """
        raise TypeError(f"{cls.__name__} does not support token streaming.")

    def message_to_tokens(self) -> tuple[Token, ...]:
        """Return the tokens that stream this message: by default the message itself."""
        return (self,)

    @property
    @cached_privately
    def as_promise(self) -> MessagePromise:
        """Return a promise already resolved with this message (cached)."""
        from brokeragents.message_promise import MessagePromise  # lazy: it imports this module

        return MessagePromise(prefill_message=self)

    @classmethod
    def promise(
        cls,
        start_soon: bool | Sentinel = NO_VALUE,
        message_token_streamer: MessageTokenStreamer | MessageTokenAppender | None = None,
        **known_beforehand: Any,
    ) -> MessagePromise:
        """Return a promise of a message of this class.

        Without a streamer, the message is built now from ``known_beforehand``. With one, the
        message is built from the streamed tokens when the promise resolves.
        """
        if message_token_streamer is None:
            return cls(**known_beforehand).as_promise

        from brokeragents.message_promise import MessagePromise  # lazy: it imports this module

        return MessagePromise(
            start_soon=start_soon,
            message_token_streamer=message_token_streamer,
            message_class=cls,
            **known_beforehand,
        )

    def serialize(self) -> dict[str, Any]:
        """Return the JSON-compatible dict with sub-messages replaced by their hash keys.

        A field holding a message becomes ``<field>__hash_key``; a tuple whose first item is a
        message becomes ``<field>__hash_keys``. Nested ``Frozen`` values and ``Frozen`` items of
        other tuples are treated the same way, recursively.
        """
        # Leave top-level references out of the dump: dumping them inline only to drop them
        # would cost the size of the whole referenced tree.
        references = {key for key, value in self if _is_reference(value)}
        dumped = self.model_dump(mode="json", exclude=references)
        _externalize_sub_messages(self, dumped)
        return dumped

    def sub_messages(self) -> Iterator[Message]:
        """Yield every message referenced from this one, depth-first, not deduplicated.

        A sub-message comes after its own sub-messages.
        """
        return _iter_sub_messages(self)

    @property
    def persistence_not_needed(self) -> bool:
        """Whether persistence handlers should skip this message."""
        return bool(self.__dict__.get(_PERSISTENCE_NOT_NEEDED, False))

    async def aset_persistence_not_needed(self, value: bool = True) -> bool:
        """Set :attr:`persistence_not_needed`; return whether it changed."""
        # A single assignment with no await in between: no lock needed.
        changed = self.persistence_not_needed != value
        self.__dict__[_PERSISTENCE_NOT_NEEDED] = value
        return changed

    def _as_string(self) -> str:
        return f"```json\n{self.full_json}\n```"


class StrictMessage(Message):
    """A message that accepts only its declared fields."""

    model_config = ConfigDict(extra="forbid")


class TextMessage(Message, TextToken):
    """A text message; ``str()`` gives the content, or the filled-in ``content_template``."""

    content: str | None = None
    content_template: str | None = None

    def __init__(self, content: str | None = None, **metadata: Any) -> None:
        super().__init__(**{"content": content, **metadata})  # one mapping: see TextToken

    @classmethod
    def token_class(cls) -> type[Token]:
        return TextToken

    @classmethod
    def non_metadata_fields(cls) -> tuple[str, ...]:
        return ("content", "content_template")

    @classmethod
    def tokens_to_message(cls, tokens: Iterable[Token], **extra_fields: Any) -> Self:
        """Join the text of the tokens into ``content``; other extra fields become metadata."""
        metadata = {key: value for key, value in extra_fields.items() if key not in cls.non_metadata_fields()}
        return cls("".join(str(token) for token in tokens), **metadata)

    # The positional `content` breaks Liskov on purpose: this is MiniAgents' public signature.
    @classmethod
    def promise(  # type: ignore[override]
        cls,
        content: str | None = None,
        *,
        content_template: str | None = None,
        start_soon: bool | Sentinel = NO_VALUE,
        message_token_streamer: MessageTokenStreamer | MessageTokenAppender | None = None,
        **known_beforehand: Any,
    ) -> MessagePromise:
        """Return a promise of a text message, given now or streamed as tokens.

        :raises ValueError: a streamer is given together with ``content`` or ``content_template``
        """
        if message_token_streamer is None:
            return cls(content, content_template=content_template, **known_beforehand).as_promise
        if content is not None or content_template is not None:
            # Streamed text would silently replace them (tokens_to_message drops both).
            raise ValueError(
                "If you provide `message_token_streamer` parameter, you cannot provide `content` or "
                "`content_template` parameters."
            )
        # MiniAgents keeps content_template=None among the known fields; so do we, for equal hashes.
        return super().promise(
            start_soon=start_soon,
            message_token_streamer=message_token_streamer,
            content_template=content_template,
            **known_beforehand,
        )

    def _as_string(self) -> str:
        if self.content_template is not None:
            return self.content_template.format(**dict(self))
        return self.content or ""


class ErrorMessage(TextMessage):
    """A message made from an exception, when errors are turned into messages."""

    # Restated so that the pydantic mypy plugin keeps the positional `content` for this class too.
    def __init__(self, content: str | None = None, **metadata: Any) -> None:
        super().__init__(content, **metadata)


def _is_reference(value: Any) -> bool:
    # Only the first item decides: MiniAgents does not support mixing messages with other values.
    return isinstance(value, Message) or (
        isinstance(value, tuple) and bool(value) and isinstance(value[0], Message)
    )


def _externalize_sub_messages(frozen: Frozen, dumped: dict[str, Any]) -> None:
    """Patch ``dumped`` (``frozen``'s JSON dump) in place: sub-messages become hash keys.

    Patching the dump, rather than dumping each nested value anew, keeps pydantic's choice of
    serializer (e.g. a declared field's type for an instance of its subclass).
    """
    for key, value in frozen:
        if isinstance(value, Message):
            dumped.pop(key, None)
            dumped[f"{key}__hash_key"] = value.hash_key
        elif _is_reference(value):
            dumped.pop(key, None)
            dumped[f"{key}__hash_keys"] = [item.hash_key for item in value]
        elif isinstance(value, Frozen):
            nested = dumped.get(key)
            if isinstance(nested, dict):
                _externalize_sub_messages(value, nested)
        elif isinstance(value, tuple):
            items = dumped.get(key)
            if isinstance(items, list):
                for item, item_dumped in zip(value, items, strict=False):
                    if isinstance(item, Frozen) and isinstance(item_dumped, dict):
                        _externalize_sub_messages(item, item_dumped)


def _iter_sub_messages(frozen: Frozen) -> Iterator[Message]:
    for _, value in frozen:
        if isinstance(value, Message):
            yield from value.sub_messages()
            yield value
        elif _is_reference(value):
            for item in value:
                yield from item.sub_messages()
                yield item
        elif isinstance(value, Frozen):
            yield from _iter_sub_messages(value)
        elif isinstance(value, tuple):
            for item in value:
                if isinstance(item, Frozen):
                    yield from _iter_sub_messages(item)


__all__ = ("ErrorMessage", "Message", "StrictMessage", "TextMessage", "TextToken", "Token")
