"""Frozen: immutability, freezing of values, dict-like access, serialization and hash keys.

Expected hash keys were computed with MiniAgents 0.0.35 (the oracle); these tests do not need it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from datetime import UTC, date, datetime, time, timedelta, timezone
from decimal import Decimal
from enum import Enum
from pathlib import Path
from typing import Any
from unittest.mock import patch
from uuid import UUID

import pytest
from pydantic import BaseModel, ValidationError

import brokeragents.frozen as frozen_module
from brokeragents.context import PromisingContext
from brokeragents.errors import UnknownMessageClassError, WireFormatError
from brokeragents.frozen import Frozen, cached_privately, lookup_frozen_class


class SampleModel(Frozen):
    some_req_field: str
    some_opt_field: int = 2
    sub_model: SampleModel | None = None


class OtherModel(Frozen):
    some_req_field: str
    some_opt_field: int = 2
    sub_model: SampleModel | None = None


class Color(Enum):
    RED = "red"
    NUMBER = 3


class PlainModel(BaseModel):
    value: int = 1


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


def expected_all_types_dump(class_: str) -> dict[str, Any]:
    return {
        "class_": class_,
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


def test_sample_model_frozen() -> None:
    sample = SampleModel(some_req_field="test")
    with pytest.raises(ValidationError, match="Instance is frozen"):
        sample.some_req_field = "changed"  # type: ignore[misc]
    with pytest.raises(ValidationError, match="Instance is frozen"):
        sample.some_opt_field = 3  # type: ignore[misc]
    assert sample.some_req_field == "test"
    assert sample.some_opt_field == 2


def test_model_frozen() -> None:
    model = Frozen(some_field="value")
    with pytest.raises(ValidationError, match="Instance is frozen"):
        model.new_field = "new"
    with pytest.raises(ValidationError, match="Instance is frozen"):
        model.some_field = "other"
    assert model.keys() == ("class_", "some_field")


def test_sample_model_hash_key() -> None:
    sample = SampleModel(
        some_req_field="юнікод",
        some_opt_field=3,
        sub_model=SampleModel(some_req_field="вкладений 😀", some_opt_field=4),
    )
    expected_json = (
        '{"class_": "SampleModel", "some_opt_field": 3, "some_req_field": "юнікод", '
        '"sub_model": {"class_": "SampleModel", "some_opt_field": 4, "some_req_field": "вкладений 😀", '
        '"sub_model": null}}'
    )
    assert sample.serialized == expected_json
    expected_hash = hashlib.sha256(expected_json.encode("utf-8")).hexdigest()[:40]
    assert sample.hash_key == expected_hash == "79f8567956345f0b2e39dfa852ca2a47ec5f9a0e"

    sample._some_private_attribute = "private"  # undeclared private attributes are allowed
    assert sample._some_private_attribute == "private"
    assert SampleModel(**sample.as_kwargs()).hash_key == expected_hash
    assert "_some_private_attribute" not in sample.serialize()


def test_private_attribute_set_before_hashing_does_not_change_hash() -> None:
    sample = SampleModel(some_req_field="test")
    sample._note = "set before the first hash_key access"
    assert sample.hash_key == "2f9753c92f0452bacafaa606b6076d2bf266e095"
    assert sample == SampleModel(some_req_field="test")


def test_model_hash_key() -> None:
    model = Frozen(content="test", final_sender_alias="user", custom_field={"role": "user"})
    expected_json = (
        '{"class_": "Frozen", "content": "test", "custom_field": {"class_": "Frozen", "role": "user"}, '
        '"final_sender_alias": "user"}'
    )
    assert model.serialized == expected_json
    assert model.hash_key == hashlib.sha256(expected_json.encode("utf-8")).hexdigest()[:40]
    assert isinstance(model.custom_field, Frozen)


def test_nested_object_not_copied() -> None:
    sub_model = SampleModel(some_req_field="sub")
    sample = SampleModel(some_req_field="test", sub_model=sub_model)
    assert sample.sub_model is sub_model
    nested = Frozen(inner=sub_model, items=[sub_model])
    assert nested.inner is sub_model
    assert nested.items[0] is sub_model


def test_hash_key_calculated_once() -> None:
    original_sha256 = hashlib.sha256
    with patch("hashlib.sha256", side_effect=original_sha256) as mock_sha256:
        sample = SampleModel(some_req_field="test")
        assert mock_sha256.call_count == 0
        assert sample.hash_key == "2f9753c92f0452bacafaa606b6076d2bf266e095"
        assert sample.hash_key == "2f9753c92f0452bacafaa606b6076d2bf266e095"
        assert mock_sha256.call_count == 1


def test_model_hash_key_vs_key_ordering() -> None:
    first = Frozen(content="test", final_sender_alias="user", custom_field={"role": "user", "a": 1})
    second = Frozen(custom_field={"a": 1, "role": "user"}, final_sender_alias="user", content="test")
    assert first.hash_key == second.hash_key
    assert first.full_json != second.full_json  # full_json keeps the insertion order


def test_sample_model_known_vector() -> None:
    sample = SampleModel(some_req_field="test")
    assert sample.serialized == (
        '{"class_": "SampleModel", "some_opt_field": 2, "some_req_field": "test", "sub_model": null}'
    )
    assert sample.hash_key == "2f9753c92f0452bacafaa606b6076d2bf266e095"


def test_frozen_with_all_types_can_be_created() -> None:
    fields = all_types_fields()
    model = Frozen(**fields)
    for key in fields:
        if key not in ("list_field", "dict_field"):
            assert model[key] == fields[key]
    assert model.nested_frozen_field is fields["nested_frozen_field"]
    assert model.list_field == (1, 2, (3, 4))
    assert model.dict_field == Frozen(key="value", nested=Frozen(deep=(1, 2)))
    assert model.dict_field.class_ == "Frozen"


def test_frozen_serialize() -> None:
    assert Frozen(**all_types_fields()).serialize() == expected_all_types_dump("Frozen")


def test_frozen_serialized_property() -> None:
    model = Frozen(**all_types_fields())
    assert json.loads(model.serialized) == expected_all_types_dump("Frozen")
    assert model.serialized == json.dumps(model.serialize(), sort_keys=True, ensure_ascii=False)


def test_frozen_full_json_property() -> None:
    model = Frozen(**all_types_fields())
    assert json.loads(model.full_json) == expected_all_types_dump("Frozen")
    assert list(json.loads(model.full_json)) == ["class_", *all_types_fields()]
    assert str(model) == model.full_json == model.as_string


def test_frozen_hash_key_property() -> None:
    # Our own all-types fixture: MiniAgents' fixture (cdeb1db1…) could not be reconstructed.
    assert Frozen(**all_types_fields()).hash_key == "0b2a7613fd8d776858843876edac84b284d46b9f"


@pytest.mark.parametrize(
    ("value", "type_name"),
    [
        ({1, 2}, "set"),
        (print, "builtin_function_or_method"),
        (lambda: 1, "function"),
        (object(), "object"),
        (PlainModel(), "PlainModel"),
        ([1, [2, {3}]], "set"),
    ],
)
def test_disallowed_values_fail_validation(value: object, type_name: str) -> None:
    with pytest.raises(ValidationError) as exc_info:
        SampleModel(some_req_field="x", bad_field=value)
    assert (
        "only {NoneType, str, Number, bool, UUID, datetime, date, time, timedelta, Path, Enum, bytes, "
        "frozenset, tuple, list, dict, Frozen} are allowed as field values in SampleModel, "
        f"got {type_name} in `bad_field`"
    ) in str(exc_info.value)


def test_disallowed_value_inside_nested_dict_names_the_nested_key() -> None:
    with pytest.raises(ValidationError) as exc_info:
        SampleModel(some_req_field="x", outer=[{"inner_key": {1}}])
    assert "allowed as field values in Frozen, got set in `inner_key`" in str(exc_info.value)


def test_non_frozen_model_in_declared_field_fails() -> None:
    with pytest.raises(ValidationError, match="got PlainModel in `sub_model`"):
        SampleModel(some_req_field="x", sub_model=PlainModel())


def test_class_is_forced_to_short_class_name() -> None:
    assert Frozen(class_="Other").class_ == "Frozen"
    assert SampleModel(some_req_field="x", class_="Frozen").class_ == "SampleModel"
    assert Frozen(class_=None).class_ == "Frozen"
    assert Frozen.model_validate({"class_": "X", "a": [1, {"b": 2}]}).full_json == (
        '{"class_":"Frozen","a":[1,{"class_":"Frozen","b":2}]}'
    )


def test_nested_dict_becomes_base_frozen_even_in_subclass() -> None:
    sample = SampleModel(some_req_field="x", extra={"a": 1})
    assert type(sample.extra) is Frozen
    assert sample.extra.class_ == "Frozen"


def test_different_classes_with_same_fields_differ() -> None:
    sample = SampleModel(some_req_field="test")
    other = OtherModel(some_req_field="test")
    assert sample != other
    assert sample.hash_key != other.hash_key
    assert other.hash_key == "1b1dd24cb6bd646446abbce4878bb95179af38ec"
    assert Frozen(a=1) == Frozen(a=1)
    assert hash(Frozen(a=1)) == hash(Frozen(a=1))


def test_dict_like_access() -> None:
    sample = SampleModel(some_req_field="test", extra_field=[1])
    assert sample.keys() == ("class_", "some_req_field", "some_opt_field", "sub_model", "extra_field")
    assert sample.values() == ("SampleModel", "test", 2, None, (1,))
    assert len(sample) == 5
    assert "class_" in sample
    assert "extra_field" in sample
    assert "missing" not in sample
    assert "keys" not in sample  # methods are not fields
    assert sample["extra_field"] == (1,)
    assert sample["class_"] == "SampleModel"
    assert sample.get("some_opt_field") == 2
    assert sample.get("missing") is None
    assert sample.get("missing", 7) == 7
    with pytest.raises(AttributeError):  # like MiniAgents: attribute lookup, not KeyError
        sample["missing"]
    assert sample.as_kwargs() == {
        "some_req_field": "test",
        "some_opt_field": 2,
        "sub_model": None,
        "extra_field": (1,),
    }
    assert dict(sample) == {"class_": "SampleModel", **sample.as_kwargs()}


def test_as_string_override_hook() -> None:
    class Shouting(Frozen):
        def _as_string(self) -> str:
            return str(self.get("text", "")).upper()

    assert str(Shouting(text="hi")) == "HI"
    assert Shouting(text="hi").as_string == "HI"
    assert Shouting(text="hi").full_json == '{"class_":"Shouting","text":"hi"}'


def test_cached_privately_computes_once_and_stays_private() -> None:
    calls: list[int] = []

    class Counting(Frozen):
        @property
        @cached_privately
        def expensive(self) -> int:
            calls.append(1)
            return len(self.serialized)

    model = Counting(a=1)
    assert model.expensive == model.expensive == len('{"a": 1, "class_": "Counting"}')
    assert len(calls) == 1
    assert model.keys() == ("class_", "a")
    assert model.serialize() == {"class_": "Counting", "a": 1}
    assert model == Counting(a=1)


def test_model_copy_drops_cached_values() -> None:
    model = Frozen(a=1)
    assert model.hash_key == "8fa7632ee9368b54fcc5320ae70a427a1e549dea"
    copied = model.model_copy(update={"a": 2})
    assert copied.hash_key == Frozen(a=2).hash_key
    assert copied.keys() == ("class_", "a")
    assert model.hash_key == "8fa7632ee9368b54fcc5320ae70a427a1e549dea"


def test_longer_hash_keys_module_flag(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(frozen_module, "LONGER_HASH_KEYS", True)
    assert SampleModel(some_req_field="test").hash_key == (
        "2f9753c92f0452bacafaa606b6076d2bf266e09533d957093f22db6ba1619195"
    )


async def test_longer_hash_keys_from_context(monkeypatch: pytest.MonkeyPatch) -> None:
    long_key = "2f9753c92f0452bacafaa606b6076d2bf266e09533d957093f22db6ba1619195"
    async with PromisingContext(longer_hash_keys=True):
        assert SampleModel(some_req_field="test").hash_key == long_key
    monkeypatch.setattr(frozen_module, "LONGER_HASH_KEYS", True)
    async with PromisingContext(longer_hash_keys=False):
        assert SampleModel(some_req_field="test").hash_key == long_key[:40]
    async with PromisingContext():  # unset on the context: the module flag decides
        assert SampleModel(some_req_field="test").hash_key == long_key


def test_registry_finds_classes_by_short_name() -> None:
    assert lookup_frozen_class("Frozen") is Frozen
    assert lookup_frozen_class("SampleModel") is SampleModel


def test_registry_unknown_name_raises() -> None:
    with pytest.raises(UnknownMessageClassError, match="NoSuchClass") as exc_info:
        lookup_frozen_class("NoSuchClass")
    assert isinstance(exc_info.value, WireFormatError)


def _define_duplicate_in_first_place() -> type[Frozen]:
    class RegistryDuplicate(Frozen):
        pass

    return RegistryDuplicate


def _define_duplicate_in_second_place() -> type[Frozen]:
    class RegistryDuplicate(Frozen):
        pass

    return RegistryDuplicate


def test_registry_keeps_first_class_of_a_short_name() -> None:
    first = _define_duplicate_in_first_place()
    second = _define_duplicate_in_second_place()
    assert first is not second
    assert lookup_frozen_class("RegistryDuplicate") is first


def _define_reloadable() -> type[Frozen]:
    class RegistryReloadable(Frozen):
        pass

    return RegistryReloadable


def test_registry_same_qualified_name_is_replaced() -> None:
    _define_reloadable()
    reloaded = _define_reloadable()  # same module and qualified name, as after a module reload
    assert lookup_frozen_class("RegistryReloadable") is reloaded


HASH_VECTORS: list[tuple[str, Callable[[], Frozen], str]] = [
    ("empty", lambda: Frozen(), "ad895bee22b49760a86117a5b6d90eb88526b4fb"),
    ("none", lambda: Frozen(a=None), "5b80d99b8597af271454a1ca35f4dd00e2208fe6"),
    ("emoji", lambda: Frozen(text="😀👍🏽👨‍👩‍👧"), "1bdbd695ed7daaee81acae8a9e84fa9cce2edb48"),
    ("rtl", lambda: Frozen(text="שלום عليكم"), "acdb1127bdb75293a18317437110a6ab2dfcae2c"),
    ("combining", lambda: Frozen(text="e\u0301 vs \u00e9"), "83b696b218d25ef92c4c4c11bc038231e86ce992"),
    (
        "escapes",
        lambda: Frozen(text='quote " backslash \\ newline \n tab \t nul \x00'),
        "990e08c5e5fef00975fceadbec6397e86655571a",
    ),
    ("unicode key", lambda: Frozen(**{"ключ": "значення"}), "3dcbcea6fac87a238562bd755569812feb7c03c9"),
    ("bools", lambda: Frozen(t=True, f=False), "c325d4f530646f40f5631ab7568b1bba6c5e62de"),
    (
        "ints",
        lambda: Frozen(zero=0, neg=-1, big=10**30, bigneg=-(2**70)),
        "b8eb14431ab1c2092cc4dc232df3a97fa3b5ef12",
    ),
    (
        "floats",
        lambda: Frozen(one=1.0, tenth=0.1, huge=1e20, tiny=1e-7, negzero=-0.0),
        "985937e09d2feb4bc52b778ce839da4a68998318",
    ),
    (
        "nan and inf",
        lambda: Frozen(nan=float("nan"), inf=float("inf"), ninf=float("-inf")),
        "20744c068bcfdb314e6d88c4b1338f9155dc3852",
    ),
    (
        "decimal",
        lambda: Frozen(d=Decimal("3.1400"), e=Decimal("1E+3"), n=Decimal("-0.001")),
        "57e5ff748096fc130326db81458a52bc6b848ca7",
    ),
    (
        "timedelta",
        lambda: Frozen(a=timedelta(0), b=timedelta(days=-1, seconds=5), c=timedelta(microseconds=5)),
        "e52603dd4052fedc7de6fbcf3ee23270011f5d44",
    ),
    (
        "time",
        lambda: Frozen(a=time(0, 0), b=time(23, 59, 59, 999999), c=time(1, 2, tzinfo=UTC)),
        "28d39cd2ee2ef5495328ba8247c1693fa9151f29",
    ),
    (
        "datetime naive",
        lambda: Frozen(dt=datetime(2024, 2, 29, 23, 59, 59, 123456)),
        "3f4b7b3f9304232505e582e7faa927374887ba16",
    ),
    (
        "datetime utc",
        lambda: Frozen(dt=datetime(2024, 1, 2, 3, 4, 5, tzinfo=UTC)),
        "58d5693418a582edc4992b9a9bb79a0892abec63",
    ),
    (
        "datetime +05:30",
        lambda: Frozen(dt=datetime(2024, 1, 2, tzinfo=timezone(timedelta(hours=5, minutes=30)))),
        "317500c76bc222205912cdcc53d006af80ff9656",
    ),
    ("date", lambda: Frozen(d=date(1999, 12, 31)), "76ca7cb364f6557c57c4cf7323cdc21c8807016c"),
    (
        "path",
        lambda: Frozen(p=Path("relative/ü.txt"), q=Path("/abs")),
        "ede96cf0a6f6e5dfad59255ffe8e7c5b10c26ef8",
    ),
    ("enum", lambda: Frozen(s=Color.RED, n=Color.NUMBER), "9fcbfb7965689f257b9630b865197d77fe9605b8"),
    (
        "uuid",
        lambda: Frozen(u=UUID(int=0), v=UUID("12345678-1234-5678-1234-567812345678")),
        "0e521debca2f85257d19f4c5808b0ebb3783b0e7",
    ),
    ("bytes", lambda: Frozen(b=b"", c="байти".encode()), "c789a2ef9b26a5d8ab2a9b3b581d02c3d705ff29"),
    (
        "frozenset",
        lambda: Frozen(s=frozenset({3, 1, 2}), e=frozenset()),
        "a233e28a0e3748879761fb1a27feca4012a7209b",
    ),
    ("empty tuple", lambda: Frozen(t=(), l=[]), "4dd1725f44772b9826545d50eaa59aaa797f2cd2"),
    ("nested tuples", lambda: Frozen(t=[[1, [2, [3, []]]], ()]), "ea02bbd523302e373572251d3683ac416a955ddd"),
    (
        "nested dicts",
        lambda: Frozen(a={"b": {"c": {"d": {"e": 1}}}}),
        "f60001029ce396aa0fbe9b47270cb7ea913fb067",
    ),
    (
        "tuple of frozen",
        lambda: Frozen(t=[{"a": 1}, Frozen(b=2), SampleModel(some_req_field="s")]),
        "4f8671f22248c29cc023f5ac3f626e3e2913a685",
    ),
    (
        "subclass nested",
        lambda: SampleModel(some_req_field="a", sub_model=SampleModel(some_req_field="b")),
        "1b0f980bc069a12491c9eca92905e5a8b2f32d65",
    ),
    (
        "subclass extra",
        lambda: SampleModel(some_req_field="a", some_opt_field=-5, extra=[1.5, None]),
        "ef761857aa08af5fd48ed9c0ee41e33454805fd8",
    ),
]


@pytest.mark.parametrize(
    ("build", "expected_hash"),
    [pytest.param(build, expected, id=name) for name, build, expected in HASH_VECTORS],
)
def test_hash_vectors(build: Callable[[], Frozen], expected_hash: str) -> None:
    model = build()
    assert model.hash_key == expected_hash
    assert model.hash_key == hashlib.sha256(model.serialized.encode("utf-8")).hexdigest()[:40]
