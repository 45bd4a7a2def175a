"""Console agents and the user agent: output format, input from a pipe or a terminal, dialogs.

The expected output bytes were observed on MiniAgents 0.0.35. Input from a pipe is read line by
line (MiniAgents drives prompt_toolkit even then), so only the terminal test sees prompt_toolkit.
"""

from __future__ import annotations

import io
import os
import select
import subprocess
import sys
import textwrap
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from brokeragents import InteractionContext, Message, MiniAgent, MiniAgents, TextMessage, miniagent
from brokeragents.ext import (
    AssistantMessage,
    SystemMessage,
    UserMessage,
    console_input_agent,
    console_output_agent,
    console_user_agent,
    dialog_loop,
    in_memory_history_agent,
    user_agent,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
GREEN, RESET = "\x1b[92;1m", "\x1b[0m"
GREETING = (
    f"{GREEN}\nYOU ARE NOW IN A CHAT WITH AN AI ASSISTANT\n\n"
    "Press Enter to send your message.\n"
    "Press Ctrl+Space to insert a newline.\n"
    f'Press Ctrl+C (or type "exit") to quit the conversation.\n{RESET}\n'
)


def printed(label: str | None, *tokens: str, style: str = GREEN) -> str:
    """What console_output_agent prints for one message."""
    head = f"{style}{label}: {RESET}" if label is not None else ""
    return head + "".join(f"{style}{token}{RESET}" for token in tokens) + "\n\n"


class FakeConsole:
    """``feed(text)``: from now on stdin reads ``text`` and stdout writes to ``out``.

    Tests call it themselves: pytest re-installs its own capture when the test body starts,
    which would undo a redirection made by a fixture.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self._monkeypatch = monkeypatch
        self.out = io.StringIO()

    def feed(self, text: str = "") -> None:
        self._monkeypatch.setattr(sys, "stdin", io.StringIO(text))
        self._monkeypatch.setattr(sys, "stdout", self.out)


@pytest.fixture
def console(monkeypatch: pytest.MonkeyPatch) -> FakeConsole:
    return FakeConsole(monkeypatch)


def private_history() -> MiniAgent:
    return in_memory_history_agent.fork(non_freezable_kwargs={"message_list": []})


@miniagent
async def streamed_reply(ctx: InteractionContext) -> None:
    async def tokens(_aux: dict[str, Any]) -> AsyncIterator[str]:
        for token in ["Hel", "lo", " wor", "ld"]:
            yield token

    ctx.reply(AssistantMessage.promise(message_token_streamer=tokens, agent_alias="STREAMY"))


@miniagent
async def echo_assistant(ctx: InteractionContext) -> None:
    messages = await ctx.message_promises
    ctx.reply(AssistantMessage("you said: " + " | ".join(map(str, messages)), agent_alias="ECHO"))


# --- console_output_agent ------------------------------------------------------------------------


async def test_output_labels_each_message_and_prints_its_tokens(console: FakeConsole) -> None:
    messages: list[Any] = [
        TextMessage("plain"),
        UserMessage("from user"),
        AssistantMessage("asst", agent_alias="bot_x"),
        SystemMessage("sys"),
        TextMessage("multi\nline\n"),
        TextMessage("r", role="tool"),
        Message(foo=1),
        TextMessage(""),
    ]
    console.feed()
    async with MiniAgents():
        replies = await console_output_agent.trigger([*messages, streamed_reply.trigger()])

    assert console.out.getvalue() == (
        printed("ASSISTANT", "plain")
        + printed("USER", "from user")
        + printed("BOT_X", "asst")  # the agent alias wins over the role
        + printed("SYSTEM", "sys")
        + printed("ASSISTANT", "multi\nline\n")
        + printed("TOOL", "r")
        + printed("ASSISTANT", '```json\n{"class_":"Message","foo":1}\n```')
        + printed("ASSISTANT", "")
        + printed("STREAMY", "Hel", "lo", " wor", "ld")  # token by token
    )
    assert [str(m) for m in replies[:-1]] == [str(m) for m in messages]
    assert str(replies[-1]) == "Hello world"


async def test_output_options(console: FakeConsole) -> None:
    console.feed()
    async with MiniAgents():
        await console_output_agent.trigger(["a"], mention_aliases=False)
        await console_output_agent.trigger(["b"], assistant_style=33, default_role="narrator")
        await console_output_agent.trigger([])

    assert console.out.getvalue() == printed(None, "a") + printed("NARRATOR", "b", style="\x1b[33m")


# --- console_input_agent (stdin not a terminal) --------------------------------------------------


async def test_input_greets_then_replies_with_what_was_typed(console: FakeConsole) -> None:
    console.feed("  hello  \n")
    async with MiniAgents():
        replies = await console_input_agent.trigger()

    assert list(replies) == [UserMessage("  hello  ")]  # kept as typed
    assert console.out.getvalue() == GREETING + "USER:   hello  \n\n"


async def test_input_passes_its_input_through_without_greeting(console: FakeConsole) -> None:
    console.feed("typed\n")
    async with MiniAgents():
        replies = await console_input_agent.trigger(["shown before"], greeting="HI")

    assert list(replies) == [TextMessage("shown before"), UserMessage("typed")]
    assert console.out.getvalue() == "USER: typed\n\n"


async def test_input_custom_greeting_and_blank_input(console: FakeConsole) -> None:
    console.feed("   \n")
    async with MiniAgents():
        replies = await console_input_agent.trigger(greeting="HELLO THERE")

    assert replies == ()
    assert console.out.getvalue() == GREETING.replace("YOU ARE NOW IN A CHAT WITH AN AI ASSISTANT", "HELLO THERE") + (
        "USER:    \n\n"
    )


@pytest.mark.parametrize("typed", ["exit\n", " exit \n", ""], ids=["exit", "exit-with-spaces", "end-of-input"])
async def test_input_exit_or_end_of_input_raises_keyboard_interrupt(console: FakeConsole, typed: str) -> None:
    console.feed(typed)
    async with MiniAgents():
        with pytest.raises(KeyboardInterrupt):
            await console_input_agent.trigger(["x"])


async def test_input_exit_is_case_sensitive(console: FakeConsole) -> None:
    console.feed("EXIT\n")
    async with MiniAgents():
        replies = await console_input_agent.trigger()

    assert list(replies) == [UserMessage("EXIT")]


# --- user agents and dialogs ---------------------------------------------------------------------


async def test_user_agent_chains_output_input_and_full_history() -> None:
    log: list[str] = []

    @miniagent
    async def show(ctx: InteractionContext) -> None:
        async for message_promise in ctx.message_promises:
            log.append(f"shown {await message_promise}")
            ctx.reply(message_promise)

    @miniagent
    async def ask(ctx: InteractionContext) -> None:
        ctx.reply(ctx.message_promises)
        log.append(f"asked after {[str(m) for m in await ctx.message_promises]}")
        ctx.reply(UserMessage("typed"))

    history: list[Message] = []
    agent = user_agent.fork(
        output_agent=show,
        input_agent=ask,
        history_agent=in_memory_history_agent.fork(non_freezable_kwargs={"message_list": history}),
    )
    async with MiniAgents():
        first = await agent.trigger(["hello"])
        second = await agent.trigger(["again"])
        bare = await user_agent.trigger(["x"], output_agent=None, input_agent=None, history_agent=None)

    assert [str(m) for m in first] == ["hello", "typed"]
    assert [str(m) for m in second] == ["hello", "typed", "again", "typed"]  # the full history
    assert log == ["shown hello", "asked after ['hello']", "shown again", "asked after ['again']"]
    assert [str(m) for m in bare] == ["x"]


def test_console_user_agent_is_a_fork_of_user_agent() -> None:
    assert console_user_agent.alias == "USER_AGENT"
    assert console_user_agent.static_kwargs == {
        "output_agent": console_output_agent,
        "input_agent": console_input_agent,
    }
    assert console_output_agent.alias == "CONSOLE_OUTPUT_AGENT"
    assert console_input_agent.alias == "CONSOLE_INPUT_AGENT"


DIALOG_TRANSCRIPT = (
    GREETING
    + "USER: hello\n\n"
    + printed("ECHO", "you said: hello | SYS")
    + "USER: world\n\n"
    + printed("ECHO", "you said: hello | you said: hello | SYS | world | SYS")
    + "USER: exit\n\n"
)


async def test_dialog_with_the_console_user_agent(console: FakeConsole) -> None:
    console.feed("hello\nworld\nexit\n")
    user = console_user_agent.fork(history_agent=private_history())
    async with MiniAgents():
        replies = await dialog_loop.trigger([SystemMessage("SYS")], user_agent=user, assistant_agent=echo_assistant)

    assert replies == ()  # "exit" ends the dialog quietly
    assert console.out.getvalue() == DIALOG_TRANSCRIPT


def test_dialog_driven_through_piped_stdin(tmp_path: Path) -> None:
    script = tmp_path / "dialog.py"
    script.write_text(
        textwrap.dedent(
            """
            from brokeragents import MiniAgents, miniagent
            from brokeragents.ext import AssistantMessage, console_user_agent, dialog_loop

            @miniagent
            async def echo_assistant(ctx):
                messages = await ctx.message_promises
                ctx.reply(AssistantMessage("you said: " + " | ".join(map(str, messages)), agent_alias="ECHO"))

            async def main():
                await dialog_loop.trigger(["SYS"], user_agent=console_user_agent, assistant_agent=echo_assistant)

            MiniAgents().run(main())
            print("DONE")
            """
        )
    )
    result = subprocess.run(
        [sys.executable, str(script)],
        input=b"hello\nworld\nexit\n",
        capture_output=True,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
        check=False,
    )

    assert result.returncode == 0, result.stderr.decode()
    assert result.stdout.decode() == DIALOG_TRANSCRIPT + "DONE\n"


# --- console_input_agent in a terminal (prompt_toolkit) ------------------------------------------

TERMINAL_SCRIPT = """
import asyncio
from brokeragents import MiniAgents
from brokeragents.ext import console_input_agent

async def main():
    async with MiniAgents():
        replies = await console_input_agent.trigger()
        print("REPLY", repr([str(m) for m in replies]), flush=True)
        try:
            await console_input_agent.trigger(["again"])
        except KeyboardInterrupt:
            print("QUIT", flush=True)

asyncio.run(main())
"""


class Terminal:
    """A child process on a pseudo-terminal; ``expect`` reads its output until a marker appears.

    Each ``expect`` looks only at the output after the previous marker found.
    """

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        import pty

        self.master, slave = pty.openpty()
        self.process = subprocess.Popen(args, stdin=slave, stdout=slave, stderr=slave, env=env)
        os.close(slave)
        self.output = b""
        self._seen = 0

    def expect(self, marker: bytes, timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while marker not in self.output[self._seen :]:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"{marker!r} not seen in {self.output!r}")
            ready, _, _ = select.select([self.master], [], [], remaining)
            if ready:
                try:
                    self.output += os.read(self.master, 65536)
                except OSError:  # the child exited and closed the terminal
                    raise AssertionError(f"{marker!r} not seen in {self.output!r}") from None
        self._seen = self.output.index(marker, self._seen) + len(marker)

    def send(self, keys: bytes) -> None:
        os.write(self.master, keys)

    def close(self) -> int:
        try:
            return self.process.wait(timeout=30)
        finally:
            os.close(self.master)


@pytest.mark.skipif(sys.platform == "win32", reason="needs a POSIX pseudo-terminal")
def test_terminal_input_is_a_multi_line_prompt(tmp_path: Path) -> None:
    script = tmp_path / "terminal.py"
    script.write_text(TERMINAL_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "TERM": "xterm", "PROMPT_TOOLKIT_NO_CPR": "1"}
    terminal = Terminal([sys.executable, str(script)], env)
    try:
        terminal.expect(b"\x1b[0;93;1mUSER: ")  # bright yellow bold, as in MiniAgents
        terminal.send(b"hello\x00second line\r")  # Ctrl+Space inserts a newline, Enter sends
        terminal.expect(b"REPLY")
        terminal.expect(b"USER: ")
        terminal.send(b"exit\r")
        terminal.expect(b"QUIT")
    finally:
        returncode = terminal.close()

    assert returncode == 0
    assert b"YOU ARE NOW IN A CHAT WITH AN AI ASSISTANT" in terminal.output
    assert b"REPLY ['hello\\nsecond line']" in terminal.output
    assert terminal.output.count(b"YOU ARE NOW IN A CHAT") == 1  # not greeted when given input
