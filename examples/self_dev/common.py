"""What the self-development agents share: the repository's files, a keyword search, printing."""

import ast
import re
from pathlib import Path

from brokeragents import MessageSequencePromise

REPO_ROOT = Path(__file__).resolve().parents[2]
PACKAGE_DIR = REPO_ROOT / "brokeragents"
MAX_FILE_CHARS = 40_000  # about 10k tokens: a few files fit any current model's context
STOP_WORDS = frozenset({
    "about", "after", "does", "from", "have", "into", "that", "their", "there", "these", "this", "what", "when",
    "where", "which", "while", "with", "would", "your", "brokeragents", "code", "file", "files", "work", "works",
})  # fmt: skip


def source_files() -> list[Path]:
    """Every module of the package, in path order."""
    return sorted(PACKAGE_DIR.rglob("*.py"))


def relative(path: Path) -> str:
    return path.relative_to(REPO_ROOT).as_posix()


def first_docstring_line(path: Path) -> str:
    """The first line of the module's docstring ("" if it has none or does not parse)."""
    try:
        docstring = ast.get_docstring(ast.parse(path.read_text(encoding="utf-8")))
    except SyntaxError:
        return ""
    return docstring.strip().splitlines()[0] if docstring else ""


def keywords(text: str) -> list[str]:
    """The words of ``text`` worth searching for, lower case, in order, without repeats."""
    words = [word for word in re.findall(r"[a-z_]+", text.lower()) if len(word) > 3 and word not in STOP_WORDS]
    return list(dict.fromkeys(word.removesuffix("s") for word in words))


def find_relevant_files(question: str, limit: int = 3) -> list[Path]:
    """The modules where the question's keywords occur most (a word in a file's name counts 20 times)."""
    words = keywords(question)
    scored = []
    for index, path in enumerate(source_files()):
        text = path.read_text(encoding="utf-8").lower()
        name = relative(path).lower()
        score = sum(text.count(word) + 20 * name.count(word) for word in words)
        if score:
            scored.append((-score, index, path))
    return [path for _score, _index, path in sorted(scored)[:limit]]


def file_for_prompt(path: Path) -> str:
    """A file as the LLM sees it: its path, then its text in a fenced block (cut if very long)."""
    text = path.read_text(encoding="utf-8")
    if len(text) > MAX_FILE_CHARS:
        text = text[:MAX_FILE_CHARS] + "\n# ... (cut)"
    return f"File `{relative(path)}`:\n\n```python\n{text}\n```"


async def aprint_labelled(replies: MessageSequencePromise) -> None:
    """Print each reply message as it streams, after the alias of the agent that wrote it."""
    async for message_promise in replies:
        alias = message_promise.known_beforehand.get("agent_alias") or "?"
        print(f"[{alias}] ", end="", flush=True)
        async for token in message_promise:
            print(token, end="", flush=True)
        print()
