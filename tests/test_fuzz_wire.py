"""Issue 8, point 3: fuzzing the wire with malformed entries of every kind.

A seeded generator (``FUZZ_SEED``) mutates valid entries into invalid ones: a missing field, a
wrong kind, a value of the wrong type, a huge value, invalid or too deep JSON, an unknown or
forbidden class name (``os.system``, ``subprocess.Popen``, a registered ``Frozen`` that is not a
message), binary garbage, a position gap, a wrong hash, a reference to a missing key. Then:

- **readers** (``aopen_message_promise``, ``aopen_sequence_promise``, on fakeredis and on a real
  server) raise a ``WireFormatError`` naming the stream and the entry, record exactly that entry
  in the dead-letter stream, and go on reading other streams; a bad reference in a sequence is
  an error at its position only;
- **a worker process** moves each garbage inbox entry to ``ba:dead`` with its reason,
  acknowledges it, keeps running, and serves the valid call sent after the garbage; garbage in
  a call's input stream becomes an error in that call's reply, and is recorded too.

``tests/test_wire_validation.py`` pins one case of each kind with its exact message; this module
throws many random ones at the same code.
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import string
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import pytest

from brokeragents import (
    MiniAgent,
    MiniAgents,
    TextMessage,
    WireFormatError,
    aopen_message_promise,
    aopen_sequence_promise,
)
from brokeragents.keys import Keys
from brokeragents.nodes import CallKwargs
from helpers import Backend, wait_until
from worker_fixtures import Cluster

pytest_plugins = ("worker_fixtures",)

SEED = int(os.environ.get("FUZZ_SEED", "1208"))
MESSAGE_CASES = 80
SEQUENCE_CASES = 60
INBOX_CASES = 48
LIMIT = 2_000  # max_message_bytes of the reading context
READ_TIMEOUT_S = 10.0
KEYS = Keys()
T = TypeVar("T")

GOOD = TextMessage("ab", role="assistant")
Entry = dict[Any, Any]

# Class names that must never be instantiated from the wire, in any slot.
FORBIDDEN_CLASSES = [
    "os.system",
    "subprocess.Popen",
    "builtins.eval",
    "__import__",
    "type",
    "object",
    "NoSuchClass",
    "Frozen",  # registered, but not a message (nor a token)
    "MiniAgent",  # registered Frozen subclass, not a message
    "TextToken",  # a token, not a message
]
# Registered classes that are legitimate where any Frozen (or any token) may stand.
ANY_FROZEN = frozenset({"Frozen", "TextToken"})
TOKENS = frozenset({"TextToken"})
VALID_MESSAGE_KINDS = {"start", "tokens", "message", "error"}
VALID_SEQUENCE_KINDS = {"message", "error", "end", "restart"}


# --- garbage -----------------------------------------------------------------------------------------


class Garbage:
    """Seeded random garbage of every kind."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)

    def choice(self, options: Sequence[T]) -> T:
        return self.rng.choice(options)

    def binary(self) -> bytes:
        """Bytes that are never valid UTF-8."""
        body = bytes(self.rng.randrange(256) for _ in range(self.rng.randrange(0, 24)))
        return body + b"\xff\xfe" + body

    def text(self, max_size: int = 12) -> str:
        return "".join(self.rng.choice(string.printable) for _ in range(self.rng.randrange(1, max_size)))

    def kind(self, valid: set[str]) -> str | bytes:
        options: list[Callable[[], str | bytes]] = [
            self.binary,
            lambda: "x" * self.rng.randrange(17, 200),  # over the 16 bytes a kind may have
            lambda: self.choice(["START", "Message", "token", "end ", "eval", "__class__", "null"]),
            self.text,
        ]
        while True:
            kind = self.choice(options)()
            if kind not in valid:
                return kind

    def invalid_json(self) -> str:
        while True:
            text = self.choice(
                [
                    "{'single': 'quotes'}",
                    '{"class_": "TextMessage",',
                    "[1, 2",
                    "NaN]",
                    "{]",
                    '"unterminated',
                    self.text(30),
                ]
            )
            try:
                json.loads(text)
            except ValueError:
                return text

    def deep_json(self) -> str:
        depth = self.rng.randrange(70, 400)
        return '{"class_":"Frozen","a":' + "[" * depth + "]" * depth + "}"

    def huge(self) -> str:
        return json.dumps(["x" * (LIMIT + self.rng.randrange(1, 5000))])

    def position(self, expected: int) -> str | bytes:
        options: list[str | bytes] = [
            str(expected + self.rng.randrange(1, 10**6)),  # a gap
            "-1",
            "1.5",
            "",
            "one",
            "0x1",
            " 1",
            "9" * 30,  # over 20 bytes
            self.binary(),
        ]
        return self.choice(options)

    def forbidden_class(self, allowed: frozenset[str] = frozenset()) -> str:
        return str(self.choice([name for name in FORBIDDEN_CLASSES if name not in allowed]))

    def wrong_object(self, allowed: frozenset[str] = frozenset()) -> Any:
        """JSON that is not a serialized object of a class allowed in the slot (``allowed``)."""
        return self.choice(
            [
                None,
                7,
                "TextMessage",
                [{"class_": "TextMessage"}],
                {"content": "no class"},
                {"class_": 5},
                {"class_": self.forbidden_class(allowed), "args": ["rm -rf /"]},
                {"class_": "TextMessage", "content": {"class_": self.forbidden_class()}},
            ]
        )


