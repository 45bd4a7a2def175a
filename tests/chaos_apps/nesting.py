"""An agent that replies one message, then the reply of STREAMER (tests/worker_apps/control.py).

Its worker runs with ``cwd`` here; STREAMER's workers with ``cwd=tests/worker_apps``.
"""

from __future__ import annotations

from brokeragents import InteractionContext, MiniAgent, miniagent


@miniagent
async def outer(ctx: InteractionContext, kill_at: str = "mid") -> None:
    ctx.reply("outer first")
    ctx.reply(MiniAgent(alias="STREAMER").trigger(tokens=6, kill_at=kill_at))
