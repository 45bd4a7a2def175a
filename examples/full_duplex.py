"""Full duplex: the agent answers the first message before the second one is even sent.

Written as a MiniAgents program; only the import changed.
"""


from brokeragents import InteractionContext, MiniAgents, miniagent


@miniagent
async def echo_agent(ctx: InteractionContext) -> None:
    async for message_promise in ctx.message_promises:
        message = await message_promise
        ctx.reply(f"you said: {message}")


async def main() -> None:
    call = echo_agent.initiate_call()
    replies = call.reply_sequence(finish_call=False).__aiter__()

    call.send_message("hello")
    print(await (await replies.__anext__()))

    call.send_message("world")
    print(await (await replies.__anext__()))
    call.finish()


if __name__ == "__main__":
    MiniAgents().run(main())
