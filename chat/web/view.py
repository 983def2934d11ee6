"""What the page shows, derived from a session: chat messages, status line, prompt view.

Pure functions of the session, so they are tested without a browser and every handler
renders the same way.
"""

from __future__ import annotations

from typing import Any

from ..engine import Stats
from ..markup import escape_html_outside_code as shown_text
from ..session import INTERRUPTED, ChatSession

ERROR_PREFIX = "⚠️ **The answer failed:**"
NOTICE_PREFIX = "ℹ️"
UNANSWERED_NOTE = "⏹️ *No answer: stopped before it began.*"
STOPPED_NOTE = "⏹️ *Stopped before the end.*"  # under what came of an answer cut short (Stop, a crash)
NO_PROMPT_YET = "No prompt yet: send a message, and the exact text the model receives appears here."


def chat_messages(session: ChatSession) -> list[dict[str, Any]]:
    """Gradio Chatbot messages: what the user typed (tagged with the skill), answers, notices."""
    shown: list[dict[str, Any]] = []
    default_skill = session.skills.default.name
    for index, message in enumerate(session.history):
        if index and index == session.out_of_view:
            shown.append({"role": "assistant", "content": out_of_view_note(session)})
        if message["role"] == "user":
            shown.append({"role": "user", "content": shown_text(_typed_with_skill(message, default_skill))})
            continue
        if message.get("notice"):
            shown.append({"role": "assistant", "content": f"{NOTICE_PREFIX} {message['notice']}"})
        if message.get("error"):
            shown.append({"role": "assistant", "content": f"{ERROR_PREFIX} {shown_text(message['error'])}\n\nYour message is kept: press **Retry** to try again."})
        elif message.get(INTERRUPTED) and not message["content"]:
            shown.append({"role": "assistant", "content": UNANSWERED_NOTE})
        elif message["content"] or not message.get("notice"):
            stopped = f"\n\n{STOPPED_NOTE}" if message.get(INTERRUPTED) else ""
            shown.append({"role": "assistant", "content": shown_text(message["content"]) + stopped})
    return shown


def out_of_view_note(session: ChatSession) -> str:
    """The one notice about trimmed history, shown where what the model still sees begins."""
    window = session.engine.context_window
    return (f"{NOTICE_PREFIX} *The model no longer sees the messages above: they no longer fit its {window:,}-token "
            f"context, so they were left out of its prompt.*")


def status_line(stats: Stats | None, running: bool = False) -> str:
    if running:
        return "⏳ generating …"
    return f"📊 {stats.summary()}" if stats else ""


def prompt_view(session: ChatSession) -> tuple[str, str]:
    """(the exact prompt of the last turn, a line on context use)."""
    fitted = session.last_prompt
    if fitted is None:
        return "", NO_PROMPT_YET
    engine = session.engine
    prompt = f"{fitted.prompt.length:,} prompt tokens"
    if not engine.exact_prompt:  # (the status line gives the server's own count after the answer, where it sends one)
        prompt = f"about {prompt} (an estimate: the server applies its own chat template and counts them)"
    line = (f"**Context:** {prompt} + up to {fitted.max_new_tokens:,} answer tokens of {engine.context_window:,} "
            f"({engine.window_source})")
    if fitted.notice:
        line += f"  \n⚠️ {fitted.notice}"
    return fitted.prompt.text, line


def _typed_with_skill(message: dict[str, Any], default_skill: str) -> str:
    typed = message.get("typed", message["content"])
    skill = message.get("skill")
    return typed if not skill or skill == default_skill else f"{skill}: {typed}"
