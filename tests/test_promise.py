"""Promise, StreamedPromise and StreamAppender: scheduling, replay and error pieces (A1-A4, A9, B, C).

Tests parametrized over ``start_soon`` must give the same outcome for every value, as in
MiniAgents' own suite.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest

from brokeragents import (
    NO_VALUE,
    AppenderClosedError,
    AppenderNotOpenError,
    FunctionNotProvidedError,
    NoActiveContextError,
    Promise,
    PromisingContext,
    Sentinel,
    StreamAppender,
    StreamedPromise,
)

START_SOON = pytest.mark.parametrize("start_soon", [True, False, NO_VALUE], ids=["soon", "lazy", "default"])


async def collect(iterator: AsyncIterator[Any]) -> list[Any]:
    return [piece async for piece in iterator]


async def tuple_resolver(promise: StreamedPromise[Any, Any]) -> tuple[Any, ...]:
    return tuple([piece async for piece in promise])


def counting_streamer(counter: list[int], count: int = 5) -> Any:
    async def streamer(_promise: object) -> AsyncIterator[int]:
        for i in range(1, count + 1):
            counter.append(i)
            yield i

    return streamer


async def pieces_then_end(iterator: AsyncIterator[Any], steps: int) -> list[Any]:
    """Call ``__anext__`` ``steps`` times, recording each piece or raised exception type."""
    outcomes: list[Any] = []
    for _ in range(steps):
        try:
            outcomes.append(await iterator.__anext__())
        except StopAsyncIteration:
            outcomes.append(StopAsyncIteration)
        except Exception as exc:
            outcomes.append(type(exc))
    return outcomes


# --- A: context and scheduling ----------------------------------------------------------------


def test_promising_objects_need_an_active_context() -> None:
    async def resolver(_promise: object) -> int:
        return 1

    with pytest.raises(NoActiveContextError):
        Promise(resolver=resolver)
    with pytest.raises(NoActiveContextError):
        StreamedPromise(prefill_pieces=[1])
    with pytest.raises(NoActiveContextError):
        StreamAppender()


def test_sync_with_on_a_context_raises() -> None:
    with pytest.raises(RuntimeError), PromisingContext():
        pass


async def test_get_current_returns_the_active_context() -> None:
    async with PromisingContext() as context:
        assert PromisingContext.get_current() is context
    with pytest.raises(NoActiveContextError):
        PromisingContext.get_current()


def test_run_runs_the_awaitable_inside_the_context() -> None:
    context = PromisingContext()

    async def main() -> PromisingContext:
        return PromisingContext.get_current()

    assert context.run(main()) is context


@pytest.mark.parametrize(
    ("start_soon", "by_default", "resolved_in_background"),
    [
        (True, False, True),
        (False, True, False),
        (NO_VALUE, True, True),
        (NO_VALUE, False, False),
    ],
)
async def test_promise_start_soon_resolves_in_the_background(
    start_soon: bool | Sentinel, by_default: bool, resolved_in_background: bool
) -> None:
    calls: list[str] = []

    async def resolver(_promise: object) -> str:
        calls.append("resolved")
        return "value"

    async with PromisingContext(start_everything_soon_by_default=by_default) as context:
        promise: Promise[str] = Promise(start_soon=start_soon, resolver=resolver)
        assert calls == []  # never synchronously
        await context.aflush_tasks()
        assert calls == (["resolved"] if resolved_in_background else [])
        assert await promise == "value"
        assert calls == ["resolved"]


@pytest.mark.parametrize(("start_soon", "pulled_in_background"), [(True, 5), (False, 0)])
async def test_streamed_promise_start_soon_pulls_without_a_consumer(
    start_soon: bool, pulled_in_background: int
) -> None:
    counter: list[int] = []
    async with PromisingContext() as context:
        promise: StreamedPromise[int, Any] = StreamedPromise(streamer=counting_streamer(counter), start_soon=start_soon)
        await context.aflush_tasks()
        assert len(counter) == pulled_in_background
        if not start_soon:
            iterator = aiter(promise)
            assert await anext(iterator) == 1
            assert await anext(iterator) == 2
            assert counter == [1, 2]  # the streamer advanced only on demand


async def test_context_exit_waits_for_background_tasks() -> None:
    finished: list[str] = []

    async def work() -> None:
        await asyncio.sleep(0.01)
        finished.append("done")

    async with PromisingContext() as context:
        context.start_soon(work())
    assert finished == ["done"]


async def test_start_soon_suppresses_and_logs_errors_once(caplog: pytest.LogCaptureFixture) -> None:
    error = ValueError("boom")

    async def fail() -> str:
        raise error

    async with PromisingContext() as context:
        quiet = context.start_soon(fail())
        loud = context.start_soon(fail(), suppress_errors=False)
        assert await quiet is None
        with pytest.raises(ValueError, match="boom") as raised:
            await loud
        assert raised.value is error
    logged = [record for record in caplog.records if record.exc_info and record.exc_info[1] is error]
    assert len(logged) == 1


async def test_on_promise_resolved_handlers_must_be_async() -> None:
    def sync_handler(_promise: object, _result: object) -> None:
        pass

    context = PromisingContext()
    with pytest.raises(ValueError):
        context.on_promise_resolved(sync_handler)  # type: ignore[arg-type]


async def test_on_promise_resolved_fires_in_this_and_parent_contexts() -> None:
    outer_events: list[Any] = []
    inner_events: list[Any] = []
    error = TypeError("resolver failed")

    async def failing_resolver(_promise: object) -> int:
        raise error

    async def ok_resolver(_promise: object) -> int:
        return 7

    async with PromisingContext() as outer:

        @outer.on_promise_resolved
        async def on_outer(_promise: Promise[Any], result: Any) -> None:
            outer_events.append(result)

        async with PromisingContext() as inner:

            @inner.on_promise_resolved
            async def on_inner(_promise: Promise[Any], result: Any) -> None:
                inner_events.append(result)

            prefilled: Promise[str] = Promise(prefill_result="prefilled")
            await inner.aflush_tasks()
            # A prefilled promise fires the event from its constructor.
            assert inner_events == ["prefilled"]

            assert await Promise(resolver=ok_resolver) == 7
            with pytest.raises(TypeError):
                await Promise(resolver=failing_resolver)
            assert await prefilled == "prefilled"  # awaiting a resolved promise fires nothing new

    assert inner_events == ["prefilled", 7, error]
    assert outer_events == ["prefilled", 7, error]


# --- B: resolve once, stream once, replay -----------------------------------------------------


@START_SOON
async def test_stream_replay_iterator(start_soon: bool | Sentinel) -> None:
    counter: list[int] = []
    async with PromisingContext():
        promise: StreamedPromise[int, Any] = StreamedPromise(streamer=counting_streamer(counter), start_soon=start_soon)
        assert await collect(aiter(promise)) == [1, 2, 3, 4, 5]
        assert await collect(aiter(promise)) == [1, 2, 3, 4, 5]
        assert len(counter) == 5


@START_SOON
async def test_concurrent_consumers_each_get_every_piece(start_soon: bool | Sentinel) -> None:
    counter: list[int] = []
    async with PromisingContext():
        promise: StreamedPromise[int, Any] = StreamedPromise(
            streamer=counting_streamer(counter, count=3), resolver=tuple_resolver, start_soon=start_soon
        )
        first, second, whole = await asyncio.gather(collect(aiter(promise)), collect(aiter(promise)), promise)
        assert first == [1, 2, 3]
        assert second == [1, 2, 3]
        assert whole == (1, 2, 3)
        assert len(counter) == 3


@START_SOON
async def test_stream_replay_iterator_exception(start_soon: bool | Sentinel) -> None:
    async with PromisingContext():
        appender: StreamAppender[int] = StreamAppender(capture_errors=True)
        promise: StreamedPromise[int, Any] = StreamedPromise(streamer=appender, start_soon=start_soon)
        with appender:
            appender.append(1)
            appender.append(2)
            raise ValueError("inside the with")

        expected = [1, 2, ValueError, StopAsyncIteration, StopAsyncIteration]
        assert await pieces_then_end(aiter(promise), 5) == expected
        assert await pieces_then_end(aiter(promise), 5) == expected


class FlakyIterator:
    """An async iterator that raises once in the middle and then goes on."""

    def __init__(self) -> None:
        self._steps: Iterator[int | Exception] = iter([1, ValueError("flaky"), 3])

    def __aiter__(self) -> FlakyIterator:
        return self

    async def __anext__(self) -> int:
        step = next(self._steps, None)
        if step is None:
            raise StopAsyncIteration
        if isinstance(step, Exception):
            raise step
        return step


@START_SOON
async def test_pieces_after_an_error_still_reach_the_consumer(start_soon: bool | Sentinel) -> None:
    async with PromisingContext():
        promise: StreamedPromise[int, Any] = StreamedPromise(
            streamer=lambda _promise: FlakyIterator(), start_soon=start_soon
        )
        expected = [1, ValueError, 3, StopAsyncIteration, StopAsyncIteration]
        assert await pieces_then_end(aiter(promise), 5) == expected
        assert await pieces_then_end(aiter(promise), 5) == expected


def sync_streamer(_promise: object) -> Any:
    return iter([])


async def non_generator_streamer(_promise: object) -> Any:
    return None


@pytest.mark.parametrize("streamer", [sync_streamer, non_generator_streamer], ids=["sync_iter", "coroutine"])
@START_SOON
async def test_broken_streamer(streamer: Any, start_soon: bool | Sentinel) -> None:
    async with PromisingContext() as context:
        promise: StreamedPromise[Any, Any] = StreamedPromise(streamer=streamer, start_soon=start_soon)
        for _ in range(2):  # the replay behaves the same way
            outcomes = await pieces_then_end(aiter(promise), 3)
            assert outcomes[0] in (TypeError, AttributeError)
            assert outcomes[1:] == [StopAsyncIteration, StopAsyncIteration]
        await context.aflush_tasks()


def sync_resolver(_promise: object) -> Any:
    return "not awaitable"


async def raising_resolver(_promise: object) -> Any:
    raise TypeError("resolver failed")


@pytest.mark.parametrize("resolver", [sync_resolver, raising_resolver], ids=["sync", "raising"])
@START_SOON
async def test_broken_stream_resolver(resolver: Any, start_soon: bool | Sentinel) -> None:
    resolver_calls: list[object] = []

    async def counted_resolver(promise: object) -> Any:
        resolver_calls.append(promise)
        return await resolver(promise)

    chosen = counted_resolver if resolver is raising_resolver else resolver
    counter: list[int] = []
    async with PromisingContext():
        promise: StreamedPromise[int, Any] = StreamedPromise(
            streamer=counting_streamer(counter), resolver=chosen, start_soon=start_soon
        )
        with pytest.raises(TypeError) as first:
            await promise
        assert await collect(aiter(promise)) == [1, 2, 3, 4, 5]
        with pytest.raises(TypeError) as second:
            await promise
        assert second.value is first.value
        if chosen is counted_resolver:
            assert len(resolver_calls) == 1


@START_SOON
async def test_streamed_promise_aresolve(start_soon: bool | Sentinel) -> None:
    resolver_calls = 0

    async def resolver(promise: StreamedPromise[int, list[int]]) -> list[int]:
        nonlocal resolver_calls
        resolver_calls += 1
        return [piece async for piece in promise]

    async with PromisingContext():
        promise: StreamedPromise[int, list[int]] = StreamedPromise(
            streamer=counting_streamer([]), resolver=resolver, start_soon=start_soon
        )
        first = await promise.aresolve()
        second = await promise
        assert first == [1, 2, 3, 4, 5]
        assert second is first
        assert resolver_calls == 1


@START_SOON
async def test_resolved_value_is_independent_of_a_failing_stream(start_soon: bool | Sentinel) -> None:
    async def streamer(_promise: object) -> AsyncIterator[int]:
        yield 1
        raise ValueError("stream broke")

    async def resolver(_promise: object) -> str:
        return "whole"

    async with PromisingContext():
        promise: StreamedPromise[int, str] = StreamedPromise(
            streamer=streamer, resolver=resolver, start_soon=start_soon
        )
        assert await promise == "whole"
        assert await pieces_then_end(aiter(promise), 2) == [1, ValueError]


@START_SOON
async def test_default_resolver_is_the_tuple_of_pieces(start_soon: bool | Sentinel) -> None:
    # Our extension: MiniAgents' plain StreamedPromise has no default resolver.
    async with PromisingContext():
        promise: StreamedPromise[int, Any] = StreamedPromise(
            streamer=counting_streamer([], count=3), start_soon=start_soon
        )
        assert await promise == (1, 2, 3)


@START_SOON
async def test_streamed_promise_same_instance(start_soon: bool | Sentinel) -> None:
    seen: list[object] = []

    async def streamer(promise: object) -> AsyncIterator[int]:
        seen.append(promise)
        yield 1

    async def resolver(promise: object) -> str:
        seen.append(promise)
        return "whole"

    async with PromisingContext():
        promise: StreamedPromise[int, str] = StreamedPromise(
            streamer=streamer, resolver=resolver, start_soon=start_soon
        )
        await promise
        await collect(aiter(promise))
        assert len(seen) == 2
        assert seen[0] is promise
        assert seen[1] is promise


async def test_streamed_promise_rejects_conflicting_arguments() -> None:
    async def streamer(_promise: object) -> AsyncIterator[int]:
        yield 1

    async def resolver(_promise: object) -> int:
        return 1

    async with PromisingContext():
        with pytest.raises(ValueError):
            StreamedPromise(streamer=streamer, prefill_pieces=[1])
        with pytest.raises(ValueError):
            StreamedPromise(prefill_pieces=[1], resolver=resolver, prefill_result=(1,))
        with pytest.raises(FunctionNotProvidedError):
            StreamedPromise()
        with pytest.raises(FunctionNotProvidedError):
            Promise()


async def test_prefilled_streamed_promise_replays_pieces_and_result() -> None:
    async with PromisingContext():
        promise: StreamedPromise[int, str] = StreamedPromise(prefill_pieces=[1, 2], prefill_result="whole")
        assert await collect(aiter(promise)) == [1, 2]
        assert await promise == "whole"


async def test_a_streamed_promise_can_be_the_streamer_of_another() -> None:
    async with PromisingContext():
        source: StreamedPromise[int, Any] = StreamedPromise(streamer=counting_streamer([], count=3))
        mirror: StreamedPromise[int, Any] = StreamedPromise(streamer=source)
        assert await collect(aiter(mirror)) == [1, 2, 3]
        assert await collect(source()) == [1, 2, 3]


# --- C: StreamAppender -------------------------------------------------------------------------


async def test_appender_must_be_open_to_append() -> None:
    async with PromisingContext():
        appender: StreamAppender[int] = StreamAppender()
        assert not appender.was_open
        with pytest.raises(AppenderNotOpenError):
            appender.append(1)
        with appender:
            assert appender.was_open
            assert appender.is_open
            appender.append(1)
        assert appender.was_open
        assert not appender.is_open
        with pytest.raises(AppenderClosedError):
            appender.append(2)
        with pytest.raises(AppenderClosedError):
            appender.open()
        appender.close()  # idempotent
        assert await collect(aiter(appender)) == [1]


async def test_async_with_on_an_appender_raises() -> None:
    async with PromisingContext():
        appender: StreamAppender[int] = StreamAppender()
        with pytest.raises(RuntimeError):
            async with appender:
                pass


@START_SOON
async def test_stream_appender_captures_errors(start_soon: bool | Sentinel) -> None:
    async with PromisingContext():
        appender: StreamAppender[int] = StreamAppender(capture_errors=True)
        promise: StreamedPromise[int, Any] = StreamedPromise(
            streamer=appender, resolver=tuple_resolver, start_soon=start_soon
        )
        with appender:  # the error is suppressed: it now lives in the stream
            appender.append(1)
            appender.append(2)
            raise ValueError("captured")
        assert not appender.is_open
        with pytest.raises(ValueError, match="captured"):
            await promise
        assert await pieces_then_end(aiter(promise), 4) == [1, 2, ValueError, StopAsyncIteration]


@START_SOON
async def test_stream_appender_dont_capture_errors(start_soon: bool | Sentinel) -> None:
    async with PromisingContext():
        appender: StreamAppender[int] = StreamAppender(capture_errors=False)
        promise: StreamedPromise[int, Any] = StreamedPromise(
            streamer=appender, resolver=tuple_resolver, start_soon=start_soon
        )
        with pytest.raises(ValueError), appender:
            for i in range(1, 6):
                if i == 3:
                    raise ValueError("not captured")
                appender.append(i)
        assert await promise == (1, 2)


async def test_appender_capture_default_comes_from_the_context() -> None:
    def fill(appender: StreamAppender[int]) -> None:
        with appender:
            appender.append(1)
            raise ValueError("in the with")

    async with PromisingContext():
        with pytest.raises(ValueError):
            fill(StreamAppender())
    async with PromisingContext(appenders_capture_errors_by_default=True):
        fill(StreamAppender())  # captured: nothing escapes
        with pytest.raises(ValueError):
            fill(StreamAppender(capture_errors=False))


async def test_captured_appender_never_suppresses_appender_closed_error() -> None:
    async with PromisingContext():
        appender: StreamAppender[int] = StreamAppender(capture_errors=True)
        with pytest.raises(AppenderClosedError), appender:
            appender.append(1)
            appender.close()
            appender.append(2)
        assert await collect(aiter(appender)) == [1]
