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

from pydantic import ValidationError

from brokeragents import errors as _errors
from brokeragents.errors import RemoteError, WireFormatError
from brokeragents.frozen import Frozen, lookup_frozen_class
from brokeragents.messages import Message, TextToken, Token

Fields = Mapping[bytes | str, bytes | str]

KIND_START = "start"
KIND_TOKENS = "tokens"
KIND_MESSAGE = "message"
KIND_ERROR = "error"
KIND_END = "end"
KIND_RESTART = "restart"

_MAX_ERROR_TEXT = 8192
_remote_error_classes: dict[str, type[RemoteError]] = {}
# Our own errors keep their class across processes (e.g. ReplyRestartedError).
_OWN_ERRORS: dict[str, type[Exception]] = {
    name: cls
    for name, cls in vars(_errors).items()
    if isinstance(cls, type) and issubclass(cls, _errors.BrokerAgentsError)
}


def encode_token(token: Token) -> Any:
    """A plain text token is stored as its string; any other token as its JSON object."""
    if type(token) is TextToken and token.content is not None and len(token.model_fields_set) <= 1:
        extra = token.model_extra
        if not extra:
            return token.content
    return token.serialize()


def encode_tokens(tokens: list[Token]) -> str:
    return json.dumps([encode_token(token) for token in tokens], ensure_ascii=False, separators=(",", ":"))


def decode_token(raw: Any) -> Token:
    if isinstance(raw, str):
        return TextToken(raw)
    if isinstance(raw, dict):
        frozen = build_frozen(raw, {})
        if not isinstance(frozen, Token):
            raise WireFormatError(f"Expected a token, got class {type(frozen).__name__!r}.")
        return frozen
    raise WireFormatError(f"A token must be a string or an object, got {type(raw).__name__}.")


def encode_error(exc: BaseException) -> dict[str, str]:
    return {"kind": KIND_ERROR, "error_type": type(exc).__name__, "error_message": str(exc)[:_MAX_ERROR_TEXT]}


def rebuild_error(type_name: str, message: str) -> BaseException:
    """The exception an error entry stands for: the builtin of that name, or a RemoteError subclass.

    Only builtin exception classes are looked up by name; nothing else is ever resolved from the
    wire, so a hostile entry cannot make us instantiate arbitrary classes.
    """
    own = _OWN_ERRORS.get(type_name)
    if own is not None:
        return own(message)
    builtin = getattr(builtins, type_name, None)
    if isinstance(builtin, type) and issubclass(builtin, Exception):
        try:
            return builtin(message)
        except TypeError:  # e.g. UnicodeDecodeError needs more arguments
            pass
    if not type_name.isidentifier():
        type_name = "RemoteError"
    cls = _remote_error_classes.get(type_name)
    if cls is None:
        cls = type(type_name, (RemoteError,), {"__module__": "brokeragents.remote"})
        _remote_error_classes[type_name] = cls
    return cls(message)


def field(fields: Fields, name: str, *, max_bytes: int, required: bool = True) -> str | None:
    """Read one field of an entry as text, enforcing its presence and size."""
    raw = fields.get(name.encode(), fields.get(name))
    if raw is None:
        if required:
            raise WireFormatError(f"The entry has no {name!r} field.")
        return None
    if len(raw) > max_bytes:
        raise WireFormatError(f"The {name!r} field is {len(raw)} bytes, over the limit of {max_bytes}.")
    if isinstance(raw, bytes):
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise WireFormatError(f"The {name!r} field is not UTF-8 text.") from exc
    return raw


def load_json(text: str, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise WireFormatError(f"The {what} is not valid JSON: {exc}") from exc


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


def build_frozen(data: Mapping[str, Any], sub_messages: Mapping[str, Message]) -> Frozen:
    """Rebuild a Frozen (or Message) from its ``serialize()`` form; refs come from ``sub_messages``."""
    class_name = data.get("class_")
    if not isinstance(class_name, str):
        raise WireFormatError("A serialized object has no 'class_' name.")
    cls = lookup_frozen_class(class_name)
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
    except ValidationError as exc:
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
    sub_messages = {h: await load_by_hash(h) for h in dict.fromkeys(referenced_hash_keys(data))}
    message = build_frozen(data, sub_messages)
    if not isinstance(message, Message):
        raise WireFormatError(f"Expected a message, got class {type(message).__name__!r}.")
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
    "KIND_START",
    "KIND_TOKENS",
    "abuild_message",
    "build_frozen",
    "decode_token",
    "encode_error",
    "encode_token",
    "encode_tokens",
    "field",
    "load_json",
    "rebuild_error",
    "referenced_hash_keys",
)
