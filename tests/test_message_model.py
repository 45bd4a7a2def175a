"""Message models: sub-message references, text rendering, token streaming hooks and hash keys.

Expected hash keys were computed with MiniAgents 0.0.35 (the oracle); these tests do not need it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import AsyncIterator, Callable
from datetime import date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from pydantic import ValidationError

from brokeragents.context import PromisingContext
from brokeragents.frozen import Frozen, lookup_frozen_class
from brokeragents.message_promise import MessagePromise
from brokeragents.messages import (
    ErrorMessage,
    Message,
    StrictMessage,
    TextMessage,
    TextToken,
    Token,
)


class SpecialNode(Frozen):
    pass


class Base(Frozen):
    x: int = 1


class Derived(Base):
    y: int = 2


class HoldsBase(Message):
    base: Base | None = None


class StrictSample(StrictMessage):
    req_field: str
    opt_field: int = 42


class Reply(Message):
    replies: tuple[Message, ...] = ()


class Color(Enum):
    RED = "red"
    NUMBER = 3


def all_types_fields() -> dict[str, Any]:
    return {
        "none_field": None,
        "str_field": "hello, світ 👋",
        "int_field": 42,
        "float_field": 3.14,
        "bool_true_field": True,
        "bool_false_field": False,
        "uuid_field": UUID("12345678-1234-5678-1234-567812345678"),
        "datetime_field": datetime(2024, 1, 2, 12, 30, 15),
        "date_field": date(2024, 1, 2),
        "time_field": time(12, 30, 15),
        "timedelta_field": timedelta(days=1, hours=2, minutes=30),
        "decimal_field": Decimal("10.50"),
        "path_field": Path("/tmp/some/file.txt"),
        "enum_field": Color.RED,
        "bytes_field": b"some bytes",
        "frozenset_field": frozenset({1, 2, 3}),
        "tuple_field": (1, "two", 3.0),
        "nested_frozen_field": Frozen(inner="value"),
        "list_field": [1, 2, [3, 4]],
        "dict_field": {"key": "value", "nested": {"deep": [1, 2]}},
    }


EXPECTED_ALL_TYPES_DUMP: dict[str, Any] = {
    "class_": "Message",
    "none_field": None,
    "str_field": "hello, світ 👋",
    "int_field": 42,
    "float_field": 3.14,
    "bool_true_field": True,
    "bool_false_field": False,
    "uuid_field": "12345678-1234-5678-1234-567812345678",
    "datetime_field": "2024-01-02T12:30:15",
    "date_field": "2024-01-02",
    "time_field": "12:30:15",
    "timedelta_field": "P1DT2H30M",
    "decimal_field": "10.50",
    "path_field": "/tmp/some/file.txt",
    "enum_field": "red",
    "bytes_field": "some bytes",
    "frozenset_field": [1, 2, 3],
    "tuple_field": [1, "two", 3.0],
    "nested_frozen_field": {"class_": "Frozen", "inner": "value"},
    "list_field": [1, 2, [3, 4]],
    "dict_field": {"class_": "Frozen", "key": "value", "nested": {"class_": "Frozen", "deep": [1, 2]}},
}


def test_text_message_known_vectors() -> None:
    assert TextMessage("z").hash_key == "ec4fe08211879b3d10221d9708d48e56248f5d8a"
    assert TextMessage("hi").serialized == '{"class_": "TextMessage", "content": "hi", "content_template": null}'
    assert TextMessage("hi").hash_key == "10ef4055699791e5e292fa4246b7c41cdb4b573b"
    assert TextMessage(content="hi").hash_key == TextMessage("hi").hash_key


def test_message_nesting_vs_hash_key() -> None:
    message = TextMessage(
        "юнікод",
        extra_field=[
            15,
            {"role": "user", "nested_nested": [TextMessage("nested_text"), TextMessage("nested_text2")]},
        ],
        extra_node=SpecialNode(nested_nested=TextMessage("nested_text3")),
        nested_message=Message(nested_text="nested_text4"),
    )
    expected = {
        "class_": "TextMessage",
        "content": "юнікод",
        "content_template": None,
        "extra_field": [
            15,
            {
                "class_": "Frozen",
                "role": "user",
                "nested_nested__hash_keys": [
                    "05549eba31f5f800e6f720331d99cb93c62cfaab",
                    "73695a09b7a91de152d65fbea44b4813e97ecd9d",
                ],
            },
        ],
        "extra_node": {
            "class_": "SpecialNode",
            "nested_nested__hash_key": "4df48c769ae0669b377dc307f51a8df9cc671cc1",
        },
        "nested_message__hash_key": Message(nested_text="nested_text4").hash_key,
    }
    assert message.serialize() == expected
    expected_json = json.dumps(expected, sort_keys=True, ensure_ascii=False)
    assert message.serialized == expected_json
    assert message.hash_key == hashlib.sha256(expected_json.encode("utf-8")).hexdigest()[:40]
    assert message.hash_key == "7c6f48fd17145da6cfce66dfc810ab27df0d4161"
    # full_json inlines the sub-messages instead.
    assert json.loads(message.full_json)["nested_message"] == {
        "class_": "Message",
        "nested_text": "nested_text4",
    }


def test_parent_hash_depends_only_on_sub_message_hash_keys() -> None:
    child = TextMessage("child")
    parent = Message(child=child)
    assert parent.serialize() == {"class_": "Message", "child__hash_key": child.hash_key}
    assert Message(child=TextMessage("child")).hash_key == parent.hash_key
    assert Message(child=TextMessage("other")).hash_key != parent.hash_key


def test_serialize_tuple_rules() -> None:
    inline = {"class_": "TextMessage", "content": "x", "content_template": None}
    x_key = TextMessage("x").hash_key
    # Only a tuple whose first item is a message is turned into hash keys.
    assert Message(a=(1, TextMessage("x"))).serialize() == {"class_": "Message", "a": [1, inline]}
    assert Message(a=((TextMessage("x"),),)).serialize() == {"class_": "Message", "a": [[inline]]}
    assert Message(a=()).serialize() == {"class_": "Message", "a": []}
    assert Message(a=(TextMessage("x"), Frozen(q=1))).serialize() == {
        "class_": "Message",
        "a__hash_keys": [x_key, Frozen(q=1).hash_key],
    }
    # Frozen items of other tuples are searched, by index.
    assert Message(a=(2, Frozen(q=TextMessage("x")))).serialize() == {
        "class_": "Message",
        "a": [2, {"class_": "Frozen", "q__hash_key": x_key}],
    }
    assert Message(a=(Frozen(q=1), TextMessage("y", sub=TextMessage("x")))).serialize() == {
        "class_": "Message",
        "a": [
            {"class_": "Frozen", "q": 1},
            {"class_": "TextMessage", "content": "y", "content_template": None, "sub__hash_key": x_key},
        ],
    }


def test_mixed_tuple_starting_with_a_message_is_not_supported() -> None:
    with pytest.raises(AttributeError, match="hash_key"):
        Message(a=(TextMessage("x"), 1)).serialize()


def test_hash_key_field_collision_is_overwritten() -> None:
    x_key = TextMessage("x").hash_key
    assert Message(a=TextMessage("x"), a__hash_key="zzz").serialize() == {
        "class_": "Message",
        "a__hash_key": x_key,
    }
    assert Message(a__hash_key="zzz", a=TextMessage("x")).serialize() == {
        "class_": "Message",
        "a__hash_key": x_key,
    }


def test_frozen_does_not_externalize_messages() -> None:
    model = Frozen(a=TextMessage("x"))
    assert model.serialize() == {
        "class_": "Frozen",
        "a": {"class_": "TextMessage", "content": "x", "content_template": None},
    }


def test_declared_field_dumps_subclass_instance_with_declared_schema() -> None:
    message = HoldsBase(base=Derived(extra=TextMessage("x")))
    assert message.serialize() == {
        "class_": "HoldsBase",
        "base": {"class_": "Derived", "x": 1, "extra__hash_key": TextMessage("x").hash_key},
    }
    assert message.hash_key == "ccf6b2e016b9d8dfbfcdefe9c41d30bd19332806"


def test_sub_messages_depth_first_not_deduplicated() -> None:
    i = TextMessage("i")
    k2 = TextMessage("k2")
    assert list(Message(child=i, kids=[i, k2], blob={"m": i}).sub_messages()) == [i, i, k2, i]

    deep = TextMessage("outer", inner=TextMessage("mid", inner=TextMessage("deep")))
    other = TextMessage("o", sub=TextMessage("o2"))
    assert [str(m) for m in Message(top=deep, other=other).sub_messages()] == [
        "deep",
        "mid",
        "outer",
        "o2",
        "o",
    ]

    kids = [
        TextMessage("a", s=[TextMessage("b"), TextMessage("b2")]),
        TextMessage("c", s=Frozen(q=TextMessage("d"))),
    ]
    message = Message(kids=kids, z=TextMessage("zz"))
    assert [str(m) for m in message.sub_messages()] == ["b", "b2", "a", "d", "c", "zz"]

    nested = Message(
        f=Frozen(x=TextMessage("a", s=TextMessage("b"))),
        t=[Frozen(y=TextMessage("c")), {"y": TextMessage("d")}],
    )
    assert [str(m) for m in nested.sub_messages()] == ["b", "a", "c", "d"]


def test_sub_messages_inside_other_tuples() -> None:
    # A message that is not first in its tuple is not a reference, but Frozen items are searched.
    assert list(Message(t=(1, TextMessage("late"))).sub_messages()) == []
    assert list(Message(t=((TextMessage("tt"),),)).sub_messages()) == []
    assert [str(m) for m in Message(t=(1, Frozen(q=TextMessage("x")))).sub_messages()] == ["x"]
    late = TextMessage("late", s=TextMessage("inner"))
    assert [str(m) for m in Message(t=(Frozen(a=1), late)).sub_messages()] == ["inner"]


def test_message_content_template_and_content() -> None:
    message = TextMessage(
        "Some content",
        content_template="Hello, {name}! I am {class_}. Here is some content: {content}",
        name="Alice",
    )
    assert str(message) == "Hello, Alice! I am TextMessage. Here is some content: Some content"


def test_message_content_template_only() -> None:
    message = TextMessage(
        content_template="Hello, {name}! I am {class_}. Here is some content: {content}", name="Alice"
    )
    assert str(message) == "Hello, Alice! I am TextMessage. Here is some content: None"


def test_content_template_gets_python_values_of_all_fields() -> None:
    message = TextMessage(content_template="{sub}|{t}|{content_template}", sub={"a": 1}, t=[1, 2])
    assert str(message) == '{"class_":"Frozen","a":1}|(1, 2)|{sub}|{t}|{content_template}'
    assert str(TextMessage("x", content_template="")) == ""  # an empty template still counts
    with pytest.raises(KeyError, match="missing"):
        str(TextMessage(content_template="{missing}"))


def test_text_rendering() -> None:
    assert str(TextMessage()) == ""
    assert str(TextMessage("x", k=1)) == "x"
    assert str(TextToken()) == ""
    assert str(TextToken("piece", logprob=0.5)) == "piece"
    assert str(Token(a=1)) == '{"class_":"Token","a":1}'
    assert str(ErrorMessage("ValueError: boom")) == "ValueError: boom"
    message = Message(a=1, b=[TextMessage("x")])
    assert str(message) == (
        '```json\n{"class_":"Message","a":1,"b":[{"class_":"TextMessage","content":"x","content_template":null}]}\n```'
    )


def test_content_must_be_text() -> None:
    with pytest.raises(ValidationError, match="Input should be a valid string"):
        TextMessage(5)  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="multiple values for argument 'content'"):
        TextMessage("a", content="b")


def test_strict_message_subclass_extra_field_fails() -> None:
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        StrictSample(req_field="x", extra_field="nope")


def test_strict_message_subclass_correct_fields_succeeds() -> None:
    message = StrictSample(req_field="x")
    assert message.opt_field == 42
    assert StrictSample(req_field="x", opt_field=100).opt_field == 100
    assert message.serialize() == {"class_": "StrictSample", "req_field": "x", "opt_field": 42}
    assert message.hash_key == "8838903c1cc92f2cfd591345b31fbec1213ba86e"


def test_strict_message_subclass_is_frozen() -> None:
    message = StrictSample(req_field="x")
    with pytest.raises(ValidationError, match="Instance is frozen"):
        message.opt_field = 100  # type: ignore[misc]
    assert message.opt_field == 42


def test_message_class_is_forced_and_classes_differ() -> None:
    assert Message(class_="X").class_ == "Message"
    assert TextMessage("a", class_="X").serialized == (
        '{"class_": "TextMessage", "content": "a", "content_template": null}'
    )
    assert Message(a=1) != Frozen(a=1)
    assert Message(a=1).hash_key == "8419ddacb8e7b04e8726d5fb017f2acc0dde6737"
    assert Frozen(a=1).hash_key == "8fa7632ee9368b54fcc5320ae70a427a1e549dea"
    assert Token(a=1).hash_key == "4f5d3107ebaacca3c673675c82fe79d8f326b6cb"
    assert ErrorMessage("boom").hash_key == "86b452a315c97b2b2eca4bd7062e135a54002e21"
    assert TextMessage("boom").hash_key != ErrorMessage("boom").hash_key


def test_message_with_all_types_can_be_created() -> None:
    fields = all_types_fields()
    message = Message(**fields)
    for key in fields:
        if key not in ("list_field", "dict_field"):
            assert message[key] == fields[key]
    assert message.list_field == (1, 2, (3, 4))
    assert message.dict_field == Frozen(key="value", nested=Frozen(deep=(1, 2)))


def test_message_serialize() -> None:
    assert Message(**all_types_fields()).serialize() == EXPECTED_ALL_TYPES_DUMP


def test_message_serialized_property() -> None:
    assert json.loads(Message(**all_types_fields()).serialized) == EXPECTED_ALL_TYPES_DUMP


def test_message_full_json_property() -> None:
    message = Message(**all_types_fields())
    assert json.loads(message.full_json) == EXPECTED_ALL_TYPES_DUMP
    assert str(message) == f"```json\n{message.full_json}\n```"


def test_message_hash_key_property() -> None:
    # Our own all-types fixture: MiniAgents' fixture (f54fbfdd…) could not be reconstructed.
    assert Message(**all_types_fields()).hash_key == "9ee99cf62d8169058ad0af376131f2ade88f962f"


def test_token_hooks() -> None:
    assert Token.non_metadata_fields() == ()
    assert TextToken.non_metadata_fields() == ("content",)
    assert Message.non_metadata_fields() == ()
    assert TextMessage.non_metadata_fields() == ("content", "content_template")
    assert Message.token_class() is Token
    assert TextMessage.token_class() is TextToken
    assert ErrorMessage.token_class() is TextToken
    message = TextMessage("x")
    assert message.message_to_tokens() == (message,)
    assert message.message_to_tokens()[0] is message


def test_tokens_to_message() -> None:
    with pytest.raises(TypeError, match=r"^Message does not support token streaming\.$"):
        Message.tokens_to_message([TextToken("a")])
    with pytest.raises(TypeError, match=r"^StrictSample does not support token streaming\.$"):
        StrictSample.tokens_to_message([])

    message = TextMessage.tokens_to_message(
        [TextToken("a"), TextToken("b", logprob=0.1), Token(q=2)],
        content="ignored",
        content_template="ignored too",
        model="m",
    )
    assert message.serialize() == {
        "class_": "TextMessage",
        "content": 'ab{"class_":"Token","q":2}',
        "content_template": None,
        "model": "m",
    }
    assert type(ErrorMessage.tokens_to_message([TextToken("e")])) is ErrorMessage


async def test_persistence_not_needed_flag() -> None:
    message = TextMessage("x")
    hash_key = message.hash_key
    assert message.persistence_not_needed is False
    assert await message.aset_persistence_not_needed(False) is False  # unchanged
    assert await message.aset_persistence_not_needed() is True
    assert message.persistence_not_needed is True
    assert await message.aset_persistence_not_needed(True) is False
    assert await message.aset_persistence_not_needed(False) is True
    assert message.persistence_not_needed is False
    await message.aset_persistence_not_needed()
    assert message.hash_key == hash_key
    assert message == TextMessage("x")
    assert message.serialize() == TextMessage("x").serialize()


def test_message_classes_are_registered() -> None:
    for cls in (Token, TextToken, Message, StrictMessage, TextMessage, ErrorMessage, StrictSample):
        assert lookup_frozen_class(cls.__name__) is cls


async def test_as_promise_is_cached_and_prefilled() -> None:
    async with PromisingContext():
        message = TextMessage("x")
        promise = message.as_promise
        assert isinstance(promise, MessagePromise)
        assert message.as_promise is promise
        assert promise.known_beforehand is message
        assert await promise is message


async def test_promise_without_streamer_is_prefilled() -> None:
    async with PromisingContext():
        promise = Message.promise(a=1)
        message = await promise
        assert message == Message(a=1)
        assert message.as_promise is promise

        text_promise = TextMessage.promise("hello", k=1)
        assert await text_promise == TextMessage("hello", k=1)
        template_promise = TextMessage.promise(content_template="X{k}", k=1)
        assert str(await template_promise) == "X1"


async def test_text_message_promise_with_streamer() -> None:
    async def streamer(aux: dict[str, Any]) -> AsyncIterator[TextToken]:
        yield TextToken("a")
        yield TextToken("b")

    async with PromisingContext():
        promise = TextMessage.promise(message_token_streamer=streamer, k=1)
        assert promise.message_class is TextMessage
        assert promise.known_beforehand == Frozen(content_template=None, k=1)
        message = await promise
        assert message == TextMessage("ab", k=1)

        for fields in ({"content": "x"}, {"content_template": "T"}):
            with pytest.raises(ValueError, match="you cannot provide `content` or `content_template`"):
                TextMessage.promise(message_token_streamer=streamer, **fields)


MESSAGE_HASH_VECTORS: list[tuple[str, Callable[[], Frozen], str]] = [
    ("empty message", lambda: Message(), "d329b9fa18e0c913682994fe9046625e69fab960"),
    ("empty text", lambda: TextMessage(), "fe0ca6b4a5fbbf915a22eac9ad63fb72be6dffb2"),
    ("empty string text", lambda: TextMessage(""), "19bed90d1f76beb0faaf7aa68119b03c9cd1b0e7"),
    (
        "text with metadata",
        lambda: TextMessage("hi", role="assistant", model="gpt", temperature=0.7),
        "a0c3b4e1c3105eee81e751b0356d26f96a2e9906",
    ),
    (
        "template",
        lambda: TextMessage(content_template="{a}", a=1),
        "583a236d6673cb74d5883857f060118940cd15d1",
    ),
    ("emoji text", lambda: TextMessage("👋🏽 hi 🇺🇦"), "74d3ea37650a24da3da016af98aa55f9f9cf34b7"),
    ("rtl text", lambda: TextMessage("مرحبا שלום"), "255d6ec1507548b5237d5b1ed3e1b23b5cab5909"),
    ("combining text", lambda: TextMessage("a\u0308o\u0308"), "24e24c1a633d62c4783f86048aa92c95a344d8c7"),
    (
        "multiline text",
        lambda: TextMessage("line1\nline2\r\n\ttabbed"),
        "74e5684db35e1ae3f0c68f431a915d9105d0126a",
    ),
    (
        "error message",
        lambda: ErrorMessage("ValueError: boom", cause="x"),
        "8fec0bd4b209d99a3a1f9cc0e7b20ea42287a5e7",
    ),
    ("token", lambda: Token(content="raw"), "6963a273df9a703bea31748d0d49200b7df6241e"),
    ("text token", lambda: TextToken("piece", logprob=-0.25), "88c06027298a59bb7fff63160c67a682e7a775c3"),
    ("strict default", lambda: StrictSample(req_field="r"), "68cca27e27dde5a956800334f14068f983e0b450"),
    (
        "strict override",
        lambda: StrictSample(req_field="r", opt_field=100),
        "0bc3e9d4e246b80ec92f06474a4fa064bc5fae26",
    ),
    (
        "renamed class",
        lambda: Reply(replies=[TextMessage("a"), TextMessage("b")]),
        "dc5ced268010449a8953b6835bd026bbb37ff59c",
    ),
    ("renamed class empty", lambda: Reply(), "afac3d35b98cdb6a7f944df387c296f571281729"),
    ("one ref", lambda: Message(ref=TextMessage("x")), "4510fe595986bfb18904c5b75b437338e90e36fb"),
    (
        "ref list",
        lambda: Message(refs=[TextMessage("x"), Message(y=1)]),
        "7ade129a33085186d1cfbf849bd3eb4f5b9e24c6",
    ),
    (
        "ref in dict",
        lambda: Message(d={"r": TextMessage("x"), "n": 1}),
        "38ca51ed6f8bec924efb6bbb922f587c848665aa",
    ),
    (
        "ref in dict in list",
        lambda: Message(l=[{"r": TextMessage("x")}, {"n": 1}]),
        "985be5f2b6e2ecf3882b3bf3e6b75f5f8442cf66",
    ),
    (
        "ref list in dict",
        lambda: Message(d={"rs": [TextMessage("x"), TextMessage("y")]}),
        "a97851f68a8f59a1ee4986bba422c43fb169cc09",
    ),
    (
        "ref in special node",
        lambda: Message(node=SpecialNode(r=TextMessage("x"), k=[1])),
        "ebe5ef1580344a1dea0f991fe3fff233a815d141",
    ),
    (
        "three levels",
        lambda: Message(a=TextMessage("b", c=Message(d=TextMessage("e")))),
        "1454451d77ebaf2538c4415d5add4c8aee0164e6",
    ),
    (
        "deep frozen path",
        lambda: Message(a={"b": {"c": [{"d": TextMessage("e")}]}}),
        "2ac9073e7ee70094a80b798f3f1bef45888abc2d",
    ),
    (
        "inline message in mixed tuple",
        lambda: Message(t=(1, TextMessage("x"))),
        "5c41d989be7a9047b0fa0c90327d3f22317e6606",
    ),
    (
        "inline message in nested tuple",
        lambda: Message(t=((TextMessage("x"),),)),
        "f15c4c3bcdc0aa4fce6987dd6cd4838258766152",
    ),
    (
        "frozen then message",
        lambda: Message(t=(Frozen(q=1), TextMessage("x", s=TextMessage("y")))),
        "3165fd210e945114f557584d89e08d312db25446",
    ),
    (
        "message then frozen",
        lambda: Message(t=(TextMessage("x"), Frozen(q=TextMessage("y")))),
        "c38202ed76c5fa4fc2743690a8fd4e3aaa568838",
    ),
    ("empty tuple", lambda: Message(t=()), "97fc74a90085d633b69b0dd9f4f78b8c02c08f43"),
    (
        "frozen with message inline",
        lambda: Frozen(m=TextMessage("x"), ms=[TextMessage("y")]),
        "3d8e80334e593e8bc05bec83106efb8626e27c31",
    ),
    (
        "declared base with subclass",
        lambda: HoldsBase(base=Derived(extra=[TextMessage("x")])),
        "f0d2a8d114489db414a9e3ea80010218de5e11b7",
    ),
    (
        "all types text message",
        lambda: TextMessage("x", **all_types_fields()),
        "4346326f4986eb674ffb4fff2013deb350a33a02",
    ),
    (
        "types in message",
        lambda: Message(
            td=timedelta(hours=-3),
            dt=datetime(2000, 1, 1, tzinfo=timezone(timedelta(hours=-8))),
            f=[1.0, -0.0, 1e300, float("nan")],
            big=2**80,
            d=Decimal("0.000"),
            b="ё".encode(),
            e=Color.NUMBER,
            fs=frozenset({10, 20}),
        ),
        "38cdc6c5d11795a98f5dd460f2240c843e235670",
    ),
]


@pytest.mark.parametrize(
    ("build", "expected_hash"),
    [pytest.param(build, expected, id=name) for name, build, expected in MESSAGE_HASH_VECTORS],
)
def test_message_hash_vectors(build: Callable[[], Frozen], expected_hash: str) -> None:
    model = build()
    assert model.hash_key == expected_hash
    assert model.hash_key == hashlib.sha256(model.serialized.encode("utf-8")).hexdigest()[:40]
