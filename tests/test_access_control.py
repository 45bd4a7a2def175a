"""Issue 6, point 3: ACL users, TLS, one key prefix per application, no credentials in output.

- A Redis ACL user with a password (limited to its application's keys) runs workers and calls.
- TLS (``rediss://``) works, with Debian's redis-server (the bundled valkey has no TLS).
- Two applications share one Redis under two key prefixes without seeing each other.
- Passwords never appear in worker logs nor in ``status`` output (:func:`redact_url`).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio

from brokeragents import MiniAgent
from brokeragents._embedded import EmbeddedServer, _die_with_parent
from brokeragents.keys import Keys
from brokeragents.status import acollect_status, arun_status
from brokeragents.urls import redact_url, scrub
from helpers import Backend, wait_until, wait_until_sync
from ops_support import arun_cli, aserving, caller, free_port, where
from worker_fixtures import Cluster, acluster

PASSWORD = "Pa55-w0rd-never-shown"


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("redis://app:secret@host:6379/0", "redis://app:***@host:6379/0"),
        ("redis://:secret@host", "redis://:***@host"),
        ("rediss://app:p%40ss@10.0.0.1:6380/2", "rediss://app:***@10.0.0.1:6380/2"),
        ("redis://host:6379/0?password=secret&db=1", "redis://host:6379/0?password=***&db=1"),
        ("unix:///run/redis.sock?password=secret", "unix:///run/redis.sock?password=***"),
        ("redis://app@host", "redis://app@host"),  # a user name alone is no secret
        ("redis://host:6379/0", "redis://host:6379/0"),
    ],
)
def test_redact_url(url: str, shown: str) -> None:
    assert redact_url(url) == shown


def test_scrub_masks_every_credential_of_a_url_in_a_text() -> None:
    url = "redis://app:p%40ss@host/0?token=tok"
    text = scrub(f"failed: {url} (p@ss, p%40ss, tok)", url)
    assert text == "failed: redis://app:***@host/0?token=*** (***, ***, ***)"


async def test_applications_under_two_prefixes_never_see_each_other(redis_backend: Backend) -> None:
    client = redis_backend.client()
    keys_a, keys_b = Keys("appa"), Keys("appb")
    async with aserving([where], client, prefix="appb", name="w-b") as worker_b, caller(client, "appa"):
        reply = MiniAgent(alias="WHERE").trigger()
        await wait_until(lambda: _xlen(client, keys_a.agent_inbox("WHERE")), what="the call in appa's inbox")
        status_a = await acollect_status(client, keys_a)
        assert (status_a.agents, status_a.workers) == ([], [])  # appb's worker is not appa's
        async with aserving([where], client, prefix="appa", name="w-a"):
            assert [str(m) for m in await reply] == ["served under appa"]
            status_a = await acollect_status(client, keys_a)
            status_b = await acollect_status(client, keys_b)
    assert worker_b.calls_served == 0
    assert [w.name for w in status_a.workers] == ["w-a"] and [w.name for w in status_b.workers] == ["w-b"]
    assert (status_a.calls_logged, status_b.calls_logged) == (1, 0)
    assert not await client.exists(keys_b.agent_inbox("WHERE")) or not await client.xlen(keys_b.agent_inbox("WHERE"))


async def _xlen(client: redis.asyncio.Redis, key: str) -> bool:
    return bool(await client.xlen(key))


# --- servers with credentials ---------------------------------------------------------------------


@pytest.fixture
def acl_server() -> Iterator[tuple[str, int]]:
    """A server whose user ``app`` has a password and may only touch keys under ``appa:``."""
    server = EmbeddedServer()
    server.start()
    try:
        admin = redis.Redis.from_url(server.url)
        admin.acl_setuser("app", enabled=True, passwords=[f"+{PASSWORD}"], keys=["appa:*"], channels=["*"],
                          commands=["+@all", "-@dangerous"])  # fmt: skip
        admin.close()
        assert server.port is not None
        yield "127.0.0.1", server.port
    finally:
        server.stop()


async def _check_no_password_shown(cluster: Cluster, url: str) -> None:
    """Serve a call as the ACL user; neither the worker's log nor ``status`` shows the password."""
    worker = await cluster.aworker("echo_app:echo", name="w-acl")
    code, out, err = await cluster.acall_cli("ECHO", "over acl")
    assert (code, out.strip()) == (0, "echo: over acl"), err
    code, status_out, err = await arun_cli("status", "--redis-url", url, "--key-prefix", cluster.prefix)
    assert code == 0, err
    assert "w-acl" in status_out and "alive" in status_out
    shown = redact_url(url)
    assert status_out.splitlines()[0].startswith(f"Redis {shown}")
    assert f"Connecting to {shown}" in worker.output()
    for text in (status_out, err, worker.output(), out):
        assert PASSWORD not in text


