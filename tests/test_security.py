"""Issue 8, point 5: what a hostile writer to Redis cannot do, and secrets kept out of the output.

See docs/security.md for the threat model. The source scan for pickle/marshal/shelve/eval/exec
is ``test_no_pickle_eval_exec_or_marshal_in_the_package`` in ``test_wire_validation.py``.

- Only registered classes are ever instantiated from the wire, and only of the kind the slot
  expects: an entry naming ``os.system``, ``subprocess.Popen`` or a registered ``Frozen`` that is
  not a message (or not a token) is rejected before anything is built, imported or called.
- Error entries are rebuilt as ``Exception`` subclasses only: a hostile ``error_type`` cannot
  raise ``SystemExit``, ``KeyboardInterrupt`` or a control-flow exception in the reader.
- A worker given a Redis password (in ``--redis-url`` or ``REDIS_URL``) and LLM API keys in its
  environment never writes them to its output or to Redis, through errors, a Redis restart,
  rejected entries and debug logging included.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest
from pydantic import model_validator
from redis.exceptions import RedisError

from brokeragents import (
    MiniAgent,
    MiniAgents,
    TextMessage,
    UnknownMessageClassError,
    WireFormatError,
    aopen_message_promise,
    aopen_sequence_promise,
    wire,
)
from brokeragents._embedded import EmbeddedServer
from brokeragents.frozen import Frozen
from brokeragents.keys import Keys
from brokeragents.messages import Message
from helpers import Backend, wait_until
from worker_fixtures import Cluster, acluster

KEYS = Keys()
READ_TIMEOUT_S = 10.0
BUILT: list[str] = []  # what SecurityProbe saw being built


class SecurityProbe(Frozen):
    """A registered Frozen that is neither a message nor a token; it records being instantiated."""

    @model_validator(mode="before")
    @classmethod
    def _record(cls, data: Any) -> Any:
        BUILT.append(cls.__name__)
        return data


@pytest.fixture
def tripwires(monkeypatch: pytest.MonkeyPatch) -> Callable[[], list[str]]:
    """A check: calls of os.system / subprocess entry points, and modules imported since the start."""
    called: list[str] = []

    def trip(name: str) -> Any:
        def tripped(*_args: Any, **_kwargs: Any) -> None:
            called.append(name)
            raise AssertionError(f"{name} was called")

        return tripped

    for target, name in [
        (os, "system"),
        (os, "popen"),
        (os, "execv"),
        (subprocess, "Popen"),
        (subprocess, "run"),
        (subprocess, "check_output"),
    ]:
        monkeypatch.setattr(target, name, trip(f"{target.__name__}.{name}"))
    BUILT.clear()
    modules_before = set(sys.modules)

    def tripped() -> list[str]:
        return called + [f"import {name}" for name in sorted(set(sys.modules) - modules_before)]

    return tripped


def message_entry(data: Any, hash_key: str = "0" * 40) -> dict[str, str]:
    return {"kind": "message", "hash_key": hash_key, "message": json.dumps(data)}


START = {"kind": "start", "class": "TextMessage", "known_beforehand": '{"class_":"Frozen"}'}
HOSTILE = ["os.system", "subprocess.Popen", "builtins.exec", "posix.system", "SecurityProbe", "MiniAgent", "Frozen"]


def hostile_streams(name: str) -> dict[str, list[dict[str, str]]]:
    """Message streams naming class ``name`` in every slot where a message or token is expected."""
    stored_probe = KEYS.message("1" * 40)
    return {
        "start class": [{"kind": "start", "class": name, "known_beforehand": '{"class_":"Frozen"}'}],
        "message": [message_entry({"class_": name, "args": ["id"]})],
        "streamed message": [START, {"kind": "tokens", "i": "0", "tokens": '["a"]'}, message_entry({"class_": name})],
        "token": [START, {"kind": "tokens", "i": "0", "tokens": json.dumps([{"class_": name, "cmd": "id"}])}],
        "sub-message": [message_entry({"class_": "Message", "sub__hash_key": "1" * 40})],
        # What the sub-message reference above leads to: an object of that class, stored by hash.
        stored_probe: [message_entry({"class_": name}, "1" * 40)],
    }


@pytest.mark.parametrize("name", HOSTILE)
async def test_only_registered_message_classes_are_instantiated_from_the_wire(
    redis_backend: Backend, name: str, tripwires: Callable[[], list[str]]
) -> None:
    client = redis_backend.client()
    streams = hostile_streams(name)
    for key, entries in streams.items():
        full_key = key if key.startswith("ba:") else KEYS.message(f"hostile-{key.replace(' ', '-')}")
        for entry in entries:
            await client.xadd(full_key, entry)  # type: ignore[arg-type]

    async with MiniAgents(redis=redis_backend.client(), remote_calls="never"):
        for key in streams:
            if key.startswith("ba:"):
                continue
            full_key = KEYS.message(f"hostile-{key.replace(' ', '-')}")
            with pytest.raises(WireFormatError) as caught:
                promise = await aopen_message_promise(full_key, idle_timeout_s=READ_TIMEOUT_S, block_ms=200)
                await asyncio.wait_for(promise, READ_TIMEOUT_S)
            assert isinstance(caught.value, UnknownMessageClassError), (key, caught.value)
            assert name in str(caught.value)

    assert BUILT == []  # rejected by name, before the class was called
    assert tripwires() == []
    letters: Any = await client.xrange(KEYS.dead_letters())
    assert len(letters) == len(streams) - 1  # each hostile stream recorded once


def test_a_registered_non_message_class_is_refused_before_it_is_built(tripwires: Callable[[], list[str]]) -> None:
    with pytest.raises(UnknownMessageClassError, match="not a Message class"):
        wire.build_frozen({"class_": "SecurityProbe"}, {}, base=Message)
    with pytest.raises(UnknownMessageClassError, match="not a Token class"):
        wire.decode_token({"class_": "SecurityProbe"})
    with pytest.raises(UnknownMessageClassError, match=r"unknown message class 'subprocess\.Popen'"):
        wire.build_frozen({"class_": "subprocess.Popen", "args": ["id"]}, {})
    assert BUILT == []
    # Where any Frozen is allowed (known_beforehand, nested values), a registered one is built:
    # that is the whole of what a writer can instantiate, pydantic-validated.
    assert isinstance(wire.build_frozen({"class_": "SecurityProbe"}, {}), SecurityProbe)
    assert BUILT == ["SecurityProbe"]
    assert tripwires() == []


@pytest.mark.parametrize(
    "type_name",
    ["SystemExit", "KeyboardInterrupt", "GeneratorExit", "BaseException", "BaseExceptionGroup",
     "StopIteration", "StopAsyncIteration", "CancelledError", "os.system", "__import__('os')", "Warning" * 40],
)  # fmt: skip
def test_error_entries_never_become_control_flow(type_name: str, tripwires: Callable[[], list[str]]) -> None:
    error = wire.rebuild_error(type_name, "from a hostile entry")
    assert isinstance(error, Exception)
    assert not isinstance(error, (SystemExit, KeyboardInterrupt, GeneratorExit, StopIteration, StopAsyncIteration))
    assert not isinstance(error, asyncio.CancelledError)
    assert tripwires() == []


async def test_a_hostile_error_type_in_a_sequence_is_only_an_error_piece(redis_backend: Backend) -> None:
    client = redis_backend.client()
    key = KEYS.sequence("hostile-errors")
    for index, type_name in enumerate(["SystemExit", "KeyboardInterrupt", "StopAsyncIteration"]):
        await client.xadd(key, {"kind": "error", "i": str(index), "error_type": type_name, "error_message": "x"})
    await client.xadd(key, {"kind": "end", "i": "3"})
    async with MiniAgents(redis=redis_backend.client(), remote_calls="never"):
        sequence = await aopen_sequence_promise(key, idle_timeout_s=READ_TIMEOUT_S, block_ms=200)
        errors: list[str] = []
        iterator = sequence.__aiter__()
        while True:
            try:
                await asyncio.wait_for(iterator.__anext__(), READ_TIMEOUT_S)
            except StopAsyncIteration:
                break
            except Exception as exc:  # SystemExit or KeyboardInterrupt would end the test here
                errors.append(type(exc).__name__)
    assert errors == ["SystemExit", "KeyboardInterrupt", "StopAsyncIteration"]


# --- secrets -------------------------------------------------------------------------------------------

PASSWORD = "S3cr3t/p@ss:w0rd-kept-hidden"
API_KEYS = {
    "OPENAI_API_KEY": "sk-test-openai-0123456789-NEVER-LOGGED",
    "ANTHROPIC_API_KEY": "sk-ant-test-9876543210-NEVER-LOGGED",
}
SECRETS = [PASSWORD, quote(PASSWORD, safe=""), quote(PASSWORD), *API_KEYS.values()]


class AclServer(EmbeddedServer):
    """The embedded server with an ACL user ``app`` that has a password."""

    def _command(self, binary: str, port: int, work_dir: str) -> list[str]:
        return [*super()._command(binary, port, work_dir), "--user", "app", "on", f">{PASSWORD}", "~*", "&*", "+@all"]


async def _aanswers(cluster: Cluster) -> bool:
    try:
        return bool(await cluster.redis.ping())
    except (RedisError, OSError):
        return False


def leaked(text: str) -> list[str]:
    return [secret for secret in SECRETS if secret in text]


async def redis_contents(cluster: Cluster) -> str:
    """Every value stored under the cluster's prefix, as text."""
    parts: list[str] = []
    async for raw_key in cluster.redis.scan_iter(match=f"{cluster.prefix}:*", count=1000):
        key = raw_key.decode()
        kind = (await cluster.redis.type(key)).decode()
        if kind == "stream":
            parts += [repr(fields) for _id, fields in await cluster.redis.xrange(key)]
        elif kind == "hash":
            parts.append(repr(await cluster.redis.hgetall(key)))
        elif kind == "zset":
            parts.append(repr(await cluster.redis.zrange(key, 0, -1)))
        parts.append(key)
    return "\n".join(parts)


