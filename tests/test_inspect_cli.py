"""Issue 6, point 1: ``brokeragents inspect`` shows a message, a call or a sequence as stored."""

from __future__ import annotations

import asyncio
import io
import json
from collections.abc import Iterator
from typing import Any

import pytest

from brokeragents import MiniAgent, MiniAgents, TextMessage
from brokeragents._ops import EXIT_NOT_FOUND, EXIT_OK
from brokeragents.inspection import arun_inspect
from brokeragents.keys import Keys
from helpers import Backend, wait_until
from ops_support import GATES, arun_cli, aserving, broken, caller, gated, words
from worker_fixtures import Cluster

pytest_plugins = ("worker_fixtures",)


@pytest.fixture
def gate() -> Iterator[asyncio.Event]:
    GATES["main"] = event = asyncio.Event()
    yield event
    event.set()
    GATES.pop("main", None)


async def _inspect(backend: Backend, target: str, prefix: str = "ba") -> tuple[int, dict[str, Any], str]:
    out, err = io.StringIO(), io.StringIO()
    code = await arun_inspect(target, redis=backend.client(), key_prefix=prefix, out=out, err=err, as_json=True)
    return code, (json.loads(out.getvalue()) if out.getvalue() else {}), err.getvalue()


async def _text(backend: Backend, target: str) -> str:
    out, err = io.StringIO(), io.StringIO()
    code = await arun_inspect(target, redis=backend.client(), out=out, err=err)
    assert code == EXIT_OK, err.getvalue()
    return out.getvalue()


async def test_inspect_a_served_call_its_reply_and_its_messages(redis_backend: Backend) -> None:
    client = redis_backend.client()
    keys = Keys()
    async with aserving([words], client, name="w-inspect"), caller(client):
        call = MiniAgent(alias="WORDS").initiate_call()
        call.send_message("hello brave world")
        assert [str(m) for m in await call.reply_sequence()] == ["hello brave world "]
    call_id = call.call_id

    code, snapshot, _err = await _inspect(redis_backend, call_id)
    assert code == EXIT_OK
    assert (snapshot["type"], snapshot["agent"], snapshot["state"]) == ("call", "WORDS", "done")
    assert (snapshot["attempt"], snapshot["worker"], snapshot["parent_call"]) == ("1", "w-inspect", "")
    assert snapshot["input"]["state"] == "ended" and snapshot["reply"]["state"] == "ended"
    (sent,) = snapshot["input"]["items"]
    assert (sent["message"]["content"], sent["message"]["class"]) == ("hello brave world", "TextMessage")
    (replied,) = snapshot["reply"]["items"]
    message = replied["message"]
    assert (message["state"], message["tokens"], message["content"]) == ("complete", 3, "hello brave world ")
    assert message["message"]["content"] == "hello brave world "

    # The same call by its key, its reply by the sequence key, the message by its key and hash.
    assert (await _inspect(redis_backend, keys.call(call_id)))[1] == snapshot
    code, reply, _err = await _inspect(redis_backend, keys.call_reply(call_id))
    assert (code, reply["type"], reply["items"]) == (EXIT_OK, "sequence", snapshot["reply"]["items"])
    code, by_key, _err = await _inspect(redis_backend, replied["key"])
    assert (code, by_key) == (EXIT_OK, message)
    code, by_hash, _err = await _inspect(redis_backend, message["hash_key"])
    assert (by_hash["key"], by_hash["content"]) == (keys.message(message["hash_key"]), "hello brave world ")
    assert by_hash["tokens"] == 1  # stored whole under its hash: one token, the message's own

    text = await _text(redis_backend, call_id)
    assert text.splitlines()[0] == f"Call {call_id} ({keys.call(call_id)})"
    assert "  agent:       WORDS" in text and "  worker:      w-inspect" in text
    assert "Reply (ended, 1 item(s))" in text and "TextMessage complete, 3 token(s): 'hello brave world '" in text
    text = await _text(redis_backend, replied["key"])
    assert "  class:     TextMessage" in text and text.endswith("content:\nhello brave world \n")


async def test_inspect_a_message_still_streaming(redis_backend: Backend, gate: asyncio.Event) -> None:
    client = redis_backend.client()
    async with aserving([gated], client), caller(client):
        reply = MiniAgent(alias="GATED").trigger()
        promises = [promise async for promise in _first(reply)]
        key = promises[0].redis_key

        async def one_token_stored() -> bool:
            return (await _inspect(redis_backend, key))[1].get("tokens") == 1

        await wait_until(one_token_stored, what="the first token in Redis")
        _code, streaming, _err = await _inspect(redis_backend, key)
        assert (streaming["state"], streaming["content"], streaming["class"]) == ("streaming", "before ", "TextMessage")
        assert streaming["hash_key"] is None
        gate.set()
        await reply
    _code, done, _err = await _inspect(redis_backend, key)
    assert (done["state"], done["tokens"], done["content"]) == ("complete", 2, "before after")


async def _first(reply: Any) -> Any:
    async for promise in reply:
        yield promise
        return


async def test_inspect_shows_errors_in_a_reply(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with aserving([broken], client), caller(client):
        call = MiniAgent(alias="BROKEN").initiate_call()
        with pytest.raises(ValueError, match="broken on purpose"):
            await call.reply_sequence()
    _code, snapshot, _err = await _inspect(redis_backend, call.call_id)
    items = snapshot["reply"]["items"]
    assert items[0]["message"]["content"] == "partial"
    assert items[1]["error"] == {"type": "ValueError", "message": "broken on purpose"}
    assert "error ValueError: broken on purpose" in await _text(redis_backend, call.call_id)


async def test_inspect_of_nothing_fails_with_exit_code_1(redis_backend: Backend) -> None:
    for target in ("0" * 32, "a" * 40, "ba:msg:{nothing}", "ba:call:{nothing}", "other:msg:{x}", "x}{"):
        code, snapshot, err = await _inspect(redis_backend, target)
        assert (code, snapshot) == (EXIT_NOT_FOUND, {}), target
        assert "Nothing found" in err


@pytest.mark.real_redis
async def test_inspect_command(cluster: Cluster) -> None:
    await cluster.aworker("echo_app:echo")
    async with cluster.mini_agents():
        call = MiniAgent(alias="ECHO").initiate_call()
        call.send_message("ping")
        assert [str(m) for m in await call.reply_sequence()] == ["echo: ping"]
    args = ("inspect", call.call_id, "--redis-url", cluster.redis_url, "--key-prefix", cluster.prefix)
    code, out, err = await arun_cli(*args, "--json")
    assert code == 0, err
    snapshot = json.loads(out)
    assert (snapshot["agent"], snapshot["state"]) == ("ECHO", "done")
    assert [item["message"]["content"] for item in snapshot["reply"]["items"]] == ["echo: ping"]
    code, out, err = await arun_cli(*args)
    assert code == 0, err
    assert "agent:       ECHO" in out and "'echo: ping'" in out
    code, out, err = await arun_cli("inspect", "f" * 32, "--redis-url", cluster.redis_url)
    assert (code, out) == (1, "") and "Nothing found" in err


async def test_control_characters_from_redis_never_reach_the_terminal(redis_backend: Backend) -> None:
    async with MiniAgents(redis=redis_backend.client()) as mini_agents:
        assert mini_agents.store is not None
        key = mini_agents.store.store_message(TextMessage("clear \x1b[2J\x1b]0;title\x07 screen"))
    text = await _text(redis_backend, key)
    assert "\x1b" not in text and "\x07" not in text
    assert "clear \\x1b[2J\\x1b]0;title\\x07 screen" in text
