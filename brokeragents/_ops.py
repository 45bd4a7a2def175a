"""Shared plumbing of the inspection commands (``status``, ``inspect``, ``tail``)."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any, TextIO

from redis.asyncio import Redis

from brokeragents.context import PromisingContext
from brokeragents.store import StreamStore

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_UNREACHABLE = 2


def text(raw: Any) -> str:
    """A Redis reply value as text (replies are bytes: clients pin ``decode_responses=False``)."""
    return raw.decode("utf-8", errors="replace") if isinstance(raw, bytes) else str(raw)


def text_fields(raw: Any) -> dict[str, str]:
    """A hash or a stream entry as a dict of texts."""
    return {text(name): text(value) for name, value in dict(raw or {}).items()}


@asynccontextmanager
async def aconnected_store(
    *, redis_url: str | None = None, redis: Redis | None = None, key_prefix: str = "ba"
) -> AsyncIterator[StreamStore]:
    """A read-only context connected to Redis (opened promises replay from its store).

    :raises brokeragents.store.RedisUnavailableError: the server cannot be reached
    """
    async with PromisingContext(
        redis_url=redis_url, redis=redis, key_prefix=key_prefix, finished_stream_ttl_s=None
    ) as context:
        store = context.store
        assert store is not None
        yield store


def write_json(out: TextIO, data: Any, *, indent: int | None = 2) -> None:
    out.write(json.dumps(data, ensure_ascii=False, indent=indent, separators=None if indent else (",", ":")))
    out.write("\n")
    out.flush()


_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")


def printable(value: str) -> str:
    """``value`` safe for a terminal: control characters (ANSI escapes...) shown as ``\\xNN``."""
    return _CONTROL.sub(lambda match: f"\\x{ord(match.group()):02x}", value)


def format_age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 0:
        seconds = 0.0
    if seconds < 60:
        return f"{seconds:.1f} s"
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def write_table(out: TextIO, header: list[str], rows: list[list[str]]) -> None:
    """Columns padded to their widest cell, two spaces apart."""
    rows = [[printable(cell) for cell in row] for row in rows]  # names come from Redis
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        out.write("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip() + "\n")


def shorten(value: str, limit: int = 80) -> str:
    """One line of at most ``limit`` characters."""
    flat = printable(" ".join(value.split()))
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"


__all__ = (
    "EXIT_NOT_FOUND",
    "EXIT_OK",
    "EXIT_UNREACHABLE",
    "aconnected_store",
    "format_age",
    "printable",
    "shorten",
    "text",
    "text_fields",
    "write_json",
    "write_table",
)
