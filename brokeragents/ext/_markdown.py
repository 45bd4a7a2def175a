"""Find the top-level level-1 headings of a markdown document: enough CommonMark to split a chat log.

This is a line scanner, not a full parser. It knows the blocks that can hide a heading-like line:
fenced and indented code, HTML blocks, block quotes and list items. It also knows paragraphs, which
turn a following ``===`` line into a setext heading. Headings nested in quotes or lists are not
top-level, so they are not reported.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

_ATX_H1 = re.compile(r" {0,3}#(?:[ \t]+(.*))?")
_ATX_CLOSING = re.compile(r"(?:^|[ \t]+)#+[ \t]*$")
_SETEXT_H1_UNDERLINE = re.compile(r" {0,3}=+[ \t]*")
_FENCE_OPEN = re.compile(r" {0,3}(`{3,}|~{3,})(.*)")
_BLOCK_QUOTE = re.compile(r" {0,3}>")
_LIST_ITEM = re.compile(r"( {0,3})([-+*]|\d{1,9}[.)])([ \t]+|$)")
_THEMATIC_BREAK = re.compile(r" {0,3}(?:(?:\*[ \t]*){3,}|(?:-[ \t]*){3,}|(?:_[ \t]*){3,})")
_SETEXT_H2_UNDERLINE = re.compile(r" {0,3}-+[ \t]*")
_OTHER_ATX = re.compile(r" {0,3}#{2,6}(?:[ \t]|$)")
_BLOCK_TAGS = (
    "address|article|aside|base|basefont|blockquote|body|caption|center|col|colgroup|dd|details|"
    "dialog|dir|div|dl|dt|fieldset|figcaption|figure|footer|form|frame|frameset|h[1-6]|head|header|"
    "hr|html|iframe|legend|li|link|main|menu|menuitem|nav|noframes|ol|optgroup|option|p|param|"
    "search|section|summary|table|tbody|td|tfoot|th|thead|title|tr|track|ul"
)
# HTML block starts: (pattern, text that ends the block or "" for a blank line, can interrupt a
# paragraph). Only the last kind, a lone tag, cannot interrupt one.
_HTML_STARTS = (
    (re.compile(r" {0,3}<(?:script|pre|style|textarea)(?:[\s>]|$)", re.IGNORECASE), "</", True),
    (re.compile(r" {0,3}<!--"), "-->", True),
    (re.compile(r" {0,3}<\?"), "?>", True),
    (re.compile(r" {0,3}<![A-Za-z]"), ">", True),
    (re.compile(r" {0,3}<!\[CDATA\["), "]]>", True),
    (re.compile(rf" {{0,3}}</?(?:{_BLOCK_TAGS})(?:[\s>]|/>|$)", re.IGNORECASE), "", True),
    (re.compile(r" {0,3}(?:<[A-Za-z][\w-]*(?:\s[^<>]*)?/?>|</[A-Za-z][\w-]*\s*>)\s*"), "", False),
)


@dataclass(frozen=True)
class Heading:
    """A top-level h1: its text, and the lines it spans (``end`` excluded)."""

    text: str
    start: int
    end: int


def _indent(line: str) -> int:
    expanded = line.expandtabs(4)
    return len(expanded) - len(expanded.lstrip(" "))


def _is_blank(line: str) -> bool:
    return not line.strip()


def _html_start(line: str) -> tuple[str, bool] | None:
    """``(end marker, can interrupt a paragraph)`` if ``line`` opens an HTML block."""
    for pattern, end, interrupts in _HTML_STARTS:
        if pattern.match(line):
            return end, interrupts
    return None


def _is_fence(line: str) -> re.Match[str] | None:
    fence = _FENCE_OPEN.fullmatch(line)
    # A backtick fence's info string may not hold a backtick (it would be inline code).
    return fence if fence and not (fence.group(1)[0] == "`" and "`" in fence.group(2)) else None


def _starts_nonempty_item(line: str) -> bool:
    item = _LIST_ITEM.match(line)
    return item is not None and not _is_blank(line[item.end() :])


def _interrupts_paragraph(line: str) -> bool:
    html = _html_start(line)
    return bool(
        _ATX_H1.fullmatch(line)
        or _OTHER_ATX.match(line)
        or _is_fence(line)
        or _BLOCK_QUOTE.match(line)
        or _THEMATIC_BREAK.fullmatch(line)
        or _starts_nonempty_item(line)
        or (html and html[1])
    )


def _opens_paragraph(line: str) -> bool:
    """Whether ``line``, outside any paragraph, starts one."""
    return not (_is_blank(line) or _indent(line) >= 4 or _interrupts_paragraph(line) or _html_start(line))


def _quote_content(line: str) -> str:
    content = line.lstrip(" ")[1:]
    return content[1:] if content.startswith(" ") else content


class _Scanner:
    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        self.headings: list[Heading] = []
        self.fence: tuple[str, int] | None = None  # (fence char, run length) while inside one
        self.html_end: str | None = None  # while inside an HTML block: its end ("" = a blank line)
        self.list_indent: int | None = None  # while inside a list item: its content column
        self.paragraph_start: int | None = None  # first line of an open top-level paragraph
        self.lazy = False  # a paragraph inside a quote or list item is open: text continues it
        self.empty_item = False  # the list item has no content yet: a blank line ends it

    def scan(self) -> list[Heading]:
        for number, line in enumerate(self.lines):
            if self.fence is not None:
                self._in_fence(line)
            elif self.html_end is not None:
                if (self.html_end == "" and _is_blank(line)) or (self.html_end and self.html_end in line):
                    self.html_end = None
            elif _is_blank(line):
                self.paragraph_start, self.lazy = None, False
                if self.empty_item:
                    self.list_indent = None
            elif self.list_indent is not None and _indent(line) >= self.list_indent:
                content = line.strip()  # inside the list item: nothing here is top-level
                self.empty_item = False
                self.lazy = _opens_paragraph(content) or (self.lazy and not _interrupts_paragraph(content))
            elif self.lazy and not (_interrupts_paragraph(line) or self._next_item(line)):
                pass  # a lazy continuation line of the quote's or item's paragraph
            else:
                self.list_indent, self.lazy = None, False
                self._top_level(number, line)
        return self.headings

    def _next_item(self, line: str) -> bool:
        return self.list_indent is not None and bool(_LIST_ITEM.match(line))

    def _in_fence(self, line: str) -> None:
        assert self.fence is not None
        char, length = self.fence
        stripped = line.strip()
        if _indent(line) <= 3 and stripped.startswith(char * length) and not stripped.strip(char):
            self.fence = None

    def _top_level(self, number: int, line: str) -> None:
        if self.paragraph_start is not None:
            if _SETEXT_H1_UNDERLINE.fullmatch(line):
                text = "\n".join(self.lines[self.paragraph_start : number]).strip()
                self.headings.append(Heading(text, self.paragraph_start, number + 1))
                self.paragraph_start = None
                return
            if _SETEXT_H2_UNDERLINE.fullmatch(line):
                self.paragraph_start = None
                return
            if not _interrupts_paragraph(line):
                return  # the paragraph goes on
        self.paragraph_start = None
        atx, fence, list_item = _ATX_H1.fullmatch(line), _is_fence(line), _LIST_ITEM.match(line)
        html = _html_start(line)
        if atx:
            text = _ATX_CLOSING.sub("", (atx.group(1) or "").strip()).strip()
            self.headings.append(Heading(text, number, number + 1))
        elif fence:
            self.fence = (fence.group(1)[0], len(fence.group(1)))
        elif _BLOCK_QUOTE.match(line):
            content = _quote_content(line)
            while _BLOCK_QUOTE.match(content):
                content = _quote_content(content)
            self.lazy = _opens_paragraph(content)
        elif _THEMATIC_BREAK.fullmatch(line) or _OTHER_ATX.match(line) or _indent(line) >= 4:
            pass  # a rule ("* * *" is not a list item), a lower heading or indented code
        elif list_item:
            width = len(list_item.group(0).expandtabs(4))
            self.list_indent = width if list_item.group(3) else width + 1
            self.lazy = _opens_paragraph(line[list_item.end() :])
            self.empty_item = _is_blank(line[list_item.end() :])
        elif html:
            self.html_end = None if html[0] and html[0] in line[line.index("<") + 1 :] else html[0]
        else:
            self.paragraph_start = number


def find_h1_headings(lines: list[str]) -> list[Heading]:
    """Return the top-level level-1 headings (ATX ``# x`` and setext ``x`` + ``===``) in order."""
    return _Scanner(lines).scan()


__all__ = ("Heading", "find_h1_headings")
