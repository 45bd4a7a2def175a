"""The agent of the walk-through in docs/redis-layout.md (tests/test_layout_walkthrough.py serves it).

``brokeragents worker layout_agents:poet`` runs with ``cwd`` = this directory.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from brokeragents import InteractionContext, TextMessage, miniagent


@miniagent
async def poet(ctx: InteractionContext, style: str = "haiku") -> None:
    async for promise in ctx.message_promises:
        await promise

    async def tokens(_aux: dict[str, Any]) -> AsyncIterator[str]:
        for token in ["Entries ", "flow, ", "streams ", "grow."]:
            yield token

    ctx.reply(TextMessage.promise(message_token_streamer=tokens, role="assistant"))
