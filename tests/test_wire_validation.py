"""Malformed entries read from Redis: a clear error, a dead letter, and never a hang.

Entries are injected with a raw ``XADD`` into message and sequence streams, as a buggy or hostile
writer would. Every read is bounded (``idle_timeout_s`` and ``asyncio.wait_for``).
"""

from __future__ import annotations

import ast
import asyncio
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from redis.asyncio import Redis

from brokeragents import (
    Message,
    MessageTokenAppender,
    MessageTooLargeError,
    MiniAgents,
    RemoteError,
    StrictMessage,
    TextMessage,
    UnknownMessageClassError,
    WireFormatError,
    aopen_message_promise,
    aopen_sequence_promise,
)
from brokeragents.keys import Keys
from helpers import Backend

KEYS = Keys()
READ_TIMEOUT_S = 10.0
LIMIT = 2_000  # max_message_bytes of the reading context
PACKAGE = Path(__file__).resolve().parent.parent / "brokeragents"

GOOD = TextMessage("good")
MISSING_HASH = "0" * 40
START: dict[str, str | bytes] = {"kind": "start", "class": "TextMessage", "known_beforehand": '{"class_":"Frozen"}'}


def message_entry(data: Any, hash_key: str = MISSING_HASH) -> dict[str, str | bytes]:
    return {"kind": "message", "hash_key": hash_key, "message": json.dumps(data)}


@dataclass
class Case:
    """Entries to inject, and the error they must produce."""

    entries: list[dict[str, str | bytes]]
    match: str
    error: type[WireFormatError] = WireFormatError
    tokens_before: list[str] = field(default_factory=list)


