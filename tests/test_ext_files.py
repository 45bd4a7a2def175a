"""file_output_agent: it passes its input through and writes it to a file as one text."""

from __future__ import annotations

from pathlib import Path

from brokeragents import Message, MiniAgents, TextMessage
from brokeragents.ext import file_output_agent


async def test_writes_the_input_as_one_text_and_replies_with_it(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    messages = ["one", TextMessage("two", k=1), Message(foo=1)]
    async with MiniAgents():
        replies = await file_output_agent.trigger(messages, file=str(target))

    # Joined as by as_single_text_promise: "\n\n" between messages (observed on MiniAgents 0.0.35).
    assert target.read_text(encoding="utf-8") == 'one\n\ntwo\n\n```json\n{"class_":"Message","foo":1}\n```'
    assert [str(m) for m in replies] == ["one", "two", '```json\n{"class_":"Message","foo":1}\n```']


async def test_overwrites_the_file(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    target.write_text("old content", encoding="utf-8")
    async with MiniAgents():
        await file_output_agent.trigger(["again"], file=str(target))

    assert target.read_text(encoding="utf-8") == "again"


async def test_extra_kwargs_go_to_the_text_joining(tmp_path: Path) -> None:
    target = tmp_path / "out.txt"
    async with MiniAgents():
        await file_output_agent.trigger(["one", "two"], file=str(target), delimiter=" | ")

    assert target.read_text(encoding="utf-8") == "one | two"


async def test_creates_folders_writes_utf8_and_empty_input(tmp_path: Path) -> None:
    nested, empty = tmp_path / "sub" / "dir" / "out.txt", tmp_path / "empty.txt"
    async with MiniAgents():
        await file_output_agent.trigger(["é ✓"], file=str(nested))
        replies = await file_output_agent.trigger([], file=str(empty))

    assert nested.read_bytes() == "é ✓".encode()
    assert replies == ()
    assert empty.read_text(encoding="utf-8") == ""


def test_alias() -> None:
    assert file_output_agent.alias == "FILE_OUTPUT_AGENT"
