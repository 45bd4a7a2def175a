"""History agents: they remember the messages they see, in a list or in a markdown file.

The markdown file is meant to be read and edited by people. Each message is a level-1 heading
(``role``, or ``role / model``, underlined with ``=``) followed by the message text. On reload,
only top-level h1 headings naming ``system``, ``user`` or ``assistant`` start a message. Anything
else, including ``#`` lines inside code blocks, is part of the text of the message above it.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from brokeragents.agents import MiniAgent, miniagent
from brokeragents.calls import InteractionContext
from brokeragents.ext._markdown import find_h1_headings
from brokeragents.messages import Message, TextMessage

# Shared by every in_memory_history_agent that is not given a list of its own.
GLOBAL_MESSAGE_HISTORY: list[Message] = []

HISTORY_ROLES = ("system", "user", "assistant")
HEADING_UNDERLINE = "=" * 40
_ROLE_HEADING = re.compile(r"(\w+)[ \t]*(?:/[ \t]*(\S*))?")


async def _in_memory_history(
    ctx: InteractionContext, message_list: list[Message], return_full_history: bool = False
) -> None:
    """Append the input to `message_list`; reply with the input, or with the whole list.

    `message_list` is not frozen: pass your own through `fork(non_freezable_kwargs=...)`, or
    leave the default, a module-global list.
    """
    if not return_full_history:
        ctx.reply(ctx.message_promises)
    message_list.extend(await ctx.message_promises)
    if return_full_history:
        ctx.reply(list(message_list))  # a snapshot: sync iterables are frozen when replied


# Built by a call rather than `@miniagent(...)`: the decorator form is untyped under strict mypy.
in_memory_history_agent: MiniAgent = miniagent(
    _in_memory_history,
    alias="IN_MEMORY_HISTORY_AGENT",
    non_freezable_kwargs={"message_list": GLOBAL_MESSAGE_HISTORY},
)


class _MarkdownHistory(BaseModel):
    """Append the input to a markdown chat log and reply with the input or with the whole log.

    The options are keyword arguments of the agent:
    - `history_md_file`: the file, created with its folders if missing;
    - `default_role`: the heading of messages without a `role`;
    - `append=False`: start the file afresh;
    - `skip_empty`: leave out the messages with no text when reading the file back (they are
      still written);
    - `ignore_no_history=True`: also write messages whose `no_history` is known beforehand;
    - `history_message_factory` (non-freezable): builds each reloaded message from `content`,
      `role` and `model`.
    """

    model_config = ConfigDict(arbitrary_types_allowed=True)

    ctx: InteractionContext
    history_md_file: str = "CHAT.md"
    default_role: str = "assistant"
    return_full_history: bool = False
    history_message_factory: Callable[..., Message] = TextMessage
    append: bool = True
    skip_empty: bool = True
    ignore_no_history: bool = False

    async def __call__(self) -> None:
        ctx = self.ctx
        if not self.return_full_history:
            ctx.reply(ctx.message_promises)
        path = Path(self.history_md_file)
        await asyncio.to_thread(_prepare_file, path, self.append)
        async for message_promise in ctx.message_promises:
            if message_promise.known_beforehand.get("no_history") and not self.ignore_no_history:
                continue
            message = await message_promise
            # Written one by one, so the log is up to date while a long reply is still coming.
            await asyncio.to_thread(_append_text, path, self._format_entry(message))
        if self.return_full_history:
            ctx.reply(await asyncio.to_thread(self._load_history, path))

    def _format_entry(self, message: Message) -> str:
        # MiniAgents writes a role of None as "None"; we fall back to the default role instead.
        heading = str(message.get("role") or self.default_role)
        model = message.get("model")
        if model:
            heading += f" / {model}"
        return f"\n{heading}\n{HEADING_UNDERLINE}\n{message}\n"

    def _load_history(self, path: Path) -> list[Message]:
        lines = path.read_text(encoding="utf-8").split("\n")
        sections: list[tuple[str, str | None, int, int]] = []  # role, model, first/last line
        for heading in find_h1_headings(lines):
            match = _ROLE_HEADING.fullmatch(heading.text)
            if match is None or match.group(1).lower() not in HISTORY_ROLES:
                continue  # not a message boundary: stays in the text of the message above
            if sections:
                role, model, start, _ = sections[-1]
                sections[-1] = (role, model, start, heading.start)
            sections.append((match.group(1).lower(), match.group(2), heading.end, len(lines)))
        messages = []
        for role, model, start, end in sections:
            content = "\n".join(_strip_blank_lines(lines[start:end]))
            if content or not self.skip_empty:
                messages.append(self.history_message_factory(content=content, role=role, model=model))
        return messages


MarkdownHistoryAgent: MiniAgent = miniagent(_MarkdownHistory, alias="MARKDOWN_HISTORY_AGENT")


def _prepare_file(path: Path, append: bool) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a" if append else "w", encoding="utf-8"):
        pass  # only make sure it exists (and, unless appending, that it is empty)


def _append_text(path: Path, text: str) -> None:
    with path.open("a", encoding="utf-8") as file:
        file.write(text)


def _strip_blank_lines(lines: list[str]) -> list[str]:
    """Drop the whitespace-only lines at both ends, keeping the indentation of the others."""
    start, end = 0, len(lines)
    while start < end and not lines[start].strip():
        start += 1
    while end > start and not lines[end - 1].strip():
        end -= 1
    return lines[start:end]


__all__ = (
    "GLOBAL_MESSAGE_HISTORY",
    "HISTORY_ROLES",
    "MarkdownHistoryAgent",
    "in_memory_history_agent",
)