MESSAGE_CASES: dict[str, Case] = {
    "missing kind": Case([{"class": "TextMessage"}], r"no 'kind' field"),
    "wrong first kind": Case(
        [{"kind": "tokens", "i": "0", "tokens": "[]"}], r"cannot start with an entry of kind 'tokens'"
    ),
    "unknown kind": Case([START, {"kind": "bogus"}], r"Unexpected entry kind 'bogus' in a message stream"),
    "start without class": Case([{"kind": "start", "known_beforehand": "{}"}], r"no 'class' field"),
    "start without known": Case([{"kind": "start", "class": "TextMessage"}], r"no 'known_beforehand' field"),
    "known not json": Case(
        [{"kind": "start", "class": "TextMessage", "known_beforehand": "{nope"}],
        r"known_beforehand is not valid JSON",
    ),
    "known not an object": Case(
        [{"kind": "start", "class": "TextMessage", "known_beforehand": "[1]"}], r"must be a JSON object"
    ),
    "tokens not json": Case([START, {"kind": "tokens", "i": "0", "tokens": "[1,"}], r"token batch is not valid JSON"),
    "tokens not an array": Case([START, {"kind": "tokens", "i": "0", "tokens": '{"a":1}'}], r"must be a JSON array"),
    "token of wrong type": Case(
        [START, {"kind": "tokens", "i": "0", "tokens": '["ok", 42]'}], r"must be a string or an object"
    ),
    "tokens without position": Case([START, {"kind": "tokens", "tokens": '["a"]'}], r"no 'i' field"),
    "position not a number": Case([START, {"kind": "tokens", "i": "-1", "tokens": '["a"]'}], r"not a number"),
    "token position gap": Case(
        [START, {"kind": "tokens", "i": "0", "tokens": '["a"]'}, {"kind": "tokens", "i": "5", "tokens": '["b"]'}],
        r"Tokens 1\.\.4 are missing",
        tokens_before=["a"],
    ),
    "kind not utf-8": Case([{"kind": b"\xff\xfe"}], r"'kind' field is not UTF-8"),
    "tokens not utf-8": Case(
        [START, {"kind": "tokens", "i": "0", "tokens": b'["\xc3\x28"]'}], r"'tokens' field is not UTF-8"
    ),
    "tokens over the limit": Case(
        [START, {"kind": "tokens", "i": "0", "tokens": json.dumps(["x" * LIMIT])}],
        rf"'tokens' field is {LIMIT + 4} bytes, over the limit of {LIMIT}",
    ),
    "message over the limit": Case(
        [message_entry({"class_": "TextMessage", "content": "x" * LIMIT})], r"'message' field is \d+ bytes, over"
    ),
    "message not json": Case(
        [{"kind": "message", "hash_key": MISSING_HASH, "message": "{'single': 'quotes'}"}],
        r"message is not valid JSON",
    ),
    "message without hash key": Case(
        [{"kind": "message", "message": json.dumps({"class_": "TextMessage"})}], r"no 'hash_key' field"
    ),
    "message without class": Case([message_entry({"content": "x"})], r"no 'class_' name"),
    "unknown start class": Case(
        [{"kind": "start", "class": "NoSuchClass", "known_beforehand": "{}"}],
        r"unknown message class 'NoSuchClass'",
        error=UnknownMessageClassError,
    ),
    "unknown message class": Case(
        [message_entry({"class_": "NoSuchClass"})], r"unknown message class 'NoSuchClass'", UnknownMessageClassError
    ),
    "unknown token class": Case(
        [START, {"kind": "tokens", "i": "0", "tokens": '[{"class_":"NoSuchToken"}]'}],
        r"unknown message class 'NoSuchToken'",
        UnknownMessageClassError,
    ),
    "start class not a message": Case(
        [{"kind": "start", "class": "Frozen", "known_beforehand": "{}"}],
        r"'Frozen' is not a Message class",
        UnknownMessageClassError,
    ),
    "frozen where a message is expected": Case(
        [message_entry({"class_": "Frozen", "a": 1})], r"'Frozen' is not a Message class", UnknownMessageClassError
    ),
    "agent where a message is expected": Case(
        [message_entry({"class_": "MiniAgent", "alias": "X"})],
        r"'MiniAgent' is not a Message class",
        UnknownMessageClassError,
    ),
    "frozen where a token is expected": Case(
        [START, {"kind": "tokens", "i": "0", "tokens": '[{"class_":"Frozen"}]'}],
        r"'Frozen' is not a Token class",
        UnknownMessageClassError,
    ),
    "missing sub-message": Case(
        [message_entry({"class_": "Message", "sub__hash_key": MISSING_HASH})], rf"{MISSING_HASH} is not in Redis"
    ),
    "sub-message ref not a hash": Case(
        [message_entry({"class_": "Message", "subs__hash_keys": ["../../etc"]})], r"'\.\./\.\./etc' is not a hash key"
    ),
    "hash mismatch": Case([message_entry({"class_": "TextMessage", "content": "x"})], r"not to the recorded 0000"),
    "invalid field value": Case(
        [message_entry({"class_": "TextMessage", "content": {"class_": "Frozen"}})], r"Invalid TextMessage on the wire"
    ),
    "message too deep": Case(
        [{"kind": "message", "hash_key": MISSING_HASH, "message": '{"class_":"M","a":' + "[" * 99 + "]" * 99 + "}"}],
        r"nested deeper than 64 levels",
    ),
}


def sequence_ref(i: int, key: str) -> dict[str, str | bytes]:
    return {"kind": "message", "i": str(i), "key": key}


SEQUENCE_CASES: dict[str, Case] = {
    "missing position": Case([{"kind": "end"}], r"no 'i' field"),
    "position not a number": Case([{"kind": "end", "i": "one"}], r"position 'one' is not a number"),
    "position gap": Case([{"kind": "end", "i": "2"}], r"Sequence entries 0\.\.1 are missing"),
    "missing kind": Case([{"i": "0"}], r"no 'kind' field"),
    "wrong kind": Case([{"kind": "tokens", "i": "0", "tokens": "[]"}], r"Unexpected entry kind 'tokens' in a sequence"),
    "reference without key": Case([{"kind": "message", "i": "0"}], r"no 'key' field"),
    "reference to a foreign key": Case([sequence_ref(0, "other:thing")], r"'other:thing', which is not a message key"),
    "reference to a sequence": Case([sequence_ref(0, KEYS.sequence("x"))], r"which is not a message key"),
    "key not utf-8": Case([{"kind": "message", "i": "0", "key": b"ba:msg:{\xff}"}], r"'key' field is not UTF-8"),
    "key too long": Case([sequence_ref(0, KEYS.message("k" * 200) + "x" * 400)], r"'key' field is \d+ bytes"),
    "error without type": Case([{"kind": "error", "i": "0", "error_message": "x"}], r"no 'error_type' field"),
    "attempt not a number": Case([{"kind": "end", "i": "0", "a": "x"}], r"attempt number 'x' is not a number"),
}


