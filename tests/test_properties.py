"""Issue 8, point 2: properties of Frozen and Message values, checked on random content (hypothesis).

- A ``Frozen`` written as the wire writes it (``wire.encode_frozen``) and rebuilt with
  ``wire.build_frozen`` is equal to the original, of the same class, with the same hash key.
- A ``Message`` written as the wire writes it (``wire.encode_message``, sub-messages by hash key)
  and rebuilt with ``wire.abuild_message`` (sub-messages loaded by hash) is equal to the original,
  with the same hash key, and ``abuild_message`` accepts the recorded hash key.
- ``hash_key`` is stable: the same for equal content however it was built (another instance,
  another field order, a copy, a rebuilt one), and the same in another process (with another
  ``PYTHONHASHSEED``), so it depends only on the content.
- Different content gives different hash keys.

Values are JSON-native (``None``, booleans, integers, finite floats, text, tuples, nested
``Frozen``, messages): other allowed leaves (bytes, datetimes, UUIDs...) serialize to text, so
they do not come back as the same type; that is MiniAgents' behaviour and is not a round trip.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from brokeragents import wire
from brokeragents.errors import WireFormatError
from brokeragents.frozen import Frozen
from brokeragents.messages import Message, StrictMessage, TextMessage

EXAMPLES = settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])


class PropNote(Message):
    """A message subclass with extra fields only."""


class PropDeclared(StrictMessage):
    title: str
    count: int = 0
    ref: Message | None = None
    node: Frozen | None = None


# --- strategies ------------------------------------------------------------------------------------

field_names = st.from_regex(r"\Af_[a-z0-9]{1,6}\Z")
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**63), max_value=2**63),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=20),
)


def frozen_values(depth: int = 2) -> st.SearchStrategy[Any]:
    if depth == 0:
        return leaves
    inner = frozen_values(depth - 1)
    return st.one_of(
        leaves,
        st.lists(inner, max_size=3).map(tuple),
        st.dictionaries(field_names, inner, max_size=3),  # a dict field becomes a nested Frozen
    )


frozen_fields = st.dictionaries(field_names, frozen_values(), max_size=4)
frozens = frozen_fields.map(lambda fields: Frozen(**fields))


def messages(depth: int = 2) -> st.SearchStrategy[Message]:
    """Messages of several classes, holding sub-messages (alone, in tuples, in nested Frozen)."""
    base = st.one_of(
        st.builds(TextMessage, st.text(max_size=30), role=st.sampled_from(["user", "assistant"])),
        frozen_fields.map(lambda fields: PropNote(**fields)),
        frozen_fields.map(lambda fields: Message(**fields)),
    )
    if depth == 0:
        return base
    sub = messages(depth - 1)
    return st.one_of(
        base,
        st.builds(
            PropDeclared,
            title=st.text(max_size=10),
            count=st.integers(min_value=0, max_value=10**6),
            ref=st.none() | sub,
            node=st.none() | frozens,
        ),
        st.builds(
            lambda fields, single, many: PropNote(**fields, single=single, many=tuple(many)),
            frozen_fields,
            sub,
            st.lists(sub, min_size=1, max_size=3),
        ),
        st.builds(lambda fields, single: Message(**fields, holder=Frozen(inner=single)), frozen_fields, sub),
    )


# --- round trips -----------------------------------------------------------------------------------


@EXAMPLES
@given(frozens)
def test_a_frozen_round_trips_through_the_wire(frozen: Frozen) -> None:
    text = wire.encode_frozen(frozen)
    rebuilt = wire.build_frozen(wire.load_json(text, "frozen"), {})
    assert type(rebuilt) is Frozen
    assert rebuilt == frozen
    assert rebuilt.hash_key == frozen.hash_key
    assert wire.encode_frozen(rebuilt) == text


async def _arebuild(message: Message) -> Message:
    """Write ``message`` as the wire does, then rebuild it as a reader does."""
    stored = {sub.hash_key: sub for sub in message.sub_messages()}
    loaded: list[str] = []

    async def load(hash_key: str) -> Message:
        loaded.append(hash_key)
        # What a reader finds at ba:msg:{hash}: the sub-message's own wire form, rebuilt too.
        sub = stored[hash_key]
        return await wire.abuild_message(json.loads(wire.encode_message(sub)), hash_key, load)

    rebuilt = await wire.abuild_message(json.loads(wire.encode_message(message)), message.hash_key, load)
    assert set(loaded) <= set(stored)
    return rebuilt


@EXAMPLES
@given(messages())
async def test_a_message_round_trips_through_the_wire(message: Message) -> None:
    rebuilt = await _arebuild(message)
    assert type(rebuilt) is type(message)
    assert rebuilt == message
    assert rebuilt.hash_key == message.hash_key
    assert rebuilt.serialize() == message.serialize()
    assert list(rebuilt.keys()) == list(message.keys())  # the field order survives too
    assert str(rebuilt) == str(message)


@EXAMPLES
@given(messages(depth=1), st.text(min_size=1, max_size=5))
async def test_a_rebuilt_message_must_hash_to_the_recorded_key(message: Message, noise: str) -> None:
    wrong_key = Frozen(noise=noise, of=message.hash_key).hash_key
    stored = {sub.hash_key: sub for sub in message.sub_messages()}

    async def load(hash_key: str) -> Message:
        return stored[hash_key]

    data = json.loads(wire.encode_message(message))
    try:
        await wire.abuild_message(data, wrong_key, load)
    except WireFormatError as exc:
        assert wrong_key in str(exc)
    else:
        raise AssertionError("a message that does not hash to the recorded key was accepted")


# --- hash keys -------------------------------------------------------------------------------------


@EXAMPLES
@given(frozen_fields, st.randoms(use_true_random=False))
def test_equal_content_gives_equal_hash_keys(fields: dict[str, Any], rng: Any) -> None:
    shuffled = list(fields.items())
    rng.shuffle(shuffled)
    first, second = PropNote(**fields), PropNote(**dict(shuffled))
    assert first.hash_key == second.hash_key
    assert first.hash_key == PropNote(**json.loads(json.dumps(fields))).hash_key
    assert first.hash_key == first.model_copy().hash_key
    assert first == second
    assert len(first.hash_key) == 40 and int(first.hash_key, 16) >= 0


@EXAMPLES
@given(frozen_fields, frozen_fields)
def test_different_content_gives_different_hash_keys(one: dict[str, Any], other: dict[str, Any]) -> None:
    first, second = Message(**one), Message(**other)
    if first.serialized != second.serialized:
        assert first.hash_key != second.hash_key
    else:
        assert first.hash_key == second.hash_key
    # The class is part of the content.
    assert Message(**one).hash_key != PropNote(**one).hash_key


_HASH_IN_ANOTHER_PROCESS = """
import json, sys
from brokeragents import wire
from brokeragents.frozen import Frozen
from brokeragents.messages import Message, StrictMessage

class PropNote(Message):
    pass

class PropDeclared(StrictMessage):
    title: str
    count: int = 0
    ref: Message | None = None
    node: Frozen | None = None

stored = {}
for line in sys.stdin:
    data = json.loads(line)
    message = wire.build_frozen(data["message"], stored, base=Message)
    stored[message.hash_key] = message
    print(message.hash_key)
"""


@settings(max_examples=3, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(messages(depth=1), min_size=10, max_size=25))
def test_hash_keys_are_the_same_in_another_process(batch: list[Message]) -> None:
    """Sub-messages go first, so the other process rebuilds every reference from what it read."""
    ordered: dict[str, Message] = {}
    for message in batch:
        for item in (*message.sub_messages(), message):
            ordered.setdefault(item.hash_key, item)
    lines = "".join(json.dumps({"message": json.loads(wire.encode_message(m))}) + "\n" for m in ordered.values())
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    result = subprocess.run(
        [sys.executable, "-c", _HASH_IN_ANOTHER_PROCESS],
        input=lines, capture_output=True, text=True, env=env, timeout=60, check=True,
    )  # fmt: skip
    assert result.stdout.split() == list(ordered)
