"""``brokeragents inspect``: a message, a call or a sequence as it is in Redis right now.

A snapshot, never a wait: a message still streaming shows the tokens written so far, a reply
still open shows the messages referenced so far. Entries are validated as readers validate them;
what cannot be read is shown as an error, never raised.
"""

from __future__ import annotations

import re
import time
from typing import Any, TextIO

from redis.exceptions import RedisError

from brokeragents import wire
from brokeragents._ops import (
    EXIT_NOT_FOUND,
    EXIT_OK,
    EXIT_UNREACHABLE,
    aconnected_store,
    format_age,
    printable,
    shorten,
    text,
    text_fields,
    write_json,
)
from brokeragents.errors import BrokerAgentsError
from brokeragents.replay import _aload_by_hash
from brokeragents.store import RedisUnavailableError, StreamStore
from brokeragents.urls import redact_url, scrub

_HASH_RE = re.compile(r"^[0-9a-f]{40}$|^[0-9a-f]{64}$")
_TAG_RE = re.compile(r"\{([^{}]+)\}")
_PAGE = 1_000
MAX_SEQUENCE_ITEMS = 200
_MAX_TOKENS = 100_000


def classify(store: StreamStore, target: str) -> tuple[str, str, str]:
    """What a full key names: ``(kind, key, id)`` with kind ``message``, ``call``, ``sequence`` or ``""``."""
    keys = store.keys
    match = _TAG_RE.search(target)
    if match is None:
        return "", target, ""
    tag = match.group(1)
    if target == keys.call(tag):
        return "call", target, tag
    if keys.is_message_key(target):
        return "message", target, tag
    if keys.is_sequence_key(target):
        return "sequence", target, tag
    return "", target, tag


async def aresolve(store: StreamStore, target: str) -> tuple[str, str, str]:
    """Like :func:`classify`, also for a bare hash key, call id, message id or sequence id."""
    if ":" in target:
        return classify(store, target)
    keys = store.keys
    if "{" in target or "}" in target or not target:
        return "", target, ""
    if _HASH_RE.match(target):
        return "message", keys.message(target), target
    redis: Any = store.redis
    candidates = (("call", keys.call(target)), ("message", keys.message(target)), ("sequence", keys.sequence(target)))
    for kind, key in candidates:
        if await redis.exists(key):
            return kind, key, target
    return "", target, target


async def _aentries(store: StreamStore, key: str) -> list[wire.Fields]:
    redis: Any = store.redis
    entries: list[wire.Fields] = []
    last = "-"
    while True:
        page = await redis.xrange(key, min=last, max="+", count=_PAGE)
        entries.extend(fields for _id, fields in page)
        if len(page) < _PAGE or len(entries) >= _MAX_TOKENS:
            return entries
        last = f"({text(page[-1][0])}"


def _error_of(fields: wire.Fields) -> dict[str, str]:
    plain = text_fields(fields)
    return {"type": plain.get("error_type", "?"), "message": plain.get("error_message", "")}


async def amessage_snapshot(store: StreamStore, key: str) -> dict[str, Any]:
    """A message stream: class, hash key, tokens so far, content, and its state."""
    snapshot: dict[str, Any] = {"type": "message", "key": key, "state": "missing", "class": None, "hash_key": None}
    tokens: list[str] = []
    message = None
    limit = store.max_message_bytes
    try:
        for fields in await _aentries(store, key):
            kind = wire.require_field(fields, "kind", max_bytes=16)
            snapshot["state"] = "streaming" if snapshot["state"] == "missing" else snapshot["state"]
            if kind == wire.KIND_START:
                snapshot["class"] = wire.require_field(fields, "class", max_bytes=256)
            elif kind == wire.KIND_TOKENS:
                first = int(wire.require_field(fields, "i", max_bytes=20))
                batch = wire.load_json(wire.require_field(fields, "tokens", max_bytes=limit), "tokens")
                tokens.extend(str(wire.decode_token(raw)) for raw in batch[max(0, len(tokens) - first) :])
            elif kind == wire.KIND_MESSAGE:
                raw = wire.load_json(wire.require_field(fields, "message", max_bytes=limit), "message")
                hash_key = wire.require_field(fields, "hash_key", max_bytes=64)
                message = await wire.abuild_message(raw, hash_key, lambda h: _aload_by_hash(store, h))
                snapshot.update(state="complete", hash_key=hash_key, message=message.serialize())
                snapshot["class"] = type(message).__name__
            elif kind == wire.KIND_ERROR:
                snapshot.update(state="failed", error=_error_of(fields))
    except (BrokerAgentsError, ValueError) as exc:
        snapshot.update(state="unreadable", error={"type": type(exc).__name__, "message": str(exc)})
    if message is not None and not tokens:
        tokens = [str(token) for token in message.message_to_tokens()]  # stored whole
    snapshot["tokens"] = len(tokens)
    snapshot["content"] = str(message) if message is not None else "".join(tokens)
    return snapshot


async def asequence_snapshot(store: StreamStore, key: str, *, with_messages: bool = True) -> dict[str, Any]:
    """A sequence stream: its items so far (messages and errors), of the latest attempt only."""
    items: list[dict[str, Any]] = []
    snapshot: dict[str, Any] = {"type": "sequence", "key": key, "state": "missing", "attempt": 1, "items": items}
    for fields in await _aentries(store, key):
        plain = text_fields(fields)
        attempt = int(plain["a"]) if plain.get("a", "").isdigit() else 1
        if attempt < snapshot["attempt"]:
            continue  # written late by an attempt that was taken over
        if snapshot["state"] == "missing":
            snapshot["state"] = "open"
        kind = plain.get("kind")
        if kind == wire.KIND_RESTART:
            snapshot["attempt"] = attempt
            items.clear()
        elif kind == wire.KIND_END:
            snapshot["state"] = "ended"
        elif kind == wire.KIND_ERROR:
            items.append({"error": _error_of(fields)})
        elif kind == wire.KIND_MESSAGE and "key" in plain:
            index = int(plain["i"]) if plain.get("i", "").isdigit() else len(items)
            if not any(item.get("index") == index for item in items):  # repeats of a retried write
                items.append({"index": index, "key": plain["key"]})
    del items[MAX_SEQUENCE_ITEMS:]
    if with_messages:
        for item in items:
            if "key" in item and store.keys.is_message_key(item["key"]):
                item["message"] = await amessage_snapshot(store, item["key"])
    return snapshot


