"""Differential test: our Frozen/Message hash exactly like MiniAgents 0.0.35 on random data.

Hypothesis builds a random description of nested values, then the same description is turned
into brokeragents objects and into miniagents objects; every serialized form must be equal.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from datetime import timedelta, timezone
from enum import Enum
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import brokeragents.frozen as our_frozen_module
import brokeragents.messages as our_messages_module
from brokeragents.frozen import Frozen
from brokeragents.messages import Message

try:
    import miniagents
    import miniagents.promising.ext.frozen as their_frozen_module
except ImportError:
    pytest.skip("miniagents 0.0.35 not installed: pip install -e .[dev]", allow_module_level=True)


class Color(Enum):
    RED = "red"
    NUMBER = 3
    FLOAT = 1.5


def _classes(library: Any) -> dict[str, Any]:
    """Define the test models on one library's base classes, under the same names."""
    base_frozen, base_message = library.Frozen, library.Message

    class Node(base_frozen):
        pass

    class Note(base_message):
        pass

    class Declared(library.StrictMessage):
        title: str
        count: int = 0
        ref: base_message | None = None
        node: base_frozen | None = None

    return {
        "Frozen": base_frozen,
        "Node": Node,
        "Message": base_message,
        "Note": Note,
        "TextMessage": library.TextMessage,
        "ErrorMessage": library.ErrorMessage,
        "Token": library.Token,
        "TextToken": library.TextToken,
        "Declared": Declared,
    }


OURS = _classes(
    SimpleNamespace(Frozen=Frozen, **{name: getattr(our_messages_module, name) for name in our_messages_module.__all__})
)
THEIRS = _classes(miniagents)

_RESERVED = {"class_", "content", "content_template", "title", "count", "ref", "node"}
keys = st.text(alphabet=string.ascii_lowercase + "_é", min_size=1, max_size=8).filter(
    lambda key: (
        not key.startswith("_")
        and key not in _RESERVED
        and not hasattr(Message, key)
        and not hasattr(miniagents.Message, key)
    )
)
texts = st.text(alphabet=st.characters(codec="utf-8"), max_size=12)
fixed_offsets = st.builds(
    timezone,
    st.timedeltas(min_value=timedelta(hours=-23, minutes=-59), max_value=timedelta(hours=23, minutes=59)),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(min_value=-(2**100), max_value=2**100),
    st.floats(),
    texts,
    st.decimals(allow_nan=False, allow_infinity=False),
    st.uuids(),
    st.datetimes(),
    st.datetimes(timezones=fixed_offsets),
    st.dates(),
    st.times(),
    st.times(timezones=fixed_offsets),
    st.timedeltas(),
    st.builds(Path, texts),
    st.sampled_from(Color),
    texts.map(lambda text: text.encode("utf-8")),
    st.frozensets(st.integers(), max_size=4),
    st.frozensets(texts, max_size=3),
)

# A spec describes a value without building it, so that each library can build its own.
Spec = tuple[Any, ...]


def _containers(children: st.SearchStrategy[Spec]) -> st.SearchStrategy[Spec]:
    fields = st.dictionaries(keys, children, max_size=4)
    return st.one_of(
        st.tuples(st.just("list"), st.lists(children, max_size=4)),
        st.tuples(st.just("dict"), fields),
        st.tuples(st.just("model"), st.sampled_from(["Frozen", "Node", "Message", "Note", "Token"]), fields),
        st.tuples(st.just("text"), st.sampled_from(["TextMessage", "ErrorMessage", "TextToken"]), texts, fields),
        st.tuples(
            st.just("messages"),
            st.lists(st.tuples(st.just("text"), st.just("TextMessage"), texts, fields), min_size=1, max_size=3),
        ),
        st.tuples(st.just("declared"), texts, st.integers(), st.none() | children, st.none() | children),
    )


specs: st.SearchStrategy[Spec] = st.recursive(st.tuples(st.just("leaf"), leaves), _containers, max_leaves=12)
top_level_specs = st.tuples(
    st.just("model"),
    st.sampled_from(["Frozen", "Node", "Message", "Note"]),
    st.dictionaries(keys, specs, max_size=5),
) | st.tuples(
    st.just("text"),
    st.sampled_from(["TextMessage", "ErrorMessage"]),
    texts,
    st.dictionaries(keys, specs, max_size=4),
)


def build(spec: Spec, classes: dict[str, Any]) -> Any:
    kind = spec[0]
    if kind == "leaf":
        return spec[1]  # the same object for both libraries (frozenset order included)
    if kind in ("list", "messages"):
        return [build(child, classes) for child in spec[1]]
    if kind == "dict":
        return {key: build(child, classes) for key, child in spec[1].items()}
    if kind == "model":
        return classes[spec[1]](**{key: build(child, classes) for key, child in spec[2].items()})
    if kind == "text":
        return classes[spec[1]](spec[2], **{key: build(child, classes) for key, child in spec[3].items()})
    if kind == "declared":
        _, title, count, ref, node = spec
        return classes["Declared"](
            title=title,
            count=count,
            ref=_as_instance_of(ref, classes, "Message"),
            node=_as_instance_of(node, classes, "Frozen"),
        )
    raise AssertionError(f"unknown spec kind {kind!r}")


def _as_instance_of(spec: Spec | None, classes: dict[str, Any], class_name: str) -> Any:
    # A declared field only takes instances of its type, so anything else is left out.
    value = None if spec is None else build(spec, classes)
    return value if isinstance(value, classes[class_name]) else None


def observe(make: Callable[[], Any]) -> dict[str, Any]:
    """Everything that must agree between the two libraries, with errors as values."""
    observed: dict[str, Any] = {}
    try:
        model = make()
    except Exception as error:
        return {"construct": _describe(error)}
    probes: dict[str, Callable[[], Any]] = {
        "serialize": lambda: (model.serialize(), list(model.serialize())),
        "serialized": lambda: model.serialized,
        "hash_key": lambda: model.hash_key,
        "full_json": lambda: model.full_json,
        "str": lambda: str(model),
        "keys": lambda: model.keys(),
        "as_kwargs": lambda: list(model.as_kwargs()),
        "sub_messages": lambda: [m.hash_key for m in model.sub_messages()] if hasattr(model, "sub_messages") else None,
    }
    for name, probe in probes.items():
        try:
            observed[name] = probe()
        except Exception as error:
            observed[name] = _describe(error)
    return observed


def _describe(error: Exception) -> tuple[str, str]:
    # pydantic messages name the input object by repr, which differs by module path; keep the gist.
    return type(error).__name__, str(error).split(" [type=")[0]


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(top_level_specs)
def test_same_serialization_and_hash_as_miniagents(spec: Spec) -> None:
    assert observe(lambda: build(spec, OURS)) == observe(lambda: build(spec, THEIRS))


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(top_level_specs)
def test_same_longer_hash_keys_as_miniagents(spec: Spec) -> None:
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.setattr(our_frozen_module, "LONGER_HASH_KEYS", True)
        monkeypatch.setattr(their_frozen_module, "LONGER_HASH_KEYS", True)
        ours = observe(lambda: build(spec, OURS))
        theirs = observe(lambda: build(spec, THEIRS))
    assert ours == theirs
    if isinstance(ours.get("hash_key"), str):
        assert len(ours["hash_key"]) == 64
