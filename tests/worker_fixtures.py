"""Real worker processes for the tests: start, watch, signal and stop ``brokeragents worker``.

A :class:`Cluster` belongs to one test. It starts ``python -m brokeragents worker ...`` and
``python -m brokeragents call ...`` subprocesses with ``cwd=tests/worker_apps`` (the agent modules
live there, imported the way users import theirs), writes each one's output to a log file, waits
until a worker is registered (its heartbeat hash names its pid), and at teardown stops every
process it started, by pid: SIGTERM, then SIGKILL for any that did not exit. Every test gets its
own key prefix, and the keys under it are deleted at the end.

Use the ``cluster`` fixture (``pytest_plugins = ("worker_fixtures",)`` in the test module), or
build a :class:`Cluster` on your own server (e.g. an :class:`EmbeddedServer` to restart).

PYTEST_DONT_REWRITE: test modules import it directly as well as load it as a plugin.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from brokeragents import MiniAgents
from brokeragents._embedded import _die_with_parent
from brokeragents.errors import ReplyRestartedError
from brokeragents.keys import Keys
from helpers import wait_until

APPS_DIR = Path(__file__).parent / "worker_apps"
PROJECT_DIR = Path(__file__).parent.parent
# Short settings so crash tests run in seconds: a worker is dead after 2 s without heartbeat
# (heartbeats every 0.67 s), and dead workers are looked for every second.
WORKER_TIMEOUT_S = 2.0
READY_TIMEOUT_S = 20.0
STOP_TIMEOUT_S = 10.0


@dataclass
class Proc:
    """One subprocess started by a :class:`Cluster`."""

    label: str
    popen: subprocess.Popen[bytes]
    log_path: Path
    started_at: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def returncode(self) -> int | None:
        return self.popen.poll()

    def is_running(self) -> bool:
        return self.popen.poll() is None

    def output(self) -> str:
        """Everything the process wrote so far (stdout and stderr together)."""
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def send(self, signum: int) -> None:
        if self.is_running():
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signum)

    async def await_exit(self, timeout_s: float = STOP_TIMEOUT_S) -> int:
        """Wait until the process exited; return its exit code (negative: killed by that signal)."""
        await wait_until(lambda: not self.is_running(), timeout_s, f"{self.label} (pid {self.pid}) to exit")
        code = self.popen.returncode
        assert code is not None
        return code


@dataclass
class WorkerProc(Proc):
    name: str = ""


class Cluster:
    """Worker and CLI processes of one test, on one Redis URL under one key prefix."""

    def __init__(self, redis_url: str, log_dir: Path, *, key_prefix: str | None = None) -> None:
        self.redis_url = redis_url
        self.prefix = key_prefix or f"t{uuid.uuid4().hex[:10]}"
        self.keys = Keys(self.prefix)
        self.log_dir = log_dir
        self.redis: Any = redis.asyncio.Redis.from_url(redis_url, socket_timeout=30)
        self.procs: list[Proc] = []
        self._cli_processes: list[asyncio.subprocess.Process] = []
        self._counter = 0

    async def areconnect(self) -> None:
        """A new client for the test's own commands (after the server was restarted)."""
        await self.redis.aclose()
        self.redis = redis.asyncio.Redis.from_url(self.redis_url, socket_timeout=30)

    # --- keys ---------------------------------------------------------------------------------------

    def key(self, name: str) -> str:
        """A control key of the test agents (``tests/worker_apps/control.py``)."""
        return f"{self.prefix}:test:{name}"

    async def alist(self, name: str) -> list[str]:
        return [raw.decode() for raw in await self.redis.lrange(self.key(name), 0, -1)]

    # --- processes -------------------------------------------------------------------------------

    def _spawn(
        self, label: str, args: Sequence[str], *, env: dict[str, str], cwd: Path
    ) -> tuple[subprocess.Popen[bytes], Path]:
        self._counter += 1
        log_path = self.log_dir / f"{self._counter:02d}-{label}.log"
        inherited = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DYNO")}
        full_env = {**inherited, "PYTHONUNBUFFERED": "1", **env}
        parent_pid = os.getpid()
        with open(log_path, "wb") as log:
            popen = subprocess.Popen(
                [sys.executable, "-m", "brokeragents", *args],
                cwd=cwd,
                env=full_env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                preexec_fn=lambda: _die_with_parent(parent_pid),  # never outlive the test run
            )
        return popen, log_path

    def start_worker(
        self,
        *targets: str,
        name: str | None = None,
        concurrency: int = 4,
        worker_timeout_s: float = WORKER_TIMEOUT_S,
        shutdown_grace_s: float = 2.0,
        env: dict[str, str] | None = None,
        url_from_env: bool = False,
        cwd: Path = APPS_DIR,
        extra_args: Sequence[str] = (),
    ) -> WorkerProc:
        """Start ``brokeragents worker TARGETS`` (not waiting until it is ready)."""
        name = name or f"w{self._counter + 1}-{uuid.uuid4().hex[:6]}"
        args = [
            "worker",
            *targets,
            "--name",
            name,
            "--concurrency",
            str(concurrency),
            "--worker-timeout-s",
            str(worker_timeout_s),
            "--shutdown-grace-s",
            str(shutdown_grace_s),
            "--key-prefix",
            self.prefix,
            *extra_args,
        ]
        env = dict(env or {})
        if url_from_env:
            env["REDIS_URL"] = self.redis_url
        else:
            args += ["--redis-url", self.redis_url]
        popen, log_path = self._spawn(f"worker-{name}", args, env=env, cwd=cwd)
        proc = WorkerProc(f"worker {name}", popen, log_path, name=name)
        self.procs.append(proc)
        return proc

    async def aworker(self, *targets: str, **kwargs: Any) -> WorkerProc:
        """Start a worker and wait until it is registered and reading."""
        proc = self.start_worker(*targets, **kwargs)
        await self.await_ready(proc)
        return proc

    async def aworkers(self, count: int, *targets: str, **kwargs: Any) -> list[WorkerProc]:
        """Start ``count`` workers at once and wait until all are registered."""
        procs = [self.start_worker(*targets, **kwargs) for _ in range(count)]
        for proc in procs:
            await self.await_ready(proc)
        return procs

    async def await_ready(self, proc: WorkerProc, timeout_s: float = READY_TIMEOUT_S) -> None:
        """Wait until ``proc`` heartbeated (its hash in the registry carries its pid)."""

        async def registered() -> bool:
            running = proc.is_running()  # checked first: it may register, then die at once
            pid = await self.redis.hget(self.keys.worker(proc.name), "pid")
            if pid is not None and int(pid) == proc.pid:
                return True
            if not running:
                raise AssertionError(f"{proc.label} exited with {proc.returncode}:\n{proc.output()}")
            return False

        await wait_until(registered, timeout_s, f"{proc.label} to register")

    async def acall_cli(
        self, *args: str, timeout_s: float = 60.0, env: dict[str, str] | None = None
    ) -> tuple[int, str, str]:
        """Run ``brokeragents call ARGS`` to the end; return (exit code, stdout, stderr)."""
        process = await self.start_call_cli(*args, env=env)
        stdout, stderr = await asyncio.wait_for(process.communicate(), timeout_s)
        assert process.returncode is not None
        return process.returncode, stdout.decode(), stderr.decode()

    async def start_call_cli(self, *args: str, env: dict[str, str] | None = None) -> asyncio.subprocess.Process:
        """Start ``brokeragents call ARGS`` with piped stdout/stderr (stopped at teardown if still running)."""
        inherited = {k: v for k, v in os.environ.items() if k != "REDIS_URL"}
        full_env = {**inherited, "PYTHONUNBUFFERED": "1", **(env or {})}
        if "REDIS_URL" not in full_env:
            args = (*args, "--redis-url", self.redis_url)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "brokeragents", "call", *args, "--key-prefix", self.prefix,
            cwd=APPS_DIR, env=full_env, stdin=subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._cli_processes.append(process)
        return process

    @contextlib.asynccontextmanager
    async def mini_agents(self, **kwargs: Any) -> AsyncIterator[MiniAgents]:
        """A caller context on this cluster's Redis and prefix.

        When the test fails inside it, calls still waiting for a reply are cancelled, so the
        failure is reported instead of the context waiting for replies that will never come.
        """
        context = MiniAgents(redis_url=self.redis_url, key_prefix=self.prefix, **kwargs)
        await context.__aenter__()
        try:
            yield context
        except BaseException:
            context.top_level_calls.clear()
            for task in list(context.child_tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(context.afinalize(), STOP_TIMEOUT_S)
            raise
        await context.__aexit__(None, None, None)

    # --- Redis views ---------------------------------------------------------------------------------

    async def apending(self, alias: str) -> dict[str, int]:
        """Pending entries per consumer in the inbox of ``alias``."""
        summary = await self.redis.xpending(self.keys.agent_inbox(alias), "workers")
        return {c["name"].decode(): int(c["pending"]) for c in summary.get("consumers") or []}

    async def acall_hash(self, call_id: str) -> dict[str, str]:
        raw = await self.redis.hgetall(self.keys.call(call_id))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def adead_letters(self) -> list[dict[str, str]]:
        entries = await self.redis.xrange(self.keys.dead_letters())
        return [{k.decode(): v.decode() for k, v in fields.items()} for _id, fields in entries]

    # --- teardown ------------------------------------------------------------------------------------

    async def astop_all(self) -> None:
        """Stop every process this cluster started (SIGTERM, then SIGKILL), by pid."""
        for process in self._cli_processes:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(process.wait(), STOP_TIMEOUT_S)
        running = [proc for proc in self.procs if proc.is_running()]
        for proc in running:
            proc.send(signal.SIGTERM)
        for proc in running:
            try:
                await proc.await_exit(STOP_TIMEOUT_S)
            except AssertionError:
                proc.send(signal.SIGKILL)
                proc.popen.wait()

    async def adelete_keys(self) -> None:
        keys = [key async for key in self.redis.scan_iter(match=f"{self.prefix}:*", count=1000)]
        for start in range(0, len(keys), 500):
            await self.redis.delete(*keys[start : start + 500])

    def dump_logs(self) -> str:
        return "\n".join(
            f"----- {proc.label} (pid {proc.pid}, exit {proc.returncode})\n{proc.output()}" for proc in self.procs
        )

    async def aclose(self) -> None:
        await self.redis.aclose()


async def consume_live(reply: Any) -> list[tuple[str, str]]:
    """What a consumer iterating the reply sees: whole messages, cut messages and restarts."""
    events: list[tuple[str, str]] = []
    iterator = reply.__aiter__()
    while True:
        try:
            message_promise = await iterator.__anext__()
        except StopAsyncIteration:
            return events
        except ReplyRestartedError:
            events.append(("restart", ""))
            continue
        tokens: list[str] = []
        try:
            async for token in message_promise:
                tokens.append(str(token))
        except ReplyRestartedError:
            events.append(("cut", "".join(tokens)))
        else:
            events.append(("message", "".join(tokens)))



@contextlib.asynccontextmanager
async def acluster(
    redis_url: str, log_dir: Path, *, key_prefix: str | None = None, keep_keys: bool = False
) -> AsyncIterator[Cluster]:
    """A :class:`Cluster` that stops its processes and deletes its keys on exit."""
    cluster = Cluster(redis_url, log_dir, key_prefix=key_prefix)
    try:
        yield cluster
    finally:
        try:
            await cluster.astop_all()
            print(cluster.dump_logs())  # shown by pytest when the test failed
            if not keep_keys:
                with contextlib.suppress(Exception):
                    await cluster.adelete_keys()
        finally:
            await cluster.aclose()


@pytest.fixture
async def cluster(real_redis_url: str, tmp_path: Path) -> AsyncIterator[Cluster]:
    """A :class:`Cluster` on the test session's real server, under a fresh key prefix."""
    async with acluster(real_redis_url, tmp_path) as new_cluster:
        yield new_cluster