def reader(client: Redis) -> MiniAgents:
    return MiniAgents(redis=client, remote_calls="never", max_message_bytes=LIMIT)


async def inject(client: Redis, key: str, entries: list[dict[str, str | bytes]]) -> None:
    for entry in entries:
        await client.xadd(key, entry)  # type: ignore[arg-type]


async def raw_entries(client: Redis, key: str) -> list[dict[bytes, bytes]]:
    """The fields of every entry of a stream, as the bytes redis-py returns."""
    entries: Any = await client.xrange(key)
    return [fields for _id, fields in entries]


async def dead_letters(client: Redis) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        for fields in await raw_entries(client, KEYS.dead_letters())
    ]


async def read_message(key: str) -> tuple[list[str], BaseException | None]:
    tokens: list[str] = []
    try:
        promise = await aopen_message_promise(key, idle_timeout_s=READ_TIMEOUT_S, block_ms=200)
        async for token in promise:
            tokens.append(str(token))
        await promise
    except Exception as exc:
        return tokens, exc
    return tokens, None


async def read_sequence(key: str) -> list[Any]:
    """Each item: the message text, or the exception at its position (message errors included)."""
    sequence = await aopen_sequence_promise(key, idle_timeout_s=READ_TIMEOUT_S, block_ms=200)
    items: list[Any] = []
    iterator: AsyncIterator[Any] = sequence.__aiter__()
    while True:
        try:
            promise = await iterator.__anext__()
        except StopAsyncIteration:
            return items
        except Exception as exc:
            items.append(exc)
            continue
        try:
            items.append(str(await promise))
        except Exception as exc:
            items.append(exc)


def assert_recorded(letters: list[dict[str, str]], key: str, match: str) -> None:
    mine = [letter for letter in letters if letter.get("key") == key]
    assert len(mine) == 1, letters
    assert re.search(match, mine[0]["reason"]), mine[0]
    assert mine[0]["entry_id"] and int(mine[0]["at_ms"]) > 0


@pytest.mark.parametrize("case_id", sorted(MESSAGE_CASES))
async def test_malformed_message_stream(redis_backend: Backend, case_id: str) -> None:
    case = MESSAGE_CASES[case_id]
    client = redis_backend.client()
    key = KEYS.message("bad" + re.sub(r"\W", "", case_id))
    await inject(client, key, case.entries)

    async with reader(redis_backend.client()):
        tokens, error = await asyncio.wait_for(read_message(key), READ_TIMEOUT_S)

    assert isinstance(error, case.error), error
    assert re.search(case.match, str(error)), str(error)
    assert key in str(error)  # the error names the stream (and the entry)
    assert tokens == case.tokens_before
    assert_recorded(await dead_letters(client), key, case.match)


