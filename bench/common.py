"""Shared plumbing of the harness: the server, subprocesses, RESULT lines, statistics.

Everything that runs a measurement runs in a child process (a baseline script, a client of
``bench.client`` or a worker), so the harness process itself stays idle while numbers are taken.
Every child is started by us and stopped by its pid; nothing is left running.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parent.parent
BASELINE_ENV = "BENCH_BASELINE_DIR"
PYTHON = sys.executable
CHILD_TIMEOUT_S = 600.0


def baseline_dir() -> Path:
    """``<repo>/../shared/reference/bench-baseline`` (or ``$BENCH_BASELINE_DIR``)."""
    override = os.environ.get(BASELINE_ENV)
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "reference" / "bench-baseline"
    if not (path / "stream_chain.py").is_file():
        raise SystemExit(
            f"The reference baselines are not at {path}: clone shared/ beside the repo or set {BASELINE_ENV}."
        )
    return path


def die_with_parent() -> None:
    """preexec_fn of every child: SIGTERM when the harness dies (Linux), so nothing is orphaned."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG


def log(text: str) -> None:
    print(text, flush=True)


# --- statistics -----------------------------------------------------------------------------------


def percentile(sorted_values: list[float], p: float) -> float:
    """Nearest-rank percentile of an already sorted list (the baselines use the same definition)."""
    if not sorted_values:
        return float("nan")
    rank = round(p / 100.0 * len(sorted_values))
    return sorted_values[max(0, min(len(sorted_values) - 1, rank - 1))]


@dataclass(frozen=True)
class Summary:
    """Median and spread of one metric over the runs."""

    median: float
    low: float
    high: float
    runs: int

    @classmethod
    def of(cls, values: list[float]) -> Summary:
        clean = [v for v in values if v == v]  # drop NaN (a failed run)
        if not clean:
            return cls(float("nan"), float("nan"), float("nan"), 0)
        return cls(statistics.median(clean), min(clean), max(clean), len(clean))

    def fmt(self, unit: str = "") -> str:
        if self.runs == 0:
            return "n/a"
        if self.runs == 1 or self.low == self.high:
            return f"{fmt_num(self.median)}{unit}"
        return f"{fmt_num(self.median)}{unit} ({fmt_num(self.low)}..{fmt_num(self.high)})"


def fmt_num(value: float) -> str:
    if value != value:
        return "n/a"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3f}"


# --- RESULT lines ---------------------------------------------------------------------------------


def parse_results(output: str) -> dict[str, dict[str, Any]]:
    """``RESULT bench=NAME k=v ...`` lines -> {NAME: {k: number or text}} (the last line wins)."""
    results: dict[str, dict[str, Any]] = {}
    for line in output.splitlines():
        if not line.startswith("RESULT "):
            continue
        fields: dict[str, Any] = {}
        for item in line[len("RESULT ") :].split():
            key, _, raw = item.partition("=")
            try:
                fields[key] = float(raw)
            except ValueError:
                fields[key] = raw
        results[str(fields.pop("bench", "?"))] = fields
    return results


def result_line(bench: str, **values: Any) -> str:
    """The line our own clients print, in the baselines' format."""
    parts = []
    for key, value in values.items():
        if isinstance(value, float):
            value = f"{value:.6g}"
        parts.append(f"{key}={value}")
    return f"RESULT bench={bench} " + " ".join(parts)


class ChildFailedError(RuntimeError):
    """A measuring child process failed; its output tail is in the message."""


