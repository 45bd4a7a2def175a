"""FlatSequence: ordered flattening, out-of-order interleaving and errors at their position (D1, D2, D5)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from brokeragents import (
    NO_VALUE,
    FlatSequence,
    FunctionNotProvidedError,
    NoActiveContextError,
    PromisingContext,
    Sentinel,
    StreamAppender,
)

START_SOON = pytest.mark.parametrize("start_soon", [True, False, NO_VALUE], ids=["soon", "lazy", "default"])


async def repeat_number(_sequence: object, number: int) -> AsyncIterator[int]:
    for _ in range(number):
        yield number


async def collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [piece async for piece in iterator]


@START_SOON
async def test_flat_sequence(start_soon: bool | Sentinel) -> None:
    async with PromisingContext():
        appender: StreamAppender[int] = StreamAppender()
        sequence: FlatSequence[int, int] = FlatSequence(appender, flattener=repeat_number, start_soon=start_soon)
        with appender:
            for number in range(4):
                appender.append(number)
        assert await sequence.sequence_promise == (1, 2, 2, 3, 3, 3)
        assert await collect(aiter(sequence.sequence_promise)) == [1, 2, 2, 3, 3, 3]


async def no_items(_promise: object) -> AsyncIterator[int]:
    items: tuple[int, ...] = ()
    for item in items:
        yield item


def test_flat_sequence_needs_a_context() -> None:
    with pytest.raises(NoActiveContextError):
        FlatSequence(no_items, flattener=repeat_number)


async def test_flat_sequence_needs_a_flattener() -> None:
    async with PromisingContext():
        appender: StreamAppender[int] = StreamAppender()
        with pytest.raises(FunctionNotProvidedError):
            FlatSequence(appender)


@START_SOON
async def test_each_ordered_item_is_flattened_completely_before_the_next(start_soon: bool | Sentinel) -> None:
    gate = asyncio.Event()

    async def flattener(_sequence: object, item: str) -> AsyncIterator[str]:
        yield f"{item} start"
        if item == "slow":
            await gate.wait()
        yield f"{item} end"

    async with PromisingContext():
        appender: StreamAppender[str] = StreamAppender()
        sequence: FlatSequence[str, str] = FlatSequence(appender, flattener=flattener, start_soon=start_soon)
        with appender:
            appender.append("slow")
            appender.append("fast")
        iterator = aiter(sequence.sequence_promise)
        assert await anext(iterator) == "slow start"
        gate.set()
        assert await collect(iterator) == ["slow end", "fast start", "fast end"]


@START_SOON
async def test_unordered_items_overtake_blocked_ordered_items(start_soon: bool | Sentinel) -> None:
    gate = asyncio.Event()

    async def flattener(_sequence: object, item: str) -> AsyncIterator[str]:
        if item == "blocked":
            await gate.wait()
        yield item

    async with PromisingContext():
        normal: StreamAppender[str] = StreamAppender()
        unordered: StreamAppender[str] = StreamAppender()
        sequence: FlatSequence[str, str] = FlatSequence(
            normal, unordered_streamer=unordered, flattener=flattener, start_soon=start_soon
        )
        with normal, unordered:
            normal.append("blocked")
            normal.append("ordered")
            unordered.append("out of order")
        iterator = aiter(sequence.sequence_promise)
        assert await anext(iterator) == "out of order"
        gate.set()
        assert await collect(iterator) == ["blocked", "ordered"]
        assert await sequence.sequence_promise == ("out of order", "blocked", "ordered")


@START_SOON
async def test_sequence_ends_only_after_both_streams_end(start_soon: bool | Sentinel) -> None:
    async with PromisingContext():
        normal: StreamAppender[int] = StreamAppender()
        unordered: StreamAppender[int] = StreamAppender()
        sequence: FlatSequence[int, int] = FlatSequence(
            normal, unordered_streamer=unordered, flattener=repeat_number, start_soon=start_soon
        )
        unordered.open()
        with normal:
            normal.append(1)
        iterator = aiter(sequence.sequence_promise)
        assert await anext(iterator) == 1
        # The ordered stream is over, yet an out-of-order item appended now still arrives.
        unordered.append(2)
        unordered.close()
        assert await collect(iterator) == [2, 2]


@START_SOON
async def test_an_item_that_fails_to_flatten_leaves_its_error_in_place(start_soon: bool | Sentinel) -> None:
    async def flattener(_sequence: object, item: int) -> AsyncIterator[int]:
        yield item
        if item == 2:
            raise ValueError("item 2 broke")
        yield item * 10

    async with PromisingContext():
        appender: StreamAppender[int] = StreamAppender()
        sequence: FlatSequence[int, int] = FlatSequence(appender, flattener=flattener, start_soon=start_soon)
        with appender:
            for item in (1, 2, 3):
                appender.append(item)

        outcomes: list[Any] = []
        iterator = aiter(sequence.sequence_promise)
        while True:
            try:
                outcomes.append(await anext(iterator))
            except StopAsyncIteration:
                break
            except ValueError as exc:
                outcomes.append(str(exc))
        # The rest of item 2 is abandoned; item 3 is still flattened.
        assert outcomes == [1, 10, 2, "item 2 broke", 3, 30]
        with pytest.raises(ValueError, match="item 2 broke"):
            await sequence.sequence_promise
