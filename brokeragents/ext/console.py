"""Console agents: print messages as they stream, read what the user types, and a user agent.

Output goes to ``sys.stdout`` and input comes from ``sys.stdin``, looked up at call time, so the
agents follow redirections. When both are terminals, input is read with a multi-line
prompt_toolkit prompt (Enter sends, Ctrl+Space inserts a newline). Otherwise each line of stdin
is one message, echoed after the prompt so that the transcript reads like a terminal session.
"""

from __future__ import annotations

import asyncio
import sys
from typing import TYPE_CHECKING, Any

from brokeragents.agents import MiniAgent, miniagent
from brokeragents.calls import InteractionContext
from brokeragents.ext.aggregators import achain_agents
from brokeragents.ext.history import in_memory_history_agent
from brokeragents.ext.llms.messages import UserMessage

if TYPE_CHECKING:
    from prompt_toolkit import PromptSession

DEFAULT_GREETING = "YOU ARE NOW IN A CHAT WITH AN AI ASSISTANT"
EXIT_COMMAND = "exit"
USER_PROMPT = "USER: "
_GREETING_STYLE = "92;1"
_HELP = (
    "Press Enter to send your message.\n"
    "Press Ctrl+Space to insert a newline.\n"
    'Press Ctrl+C (or type "exit") to quit the conversation.'
)

# Created on first use: building a prompt session touches the terminal (and warns without one).
_prompt_session: PromptSession[str] | None = None


def _write(text: str) -> None:
    sys.stdout.write(text)
    sys.stdout.flush()


def _styled(style: str | int, text: str) -> str:
    return f"\033[{style}m{text}\033[0m"


@miniagent
async def console_output_agent(
    ctx: InteractionContext,
    assistant_style: str | int = "92;1",
    mention_aliases: bool = True,
    default_role: str = "assistant",
) -> None:
    """Print each message token by token, labelled with its agent alias or role; reply with the input.

    `assistant_style` is an ANSI SGR code (e.g. "92;1": bright green, bold).
    """
    ctx.reply(ctx.message_promises)
    async for message_promise in ctx.message_promises:
        if mention_aliases:
            known = message_promise.known_beforehand
            label = known.get("agent_alias") or known.get("role") or default_role
            _write(_styled(assistant_style, f"{str(label).upper()}: "))
        async for token in message_promise:
            _write(_styled(assistant_style, str(token)))
        _write("\n\n")


@miniagent
async def console_input_agent(ctx: InteractionContext, greeting: str = DEFAULT_GREETING) -> None:
    """Reply with the input, then with what the user types (a UserMessage, unless blank).

    The greeting is shown when there is no input, i.e. at the start of a dialog. Typing "exit"
    or ending the input (Ctrl+D, end of piped stdin) raises KeyboardInterrupt, which ends a
    dialog_loop.
    """
    ctx.reply(ctx.message_promises)
    if not await ctx.message_promises:
        _write(_styled(_GREETING_STYLE, f"\n{greeting}\n\n{_HELP}\n") + "\n")
    if sys.stdin.isatty() and sys.stdout.isatty():
        text = await _aprompt_terminal()
    else:
        text = await _aread_line()
    _write("\n")
    if text.strip() == EXIT_COMMAND:
        raise KeyboardInterrupt
    if text.strip():
        ctx.reply(UserMessage(text))


async def _aread_line() -> str:
    _write(USER_PROMPT)
    # A thread, because stdin may be a regular file or a pipe and the event loop must not block.
    line: str = await asyncio.to_thread(sys.stdin.readline)
    if not line:
        _write("\n")
        raise KeyboardInterrupt  # end of input: nothing more will be typed
    text = line.removesuffix("\n")
    if not sys.stdin.isatty():
        _write(text + "\n")  # nobody saw it being typed
    return text


async def _aprompt_terminal() -> str:
    global _prompt_session
    session = _prompt_session
    if session is None:
        session = _prompt_session = _new_prompt_session()
    try:
        return await session.prompt_async()
    except EOFError:
        raise KeyboardInterrupt from None  # Ctrl+D: quit, like "exit"


def _new_prompt_session() -> PromptSession[str]:
    from prompt_toolkit import PromptSession
    from prompt_toolkit.formatted_text import FormattedText
    from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
    from prompt_toolkit.lexers import SimpleLexer
    from prompt_toolkit.styles import Style

    bindings = KeyBindings()

    @bindings.add("enter")
    def _send(event: KeyPressEvent) -> None:
        event.current_buffer.validate_and_handle()

    @bindings.add("c-space")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    style = Style.from_dict({"user": "ansibrightyellow bold"})
    return PromptSession(
        FormattedText([("class:user", USER_PROMPT)]),
        multiline=True,
        key_bindings=bindings,
        lexer=SimpleLexer("class:user"),  # what the user types has the prompt's colour
        prompt_continuation=" " * len(USER_PROMPT),
        style=style,
    )


@miniagent
async def user_agent(
    ctx: InteractionContext,
    output_agent: MiniAgent | None,
    input_agent: MiniAgent | None,
    history_agent: MiniAgent | None = in_memory_history_agent,
) -> None:
    """Show the input to the user, read the user's answer and reply with the full chat history.

    It chains `output_agent` -> `input_agent` -> `history_agent` (with return_full_history=True);
    any of them may be None.
    """
    history = history_agent.fork(return_full_history=True) if history_agent is not None else None
    messages: Any = await achain_agents((output_agent, input_agent, history), ctx.message_promises)
    ctx.reply(messages)


console_user_agent: MiniAgent = user_agent.fork(
    output_agent=console_output_agent, input_agent=console_input_agent
)

__all__ = (
    "DEFAULT_GREETING",
    "EXIT_COMMAND",
    "USER_PROMPT",
    "console_input_agent",
    "console_output_agent",
    "console_user_agent",
    "user_agent",
)