def run_child(argv: list[str], *, env: dict[str, str] | None = None, cwd: Path | None = None,
              timeout_s: float = CHILD_TIMEOUT_S) -> str:
    """Run a measuring child to completion and return its stdout (stderr is kept for errors).

    The child gets its own process group: if it times out or we are interrupted, the whole group
    (the child and anything it forked, like stream_chain.py's relays) is stopped by its pgid.
    """
    full_env = {**os.environ, **(env or {})}
    process = subprocess.Popen(
        argv,
        cwd=str(cwd or REPO_ROOT),
        env=full_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=die_with_parent,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _kill_group(process)
        out, err = process.communicate()
        raise ChildFailedError(f"timed out after {timeout_s:g} s: {shlex.join(argv)}\n{err[-2000:]}") from None
    except BaseException:
        _kill_group(process)
        raise
    if process.returncode != 0:
        raise ChildFailedError(
            f"exit code {process.returncode}: {shlex.join(argv)}\n{(out + err)[-3000:]}"
        )
    return out


def _kill_group(process: subprocess.Popen[str]) -> None:
    """Stop a still-running child's process group (its pgid is its pid: start_new_session)."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
    if process.poll() is None:
        process.wait()


def run_baseline(script: str, args: list[str], *, url: str, n: int, runs: int = 1) -> dict[str, dict[str, Any]]:
    """Run one reference script from its own directory; return its RESULT lines."""
    directory = baseline_dir()
    env = {"REDIS_URL": url, "BENCH_RUNS": str(runs), "BENCH_N": str(n)}
    return parse_results(run_child([PYTHON, script, *args], env=env, cwd=directory))


def run_client(args: list[str], *, url: str | None = None,
               timeout_s: float = CHILD_TIMEOUT_S) -> dict[str, dict[str, Any]]:
    """Run ``python -m bench.client ARGS`` (our side of a case); return its RESULT lines."""
    extra = ["--redis-url", url] if url else []
    return parse_results(run_child([PYTHON, "-m", "bench.client", *args, *extra], timeout_s=timeout_s))


def error_summary(exc: BaseException) -> str:
    """A one-line reason for a failed child: its last error-looking line, with how often it repeated."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    errors = [line for line in lines if "rror" in line or "failed" in line or "Too many" in line]
    if not errors:
        return lines[0][:300] if lines else type(exc).__name__
    last = errors[-1]
    repeats = sum(1 for line in lines if line == last)
    return last[:300] + (f" (x{repeats} in the output tail)" if repeats > 1 else "")


# --- the server -----------------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


class BenchServer:
    """Our own Redis for the run: ``redis-server`` from PATH (as in the baseline), else valkey.

    Started with the baseline's settings (loopback, ``--save ''``, ``--appendonly no``); stopped
    by its pid. The 127.0.0.1:6379 server of the machine is never touched.
    """

    def __init__(self) -> None:
        self.url = ""
        self.kind = ""
        self.version = ""
        self.pid: int | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._embedded: Any = None
        self._dir: str | None = None

    def start(self) -> str:
        binary = shutil.which("redis-server")
        if binary:
            self._start_redis_server(binary)
        else:
            from brokeragents._embedded import EmbeddedServer

            self._embedded = EmbeddedServer()
            self.url = self._embedded.start()
            self.pid = self._embedded.pid
            self.kind = "embedded valkey (brokeragents._embedded; no redis-server on PATH)"
        info = self.client().info("server")
        self.version = str(info.get("redis_version", "?"))
        if "valkey_version" in info:
            self.version = f"valkey {info['valkey_version']} (redis_version {self.version})"
        else:
            self.version = f"redis {self.version}"
        return self.url

    def _start_redis_server(self, binary: str) -> None:
        self._dir = tempfile.mkdtemp(prefix="bench-redis-")
        port = _free_port()
        argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--daemonize", "no", "--dir", self._dir, "--loglevel", "warning"]
        self._process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                         stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        self.pid = self._process.pid
        self.url = f"redis://127.0.0.1:{port}/0"
        self.kind = f"{binary} (from PATH)"
        deadline = time.monotonic() + 10
        while True:
            try:
                self.client().ping()
                return
            except Exception:
                if self._process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.02)

    def client(self) -> Any:
        import redis

        return redis.Redis.from_url(self.url)

    def flush(self) -> None:
        with contextlib.closing(self.client()) as client:
            client.flushall()

    def stop(self) -> None:
        if self._embedded is not None:
            self._embedded.stop()
            self._embedded = None
        if self._process is not None:
            if self._process.poll() is None:
                self._process.terminate()
                try:
                    self._process.wait(10)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
            self._process = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None


# --- worker processes -----------------------------------------------------------------------------


@dataclass
class WorkerProcess:
    name: str
    target: str
    process: subprocess.Popen[bytes]
    started_ns: int
    log_path: Path

    @property
    def pid(self) -> int:
        return self.process.pid


@dataclass
class Workers:
    """Worker processes started by the harness (``python -m brokeragents worker``)."""

    url: str
    procs: list[WorkerProcess] = field(default_factory=list)
    log_dir: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="bench-workers-")))

    def start(self, target: str | list[str], name: str, *, concurrency: int = 10) -> WorkerProcess:
        """Spawn a worker serving ``target`` (MODULE:ATTR, or several for one process)."""
        targets = [target] if isinstance(target, str) else target
        argv = [PYTHON, "-m", "brokeragents", "worker", *targets, "--redis-url", self.url, "--name", name,
                "--concurrency", str(concurrency)]
        log_path = self.log_dir / f"{name}.log"
        with open(log_path, "wb") as log_file:
            started = time.monotonic_ns()
            process = subprocess.Popen(argv, cwd=str(REPO_ROOT), stdout=log_file, stderr=subprocess.STDOUT,
                                       stdin=subprocess.DEVNULL, preexec_fn=die_with_parent)
        worker = WorkerProcess(name, " ".join(targets), process, started, log_path)
        self.procs.append(worker)
        return worker

    def wait_served(self, aliases: list[str], *, min_workers: int = 1, timeout_s: float = 60.0) -> None:
        """Poll the registry (a plain ZCOUNT of fresh heartbeats) until every alias is served."""
        import redis

        from brokeragents.keys import Keys

        keys = Keys()
        client = redis.Redis.from_url(self.url)
        deadline = time.monotonic() + timeout_s
        try:
            for alias in aliases:
                while True:
                    cutoff = int(time.time() * 1000) - 10_000
                    if client.zcount(keys.agent_workers(alias), cutoff, "+inf") >= min_workers:
                        break
                    self._check_alive()
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"no worker serves {alias} after {timeout_s:g} s")
                    time.sleep(0.01)
        finally:
            client.close()

    def _check_alive(self) -> None:
        for worker in self.procs:
            if worker.process.poll() is not None:
                tail = worker.log_path.read_text(errors="replace")[-2000:]
                raise ChildFailedError(f"worker {worker.name} exited with {worker.process.returncode}:\n{tail}")

    def stop(self, timeout_s: float = 30.0) -> None:
        """SIGTERM each of our workers (they deregister), then wait; SIGKILL only a stuck one."""
        for worker in self.procs:
            if worker.process.poll() is None:
                worker.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        for worker in self.procs:
            try:
                worker.process.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                worker.process.kill()
                worker.process.wait()
        self.procs.clear()
        shutil.rmtree(self.log_dir, ignore_errors=True)

    def __enter__(self) -> Workers:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()


def cpu_seconds(pid: int) -> float:
    """CPU time (user + system) a live process used so far, from /proc (10 ms resolution)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return float("nan")


def peak_rss_mb(pid: int) -> float:
    """Peak resident set size (VmHWM) of a live process, in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def reset_peak_rss(pid: int) -> bool:
    """Reset VmHWM to the current RSS (Linux ``clear_refs`` 5); False when not allowed."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False
