"""Bundled agents: chains and loops, history, console and file agents, and LLM message classes."""

from __future__ import annotations

from brokeragents.ext.aggregators import AWAIT as AWAIT
from brokeragents.ext.aggregators import CLEAR as CLEAR
from brokeragents.ext.aggregators import agent_chain as agent_chain
from brokeragents.ext.aggregators import agent_loop as agent_loop
from brokeragents.ext.aggregators import dialog_loop as dialog_loop
from brokeragents.ext.console import console_input_agent as console_input_agent
from brokeragents.ext.console import console_output_agent as console_output_agent
from brokeragents.ext.console import console_user_agent as console_user_agent
from brokeragents.ext.console import user_agent as user_agent
from brokeragents.ext.files import file_output_agent as file_output_agent
from brokeragents.ext.history import GLOBAL_MESSAGE_HISTORY as GLOBAL_MESSAGE_HISTORY
from brokeragents.ext.history import MarkdownHistoryAgent as MarkdownHistoryAgent
from brokeragents.ext.history import in_memory_history_agent as in_memory_history_agent
from brokeragents.ext.llms import AssistantMessage as AssistantMessage
from brokeragents.ext.llms import LLMMessage as LLMMessage
from brokeragents.ext.llms import SystemMessage as SystemMessage
from brokeragents.ext.llms import UserMessage as UserMessage

__all__ = (
    "AWAIT",
    "CLEAR",
    "GLOBAL_MESSAGE_HISTORY",
    "AssistantMessage",
    "LLMMessage",
    "MarkdownHistoryAgent",
    "SystemMessage",
    "UserMessage",
    "agent_chain",
    "agent_loop",
    "console_input_agent",
    "console_output_agent",
    "console_user_agent",
    "dialog_loop",
    "file_output_agent",
    "in_memory_history_agent",
    "user_agent",
)
