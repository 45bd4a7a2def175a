"""Immutable, hashable pydantic models: the base of every message and token.

A :class:`Frozen` hashes exactly like MiniAgents' ``Frozen`` (sorted JSON, sha256, first 40 hex
characters), so messages persisted by either framework get the same keys.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import numbers
from collections.abc import Callable, Mapping
from datetime import date, datetime, time, timedelta
from enum import Enum
from pathlib import Path
from typing import Any, Self, TypeVar, cast
from uuid import UUID

from pydantic import BaseModel, ConfigDict, model_validator

from brokeragents.errors import UnknownMessageClassError

logger = logging.getLogger("brokeragents.frozen")

# Fallback for hash_key length when no context is active or the context leaves it unset.
LONGER_HASH_KEYS = False

_SHORT_HASH_KEY_LENGTH = 40

_ALLOWED_LEAF_TYPES = (
    type(None),
    str,
    numbers.Number,
    bool,
    UUID,
    datetime,
    date,
    time,
    timedelta,
    Path,
    Enum,
    bytes,
    frozenset,
)
# Spelled exactly as in MiniAgents' error so that code matching on the message keeps working.
_ALLOWED_TYPES_TEXT = (
    "{NoneType, str, Number, bool, UUID, datetime, date, time, timedelta, Path, Enum, bytes, "
    "frozenset, tuple, list, dict, Frozen}"
)

# Cached results live in the instance __dict__ under this prefix: pydantic lets undeclared
# underscore attributes through a frozen model and never serializes, compares or hashes them.
_CACHE_PREFIX = "_cached_privately__"

_SelfT = TypeVar("_SelfT")
_ResultT = TypeVar("_ResultT")


def cached_privately(func: Callable[[_SelfT], _ResultT]) -> Callable[[_SelfT], _ResultT]:
    """Cache the result of a no-argument method in a private instance attribute.

    Stack it under ``@property`` for a cached property. The cache never becomes a pydantic field,
    so it does not change ``serialize()``, equality or the hash key.
    """
    # The qualified name keeps a subclass override and its super() call from sharing one slot.
    attribute = _CACHE_PREFIX + func.__qualname__

    @functools.wraps(func)
    def wrapper(self: _SelfT) -> _ResultT:
        cache = self.__dict__
        try:
            return cast(_ResultT, cache[attribute])
        except KeyError:
            result = func(self)
            cache[attribute] = result
            return result

    return wrapper


def _use_longer_hash_keys() -> bool:
    from brokeragents.context import current_context_or_none  # lazy: no import cycle with context

    context = current_context_or_none()
    if context is not None and isinstance(context.longer_hash_keys, bool):
        return context.longer_hash_keys
    return LONGER_HASH_KEYS


class Frozen(BaseModel):
    """A frozen model whose field values are frozen too; dict-like and content-hashed.

    Lists and tuples become tuples, dicts become nested ``Frozen`` objects, and any other value
    must be one of a fixed set of immutable types. ``class_`` always holds the short class name.
    """

    model_config = ConfigDict(frozen=True, extra="allow")

    # Always overwritten by the validator; the default only stops type checkers demanding it.
    class_: str = ""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        _register(cls)

    def __str__(self) -> str:
        return self.as_string

    def __contains__(self, key: object) -> bool:
        return key in self.keys()

    def __getitem__(self, key: str) -> Any:
        # Attribute lookup, like MiniAgents: a missing key raises AttributeError, not KeyError.
        return getattr(self, key)

    def __len__(self) -> int:
        return len(self.keys())

    def get(self, key: str, default: Any = None) -> Any:
        """Return the value of field ``key``, or ``default`` when there is no such attribute."""
        return getattr(self, key, default)

    @cached_privately
    def keys(self) -> tuple[str, ...]:
        """Return the field names, declared ones (``class_`` first) then extra ones."""
        return tuple(key for key, _ in self)

    @cached_privately
    def values(self) -> tuple[Any, ...]:
        """Return the field values in the order of :meth:`keys`."""
        return tuple(value for _, value in self)

    def as_kwargs(self) -> dict[str, Any]:
        """Return the fields without ``class_``, ready to pass to a constructor."""
        return {key: value for key, value in self if key != "class_"}

    @property
    @cached_privately
    def as_string(self) -> str:
        """Return the text form of the model (cached); ``str()`` returns this."""
        return self._as_string()

    def _as_string(self) -> str:
        """Override to change what ``str()`` gives."""
        return self.full_json

    @property
    @cached_privately
    def full_json(self) -> str:
        """Return compact JSON of all fields, nested messages inline, in field order."""
        return self.model_dump_json()

    def serialize(self) -> dict[str, Any]:
        """Return the JSON-compatible dict that the hash key is computed from."""
        return self.model_dump(mode="json")

    @property
    @cached_privately
    def serialized(self) -> str:
        """Return :meth:`serialize` as JSON with sorted keys and default separators."""
        return json.dumps(self.serialize(), sort_keys=True, ensure_ascii=False)

    @property
    @cached_privately
    def hash_key(self) -> str:
        """Return the sha256 hex digest of :attr:`serialized`, cut to 40 characters.

        It is 64 characters when ``longer_hash_keys`` is on: the active context's setting if it
        is a bool, else the module flag ``LONGER_HASH_KEYS``.
        """
        # Called through the module so that tests can patch hashlib.sha256 and count calls.
        digest = hashlib.sha256(self.serialized.encode("utf-8")).hexdigest()
        return digest if _use_longer_hash_keys() else digest[:_SHORT_HASH_KEY_LENGTH]

    def model_copy(self, *, update: Mapping[str, Any] | None = None, deep: bool = False) -> Self:
        """Copy the model, dropping cached values that ``update`` could make stale."""
        copied = super().model_copy(update=update, deep=deep)
        for name in [name for name in copied.__dict__ if name.startswith(_CACHE_PREFIX)]:
            del copied.__dict__[name]
        return copied

    @model_validator(mode="before")
    @classmethod
    def _freeze_fields(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data  # an existing instance being revalidated: already frozen
        frozen = {key: cls._freeze_value(key, value) for key, value in data.items() if key != "class_"}
        frozen["class_"] = cls.__name__
        return frozen

    @classmethod
    def _freeze_value(cls, key: str, value: Any) -> Any:
        if isinstance(value, list | tuple):
            return tuple(cls._freeze_value(key, item) for item in value)
        if isinstance(value, dict):
            # Always the base class: a nested dict has no class of its own to claim.
            return Frozen(**value)
        if isinstance(value, (Frozen, *_ALLOWED_LEAF_TYPES)):
            return value
        raise ValueError(
            f"only {_ALLOWED_TYPES_TEXT} are allowed as field values in {cls.__name__}, "
            f"got {type(value).__name__} in `{key}`"
        )


_registry: dict[str, type[Frozen]] = {}


def _register(cls: type[Frozen]) -> None:
    name = cls.__name__
    existing = _registry.get(name)
    if existing is None or _qualified_name(existing) == _qualified_name(cls):
        # The same qualified name again means a module reload: the newer class replaces it.
        _registry[name] = cls
    elif existing is not cls:
        # A wire name must keep one meaning for the life of the process, so the first wins.
        logger.debug(
            "Frozen class name %r is taken by %s; %s will not be found by name",
            name,
            _qualified_name(existing),
            _qualified_name(cls),
        )


def _qualified_name(cls: type[Frozen]) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


def lookup_frozen_class(name: str) -> type[Frozen]:
    """Return the ``Frozen`` subclass whose short name is ``name`` (the ``class_`` on the wire).

    :raises ~brokeragents.errors.UnknownMessageClassError: no class of that name was defined
    """
    try:
        return _registry[name]
    except KeyError:
        raise UnknownMessageClassError(
            f"unknown message class {name!r}: no Frozen subclass of that name is defined in this "
            "process (import the module that defines it)"
        ) from None


_register(Frozen)

__all__ = ("LONGER_HASH_KEYS", "Frozen", "cached_privately", "lookup_frozen_class")
