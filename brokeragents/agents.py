"""Agents: the ``miniagent`` decorator and the ``MiniAgent`` it builds (semantics H1-H3, H11)."""

from __future__ import annotations

import inspect
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast, overload

from pydantic import Field, PrivateAttr

from brokeragents.frozen import Frozen
from brokeragents.message_sequence import MessageSequencePromise
from brokeragents.sentinels import NO_VALUE, Sentinel

if TYPE_CHECKING:
    from brokeragents.calls import AgentCall

_CAMEL_BOUNDARY = re.compile(r"(?<=.)([A-Z])(?=[a-z])")
_SPACES = re.compile(r"\s+")


def normalize_alias(name: str) -> str:
    """``MyCamelAgent`` -> ``MY_CAMEL_AGENT``, ``OpenAIAgent`` -> ``OPENAI_AGENT``, ``echo`` -> ``ECHO``."""
    return _CAMEL_BOUNDARY.sub(r"_\1", name).upper()


class MiniAgent(Frozen):
    """An agent: an async function (or a class with an async ``__call__``) plus its settings.

    Only the alias is part of its serialized form and hash; the description and the interaction
    metadata are kept out of it.
    """

    alias: str
    description: str | None = Field(default=None, exclude=True)
    interaction_metadata: Frozen = Field(default_factory=Frozen, exclude=True)

    _func_or_class: Any = PrivateAttr(default=None)
    _static_kwargs: dict[str, Any] = PrivateAttr(default_factory=dict)
    _non_freezable_kwargs: dict[str, Any] = PrivateAttr(default_factory=dict)
    _await_reply_persistence: bool | Sentinel = PrivateAttr(default=NO_VALUE)

    @property
    def wrapped_func_or_class(self) -> Any:
        """The original function or class."""
        return self._func_or_class

    @property
    def static_kwargs(self) -> dict[str, Any]:
        """Frozen keyword arguments given to the decorator or to ``fork``."""
        return dict(self._static_kwargs)

    @property
    def await_reply_persistence(self) -> bool | Sentinel:
        return self._await_reply_persistence

    def trigger(
        self,
        messages: Any = None,
        *,
        start_soon: bool | Sentinel = NO_VALUE,
        errors_as_messages: bool | Sentinel = NO_VALUE,
        **kwargs_to_freeze: Any,
    ) -> MessageSequencePromise:
        """Call the agent: ``initiate_call`` + ``send_message`` + ``reply_sequence``."""
        call = self.initiate_call(start_soon=start_soon, errors_as_messages=errors_as_messages, **kwargs_to_freeze)
        if messages is not None:
            try:
                call.send_message(messages)
            except BaseException:
                call.finish()  # never leave an open input behind a failed send (A8)
                raise
        return call.reply_sequence()

    def initiate_call(
        self,
        *,
        start_soon: bool | Sentinel = NO_VALUE,
        errors_as_messages: bool | Sentinel = NO_VALUE,
        **kwargs_to_freeze: Any,
    ) -> AgentCall:
        """Open a call whose input stays open until ``finish()`` or ``reply_sequence()``."""
        from brokeragents.calls import AgentCall  # calls builds on this module

        return AgentCall.initiate(
            self, start_soon=start_soon, errors_as_messages=errors_as_messages, call_kwargs=kwargs_to_freeze
        )

    def fork(
        self,
        alias: str | None = None,
        description: str | None = None,
        *,
        interaction_metadata: dict[str, Any] | Frozen | None = None,
        non_freezable_kwargs: dict[str, Any] | None = None,
        **kwargs_to_freeze: Any,
    ) -> MiniAgent:
        """A new agent with merged static kwargs, metadata and non-freezable kwargs (H11).

        Unlike MiniAgents 0.0.35, ``await_reply_persistence`` is kept.
        """
        metadata = dict(self.interaction_metadata.as_kwargs())
        if interaction_metadata is not None:
            metadata.update(dict(interaction_metadata.as_kwargs() if isinstance(interaction_metadata, Frozen)
                                 else interaction_metadata))
        return _build_agent(
            self._func_or_class,
            alias=self.alias if alias is None else alias,
            description=self.description if description is None else description,
            interaction_metadata=metadata,
            static_kwargs={**self._static_kwargs, **Frozen(**kwargs_to_freeze).as_kwargs()},
            non_freezable_kwargs={**self._non_freezable_kwargs, **(non_freezable_kwargs or {})},
            await_reply_persistence=self._await_reply_persistence,
        )


