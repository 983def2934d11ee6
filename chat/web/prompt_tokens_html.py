"""The Prompt view's tokens: the exact prompt as chips coloured by part, each with its id under it,
control tokens outlined, a legend with the tokens per part, and what trimming left out.

Pure functions → HTML, escaped throughout: the prompt holds what users and models wrote. Colours are
semi-transparent, so the page's text colour reads on them in Gradio's light and dark themes alike.
"""

from __future__ import annotations

import html

from ..prompt_tokens import (
    ANSWER_SO_FAR, GENERATION_PROMPT, HISTORY, INSTRUCTIONS, SKILL_TEMPLATE, TEMPLATE, YOUR_TEXT, PromptToken, PromptTokens,
)
from ..session import ChatSession

NO_TOKENS_YET = "No prompt yet: send a message, and the tokens the model receives appear here."
SERVER_TOKENIZES = ("The model's server tokenizes the prompt itself: this app sends it the messages and never sees "
                    "the tokens, so it can't show them.")
PART_COLOURS = {
    INSTRUCTIONS: "hsla(275, 70%, 55%, 0.28)",
    HISTORY: "hsla(210, 25%, 55%, 0.25)",
    TEMPLATE: "hsla(0, 0%, 50%, 0.18)",
    SKILL_TEMPLATE: "hsla(35, 90%, 50%, 0.30)",
    YOUR_TEXT: "hsla(140, 70%, 42%, 0.32)",
    GENERATION_PROMPT: "hsla(195, 85%, 48%, 0.32)",
    ANSWER_SO_FAR: "hsla(330, 75%, 55%, 0.28)",
}
CSS = """
.prompt-tokens { font-size: 0.9em; }
.pt-legend { display: flex; flex-wrap: wrap; gap: 6px; align-items: center; margin: 4px 0 8px; }
.pt-key { border-radius: 4px; padding: 1px 6px; }
.pt-left-out { margin: 4px 0 8px; }
.pt-tokens { font-family: var(--font-mono); line-height: 1.15; }
.pt-tok { display: inline-flex; flex-direction: column; align-items: center; vertical-align: top;
  border: 1px solid transparent; border-radius: 4px; padding: 1px 3px; margin: 2px 1px; }
.pt-tok.special { border: 1.5px solid currentColor; font-weight: bold; }
.pt-piece { white-space: pre; }
.pt-id { font-size: 0.68em; opacity: 0.7; }
"""


def prompt_tokens_html(session: ChatSession) -> str:
    """The session's last prompt as tokens; a sentence instead before the first prompt, or where a
    server tokenizes it."""
    fitted = session.last_prompt
    if fitted is None:
        return f"<p>{html.escape(NO_TOKENS_YET)}</p>"
    tokens = session.prompt_engine.prompt_tokens(fitted, _typed(session)) if session.prompt_engine.exact_prompt else None
    return tokens_html(tokens) if tokens is not None else f"<p>{html.escape(SERVER_TOKENIZES)}</p>"


def _typed(session: ChatSession) -> str | None:
    """What the user typed of the last user message, before a skill wrapped it."""
    last = next((message for message in reversed(session.history) if message["role"] == "user"), None)
    return None if last is None else last.get("typed")


def tokens_html(tokens: PromptTokens) -> str:
    """The legend (tokens per part), what trimming left out, and the chips, lines broken where the prompt's are."""
    chips = []
    for token in tokens.tokens:
        chips.append(_chip(token))
        if "\n" in token.text:  # the prompt's own line breaks, so its layout stays readable
            chips.append("<br>")
    left_out = f'<div class="pt-left-out">⚠️ {html.escape(tokens.left_out)}</div>' if tokens.left_out else ""
    return f'<div class="prompt-tokens">{_legend(tokens)}{left_out}<div class="pt-tokens">{"".join(chips)}</div></div>'


def _chip(token: PromptToken) -> str:
    kind = " · control token" if token.special else ""
    title = html.escape(f"id {token.id} · {token.part}{kind}")
    classes = "pt-tok special" if token.special else "pt-tok"
    return (f'<span class="{classes}" style="background:{PART_COLOURS[token.part]}" title="{title}">'
            f'<span class="pt-piece">{html.escape(token.piece)}</span><span class="pt-id">{token.id}</span></span>')


def _legend(tokens: PromptTokens) -> str:
    keys = [f'<span class="pt-key" style="background:{PART_COLOURS[part]}">{html.escape(part)} · {count:,}</span>'
            for part, count in tokens.counts.items()]
    keys.append('<span class="pt-tok special" title="a control token, not text">outlined: control token</span>')
    return f'<div class="pt-legend"><b>{len(tokens.tokens):,} tokens</b>{"".join(keys)}</div>'
