"""Shared fixtures: the fake/real Redis backend matrix.

``redis_backend`` runs a test twice: on fakeredis (in-process, one ``FakeServer`` per test) and on
a real server (``TEST_REDIS_URL`` if set, else an embedded valkey-server shared by the session and
flushed before each test). The real half carries the ``real_redis`` marker, so
``pytest -m "not real_redis"`` runs the fake half only.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator

import fakeredis
import pytest

import _fakeredis_patch
from brokeragents._embedded import EmbeddedServer
from helpers import Backend

_fakeredis_patch.apply()

TEST_REDIS_URL_ENV = "TEST_REDIS_URL"


@pytest.fixture(scope="session")
def real_redis_url() -> Iterator[str]:
    """URL of a real server: ``TEST_REDIS_URL`` if set, else an embedded one for the session."""
    url = os.environ.get(TEST_REDIS_URL_ENV)
    if url:
        yield url
        return
    server = EmbeddedServer()
    try:
        yield server.start()
    finally:
        server.stop()


@pytest.fixture(
    params=[
        pytest.param("fake", id="fake"),
        pytest.param("real", id="real", marks=pytest.mark.real_redis),
    ]
)
async def redis_backend(request: pytest.FixtureRequest) -> AsyncIterator[Backend]:
    """A :class:`Backend`, once on fakeredis and once on a real server (flushed first)."""
    if request.param == "fake":
        backend = Backend(name="fake", url=None, _fake_server=fakeredis.FakeServer())
    else:
        url: str = request.getfixturevalue("real_redis_url")
        backend = Backend(name="real", url=url)
        await backend.client().flushdb()
    try:
        yield backend
    finally:
        await backend.aclose()