def start_entry() -> Entry:
    return {"kind": "start", "class": "TextMessage", "known_beforehand": '{"class_":"Frozen","role":"assistant"}'}


def tokens_entry(i: int) -> Entry:
    return {"kind": "tokens", "i": str(i), "tokens": json.dumps(["a", "b"][i:])}


def message_entry(message: TextMessage = GOOD, hash_key: str | None = None) -> Entry:
    return {
        "kind": "message",
        "hash_key": hash_key or message.hash_key,
        "message": json.dumps(message.serialize(), separators=(",", ":")),
    }


def corrupt_message_stream(garbage: Garbage) -> list[Entry]:
    """A valid start of a message stream, then one bad entry (and more that must be ignored)."""
    layout = [start_entry(), tokens_entry(0), message_entry()]
    position = garbage.rng.randrange(len(layout))
    entry = dict(layout[position])
    mutations: list[Callable[[], None]] = [
        lambda: entry.pop(garbage.choice(sorted(entry))),
        lambda: entry.update(kind=garbage.kind(VALID_MESSAGE_KINDS)),
        lambda: entry.update({garbage.choice(sorted(entry)): garbage.binary()}),
    ]
    kind = entry["kind"]
    if kind == "start":
        mutations += [
            lambda: entry.update({"class": garbage.choice(FORBIDDEN_CLASSES)}),
            lambda: entry.update({"class": "C" * 300}),
            lambda: entry.update(known_beforehand=garbage.invalid_json()),
            lambda: entry.update(known_beforehand=garbage.deep_json()),
            lambda: entry.update(known_beforehand=garbage.huge()),
            lambda: entry.update(known_beforehand=json.dumps(garbage.wrong_object(ANY_FROZEN))),
        ]
    elif kind == "tokens":
        bad_tokens: list[Any] = [1, None, True, [], {"class_": garbage.forbidden_class(TOKENS)}]
        mutations += [
            lambda: entry.update(i=garbage.position(0)),
            lambda: entry.update(tokens=garbage.invalid_json()),
            lambda: entry.update(tokens=garbage.huge()),
            lambda: entry.update(tokens=json.dumps(garbage.choice([{"a": 1}, "ab", 3, None]))),
            lambda: entry.update(tokens=json.dumps(["a", garbage.choice(bad_tokens)])),
        ]
    else:
        wrong_hash = "f" * 40 if GOOD.hash_key != "f" * 40 else "e" * 40
        mutations += [
            lambda: entry.update(message=garbage.invalid_json()),
            lambda: entry.update(message=garbage.deep_json()),
            lambda: entry.update(message=garbage.huge()),
            lambda: entry.update(message=json.dumps(garbage.wrong_object())),
            lambda: entry.update(hash_key=wrong_hash),
            lambda: entry.update(hash_key="0" * 65),
            lambda: entry.update(message=json.dumps({"class_": "Message", "sub__hash_key": "0" * 40})),
            lambda: entry.update(message=json.dumps({"class_": "Message", "subs__hash_keys": ["../../etc/passwd"]})),
        ]
    garbage.choice(mutations)()
    # After the bad entry: a valid-looking end, which a reader must not trust.
    return [*layout[:position], entry, message_entry()]


