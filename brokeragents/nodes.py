"""Interaction nodes: the hash-linked record of who was called with what and replied what (K2-K4)."""

from __future__ import annotations

from brokeragents.agents import MiniAgent
from brokeragents.messages import Message


class AgentInteractionNode(Message):
    """Base of the call and reply nodes."""

    agent: MiniAgent


class AgentCallNode(AgentInteractionNode):
    """An agent call: the agent and its whole input (plus interaction metadata and call kwargs)."""

    messages: tuple[Message, ...]


class AgentReplyNode(AgentInteractionNode):
    """An agent's whole reply to one call, linked to the call node by hash."""

    agent_call: AgentCallNode
    replies: tuple[Message, ...]




class CallKwargs(Message):
    """The call-level kwargs of a call sent to a worker, carried as a message so nested messages
    travel by hash reference like everywhere else."""


__all__ = ("AgentCallNode", "AgentInteractionNode", "AgentReplyNode", "CallKwargs")
