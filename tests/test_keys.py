"""Key names: one prefix, hash tags, validation, and one module that builds them all."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

from brokeragents.keys import Keys, new_id

PACKAGE = Path(__file__).resolve().parent.parent / "brokeragents"
KEYS_MODULE = PACKAGE / "keys.py"

# Every builder with a sample argument (None for the ones that take none).
BUILDERS: dict[str, str | None] = {
    "message": "e9abee71e678ea46761b6e348989f1a579117897",
    "sequence": "0f1e2d3c4b5a69788796a5b4c3d2e1f0",
    "call": "c0ffee",
    "call_input": "c0ffee",
    "call_reply": "c0ffee",
    "agent_inbox": "ECHO_AGENT",
    "agent_workers": "ECHO_AGENT",
    "worker": "web.1",
    "persisted": "e9abee71e678ea46761b6e348989f1a579117897",
    "agents": None,
    "workers": None,
    "dead_letters": None,
    "calls_log": None,
}
TAGGED = {name for name, argument in BUILDERS.items() if argument is not None}


def build(keys: Keys, name: str) -> str:
    argument = BUILDERS[name]
    builder = getattr(keys, name)
    return str(builder(argument) if argument is not None else builder())


def hash_tag(key: str) -> str | None:
    """The part of ``key`` Redis Cluster hashes: the first ``{...}`` with something inside."""
    start = key.find("{")
    if start < 0:
        return None
    end = key.find("}", start + 1)
    if end <= start + 1:
        return None
    return key[start + 1 : end]


def test_every_builder_is_covered() -> None:
    public = {
        name
        for name in dir(Keys)
        if not name.startswith("_") and callable(getattr(Keys, name)) and name not in ("prefix",)
    }
    helpers = {"message_pattern", "call_pattern", "is_message_key", "is_sequence_key"}
    assert public - helpers == set(BUILDERS)


@pytest.mark.parametrize("prefix", ["ba", "myapp", "team-1.prod_x"])
@pytest.mark.parametrize("name", sorted(BUILDERS))
def test_every_key_starts_with_the_prefix(prefix: str, name: str) -> None:
    key = build(Keys(prefix), name)
    assert key.startswith(f"{prefix}:")


def test_default_prefix_is_ba() -> None:
    assert Keys().prefix == "ba"
    assert Keys().message("abc") == "ba:msg:{abc}"


@pytest.mark.parametrize("name", sorted(TAGGED))
def test_tagged_keys_hash_on_their_id(name: str) -> None:
    key = build(Keys(), name)
    assert hash_tag(key) == BUILDERS[name]


def test_keys_of_one_call_share_a_slot() -> None:
    keys = Keys()
    call_id = new_id()
    tags = {hash_tag(keys.call(call_id)), hash_tag(keys.call_input(call_id)), hash_tag(keys.call_reply(call_id))}
    assert tags == {call_id}


def test_keys_of_one_agent_share_a_slot() -> None:
    keys = Keys()
    assert hash_tag(keys.agent_inbox("A")) == hash_tag(keys.agent_workers("A")) == "A"


def test_readable_layout() -> None:
    keys = Keys()
    assert keys.call("x") == "ba:call:{x}"
    assert keys.call_input("x") == "ba:call:{x}:input"
    assert keys.call_reply("x") == "ba:call:{x}:reply"
    assert keys.sequence("s") == "ba:seq:{s}"
    assert keys.agent_inbox("ECHO") == "ba:agent:{ECHO}:inbox"
    assert keys.dead_letters() == "ba:dead"
    assert keys.message_pattern() == "ba:msg:*"
    assert keys.call_pattern() == "ba:call:*"


@pytest.mark.parametrize("prefix", ["", "a:b", "a b", "a{b", "a}b", "a*", "ä", "x" * 65, "new\nline", "a?b", "[ab]"])
def test_invalid_prefixes_are_rejected(prefix: str) -> None:
    with pytest.raises(ValueError, match="Invalid key prefix"):
        Keys(prefix)


@pytest.mark.parametrize("name", sorted(TAGGED))
@pytest.mark.parametrize("bad", ["", "a{b", "a}b", "{x}", "x" * 257])
def test_ids_that_would_break_the_hash_tag_are_rejected(name: str, bad: str) -> None:
    with pytest.raises(ValueError, match="Invalid"):
        getattr(Keys(), name)(bad)


def test_new_ids_are_unique_hex() -> None:
    ids = {new_id() for _ in range(1000)}
    assert len(ids) == 1000
    assert all(re.fullmatch(r"[0-9a-f]{32}", value) for value in ids)


def test_recognizes_its_own_message_and_sequence_keys() -> None:
    keys = Keys()
    other = Keys("other")
    assert keys.is_message_key(keys.message("abc"))
    assert not keys.is_message_key(other.message("abc"))
    assert not keys.is_message_key(keys.sequence("abc"))
    assert not keys.is_message_key("ba:msg:{a}b}")
    assert not keys.is_message_key("ba:msg:{}")
    for key in (keys.sequence("s"), keys.call_input("c"), keys.call_reply("c")):
        assert keys.is_sequence_key(key)
        assert not other.is_sequence_key(key)
    assert not keys.is_sequence_key(keys.call("c"))
    assert not keys.is_sequence_key(keys.message("m"))
    assert not keys.is_sequence_key(keys.agent_inbox("A"))


# --- one module builds every key --------------------------------------------------------------------

# Fragments that only a key name contains: "<prefix>:" at the start, or ":<kind>:{" anywhere.
_KEY_LITERAL = re.compile(r"^ba:|:(msg|seq|call|agent|worker|persisted):\{|^(msg|seq|call|agent|worker):\{")


def _code_strings(tree: ast.AST) -> list[tuple[int, str]]:
    """Every string constant in code (f-string parts included), leaving docstrings out."""
    docstrings: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
            body = node.body
            if body and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant):
                docstrings.add(id(body[0].value))
    return [
        (node.lineno, node.value)
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings
    ]


def test_the_key_literal_check_finds_what_it_should() -> None:
    source = '"""ba:msg:{docstring}"""\nKEY = "ba:msg:{abc}"\nOTHER = f"{prefix}:seq:{{{x}}}"\n'
    found = [text for _, text in _code_strings(ast.parse(source)) if _KEY_LITERAL.search(text)]
    assert sorted(found) == [":seq:{", "ba:msg:{abc}"]


def test_only_keys_module_builds_key_names() -> None:
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if path == KEYS_MODULE:
            continue
        for line, text in _code_strings(ast.parse(path.read_text(encoding="utf-8"))):
            if _KEY_LITERAL.search(text) or text.startswith('"ba:'):
                offenders.append(f"{path.relative_to(PACKAGE.parent)}:{line}: {text!r}")
    assert offenders == [], "build key names in brokeragents/keys.py:\n" + "\n".join(offenders)


def test_keys_module_does_build_them() -> None:
    strings = [text for _, text in _code_strings(ast.parse(KEYS_MODULE.read_text(encoding="utf-8")))]
    assert any(":msg:{" in text for text in strings)