@dataclass
class SequenceCase:
    entries: list[Entry]
    bad_reference: str | None = None  # the message key of a bad reference (an error at its position)


def corrupt_sequence_stream(garbage: Garbage, good_key: str, suffix: str) -> tuple[SequenceCase, list[Entry]]:
    """A sequence: a good message, a bad entry or a bad reference, a good message, the end.

    Also returns the entries of the corrupt message stream a bad reference points at, if any.
    """
    entry: Entry = garbage.choice(
        [
            {"kind": "message", "i": "1", "key": good_key},
            {"kind": "error", "i": "1", "error_type": "ValueError", "error_message": "x"},
            {"kind": "end", "i": "1"},
        ]
    )
    entry = dict(entry)
    required = sorted(key for key in entry if key != "error_message")
    mutations: list[Callable[[], None]] = [
        lambda: entry.pop(garbage.choice(required)),
        lambda: entry.update(kind=garbage.kind(VALID_SEQUENCE_KINDS)),
        lambda: entry.update(i=garbage.position(1)),
        lambda: entry.update(a=garbage.choice(["x", "-1", "", "1e3", garbage.binary()])),
        lambda: entry.update({garbage.choice(required): garbage.binary()}),
    ]
    if entry["kind"] == "message":
        mutations += [
            lambda: entry.update(key=garbage.choice(["other:msg:{x}", KEYS.sequence("x"), KEYS.agent_inbox("X")])),
            lambda: entry.update(key=KEYS.message("k" * 200) + "x" * 400),
            lambda: entry.update(key=garbage.text(20)),
        ]
    elif entry["kind"] == "error":
        mutations.append(lambda: entry.update(error_type="E" * 300))
    referenced: list[Entry] = []
    if garbage.rng.random() < 0.25:
        # A well-formed reference to a message stream that is missing or corrupt.
        key = KEYS.message(f"ref-{suffix}")
        entry = {"kind": "message", "i": "1", "key": key}
        if garbage.rng.random() < 0.5:
            referenced = corrupt_message_stream(garbage)
        case = SequenceCase([], bad_reference=key)
        good_after = {"kind": "message", "i": "2", "key": good_key}
        case.entries = [{"kind": "message", "i": "0", "key": good_key}, entry, good_after, {"kind": "end", "i": "3"}]
        return case, referenced
    garbage.choice(mutations)()
    good_after = {"kind": "message", "i": "2", "key": good_key}
    entries = [{"kind": "message", "i": "0", "key": good_key}, entry, good_after, {"kind": "end", "i": "3"}]
    return SequenceCase(entries), referenced


# --- readers -----------------------------------------------------------------------------------------


def reader(backend: Backend) -> MiniAgents:
    return MiniAgents(redis=backend.client(), remote_calls="never", max_message_bytes=LIMIT)


async def inject(client: Any, key: str, entries: list[Entry]) -> list[str]:
    return [(await client.xadd(key, entry)).decode() for entry in entries]


async def dead_letters_by_key(client: Any, prefix: str = "ba") -> dict[str, list[dict[str, str]]]:
    letters: dict[str, list[dict[str, str]]] = {}
    for _id, fields in await client.xrange(Keys(prefix).dead_letters()):
        letter = {k.decode(): v.decode(errors="replace") for k, v in fields.items()}
        letters.setdefault(letter.get("key") or letter.get("stream") or "", []).append(letter)
    return letters


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


