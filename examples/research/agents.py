"""The research pipeline: research, search, summarizer and writer agents, one worker type each.

``RESEARCH_AGENT`` turns a question into two search queries. For each, ``SEARCH_AGENT`` finds
canned pages (an offline stand-in for a search API) and ``SUMMARIZER_AGENT`` summarizes them with
an LLM; both replies are passed on out of order, as they come. Once every summary is complete,
``WRITER_AGENT`` answers the question from them with an LLM.

The LLM is the one ``pick_llm_agent`` picks: OpenAI or Anthropic when a key is set, else a
scripted fake whose text is computed from its input here, so the pipeline gives the same output
on every run. Serve the agents with ``brokeragents worker examples.research.agents:search_agent``
and so on (the Procfile has one line each); ``examples/research/main.py`` asks the question.
"""

import re
from dataclasses import dataclass

from brokeragents import InteractionContext, Message, TextMessage, miniagent
from brokeragents.ext.llms.pick import pick_llm_agent

TOKEN_DELAY_S = 0.01
SUMMARIZER_PROMPT = (
    "Summarize the search results you are given in one or two sentences, keeping only what answers the search query."
)
WRITER_PROMPT = (
    "Answer the user's question in three sentences at most, using only the summaries you are "
    "given, and cite the sources in brackets."
)


@dataclass(frozen=True)
class Page:
    title: str
    url: str
    text: str
    pitfall: bool = False  # found by queries about what can go wrong


# What the offline search engine knows.
PAGES = (
    Page(
        "Redis Streams",
        "https://redis.io/docs/latest/develop/data-types/streams/",
        "A stream is an append-only log: XADD appends entries, XRANGE replays them and XREAD BLOCK "
        "waits for new ones, so any process can read a reply while it is written.",
    ),
    Page(
        "Consumer groups",
        "https://redis.io/docs/latest/commands/xreadgroup/",
        "Consumer groups share the entries of a stream between worker processes: each entry goes to "
        "one consumer and stays pending until it is acknowledged with XACK.",
    ),
    Page(
        "Claiming stuck entries",
        "https://redis.io/docs/latest/commands/xautoclaim/",
        "XAUTOCLAIM hands entries that stayed pending too long to another consumer, so the work of "
        "a crashed worker process is taken over instead of lost.",
        pitfall=True,
    ),
    Page(
        "Streaming LLM replies",
        "https://platform.openai.com/docs/api-reference/chat-streaming",
        "LLM APIs stream a reply as small text deltas over server-sent events; a dropped "
        "connection leaves a partial answer that must not be taken for a complete one.",
        pitfall=True,
    ),
    Page(
        "MiniAgents",
        "https://github.com/teremterem/MiniAgents",
        "MiniAgents writes agents as async functions whose replies are replayable promises of "
        "messages, streamed token by token to every consumer.",
    ),
    Page(
        "Trimming streams",
        "https://redis.io/docs/latest/commands/xtrim/",
        "MAXLEN and MINID trim a stream so that memory stays bounded; trimmed entries can no "
        "longer be replayed, which limits how long a reply can be read again.",
        pitfall=True,
    ),
)
RESULTS_PER_QUERY = 2
PITFALL_WEIGHT = 3  # how much a query about pitfalls favours the pages about them


def _stems(text: str) -> set[str]:
    # The first four letters of each longer word: a crude but deterministic match ("replies" ~ "reply").
    return {word[:4] for word in re.findall(r"[a-z]+", text.lower()) if len(word) > 3}


def search_pages(query: str) -> list[Page]:
    """The pages that match ``query`` best (ties: in ``PAGES`` order); a query about pitfalls favours them."""
    query_stems = _stems(query)
    about_pitfalls = "pitf" in query_stems

    def score(page: Page) -> int:
        return len(query_stems & _stems(f"{page.title} {page.text}")) + (
            PITFALL_WEIGHT if about_pitfalls and page.pitfall else 0
        )

    scored = [(score(page), index) for index, page in enumerate(PAGES)]
    best = sorted((item for item in scored if item[0] > 0), key=lambda item: (-item[0], item[1]))
    return [PAGES[index] for _score, index in best[:RESULTS_PER_QUERY]]


def first_sentence(text: str) -> str:
    return re.split(r"(?<=[.;:])\s", text, maxsplit=1)[0].rstrip(".;:") + "."


@miniagent
async def search_agent(ctx: InteractionContext, query: str) -> None:
    """Replies with one message per page found for ``query`` (canned: no network)."""
    for page in search_pages(query):
        ctx.reply(
            TextMessage(
                f"{page.title} ({page.url}): {page.text}",
                agent_alias=ctx.this_agent.alias,
                title=page.title,
                url=page.url,
                snippet=page.text,
            )
        )


@miniagent
async def summarizer_agent(ctx: InteractionContext, query: str) -> None:
    """Summarizes the search results it receives for ``query`` with an LLM."""
    results: tuple[Message, ...] = await ctx.message_promises
    titles = [str(result.get("title")) for result in results]
    # What the fake LLM says: the first sentence of each page, with its title.
    findings = [f"{first_sentence(str(result.get('snippet')))} [{result.get('title')}]" for result in results]
    script = f"On '{query}': {' '.join(findings)}"
    llm = pick_llm_agent(
        script=script if results else f"On '{query}': nothing was found.",
        token_delay_s=TOKEN_DELAY_S,
        system=SUMMARIZER_PROMPT,
        response_metadata={"agent_alias": ctx.this_agent.alias, "query": query, "sources": tuple(titles)},
    )
    ctx.reply(llm.trigger([TextMessage(f"Search query: {query}"), *results]))


@miniagent
async def writer_agent(ctx: InteractionContext, question: str) -> None:
    """Answers ``question`` with an LLM from the summaries it receives."""
    summaries: tuple[Message, ...] = await ctx.message_promises
    sources = sorted({str(source) for summary in summaries for source in summary.get("sources") or ()})
    # What the fake LLM says: the first finding of each summary, then the sources.
    findings = [first_sentence(str(summary).split("': ", 1)[-1]) for summary in summaries]
    script = f"In short: {' '.join(findings)} Sources: {', '.join(sources)}."
    llm = pick_llm_agent(
        script=script,
        token_delay_s=TOKEN_DELAY_S,
        system=WRITER_PROMPT,
        response_metadata={"agent_alias": ctx.this_agent.alias},
    )
    # One user message: the summaries are notes to answer from, not turns the model already took.
    notes = "\n\n".join(f"Summary {number}: {summary}" for number, summary in enumerate(summaries, 1))
    ctx.reply(llm.trigger(TextMessage(f"{notes}\n\nQuestion: {question}")))


@miniagent
async def research_agent(ctx: InteractionContext) -> None:
    """Searches and summarizes in parallel, then has the writer answer from the summaries."""
    question = " ".join(str(message) for message in await ctx.message_promises).strip()
    queries = (question, f"Pitfalls: {question}")
    ctx.reply(TextMessage(f"Searching for: {' | '.join(queries)}", agent_alias=ctx.this_agent.alias))
    summaries = []
    for query in queries:
        results = search_agent.trigger(query=query)
        summary = summarizer_agent.trigger(results, query=query)
        ctx.reply_out_of_order(results)  # shown as they come, whichever query finishes first
        ctx.reply_out_of_order(summary)
        summaries.append(summary)
    for summary in summaries:
        await summary  # the answer comes last: after every summary is complete
    ctx.reply(writer_agent.trigger(summaries, question=question))


__all__ = ("PAGES", "research_agent", "search_agent", "search_pages", "summarizer_agent", "writer_agent")
