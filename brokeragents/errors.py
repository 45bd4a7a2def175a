"""Every exception brokeragents raises derives from :class:`BrokerAgentsError`.

Misuse and state errors also subclass the matching builtin, so code written for MiniAgents that
catches ``ValueError`` or ``RuntimeError`` keeps working.
"""

from __future__ import annotations


class BrokerAgentsError(Exception):
    """Root of every brokeragents error."""


class PromisingError(BrokerAgentsError):
    """Raised when the promise layer is misused."""


class FunctionNotProvidedError(PromisingError, ValueError):
    """Raised when a promise needs a resolver, streamer or flattener and none was given."""


class AppenderNotOpenError(PromisingError, RuntimeError):
    """Raised when appending to an appender that was never opened."""


class AppenderClosedError(PromisingError, RuntimeError):
    """Raised when appending to, or reopening, an appender that is closed."""


class PromisingContextError(PromisingError, RuntimeError):
    """Raised when the active context is missing or of the wrong kind."""


class NoActiveContextError(PromisingContextError):
    """Raised when something needs an active context and none is active."""


class WrongActiveContextError(PromisingContextError, TypeError):
    """Raised when the active context is not of the class that was asked for."""


class MessageTooLargeError(BrokerAgentsError, ValueError):
    """Raised when a message or token is bigger than the configured size limit."""


class WireFormatError(BrokerAgentsError, ValueError):
    """Raised when an entry read from Redis is malformed, oversized or of an unknown class."""


class UnknownMessageClassError(WireFormatError):
    """Raised when an entry names a class that is not registered as a message class."""


class AgentNotServedError(BrokerAgentsError, LookupError):
    """Raised when no live worker serves an agent alias within the timeout."""


class ReplyRestartedError(BrokerAgentsError):
    """Raised in a reply when its worker was lost and the call restarted on another worker.

    It marks the restart for live consumers: what streamed before it belongs to an abandoned
    attempt. Awaiting the whole reply gives only the messages of the attempt that completed.

    ``abandoned`` is ``None`` when the sequence it is raised in restarts as a whole; a number
    when only a part of it restarts, the reply of a call flattened into it (an agent replying
    with another agent's reply): the ``abandoned`` pieces just before it are dropped.
    """

    def __init__(self, *args: object, abandoned: int | None = None) -> None:
        super().__init__(*args)
        self.abandoned = abandoned


class CallFailedError(BrokerAgentsError):
    """Raised in a reply when a call was given up (it kept crashing workers, or was rejected)."""


class IncompleteLLMResponseError(BrokerAgentsError, RuntimeError):
    """Raised when an LLM response stream ends before the provider's end marker (or is cancelled)."""


class FakeLLMError(BrokerAgentsError, RuntimeError):
    """Raised by the fake LLM when told to fail (``fail_after_tokens``)."""


class RemoteError(BrokerAgentsError):
    """Base of the exceptions rebuilt from error entries written by another process.

    A remote ``ValueError`` is re-raised as ``ValueError`` itself; a type name that is not a
    builtin exception becomes a subclass of this class with the same name.
    """


__all__ = (
    "AgentNotServedError",
    "AppenderClosedError",
    "AppenderNotOpenError",
    "BrokerAgentsError",
    "CallFailedError",
    "FakeLLMError",
    "FunctionNotProvidedError",
    "IncompleteLLMResponseError",
    "MessageTooLargeError",
    "NoActiveContextError",
    "PromisingContextError",
    "PromisingError",
    "RemoteError",
    "ReplyRestartedError",
    "UnknownMessageClassError",
    "WireFormatError",
    "WrongActiveContextError",
)
