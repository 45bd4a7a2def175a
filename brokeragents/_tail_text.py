"""Tail events as readable text: the tokens of each message on one unbroken line.

Several calls stream at once, so one message at a time is "live": its tokens are written as they
arrive. Tokens of the others are held until the live one ends, then written at once, and they go
on live from there. A call's "reply done" line waits for its held messages, so it comes last.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, TextIO

from brokeragents._ops import printable, shorten

_Key = tuple[str, int]  # (call id, message index)


@dataclass(slots=True)
class _Held:
    label: str
    tokens: list[str] = field(default_factory=list)
    done: bool = False
    trailer: list[str] = field(default_factory=list)


class TextRenderer:
    def __init__(self, out: TextIO) -> None:
        self._out = _Printable(out)
        self._live: _Key | None = None
        self._line_open = False  # the last line is the live message's and is not finished
        self._held: dict[_Key, _Held] = {}  # insertion order: the order they began streaming
        self._deferred: dict[str, list[str]] = {}  # call id -> lines to write after its held messages

    def handle(self, event: dict[str, Any]) -> None:
        kind = event["event"]
        call_id = event["call_id"]
        key = (call_id, int(event.get("index", -1)))
        label = f"[{event['agent']} {call_id[:8]} #{key[1]}]"
        if kind == "token":
            self._token(key, label, event["token"])
        elif kind == "message":
            self._end_message(key, label, event["content"], [])
        elif kind == "error" and event.get("scope") == "message":
            self._end_message(key, label, "", [f"{label} error {_error_text(event)}"])
        elif kind == "call":
            parent = f" (called by {event['parent_call'][:8]})" if event["parent_call"] else ""
            stamp = time.strftime("%H:%M:%S", time.localtime((event["at_ms"] or 0) / 1000))
            self._line(f"{stamp} call {call_id} to {event['agent']}{parent}")
        elif kind in ("error", "restart", "reply_end"):
            self._call_line(call_id, _call_text(event))
        self._out.flush()

    def close(self) -> None:
        """Write whatever is held (the tail is stopping)."""
        self._live = None
        for held in self._held.values():
            held.done = True
        self._promote()
        self._end_line()
        for lines in self._deferred.values():
            for line in lines:
                self._out.write(line + "\n")
        self._deferred.clear()
        self._out.flush()

    def _token(self, key: _Key, label: str, token: str) -> None:
        if self._live is None and not self._held:
            self._live = key
        if self._live == key:
            if not self._line_open:
                self._out.write(f"{label} ")
                self._line_open = True
            self._out.write(token)
        else:
            self._held.setdefault(key, _Held(label)).tokens.append(token)

    def _end_message(self, key: _Key, label: str, content: str, trailer: list[str]) -> None:
        if self._live == key:
            self._end_line()
            self._write_lines(trailer)
            self._live = None
            self._promote()
            return
        held = self._held.get(key)
        if held is None:  # no token came (an empty stream): show the message itself
            held = self._held[key] = _Held(label, [shorten(content, 200)] if content else [])
        held.done = True
        held.trailer = trailer
        if self._live is None:
            self._promote()

    def _promote(self) -> None:
        """Write held messages, in order, until one is still streaming: it goes live."""
        while self._live is None and self._held:
            key = next(iter(self._held))
            held = self._held.pop(key)
            if held.tokens or not held.done:
                self._end_line()
                self._out.write(f"{held.label} {''.join(held.tokens)}")
                self._line_open = True
            if held.done:
                self._end_line()
                self._write_lines(held.trailer)
            else:
                self._live = key
        held_calls = {call_id for call_id, _index in self._held}
        for call_id in [call_id for call_id in self._deferred if call_id not in held_calls]:
            self._end_line()
            self._write_lines(self._deferred.pop(call_id))

    def _call_line(self, call_id: str, line: str) -> None:
        if any(held_call == call_id for held_call, _index in self._held) or call_id in self._deferred:
            self._deferred.setdefault(call_id, []).append(line)
        else:
            self._line(line)

    def _line(self, line: str) -> None:
        self._end_line()
        self._out.write(line + "\n")

    def _write_lines(self, lines: list[str]) -> None:
        for line in lines:
            self._out.write(line + "\n")

    def _end_line(self) -> None:
        if self._line_open:
            self._out.write("\n")
            self._line_open = False


class _Printable:
    """Writes to ``out`` with control characters escaped (texts come from Redis)."""

    def __init__(self, out: TextIO) -> None:
        self._out = out

    def write(self, text: str) -> None:
        self._out.write(printable(text))

    def flush(self) -> None:
        self._out.flush()


def _error_text(event: dict[str, Any]) -> str:
    return f"{event['error_type']}: {shorten(event['error_message'])}"


def _call_text(event: dict[str, Any]) -> str:
    label = f"[{event['agent']} {event['call_id'][:8]}]"
    kind = event["event"]
    if kind == "reply_end":
        return f"{label} reply done: {event['messages']} message(s), {event['errors']} error(s)"
    if kind == "restart":
        return f"{label} {event['reason']}"
    return f"{label} error {_error_text(event)}"


__all__ = ("TextRenderer",)
