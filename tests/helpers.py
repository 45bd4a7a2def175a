"""Test helpers: the :class:`Backend` handed out by the ``redis_backend`` fixture, and waiting.

Tests never sleep to wait for something except through :func:`wait_until`/:func:`wait_until_sync`.
"""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import fakeredis
import redis.asyncio

POLL_INTERVAL_S = 0.01


async def wait_until(
    predicate: Callable[[], bool | Awaitable[bool]],
    timeout_s: float = 10.0,
    what: str = "condition",
) -> None:
    """Await until ``predicate()`` (sync or async) is true, yielding to the loop between checks.

    :raises AssertionError: if it is still false after ``timeout_s``
    """
    deadline = time.monotonic() + timeout_s
    while True:
        outcome = predicate()
        if inspect.isawaitable(outcome):
            outcome = await outcome
        if outcome:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(POLL_INTERVAL_S)


def wait_until_sync(
    predicate: Callable[[], bool],
    timeout_s: float = 10.0,
    what: str = "condition",
) -> None:
    """Block until ``predicate()`` is true, checking every few milliseconds.

    :raises AssertionError: if it is still false after ``timeout_s``
    """
    deadline = time.monotonic() + timeout_s
    while not predicate():
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(POLL_INTERVAL_S)


@dataclass
class Backend:
    """One Redis backend under test.

    :ivar name: ``"fake"`` or ``"real"``
    :ivar url: the server URL, ``None`` for the in-process fake
    """

    name: str
    url: str | None
    _fake_server: fakeredis.FakeServer | None = field(default=None, repr=False)
    _clients: list[redis.asyncio.Redis] = field(default_factory=list, repr=False)

    def client(self, **kwargs: Any) -> redis.asyncio.Redis:
        """Return a new client on this backend's data; it is closed when the test ends.

        Keyword arguments go to the client constructor (e.g. ``protocol=3``); responses are bytes
        unless ``decode_responses=True`` is passed.
        """
        options: dict[str, Any] = {"decode_responses": False, **kwargs}
        client: redis.asyncio.Redis
        if self._fake_server is not None:
            client = fakeredis.FakeAsyncRedis(server=self._fake_server, **options)
        else:
            assert self.url is not None
            client = redis.asyncio.Redis.from_url(self.url, **options)
        self._clients.append(client)
        return client

    async def aclose(self) -> None:
        """Close every client handed out by :meth:`client`."""
        clients, self._clients = self._clients, []
        for client in clients:
            await client.aclose()
