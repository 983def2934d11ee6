"""Showing chat text safely: raw HTML appears as the characters typed, Markdown still renders.

The Chatbot sanitizes HTML, but sanitizing *removes* tags, so a user asking about
`<script>` would see their words vanish. Escaping outside code keeps every character
visible and inert; inside code blocks and spans Markdown already shows text literally.

Code is recognized as CommonMark does, and where in doubt a line counts as *not* code: text
wrongly escaped inside code shows a stray `&lt;`, but text wrongly left unescaped outside
code would reach the page as HTML (an `<img>` that loads a URL, say).

Markdown images (`![alt](url)`) are shown as links: the browser would otherwise fetch the URL
as soon as the text appears, and an answer steered by injected instructions could put the
conversation into that URL.
"""

from __future__ import annotations

import html
import re

_FENCE = re.compile(r"^ {0,3}(`{3,}|~{3,})(.*)$")  # CommonMark: <= 3 spaces (not tabs), a run of 3+
# A code span: a run of backticks (not escaped, not part of a longer run) closed by a run of the same length.
_INLINE_CODE = re.compile(r"(?<![`\\])(`+)(?!`)(.+?)(?<!`)\1(?!`)", re.DOTALL)
_IMAGE = re.compile(r"!(?=\[)")


# ␀: how a NUL character a model wrote is shown, and stored (PostgreSQL text can't hold NUL): the same before a
# reload and after it (a browser drops a NUL from the page).
NUL_SHOWN_AS = "\u2400"


def escape_html_outside_code(text: str) -> str:
    """`<b>hi</b> and `<b>`` → `&lt;b&gt;hi&lt;/b&gt; and `<b>``; a NUL character shows as ␀."""
    lines, fence = [], None
    for line in text.replace("\x00", NUL_SHOWN_AS).split("\n"):
        if fence is None:
            fence = _opens(line)
            lines.append(line if fence else _escape_line(line))
        else:
            if _closes(line, fence):
                fence = None
            lines.append(line)
    return "\n".join(lines)


def _opens(line: str) -> str | None:
    """The fence run if `line` opens a code block (a backtick fence's info may not hold backticks)."""
    match = _FENCE.match(line)
    if not match or (match[1][0] == "`" and "`" in match[2]):
        return None
    return match[1]


def _closes(line: str, fence: str) -> bool:
    """A fence closes with the same character, at least as many, then only spaces."""
    match = _FENCE.match(line)
    return match is not None and match[1][0] == fence[0] and len(match[1]) >= len(fence) and not match[2].strip()


def _escape_line(line: str) -> str:
    parts, cursor = [], 0
    for match in _INLINE_CODE.finditer(line):
        parts.append(_escape_text(line[cursor : match.start()]))
        parts.append(match.group(0))
        cursor = match.end()
    parts.append(_escape_text(line[cursor:]))
    return "".join(parts)


def _escape_text(text: str) -> str:
    return _IMAGE.sub(r"\\!", html.escape(text, quote=False))
