"""A chat with an LLM in the terminal: a dialog loop between you and an assistant.

``dialog_loop`` alternates between ``console_user_agent`` (prints the assistant's reply as it
streams, reads your next message, keeps the history) and the assistant, an LLM agent: OpenAI or
Anthropic when a key is set, else a fake LLM that repeats what you said. Type "exit" (or Ctrl+D)
to leave. Piped input works too: ``printf 'hello\\nexit\\n' | python examples/chat.py``.

With REDIS_URL set and ``brokeragents worker examples.chat:assistant_agent`` running, the
assistant answers from that worker; otherwise it runs in this process.
"""

import os

from brokeragents import MiniAgents
from brokeragents.ext import console_user_agent, dialog_loop
from brokeragents.ext.llms.pick import pick_llm_agent

assistant_agent = pick_llm_agent(
    alias="ASSISTANT_AGENT",
    system="You are a friendly assistant. Keep your answers short.",
)


async def main() -> None:
    await dialog_loop.trigger(user_agent=console_user_agent, assistant_agent=assistant_agent)


if __name__ == "__main__":
    MiniAgents(redis_url=os.environ.get("REDIS_URL")).run(main())
