"""Ask the research pipeline a question and stream its reply, labelled by the agent that wrote it.

Run from the repository root. With the four workers running (``honcho start``, see the Procfile)
and REDIS_URL pointing at their Redis, every agent answers from its own worker process::

    REDIS_URL=redis://127.0.0.1:6379/0 python -m examples.research.main "How do agents stream replies?"

Without REDIS_URL (or with no worker serving an agent) the agents run in this process.
"""

import os
import sys

from brokeragents import MiniAgents
from examples.research.agents import research_agent

DEFAULT_QUESTION = "How do agents stream replies across processes?"


async def main(question: str) -> None:
    print(f"Question: {question}\n")
    async for message_promise in research_agent.trigger(question):
        alias = message_promise.known_beforehand.get("agent_alias") or "?"
        print(f"[{alias}] ", end="", flush=True)
        async for token in message_promise:
            print(token, end="", flush=True)
        print()


if __name__ == "__main__":
    MiniAgents(redis_url=os.environ.get("REDIS_URL")).run(main(" ".join(sys.argv[1:]) or DEFAULT_QUESTION))
