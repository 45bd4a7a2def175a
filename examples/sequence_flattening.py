"""Sequence flattening and replay: a dummy web-research tree, no network, no LLM.

research_agent fans out to three web_search_agent calls (out of order), each of which scrapes
two pages in parallel. The caller sees one flat sequence of messages, streams it token by token,
replays it, and awaits it whole. Written as a MiniAgents program; only the import changed.
"""

import asyncio
import random

from brokeragents import InteractionContext, MiniAgents, miniagent


@miniagent
async def research_agent(ctx: InteractionContext) -> None:
    ctx.reply("RESEARCHING...")
    for i in range(3):
        ctx.reply_out_of_order(web_search_agent.trigger(ctx.message_promises, search_query=f"query {i}"))


@miniagent
async def web_search_agent(ctx: InteractionContext, search_query: str) -> None:
    ctx.reply(f"{search_query} - SEARCHING")
    await asyncio.sleep(random.random())
    ctx.reply(f"{search_query} - SEARCH DONE")
    for i in range(2):
        ctx.reply_out_of_order(page_scraper_agent.trigger(ctx.message_promises, url=f"https://dummy.com/{search_query}/page-{i}"))


@miniagent
async def page_scraper_agent(ctx: InteractionContext, url: str) -> None:
    ctx.reply(f"{url} - SCRAPING")
    await asyncio.sleep(random.random())
    ctx.reply(f"{url} - DONE")


async def main() -> None:
    response_promises = research_agent.trigger("Tell me about MiniAgents sequence flattening")

    print("\nSTREAMING TOKENS:\n")
    async for message_promise in response_promises:
        async for token in message_promise:
            print(token, end="", flush=True)
        print()

    print("\nREPLAYING MESSAGES:\n")
    async for message_promise in response_promises:
        print(await message_promise)

    print("\nAWAITING THE WHOLE SEQUENCE:\n")
    messages = await response_promises
    print(f"{len(messages)} messages")


if __name__ == "__main__":
    MiniAgents().run(main())
