"""An agent that answers questions about this repository's own code.

For each question it finds the most relevant modules of ``brokeragents/`` (a keyword search over
their text), says which ones it read, and sends them with the conversation to the LLM. Without an
API key the fake LLM answers with what the top module's docstring says, so the output is
deterministic but still shows which files were used.

Run from the repository root::

    python -m examples.self_dev.explainer "How does a worker take over a crashed call?"   # one answer
    python -m examples.self_dev.explainer                                                 # a chat

Serve it from a worker like any agent: ``brokeragents worker examples.self_dev.explainer:explainer_agent``.
"""

import os
import sys

from brokeragents import InteractionContext, MiniAgents, TextMessage, miniagent
from brokeragents.ext import console_user_agent, dialog_loop
from brokeragents.ext.llms import AssistantMessage
from brokeragents.ext.llms.pick import pick_llm_agent
from examples.self_dev.common import (
    aprint_labelled,
    file_for_prompt,
    find_relevant_files,
    first_docstring_line,
    relative,
)

SYSTEM_PROMPT = (
    "You answer questions about brokeragents, a Python framework that runs MiniAgents-style LLM agents as "
    "worker processes on Redis Streams. You are given some of its source files, then the conversation. "
    "Answer the last question from those files, name the functions or classes you rely on, and say so "
    "when the files do not contain the answer."
)


@miniagent
async def explainer_agent(ctx: InteractionContext) -> None:
    """Answers the last user message from the repository's most relevant source files."""
    conversation = await ctx.message_promises
    user_texts = [str(message) for message in conversation if message.get("role") in (None, "user")]
    question = user_texts[-1] if user_texts else ""
    files = find_relevant_files(question)
    alias = ctx.this_agent.alias
    names = ", ".join(relative(path) for path in files) or "no file matched"
    ctx.reply(AssistantMessage(f"(read: {names})", agent_alias=alias))
    if files:
        script = f"The most relevant file is {relative(files[0])}, which says: {first_docstring_line(files[0])}"
    else:
        script = "None of the source files mentions that; try other words."
    llm = pick_llm_agent(script=script, system=SYSTEM_PROMPT, response_metadata={"agent_alias": alias})
    context = [TextMessage(file_for_prompt(path)) for path in files]
    ctx.reply(llm.trigger([*context, *conversation]))


async def main(question: str) -> None:
    if question:
        await aprint_labelled(explainer_agent.trigger(question))
    else:
        await dialog_loop.trigger(user_agent=console_user_agent, assistant_agent=explainer_agent)


if __name__ == "__main__":
    MiniAgents(redis_url=os.environ.get("REDIS_URL")).run(main(" ".join(sys.argv[1:])))
