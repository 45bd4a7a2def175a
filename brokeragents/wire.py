"""The JSON wire format of stream entries, and strict validation of everything read back.

Nothing read from Redis is unpickled or evaluated. Every entry is checked for its fields, their
sizes and their JSON; messages are rebuilt only from classes registered as ``Frozen`` subclasses,
through pydantic validation. Anything else raises :class:`~brokeragents.errors.WireFormatError`.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from brokeragents import errors as _errors
from brokeragents.errors import RemoteError, UnknownMessageClassError, WireFormatError
from brokeragents.frozen import Frozen, lookup_frozen_class
from brokeragents.messages import Message, TextToken, Token

# An entry as redis-py returns it: bytes names and values (str with decode_responses=True).
Fields = Mapping[Any, Any]

KIND_START = "start"
KIND_TOKENS = "tokens"
KIND_MESSAGE = "message"
KIND_ERROR = "error"
KIND_END = "end"
KIND_RESTART = "restart"

_MAX_ERROR_TEXT = 8192
# Deeper JSON than this is hostile or broken; it would also hit Python's recursion limit.
_MAX_JSON_DEPTH = 64
# Hostile entries could name endless error types; past this many, classes are not cached.
_MAX_REMOTE_ERROR_CLASSES = 1024
# Rebuilt as themselves they would silently end the iteration that raises them.
_NEVER_REBUILT = frozenset({"StopIteration", "StopAsyncIteration"})
_remote_error_classes: dict[str, type[RemoteError]] = {}
# Our own errors keep their class across processes (e.g. ReplyRestartedError).
_OWN_ERRORS: dict[str, type[Exception]] = {
    name: cls
    for name, cls in vars(_errors).items()
    if isinstance(cls, type) and issubclass(cls, _errors.BrokerAgentsError)
}


def encode_token(token: Token) -> Any:
    """A plain text token is stored as its string; any other token as its JSON object.

    Other tokens keep any message they hold inline (``Frozen.serialize``, not the message form
    with hash-key references), so a reader rebuilds a token from its entry alone.
    """
    if type(token) is TextToken and token.content is not None and not token.model_extra:
        return token.content
    return Frozen.serialize(token)


def encode_token_json(token: Token) -> str:
    """One token as the JSON text it has inside a ``tokens`` array."""
    return _compact_json(encode_token(token))


def encode_tokens(tokens: list[Token]) -> str:
    return _compact_json([encode_token(token) for token in tokens])


def encode_message(message: Message) -> str:
    """The ``message`` field: ``serialize()`` as compact JSON, in the message's field order.

    ``serialize()`` moves sub-message references to the end; the hash key does not care (it
    sorts), but ``keys()`` and ``str()`` of the rebuilt message would, so the order is restored.
    """
    return _compact_json(_in_field_order(message, message.serialize()))


def encode_frozen(frozen: Frozen) -> str:
    """A Frozen as compact JSON in field order, messages inline (``known_beforehand``)."""
    return _compact_json(Frozen.serialize(frozen))


def _compact_json(data: Any) -> str:
    return json.dumps(data, ensure_ascii=False, separators=(",", ":"))


def _in_field_order(frozen: Frozen, dumped: dict[str, Any]) -> dict[str, Any]:
    ordered: dict[str, Any] = {}
    for name, value in frozen:
        for key in (name, f"{name}__hash_key", f"{name}__hash_keys"):
            if key in dumped:
                ordered[key] = _ordered_value(value, dumped[key])
                break
    for key, item in dumped.items():
        ordered.setdefault(key, item)
    return ordered


def _ordered_value(value: Any, dumped: Any) -> Any:
    if isinstance(value, Frozen) and isinstance(dumped, dict):
        return _in_field_order(value, dumped)
    if isinstance(value, tuple) and isinstance(dumped, list) and len(value) == len(dumped):
        return [_ordered_value(item, item_dumped) for item, item_dumped in zip(value, dumped, strict=True)]
    return dumped


def decode_token(raw: Any) -> Token:
    if isinstance(raw, str):
        return TextToken(raw)
    if isinstance(raw, dict):
        token = build_frozen(raw, {}, base=Token)
        assert isinstance(token, Token)
        return token
    raise WireFormatError(f"A token must be a string or an object, got {type(raw).__name__}.")


def as_text(raw: Any) -> str:
    """A Redis reply value as text (bytes from a RESP2 client, str from a decoding one)."""
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)


def encode_error(exc: BaseException) -> dict[str, str]:
    # str(KeyError("k")) is "'k'": store the argument, so the rebuilt KeyError prints the same.
    text = str(exc.args[0]) if isinstance(exc, KeyError) and len(exc.args) == 1 else str(exc)
    fields = {"kind": KIND_ERROR, "error_type": type(exc).__name__, "error_message": text[:_MAX_ERROR_TEXT]}
    abandoned = getattr(exc, "abandoned", None) if isinstance(exc, _errors.ReplyRestartedError) else None
    if abandoned is not None:
        fields["abandoned"] = str(abandoned)  # a part of the sequence restarts (an inner call's)
    return fields


def rebuild_error(type_name: str, message: str) -> BaseException:
    """The exception an error entry stands for: ours or a builtin of that name, else a RemoteError.

    Only our own error classes and builtin exception classes are looked up by name; nothing else
    is ever resolved from the wire, so a hostile entry cannot make us instantiate arbitrary classes.
    """
    if type_name not in _NEVER_REBUILT:
        known = _OWN_ERRORS.get(type_name)
        if known is None:
            builtin = getattr(builtins, type_name, None)
            if isinstance(builtin, type) and issubclass(builtin, Exception):
                known = builtin
        if known is not None:
            try:
                return known(message)
            except TypeError:  # e.g. UnicodeDecodeError needs more arguments
                pass
    if not type_name.isidentifier():
        type_name = "RemoteError"
    cls = _remote_error_classes.get(type_name)
    if cls is None:
        cls = type(type_name, (RemoteError,), {"__module__": "brokeragents.remote"})
        if len(_remote_error_classes) < _MAX_REMOTE_ERROR_CLASSES:
            _remote_error_classes[type_name] = cls
    return cls(message)


def field(fields: Fields, name: str, *, max_bytes: int, required: bool = True) -> str | None:
    """Read one field of an entry as text, enforcing its presence and size."""
    raw = fields.get(name.encode(), fields.get(name))
    if raw is None:
        if required:
            raise WireFormatError(f"The entry has no {name!r} field.")
        return None
    if not isinstance(raw, bytes | str):
        raise WireFormatError(f"The {name!r} field is a {type(raw).__name__}, not text.")
    if len(raw) > max_bytes:
        raise WireFormatError(f"The {name!r} field is {len(raw)} bytes, over the limit of {max_bytes}.")
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireFormatError(f"The {name!r} field is not UTF-8 text.") from exc
    return raw


def require_field(fields: Fields, name: str, *, max_bytes: int) -> str:
    """:func:`field` for a field that must be present."""
    value = field(fields, name, max_bytes=max_bytes)
    assert value is not None
    return value


def load_json(text: str, what: str) -> Any:
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as exc:
        raise WireFormatError(f"The {what} is not valid JSON: {exc}") from exc
    if _nested_deeper_than(data, _MAX_JSON_DEPTH):
        raise WireFormatError(f"The {what} is nested deeper than {_MAX_JSON_DEPTH} levels.")
    return data


def _nested_deeper_than(data: Any, limit: int) -> bool:
    stack: list[tuple[Any, int]] = [(data, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, dict):
            children: Any = value.values()
        elif isinstance(value, list):
            children = value
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def referenced_hash_keys(data: Any) -> list[str]:
    """Every sub-message hash key that a serialized message refers to."""
    found: list[str] = []
    if isinstance(data, dict):
        for key, value in data.items():
            if isinstance(key, str) and key.endswith("__hash_keys") and isinstance(value, list):
                found.extend(str(item) for item in value)
            elif isinstance(key, str) and key.endswith("__hash_key"):
                found.append(str(value))
            else:
                found.extend(referenced_hash_keys(value))
    elif isinstance(data, list):
        for item in data:
            found.extend(referenced_hash_keys(item))
    return found


def build_frozen(data: Any, sub_messages: Mapping[str, Message], *, base: type[Frozen] = Frozen) -> Frozen:
    """Rebuild a Frozen (or Message) from its ``serialize()`` form; refs come from ``sub_messages``.

    :raises UnknownMessageClassError: ``class_`` names no registered class, or one that is not a
        subclass of ``base``
    """
    if not isinstance(data, Mapping):
        raise WireFormatError(f"A serialized object must be a JSON object, got {type(data).__name__}.")
    class_name = data.get("class_")
    if not isinstance(class_name, str):
        raise WireFormatError("A serialized object has no 'class_' name.")
    cls = lookup_frozen_class(class_name)
    if not issubclass(cls, base):
        # Checked before instantiating: the wire only ever builds the kind of object expected.
        raise UnknownMessageClassError(f"{class_name!r} is not a {base.__name__} class.")
    fields: dict[str, Any] = {}
    for key, value in data.items():
        if key == "class_":
            continue
        if key.endswith("__hash_keys") and isinstance(value, list):
            fields[key.removesuffix("__hash_keys")] = tuple(_sub_message(sub_messages, h) for h in value)
        elif key.endswith("__hash_key"):
            fields[key.removesuffix("__hash_key")] = _sub_message(sub_messages, value)
        else:
            fields[key] = _build_value(value, sub_messages)
    try:
        return cls(**fields)
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise WireFormatError(f"Invalid {class_name} on the wire: {exc}") from exc
    except TypeError as exc:
        raise WireFormatError(f"Cannot rebuild {class_name}: {exc}") from exc


def _build_value(value: Any, sub_messages: Mapping[str, Message]) -> Any:
    if isinstance(value, dict):
        return build_frozen(value, sub_messages)
    if isinstance(value, list):
        return tuple(_build_value(item, sub_messages) for item in value)
    return value


def _sub_message(sub_messages: Mapping[str, Message], hash_key: Any) -> Message:
    message = sub_messages.get(str(hash_key))
    if message is None:
        raise WireFormatError(f"The message refers to a missing sub-message {hash_key!r}.")
    return message


async def abuild_message(
    data: Any, expected_hash_key: str | None, load_by_hash: Callable[[str], Awaitable[Message]]
) -> Message:
    """Rebuild a message, loading its sub-messages by hash, and check its hash key."""
    if not isinstance(data, dict):
        raise WireFormatError("A serialized message must be a JSON object.")
    class_name = data.get("class_")
    if isinstance(class_name, str) and not issubclass(lookup_frozen_class(class_name), Message):
        # Fail before loading any sub-message for an object that could never be accepted.
        raise UnknownMessageClassError(f"{class_name!r} is not a Message class.")
    sub_messages = {h: await load_by_hash(h) for h in dict.fromkeys(referenced_hash_keys(data))}
    message = build_frozen(data, sub_messages, base=Message)
    assert isinstance(message, Message)
    if expected_hash_key is not None and message.hash_key != expected_hash_key:
        raise WireFormatError(
            f"The rebuilt {type(message).__name__} hashes to {message.hash_key}, "
            f"not to the recorded {expected_hash_key}."
        )
    return message


__all__ = (
    "KIND_END",
    "KIND_ERROR",
    "KIND_MESSAGE",
    "KIND_RESTART",
    "KIND_START",
    "KIND_TOKENS",
    "Fields",
    "abuild_message",
    "as_text",
    "build_frozen",
    "decode_token",
    "encode_error",
    "encode_frozen",
    "encode_message",
    "encode_token",
    "encode_token_json",
    "encode_tokens",
    "field",
    "load_json",
    "rebuild_error",
    "referenced_hash_keys",
    "require_field",
)
