"""OpenAIAgent and openai_embedding_agent, with the real SDK client against a loopback fake server.

Every failure case checks what a consumer sees: the tokens that came before the failure, then the
error at that position (or an ErrorMessage with errors_as_messages), never a message that looks
complete.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from openai import AsyncOpenAI

from brokeragents import ErrorMessage, Frozen, MessagePromise, MiniAgent, MiniAgents
from brokeragents.ext.llms.base import IncompleteLLMResponseError
from brokeragents.ext.llms.messages import AssistantMessage, SystemMessage, UserMessage
from brokeragents.ext.llms.openai import (
    EmbeddingMessage,
    OpenAIAgent,
    aprepare_dicts_for_openai,
    openai_embedding_agent,
)
from brokeragents.ext.llms.tools import ToolCallToken, ToolResultMessage
from fake_llm_servers import (
    MALFORMED_OPENAI_FRAME,
    FakeOpenAIServer,
    Reply,
    openai_error,
    openai_stream,
    openai_usage,
)

FAST_RETRY = {"retry-after-ms": "10"}  # the SDK honours it, so retries take milliseconds


@pytest.fixture
async def server() -> AsyncIterator[FakeOpenAIServer]:
    async with FakeOpenAIServer() as fake:
        yield fake


@pytest.fixture
async def client(server: FakeOpenAIServer) -> AsyncIterator[AsyncOpenAI]:
    sdk_client = AsyncOpenAI(api_key="sk-test", base_url=server.base_url)
    yield sdk_client
    await sdk_client.close()


@pytest.fixture
def agent(client: AsyncOpenAI) -> MiniAgent:
    return OpenAIAgent.fork(non_freezable_kwargs={"async_client": client}, model="gpt-fake")


async def tokens_and_outcome(promise: MessagePromise) -> tuple[list[str], str]:
    """The text tokens a consumer sees, then ``"complete"`` or the error raised at the end."""
    tokens: list[str] = []
    try:
        async for token in promise:
            tokens.append(str(token))
        await promise
    except Exception as exc:
        return tokens, type(exc).__name__
    return tokens, "complete"


async def the_reply(agent: MiniAgent, messages: Any, **kwargs: Any) -> MessagePromise:
    promises = [promise async for promise in agent.trigger(messages, **kwargs)]
    assert len(promises) == 1
    return promises[0]


async def test_a_normal_stream_gives_tokens_then_a_complete_assistant_message(
    agent: MiniAgent, server: FakeOpenAIServer
) -> None:
    async with MiniAgents():
        promise = await the_reply(agent, [UserMessage("hi"), "there"], system="Be brief.", temperature=0)
        assert promise.known_beforehand.as_kwargs() == {
            "content_template": None,
            "model": "gpt-fake",
            "agent_alias": "OPENAI_AGENT",
        }
        assert [str(token) async for token in promise] == ["You ", "said: ", "there"]
        message = await promise
    assert type(message) is AssistantMessage
    assert message.content == "You said: there"
    assert (message.role, message.model, message.agent_alias) == ("assistant", "gpt-fake", "OPENAI_AGENT")
    assert message["finish_reason"] == "stop"
    assert message["usage"] == Frozen(**openai_usage())
    assert message["id"] == "chatcmpl-fake1"
    body = server.requests[0].body
    assert body["messages"] == [
        {"role": "system", "content": "Be brief."},  # first, unlike MiniAgents 0.0.35
        {"role": "user", "content": "hi"},
        {"role": "user", "content": "there"},
    ]
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert body["temperature"] == 0
    assert "n" not in body


async def test_tokens_reach_the_consumer_while_the_server_is_still_streaming(
    agent: MiniAgent, server: FakeOpenAIServer
) -> None:
    release = asyncio.Event()
    server.script(Reply(frames=openai_stream(["first ", "second"]), hold_at=2, release=release))
    async with MiniAgents():
        promise = await the_reply(agent, "go")
        tokens = aiter(promise)
        assert str(await anext(tokens)) == "first "  # the server has not sent "second" yet
        release.set()
        assert [str(token) async for token in tokens] == ["second"]


async def test_without_streaming_the_whole_text_is_one_token(agent: MiniAgent, server: FakeOpenAIServer) -> None:
    async with MiniAgents(stream_llm_tokens_by_default=False):
        promise = await the_reply(agent, "hi")
        assert [str(token) async for token in promise] == ["You said: hi"]
        message = await promise
    assert (message["finish_reason"], message["usage"]["total_tokens"]) == ("stop", 10)
    assert server.requests[0].body["stream"] is False
    assert "stream_options" not in server.requests[0].body


async def test_the_sdk_environment_variables_configure_the_client(
    server: FakeOpenAIServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-from-env")
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    async with MiniAgents():
        replies = await OpenAIAgent.trigger("hi", model="gpt-fake")
    assert str(replies[0]) == "You said: hi"
    assert server.requests[0].headers["authorization"] == "Bearer sk-from-env"


async def test_a_missing_api_key_fails_the_reply_not_the_caller(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    async with MiniAgents(errors_as_messages=True):
        replies = await OpenAIAgent.trigger("hi", model="gpt-fake")
    assert type(replies[0]) is ErrorMessage
    assert "OPENAI_API_KEY" in str(replies[0])


async def test_a_429_is_retried_and_then_succeeds(agent: MiniAgent, server: FakeOpenAIServer) -> None:
    server.script(Reply(status=429, body=openai_error("Slow down", type_="requests"), headers=FAST_RETRY))
    async with MiniAgents():
        replies = await agent.trigger("hi")
    assert str(replies[0]) == "You said: hi"
    assert replies[0]["finish_reason"] == "stop"
    assert len(server.requests) == 2


async def test_a_500_that_outlasts_the_retries_fails_the_reply(agent: MiniAgent, server: FakeOpenAIServer) -> None:
    failure = Reply(status=500, body=openai_error("The server had an error"), headers=FAST_RETRY)
    server.script(failure, failure, failure)
    async with MiniAgents():
        promise = await the_reply(agent, "hi", max_retries=2)
        assert await tokens_and_outcome(promise) == ([], "InternalServerError")
    assert len(server.requests) == 3  # the first attempt and 2 retries


async def test_max_retries_zero_fails_at_the_first_429(agent: MiniAgent, server: FakeOpenAIServer) -> None:
    server.script(Reply(status=429, body=openai_error("Slow down"), headers=FAST_RETRY))
    async with MiniAgents(errors_as_messages=True):
        replies = await agent.trigger("hi", max_retries=0)
    assert type(replies[0]) is ErrorMessage
    assert str(replies[0]).startswith("\nRateLimitError: ")
    assert len(server.requests) == 1


async def test_a_connection_dropped_mid_stream_ends_the_message_with_the_error(
    agent: MiniAgent, server: FakeOpenAIServer
) -> None:
    server.script(Reply(frames=openai_stream(["Hel", "lo ", "world"]), drop_after=3))
    async with MiniAgents():
        promise = await the_reply(agent, "hi")
        assert await tokens_and_outcome(promise) == (["Hel", "lo "], "APIConnectionError")
    assert len(server.requests) == 1  # a started stream is never retried


async def test_a_dropped_stream_becomes_an_error_message_with_the_partial_text(
    agent: MiniAgent, server: FakeOpenAIServer
) -> None:
    server.script(Reply(frames=openai_stream(["Hel", "lo ", "world"]), drop_after=3))
    async with MiniAgents(errors_as_messages=True):
        replies = await agent.trigger("hi")
    assert type(replies[0]) is ErrorMessage
    assert str(replies[0]) == "Hello \nAPIConnectionError: Connection error."


async def test_a_stream_that_ends_without_a_finish_reason_is_incomplete(
    agent: MiniAgent, server: FakeOpenAIServer
) -> None:
    # The body ends cleanly but too early (no finish_reason, no [DONE]): MiniAgents 0.0.35 would
    # have resolved "Hello " as if it were the whole answer.
    server.script(Reply(frames=openai_stream(["Hel", "lo ", "world"])[:3]))
    async with MiniAgents():
        promise = await the_reply(agent, "hi")
        assert await tokens_and_outcome(promise) == (["Hel", "lo "], "IncompleteLLMResponseError")
        with pytest.raises(IncompleteLLMResponseError, match="finish_reason"):
            await promise


async def test_a_malformed_event_ends_the_message_with_the_error(agent: MiniAgent, server: FakeOpenAIServer) -> None:
    frames = openai_stream(["Hel", "lo"])
    server.script(Reply(frames=[*frames[:2], MALFORMED_OPENAI_FRAME, *frames[2:]]))
    async with MiniAgents():
        promise = await the_reply(agent, "hi")
        assert await tokens_and_outcome(promise) == (["Hel"], "JSONDecodeError")


async def test_a_server_that_does_not_answer_in_time_is_a_timeout(agent: MiniAgent, server: FakeOpenAIServer) -> None:
    server.script(Reply(frames=openai_stream(["late"]), stall_s=2.0))
    async with MiniAgents():
        promise = await the_reply(agent, "hi", timeout=0.2, max_retries=0)
        assert await tokens_and_outcome(promise) == ([], "APITimeoutError")


async def test_a_stream_that_stalls_midway_times_out_after_its_tokens(
    agent: MiniAgent, server: FakeOpenAIServer
) -> None:
    never = asyncio.Event()
    server.script(Reply(frames=openai_stream(["one ", "two"]), hold_at=2, release=never))
    async with MiniAgents():
        promise = await the_reply(agent, "hi", timeout=0.3, max_retries=0)
        assert await tokens_and_outcome(promise) == (["one "], "APITimeoutError")


async def test_n_other_than_one_is_refused(agent: MiniAgent, server: FakeOpenAIServer) -> None:
    async with MiniAgents():
        promise = await the_reply(agent, "hi", n=2)
        with pytest.raises(ValueError, match="n=1"):
            await promise
    assert server.requests == []


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


async def test_tool_calls_stream_their_arguments_and_land_on_the_reply(
    agent: MiniAgent, server: FakeOpenAIServer
) -> None:
    calls = [("call_1", "get_weather", ['{"ci', 'ty": "Pa', 'ris"}']), ("call_2", "get_time", ["{}"])]
    server.script(Reply(frames=openai_stream(["Checking."], tool_calls=calls, finish_reason="tool_calls")))
    async with MiniAgents():
        promise = await the_reply(agent, "weather?", tools=[WEATHER_TOOL], tool_choice="auto")
        tokens = [token async for token in promise]
        message = await promise
    fragments = [(t.index, t.id, t.name, t.arguments_delta) for t in tokens if isinstance(t, ToolCallToken)]
    assert fragments == [
        (0, "call_1", "get_weather", ""),
        (0, "call_1", "get_weather", '{"ci'),
        (0, "call_1", "get_weather", 'ty": "Pa'),
        (0, "call_1", "get_weather", 'ris"}'),
        (1, "call_2", "get_time", ""),
        (1, "call_2", "get_time", "{}"),
    ]
    assert message["content"] == "Checking."  # argument fragments are not text
    assert message["finish_reason"] == "tool_calls"
    assert message["tool_calls"] == (
        Frozen(id="call_1", name="get_weather", arguments='{"city": "Paris"}'),
        Frozen(id="call_2", name="get_time", arguments="{}"),
    )
    body = server.requests[0].body
    assert body["tools"] == [WEATHER_TOOL]  # frozen kwargs reach the SDK as plain JSON again
    assert body["tool_choice"] == "auto"


async def test_tool_calls_and_results_go_back_to_the_model_in_openai_form() -> None:
    call = {"id": "call_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
    history = [
        UserMessage("weather?"),
        AssistantMessage("", tool_calls=[call]),
        ToolResultMessage("sunny", tool_call_id="call_1"),
    ]
    async with MiniAgents():
        dicts = await aprepare_dicts_for_openai(history, system="sys")
    assert dicts == [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "call_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                }
            ],
        },
        {"role": "tool", "content": "sunny", "tool_call_id": "call_1"},
    ]


async def test_non_streamed_tool_calls_land_on_the_reply(agent: MiniAgent, server: FakeOpenAIServer) -> None:
    completion = {
        "id": "chatcmpl-t",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-fake",
        "choices": [
            {
                "index": 0,
                "finish_reason": "tool_calls",
                "message": {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
                    ],
                },
            }
        ],
    }
    server.script(Reply(body=completion))
    async with MiniAgents():
        replies = await agent.trigger("go", stream=False)
    assert replies[0]["tool_calls"] == (Frozen(id="c1", name="f", arguments='{"a": 1}'),)
    assert replies[0]["content"] == ""


async def test_system_messages_in_the_input_keep_their_place() -> None:
    async with MiniAgents():
        dicts = await aprepare_dicts_for_openai([SystemMessage("s1"), "u", AssistantMessage("a")], system="first")
    assert [d["content"] for d in dicts] == ["first", "s1", "u", "a"]
    assert [d["role"] for d in dicts] == ["system", "system", "user", "assistant"]


async def test_response_metadata_is_known_beforehand_and_kept(agent: MiniAgent) -> None:
    async with MiniAgents():
        promise = await the_reply(agent, "hi", response_metadata={"not_for_user": True})
        assert promise.known_beforehand["not_for_user"] is True
        message = await promise
    assert message["not_for_user"] is True


@pytest.mark.parametrize("batch_mode", [False, True], ids=["joined", "batch"])
async def test_the_embedding_agent_embeds_the_input(
    client: AsyncOpenAI, server: FakeOpenAIServer, batch_mode: bool
) -> None:
    embedder = openai_embedding_agent.fork(non_freezable_kwargs={"async_client": client})
    async with MiniAgents():
        replies = await embedder.trigger(
            ["a", "bb"], model="embed-fake", batch_mode=batch_mode, response_metadata={"k": 1}
        )
    expected_inputs = ["a", "bb"] if batch_mode else ["a\n\nbb"]
    assert server.requests[0].body["input"] == expected_inputs
    assert [type(reply) for reply in replies] == [EmbeddingMessage] * len(expected_inputs)
    assert [reply["embedding"] for reply in replies] == [(float(i), 0.5, -1.0) for i in range(len(expected_inputs))]
    assert all(reply["k"] == 1 for reply in replies)


def test_the_request_body_is_plain_json() -> None:
    # Frozen kwargs are thawed: nothing of brokeragents' own types reaches the SDK.
    from brokeragents.ext.llms.base import thaw

    assert json.dumps(thaw(Frozen(tools=[{"a": (1, 2)}]))) == '{"tools": [{"a": [1, 2]}]}'


@pytest.fixture
def worker_process(real_redis_url: str, server: FakeOpenAIServer) -> Iterator[str]:
    """A worker process serving OpenAIAgent, configured only by the SDK's environment variables."""
    prefix = f"llm{os.getpid()}"
    env = {**os.environ, "OPENAI_API_KEY": "sk-worker", "OPENAI_BASE_URL": server.base_url}
    command = [sys.executable, "-m", "brokeragents", "worker", "brokeragents.ext.llms.openai:OpenAIAgent"]
    process = subprocess.Popen(
        [*command, "--redis-url", real_redis_url, "--key-prefix", prefix, "--shutdown-grace-s", "2"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        yield prefix
    finally:
        process.send_signal(signal.SIGTERM)
        _, stderr = process.communicate(timeout=30)
        assert process.returncode == 0, stderr.decode()


@pytest.mark.real_redis
async def test_tokens_stream_from_a_worker_process_to_the_caller_as_they_arrive(
    worker_process: str, server: FakeOpenAIServer, real_redis_url: str
) -> None:
    release = asyncio.Event()
    server.script(
        Reply(frames=openai_stream(["first ", "second"], usage=openai_usage()), hold_at=2, release=release),
        Reply(frames=openai_stream(["Hel", "lo ", "world"]), drop_after=3),
        Reply(frames=openai_stream([], tool_calls=[("call_9", "f", ['{"a"', ": 1}"])], finish_reason="tool_calls")),
    )
    async with MiniAgents(redis_url=real_redis_url, key_prefix=worker_process, remote_calls="always"):
        # The first message, not the whole reply: a worker ends a reply only once its messages
        # are whole (so a lost worker's partial reply is never taken as complete).
        promise = await asyncio.wait_for(anext(aiter(OpenAIAgent.trigger("hi", model="gpt-fake"))), timeout=30)
        tokens = aiter(promise)
        # The fake server holds the rest of the stream: this token crossed processes on its own.
        assert str(await asyncio.wait_for(anext(tokens), timeout=30)) == "first "
        release.set()
        assert [str(token) async for token in tokens] == ["second"]
        message = await promise
        assert type(message) is AssistantMessage
        assert (message["content"], message["finish_reason"], message["usage"]["total_tokens"]) == (
            "first second",
            "stop",
            10,
        )

        broken = await the_reply(OpenAIAgent, "hi", model="gpt-fake")
        assert await tokens_and_outcome(broken) == (["Hel", "lo "], "APIConnectionError")

        calling = await the_reply(OpenAIAgent, "hi", model="gpt-fake")
        fragments = [token.arguments_delta async for token in calling if isinstance(token, ToolCallToken)]
        assert fragments == ["", '{"a"', ": 1}"]
        assert (await calling)["tool_calls"] == (Frozen(id="call_9", name="f", arguments='{"a": 1}'),)
    assert server.requests[0].headers["authorization"] == "Bearer sk-worker"
