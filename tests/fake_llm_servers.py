"""Loopback HTTP servers speaking the OpenAI and Anthropic wire formats, with fault injection.

The real SDK clients talk to these servers over 127.0.0.1, so tests exercise the SDKs' own HTTP
stack, SSE parsing, retries and timeouts. A server answers each request with the next scripted
:class:`Reply` (``server.script(...)``), or with its default reply once the script is used up,
and records every request in ``server.requests``.

Streams are sent with chunked transfer encoding, one SSE frame per chunk, as the real APIs do. A
reply can pause between frames, wait for a test to release it, cut the connection after some
frames (no terminating chunk, like a dropped TCP connection), or stall before its headers.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Self

_REASONS = {200: "OK", 400: "Bad Request", 429: "Too Many Requests", 500: "Internal Server Error", 529: "Overloaded"}
CREATED = 1_700_000_000


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Reply:
    """One scripted answer.

    :ivar frames: SSE frames of a streamed answer (``None`` for a plain JSON ``body``)
    :ivar delay_s: pause before each frame
    :ivar hold_at: index of the frame that waits for ``release`` to be set
    :ivar drop_after: cut the connection after this many frames
    :ivar stall_s: pause before sending anything (to trigger client timeouts)
    """

    status: int = 200
    frames: list[bytes] | None = None
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    delay_s: float = 0.0
    hold_at: int | None = None
    release: asyncio.Event | None = None
    drop_after: int | None = None
    stall_s: float = 0.0


def sse(data: Any, event: str | None = None) -> bytes:
    """One SSE frame; ``data`` is JSON-encoded unless it is already a string."""
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {text}\n\n".encode()


# --- OpenAI chat completions ---------------------------------------------------------------------


def _openai_chunk(model: str, delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
    return sse(
        {
            "id": "chatcmpl-fake1",
            "object": "chat.completion.chunk",
            "created": CREATED,
            "model": model,
            "system_fingerprint": "fp_fake",
            "choices": [choice],
        }
    )


def openai_usage(prompt_tokens: int = 7, completion_tokens: int = 3) -> dict[str, Any]:
    total = prompt_tokens + completion_tokens
    return {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": total}


def openai_stream(
    pieces: list[str],
    *,
    model: str = "gpt-fake",
    finish_reason: str = "stop",
    usage: dict[str, int] | None = None,
    tool_calls: Sequence[tuple[str, str, list[str]]] = (),
    done: bool = True,
) -> list[bytes]:
    """Frames of a streamed chat completion: role, content pieces, tool calls, finish, usage, [DONE].

    ``tool_calls`` holds ``(id, name, argument fragments)``; the first delta of each call carries
    its id, type and name with empty arguments, then each fragment comes in its own delta.
    """
    frames = [_openai_chunk(model, {"role": "assistant", "content": "", "refusal": None})]
    frames += [_openai_chunk(model, {"content": piece}) for piece in pieces]
    for index, (call_id, name, fragments) in enumerate(tool_calls):
        first = {"index": index, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        frames.append(_openai_chunk(model, {"tool_calls": [first]}))
        for fragment in fragments:
            frames.append(_openai_chunk(model, {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}))
    frames.append(_openai_chunk(model, {}, finish_reason))
    if usage is not None:  # sent when the request asks for stream_options.include_usage
        frames.append(
            sse(
                {
                    "id": "chatcmpl-fake1",
                    "object": "chat.completion.chunk",
                    "created": CREATED,
                    "model": model,
                    "system_fingerprint": "fp_fake",
                    "choices": [],
                    "usage": usage,
                }
            )
        )
    if done:
        frames.append(sse("[DONE]"))
    return frames


def openai_completion(text: str, *, model: str = "gpt-fake", finish_reason: str = "stop") -> dict[str, Any]:
    """The JSON body of a non-streamed chat completion."""
    message = {"role": "assistant", "content": text, "refusal": None}
    return {
        "id": "chatcmpl-fake2",
        "object": "chat.completion",
        "created": CREATED,
        "model": model,
        "choices": [{"index": 0, "message": message, "logprobs": None, "finish_reason": finish_reason}],
        "usage": openai_usage(),
    }


def openai_error(message: str, *, type_: str = "server_error", code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": None, "code": code}}


def openai_embeddings(
    vectors: list[list[float]], *, model: str = "embed-fake", base64_: bool = False
) -> dict[str, Any]:
    """The JSON body of an embeddings response; ``base64_`` packs each vector as little-endian float32."""
    data = [
        {"object": "embedding", "index": i, "embedding": _pack(vector) if base64_ else vector}
        for i, vector in enumerate(vectors)
    ]
    return {"object": "list", "data": data, "model": model, "usage": {"prompt_tokens": 4, "total_tokens": 4}}


def _pack(vector: list[float]) -> str:
    return base64.b64encode(struct.pack(f"<{len(vector)}f", *vector)).decode()


# A chunk whose JSON is cut short: what a broken proxy or a truncated write would produce.
MALFORMED_OPENAI_FRAME = b'data: {"id":"chatcmpl-fake1","object":"chat.completion.chunk","choices":[{"ind\n\n'


# --- Anthropic messages ---------------------------------------------------------------------------


def anthropic_stream(
    pieces: list[str],
    *,
    model: str = "claude-fake",
    stop_reason: str = "end_turn",
    input_tokens: int = 11,
    output_tokens: int = 5,
    tool_uses: Sequence[tuple[str, str, list[str]]] = (),
    ping: bool = True,
) -> list[bytes]:
    """Frames of a streamed message: message_start, a text block, tool_use blocks, delta, stop.

    ``tool_uses`` holds ``(id, name, partial_json fragments)``, streamed as input_json_delta.
    """
    start = {
        "type": "message_start",
        "message": {
            "id": "msg_fake1",
            "type": "message",
            "role": "assistant",
            "content": [],
            "model": model,
            "stop_reason": None,
            "stop_sequence": None,
            "usage": {"input_tokens": input_tokens, "output_tokens": 1},
        },
    }
    frames = [sse(start, "message_start")]
    index = 0
    if pieces:
        block = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
        frames.append(sse(block, "content_block_start"))
        if ping:
            frames.append(sse({"type": "ping"}, "ping"))
        for piece in pieces:
            delta = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}
            frames.append(sse(delta, "content_block_delta"))
        frames.append(sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        index = 1
    for tool_id, name, fragments in tool_uses:
        block = {"type": "tool_use", "id": tool_id, "name": name, "input": {}}
        frames.append(
            sse({"type": "content_block_start", "index": index, "content_block": block}, "content_block_start")
        )
        for fragment in ["", *fragments]:
            delta = {"type": "input_json_delta", "partial_json": fragment}
            frames.append(sse({"type": "content_block_delta", "index": index, "delta": delta}, "content_block_delta"))
        frames.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
        index += 1
    message_delta = {
        "type": "message_delta",
        "delta": {"stop_reason": stop_reason, "stop_sequence": None},
        "usage": {"output_tokens": output_tokens},
    }
    frames.append(sse(message_delta, "message_delta"))
    frames.append(sse({"type": "message_stop"}, "message_stop"))
    return frames


def anthropic_message(text: str, *, model: str = "claude-fake", stop_reason: str = "end_turn") -> dict[str, Any]:
    """The JSON body of a non-streamed message."""
    return {
        "id": "msg_fake2",
        "type": "message",
        "role": "assistant",
        "content": [{"type": "text", "text": text}],
        "model": model,
        "stop_reason": stop_reason,
        "stop_sequence": None,
        "usage": {"input_tokens": 11, "output_tokens": 5},
    }


def anthropic_error(message: str, *, type_: str = "api_error") -> dict[str, Any]:
    return {"type": "error", "error": {"type": type_, "message": message}, "request_id": "req_fake"}


def anthropic_error_frame(message: str = "Overloaded", type_: str = "overloaded_error") -> bytes:
    """An ``error`` event sent inside an already started stream."""
    return sse({"type": "error", "error": {"type": type_, "message": message}}, "error")


MALFORMED_ANTHROPIC_FRAME = b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,"del\n\n'


# --- the server -------------------------------------------------------------------------------------


class FakeLLMServer:
    """An HTTP/1.1 server on 127.0.0.1 (any free port) answering from a script.

    Use as ``async with FakeOpenAIServer() as server:``; it runs on the current event loop.
    """

    def __init__(self, default: Callable[[RecordedRequest], Reply]) -> None:
        self.default = default
        self.requests: list[RecordedRequest] = []
        self._script: list[Reply] = []
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._handlers: set[asyncio.Task[None]] = set()
        self.port = 0

    def script(self, *replies: Reply) -> Self:
        """Answer the next requests with ``replies``, in order, then with the default again."""
        self._script.extend(replies)
        return self

    @property
    def origin(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> Self:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def aclose(self) -> None:
        if self._server is not None:
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            for task in list(self._handlers):
                task.cancel()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await self._server.wait_closed()
            self._server = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        task.add_done_callback(self._handlers.discard)
        self._writers.add(writer)
        try:
            while True:  # keep-alive: the SDKs reuse connections
                request = await _read_request(reader)
                if request is None:
                    return
                self.requests.append(request)
                reply = self._script.pop(0) if self._script else self.default(request)
                if not await _asend(reply, writer):
                    return
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass  # the client went away, or the server is closing
        finally:
            self._writers.discard(writer)
            writer.transport.abort()


async def _read_request(reader: asyncio.StreamReader) -> RecordedRequest | None:
    line = await reader.readline()
    if not line.strip():
        return None
    method, path, _version = line.decode().split(" ", 2)
    headers: dict[str, str] = {}
    while (header := await reader.readline()) not in (b"\r\n", b"\n", b""):
        name, _, value = header.decode().partition(":")
        headers[name.strip().lower()] = value.strip()
    raw = await reader.readexactly(int(headers.get("content-length", "0")))
    body = json.loads(raw) if raw else None
    return RecordedRequest(method, path, headers, body)


async def _asend(reply: Reply, writer: asyncio.StreamWriter) -> bool:
    """Send ``reply``; return whether the connection can serve another request."""
    if reply.stall_s:
        await asyncio.sleep(reply.stall_s)
    headers = {"x-request-id": "req_fake", **reply.headers}
    status_line = f"HTTP/1.1 {reply.status} {_REASONS.get(reply.status, 'Status')}\r\n"
    if reply.frames is None:
        payload = json.dumps(reply.body).encode()
        headers |= {"content-type": "application/json", "content-length": str(len(payload))}
        writer.write((status_line + _header_lines(headers)).encode() + payload)
        await writer.drain()
        return True
    headers |= {"content-type": "text/event-stream; charset=utf-8", "transfer-encoding": "chunked"}
    writer.write((status_line + _header_lines(headers)).encode())
    await writer.drain()
    for index, frame in enumerate(reply.frames):
        if reply.drop_after is not None and index >= reply.drop_after:
            writer.transport.abort()  # no terminating chunk: the peer sees a cut connection
            return False
        if reply.hold_at == index and reply.release is not None:
            await reply.release.wait()
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        writer.write(f"{len(frame):x}\r\n".encode() + frame + b"\r\n")
        await writer.drain()
    writer.write(b"0\r\n\r\n")
    await writer.drain()
    return True


def _header_lines(headers: dict[str, str]) -> str:
    return "".join(f"{name}: {value}\r\n" for name, value in headers.items()) + "\r\n"


# --- ready-made servers ------------------------------------------------------------------------------


def _last_user_text(body: Any) -> str:
    with contextlib.suppress(LookupError, TypeError, AttributeError):
        for message in reversed(body["messages"]):
            if message["role"] == "user":
                content = message["content"]
                return content if isinstance(content, str) else " ".join(part["text"] for part in content)
    return ""


def _echo_pieces(body: Any) -> list[str]:
    words = f"You said: {_last_user_text(body)}".split(" ")
    return [word if i == len(words) - 1 else word + " " for i, word in enumerate(words)]


def _openai_default(request: RecordedRequest) -> Reply:
    body = request.body or {}
    if request.path.endswith("/embeddings"):
        inputs = body.get("input")
        count = len(inputs) if isinstance(inputs, list) else 1
        vectors = [[float(i), 0.5, -1.0] for i in range(count)]
        packed = body.get("encoding_format") == "base64"  # the SDK asks for base64 unless told otherwise
        return Reply(body=openai_embeddings(vectors, model=body.get("model", ""), base64_=packed))
    model = body.get("model", "gpt-fake")
    if not body.get("stream"):
        return Reply(body=openai_completion("".join(_echo_pieces(body)), model=model))
    include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
    return Reply(frames=openai_stream(_echo_pieces(body), model=model, usage=openai_usage() if include_usage else None))


def _anthropic_default(request: RecordedRequest) -> Reply:
    body = request.body or {}
    model = body.get("model", "claude-fake")
    if not body.get("stream"):
        return Reply(body=anthropic_message("".join(_echo_pieces(body)), model=model))
    return Reply(frames=anthropic_stream(_echo_pieces(body), model=model))


class FakeOpenAIServer(FakeLLMServer):
    """Chat completions and embeddings under ``/v1``; by default it echoes the last user message."""

    def __init__(self) -> None:
        super().__init__(_openai_default)

    @property
    def base_url(self) -> str:
        return f"{self.origin}/v1"


class FakeAnthropicServer(FakeLLMServer):
    """Messages at ``/v1/messages``; by default it echoes the last user message."""

    def __init__(self) -> None:
        super().__init__(_anthropic_default)

    @property
    def base_url(self) -> str:
        return self.origin


__all__ = (
    "MALFORMED_ANTHROPIC_FRAME",
    "MALFORMED_OPENAI_FRAME",
    "FakeAnthropicServer",
    "FakeLLMServer",
    "FakeOpenAIServer",
    "RecordedRequest",
    "Reply",
    "anthropic_error",
    "anthropic_error_frame",
    "anthropic_message",
    "anthropic_stream",
    "openai_completion",
    "openai_embeddings",
    "openai_error",
    "openai_stream",
    "openai_usage",
    "sse",
)
