"""Agent calls: ``AgentCall`` (the caller's handle) and ``InteractionContext`` (the agent's ``ctx``).

A call owns an input sequence (open until finished) and a reply sequence. The agent body runs the
first time the reply sequence is pulled (at once with ``start_soon``), inside its own
``InteractionContext``. When the context is connected to Redis, the call is described by a hash
and both sequences are streams under the call's hash tag (docs/redis-layout.md).
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import time
import warnings
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, Self

from brokeragents.frozen import Frozen
from brokeragents.keys import new_id
from brokeragents.message_sequence import (
    AGENT_TRACE_ATTRIBUTE,
    MessageSequence,
    MessageSequenceAppender,
    MessageSequencePromise,
)
from brokeragents.messages import Message
from brokeragents.nodes import AgentCallNode, AgentReplyNode
from brokeragents.promise import Promise
from brokeragents.runtime import MiniAgents
from brokeragents.sentinels import Sentinel

if TYPE_CHECKING:
    from brokeragents.agents import MiniAgent

_current_interaction: contextvars.ContextVar[InteractionContext | None] = contextvars.ContextVar(
    "brokeragents_current_interaction", default=None
)


class _ReplySequence(MessageSequence):
    """The reply sequence of a call: pulling it the first time starts the agent body."""

    def __init__(self, call: AgentCall, **kwargs: Any) -> None:
        self._call = call
        super().__init__(appender_capture_errors=True, **kwargs)
        appender_streamer = self._normal_streamer

        def normal_streamer(promise: Any) -> Any:
            call._start_body()
            return appender_streamer(promise)

        self._normal_streamer = normal_streamer

    async def _abefore_end(self) -> None:
        if self._call._input is None:
            # Served for a caller in another process: the end entry tells remote readers that the
            # reply is complete, so it is written only once every message of it is whole. A worker
            # lost mid-message thus never ends the reply, and its readers wait for the restart.
            for piece in self.sequence_promise.pieces_so_far:
                if not isinstance(piece, BaseException):
                    with contextlib.suppress(Exception):  # a message's error is in its stream
                        await piece
        if self._call._awaits_reply_persistence():
            mini_agents = self._call.mini_agents
            for piece in self.sequence_promise.pieces_so_far:
                if not isinstance(piece, BaseException):
                    await mini_agents.apersist_messages(await piece)


class AgentCall:
    """A call to an agent whose input may still be growing (full duplex)."""

    def __init__(
        self,
        agent: MiniAgent,
        mini_agents: MiniAgents,
        parent: InteractionContext | None,
        call_kwargs: Frozen,
        start_soon: bool | Sentinel,
        errors_as_messages: bool | Sentinel,
        *,
        call_id: str | None = None,
        served_input: MessageSequencePromise | None = None,
    ) -> None:
        """``served_input`` is given by a worker serving a call made elsewhere (input from Redis)."""
        self.agent = agent
        self.mini_agents = mini_agents
        self.call_id = call_id or new_id()
        self._parent = parent
        self._call_kwargs = call_kwargs
        store = mini_agents.store
        keys = store.keys if store is not None else None
        self._input: MessageSequence | None = None
        if served_input is None:
            self._input = MessageSequence(
                start_soon=False,
                errors_as_messages=False,
                redis_key=keys.call_input(self.call_id) if keys else None,
            )
            self._input.message_appender.open()
            self._input_promise = self._input.sequence_promise
        else:
            self._input_promise = served_input
        if isinstance(errors_as_messages, Sentinel):
            errors_as_messages = mini_agents.errors_as_messages
        self.errors_as_messages = errors_as_messages
        self._reply = _ReplySequence(
            self,
            start_soon=start_soon,
            errors_as_messages=errors_as_messages,
            redis_key=keys.call_reply(self.call_id) if keys else None,
        )
        self._reply.message_appender.open()
        self._call_node_promise: Promise[AgentCallNode] | None = None
        self._body_started = False
        if served_input is not None:
            return  # the caller registered and described the call
        if parent is not None:
            parent._child_calls.append(self)
        else:
            mini_agents.top_level_calls.append(self)
        if store is not None and keys is not None:
            store.write_hash(
                keys.call(self.call_id),
                {
                    "agent": agent.alias,
                    "parent_call": parent.call.call_id if parent is not None else "",
                    "input": keys.call_input(self.call_id),
                    "reply": keys.call_reply(self.call_id),
                    "state": "open",
                    "created_ms": str(int(time.time() * 1000)),
                },
            )
            store.log_call(
                {
                    "call_id": self.call_id,
                    "agent": agent.alias,
                    "parent_call": parent.call.call_id if parent is not None else "",
                    "reply": keys.call_reply(self.call_id),
                }
            )

    @classmethod
    def initiate(
        cls,
        agent: MiniAgent,
        *,
        start_soon: bool | Sentinel,
        errors_as_messages: bool | Sentinel,
        call_kwargs: dict[str, Any],
    ) -> AgentCall:
        mini_agents = MiniAgents.get_current()
        frozen_kwargs = Frozen(**call_kwargs)  # validated now, so bad kwargs raise at the call site
        parent = _current_interaction.get()
        return cls(agent, mini_agents, parent, frozen_kwargs, start_soon, errors_as_messages)

    # --- the caller's side -----------------------------------------------------------------------

    def send_message(self, messages: Any, out_of_order: bool = False) -> Self:
        """Send more input; the agent sees it as soon as it is sent."""
        self._local_input().message_appender.append(messages, out_of_order=out_of_order)
        return self

    def _local_input(self) -> MessageSequence:
        if self._input is None:
            raise TypeError("The input of a call served from Redis is written by its caller.")
        return self._input

    def send_out_of_order(self, messages: Any) -> Self:
        return self.send_message(messages, out_of_order=True)

    def reply_sequence(self, finish_call: bool = True) -> MessageSequencePromise:
        """The reply sequence (always the same object); by default the input is finished first."""
        if finish_call:
            self.finish()
        return self._reply.sequence_promise

    def finish(self) -> Self:
        """Close the input: the agent's ``async for`` over its input ends."""
        if self._input is not None:
            self._input.message_appender.close()
        return self

    @property
    def is_finished(self) -> bool:
        return self._input is None or not self._input.message_appender.is_open

    # --- running the agent -----------------------------------------------------------------------

    def _awaits_reply_persistence(self) -> bool:
        setting = self.agent.await_reply_persistence
        if isinstance(setting, Sentinel):
            return self.mini_agents.await_reply_persistence_before_agent_finish
        return setting

    def _start_body(self) -> None:
        if self._body_started:
            return
        self._body_started = True
        if self._input is None:
            # Served here for a caller in another process, which records the call and reply
            # nodes itself (it has the input). Building them here would wait for the end of an
            # input that a crashed caller never finishes, pinning the worker's tasks forever.
            Promise(start_soon=True, resolver=self._aserve_body)
            return
        self._call_node_promise = Promise(start_soon=True, resolver=self._arun_body)
        Promise(start_soon=True, resolver=self._abuild_reply_node)

    async def _aserve_body(self, _promise: Any) -> None:
        await self._arun_here()

    async def _arun_body(self, _promise: Any) -> AgentCallNode:
        from brokeragents import remote  # remote builds on this module

        if await remote.aruns_remotely(self):
            await remote.aforward_to_worker(self)
        else:
            await self._arun_here()
        node = AgentCallNode(
            agent=self.agent,
            messages=await self._input_promise,
            **self.agent.interaction_metadata.as_kwargs(),
            **self._call_kwargs.as_kwargs(),
        )
        self._record_node("call_node", node)
        return node

    async def _arun_here(self) -> None:
        ictx = InteractionContext(self)
        token = _current_interaction.set(ictx)
        error: BaseException | None = None
        try:
            try:
                await self._ainvoke(ictx)
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                error = exc
            try:
                await ictx._afinalize()
            except asyncio.CancelledError:
                raise
            except BaseException as exc:
                error = error or exc
        finally:
            _current_interaction.reset(token)
        await self._aclose_reply(error)

    async def _ainvoke(self, ictx: InteractionContext) -> None:
        agent = self.agent
        kwargs = {**agent.static_kwargs, **agent._non_freezable_kwargs, **self._call_kwargs.as_kwargs()}
        func_or_class = agent.wrapped_func_or_class
        if isinstance(func_or_class, type):
            await func_or_class(ctx=ictx, **kwargs)()
        else:
            await func_or_class(ictx, **kwargs)

    async def _aclose_reply(self, error: BaseException | None) -> None:
        appender = self._reply.message_appender
        if error is None:
            appender.close()
            return
        if not self.errors_as_messages and not isinstance(error, KeyboardInterrupt):
            self.mini_agents.log_background_error_once(error)
        with contextlib.suppress(AttributeError):  # shown with error_tracebacks_in_messages
            error.__dict__.setdefault(AGENT_TRACE_ATTRIBUTE, " <- ".join(a.alias for a in self._trace()))
        if not appender.is_open:
            return  # closed early by afinish_early: the error can only be logged
        # Out-of-order replies made before the error come before it (MiniAgents lost them, I6).
        appender.unordered_appender.close()
        await self._reply.await_unordered_drained()
        appender.normal_appender.close(error)

    def _trace(self) -> list[MiniAgent]:
        trace = [self.agent]
        if self._parent is not None:
            trace.extend(self._parent.get_agent_trace())
        return trace

    async def _abuild_reply_node(self, _promise: Any) -> AgentReplyNode:
        replies = await self._reply.sequence_promise
        assert self._call_node_promise is not None
        call_node = await self._call_node_promise
        node = AgentReplyNode(
            agent=self.agent,
            agent_call=call_node,
            replies=replies,
            **self.agent.interaction_metadata.as_kwargs(),
        )
        self._record_node("reply_node", node)
        return node

    def _record_node(self, field_name: str, node: Message) -> None:
        store = self.mini_agents.store
        if store is not None:
            store.store_message(node)
            finished = field_name == "reply_node"
            fields = {field_name: node.hash_key}
            if finished and self._input is not None:
                # A served call (no local input) is marked done by its worker, once it knows it
                # still owns the call: an attempt fenced off by a takeover must not mark it done.
                fields["state"] = "done"
            store.write_hash(store.keys.call(self.call_id), fields, finished=finished)


