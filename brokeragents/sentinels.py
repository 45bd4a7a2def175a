"""Sentinels that mean "no value given" and friends, distinct from ``None``."""

from __future__ import annotations

from typing import Final, NoReturn


class Sentinel:
    """A named marker object. Its truth value is undefined, so ``if NO_VALUE:`` is an error."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __bool__(self) -> NoReturn:
        raise RuntimeError(f"{self._name} has no truth value; compare it with `is`")

    def __repr__(self) -> str:
        return self._name


NO_VALUE: Final = Sentinel("NO_VALUE")
FAILED: Final = Sentinel("FAILED")
END_OF_QUEUE: Final = Sentinel("END_OF_QUEUE")
END_OF_UNORDERED_QUEUE: Final = Sentinel("END_OF_UNORDERED_QUEUE")

__all__ = ("END_OF_QUEUE", "END_OF_UNORDERED_QUEUE", "FAILED", "NO_VALUE", "Sentinel")
