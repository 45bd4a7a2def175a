"""The LLM examples (chat, research pipeline, self-development agents) and the demo, end to end.

Each runs as a user runs it, in subprocesses, without any key: the fake LLM answers. The provider
keys of the environment are removed first, so a CI job that has them still gets deterministic
output. With a key (here: the loopback fake servers) the same code talks to the real SDKs.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from brokeragents import MiniAgents
from brokeragents._embedded import EmbeddedServer, _die_with_parent
from brokeragents.ext.llms.pick import (
    DEFAULT_ANTHROPIC_MODEL,
    DEFAULT_OPENAI_MODEL,
    llm_provider,
    pick_llm_agent,
)
from brokeragents.keys import Keys
from fake_llm_servers import FakeAnthropicServer, FakeOpenAIServer
from helpers import wait_until_sync

ROOT = Path(__file__).resolve().parent.parent
PROVIDER_VARIABLES = (
    "OPENAI_API_KEY",
    "OPENAI_BASE_URL",
    "ANTHROPIC_API_KEY",
    "ANTHROPIC_AUTH_TOKEN",
    "ANTHROPIC_BASE_URL",
    "BROKERAGENTS_LLM",
    "BROKERAGENTS_OPENAI_MODEL",
    "BROKERAGENTS_ANTHROPIC_MODEL",
    "BROKERAGENTS_ANTHROPIC_MAX_TOKENS",
    "REDIS_URL",
    "DYNO",
)
RUN_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
ANSI = re.compile(r"\x1b\[[0-9;]*m")


def offline_env(**extra: str) -> dict[str, str]:
    """The environment without any LLM key or Redis URL, plus ``extra``."""
    env = {key: value for key, value in os.environ.items() if key not in PROVIDER_VARIABLES}
    return {**env, "PYTHONUNBUFFERED": "1", **extra}


def run(args: list[str], *, stdin: str = "", env: dict[str, str] | None = None) -> str:
    """Run a command from the repository root; return its stdout without colours (it must succeed)."""
    result = subprocess.run(
        args, cwd=ROOT, input=stdin, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
        env=env or offline_env(), check=False,
    )  # fmt: skip
    assert result.returncode == 0, f"{args} exited with {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return ANSI.sub("", result.stdout)


@pytest.fixture
def redis_url() -> Iterator[str]:
    """A server of this test's own (never the developer's 6379)."""
    with EmbeddedServer() as server:
        yield server.url


# --- pick_llm_agent ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("environ", "provider"),
    [
        ({}, "fake"),
        ({"OPENAI_API_KEY": ""}, "fake"),
        ({"OPENAI_API_KEY": "sk-x"}, "openai"),
        ({"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, "openai"),
        ({"ANTHROPIC_API_KEY": "sk-ant"}, "anthropic"),
        ({"ANTHROPIC_BASE_URL": "http://127.0.0.1:1"}, "anthropic"),
        ({"OPENAI_API_KEY": "sk-x", "ANTHROPIC_API_KEY": "sk-ant"}, "openai"),
        ({"OPENAI_API_KEY": "sk-x", "BROKERAGENTS_LLM": "anthropic"}, "anthropic"),
        ({"OPENAI_API_KEY": "sk-x", "BROKERAGENTS_LLM": "Fake"}, "fake"),
    ],
)
def test_the_provider_follows_the_environment(environ: dict[str, str], provider: str) -> None:
    assert llm_provider(environ) == provider


def test_an_unknown_forced_provider_is_refused() -> None:
    with pytest.raises(ValueError, match="BROKERAGENTS_LLM"):
        llm_provider({"BROKERAGENTS_LLM": "llama"})


def test_the_picked_agent_has_the_configured_model_and_options() -> None:
    fake = pick_llm_agent(script="hi", alias="X", token_delay_s=0.0, system="s", environ={})
    assert (fake.alias, fake.static_kwargs["script"], fake.static_kwargs["token_delay_s"]) == ("X", "hi", 0.0)
    openai = pick_llm_agent(script="ignored", token_delay_s=0.0, environ={"OPENAI_API_KEY": "k"})
    assert openai.alias == "OPENAI_AGENT"
    assert openai.static_kwargs == {"model": DEFAULT_OPENAI_MODEL}
    custom = pick_llm_agent(environ={"OPENAI_API_KEY": "k", "BROKERAGENTS_OPENAI_MODEL": "gpt-x"}, temperature=0)
    assert custom.static_kwargs == {"model": "gpt-x", "temperature": 0}
    anthropic = pick_llm_agent(environ={"ANTHROPIC_API_KEY": "k", "BROKERAGENTS_ANTHROPIC_MAX_TOKENS": "99"})
    assert anthropic.static_kwargs == {"model": DEFAULT_ANTHROPIC_MODEL, "max_tokens": 99}


async def test_with_an_openai_endpoint_the_picked_agent_calls_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeOpenAIServer() as server:
        monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
        monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
        async with MiniAgents():
            replies = await pick_llm_agent(script="not this", system="Be brief.").trigger("hi")
    assert str(replies[0]) == "You said: hi"  # the fake server echoes
    body = server.requests[0].body
    assert body["model"] == DEFAULT_OPENAI_MODEL
    assert body["messages"] == [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "hi"}]


async def test_with_an_anthropic_endpoint_the_picked_agent_calls_it(monkeypatch: pytest.MonkeyPatch) -> None:
    async with FakeAnthropicServer() as server:
        monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
        monkeypatch.setenv("ANTHROPIC_BASE_URL", server.base_url)
        for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "BROKERAGENTS_LLM"):
            monkeypatch.delenv(name, raising=False)
        async with MiniAgents():
            replies = await pick_llm_agent(script="not this", system="Be brief.").trigger("hi")
    assert str(replies[0]) == "You said: hi"
    body = server.requests[0].body
    assert (body["model"], body["max_tokens"], body["system"]) == (DEFAULT_ANTHROPIC_MODEL, 1024, "Be brief.")


# --- examples/chat.py -------------------------------------------------------------------------------


def test_the_chat_example_answers_each_line_until_exit() -> None:
    output = run([sys.executable, "examples/chat.py"], stdin="hello there\nhow are you?\nexit\nnever read\n")
    assert "USER: hello there" in output
    assert "ASSISTANT_AGENT: You said: hello there" in output
    assert "ASSISTANT_AGENT: You said: how are you?" in output
    assert "never read" not in output


async def test_the_chat_example_talks_to_openai_when_a_key_is_set() -> None:
    async with FakeOpenAIServer() as server:
        env = offline_env(OPENAI_API_KEY="sk-test", OPENAI_BASE_URL=server.base_url)
        process = await asyncio.create_subprocess_exec(
            sys.executable, "examples/chat.py", cwd=ROOT, env=env,
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        )  # fmt: skip
        stdout, stderr = await asyncio.wait_for(process.communicate(b"hi\nagain\nexit\n"), RUN_TIMEOUT_S)
    assert process.returncode == 0, stderr.decode()
    output = ANSI.sub("", stdout.decode())
    assert "ASSISTANT_AGENT: You said: again" in output  # what the server streamed back
    assert [request.body["model"] for request in server.requests] == [DEFAULT_OPENAI_MODEL] * 2
    second = server.requests[1].body["messages"]
    assert second[0]["role"] == "system"  # the system prompt first, then the whole dialog so far
    assert [(m["role"], m["content"]) for m in second[1:]] == [
        ("user", "hi"),
        ("assistant", "You said: hi"),
        ("user", "again"),
    ]


# --- examples/research ------------------------------------------------------------------------------


def procfile_commands() -> list[tuple[str, list[str]]]:
    """(process type, command) for each line of the root Procfile."""
    commands = []
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            name, command = line.split(":", 1)
            commands.append((name.strip(), shlex.split(command)))
    return commands


def test_the_procfile_serves_the_research_pipeline() -> None:
    targets = [command[2] for _name, command in procfile_commands()]
    assert sorted(targets) == sorted(
        f"examples.research.agents:{agent}"
        for agent in ("research_agent", "search_agent", "summarizer_agent", "writer_agent")
    )


@contextlib.contextmanager
def procfile_workers(redis_url: str, log_dir: Path) -> Iterator[dict[str, subprocess.Popen[bytes]]]:
    """Every Procfile line as a process, named like a Heroku dyno; all stopped (by pid) on exit."""
    processes: dict[str, subprocess.Popen[bytes]] = {}
    parent_pid = os.getpid()
    try:
        for name, command in procfile_commands():
            assert command[0] == "brokeragents"
            with open(log_dir / f"{name}.log", "wb") as log:
                processes[f"{name}.1"] = subprocess.Popen(
                    [sys.executable, "-m", "brokeragents", *command[1:]],
                    cwd=ROOT, env=offline_env(REDIS_URL=redis_url, DYNO=f"{name}.1"),
                    stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                    preexec_fn=lambda: _die_with_parent(parent_pid),
                )  # fmt: skip
        yield processes
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        for process in processes.values():
            try:
                process.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        for path in sorted(log_dir.glob("*.log")):
            print(f"----- {path.name}\n{path.read_text(errors='replace')}")  # shown when the test failed


def test_the_research_pipeline_runs_each_agent_in_its_own_worker(redis_url: str, tmp_path: Path) -> None:
    keys = Keys()
    client: Any = redis.Redis.from_url(redis_url, decode_responses=True)
    try:
        with procfile_workers(redis_url, tmp_path) as workers:

            def all_registered() -> bool:
                for name, process in workers.items():
                    assert process.poll() is None, f"{name} exited with {process.returncode}"
                return all(client.hget(keys.worker(name), "pid") == str(p.pid) for name, p in workers.items())

            wait_until_sync(all_registered, READY_TIMEOUT_S, "the four workers to register")
            output = run([sys.executable, "-m", "examples.research.main"], env=offline_env(REDIS_URL=redis_url))
            assert all(process.poll() is None for process in workers.values())
            call_keys = client.scan_iter(match=keys.call_pattern(), count=1000)
            calls = [client.hgetall(key) for key in call_keys if client.type(key) == "hash"]
    finally:
        client.close()

    lines = output.splitlines()
    assert lines[0] == "Question: How do agents stream replies across processes?"
    labels = [line.split("] ", 1)[0] + "]" for line in lines if line.startswith("[")]
    assert labels[0] == "[RESEARCH_AGENT]" and labels[-1] == "[WRITER_AGENT]"  # the answer comes last
    assert sorted(labels[1:-1]) == ["[SEARCH_AGENT]"] * 4 + ["[SUMMARIZER_AGENT]"] * 2
    assert "[SUMMARIZER_AGENT] On 'How do agents stream replies across processes?': A stream is an" in output
    answer = lines[-1]
    assert answer.startswith("[WRITER_AGENT] In short: A stream is an append-only log.")
    assert answer.endswith("Sources: MiniAgents, Redis Streams, Streaming LLM replies, Trimming streams.")

    served_by = {(call["agent"], call.get("worker", "")) for call in calls if call.get("agent", "").endswith("_AGENT")}
    pipeline = {(agent, worker) for agent, worker in served_by if agent != "FAKE_LLM_AGENT"}
    assert pipeline == {
        ("RESEARCH_AGENT", "research.1"),
        ("SEARCH_AGENT", "search.1"),
        ("SUMMARIZER_AGENT", "summarizer.1"),
        ("WRITER_AGENT", "writer.1"),
    }
    # The LLM calls ran inside the summarizer and writer workers (no worker serves the fake LLM).
    assert {worker for agent, worker in served_by if agent == "FAKE_LLM_AGENT"} == {""}


# --- examples/self_dev ------------------------------------------------------------------------------


def test_the_explainer_answers_from_the_files_it_found() -> None:
    output = run([sys.executable, "-m", "examples.self_dev.explainer", "How does a worker take over a crashed call?"])
    read, answer = output.splitlines()
    files = read.removeprefix("[EXPLAINER_AGENT] (read: ").removesuffix(")").split(", ")
    assert 1 <= len(files) <= 3 and all((ROOT / name).is_file() for name in files)
    assert "brokeragents/worker.py" in files
    assert answer.startswith(f"[EXPLAINER_AGENT] The most relevant file is {files[0]}, which says: ")


def test_the_explainer_chats_about_the_code() -> None:
    output = run([sys.executable, "-m", "examples.self_dev.explainer"], stdin="What is the embedded server?\nexit\n")
    assert "EXPLAINER_AGENT: (read: brokeragents/_embedded.py" in output
    assert "EXPLAINER_AGENT: The most relevant file is brokeragents/_embedded.py, which says:" in output


def test_the_readme_agent_lists_modules_the_readme_does_not_mention() -> None:
    output = run([sys.executable, "-m", "examples.self_dev.readme"])
    lines = output.splitlines()
    assert re.fullmatch(r"\[README_AGENT\] \(read: README\.md, \d+ modules\)", lines[0])
    summary = re.fullmatch(r"\[README_AGENT\] The README never mentions (\d+) of \d+ modules; .*", lines[1])
    assert summary is not None
    readme = (ROOT / "README.md").read_text()
    suggestions = [re.fullmatch(r"\d\. (\S+\.py): .*", line) for line in lines[2:]]
    assert len(suggestions) == min(int(summary.group(1)), 5) and all(suggestions)
    for match in suggestions:
        assert match is not None
        path = match.group(1)
        assert (ROOT / path).is_file() and Path(path).stem not in readme


# --- brokeragents demo ------------------------------------------------------------------------------


def test_the_demo_streams_a_deterministic_answer_without_a_key_and_stops_everything() -> None:
    output = run([sys.executable, "-m", "brokeragents", "demo"])
    assert "[RESEARCH_AGENT] Researching: How do agents stream replies across processes?" in output
    answer = next(line for line in output.splitlines() if line.startswith("[WRITER_AGENT]"))
    assert answer.startswith("[WRITER_AGENT] In short: ")
    assert "Redis Streams keep an append-only log per key" in answer
    assert "Consumer groups share work between processes" in answer
    assert answer.endswith("That is how brokeragents streams agent replies between workers.")
    assert output.rstrip().endswith("Done: workers stopped, server stopped.")
    if not Path("/proc/self").exists():
        return  # no /proc to look for leftover processes in
    server_pid = int(re.search(r"Valkey server at \S+ \(pid (\d+)\)", output).group(1))  # type: ignore[union-attr]
    url = re.search(r"Valkey server at (\S+) ", output).group(1)  # type: ignore[union-attr]
    assert not Path(f"/proc/{server_pid}").exists() or "valkey" not in _cmdline(server_pid)
    assert not [pid for pid in _pids() if url in _cmdline(pid)], "a demo worker outlived the demo"


def _pids() -> list[int]:
    return [int(entry.name) for entry in Path("/proc").iterdir() if entry.name.isdigit()]


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""
