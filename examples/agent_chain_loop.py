"""An agent chain inside a loop: a counter feeds a doubler until the counter says stop.

agent_loop repeats [counter_agent, AWAIT, doubler_agent, printer_agent]; counter_agent raises
KeyboardInterrupt after three turns, which ends the loop. Written as a MiniAgents program; only
the imports changed.
"""

from brokeragents import InteractionContext, MiniAgents, miniagent
from brokeragents.ext import AWAIT, agent_loop

turns: list[int] = []


@miniagent
async def counter_agent(ctx: InteractionContext) -> None:
    await ctx.message_promises
    if len(turns) == 3:
        raise KeyboardInterrupt
    turns.append(len(turns) + 1)
    ctx.reply(str(turns[-1]))


@miniagent
async def doubler_agent(ctx: InteractionContext) -> None:
    async for message_promise in ctx.message_promises:
        ctx.reply(str(int(str(await message_promise)) * 2))


@miniagent
async def printer_agent(ctx: InteractionContext) -> None:
    async for message_promise in ctx.message_promises:
        message = await message_promise
        print(f"doubled: {message}")
        ctx.reply(message)


async def main() -> None:
    await agent_loop.trigger(
        agents=[counter_agent, AWAIT, doubler_agent, printer_agent],
        raise_keyboard_interrupt=False,
    )
    print("loop ended after", len(turns), "turns")


if __name__ == "__main__":
    MiniAgents().run(main())