async def test_readers_reject_random_garbage_in_message_streams(redis_backend: Backend) -> None:
    garbage = Garbage(SEED)
    client = redis_backend.client()
    cases: dict[str, str] = {}  # stream key -> the id of its bad entry
    for number in range(MESSAGE_CASES):
        key = KEYS.message(f"fuzz-{number}")
        entry_ids = await inject(client, key, corrupt_message_stream(garbage))
        cases[key] = entry_ids[-2]  # the last entry is the valid-looking one after it

    async with reader(redis_backend):
        for key in cases:
            tokens, error = await asyncio.wait_for(read_message(key), READ_TIMEOUT_S)
            assert isinstance(error, WireFormatError), (key, error, await client.xrange(key))
            assert "Bad entry " in str(error) and key in str(error), error
            assert tokens in ([], ["a", "b"]), tokens  # only what came before the bad entry
        # The context goes on: a good stream still reads.
        good_key = KEYS.message(GOOD.hash_key)
        await inject(client, good_key, [message_entry()])
        assert await read_message(good_key) == (["ab"], None)

    letters = await dead_letters_by_key(client)
    for key, bad_entry_id in cases.items():
        assert [letter["entry_id"] for letter in letters.get(key, [])] == [bad_entry_id], (key, letters.get(key))
        assert letters[key][0]["reason"] and int(letters[key][0]["at_ms"]) > 0


async def test_readers_reject_random_garbage_in_sequence_streams(redis_backend: Backend) -> None:
    garbage = Garbage(SEED + 1)
    client = redis_backend.client()
    good_key = KEYS.message(GOOD.hash_key)
    await inject(client, good_key, [message_entry()])
    cases: dict[str, tuple[SequenceCase, list[str]]] = {}
    for number in range(SEQUENCE_CASES):
        key = KEYS.sequence(f"fuzz-{number}")
        case, referenced = corrupt_sequence_stream(garbage, good_key, str(number))
        if referenced:
            assert case.bad_reference is not None
            await inject(client, case.bad_reference, referenced)
        cases[key] = (case, await inject(client, key, case.entries))

    async with reader(redis_backend):
        for key, (case, _entry_ids) in cases.items():
            items = await asyncio.wait_for(read_sequence(key), READ_TIMEOUT_S)
            assert items[0] == "ab", items
            assert isinstance(items[1], WireFormatError), (items, case.entries)
            if case.bad_reference is None:
                assert len(items) == 2, items  # nothing after a corrupt entry is trusted
                assert key in str(items[1])
            else:
                assert items[2:] == ["ab"], items  # an error at its position only
                assert case.bad_reference in str(items[1])

    letters = await dead_letters_by_key(client)
    for key, (case, entry_ids) in cases.items():
        if case.bad_reference is None:
            assert [letter["entry_id"] for letter in letters.get(key, [])] == [entry_ids[1]], letters.get(key)
        else:
            assert len(letters.get(case.bad_reference, [])) == 1, letters.get(case.bad_reference)
            assert key not in letters


# --- a worker process ------------------------------------------------------------------------------


def valid_request(call_id: str, alias: str = "ECHO") -> Entry:
    return {
        "call_id": call_id,
        "agent": alias,
        "kwargs": json.dumps(CallKwargs().serialize(), separators=(",", ":")),
        "errors_as_messages": "0",
        "caller": "",
        "sent_ms": "0",
    }


