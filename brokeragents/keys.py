"""Every Redis key name brokeragents uses is built here, and only here.

Keys carry a prefix (default ``ba``) so several applications can share one Redis, and a hash tag
``{...}`` so that the keys of one call, one agent or one message land in one Redis Cluster slot.
``docs/redis-layout.md`` walks through the layout with redis-cli.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass

_PREFIX_RE = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")

WORKER_GROUP = "workers"
"""The consumer group on every agent inbox: all workers serving an agent share it."""


def new_id() -> str:
    """A fresh random id for a call, a sequence or a still-streaming message."""
    return uuid.uuid4().hex


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds key names under one prefix."""

    prefix: str = "ba"

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(
                f"Invalid key prefix {self.prefix!r}: use 1-64 letters, digits, '_', '.' or '-'."
            )

    # messages and sequences
    def message(self, hash_key_or_id: str) -> str:
        """Stream of one message: its tokens, then the final message (or its error)."""
        return f"{self.prefix}:msg:{{{hash_key_or_id}}}"

    def sequence(self, sequence_id: str) -> str:
        """Stream of one message sequence: references to message streams, errors, the end."""
        return f"{self.prefix}:seq:{{{sequence_id}}}"

    def message_pattern(self) -> str:
        return f"{self.prefix}:msg:*"

    # calls
    def call(self, call_id: str) -> str:
        """Hash describing one agent call (agent, caller, state, input and reply keys)."""
        return f"{self.prefix}:call:{{{call_id}}}"

    def call_input(self, call_id: str) -> str:
        """The input message sequence of a call."""
        return f"{self.prefix}:call:{{{call_id}}}:input"

    def call_reply(self, call_id: str) -> str:
        """The reply message sequence of a call."""
        return f"{self.prefix}:call:{{{call_id}}}:reply"

    def call_pattern(self) -> str:
        return f"{self.prefix}:call:*"

    # agents and workers
    def agent_inbox(self, alias: str) -> str:
        """Stream of call requests for one agent; consumed by the ``workers`` group."""
        return f"{self.prefix}:agent:{{{alias}}}:inbox"

    def agent_workers(self, alias: str) -> str:
        """Sorted set: worker name -> last heartbeat (unix ms) of workers serving the agent."""
        return f"{self.prefix}:agent:{{{alias}}}:workers"

    def agents(self) -> str:
        """Sorted set: agent alias -> last heartbeat (unix ms) of any worker serving it."""
        return f"{self.prefix}:agents"

    def worker(self, worker_name: str) -> str:
        """Hash describing one worker process (pid, host, agents, heartbeat)."""
        return f"{self.prefix}:worker:{{{worker_name}}}"

    def workers(self) -> str:
        """Sorted set: worker name -> last heartbeat (unix ms)."""
        return f"{self.prefix}:workers"

    def dead_letters(self) -> str:
        """Stream of rejected or given-up entries, each with the reason."""
        return f"{self.prefix}:dead"

    def calls_log(self) -> str:
        """Stream of call starts, for ``tail`` and the dashboard (trimmed)."""
        return f"{self.prefix}:calls"

    def persisted(self, hash_key: str) -> str:
        """Marker set once a message was handed to the persistence handlers (dedup by hash)."""
        return f"{self.prefix}:persisted:{{{hash_key}}}"


__all__ = ("WORKER_GROUP", "Keys", "new_id")
