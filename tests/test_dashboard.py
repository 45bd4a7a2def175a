"""``brokeragents dashboard``: its JSON and SSE endpoints over plain HTTP, and the page end to end.

The HTTP tests run a :class:`Dashboard` in this process on a real server. The end-to-end test
runs ``brokeragents dashboard`` and a worker as subprocesses and drives the page in headless
Chromium (tests/dashboard_e2e: playwright-core with Debian's ``chromium``) while the worker streams.
In CI (``CI=true``) a missing browser or node fails that test; elsewhere it is skipped.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from click.testing import CliRunner

from brokeragents import InteractionContext, MiniAgent, MiniAgents, TextMessage, miniagent
from brokeragents.cli import main as cli_main
from brokeragents.dashboard import Dashboard
from brokeragents.keys import new_id
from brokeragents.registry import Registry
from helpers import wait_until

E2E_DIR = Path(__file__).parent / "dashboard_e2e"
CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")


class RunningDashboard:
    """A dashboard served by this process, and an HTTP client for it."""

    def __init__(self, url: str, session: aiohttp.ClientSession) -> None:
        self.url = url
        self.session = session

    async def json(self, path: str, status: int = 200) -> Any:
        async with self.session.get(self.url + path) as response:
            assert response.status == status, await response.text()
            return await response.json() if status == 200 else await response.text()

    async def events(self, call_id: str) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The SSE events of a call's reply stream, parsed, as they arrive."""
        async with self.session.get(f"{self.url}api/calls/{call_id}/stream") as response:
            assert response.status == 200
            assert response.headers["Content-Type"].startswith("text/event-stream")
            name = None
            async for raw in response.content:
                line = raw.decode().rstrip("\n")
                if line.startswith("event: "):
                    name = line[len("event: ") :]
                elif line.startswith("data: ") and name is not None:
                    yield name, json.loads(line[len("data: ") :])
                    name = None


@pytest.fixture
def prefix() -> str:
    return f"dash{new_id()[:8]}"


@pytest.fixture
async def dashboard(real_redis_url: str, prefix: str) -> AsyncIterator[RunningDashboard]:
    stop = asyncio.Event()
    ready: asyncio.Future[str] = asyncio.get_running_loop().create_future()
    server = Dashboard(redis_url=real_redis_url, key_prefix=prefix)
    task = asyncio.create_task(server.aserve("127.0.0.1", 0, stop=stop, on_ready=ready.set_result))
    try:
        await asyncio.wait({ready, task}, timeout=10, return_when=asyncio.FIRST_COMPLETED)
        if task.done():
            task.result()  # raises why it stopped
        async with aiohttp.ClientSession() as session:
            yield RunningDashboard(ready.result(), session)
    finally:
        stop.set()
        await asyncio.wait_for(task, timeout=10)


gate: asyncio.Queue[str | None] | None = None


@miniagent(alias="DASH_CHILD")
async def dash_child(ctx: InteractionContext) -> None:
    async def tokens(_aux: dict[str, Any]) -> AsyncIterator[str]:
        assert gate is not None
        while (token := await gate.get()) is not None:
            yield token

    ctx.reply(TextMessage.promise(message_token_streamer=tokens))


@miniagent(alias="DASH_PARENT")
async def dash_parent(ctx: InteractionContext, fail: bool = False) -> None:
    ctx.reply("before the child")
    ctx.reply(dash_child.trigger())
    if fail:
        raise ValueError("the parent broke")


async def test_the_page_is_one_self_contained_file(dashboard: RunningDashboard) -> None:
    async with dashboard.session.get(dashboard.url) as response:
        assert response.status == 200
        assert response.content_type == "text/html"
        page = await response.text()
    assert 'id="calls"' in page and 'id="graph"' in page and "EventSource" in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "the page loads something from outside"


async def test_overview_lists_agents_workers_and_calls_with_their_parents(
    dashboard: RunningDashboard, real_redis_url: str, prefix: str
) -> None:
    global gate
    gate = asyncio.Queue()
    for token in ("a", "b", None):
        gate.put_nowait(token)
    async with MiniAgents(redis_url=real_redis_url, key_prefix=prefix, remote_calls="never") as context:
        assert context.store is not None
        await Registry(context.store.redis, context.store.keys).aheartbeat(
            "dash-worker", ["DASH_PARENT"], {"pid": "42", "agents": "DASH_PARENT"}
        )
        assert [str(m) for m in await dash_parent.trigger("go")] == ["before the child", "ab"]

    async def both_done() -> bool:
        overview = await dashboard.json("api/overview")
        return len(overview["calls"]) == 2 and all(call["state"] == "done" for call in overview["calls"])

    await wait_until(both_done, what="both calls to be done")
    overview = await dashboard.json("api/overview")
    assert overview["prefix"] == prefix
    assert [(a["alias"], a["alive"]) for a in overview["agents"]] == [("DASH_PARENT", True)]
    (worker,) = overview["workers"]
    assert (worker["name"], worker["alive"], worker["pid"]) == ("dash-worker", True, "42")
    child, parent = overview["calls"]  # newest first
    assert (child["agent"], parent["agent"]) == ("DASH_CHILD", "DASH_PARENT")
    assert child["parent_call"] == parent["call_id"] and parent["parent_call"] == ""
    assert (await dashboard.json(f"api/calls/{parent['call_id']}"))["agent"] == "DASH_PARENT"


