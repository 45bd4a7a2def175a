"""History agents and the LLM message classes they read roles and models from.

Every expected file and reload result below was observed on MiniAgents 0.0.35, except where a
test says it differs on purpose.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from brokeragents import InteractionContext, Message, MiniAgent, MiniAgents, TextMessage, miniagent
from brokeragents.ext import (
    GLOBAL_MESSAGE_HISTORY,
    AssistantMessage,
    LLMMessage,
    MarkdownHistoryAgent,
    SystemMessage,
    UserMessage,
    in_memory_history_agent,
)
from brokeragents.ext._markdown import find_h1_headings
from helpers import wait_until

RULE = "=" * 40


def fields(messages: tuple[Message, ...]) -> list[tuple[str, Any, Any, str]]:
    return [(type(m).__name__, m.get("role"), m.get("model"), str(m)) for m in messages]


@pytest.fixture
def global_history() -> Any:
    """The module-global history, emptied before and restored after the test."""
    saved = list(GLOBAL_MESSAGE_HISTORY)
    GLOBAL_MESSAGE_HISTORY.clear()
    yield GLOBAL_MESSAGE_HISTORY
    GLOBAL_MESSAGE_HISTORY[:] = saved


# --- LLM message classes -------------------------------------------------------------------------


def test_llm_messages_have_roles_and_the_hashes_of_miniagents() -> None:
    assert UserMessage("hi").hash_key == "9b406700c5a935969488bea76c36255614f5424b"
    assert UserMessage("hi").serialized == (
        '{"class_": "UserMessage", "content": "hi", "content_template": null, "role": "user"}'
    )
    assert SystemMessage("s").role == "system"
    assert AssistantMessage("a").serialize() == {
        "class_": "AssistantMessage",
        "content": "a",
        "content_template": None,
        "role": "assistant",
        "model": None,
        "agent_alias": None,
    }
    assert LLMMessage("x", role="tool").role == "tool"
    with pytest.raises(ValidationError):
        LLMMessage("no role")


# --- in_memory_history_agent ---------------------------------------------------------------------


async def test_in_memory_history_replies_with_the_input_or_the_whole_list() -> None:
    history: list[Message] = []
    agent = in_memory_history_agent.fork(non_freezable_kwargs={"message_list": history})
    async with MiniAgents():
        first = await agent.trigger(["a", "b"])
        full = await agent.trigger(["c"], return_full_history=True)

    assert [str(m) for m in first] == ["a", "b"]
    assert [str(m) for m in full] == ["a", "b", "c"]
    assert [str(m) for m in history] == ["a", "b", "c"]


async def test_in_memory_history_defaults_to_the_global_list(global_history: list[Message]) -> None:
    async with MiniAgents():
        await in_memory_history_agent.trigger(["x"])
        full = await in_memory_history_agent.trigger(["y"], return_full_history=True)

    assert [str(m) for m in full] == ["x", "y"]
    assert global_history == list(full)
    assert in_memory_history_agent.alias == "IN_MEMORY_HISTORY_AGENT"


# --- MarkdownHistoryAgent: writing ---------------------------------------------------------------

MIXED_MESSAGES = [
    SystemMessage("You are helpful."),
    UserMessage("Hello\nthere"),
    AssistantMessage("Hi!", model="gpt-x", agent_alias="BOT"),
    AssistantMessage("no model"),
    TextMessage("plain text"),
    TextMessage(""),
    TextMessage("hidden", no_history=True),
    UserMessage("line with trailing newline\n"),
    TextMessage("# not a heading?\nbody"),
    Message(foo=1),
    TextMessage("custom role", role="tool"),
]
MIXED_FILE = (
    f"\nsystem\n{RULE}\nYou are helpful.\n"
    f"\nuser\n{RULE}\nHello\nthere\n"
    f"\nassistant / gpt-x\n{RULE}\nHi!\n"
    f"\nassistant\n{RULE}\nno model\n"
    f"\nassistant\n{RULE}\nplain text\n"
    f"\nassistant\n{RULE}\n\n"
    f"\nuser\n{RULE}\nline with trailing newline\n\n"
    f"\nassistant\n{RULE}\n# not a heading?\nbody\n"
    f'\nassistant\n{RULE}\n```json\n{{"class_":"Message","foo":1}}\n```\n'
    f"\ntool\n{RULE}\ncustom role\n"
)


async def test_markdown_file_format_is_that_of_miniagents(tmp_path: Path) -> None:
    chat = tmp_path / "CHAT.md"
    async with MiniAgents():
        replies = await MarkdownHistoryAgent.trigger(MIXED_MESSAGES, history_md_file=str(chat))

    assert chat.read_bytes() == MIXED_FILE.encode("utf-8")
    assert list(replies) == MIXED_MESSAGES  # the input, including what was not written


async def test_markdown_history_reloads_roles_models_and_text(tmp_path: Path) -> None:
    chat = tmp_path / "CHAT.md"
    chat.write_text(MIXED_FILE, encoding="utf-8")
    async with MiniAgents():
        replies = await MarkdownHistoryAgent.trigger(["more"], history_md_file=str(chat), return_full_history=True)

    assert chat.read_text(encoding="utf-8") == MIXED_FILE + f"\nassistant\n{RULE}\nmore\n"
    custom_role_section = f'```json\n{{"class_":"Message","foo":1}}\n```\n\ntool\n{RULE}\ncustom role'
    assert fields(replies) == [
        ("TextMessage", "system", None, "You are helpful."),
        ("TextMessage", "user", None, "Hello\nthere"),
        ("TextMessage", "assistant", "gpt-x", "Hi!"),
        ("TextMessage", "assistant", None, "no model"),
        ("TextMessage", "assistant", None, "plain text"),
        ("TextMessage", "user", None, "line with trailing newline"),
        ("TextMessage", "assistant", None, "# not a heading?\nbody"),
        ("TextMessage", "assistant", None, custom_role_section),  # "tool" is not a role heading
        ("TextMessage", "assistant", None, "more"),
    ]
    assert replies[0].model_dump() == {
        "class_": "TextMessage",
        "content": "You are helpful.",
        "content_template": None,
        "role": "system",
        "model": None,
    }


async def test_append_false_starts_the_file_afresh(tmp_path: Path) -> None:
    chat = tmp_path / "B.md"
    async with MiniAgents():
        await MarkdownHistoryAgent.trigger(["fresh"], history_md_file=str(chat), append=False)
        replies = await MarkdownHistoryAgent.trigger(
            ["fresh2"], history_md_file=str(chat), append=False, return_full_history=True
        )

    assert chat.read_text(encoding="utf-8") == f"\nassistant\n{RULE}\nfresh2\n"
    assert fields(replies) == [("TextMessage", "assistant", None, "fresh2")]


async def test_missing_file_and_folders_are_created(tmp_path: Path) -> None:
    chat = tmp_path / "sub" / "dir" / "C.md"
    async with MiniAgents():
        replies = await MarkdownHistoryAgent.trigger([], history_md_file=str(chat), return_full_history=True)

    assert replies == ()
    assert chat.read_text(encoding="utf-8") == ""


async def test_default_role_and_utf8(tmp_path: Path) -> None:
    chat = tmp_path / "D.md"
    async with MiniAgents():
        await MarkdownHistoryAgent.trigger(["é ✓"], history_md_file=str(chat), default_role="user")

    assert chat.read_bytes() == f"\nuser\n{RULE}\né ✓\n".encode()


async def test_a_role_of_none_falls_back_to_the_default_role(tmp_path: Path) -> None:
    # On purpose: MiniAgents 0.0.35 writes the heading "None", which cannot be read back.
    chat = tmp_path / "N.md"
    async with MiniAgents():
        await MarkdownHistoryAgent.trigger([TextMessage("r", role=None)], history_md_file=str(chat))

    assert chat.read_text(encoding="utf-8") == f"\nassistant\n{RULE}\nr\n"


async def test_skip_empty_applies_when_reading_back(tmp_path: Path) -> None:
    chat = tmp_path / "E.md"
    async with MiniAgents():
        kept = await MarkdownHistoryAgent.trigger(
            ["", "  ", "y"], history_md_file=str(chat), skip_empty=False, return_full_history=True
        )
        skipped = await MarkdownHistoryAgent.trigger([], history_md_file=str(chat), return_full_history=True)

    assert chat.read_text(encoding="utf-8") == (
        f"\nassistant\n{RULE}\n\n\nassistant\n{RULE}\n  \n\nassistant\n{RULE}\ny\n"
    )
    assert [str(m) for m in kept] == ["", "", "y"]  # whitespace-only lines are trimmed
    assert [str(m) for m in skipped] == ["y"]


async def test_no_history_known_beforehand_is_not_written_unless_ignored(tmp_path: Path) -> None:
    async def tokens(_aux: dict[str, Any]) -> AsyncIterator[str]:
        yield "streamed"

    chat, forced = tmp_path / "F.md", tmp_path / "G.md"
    async with MiniAgents():
        hidden = [
            TextMessage("h", no_history=True),
            TextMessage.promise(message_token_streamer=tokens, no_history=True),
        ]
        await MarkdownHistoryAgent.trigger([*hidden, "shown"], history_md_file=str(chat))
        await MarkdownHistoryAgent.trigger(hidden, history_md_file=str(forced), ignore_no_history=True)

    assert chat.read_text(encoding="utf-8") == f"\nassistant\n{RULE}\nshown\n"
    assert forced.read_text(encoding="utf-8") == f"\nassistant\n{RULE}\nh\n\nassistant\n{RULE}\nstreamed\n"


async def test_history_message_factory_builds_the_reloaded_messages(tmp_path: Path) -> None:
    chat = tmp_path / "H.md"
    chat.write_text(f"\nassistant\n{RULE}\nm\n\nuser / x\n{RULE}\nn\n", encoding="utf-8")
    agent = MarkdownHistoryAgent.fork(non_freezable_kwargs={"history_message_factory": UserMessage})
    async with MiniAgents():
        replies = await agent.trigger([], history_md_file=str(chat), return_full_history=True)

    assert [m.model_dump() for m in replies] == [
        {"class_": "UserMessage", "content": "m", "content_template": None, "role": "assistant", "model": None},
        {"class_": "UserMessage", "content": "n", "content_template": None, "role": "user", "model": "x"},
    ]


async def test_messages_are_written_as_they_arrive(tmp_path: Path) -> None:
    chat = tmp_path / "S.md"
    go_on = asyncio.Event()

    @miniagent
    async def slow(ctx: InteractionContext) -> None:
        ctx.reply("one")
        await go_on.wait()
        ctx.reply("two")

    def written() -> str:
        return chat.read_text(encoding="utf-8") if chat.exists() else ""

    async with MiniAgents():
        replies = MarkdownHistoryAgent.trigger(slow.trigger(), history_md_file=str(chat))
        await wait_until(lambda: written() == f"\nassistant\n{RULE}\none\n", what="the first message")
        go_on.set()
        await replies

    assert written() == f"\nassistant\n{RULE}\none\n\nassistant\n{RULE}\ntwo\n"


def test_markdown_history_agent_is_a_class_based_agent() -> None:
    assert isinstance(MarkdownHistoryAgent, MiniAgent)
    assert MarkdownHistoryAgent.alias == "MARKDOWN_HISTORY_AGENT"
    assert MarkdownHistoryAgent.description


# --- MarkdownHistoryAgent: reading hand-written files --------------------------------------------

# (file text, reloaded (role, model, text) triples) as MiniAgents 0.0.35 reads them.
RELOAD_CASES = {
    "preamble-is-dropped": ("Some preamble\n\nuser\n====\nhi\n", [("user", None, "hi")]),
    "atx": (
        "# user\nhello\n\n# assistant / m1\n  world  \n\n",
        [("user", None, "hello"), ("assistant", "m1", "  world  ")],
    ),
    "h2-is-text": ("# user\nhello\n## assistant\nnot split\n", [("user", None, "hello\n## assistant\nnot split")]),
    "role-case": ("# User\nA\n# ASSISTANT\nB\n", [("user", None, "A"), ("assistant", None, "B")]),
    "model-case-kept": ("# USER / GPT\nA\n", [("user", "GPT", "A")]),
    "backtick-fence": ("# user\n```\n# assistant\n```\nafter\n", [("user", None, "```\n# assistant\n```\nafter")]),
    "setext-in-fence": ("user\n===\n```\nassistant\n===\n```\n", [("user", None, "```\nassistant\n===\n```")]),
    "tilde-fence": ("# user\n~~~\n# assistant\n~~~\nX\n", [("user", None, "~~~\n# assistant\n~~~\nX")]),
    "longer-fence": ("# user\n````\n```\n# assistant\n````\nX\n", [("user", None, "````\n```\n# assistant\n````\nX")]),
    "unclosed-fence": ("# user\n```\nunclosed\n# assistant\nX\n", [("user", None, "```\nunclosed\n# assistant\nX")]),
    "blank-lines-trimmed": (
        "# user\n\n\n   leading\n\n  two  \n\n\n# system\nS",
        [("user", None, "   leading\n\n  two  "), ("system", None, "S")],
    ),
    "model-with-space-is-not-a-role": ("#   assistant   /   my model  \nX\n", []),
    "spaces-around-slash": ("# assistant   /   mymodel\nX\n", [("assistant", "mymodel", "X")]),
    "slash-without-spaces": (
        "# assistant/m2\nY\n# assistant / a / b\nZ\n",
        [("assistant", "m2", "Y\n# assistant / a / b\nZ")],
    ),
    "empty-model": ("# assistant /\nX\n", [("assistant", "", "X")]),
    "words-after-role": ("# user x\nX\n", []),
    "unknown-role-first": ("# tool\nT\n# user\nU\n", [("user", None, "U")]),
    "empty-sections-skipped": ("# user\n# assistant\n", []),
    "emphasis-is-not-a-role": ("# *user*\nA\n# `assistant`\nB\n", []),
    "crlf": ("# user\r\nA\r\n# assistant\r\nB\r\n", [("user", None, "A"), ("assistant", None, "B")]),
    "setext-h2": ("user\n---\nA\n", []),
    "indented-atx": ("   # user\nA\n", [("user", None, "A")]),
    "quoted-heading": ("> # user\n> A\n", []),
    "closing-hashes": ("# user #\nA\n", [("user", None, "A")]),
    "indented-code": ("# user\n    # assistant\nX\n", [("user", None, "    # assistant\nX")]),
    "heading-interrupts-paragraph": (
        "# user\npara\n# assistant\nX\n",
        [("user", None, "para"), ("assistant", None, "X")],
    ),
    "multi-line-setext": ("# user\npara\nassistant\n===\nX\n", [("user", None, "para\nassistant\n===\nX")]),
    "after-list": ("# user\n- item\n# assistant\nX\n", [("user", None, "- item"), ("assistant", None, "X")]),
    "html-block": ("# user\n<div>\n# assistant\n</div>\n", [("user", None, "<div>\n# assistant\n</div>")]),
    "tab-indented-code": ("\tuser\n===\nA\n", []),
    "no-space-after-hash": ("#user\nA\n", []),
    "empty": ("", []),
}


@pytest.mark.parametrize(("text", "expected"), RELOAD_CASES.values(), ids=RELOAD_CASES.keys())
async def test_reload_of_hand_written_files(tmp_path: Path, text: str, expected: list[tuple[Any, ...]]) -> None:
    chat = tmp_path / "chat.md"
    chat.write_bytes(text.encode("utf-8"))
    async with MiniAgents():
        replies = await MarkdownHistoryAgent.trigger([], history_md_file=str(chat), return_full_history=True)

    assert [(m.get("role"), m.get("model"), m.get("content")) for m in replies] == expected
    assert chat.read_bytes() == text.encode("utf-8")  # reading never rewrites the file


HEADING_CASES = [
    "# a\ntext\nb\n===\n",
    "para\n<div>\n# a",
    "para\n<span>\n# a",
    "<span>\n# a\n\n# b",
    "<!-- c\n# a\n-->\n# b",
    "> q\ntext\n# a\n> q\nb\n===",
    "> # a\npara\n\t# x\n===",
    "- item\n  # a\n# b",
    "- item\n\n  # a\n\n# b",
    "- \n\n  # a",
    "1. x\n   # a\n  # b",
    "* * *\n# a",
    "```\n# a\n```\n# b",
    "``` info ` tick\n# a",
    "    # a\n# b",
    "para\n    # a\n===",
    "# a #\n#\n# #",
    "a\n---\nb\n===",
]


@pytest.mark.parametrize("text", HEADING_CASES)
def test_heading_scanner_agrees_with_markdown_it(text: str) -> None:
    markdown_it = pytest.importorskip("markdown_it")  # a dev dependency (through the oracle)
    tokens = markdown_it.MarkdownIt().parse(text)
    expected = [
        (tokens[i + 1].content, token.map[0], token.map[1])
        for i, token in enumerate(tokens)
        if token.type == "heading_open" and token.tag == "h1" and token.level == 0
    ]

    assert [(h.text, h.start, h.end) for h in find_h1_headings(text.split("\n"))] == expected
