"""Issue 6, point 1: ``brokeragents tail`` follows new calls and their reply tokens, live."""

from __future__ import annotations

import asyncio
import io
from typing import Any

import pytest

from brokeragents import MiniAgent
from brokeragents._tail_text import TextRenderer
from brokeragents.tailing import arun_tail
from helpers import Backend, wait_until
from ops_support import aserving, astart_cli, broken, caller, cli_env, json_lines, words
from worker_fixtures import Cluster

pytest_plugins = ("worker_fixtures",)


async def _atail(backend: Backend, *, as_json: bool, **limits: Any) -> tuple[asyncio.Task[int], io.StringIO]:
    """Start a tail in this process; return once it reads (only calls started after this)."""
    out, err = io.StringIO(), io.StringIO()
    task = asyncio.create_task(
        arun_tail(redis=backend.client(), out=out, err=err, as_json=as_json, timeout_s=30, **limits)
    )
    await wait_until(lambda: "Tailing calls" in err.getvalue() or task.done(), what="the tail to start")
    return task, out


async def test_tail_prints_new_calls_and_their_tokens_as_json(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with aserving([words, broken], client), caller(client):
        await MiniAgent(alias="WORDS").trigger("before the tail")  # not shown: it started earlier
        task, out = await _atail(redis_backend, as_json=True, max_calls=2)
        call = MiniAgent(alias="WORDS").initiate_call()
        call.send_message("one two three")
        await call.reply_sequence()
        failing = MiniAgent(alias="BROKEN").initiate_call()
        with pytest.raises(ValueError):
            await failing.reply_sequence()
        assert await task == 0
    events = json_lines(out.getvalue())
    mine = [event for event in events if event["call_id"] == call.call_id]
    assert [event["event"] for event in mine] == [
        "call", "message_start", "token", "token", "token", "message", "reply_end"
    ]  # fmt: skip
    assert (mine[0]["agent"], mine[0]["parent_call"]) == ("WORDS", "")
    assert [event["token"] for event in mine if event["event"] == "token"] == ["one ", "two ", "three "]
    assert (mine[5]["content"], mine[5]["class"]) == ("one two three ", "TextMessage")
    assert (mine[6]["messages"], mine[6]["errors"]) == (1, 0)
    others = [event for event in events if event["call_id"] == failing.call_id]
    assert [event["event"] for event in others][-2:] == ["error", "reply_end"]
    assert (others[-2]["error_type"], others[-2]["error_message"], others[-2]["scope"]) == (
        "ValueError", "broken on purpose", "reply")  # fmt: skip
    assert {event["call_id"] for event in events} == {call.call_id, failing.call_id}


async def test_tail_as_text(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with aserving([words], client), caller(client):
        task, out = await _atail(redis_backend, as_json=False, max_calls=1)
        call = MiniAgent(alias="WORDS").initiate_call()
        call.send_message(["first message", "second"])
        await call.reply_sequence()
        assert await task == 0
    short = call.call_id[:8]
    lines = out.getvalue().splitlines()
    assert lines[0].endswith(f" call {call.call_id} to WORDS")
    assert lines[1:] == [
        f"[WORDS {short} #0] first message ",
        f"[WORDS {short} #1] second ",
        f"[WORDS {short}] reply done: 2 message(s), 0 error(s)",
    ]


async def test_tail_stops_after_its_timeout(redis_backend: Backend) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert await arun_tail(redis=redis_backend.client(), out=out, err=err, timeout_s=0.2) == 0
    assert out.getvalue() == ""


def test_text_keeps_each_message_on_one_line_while_calls_interleave() -> None:
    out = io.StringIO()
    text = TextRenderer(out)

    def token(call: str, value: str) -> None:
        text.handle({"event": "token", "call_id": call, "agent": "A", "index": 0, "token": value})

    def done(call: str, content: str) -> None:
        text.handle({"event": "message", "call_id": call, "agent": "A", "index": 0, "content": content})
        text.handle({"event": "reply_end", "call_id": call, "agent": "A", "messages": 1, "errors": 0})

    token("c1", "Hel")
    token("c2", "Wor")
    token("c1", "lo")
    token("c2", "ld")
    done("c2", "World")  # finished while c1 still streams: held, with its "reply done"
    token("c1", "!")
    done("c1", "Hello!")
    assert out.getvalue().splitlines() == [
        "[A c1 #0] Hello!",
        "[A c2 #0] World",  # written as soon as the live message ended
        "[A c2] reply done: 1 message(s), 0 error(s)",
        "[A c1] reply done: 1 message(s), 0 error(s)",
    ]


def test_text_escapes_control_characters() -> None:
    out = io.StringIO()
    text = TextRenderer(out)
    text.handle({"event": "token", "call_id": "c1", "agent": "A\x1b", "index": 0, "token": "\x1b[2Jgone\r"})
    text.close()
    assert out.getvalue() == "[A\\x1b c1 #0] \\x1b[2Jgone\\x0d\n"


@pytest.mark.real_redis
async def test_tail_command_follows_a_chain_of_calls_over_three_workers(cluster: Cluster) -> None:
    base = ("tail", "--redis-url", cluster.redis_url, "--key-prefix", cluster.prefix, "--max-calls", "3")
    live = await astart_cli(*base, "--json", "--timeout-s", "60", env=cli_env())  # starts while workers do
    try:
        for target in ("chain:chain_a", "chain:chain_b", "chain:chain_c"):
            cluster.start_worker(target)
        for proc in cluster.procs:
            await cluster.await_ready(proc)  # type: ignore[arg-type]
        assert live.stderr is not None
        ready = await asyncio.wait_for(live.stderr.readline(), 30)
        assert ready.decode().startswith(f"Tailing calls under the key prefix {cluster.prefix!r}")
        async with cluster.mini_agents():
            assert len(await MiniAgent(alias="CHAIN_A").trigger("hi")) == 3
        stdout, stderr = await asyncio.wait_for(live.communicate(), 60)
    finally:
        if live.returncode is None:
            live.kill()
            await live.wait()
    assert live.returncode == 0, stderr
    events = json_lines(stdout.decode())
    calls = [event for event in events if event["event"] == "call"]
    assert [call["agent"] for call in calls] == ["CHAIN_A", "CHAIN_B", "CHAIN_C"]
    assert calls[1]["parent_call"] == calls[0]["call_id"] and calls[2]["parent_call"] == calls[1]["call_id"]
    ends = {event["agent"]: event for event in events if event["event"] == "reply_end"}
    assert set(ends) == {"CHAIN_A", "CHAIN_B", "CHAIN_C"}
    contents = [event["content"] for event in events if event["event"] == "message" and event["agent"] == "CHAIN_C"]
    assert len(contents) == 1 and contents[0].startswith("C(hi) pid=")

    # Replayed from the calls log, as text.
    out, err = io.StringIO(), io.StringIO()
    code = await arun_tail(
        redis_url=cluster.redis_url, key_prefix=cluster.prefix, out=out, err=err, from_start=True, max_calls=3,
        timeout_s=30,
    )  # fmt: skip
    assert code == 0, err.getvalue()
    text = out.getvalue()
    assert f"call {calls[0]['call_id']} to CHAIN_A" in text
    assert f"to CHAIN_B (called by {calls[0]['call_id'][:8]})" in text
    assert f"[CHAIN_C {calls[2]['call_id'][:8]} #0] C(hi) pid=" in text