async def test_reply_tokens_stream_live_over_sse(dashboard: RunningDashboard, real_redis_url: str, prefix: str) -> None:
    global gate
    gate = asyncio.Queue()
    async with MiniAgents(redis_url=real_redis_url, key_prefix=prefix, remote_calls="never") as context:
        reply = dash_parent.trigger("go", fail=True)
        drained = asyncio.create_task(_outcomes(reply))
        assert context.store is not None
        await context.store.aflush()
        calls = (await dashboard.json("api/overview"))["calls"]
        events = dashboard.events(next(call["call_id"] for call in calls if call["agent"] == "DASH_PARENT"))
        gate.put_nowait("live ")
        seen = [await anext(events) for _ in range(4)]
        # The first message whole, then the child's first token, while the agent still streams.
        assert seen == [
            ("message", {"index": 0}),
            ("token", {"index": 0, "token": "before the child"}),
            ("message", {"index": 1}),
            ("token", {"index": 1, "token": "live "}),
        ]
        gate.put_nowait("tokens")
        assert await anext(events) == ("token", {"index": 1, "token": "tokens"})
        gate.put_nowait(None)
        rest = [event async for event in events]
        await drained
    assert rest == [("failure", {"type": "ValueError", "message": "the parent broke"}), ("end", {})]


async def _outcomes(sequence: Any) -> None:
    iterator = sequence.__aiter__()
    while True:
        try:
            await iterator.__anext__()
        except StopAsyncIteration:
            return
        except ValueError:
            continue


async def test_bad_and_unknown_call_ids(dashboard: RunningDashboard) -> None:
    assert "letters and digits" in await dashboard.json("api/calls/a-b/stream", status=400)
    assert "letters and digits" in await dashboard.json("api/calls/x%20y", status=400)
    assert "No call" in await dashboard.json(f"api/calls/{new_id()}", status=404)


def test_the_dashboard_command_is_documented() -> None:
    result = CliRunner().invoke(cli_main, ["dashboard", "--help"])
    assert result.exit_code == 0
    for option in ("--port", "--host", "--redis-url", "--key-prefix", "127.0.0.1"):
        assert option in result.output


# --- end to end, in a browser --------------------------------------------------------------------------


def _browser_or_reason() -> str | None:
    node = shutil.which("node")
    if node is None:
        return "node is not installed (apt-get install nodejs)"
    if not os.access(CHROMIUM, os.X_OK):
        return f"no Chromium at {CHROMIUM} (apt-get install chromium, or set CHROMIUM_PATH)"
    if not (E2E_DIR / "node_modules" / "playwright-core").is_dir():
        return "playwright-core is not installed (npm ci --prefix tests/dashboard_e2e)"
    return None


@pytest.fixture
def browser() -> None:
    reason = _browser_or_reason()
    if reason is None:
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"The dashboard browser test cannot run in CI: {reason}. .ci/run must install it.")
    print(f"Skipping the browser test: {reason}")
    pytest.skip(reason)


async def _aline(stream: asyncio.StreamReader, timeout_s: float, what: str) -> str:
    line = await asyncio.wait_for(stream.readline(), timeout=timeout_s)
    assert line, f"{what} ended before printing a line"
    return line.decode().strip()


@pytest.mark.slow
async def test_the_page_shows_agents_workers_calls_and_live_tokens_in_chromium(
    browser: None, real_redis_url: str, prefix: str, tmp_path: Path
) -> None:
    from cluster_fixtures import WorkerProcess  # its agents: CLUSTER_BOSS calls CLUSTER_ECHO

    screenshot = Path(os.environ.get("DASHBOARD_SCREENSHOT") or tmp_path / "dashboard.png")
    text = "tokens stream live from a worker process through Redis Streams into the dashboard page " * 2
    worker = WorkerProcess(real_redis_url, prefix, f"e2e-{new_id()[:6]}", token_delay_s=0.12, worker_timeout_s=10)
    server = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "brokeragents", "dashboard", "--port", "0", "--redis-url", real_redis_url,
        "--key-prefix", prefix, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    node: asyncio.subprocess.Process | None = None
    try:
        assert server.stderr is not None
        announced = await _aline(server.stderr, 20, "brokeragents dashboard")
        match = re.search(r"http://\S+/", announced)
        assert match, announced
        node = await asyncio.create_subprocess_exec(
            "node", str(E2E_DIR / "dashboard_e2e.mjs"), "--url", match.group(0), "--screenshot", str(screenshot),
            "--agents", "CLUSTER_BOSS,CLUSTER_ECHO", "--worker", worker.name, "--calls", "2", "--text", text,
            cwd=E2E_DIR, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        assert node.stdout is not None
        ready = await _aline(node.stdout, 60, "the browser script")
        assert ready == "READY", ready
        async with MiniAgents(redis_url=real_redis_url, key_prefix=prefix) as context:
            assert context.store is not None
            assert await Registry(context.store.redis, context.store.keys).ais_served("CLUSTER_BOSS")
            reply = await asyncio.wait_for(MiniAgent(alias="CLUSTER_BOSS").trigger(text.strip()), timeout=30)
        assert str(reply[0]).strip() == text.strip()
        report = json.loads(await _aline(node.stdout, 60, "the browser script"))
        assert await asyncio.wait_for(node.wait(), timeout=20) == 0, report
    finally:
        if node is not None and node.returncode is None:
            node.kill()
            await node.wait()
        server.terminate()
        code = await asyncio.wait_for(server.wait(), timeout=10)
        output = worker.close()
    assert report["ok"], report
    assert code == 0
    assert len(report["tokenSteps"]) >= 3, report  # the counter grew step by step: tokens arrived live
    assert (report["graphNodes"], report["graphEdges"], report["calls"]) == (2, 1, 2)
    size = await asyncio.to_thread(lambda: screenshot.stat().st_size if screenshot.is_file() else 0)
    assert size > 20_000, (screenshot, size)  # a rendered page, not a blank one
    assert "Traceback" not in output, output