@pytest.mark.real_redis
@pytest.mark.timeout(180)
async def test_secrets_never_reach_the_output_nor_redis(tmp_path: Path) -> None:
    server = AclServer()
    server.start()
    try:
        assert server.port is not None
        url = f"redis://app:{quote(PASSWORD, safe='')}@127.0.0.1:{server.port}/0"
        async with acluster(url, tmp_path) as cluster:
            await _aexercise(cluster, server, url)
    finally:
        server.stop()


async def _aexercise(cluster: Cluster, server: EmbeddedServer, url: str) -> None:
    targets = ("echo_app:echo", "echo_app:failing")
    by_option = await cluster.aworker(*targets, env=API_KEYS, extra_args=("-v",))  # debug logging
    by_env = await cluster.aworker(*targets, env=API_KEYS, url_from_env=True)
    cli_outputs: list[str] = []
    async with cluster.mini_agents(remote_calls="always"):
        # An agent that raises: its error and traceback are logged by the worker.
        with pytest.raises(ValueError, match="the agent failed on purpose"):
            await MiniAgent(alias="FAILING").trigger("x")
        code, out, err = await cluster.acall_cli("FAILING", "x", env={"REDIS_URL": url, **API_KEYS})
        assert code == 1 and "the agent failed on purpose" in err
        cli_outputs += [out, err]
        # A rejected entry: logged and dead-lettered.
        await cluster.redis.xadd(cluster.keys.agent_inbox("ECHO"), {"call_id": "x", "agent": "ECHO", "kwargs": "{"})
        await wait_until(lambda: cluster.redis.xlen(cluster.keys.dead_letters()), 20, "the dead letter")
        # Redis restarts under everyone: connection errors are logged, then the workers reconnect.
        server.restart()

        async def both_back() -> bool:
            text = by_option.output() + by_env.output()
            return text.count("Heartbeat failed") + text.count("Reading calls failed") >= 2

        await wait_until(both_back, 30, "the workers to notice the restart")
        assert await asyncio.wait_for(MiniAgent(alias="ECHO").trigger("after"), 60) == (TextMessage("echo: after"),)
        code, out, err = await cluster.acall_cli("NOBODY", "--timeout-s", "0.5", env={"REDIS_URL": url, **API_KEYS})
        assert code == 2
        cli_outputs += [out, err]
        await wait_until(lambda: _aanswers(cluster), 10, "the test's own client to reconnect")
        stored = await redis_contents(cluster)
    await cluster.astop_all()

    for proc in (by_option, by_env):
        output = proc.output()
        assert "Connecting to redis://app:***@127.0.0.1" in output  # the logs are really there
        assert "the agent failed on purpose" in output
        assert leaked(output) == [], f"{proc.label} leaked a secret:\n{output}"
    for text in cli_outputs:
        assert leaked(text) == [], text
    assert leaked(stored) == []
