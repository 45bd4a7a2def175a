"""The markdown LLM logger: one markdown file per LLM request and its response, as in MiniAgents.

An LLM agent whose ``llm_logger_agent`` is ``True`` (``MiniAgents(llm_logger_agent=True)`` sets
the default) sends this agent the messages of its request followed by its reply, plus
``request_metadata`` (the calling agent, model, stream flag and SDK kwargs). The file is named
``<timestamp>__<model>__<random>.md`` and holds the request metadata, each message under a
``role`` heading (``assistant / model`` for the reply), then the reply's metadata. The reply is
written token by token as it streams, so ``tail -f`` shows a slow answer as it comes; a reply
that fails ends with an ``INCOMPLETE RESPONSE`` line naming the error.
"""

from __future__ import annotations

import asyncio
import pprint
import re
import secrets
from datetime import datetime
from pathlib import Path
from typing import IO, Any

from brokeragents.agents import MiniAgent, miniagent
from brokeragents.calls import InteractionContext
from brokeragents.ext.llms.base import thaw
from brokeragents.frozen import Frozen
from brokeragents.message_promise import MessagePromise
from brokeragents.messages import Message

_RULE = "=" * 40
_SEPARATOR = "-" * 40
_CONTENT_FIELDS = ("class_", "content", "content_template")
_UNSAFE_IN_FILE_NAMES = re.compile(r"[^A-Za-z0-9._-]+")


def _metadata_block(fields: dict[str, Any]) -> str:
    return f"```python\n{pprint.pformat(fields)}\n```\n\n"


def _heading(known: Frozen, default_role: str) -> str:
    role = known.get("role")
    heading = role if isinstance(role, str) else default_role
    model = known.get("model")
    if isinstance(model, str) and heading == "assistant":
        heading += f" / {model}"
    return f"{heading}\n{_RULE}\n"


def _log_path(log_folder: str, model: str) -> Path:
    now = datetime.now()
    safe_model = _UNSAFE_IN_FILE_NAMES.sub("_", model) or "model"
    return Path(log_folder) / f"{now:%Y%m%d_%H%M%S}__{now:%f}__{safe_model}__{secrets.token_hex(2)[:3]}.md"


def _open_log(path: Path) -> IO[str]:
    path.parent.mkdir(parents=True, exist_ok=True)
    return path.open("w", encoding="utf-8")


async def _amessage_fields(message_promise: MessagePromise) -> dict[str, Any]:
    message: Message = await message_promise
    return {key: thaw(message[key]) for key in message.keys() if key not in _CONTENT_FIELDS}


async def _markdown_llm_logger_agent(
    ctx: InteractionContext,
    log_folder: str = "llm_logs/",
    request_metadata: Frozen | None = None,
    show_response_metadata: bool = True,
) -> None:
    """Write the request (every input message but the last) and the response (the last one)."""
    promises: list[MessagePromise] = [promise async for promise in ctx.message_promises]
    metadata = thaw(request_metadata) if request_metadata is not None else {}
    log = await asyncio.to_thread(_open_log, _log_path(log_folder, str(metadata.get("model", "model"))))
    try:
        alias = metadata.pop("agent_alias", None)
        log.write(f"{alias}\n\n" if alias else "")
        log.write(_metadata_block(metadata) if metadata else "")
        for index, promise in enumerate(promises):
            is_response = index == len(promises) - 1
            log.write(_heading(promise.known_beforehand, "assistant" if is_response else "user"))
            try:
                async for token in promise:
                    log.write(str(token))
                    if is_response:
                        log.flush()  # a slow answer shows up as it streams
                fields = await _amessage_fields(promise)
            except Exception as exc:
                log.write(f"\n\n{_SEPARATOR}\n\nINCOMPLETE RESPONSE: {type(exc).__name__}: {exc}\n")
                continue
            log.write("\n\n")
            if is_response and show_response_metadata:
                log.write(f"{_SEPARATOR}\n\n{_metadata_block(fields)}")
    finally:
        await asyncio.to_thread(log.close)


markdown_llm_logger_agent: MiniAgent = miniagent(_markdown_llm_logger_agent, alias="MARKDOWN_LLM_LOGGER_AGENT")

__all__ = ("markdown_llm_logger_agent",)
