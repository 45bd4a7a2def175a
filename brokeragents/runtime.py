"""MiniAgents: the application-wide context, with persistence hooks and error policy.

Persistence is deduplicated by ``hash_key`` (MiniAgents 0.0.35 deduplicates per instance, so
equal messages were persisted twice, and a message referencing the same sub-message twice
deadlocked; see docs/migrating-from-miniagents.md).
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import TYPE_CHECKING, Any, Literal

from brokeragents.context import PromiseResolvedEventHandler, PromisingContext
from brokeragents.frozen import Frozen
from brokeragents.messages import Message

if TYPE_CHECKING:
    from brokeragents.agents import MiniAgent
    from brokeragents.calls import AgentCall
    from brokeragents.promise import Promise

PersistMessagesEventHandler = Callable[[Iterable[Message]], Awaitable[None]]

# The batches whose handlers are running in this task (and the tasks it spawned): a handler that
# persists more messages must not wait for its own batch to finish.
_running_batches: contextvars.ContextVar[frozenset[asyncio.Future[None]]] = contextvars.ContextVar(
    "brokeragents_running_persistence_batches", default=frozenset()
)
RemoteCalls = Literal["auto", "always", "never"]
PERSISTED_HASH_KEYS_MAX = 100_000


def direct_sub_messages(node: Any) -> Iterator[Message]:
    """The messages a value refers to directly (inside nested Frozen values and tuples)."""
    if isinstance(node, tuple):
        for item in node:
            yield from _messages_in_value(item)
        return
    for name in node.keys():
        if name != "class_":
            yield from _messages_in_value(node[name])


def _messages_in_value(value: Any) -> Iterator[Message]:
    if isinstance(value, Message):
        yield value
    elif isinstance(value, Frozen | tuple):
        yield from direct_sub_messages(value)


class MiniAgents(PromisingContext):
    """The context every agent runs in (``async with MiniAgents(redis_url=...):``)."""

    def __init__(
        self,
        *,
        stream_llm_tokens_by_default: bool = True,
        llm_logger_agent: Any = False,
        on_persist_messages: PersistMessagesEventHandler | Iterable[PersistMessagesEventHandler] = (),
        on_promise_resolved: PromiseResolvedEventHandler | Iterable[PromiseResolvedEventHandler] = (),
        errors_as_messages: bool = False,
        error_tracebacks_in_messages: bool = False,
        log_reduced_tracebacks: bool = True,
        await_reply_persistence_before_agent_finish: bool = False,
        logger: logging.Logger | None = None,
        remote_calls: RemoteCalls = "auto",
        **promising_kwargs: Any,
    ) -> None:
        """``remote_calls`` decides, when connected to Redis, which calls go to worker processes:
        ``"auto"`` (agents served by a live worker, and agents known only by alias), ``"always"``
        or ``"never"``. Agents this process serves itself always run here."""
        if remote_calls not in ("auto", "always", "never"):
            raise ValueError(f"remote_calls must be 'auto', 'always' or 'never', not {remote_calls!r}.")
        if callable(on_promise_resolved):
            on_promise_resolved = [on_promise_resolved]
        # Our own persistence trigger comes first, as in MiniAgents.
        super().__init__(
            on_promise_resolved=[self._apersist_resolved_message, *on_promise_resolved],
            logger=logger,
            **promising_kwargs,
        )
        self.stream_llm_tokens_by_default = stream_llm_tokens_by_default
        self.llm_logger_agent = llm_logger_agent
        self.errors_as_messages = errors_as_messages
        self.error_tracebacks_in_messages = error_tracebacks_in_messages
        self.log_reduced_tracebacks = log_reduced_tracebacks
        self.await_reply_persistence_before_agent_finish = await_reply_persistence_before_agent_finish
        self._persist_handlers: list[PersistMessagesEventHandler] = []
        if callable(on_persist_messages):
            on_persist_messages = [on_persist_messages]
        for handler in on_persist_messages:
            self.on_persist_messages(handler)
        # Insertion-ordered and capped, so a long-running worker does not grow without bound;
        # a message persisted longer ago than the last PERSISTED_HASH_KEYS_MAX may be persisted again.
        self._persisted_hash_keys: dict[str, None] = {}
        # hash_key -> done-future of the batch whose handlers are persisting that message now.
        self._in_flight: dict[str, asyncio.Future[None]] = {}
        self.top_level_calls: list[AgentCall] = []
        self.remote_calls: RemoteCalls = remote_calls
        self.served_aliases: set[str] = set()  # filled by a worker for the agents it serves

    def on_persist_messages(self, handler: PersistMessagesEventHandler) -> PersistMessagesEventHandler:
        """Register an async ``(messages)`` handler; usable as a decorator."""
        if not asyncio.iscoroutinefunction(handler):
            raise ValueError(f"The on_persist_messages handler {handler!r} must be an async function.")
        self._persist_handlers.append(handler)
        return handler

    async def _apersist_resolved_message(self, _promise: Promise[Any], result: Any) -> None:
        if isinstance(result, Message):
            await self.apersist_messages(result, extend_with_sub_messages=True, parallelise_handlers=True)

    async def apersist_messages(
        self,
        message_or_messages: Message | Iterable[Message],
        extend_with_sub_messages: bool = True,
        parallelise_handlers: bool = False,
        raise_on_error: bool = True,
    ) -> list[Message]:
        """Hand the messages not persisted yet (by hash key) to the handlers; return them.

        With ``extend_with_sub_messages`` each message's sub-messages come first, children
        before parents. A message whose handler failed is not retried. A message that another
        call is persisting right now is not handed over again, but waited for, so that on return
        every given message has been through the handlers.
        """
        messages = [message_or_messages] if isinstance(message_or_messages, Message) else message_or_messages
        batch: list[Message] = []
        others: set[asyncio.Future[None]] = set()
        for message in messages:
            self._collect_unpersisted(message, extend_with_sub_messages, batch, others)
        if batch and self._persist_handlers:
            await self._arun_handlers(batch, parallelise_handlers, raise_on_error)
        for done in others:
            await asyncio.shield(done)  # our cancellation must not cancel the other batch's future
        return batch

    async def _arun_handlers(self, batch: list[Message], parallelise: bool, raise_on_error: bool) -> None:
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        for message in batch:
            self._in_flight[message.hash_key] = done
        token = _running_batches.set(_running_batches.get() | {done})
        try:
            if parallelise:
                results = await asyncio.gather(
                    *(handler(batch) for handler in self._persist_handlers), return_exceptions=True
                )
                errors = [result for result in results if isinstance(result, BaseException)]
                if errors:
                    raise errors[0]
            else:
                for handler in self._persist_handlers:
                    await handler(batch)
        except Exception:
            if raise_on_error:
                raise
            self.logger.exception("A persistence handler failed")
        finally:
            _running_batches.reset(token)
            for message in batch:
                del self._in_flight[message.hash_key]
            done.set_result(None)

    def _collect_unpersisted(
        self, message: Message, with_subs: bool, batch: list[Message], others: set[asyncio.Future[None]]
    ) -> None:
        # Marked before the handlers run: no locks, so no self-deadlock on repeated references.
        if message.persistence_not_needed:
            return
        if message.hash_key in self._persisted_hash_keys:
            done = self._in_flight.get(message.hash_key)
            if done is not None and done not in _running_batches.get():
                others.add(done)
            return
        if with_subs:
            for sub_message in direct_sub_messages(message):
                self._collect_unpersisted(sub_message, True, batch, others)
        if message.hash_key in self._persisted_hash_keys:
            return
        self._persisted_hash_keys[message.hash_key] = None
        if len(self._persisted_hash_keys) > PERSISTED_HASH_KEYS_MAX:
            del self._persisted_hash_keys[next(iter(self._persisted_hash_keys))]
        batch.append(message)

    def run_agent(self, agent: MiniAgent, messages: Any = None, **kwargs: Any) -> tuple[Message, ...]:
        """Trigger ``agent`` and wait for all its replies (a blocking helper)."""

        async def _arun() -> tuple[Message, ...]:
            return await agent.trigger(messages, **kwargs)

        return self.run(_arun())

    async def aflush_tasks(self) -> None:
        """Finish top-level calls left open and wait for every task, until none is left (A7).

        Calls opened while waiting are finished too, so an agent blocked on an input that
        nobody will close cannot keep the context from exiting.
        """
        while self.child_tasks or self.top_level_calls:
            for call in self.top_level_calls:
                call.finish()
            self.top_level_calls.clear()
            if self.child_tasks:
                await asyncio.wait(set(self.child_tasks), return_when=asyncio.FIRST_COMPLETED)


__all__ = ("MiniAgents", "PersistMessagesEventHandler", "direct_sub_messages")