def _build_agent(
    func_or_class: Any,
    *,
    alias: str,
    description: str | None,
    interaction_metadata: dict[str, Any],
    static_kwargs: dict[str, Any],
    non_freezable_kwargs: dict[str, Any],
    await_reply_persistence: bool | Sentinel,
) -> MiniAgent:
    agent = MiniAgent(alias=alias, description=description, interaction_metadata=Frozen(**interaction_metadata))
    agent._func_or_class = func_or_class
    agent._static_kwargs = static_kwargs
    agent._non_freezable_kwargs = non_freezable_kwargs
    agent._await_reply_persistence = await_reply_persistence
    return agent


def _is_agent_callable(func_or_class: Any) -> bool:
    if inspect.isclass(func_or_class):
        return inspect.iscoroutinefunction(getattr(func_or_class, "__call__", None))  # noqa: B004 - an async __call__
    return inspect.iscoroutinefunction(func_or_class)


@overload
def miniagent(
    func_or_class: Callable[..., Any],
    *,
    alias: str | None = None,
    description: str | None = None,
    normalize_func_or_class_name: bool = True,
    normalize_spaces_in_docstring: bool = True,
    await_reply_persistence: bool | Sentinel = NO_VALUE,
    interaction_metadata: dict[str, Any] | None = None,
    non_freezable_kwargs: dict[str, Any] | None = None,
    **kwargs_to_freeze: Any,
) -> MiniAgent: ...


@overload
def miniagent(
    func_or_class: None = None,
    *,
    alias: str | None = None,
    description: str | None = None,
    normalize_func_or_class_name: bool = True,
    normalize_spaces_in_docstring: bool = True,
    await_reply_persistence: bool | Sentinel = NO_VALUE,
    interaction_metadata: dict[str, Any] | None = None,
    non_freezable_kwargs: dict[str, Any] | None = None,
    **kwargs_to_freeze: Any,
) -> Callable[[Callable[..., Any]], MiniAgent]: ...


def miniagent(
    func_or_class: Any = None,
    *,
    alias: str | None = None,
    description: str | None = None,
    normalize_func_or_class_name: bool = True,
    normalize_spaces_in_docstring: bool = True,
    await_reply_persistence: bool | Sentinel = NO_VALUE,
    interaction_metadata: dict[str, Any] | None = None,
    non_freezable_kwargs: dict[str, Any] | None = None,
    **kwargs_to_freeze: Any,
) -> Any:
    """Turn an async function ``(ctx, **kwargs)``, or a class with an async ``__call__``, into an agent.

    Usable bare (``@miniagent``) or with arguments (``@miniagent(alias="X")``).
    """
    if func_or_class is None:

        def decorator(func_or_class_: Any) -> MiniAgent:
            return cast("MiniAgent", miniagent(
                func_or_class_,
                alias=alias,
                description=description,
                normalize_func_or_class_name=normalize_func_or_class_name,
                normalize_spaces_in_docstring=normalize_spaces_in_docstring,
                await_reply_persistence=await_reply_persistence,
                interaction_metadata=interaction_metadata,
                non_freezable_kwargs=non_freezable_kwargs,
                **kwargs_to_freeze,
            ))

        return decorator

    if not _is_agent_callable(func_or_class):
        raise ValueError(
            f"{func_or_class!r} is not an agent: use an `async def` function or a class whose "
            "`__call__` is `async def`."
        )
    if alias is None:
        alias = func_or_class.__name__
        if normalize_func_or_class_name:
            alias = normalize_alias(alias)
    if description is None:
        description = func_or_class.__doc__
        if description is not None and normalize_spaces_in_docstring:
            description = _SPACES.sub(" ", description).strip()
    if description is not None:
        description = description.replace("{AGENT_ALIAS}", alias)
    return _build_agent(
        func_or_class,
        alias=alias,
        description=description,
        interaction_metadata=dict(interaction_metadata or {}),
        static_kwargs=Frozen(**kwargs_to_freeze).as_kwargs(),
        non_freezable_kwargs=dict(non_freezable_kwargs or {}),
        await_reply_persistence=await_reply_persistence,
    )


AgentFunction = Callable[..., Any]

__all__ = ("AgentFunction", "MiniAgent", "miniagent", "normalize_alias")
