"""The public API: everything is exported from the package top level, through a tuple ``__all__``."""

from __future__ import annotations
import __future__

import inspect

import pytest

import brokeragents
from brokeragents import END_OF_QUEUE, END_OF_UNORDERED_QUEUE, FAILED, NO_VALUE, Sentinel

# The MiniAgents 0.0.35 public names (semantics section 1) that brokeragents provides.
MINIAGENTS_NAMES = (
    # contexts and agents
    "MiniAgents",
    "PromisingContext",
    "miniagent",
    "MiniAgent",
    "AgentCall",
    "InteractionContext",
    # messages and tokens
    "Frozen",
    "cached_privately",
    "Token",
    "TextToken",
    "Message",
    "StrictMessage",
    "TextMessage",
    "ErrorMessage",
    # promises and sequences
    "Promise",
    "StreamedPromise",
    "StreamAppender",
    "FlatSequence",
    "MessagePromise",
    "MessageTokenAppender",
    "MessageSequence",
    "MessageSequenceAppender",
    "MessageSequencePromise",
    # interaction nodes
    "AgentInteractionNode",
    "AgentCallNode",
    "AgentReplyNode",
    # sentinels
    "NO_VALUE",
    "FAILED",
    "END_OF_QUEUE",
    "END_OF_UNORDERED_QUEUE",
    # errors
    "PromisingError",
    "FunctionNotProvidedError",
    "AppenderNotOpenError",
    "AppenderClosedError",
    "PromisingContextError",
    "NoActiveContextError",
    "WrongActiveContextError",
    # typing aliases and protocols
    "AgentFunction",
    "MessageTokenStreamer",
    "PersistMessagesEventHandler",
    "PromiseResolvedEventHandler",
    "PromiseResolver",
    "PromiseStreamer",
    "SequenceFlattener",
    "SingleMessageType",
    "MessageType",
    # utilities
    "as_single_text_promise",
    "display_agent_trace",
    "get_current_agent_trace",
)


def test_all_is_a_tuple_without_duplicates() -> None:
    assert isinstance(brokeragents.__all__, tuple)
    assert len(set(brokeragents.__all__)) == len(brokeragents.__all__)


def test_every_name_in_all_exists() -> None:
    missing = [name for name in brokeragents.__all__ if not hasattr(brokeragents, name)]
    assert missing == []


def test_all_lists_every_public_top_level_name() -> None:
    public = {
        name
        for name, value in vars(brokeragents).items()
        if not name.startswith("_") and not inspect.ismodule(value) and not isinstance(value, __future__._Feature)
    }
    assert public == set(brokeragents.__all__) - {"__version__"}


@pytest.mark.parametrize("name", MINIAGENTS_NAMES)
def test_miniagents_public_name_is_exported(name: str) -> None:
    assert name in brokeragents.__all__
    assert getattr(brokeragents, name) is not None


def test_exported_classes_come_from_brokeragents() -> None:
    foreign = [
        name
        for name in brokeragents.__all__
        if inspect.isclass(getattr(brokeragents, name))
        and not getattr(brokeragents, name).__module__.startswith("brokeragents")
    ]
    assert foreign == []


@pytest.mark.parametrize("sentinel", [NO_VALUE, FAILED, END_OF_QUEUE, END_OF_UNORDERED_QUEUE])
def test_sentinels_have_no_truth_value(sentinel: Sentinel) -> None:
    assert isinstance(sentinel, Sentinel)
    with pytest.raises(RuntimeError):
        bool(sentinel)


def test_sentinels_are_distinct() -> None:
    assert len({id(NO_VALUE), id(FAILED), id(END_OF_QUEUE), id(END_OF_UNORDERED_QUEUE)}) == 4


@pytest.mark.parametrize(
    ("error", "bases"),
    [
        ("PromisingError", ("BrokerAgentsError",)),
        ("FunctionNotProvidedError", ("PromisingError",)),
        ("AppenderNotOpenError", ("PromisingError",)),
        ("AppenderClosedError", ("PromisingError",)),
        ("PromisingContextError", ("PromisingError",)),
        ("NoActiveContextError", ("PromisingContextError",)),
        ("WrongActiveContextError", ("PromisingContextError",)),
    ],
)
def test_error_hierarchy(error: str, bases: tuple[str, ...]) -> None:
    error_class = getattr(brokeragents, error)
    assert issubclass(error_class, Exception)
    for base in bases:
        assert issubclass(error_class, getattr(brokeragents, base))
    assert issubclass(error_class, brokeragents.BrokerAgentsError)


def test_misuse_errors_also_subclass_the_matching_builtins() -> None:
    assert issubclass(brokeragents.FunctionNotProvidedError, ValueError)
    assert issubclass(brokeragents.AppenderNotOpenError, RuntimeError)
    assert issubclass(brokeragents.AppenderClosedError, RuntimeError)
    assert issubclass(brokeragents.PromisingContextError, RuntimeError)


def test_version_is_a_string() -> None:
    assert isinstance(brokeragents.__version__, str)