async def acall_snapshot(store: StreamStore, call_id: str) -> dict[str, Any]:
    """A call: its hash (agent, state, attempt, worker...) with its input and reply."""
    keys = store.keys
    redis: Any = store.redis
    fields = text_fields(await redis.hgetall(keys.call(call_id)))
    snapshot: dict[str, Any] = {"type": "call", "key": keys.call(call_id), "call_id": call_id, **fields}
    snapshot.setdefault("attempt", "0")
    snapshot["input"] = await asequence_snapshot(store, keys.call_input(call_id))
    snapshot["reply"] = await asequence_snapshot(store, keys.call_reply(call_id))
    return snapshot


async def ainspect(store: StreamStore, target: str) -> dict[str, Any] | None:
    """The snapshot of whatever ``target`` names, or None when nothing is there."""
    kind, key, ident = await aresolve(store, target)
    if kind == "call":
        redis: Any = store.redis
        return await acall_snapshot(store, ident) if await redis.exists(key) else None
    if kind == "message":
        snapshot = await amessage_snapshot(store, key)
        return None if snapshot["state"] == "missing" else snapshot
    if kind == "sequence":
        snapshot = await asequence_snapshot(store, key)
        return None if snapshot["state"] == "missing" else snapshot
    return None


def _write_message_line(out: TextIO, label: str, message: dict[str, Any]) -> None:
    head = f"{message.get('class') or '?'} {message['state']}, {message['tokens']} token(s)"
    out.write(f"  {label} {head}: {shorten(repr(message['content']))}\n")
    out.write(f"      {printable(message['key'])}\n")
    if message.get("error"):
        out.write(f"      error: {shorten(message['error']['type'])}: {shorten(message['error']['message'])}\n")


def _write_sequence(out: TextIO, title: str, sequence: dict[str, Any]) -> None:
    attempt = f", attempt {sequence['attempt']}" if sequence["attempt"] > 1 else ""
    out.write(f"{title} ({sequence['state']}{attempt}, {len(sequence['items'])} item(s)): {sequence['key']}\n")
    for number, item in enumerate(sequence["items"]):
        if "error" in item:
            out.write(f"  [{number}] error {shorten(item['error']['type'])}: {shorten(item['error']['message'])}\n")
        elif "message" in item:
            _write_message_line(out, f"[{number}]", item["message"])
        else:
            out.write(f"  [{number}] {printable(item['key'])}\n")


def write_snapshot(snapshot: dict[str, Any], out: TextIO, *, as_json: bool = False) -> None:
    """Print a snapshot from :func:`ainspect`."""
    if as_json:
        write_json(out, snapshot)
        return
    kind = snapshot["type"]
    if kind == "message":
        out.write(f"Message {snapshot['key']}\n")
        for name in ("class", "hash_key", "state", "tokens"):
            value = snapshot.get(name)
            out.write(f"  {name + ':':10} {printable(str(value)) if value is not None else '-'}\n")
        if snapshot.get("error"):
            out.write(f"  error:     {shorten(snapshot['error']['type'])}: {printable(snapshot['error']['message'])}\n")
        out.write(f"  content:\n{printable(snapshot['content'])}\n")
    elif kind == "sequence":
        _write_sequence(out, "Sequence", snapshot)
    else:
        out.write(f"Call {snapshot['call_id']} ({snapshot['key']})\n")
        for name in ("agent", "state", "attempt", "worker", "parent_call", "call_node", "reply_node"):
            out.write(f"  {name + ':':13}{printable(snapshot.get(name) or '-')}\n")
        for name in ("created_ms", "finished_ms"):
            if snapshot.get(name, "").isdigit():
                age = time.time() - int(snapshot[name]) / 1000
                out.write(f"  {name[:-3] + ':':13}{format_age(age)} ago\n")
        _write_sequence(out, "Input", snapshot["input"])
        _write_sequence(out, "Reply", snapshot["reply"])
    out.flush()


async def arun_inspect(
    target: str,
    *,
    out: TextIO,
    err: TextIO,
    redis_url: str | None = None,
    redis: Any = None,
    key_prefix: str = "ba",
    as_json: bool = False,
) -> int:
    """The ``inspect`` command; return its exit code."""
    where = redact_url(redis_url) if redis_url else "Redis"
    try:
        async with aconnected_store(redis_url=redis_url, redis=redis, key_prefix=key_prefix) as store:
            snapshot = await ainspect(store, target.strip())
    except (RedisUnavailableError, RedisError, OSError) as exc:
        err.write(f"Error: cannot reach {where}: {scrub(str(exc), redis_url or '')}\n")
        return EXIT_UNREACHABLE
    if snapshot is None:
        err.write(f"Nothing found for {target!r} under the key prefix {key_prefix!r} (expired, or never written).\n")
        return EXIT_NOT_FOUND
    write_snapshot(snapshot, out, as_json=as_json)
    return EXIT_OK


__all__ = ("ainspect", "aresolve", "arun_inspect", "classify", "write_snapshot")