class InteractionContext:
    """What an agent body receives as ``ctx``: its input, and how to reply."""

    def __init__(self, call: AgentCall) -> None:
        self.call = call
        self.this_agent = call.agent
        self.miniagents = call.mini_agents
        self.message_promises: MessageSequencePromise = call._input_promise
        self.parent = call._parent
        self._reply_appender: MessageSequenceAppender = call._reply.message_appender
        self._child_calls: list[AgentCall] = []
        self._awaitables: list[Awaitable[Any]] = []

    @classmethod
    def get_current(cls) -> InteractionContext:
        ictx = _current_interaction.get()
        if ictx is None:
            from brokeragents.errors import NoActiveContextError

            raise NoActiveContextError("No agent is running in this task (no InteractionContext).")
        return ictx

    def reply(self, messages: Any, out_of_order: bool = False) -> Self:
        """Reply with any ``MessageType``; it is frozen now and flattened for the caller."""
        self._reply_appender.append(messages, out_of_order=out_of_order)
        return self

    def reply_out_of_order(self, messages: Any) -> Self:
        return self.reply(messages, out_of_order=True)

    def make_sure_to_wait(self, awaitable: Awaitable[Any], start_soon_if_coroutine: bool = True) -> Self:
        """Keep the reply open until ``awaitable`` finishes (a coroutine starts right away)."""
        if start_soon_if_coroutine and asyncio.iscoroutine(awaitable):
            awaitable = self.miniagents.start_soon(awaitable, suppress_errors=False)
        self._awaitables.append(awaitable)
        return self

    async def await_now(self, suppress_deadlock_warning: bool = False) -> None:
        """Await everything registered with ``make_sure_to_wait`` so far."""
        if not suppress_deadlock_warning and any(not call.is_finished for call in self._child_calls):
            warnings.warn(
                "await_now() while calls made by this agent are still open may deadlock: "
                "finish them first (reply_sequence() or finish()).",
                RuntimeWarning,
                stacklevel=2,
            )
        while self._awaitables:
            awaitables, self._awaitables = self._awaitables, []
            for awaitable in awaitables:
                await awaitable

    async def afinish_early(self, make_sure_to_wait: bool = True) -> None:
        """Close the reply sequence now, before the agent function returns."""
        if make_sure_to_wait:
            await self._afinalize()
        self._reply_appender.close()

    async def _afinalize(self) -> None:
        for call in self._child_calls:
            call.finish()
        await self.await_now(suppress_deadlock_warning=True)

    def get_agent_trace(self) -> list[MiniAgent]:
        """This agent first, then the agents that called it."""
        trace = [self.this_agent]
        if self.parent is not None:
            trace.extend(self.parent.get_agent_trace())
        return trace


def get_current_agent_trace() -> list[MiniAgent]:
    """The agent trace of the running agent, or ``[]`` outside agents."""
    ictx = _current_interaction.get()
    return ictx.get_agent_trace() if ictx is not None else []


__all__ = ("AgentCall", "InteractionContext", "get_current_agent_trace")
