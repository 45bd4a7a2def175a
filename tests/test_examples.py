"""Every example runs as written (MiniAgents programs with only their imports changed)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str, timeout_s: float = 60.0) -> str:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / name), *args],
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_full_duplex_example_answers_each_message_as_it_is_sent() -> None:
    assert run_example("full_duplex.py").splitlines() == ["you said: hello", "you said: world"]


def test_sequence_flattening_example_streams_replays_and_awaits_the_same_tree() -> None:
    output = run_example("sequence_flattening.py")
    streamed = output.split("STREAMING TOKENS:")[1].split("REPLAYING MESSAGES:")[0].split()
    replayed = output.split("REPLAYING MESSAGES:")[1].split("AWAITING THE WHOLE SEQUENCE:")[0].split()
    assert streamed == replayed  # replay gives exactly what streamed, in the same order
    assert "19 messages" in output  # 1 + 3 searches x (2 + 2 pages x 2)
    body = output.split("STREAMING TOKENS:")[1].split("REPLAYING MESSAGES:")[0]
    assert body.count("SEARCH DONE") == 3
    assert body.count("- DONE") == 6


def test_agent_chain_loop_example_runs_three_turns_then_ends() -> None:
    output = run_example("agent_chain_loop.py")
    assert "doubled: 2" in output and "doubled: 4" in output and "doubled: 6" in output
    assert "loop ended after 3 turns" in output
