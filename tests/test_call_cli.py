"""Issue 4, point 3: ``brokeragents call ALIAS [MESSAGE ...]``.

Exit codes: 0 when the reply completed, 1 when the agent raised (the error on stderr), 2 when no
worker serves ALIAS within --timeout-s. Tokens reach stdout as they arrive; --json prints each
reply message as one JSON line (``serialize()`` plus ``hash_key``).
"""

from __future__ import annotations

import asyncio
import json

import pytest

from brokeragents import TextMessage
from worker_fixtures import Cluster

pytest_plugins = ("worker_fixtures",)
pytestmark = pytest.mark.real_redis


async def test_exit_0_prints_the_reply(cluster: Cluster) -> None:
    await cluster.aworker("echo_app:echo")
    code, out, err = await cluster.acall_cli("ECHO", "hello", "world")
    assert (code, out) == (0, "echo: hello\necho: world\n"), err


async def test_json_prints_one_line_per_message_with_its_hash_key(cluster: Cluster) -> None:
    await cluster.aworker("echo_app:echo")
    code, out, err = await cluster.acall_cli("ECHO", "hello", "world", "--json")
    assert code == 0, err
    lines = [json.loads(line) for line in out.splitlines()]
    expected = [TextMessage("echo: hello"), TextMessage("echo: world")]
    assert lines == [{**message.serialize(), "hash_key": message.hash_key} for message in expected]
    assert lines[0]["class_"] == "TextMessage" and lines[0]["content"] == "echo: hello"


async def test_reads_redis_url_from_the_environment(cluster: Cluster) -> None:
    await cluster.aworker("echo_app:upper")
    code, out, err = await cluster.acall_cli("UPPER", "quiet", env={"REDIS_URL": cluster.redis_url})
    assert (code, out) == (0, "QUIET\n"), err


async def test_exit_1_when_the_agent_raised(cluster: Cluster) -> None:
    await cluster.aworker("echo_app:failing")
    code, out, err = await cluster.acall_cli("FAILING")
    assert code == 1
    assert out.startswith("before error 0")  # what streamed before the error is printed
    assert "ValueError: the agent failed on purpose" in err
    code, out, err = await cluster.acall_cli("FAILING", "--json")
    assert code == 1
    assert "ValueError: the agent failed on purpose" in err


async def test_exit_2_when_no_worker_serves_the_agent(cluster: Cluster) -> None:
    code, out, err = await cluster.acall_cli("NOBODY_SERVES_THIS", "hi", "--timeout-s", "0.5")
    assert code == 2
    assert out == ""
    assert "no worker serves agent 'NOBODY_SERVES_THIS'" in err
    # Nothing was sent: a call nobody can serve is not left in an inbox.
    assert await cluster.redis.exists(cluster.keys.agent_inbox("NOBODY_SERVES_THIS")) == 0


async def test_waits_for_a_worker_that_starts_later(cluster: Cluster) -> None:
    process = await cluster.start_call_cli("ECHO", "late", "--timeout-s", "30")
    await cluster.aworker("echo_app:echo")
    stdout, stderr = await asyncio.wait_for(process.communicate(), 30)
    assert (process.returncode, stdout.decode()) == (0, "echo: late\n"), stderr.decode()


async def test_tokens_reach_stdout_as_they_arrive(cluster: Cluster) -> None:
    await cluster.aworker("control:streamer")
    process = await cluster.start_call_cli("STREAMER", "tokens=4 gate=cli_gate")
    assert process.stdout is not None
    received = b""
    while b"tok0 " not in received:
        chunk = await asyncio.wait_for(process.stdout.read(64), 20)
        assert chunk, "stdout closed before the first token"
        received += chunk
    # The first token is on stdout while the agent waits for the gate before the second one.
    assert process.returncode is None
    assert received == b"tok0 "
    await cluster.redis.rpush(cluster.key("cli_gate"), "go")
    rest, stderr = await asyncio.wait_for(process.communicate(), 20)
    assert process.returncode == 0, stderr.decode()
    assert (received + rest).decode() == "tok0 tok1 tok2 tok3 \n"
