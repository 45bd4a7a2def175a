"""An agent that proposes improvements to this repository's README.

It reads README.md and lists the package's modules with the first line of their docstrings, then
asks the LLM what a newcomer would miss. Without an API key the fake LLM lists the modules the
README never mentions, a deterministic answer computed from the same inputs.

Run from the repository root: ``python -m examples.self_dev.readme``.
"""

import os

from brokeragents import InteractionContext, MiniAgents, TextMessage, miniagent
from brokeragents.ext.llms.pick import pick_llm_agent
from examples.self_dev.common import REPO_ROOT, aprint_labelled, first_docstring_line, relative, source_files

SYSTEM_PROMPT = (
    "You review the README of a Python project for a newcomer. You are given the README and the list of "
    "the package's modules. Propose at most five concrete improvements, as a numbered list: what is "
    "missing, unclear or out of date. Do not rewrite the whole README."
)
MAX_SUGGESTIONS = 5


def module_list() -> list[tuple[str, str]]:
    """(path, first docstring line) of every public module of the package."""
    return [
        (relative(path), first_docstring_line(path))
        for path in source_files()
        if not path.name.startswith("_") or path.name == "__init__.py"
    ]


@miniagent
async def readme_agent(ctx: InteractionContext) -> None:
    """Proposes README improvements from README.md and the module list."""
    readme = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
    modules = module_list()
    alias = ctx.this_agent.alias
    ctx.reply(TextMessage(f"(read: README.md, {len(modules)} modules)", agent_alias=alias))
    unmentioned = [
        (path, summary)
        for path, summary in modules
        if not path.endswith("__init__.py") and path.rsplit("/", 1)[-1].removesuffix(".py") not in readme
    ]
    script = "\n".join(
        [f"The README never mentions {len(unmentioned)} of {len(modules)} modules; it could say what these do:"]
        + [
            f"{n}. {path}: {summary or '(no docstring)'}"
            for n, (path, summary) in enumerate(unmentioned[:MAX_SUGGESTIONS], 1)
        ]
    )
    listing = "\n".join(f"- `{path}`: {summary}" for path, summary in modules)
    llm = pick_llm_agent(script=script, system=SYSTEM_PROMPT, response_metadata={"agent_alias": alias})
    ctx.reply(llm.trigger([TextMessage(f"README.md:\n\n{readme}"), TextMessage(f"The modules:\n\n{listing}")]))


async def main() -> None:
    await aprint_labelled(readme_agent.trigger())


if __name__ == "__main__":
    MiniAgents(redis_url=os.environ.get("REDIS_URL")).run(main())
