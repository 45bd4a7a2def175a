"""The LLM logger: a markdown file per request and response, written as the response streams."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path
from typing import Any

import pytest
from openai import AsyncOpenAI

from brokeragents import Frozen, InteractionContext, MiniAgents, miniagent
from brokeragents.ext.llms.fake import FakeLLMAgent
from brokeragents.ext.llms.logger import markdown_llm_logger_agent
from brokeragents.ext.llms.messages import SystemMessage, UserMessage
from brokeragents.ext.llms.openai import OpenAIAgent
from fake_llm_servers import FakeOpenAIServer, Reply, openai_stream
from helpers import wait_until

QUICK: dict[str, Any] = {"token_delay_s": 0.0}
EXPECTED_LOG = """\
FAKE_LLM_AGENT

```python
{'model': 'fake-llm', 'stream': True}
```

system
========================================
Be kind.

user
========================================
Hi!

assistant / fake-llm
========================================
Hello there.

----------------------------------------

```python
{'agent_alias': 'FAKE_LLM_AGENT',
 'finish_reason': 'stop',
 'model': 'fake-llm',
 'role': 'assistant',
 'usage': {'completion_tokens': 2, 'prompt_tokens': 3, 'total_tokens': 5}}
```

"""


def the_log(folder: Path) -> str:
    logs = list(folder.glob("*.md"))
    assert len(logs) == 1, logs
    return logs[0].read_text(encoding="utf-8")


async def test_llm_logger_agent_true_writes_one_markdown_file_per_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    async with MiniAgents(llm_logger_agent=True):
        await FakeLLMAgent.trigger([UserMessage("Hi!")], system="Be kind.", script="Hello there.", **QUICK)
    (log,) = (tmp_path / "llm_logs").glob("*.md")
    assert re.fullmatch(r"\d{8}_\d{6}__\d{6}__fake-llm__[0-9a-f]{3}\.md", log.name)
    assert log.read_text(encoding="utf-8") == EXPECTED_LOG


async def test_a_failed_response_is_logged_as_incomplete(tmp_path: Path) -> None:
    logger = markdown_llm_logger_agent.fork(log_folder=str(tmp_path))
    async with MiniAgents(errors_as_messages=True):
        await FakeLLMAgent.trigger("a b c", fail_after_tokens=3, llm_logger_agent=logger, **QUICK)
    log = the_log(tmp_path)
    assert (
        "========================================\nYou said: a\n\n----------------------------------------\n\n" in log
    )
    assert log.endswith("INCOMPLETE RESPONSE: FakeLLMError: The fake LLM failed after 3 tokens, as it was told to.\n")


async def test_the_response_is_written_as_it_streams(tmp_path: Path) -> None:
    release = asyncio.Event()
    async with FakeOpenAIServer() as server, AsyncOpenAI(api_key="sk-test", base_url=server.base_url) as client:
        server.script(Reply(frames=openai_stream(["first ", "second"]), hold_at=2, release=release))
        agent = OpenAIAgent.fork(non_freezable_kwargs={"async_client": client})
        logger = markdown_llm_logger_agent.fork(log_folder=str(tmp_path))
        async with MiniAgents():
            replies = agent.trigger("go", model="gpt-fake", llm_logger_agent=logger)
            await wait_until(lambda: bool(list(tmp_path.glob("*.md"))) and "first " in the_log(tmp_path))
            assert "second" not in the_log(tmp_path)
            release.set()
            await replies
    assert "assistant / gpt-fake\n========================================\nfirst second\n" in the_log(tmp_path)


async def test_any_agent_can_be_the_llm_logger(tmp_path: Path) -> None:
    received: list[Any] = []

    @miniagent
    async def recording_logger(ctx: InteractionContext, request_metadata: Frozen) -> None:
        received.append(([(m.get("role"), str(m)) for m in await ctx.message_promises], request_metadata))

    async with MiniAgents(llm_logger_agent=recording_logger):
        await FakeLLMAgent.trigger([SystemMessage("s"), "u"], system="first", script="ok", **QUICK)
    messages, metadata = received[0]
    assert messages == [("system", "first"), ("system", "s"), ("user", "u"), ("assistant", "ok")]
    assert metadata.as_kwargs() == {
        "agent_alias": "FAKE_LLM_AGENT",
        "model": "fake-llm",
        "stream": True,
    }
