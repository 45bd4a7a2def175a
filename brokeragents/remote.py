"""The caller's side of a call served by a worker process.

The caller keeps its local ``AgentCall``: its input sequence is mirrored to the call's input
stream as it is sent (full duplex works because the worker tails that stream), a request entry
goes to the agent's inbox, and the reply stream written by the worker is forwarded, message by
message and token by token, into the local reply sequence. Errors keep their position.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from brokeragents import tracing
from brokeragents.errors import ReplyRestartedError
from brokeragents.message_sequence import MessageSequencePromise
from brokeragents.nodes import CallKwargs
from brokeragents.promise import StreamedPromise, apieces_and_errors
from brokeragents.registry import Registry
from brokeragents.replay import aopen_sequence_promise

if TYPE_CHECKING:
    from brokeragents.calls import AgentCall

DEFAULT_INBOX_MAXLEN = 100_000
# Sending a call survives a Redis restart or failover of up to about 8 s.
_SEND_RETRY_DELAYS_S = (0.1, 0.25, 0.5, 1.0, 2.0, 4.0)

logger = logging.getLogger("brokeragents.remote")


async def aruns_remotely(call: AgentCall) -> bool:
    """Decide where a call runs (see ``MiniAgents(remote_calls=...)``)."""
    mini_agents = call.mini_agents
    store = mini_agents.store
    if store is None or call.agent.alias in mini_agents.served_aliases:
        return False
    if call.agent.wrapped_func_or_class is None or mini_agents.remote_calls == "always":
        return True  # known by alias only: a worker must serve it
    if mini_agents.remote_calls == "never":
        return False
    return await Registry(store.redis, store.keys).ais_served(call.agent.alias)


async def aforward_to_worker(call: AgentCall) -> None:
    """Send the call to the agent's inbox and forward the worker's reply into ``call``'s reply."""
    mini_agents = call.mini_agents
    store = mini_agents.store
    assert store is not None
    keys = store.keys
    # The worker writes the reply stream; the local reply sequence must not write it too.
    call._reply.sequence_promise._store = None
    mini_agents.start_soon(_adrain(call._input_promise))
    kwargs_message = CallKwargs(**call._call_kwargs.as_kwargs())
    store.store_message(kwargs_message)
    await store.aflush()  # the worker loads the kwargs' sub-messages right away
    from brokeragents.utils import display_agent_trace

    parent = call._parent
    await _asend_request(
        store.redis,
        keys.agent_inbox(call.agent.alias),
        {
            "call_id": call.call_id,
            "agent": call.agent.alias,
            "kwargs": json.dumps(kwargs_message.serialize(), ensure_ascii=False, separators=(",", ":")),
            "errors_as_messages": "1" if call.errors_as_messages else "0",
            "caller": display_agent_trace(parent.get_agent_trace()) if parent is not None else "",
            "sent_ms": str(int(time.time() * 1000)),
            **tracing.trace_fields(),  # OpenTelemetry context, when the caller is in a span
        },
    )
    reply = await aopen_sequence_promise(keys.call_reply(call.call_id))
    await _aforward(reply, call)


async def _asend_request(redis: Any, inbox: str, fields: dict[str, str]) -> None:
    """XADD a call request, retrying while Redis is unreachable (a restart, a failover).

    A request whose reply was lost with the connection may have been added: sent again, the call
    is served twice, which the attempt counter fences like a takeover (at-least-once delivery).
    """
    for delay_s in (*_SEND_RETRY_DELAYS_S, None):
        try:
            await redis.xadd(inbox, fields, maxlen=DEFAULT_INBOX_MAXLEN, approximate=True)
            return
        except (RedisConnectionError, RedisTimeoutError) as exc:
            if delay_s is None:
                raise
            logger.warning("Sending a call to %s failed (%s); retrying in %.2f s", inbox, exc, delay_s)
            await asyncio.sleep(delay_s)


async def _adrain(sequence: StreamedPromise[Any, Any]) -> None:
    # Pulling the input mirrors each entry to the call's input stream (errors included).
    async for _piece in apieces_and_errors(sequence):
        pass  # an error piece was mirrored at its position too


async def _aforward(reply: MessageSequencePromise, call: AgentCall) -> None:
    appender = call._reply.message_appender
    kept = 0  # pieces of the current attempt that an awaiting reader keeps so far
    async for piece in apieces_and_errors(reply):
        if isinstance(piece, ReplyRestartedError):
            if piece.abandoned is None:
                # The call restarted: what it forwarded so far is dropped, and only that (the
                # local reply may be part of a bigger sequence, an outer agent's reply).
                piece = ReplyRestartedError(*piece.args, abandoned=kept)
                kept = 0
            else:  # a call made by the remote agent restarted: its part is dropped
                kept = max(0, kept - piece.abandoned)
        else:  # a message, or an agent error at its position
            kept += 1
        appender.append(piece)
    appender.close()


__all__ = ("DEFAULT_INBOX_MAXLEN", "aforward_to_worker", "aruns_remotely")