@pytest.mark.parametrize("case_id", sorted(SEQUENCE_CASES))
async def test_malformed_sequence_stream_ends_it(redis_backend: Backend, case_id: str) -> None:
    case = SEQUENCE_CASES[case_id]
    client = redis_backend.client()
    key = KEYS.sequence("bad" + re.sub(r"\W", "", case_id))
    good = KEYS.message(GOOD.hash_key)
    await inject(client, good, [message_entry(GOOD.serialize(), GOOD.hash_key)])
    # One good item, the bad entry (at position 1, as far as positions go), then more that are ignored.
    bad = [dict(entry) for entry in case.entries]
    for entry in bad:
        if entry.get("i") == "0":
            entry["i"] = "1"
        elif entry.get("i") == "2":
            entry["i"] = "3"
    await inject(client, key, [sequence_ref(0, good), *bad, sequence_ref(2, good), {"kind": "end", "i": "3"}])

    async with reader(redis_backend.client()):
        items = await asyncio.wait_for(read_sequence(key), READ_TIMEOUT_S)

    assert items[0] == "good"
    assert len(items) == 2, items  # nothing after a corrupt entry is trusted
    error = items[1]
    assert isinstance(error, WireFormatError), error
    expected = case.match.replace(r"0\.\.1", r"1\.\.2")
    assert re.search(expected, str(error)), str(error)
    assert key in str(error)
    assert_recorded(await dead_letters(client), key, expected)


async def test_reference_to_a_missing_message_is_an_error_at_its_position_only(redis_backend: Backend) -> None:
    client = redis_backend.client()
    key = KEYS.sequence("dangling")
    good = KEYS.message(GOOD.hash_key)
    missing = KEYS.message("never-written")
    corrupt = KEYS.message("corrupt")
    await inject(client, good, [message_entry(GOOD.serialize(), GOOD.hash_key)])
    await inject(client, corrupt, [{"kind": "bogus"}])
    await inject(
        client,
        key,
        [sequence_ref(0, missing), sequence_ref(1, corrupt), sequence_ref(2, good), {"kind": "end", "i": "3"}],
    )

    async with reader(redis_backend.client()):
        items = await asyncio.wait_for(read_sequence(key), READ_TIMEOUT_S)

    assert len(items) == 3
    assert isinstance(items[0], WireFormatError) and "does not exist" in str(items[0])
    assert isinstance(items[1], WireFormatError) and "cannot start with an entry of kind 'bogus'" in str(items[1])
    assert items[2] == "good"  # the sequence itself is sound: it goes on
    letters = await dead_letters(client)
    assert_recorded(letters, missing, "does not exist")
    assert_recorded(letters, corrupt, "bogus")
    assert [letter for letter in letters if letter["key"] == key] == []


async def test_a_key_that_is_not_a_stream(redis_backend: Backend) -> None:
    client = redis_backend.client()
    key = KEYS.message("a-string")
    await client.set(key, "not a stream")
    async with reader(redis_backend.client()):
        _tokens, error = await asyncio.wait_for(read_message(key), READ_TIMEOUT_S)
    assert isinstance(error, WireFormatError)
    assert "cannot be read as a stream" in str(error)
    assert_recorded(await dead_letters(client), key, "cannot be read as a stream")


async def test_a_remote_error_of_any_name_is_never_a_control_flow_exception(redis_backend: Backend) -> None:
    client = redis_backend.client()
    key = KEYS.sequence("hostile-errors")
    names = ["StopAsyncIteration", "StopIteration", "SystemExit", "KeyboardInterrupt", "GeneratorExit", "1 bad name"]
    entries: list[dict[str, str | bytes]] = [
        {"kind": "error", "i": str(n), "error_type": name, "error_message": f"from {name}"}
        for n, name in enumerate(names)
    ]
    entries.append({"kind": "end", "i": str(len(names))})
    await inject(client, key, entries)

    async with reader(redis_backend.client()):
        items = await asyncio.wait_for(read_sequence(key), READ_TIMEOUT_S)

    assert len(items) == len(names)  # none of them ended the sequence early
    assert all(isinstance(item, RemoteError) for item in items)
    assert [type(item).__name__ for item in items] == [*names[:-1], "RemoteError"]
    assert [str(item) for item in items] == [f"from {name}" for name in names]


