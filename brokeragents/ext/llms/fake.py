"""FakeLLMAgent: a scripted, deterministic LLM for demos and tests, with no key and no network.

From the outside it is an LLM agent like ``OpenAIAgent``: one ``AssistantMessage`` reply with
``model`` and ``agent_alias`` known beforehand, streamed in word-sized tokens (``token_delay_s``
apart), ending with ``finish_reason="stop"`` and a ``usage`` count. It takes the same
``system``, ``stream``, ``response_metadata`` and ``llm_logger_agent`` options. What it says
depends only on its input and options, so every run gives the same tokens:

- ``script="text"``: always that text;
- ``script=("first", "second", ...)``: the reply for turn *n* of a dialog is ``script[n]``
  (turns counted by the assistant messages in the input, wrapping around);
- no script: ``"You said: <the last user message>"``.

``fail_after_tokens=n`` raises :class:`FakeLLMError` after *n* tokens, to show a reply that breaks
in the middle of its stream.
"""

from __future__ import annotations

import asyncio
import re

from brokeragents.agents import MiniAgent, miniagent
from brokeragents.errors import FakeLLMError
from brokeragents.ext.llms.base import LLMAgent, MessageDict, aprepare_chat_dicts
from brokeragents.message_promise import MessageTokenAppender

# A token is a run of non-space characters with the spaces before it, like BPE tokens; joining
# the tokens gives the text back exactly.
_TOKEN = re.compile(r"\s*\S+|\s+")
DEFAULT_TOKEN_DELAY_S = 0.02


def split_into_tokens(text: str) -> list[str]:
    """Word-sized tokens, each with the whitespace before it."""
    return _TOKEN.findall(text)


class FakeLLM(LLMAgent):
    """The class behind :data:`FakeLLMAgent`."""

    model: str = "fake-llm"
    script: str | tuple[str, ...] | None = None
    token_delay_s: float = DEFAULT_TOKEN_DELAY_S
    fail_after_tokens: int | None = None

    async def _aprepare_message_dicts(self) -> list[MessageDict]:
        return await aprepare_chat_dicts(self.ctx.message_promises, system=self.system)

    def reply_text(self, message_dicts: list[MessageDict]) -> str:
        """What the fake model answers to ``message_dicts``."""
        if isinstance(self.script, str):
            return self.script
        if self.script:
            turn = sum(1 for message_dict in message_dicts if message_dict["role"] == "assistant")
            return self.script[turn % len(self.script)]
        user_texts = [str(d["content"]) for d in message_dicts if d["role"] == "user"]
        return f"You said: {user_texts[-1]}" if user_texts else "Hello! I am a fake LLM."

    async def _aproduce_tokens(self, message_dicts: list[MessageDict], appender: MessageTokenAppender) -> None:
        text = self.reply_text(message_dicts)
        tokens = split_into_tokens(text) if self.stream else [text]
        for count, token in enumerate(tokens):
            if count == self.fail_after_tokens:
                raise FakeLLMError(f"The fake LLM failed after {count} tokens, as it was told to.")
            await asyncio.sleep(self.token_delay_s)
            appender.append(token)
        prompt_tokens = sum(len(split_into_tokens(str(d["content"]))) for d in message_dicts)
        completion_tokens = len(split_into_tokens(text))
        appender.auxiliary_field_collector.update(
            finish_reason="stop",
            usage={
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        )


FakeLLMAgent: MiniAgent = miniagent(FakeLLM, alias="FAKE_LLM_AGENT")

__all__ = ("DEFAULT_TOKEN_DELAY_S", "FakeLLM", "FakeLLMAgent", "FakeLLMError", "split_into_tokens")
