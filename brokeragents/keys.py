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
_MAX_TAG_LENGTH = 256

WORKER_GROUP = "workers"
"""The consumer group on every agent inbox: all workers serving an agent share it."""


def new_id() -> str:
    """A fresh random id for a call, a sequence or a still-streaming message."""
    return uuid.uuid4().hex


def _check_tag(value: str, what: str) -> str:
    # A brace would end the hash tag early (or start another): keys would land in the wrong slot.
    if not value or len(value) > _MAX_TAG_LENGTH or "{" in value or "}" in value:
        raise ValueError(f"Invalid {what} {value!r}: use 1-{_MAX_TAG_LENGTH} characters without braces.")
    return value


def _is_tag(value: str) -> bool:
    return 0 < len(value) <= _MAX_TAG_LENGTH and "{" not in value and "}" not in value


@dataclass(frozen=True, slots=True)
class Keys:
    """Builds key names under one prefix."""

    prefix: str = "ba"

    def __post_init__(self) -> None:
        if not _PREFIX_RE.match(self.prefix):
            raise ValueError(f"Invalid key prefix {self.prefix!r}: use 1-64 letters, digits, '_', '.' or '-'.")

    # messages and sequences
    def message(self, hash_key_or_id: str) -> str:
        """Stream of one message: its tokens, then the final message (or its error)."""
        return f"{self.prefix}:msg:{{{_check_tag(hash_key_or_id, 'message id')}}}"

    def sequence(self, sequence_id: str) -> str:
        """Stream of one message sequence: references to message streams, errors, the end."""
        return f"{self.prefix}:seq:{{{_check_tag(sequence_id, 'sequence id')}}}"

    def message_pattern(self) -> str:
        return f"{self.prefix}:msg:*"

    def is_message_key(self, key: str) -> bool:
        """True for a key :meth:`message` builds under this prefix (checks references read back)."""
        head = f"{self.prefix}:msg:{{"
        return key.startswith(head) and key.endswith("}") and _is_tag(key[len(head) : -1])

    def is_sequence_key(self, key: str) -> bool:
        """True for a key :meth:`sequence`, :meth:`call_input` or :meth:`call_reply` builds."""
        head = f"{self.prefix}:seq:{{"
        if key.startswith(head) and key.endswith("}"):
            return _is_tag(key[len(head) : -1])
        head = f"{self.prefix}:call:{{"
        for tail in ("}:input", "}:reply"):
            if key.startswith(head) and key.endswith(tail):
                return _is_tag(key[len(head) : -len(tail)])
        return False

    # calls
    def call(self, call_id: str) -> str:
        """Hash describing one agent call (agent, caller, state, input and reply keys)."""
        return f"{self.prefix}:call:{{{_check_tag(call_id, 'call id')}}}"

    def call_input(self, call_id: str) -> str:
        """The input message sequence of a call."""
        return f"{self.call(call_id)}:input"

    def call_reply(self, call_id: str) -> str:
        """The reply message sequence of a call."""
        return f"{self.call(call_id)}:reply"

    def call_pattern(self) -> str:
        return f"{self.prefix}:call:*"

    # agents and workers
    def _agent(self, alias: str) -> str:
        return f"{self.prefix}:agent:{{{_check_tag(alias, 'agent alias')}}}"

    def agent_inbox(self, alias: str) -> str:
        """Stream of call requests for one agent; consumed by the ``workers`` group."""
        return f"{self._agent(alias)}:inbox"

    def agent_workers(self, alias: str) -> str:
        """Sorted set: worker name -> last heartbeat (unix ms) of workers serving the agent."""
        return f"{self._agent(alias)}:workers"

    def agents(self) -> str:
        """Sorted set: agent alias -> last heartbeat (unix ms) of any worker serving it."""
        return f"{self.prefix}:agents"

    def worker(self, worker_name: str) -> str:
        """Hash describing one worker process (pid, host, agents, heartbeat)."""
        return f"{self.prefix}:worker:{{{_check_tag(worker_name, 'worker name')}}}"

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
        return f"{self.prefix}:persisted:{{{_check_tag(hash_key, 'hash key')}}}"


__all__ = ("WORKER_GROUP", "Keys", "new_id")
