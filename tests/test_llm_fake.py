"""FakeLLMAgent: scripted, deterministic, streamed like a real LLM reply, locally and via a worker."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from brokeragents import ErrorMessage, MiniAgents
from brokeragents.ext.llms.fake import FakeLLMAgent, FakeLLMError, split_into_tokens
from brokeragents.ext.llms.messages import AssistantMessage, UserMessage
from brokeragents.worker import Worker, WorkerSettings
from helpers import Backend, wait_until

QUICK: dict[str, Any] = {"token_delay_s": 0.0}


async def test_it_echoes_the_last_user_message_in_word_sized_tokens() -> None:
    async with MiniAgents():
        promises = [promise async for promise in FakeLLMAgent.trigger(["first", "hello  brave world"], **QUICK)]
        assert len(promises) == 1
        assert promises[0].known_beforehand["model"] == "fake-llm"
        assert [str(token) async for token in promises[0]] == ["You", " said:", " hello", "  brave", " world"]
        message = await promises[0]
    assert type(message) is AssistantMessage
    assert (message.content, message.role, message.agent_alias) == (
        "You said: hello  brave world",
        "assistant",
        "FAKE_LLM_AGENT",
    )
    assert message["finish_reason"] == "stop"
    assert (
        message["usage"]["prompt_tokens"],
        message["usage"]["completion_tokens"],
        message["usage"]["total_tokens"],
    ) == (4, 5, 9)


def test_tokens_join_back_into_the_exact_text() -> None:
    for text in ["", " lead", "trail \n", "a  b\tc", "  "]:
        assert "".join(split_into_tokens(text)) == text


async def test_a_script_gives_one_reply_per_dialog_turn() -> None:
    script = ("Hi there.", "Fine, thanks.")
    async with MiniAgents():
        first = await FakeLLMAgent.trigger("hello", script=script, **QUICK)
        history = [UserMessage("hello"), *first, UserMessage("how are you?")]
        second = await FakeLLMAgent.trigger(history, script=script, **QUICK)
        fixed = await FakeLLMAgent.trigger(history, script="Always this.", **QUICK)
    assert (str(first[0]), str(second[0]), str(fixed[0])) == ("Hi there.", "Fine, thanks.", "Always this.")


async def test_the_same_input_gives_the_same_message() -> None:
    async with MiniAgents():
        first = await FakeLLMAgent.trigger("same", system="sys", **QUICK)
        second = await FakeLLMAgent.trigger("same", system="sys", **QUICK)
    assert first[0].hash_key == second[0].hash_key


async def test_tokens_come_token_delay_s_apart() -> None:
    async with MiniAgents():
        promise = FakeLLMAgent.trigger("a b c", token_delay_s=0.05)
        arrivals = []
        async for message_promise in promise:
            async for _token in message_promise:
                arrivals.append(time.monotonic())
    assert len(arrivals) == 5
    assert arrivals[-1] - arrivals[0] >= 4 * 0.05 * 0.9


async def test_without_streaming_the_whole_text_is_one_token() -> None:
    async with MiniAgents(stream_llm_tokens_by_default=False):
        promises = [promise async for promise in FakeLLMAgent.trigger("hi", **QUICK)]
        assert [str(token) async for token in promises[0]] == ["You said: hi"]


async def test_the_reply_sequence_ends_before_the_tokens_do() -> None:
    # afinish_early: a consumer knows there is exactly one reply while it still streams.
    async with MiniAgents():
        promises = [promise async for promise in FakeLLMAgent.trigger("one two three", token_delay_s=0.05)]
        assert len(promises) == 1
        assert not promises[0].is_resolved
        assert str(await promises[0]) == "You said: one two three"


async def test_fail_after_tokens_breaks_the_stream_there() -> None:
    async with MiniAgents():
        promises = [promise async for promise in FakeLLMAgent.trigger("a b c", fail_after_tokens=2, **QUICK)]
        seen = []
        with pytest.raises(FakeLLMError):
            async for token in promises[0]:
                seen.append(str(token))
        assert seen == ["You", " said:"]
    async with MiniAgents(errors_as_messages=True):
        replies = await FakeLLMAgent.trigger("a b c", fail_after_tokens=2, **QUICK)
    assert type(replies[0]) is ErrorMessage
    assert str(replies[0]) == "You said:\nFakeLLMError: The fake LLM failed after 2 tokens, as it was told to."


async def test_response_metadata_is_known_beforehand() -> None:
    async with MiniAgents():
        promises = [p async for p in FakeLLMAgent.trigger("x", response_metadata={"not_for_user": True}, **QUICK)]
        assert promises[0].known_beforehand["not_for_user"] is True
        assert (await promises[0])["not_for_user"] is True


@pytest.fixture
async def worker(redis_backend: Backend) -> AsyncIterator[Worker]:
    served = Worker(
        [FakeLLMAgent],
        redis=redis_backend.client(),
        name="llm-worker",
        settings=WorkerSettings(block_ms=100, shutdown_grace_s=5.0),
    )
    task = asyncio.create_task(served.arun())
    await wait_until(lambda: served.ready.is_set() or task.done(), what="the worker to start")
    yield served
    served.stop()
    await task


async def test_a_worker_streams_the_tokens_to_the_caller_as_they_come(worker: Worker, redis_backend: Backend) -> None:
    async with MiniAgents(redis=redis_backend.client(), remote_calls="always"):
        replies = FakeLLMAgent.trigger("one two three four", token_delay_s=0.1)
        arrivals: list[tuple[float, str]] = []
        async for promise in replies:
            async for token in promise:
                arrivals.append((time.monotonic(), str(token)))
            message = await promise
    assert [text for _, text in arrivals] == ["You", " said:", " one", " two", " three", " four"]
    # Delivered as produced, 0.1 s apart, not all at once when the message is complete.
    assert arrivals[-1][0] - arrivals[0][0] >= 0.3
    assert type(message) is AssistantMessage
    assert (message["finish_reason"], message.agent_alias, message.model) == ("stop", "FAKE_LLM_AGENT", "fake-llm")
    await wait_until(lambda: worker.calls_served == 1, what="the call to be acknowledged")


async def test_a_failure_mid_stream_reaches_the_remote_caller_at_its_position(
    worker: Worker, redis_backend: Backend
) -> None:
    async with MiniAgents(redis=redis_backend.client(), remote_calls="always", errors_as_messages=True):
        replies = await FakeLLMAgent.trigger("a b c", fail_after_tokens=3, **QUICK)
    assert type(replies[0]) is ErrorMessage
    assert str(replies[0]) == "You said: a\nFakeLLMError: The fake LLM failed after 3 tokens, as it was told to."
