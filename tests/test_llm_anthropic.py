"""AnthropicAgent, with the real SDK client against a loopback fake server (Messages SSE events)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
from anthropic import AsyncAnthropic

from brokeragents import ErrorMessage, Frozen, MessagePromise, MiniAgent, MiniAgents
from brokeragents.ext.llms.anthropic import AnthropicAgent, aprepare_dicts_for_anthropic
from brokeragents.ext.llms.base import IncompleteLLMResponseError
from brokeragents.ext.llms.messages import AssistantMessage, SystemMessage, UserMessage
from brokeragents.ext.llms.tools import ToolCallToken, ToolResultMessage
from fake_llm_servers import (
    MALFORMED_ANTHROPIC_FRAME,
    FakeAnthropicServer,
    Reply,
    anthropic_error,
    anthropic_error_frame,
    anthropic_message,
    anthropic_stream,
)
from test_llm_openai import tokens_and_outcome

FAST_RETRY = {"retry-after-ms": "10"}


@pytest.fixture
async def server() -> AsyncIterator[FakeAnthropicServer]:
    async with FakeAnthropicServer() as fake:
        yield fake


@pytest.fixture
async def client(server: FakeAnthropicServer) -> AsyncIterator[AsyncAnthropic]:
    sdk_client = AsyncAnthropic(api_key="sk-ant-test", base_url=server.base_url)
    yield sdk_client
    await sdk_client.close()


@pytest.fixture
def agent(client: AsyncAnthropic) -> MiniAgent:
    return AnthropicAgent.fork(non_freezable_kwargs={"async_client": client}, model="claude-fake", max_tokens=100)


async def the_reply(agent: MiniAgent, messages: Any, **kwargs: Any) -> MessagePromise:
    promises = [promise async for promise in agent.trigger(messages, **kwargs)]
    assert len(promises) == 1
    return promises[0]


async def test_a_normal_stream_gives_tokens_then_a_complete_assistant_message(
    agent: MiniAgent, server: FakeAnthropicServer
) -> None:
    async with MiniAgents():
        promise = await the_reply(agent, [UserMessage("hi"), "there"], system="Be brief.", stop_sequences=["##"])
        assert promise.known_beforehand["agent_alias"] == "ANTHROPIC_AGENT"
        assert [str(token) async for token in promise] == ["You ", "said: ", "hi\n\nthere"]
        message = await promise
    assert type(message) is AssistantMessage
    assert (message.role, message.model, message.content) == ("assistant", "claude-fake", "You said: hi\n\nthere")
    assert (message["stop_reason"], message["stop_sequence"], message["id"]) == ("end_turn", None, "msg_fake1")
    assert message["usage"] == Frozen(input_tokens=11, output_tokens=5)  # message_start's input, the delta's output
    body = server.requests[0].body
    assert server.requests[0].path == "/v1/messages"
    assert body["system"] == "Be brief."
    assert body["messages"] == [{"role": "user", "content": "hi\n\nthere"}]  # same roles merged
    assert (body["stream"], body["max_tokens"], body["stop_sequences"]) == (True, 100, ["##"])


async def test_tokens_reach_the_consumer_while_the_server_is_still_streaming(
    agent: MiniAgent, server: FakeAnthropicServer
) -> None:
    release = asyncio.Event()
    frames = anthropic_stream(["first ", "second"], ping=False)
    server.script(Reply(frames=frames, hold_at=3, release=release))  # start, block start, delta, [hold]
    async with MiniAgents():
        promise = await the_reply(agent, "go")
        tokens = aiter(promise)
        assert str(await anext(tokens)) == "first "
        release.set()
        assert [str(token) async for token in tokens] == ["second"]


async def test_without_streaming_the_whole_text_is_one_token(agent: MiniAgent, server: FakeAnthropicServer) -> None:
    async with MiniAgents(stream_llm_tokens_by_default=False):
        promise = await the_reply(agent, "hi")
        assert [str(token) async for token in promise] == ["You said: hi"]
        message = await promise
    assert (message["stop_reason"], message["usage"]["output_tokens"]) == ("end_turn", 5)
    assert server.requests[0].body["stream"] is False


async def test_the_sdk_environment_variables_configure_the_client(
    server: FakeAnthropicServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-env")
    monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
    async with MiniAgents():
        replies = await AnthropicAgent.trigger("hi", model="claude-fake", max_tokens=10)
    assert str(replies[0]) == "You said: hi"
    headers = server.requests[0].headers
    assert "sk-ant-env" in headers.get("x-api-key", "") + headers.get("authorization", "")  # SDKs differ


async def test_max_tokens_is_required(agent: MiniAgent, client: AsyncAnthropic, server: FakeAnthropicServer) -> None:
    no_max = AnthropicAgent.fork(non_freezable_kwargs={"async_client": client})
    async with MiniAgents(errors_as_messages=True):
        replies = await no_max.trigger("hi", model="claude-fake")
    assert "needs max_tokens" in str(replies[0])
    assert server.requests == []


async def test_a_429_is_retried_and_then_succeeds(agent: MiniAgent, server: FakeAnthropicServer) -> None:
    server.script(Reply(status=429, body=anthropic_error("Slow down", type_="rate_limit_error"), headers=FAST_RETRY))
    async with MiniAgents():
        replies = await agent.trigger("hi")
    assert (str(replies[0]), replies[0]["stop_reason"]) == ("You said: hi", "end_turn")
    assert len(server.requests) == 2


async def test_a_500_that_outlasts_the_retries_fails_the_reply(agent: MiniAgent, server: FakeAnthropicServer) -> None:
    failure = Reply(status=500, body=anthropic_error("Internal error"), headers=FAST_RETRY)
    server.script(failure, failure)
    async with MiniAgents():
        promise = await the_reply(agent, "hi", max_retries=1)
        assert await tokens_and_outcome(promise) == ([], "InternalServerError")
    assert len(server.requests) == 2


async def test_an_error_event_mid_stream_ends_the_message_with_the_error(
    agent: MiniAgent, server: FakeAnthropicServer
) -> None:
    frames = anthropic_stream(["Hel", "lo"], ping=False)
    server.script(Reply(frames=[*frames[:3], anthropic_error_frame()]))  # after the first text delta
    async with MiniAgents(errors_as_messages=True):
        replies = await agent.trigger("hi")
    assert type(replies[0]) is ErrorMessage
    # The SDK raises an APIStatusError carrying the event's body (the HTTP status was 200).
    assert str(replies[0]).startswith("Hel\nAPIStatusError: ")
    assert "overloaded_error" in str(replies[0])
    assert len(server.requests) == 1


async def test_a_connection_dropped_mid_stream_ends_the_message_with_the_error(
    agent: MiniAgent, server: FakeAnthropicServer
) -> None:
    server.script(Reply(frames=anthropic_stream(["Hel", "lo ", "world"], ping=False), drop_after=4))
    async with MiniAgents():
        promise = await the_reply(agent, "hi")
        tokens, outcome = await tokens_and_outcome(promise)
    assert tokens == ["Hel", "lo "]
    assert outcome == "APIConnectionError"  # wrapped like OpenAI's (the SDK leaves it an httpx2 error)
    assert len(server.requests) == 1


async def test_a_stream_that_ends_without_message_stop_is_incomplete(
    agent: MiniAgent, server: FakeAnthropicServer
) -> None:
    server.script(Reply(frames=anthropic_stream(["Hel", "lo"], ping=False)[:-1]))  # message_delta, no stop
    async with MiniAgents():
        promise = await the_reply(agent, "hi")
        assert await tokens_and_outcome(promise) == (["Hel", "lo"], "IncompleteLLMResponseError")
        with pytest.raises(IncompleteLLMResponseError, match="message_stop"):
            await promise


async def test_a_malformed_event_ends_the_message_with_the_error(agent: MiniAgent, server: FakeAnthropicServer) -> None:
    frames = anthropic_stream(["Hel", "lo"], ping=False)
    server.script(Reply(frames=[*frames[:3], MALFORMED_ANTHROPIC_FRAME, *frames[3:]]))
    async with MiniAgents():
        promise = await the_reply(agent, "hi")
        assert await tokens_and_outcome(promise) == (["Hel"], "JSONDecodeError")


async def test_a_stream_that_stalls_midway_times_out_after_its_tokens(
    agent: MiniAgent, server: FakeAnthropicServer
) -> None:
    never = asyncio.Event()
    server.script(Reply(frames=anthropic_stream(["one ", "two"], ping=False), hold_at=3, release=never))
    async with MiniAgents():
        promise = await the_reply(agent, "hi", timeout=0.3, max_retries=0)
        tokens, outcome = await tokens_and_outcome(promise)
    assert tokens == ["one "]
    assert outcome == "APITimeoutError"


async def test_tool_use_streams_its_input_json_and_lands_on_the_reply(
    agent: MiniAgent, server: FakeAnthropicServer
) -> None:
    tool_uses = [("toolu_1", "get_weather", ['{"city"', ': "Paris"}'])]
    server.script(Reply(frames=anthropic_stream(["Let me check."], tool_uses=tool_uses, stop_reason="tool_use")))
    tools = [{"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}]
    async with MiniAgents():
        promise = await the_reply(agent, "weather?", tools=tools)
        tokens = [token async for token in promise]
        message = await promise
    fragments = [(t.index, t.id, t.name, t.arguments_delta) for t in tokens if isinstance(t, ToolCallToken)]
    assert fragments == [
        (1, "toolu_1", "get_weather", ""),
        (1, "toolu_1", "get_weather", ""),
        (1, "toolu_1", "get_weather", '{"city"'),
        (1, "toolu_1", "get_weather", ': "Paris"}'),
    ]
    assert (message["content"], message["stop_reason"]) == ("Let me check.", "tool_use")
    assert message["tool_calls"] == (Frozen(id="toolu_1", name="get_weather", arguments='{"city": "Paris"}'),)
    assert server.requests[0].body["tools"] == tools


async def test_non_streamed_tool_use_lands_on_the_reply(agent: MiniAgent, server: FakeAnthropicServer) -> None:
    body = anthropic_message("On it.", stop_reason="tool_use")
    body["content"].append({"type": "tool_use", "id": "toolu_2", "name": "f", "input": {"a": [1, 2]}})
    server.script(Reply(body=body))
    async with MiniAgents():
        replies = await agent.trigger("go", stream=False)
    assert replies[0]["content"] == "On it."
    assert replies[0]["tool_calls"] == (Frozen(id="toolu_2", name="f", arguments='{"a": [1, 2]}'),)


async def test_tool_use_and_results_go_back_to_the_model_as_content_blocks() -> None:
    call = {"id": "toolu_1", "name": "get_weather", "arguments": '{"city": "Paris"}'}
    history = [
        UserMessage("weather?"),
        AssistantMessage("Let me check.", tool_calls=[call]),
        ToolResultMessage("sunny", tool_call_id="toolu_1"),
        UserMessage("thanks"),
    ]
    async with MiniAgents():
        dicts = await aprepare_dicts_for_anthropic(history)
    assert dicts == [
        {"role": "user", "content": "weather?"},
        {
            "role": "assistant",
            "content": [
                {"type": "text", "text": "Let me check."},
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
            ],
        },
        {
            "role": "user",  # the tool result and the next user text form one user turn
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"},
                {"type": "text", "text": "thanks"},
            ],
        },
    ]


async def test_the_prompt_is_prepared_as_the_api_wants_it() -> None:
    messages = [SystemMessage("s1"), AssistantMessage("a1"), AssistantMessage("a2"), "u", SystemMessage("s2")]
    async with MiniAgents():
        dicts = await aprepare_dicts_for_anthropic(messages, system="SYS")
        assert await aprepare_dicts_for_anthropic([]) == [{"role": "user", "content": "/start"}]
    assert dicts == [
        {"role": "system", "content": "SYS\n\ns1\n\ns2"},  # the agent's prompt first, then the input's
        {"role": "user", "content": "/start"},  # the API wants a user turn first
        {"role": "assistant", "content": "a1\n\na2"},
        {"role": "user", "content": "u"},
    ]
