"""Showing chat text safely: raw HTML appears as the characters typed, Markdown still renders.

The Chatbot sanitizes HTML, but sanitizing *removes* tags, so a user asking about
`<script>` would see their words vanish. Escaping outside code keeps every character
visible and inert; inside code blocks and spans Markdown already shows text literally.
"""

from __future__ import annotations

import html
import re

_FENCE = re.compile(r"^\s{0,3}(`{3,}|~{3,})")
_INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)


def escape_html_outside_code(text: str) -> str:
    """`<b>hi</b> and `<b>`` → `&lt;b&gt;hi&lt;/b&gt; and `<b>``."""
    lines, fence = [], None
    for line in text.split("\n"):
        opened = _FENCE.match(line)
        if fence is None and opened:
            fence = opened.group(1)
            lines.append(line)
        elif fence is not None:
            if opened and opened.group(1)[0] == fence[0] and len(opened.group(1)) >= len(fence):
                fence = None
            lines.append(line)
        else:
            lines.append(_escape_line(line))
    return "\n".join(lines)


def _escape_line(line: str) -> str:
    parts, cursor = [], 0
    for match in _INLINE_CODE.finditer(line):
        parts.append(html.escape(line[cursor : match.start()], quote=False))
        parts.append(match.group(0))
        cursor = match.end()
    parts.append(html.escape(line[cursor:], quote=False))
    return "".join(parts)