async def test_a_writer_that_stops_midway_gives_a_bounded_wait(redis_backend: Backend) -> None:
    client = redis_backend.client()
    key = KEYS.message("stopped")
    await inject(client, key, [START, {"kind": "tokens", "i": "0", "tokens": '["half"]'}])
    async with reader(redis_backend.client()):
        promise = await aopen_message_promise(key, idle_timeout_s=0.3, block_ms=100)
        tokens: list[str] = []
        with pytest.raises(TimeoutError, match="No new entry"):
            async for token in promise:
                tokens.append(str(token))
    assert tokens == ["half"]


# --- limits on the writing side ---------------------------------------------------------------------


async def test_a_message_over_max_message_bytes_raises(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with MiniAgents(redis=client, max_message_bytes=200) as context:
        assert context.store is not None
        appender = MessageTokenAppender()
        with appender:
            promise = TextMessage.promise(message_token_streamer=appender)
            for _ in range(30):
                appender.append("0123456789")
        with pytest.raises(MessageTooLargeError, match="over the limit of 200 bytes"):
            await promise
        with pytest.raises(MessageTooLargeError, match="over the limit of 200"):
            TextMessage("x" * 300).as_promise  # noqa: B018 - creating the promise stores it
        await context.store.aflush()
        assert promise.redis_key is not None
        remote = await aopen_message_promise(promise.redis_key, idle_timeout_s=READ_TIMEOUT_S)
        with pytest.raises(MessageTooLargeError):  # our own error class survives the trip
            await remote
    assert await client.exists(KEYS.message(TextMessage("x" * 300).hash_key)) == 0


async def test_a_token_over_max_message_bytes_becomes_an_error_entry(redis_backend: Backend) -> None:
    client = redis_backend.client()
    async with MiniAgents(redis=client, max_message_bytes=200) as context:
        assert context.store is not None
        appender = MessageTokenAppender()
        with appender:
            promise = TextMessage.promise(message_token_streamer=appender)
            appender.append("small")
            appender.append("x" * 500)
            appender.append("ignored")
        with pytest.raises(MessageTooLargeError):
            await promise
        await context.store.aflush()
        assert promise.redis_key is not None
        entries = await raw_entries(client, promise.redis_key)
        assert [fields[b"kind"] for fields in entries] == [b"start", b"tokens", b"error"]
        assert entries[-1][b"error_type"] == b"MessageTooLargeError"
        tokens, error = await read_message(promise.redis_key)
    assert tokens == ["small"]
    assert isinstance(error, MessageTooLargeError)


class Typed(StrictMessage):
    count: int


async def test_values_that_cannot_be_frozen_name_the_field() -> None:
    with pytest.raises(ValidationError, match="`callback`"):
        Message(callback=object())
    with pytest.raises(ValidationError, match="count"):
        Typed(count="many")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="unexpected"):
        Typed(count=1, unexpected=2)  # type: ignore[call-arg]
    async with MiniAgents():
        with pytest.raises(ValidationError, match="`handle`"):
            TextMessage.promise(message_token_streamer=MessageTokenAppender().open(), handle=object())


# --- no code execution from the wire --------------------------------------------------------------------

_FORBIDDEN = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "eval", "exec"}


def forbidden_uses(source: str) -> list[str]:
    """``line: name`` for every import, name or attribute in code (not comments) that is forbidden."""
    found = []
    for node in ast.walk(ast.parse(source)):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name.split(".")[0] for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module:
            names = [node.module.split(".")[0], *(alias.name for alias in node.names)]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        found += [f"{getattr(node, 'lineno', '?')}: {name}" for name in names if name in _FORBIDDEN]
    return found


def test_no_pickle_eval_exec_or_marshal_in_the_package() -> None:
    offenders = [
        f"{path.name}:{use}"
        for path in sorted(PACKAGE.rglob("*.py"))
        for use in forbidden_uses(path.read_text(encoding="utf-8"))
    ]
    assert offenders == []


def test_the_source_scan_would_catch_them() -> None:
    sample = "# pickle in a comment is fine\nimport pickle\nfrom marshal import loads\neval('1')\nbuiltins.exec('x')\n"
    assert forbidden_uses(sample) == ["2: pickle", "3: marshal", "4: eval", "5: exec"]
