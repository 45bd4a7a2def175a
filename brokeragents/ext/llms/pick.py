"""pick_llm_agent: a real LLM when the environment has a key for one, a scripted fake one otherwise.

The demo and the examples use it, so they run anywhere without a key and talk to a real model
as soon as one is configured. The choice, made from the environment when it is called:

1. ``BROKERAGENTS_LLM`` set to ``openai``, ``anthropic`` or ``fake``: that one;
2. ``OPENAI_API_KEY`` or ``OPENAI_BASE_URL`` set: ``OpenAIAgent`` with the model
   ``BROKERAGENTS_OPENAI_MODEL`` (default ``gpt-4o-mini``);
3. ``ANTHROPIC_API_KEY``, ``ANTHROPIC_AUTH_TOKEN`` or ``ANTHROPIC_BASE_URL`` set:
   ``AnthropicAgent`` with ``BROKERAGENTS_ANTHROPIC_MODEL`` (default ``claude-haiku-4-5``)
   and ``max_tokens`` ``BROKERAGENTS_ANTHROPIC_MAX_TOKENS`` (default 1024);
4. otherwise ``FakeLLMAgent`` with the given ``script``: deterministic, no network.

The SDKs read the key and base URL themselves. A server that takes any key (a local
OpenAI-compatible one) still needs ``OPENAI_API_KEY`` set to something: the SDK refuses to
start without one. The SDK of the provider picked is imported only then (it takes seconds).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any, Literal

from brokeragents.agents import MiniAgent

Provider = Literal["openai", "anthropic", "fake"]

DEFAULT_OPENAI_MODEL = "gpt-4o-mini"
DEFAULT_ANTHROPIC_MODEL = "claude-haiku-4-5"
DEFAULT_ANTHROPIC_MAX_TOKENS = 1024
_PROVIDERS: tuple[Provider, ...] = ("openai", "anthropic", "fake")


def llm_provider(environ: Mapping[str, str] | None = None) -> Provider:
    """Which LLM :func:`pick_llm_agent` picks in ``environ`` (default ``os.environ``)."""
    env = os.environ if environ is None else environ
    forced = env.get("BROKERAGENTS_LLM", "").strip().lower()
    if forced:
        for provider in _PROVIDERS:
            if forced == provider:
                return provider
        raise ValueError(f"BROKERAGENTS_LLM must be one of {', '.join(_PROVIDERS)}, not {forced!r}.")
    if env.get("OPENAI_API_KEY") or env.get("OPENAI_BASE_URL"):
        return "openai"
    if env.get("ANTHROPIC_API_KEY") or env.get("ANTHROPIC_AUTH_TOKEN") or env.get("ANTHROPIC_BASE_URL"):
        return "anthropic"
    return "fake"


def pick_llm_agent(
    *,
    script: str | tuple[str, ...] | None = None,
    alias: str | None = None,
    token_delay_s: float | None = None,
    environ: Mapping[str, str] | None = None,
    **kwargs: Any,
) -> MiniAgent:
    """An LLM agent (a fork of ``OpenAIAgent``, ``AnthropicAgent`` or ``FakeLLMAgent``), as above.

    :param script: what the fake LLM says (see ``FakeLLMAgent``); a real model ignores it
    :param alias: the alias of the fork (default: that of the agent picked)
    :param token_delay_s: the fake LLM's pause between tokens; a real model ignores it
    :param environ: where to read the settings (default ``os.environ``)
    :param kwargs: options for any of them: ``system``, ``response_metadata``, ``stream``, ...
        (the fake LLM ignores SDK options such as ``temperature``)
    """
    env = os.environ if environ is None else environ
    provider = llm_provider(env)
    if provider == "openai":
        from brokeragents.ext.llms.openai import OpenAIAgent

        model = env.get("BROKERAGENTS_OPENAI_MODEL") or DEFAULT_OPENAI_MODEL
        return OpenAIAgent.fork(alias, **{"model": model, **kwargs})
    if provider == "anthropic":
        from brokeragents.ext.llms.anthropic import AnthropicAgent

        model = env.get("BROKERAGENTS_ANTHROPIC_MODEL") or DEFAULT_ANTHROPIC_MODEL
        max_tokens = int(env.get("BROKERAGENTS_ANTHROPIC_MAX_TOKENS") or DEFAULT_ANTHROPIC_MAX_TOKENS)
        return AnthropicAgent.fork(alias, **{"model": model, "max_tokens": max_tokens, **kwargs})
    from brokeragents.ext.llms.fake import FakeLLMAgent

    fake_kwargs: dict[str, Any] = {"script": script, **kwargs}
    if token_delay_s is not None:
        fake_kwargs["token_delay_s"] = token_delay_s
    return FakeLLMAgent.fork(alias, **fake_kwargs)


__all__ = (
    "DEFAULT_ANTHROPIC_MAX_TOKENS",
    "DEFAULT_ANTHROPIC_MODEL",
    "DEFAULT_OPENAI_MODEL",
    "Provider",
    "llm_provider",
    "pick_llm_agent",
)