@pytest.mark.real_redis
async def test_an_acl_user_with_a_password_runs_workers_and_calls(acl_server: tuple[str, int], tmp_path: Path) -> None:
    host, port = acl_server
    url = f"redis://app:{PASSWORD}@{host}:{port}/0"
    async with acluster(url, tmp_path, key_prefix="appa") as cluster:
        await _check_no_password_shown(cluster, url)

    # The user cannot read another application's keys, and a wrong password is refused: both
    # are reported without the password.
    code, out, err = await _astatus(url, "appb")
    assert (code, out) == (2, "") and "No permissions" in err and PASSWORD not in err
    code, out, err = await _astatus(f"redis://app:{PASSWORD}-wrong@{host}:{port}/0")
    assert (code, out) == (2, "") and PASSWORD not in err and "app:***@" in err


async def _astatus(url: str, key_prefix: str = "ba") -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = await arun_status(redis_url=url, key_prefix=key_prefix, out=out, err=err)
    return code, out.getvalue(), err.getvalue()


# --- TLS -----------------------------------------------------------------------------------------------


def _tls_capable_server() -> str | None:
    binary = shutil.which("redis-server")
    if binary is None or shutil.which("openssl") is None:
        return None
    # Built with TLS, it links OpenSSL; the bundled valkey answers "Failed finding TLS support".
    ldd = subprocess.run(["ldd", binary], capture_output=True, text=True, check=False)
    return binary if "libssl" in ldd.stdout else None


@contextlib.contextmanager
def _tls_server(tmp_path: Path) -> Iterator[tuple[int, Path]]:
    binary = _tls_capable_server()
    if binary is None:
        reason = "no redis-server built with TLS (or no openssl) here; .ci/run installs them"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)  # CI runs everything
        pytest.skip(reason)
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key), "-out", str(cert),
         "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
        check=True, capture_output=True,
    )  # fmt: skip
    port = free_port()
    parent = os.getpid()
    process = subprocess.Popen(
        [binary, "--port", "0", "--tls-port", str(port), "--bind", "127.0.0.1", "--tls-cert-file", str(cert),
         "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert), "--tls-auth-clients", "no",
         "--save", "", "--appendonly", "no", "--dir", str(tmp_path),
         "--user", "default", "off", "--user", "app", "on", f">{PASSWORD}", "~*", "&*", "+@all"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, preexec_fn=lambda: _die_with_parent(parent),
    )  # fmt: skip
    try:
        probe = redis.Redis(host="127.0.0.1", port=port, username="app", password=PASSWORD, ssl=True,
                            ssl_ca_certs=str(cert), socket_timeout=1)  # fmt: skip

        def answers() -> bool:
            if process.poll() is not None:
                raise AssertionError(f"redis-server exited with {process.returncode}")
            with contextlib.suppress(redis.RedisError, OSError):
                return bool(probe.ping())
            return False

        wait_until_sync(answers, what="the TLS server")
        probe.close()
        yield port, cert
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@pytest.mark.real_redis
async def test_tls_with_an_acl_user(tmp_path: Path) -> None:
    with _tls_server(tmp_path) as (port, cert):
        url = f"rediss://app:{PASSWORD}@127.0.0.1:{port}/0?ssl_ca_certs={cert}&ssl_cert_reqs=required"
        async with acluster(url, tmp_path, key_prefix="tls") as cluster:
            await _check_no_password_shown(cluster, url)
        # Without TLS the server does not answer at all (it has no plain port).
        code, _out, err = await _astatus(f"redis://app:{PASSWORD}@127.0.0.1:{port}/0")
        assert code == 2 and PASSWORD not in err

