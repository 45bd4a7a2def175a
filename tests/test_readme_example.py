"""The README's "Twenty lines" section, run as written: its app.py and its three shell commands.

The Python block becomes ``app.py`` in a temporary directory, and each line of the shell block
runs there, against a server of the test's own: ``redis://localhost:6379`` becomes its URL (the
only change), ``brokeragents`` and ``python`` this interpreter. The worker serves the agent, and
both callers (``python app.py`` and ``brokeragents call``) must get its streamed reply from it.
No LLM key is set, so the example's fake LLM answers.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import redis

from brokeragents._embedded import EmbeddedServer, _die_with_parent
from brokeragents.keys import Keys
from helpers import wait_until_sync

README = Path(__file__).resolve().parent.parent / "README.md"
README_URL = "redis://localhost:6379"
MAX_CODE_LINES = 20
TIMEOUT_S = 60.0
_KEY_VARIABLES = ("OPENAI_API_KEY", "OPENAI_BASE_URL", "ANTHROPIC_API_KEY", "ANTHROPIC_BASE_URL", "REDIS_URL", "DYNO")


def section(title: str) -> str:
    text = README.read_text(encoding="utf-8")
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def code_blocks(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def shell_commands(block: str, redis_url: str) -> list[list[str]]:
    """The block's command lines, comments dropped, made runnable here."""
    commands = []
    for line in block.splitlines():
        words = shlex.split(line.replace(README_URL, redis_url), comments=True)
        if words:
            program = {"brokeragents": [sys.executable, "-m", "brokeragents"], "python": [sys.executable]}
            commands.append(program[words[0]] + words[1:])
    return commands


@dataclass
class ServedExample:
    """The README's app.py in a directory, its worker running against a server of the test's own."""

    directory: Path
    redis_url: str
    alias: str
    script: str
    worker_name: str
    app_command: list[str]
    call_command: list[str]
    env: dict[str, str]
    client: Any  # a decoding redis.Redis; its stubs type every reply as bytes | str

    def run(self, command: list[str], **extra_env: str) -> str:
        result = subprocess.run(
            command, cwd=self.directory, env=self.env | extra_env, capture_output=True, text=True,
            timeout=TIMEOUT_S, check=False,
        )  # fmt: skip
        assert result.returncode == 0, f"{command}:\n{result.stdout}\n{result.stderr}"
        return result.stdout.strip()

    def calls(self) -> list[dict[str, str]]:
        keys = [key for key in self.client.scan_iter(match=Keys().call_pattern()) if self.client.type(key) == "hash"]
        return [self.client.hgetall(key) for key in keys]


@pytest.fixture(scope="module")
def served_example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServedExample]:
    directory = tmp_path_factory.mktemp("readme")
    (python_block,) = code_blocks(section("Twenty lines"), "python")
    assert len(python_block.splitlines()) <= MAX_CODE_LINES
    assert python_block.startswith("# app.py\n")
    (directory / "app.py").write_text(python_block, encoding="utf-8")
    script = re.search(r'script="([^"]+)"', python_block).group(1)  # type: ignore[union-attr]
    env = {key: value for key, value in os.environ.items() if key not in _KEY_VARIABLES} | {"PYTHONUNBUFFERED": "1"}
    keys = Keys()
    parent_pid = os.getpid()
    log_path = directory / "worker.log"
    with EmbeddedServer() as server, redis.Redis.from_url(server.url, decode_responses=True) as client:
        (shell_block,) = code_blocks(section("Twenty lines"), "bash")
        worker_command, app_command, call_command = shell_commands(shell_block, server.url)
        assert worker_command[3:5] == ["worker", "app:assistant"] and app_command[1:] == ["app.py"]
        alias = call_command[4]
        with open(log_path, "wb") as log:
            worker = subprocess.Popen(
                worker_command, cwd=directory, env=env, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=lambda: _die_with_parent(parent_pid),
            )  # fmt: skip
        try:

            def served() -> bool:
                assert worker.poll() is None, f"the worker exited:\n{log_path.read_text()}"
                return bool(client.zrange(keys.agent_workers(alias), 0, -1))

            wait_until_sync(served, TIMEOUT_S, f"a worker serving {alias}")
            (worker_name,) = client.zrange(keys.agent_workers(alias), 0, -1)
            assert client.hget(keys.worker(worker_name), "pid") == str(worker.pid)
            yield ServedExample(
                directory, server.url, alias, script, worker_name, app_command, call_command, env, client
            )
        finally:
            if worker.poll() is None:
                worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(TIMEOUT_S / 4)
            except subprocess.TimeoutExpired:
                worker.kill()
                worker.wait()
        assert worker.returncode == 0, log_path.read_text()


def test_the_twenty_lines_stream_an_llm_reply_from_a_worker(served_example: ServedExample) -> None:
    example = served_example
    assert example.run(example.app_command, REDIS_URL=example.redis_url) == example.script
    (call,) = [call for call in example.calls() if call["agent"] == example.alias]
    assert (call["worker"], call["state"]) == (example.worker_name, "done")  # served by the worker process
    # The reply was streamed: its message stream holds it word by word, not as one whole text.
    reply_key = example.client.xrange(call["reply"])[0][1]["key"]
    entries = [fields for _id, fields in example.client.xrange(reply_key) if fields["kind"] == "tokens"]
    tokens = [str(token) for fields in entries for token in json.loads(fields["tokens"])]
    assert len(tokens) == len(example.script.split()) and "".join(tokens) == example.script


def test_the_call_command_streams_the_same_reply(served_example: ServedExample) -> None:
    assert served_example.run(served_example.call_command) == served_example.script
