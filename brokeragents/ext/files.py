"""File agents: write what passes through to a file."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from brokeragents.agents import miniagent
from brokeragents.calls import InteractionContext
from brokeragents.utils import as_single_text_promise


@miniagent
async def file_output_agent(ctx: InteractionContext, file: str, **kwargs: Any) -> None:
    """Reply with the input and write it to `file` as one text (the file is overwritten).

    Extra keyword arguments go to as_single_text_promise (e.g. `delimiter`, "\\n\\n" by default).
    """
    ctx.reply(ctx.message_promises)
    text = str(await as_single_text_promise(ctx.message_promises, **kwargs))
    await asyncio.to_thread(_write_file, Path(file), text)


def _write_file(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


__all__ = ("file_output_agent",)