def corrupt_request(garbage: Garbage, number: int) -> Entry:
    entry = valid_request(f"fuzz{number}")
    fields = ["call_id", "agent", "kwargs"]
    forbidden = garbage.forbidden_class()
    inline_forbidden = garbage.forbidden_class(ANY_FROZEN)  # kwargs may hold any registered Frozen
    mutations: list[Callable[[], None]] = [
        lambda: entry.pop(garbage.choice(fields)),
        lambda: entry.update({garbage.choice(fields): garbage.binary()}),
        lambda: entry.update(call_id=garbage.choice(["../x", "a b", "{x}", "x:y", "c" * 65, ""])),
        lambda: entry.update(agent=garbage.choice(["OTHER", "echo", "ECHO ", "A" * 300])),
        lambda: entry.update(errors_as_messages=garbage.choice(["2", "yes", "true", "-"])),
        lambda: entry.update(kwargs=garbage.invalid_json()),
        lambda: entry.update(kwargs=garbage.deep_json()),
        lambda: entry.update(kwargs=json.dumps({"class_": "CallKwargs", "x": "y" * (1024 * 1024)})),
        lambda: entry.update(kwargs=json.dumps(garbage.wrong_object())),
        lambda: entry.update(kwargs=json.dumps({"class_": forbidden, "cmd": "id"})),
        lambda: entry.update(kwargs=json.dumps({"class_": "CallKwargs", "x": {"class_": inline_forbidden}})),
        lambda: entry.update(kwargs=json.dumps({"class_": "CallKwargs", "m__hash_key": "0" * 40})),
        lambda: entry.update(kwargs=json.dumps({"class_": "CallKwargs", "m__hash_keys": ["not-a-hash"]})),
        lambda: binary_fields_only(),
    ]

    def binary_fields_only() -> None:
        entry.clear()
        entry.update({garbage.binary(): garbage.binary() for _ in range(3)})

    garbage.choice(mutations)()
    return entry


@pytest.mark.real_redis
async def test_a_worker_dead_letters_random_garbage_and_keeps_serving(cluster: Cluster) -> None:
    worker = await cluster.aworker("echo_app:echo")
    inbox = cluster.keys.agent_inbox("ECHO")
    garbage = Garbage(SEED + 2)
    injected = await inject(cluster.redis, inbox, [corrupt_request(garbage, n) for n in range(INBOX_CASES)])

    async with cluster.mini_agents(remote_calls="always"):
        # Sent after the garbage: served.
        assert await MiniAgent(alias="ECHO").trigger("after the garbage") == (TextMessage("echo: after the garbage"),)

        async def all_recorded() -> bool:
            return len((await dead_letters_by_key(cluster.redis, cluster.prefix)).get(inbox, [])) >= INBOX_CASES

        await wait_until(all_recorded, 30, "every garbage entry to be dead-lettered")
        letters = (await dead_letters_by_key(cluster.redis, cluster.prefix))[inbox]
        assert sorted(letter["entry_id"] for letter in letters) == sorted(injected)
        for letter in letters:
            assert letter["reason"], letter
            assert "delivered" not in letter["reason"]  # rejected at once, not retried until given up
        # Acknowledged and deleted: nothing left in the inbox, nothing pending.
        await wait_until(lambda: _inbox_empty(cluster, inbox), 10, "the inbox to be empty")
        assert worker.is_running()
        assert "Traceback" not in worker.output()  # rejected with a clear reason, not by crashing

        # Garbage in a call's input stream: an error in that call's reply, recorded; the worker goes on.
        call_id = "fuzzinput"
        input_key = cluster.keys.call_input(call_id)
        await inject(cluster.redis, input_key, [{"kind": "message", "i": "0", "key": "not a key"}])
        await inject(cluster.redis, inbox, [valid_request(call_id)])
        reply = await aopen_sequence_promise(cluster.keys.call_reply(call_id), idle_timeout_s=30)
        items = await asyncio.wait_for(_aitems(reply), 30)
        assert len(items) == 1 and isinstance(items[0], WireFormatError), items
        assert "not a message key" in str(items[0])
        input_letters = (await dead_letters_by_key(cluster.redis, cluster.prefix)).get(input_key, [])
        assert len(input_letters) == 1 and "not a message key" in input_letters[0]["reason"]
        assert await MiniAgent(alias="ECHO").trigger("still there") == (TextMessage("echo: still there"),)
    assert worker.is_running()


async def _inbox_empty(cluster: Cluster, inbox: str) -> bool:
    return bool(
        await cluster.redis.xlen(inbox) == 0 and (await cluster.redis.xpending(inbox, "workers"))["pending"] == 0
    )


async def _aitems(sequence: Any) -> list[Any]:
    items: list[Any] = []
    iterator = sequence.__aiter__()
    while True:
        try:
            items.append(str(await (await iterator.__anext__())))
        except StopAsyncIteration:
            return items
        except Exception as exc:
            items.append(exc)
