"""What the page shows, derived from a session: chat messages, status line, prompt view.

Pure functions of the session, so they are tested without a browser and every handler
renders the same way.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any

from ..engine import Stats
from ..provenance import summary
from ..markup import escape_html_outside_code as shown_text
from ..session import INTERRUPTED, ChatSession
from ..answer_tokens import percent

ERROR_PREFIX = "⚠️ **The answer failed:**"
NOTICE_PREFIX = "ℹ️"
UNANSWERED_NOTE = "⏹️ *No answer: stopped before it began.*"
STOPPED_NOTE = "⏹️ *Stopped before the end.*"  # under what came of an answer cut short (Stop, a crash)
VERSION_MARK = "version"  # under an answer that has other versions: "version 2 / 3"
NO_ANSWER_YET = "No answer yet: each answer's model, settings, seed and exact prompt appear here."
NO_PROMPT_YET = "No prompt yet: send a message, and the exact text the model receives appears here."


def chat_messages(session: ChatSession) -> list[dict[str, Any]]:
    """Gradio Chatbot messages: what the user typed (tagged with the skill), answers, notices."""
    return [shown for _, shown in _rows(session)]


def history_index(session: ChatSession, shown_index: int) -> int | None:
    """The history index of the message shown at `shown_index` in the chat (None: a notice)."""
    rows = _rows(session)
    return rows[shown_index][0] if 0 <= shown_index < len(rows) else None


def _rows(session: ChatSession) -> list[tuple[int | None, dict[str, Any]]]:
    """(history index or None for a notice, the Chatbot message) for each bubble shown."""
    shown: list[tuple[int | None, dict[str, Any]]] = []
    default_skill = session.skills.default.name
    versions = {index: (k, n) for index, k, n in session.versions()}
    for index, message in enumerate(session.history):
        if index and index == session.out_of_view:
            shown.append((None, {"role": "assistant", "content": out_of_view_note(session)}))
        if message["role"] == "user":  # (no marks: the chat's edit control edits what is shown)
            shown.append((index, {"role": "user", "content": shown_text(_typed_with_skill(message, default_skill))}))
            continue
        if message.get("notice"):
            shown.append((None, {"role": "assistant", "content": f"{NOTICE_PREFIX} {message['notice']}"}))
        version = f"\n\n*{VERSION_MARK} {versions[index][0]} / {versions[index][1]}*" if index in versions else ""
        if message.get("error"):
            shown.append((index, {"role": "assistant", "content": f"{ERROR_PREFIX} {shown_text(message['error'])}\n\nYour message is kept: press **Retry** to try again.{version}"}))
        elif message.get(INTERRUPTED) and not message["content"]:
            shown.append((index, {"role": "assistant", "content": UNANSWERED_NOTE + version}))
        elif message["content"] or not message.get("notice"):
            stopped = f"\n\n{STOPPED_NOTE}" if message.get(INTERRUPTED) else ""
            shown.append((index, {"role": "assistant", "content": shown_text(message["content"]) + stopped + version}))
    return shown


def edited_text(session: ChatSession, index: int, edited: str) -> str:
    """What the user means by `edited`, the text of the message at `index` as the chat showed it
    (skill tag and HTML escapes included) after an edit in the chat."""
    message = session.history[index]
    shown = shown_text(_typed_with_skill(message, session.skills.default.name))
    skill = message.get("skill")
    tag = f"{skill}: " if skill and skill != session.skills.default.name else ""
    text = edited.removeprefix(tag) if shown.startswith(tag) else edited
    return html.unescape(text) if shown != _typed_with_skill(message, session.skills.default.name) else text


def versions_bar(session: ChatSession) -> tuple[str, bool]:
    """(the line above Previous version / Next version, whether to show them): for the message the user
    picked, or else the last one shown with other versions."""
    index = versions_target(session)
    if index is None:
        return "", False
    k, n = session.tree.version(session.history[index]["id"])
    return f"**{_name(session, index)}** · version **{k} / {n}** (click a message in the chat to pick another)", True


def versions_target(session: ChatSession) -> int | None:
    """The history index the version buttons act on (see `versions_bar`)."""
    versions = [index for index, _, _ in session.versions()]
    focused = session.focused_index()
    return focused if focused in versions else (max(versions) if versions else None)


def _name(session: ChatSession, index: int) -> str:
    role = session.history[index]["role"]
    number = sum(1 for m in session.history[: index + 1] if m["role"] == role)
    return f"Your message {number}" if role == "user" else f"Answer {number}"


def provenance_view(session: ChatSession) -> str:
    """How the picked answer (or else the last one) was made, for the "How this answer was made" panel."""
    focused = session.focused_index()
    answers = [i for i, m in enumerate(session.history) if m["role"] == "assistant"]
    index = focused if focused in answers else (answers[-1] if answers else None)
    if index is None:
        return NO_ANSWER_YET
    document = session.history[index].get("provenance")
    if not document or not any("settings" in part or "fork" in part for part in document.get("parts", [])):
        return f"**{_name(session, index)}**: no record of how it was made (it comes from a file or an earlier release)."
    lines = [f"**{_name(session, index)}** · {shown_text(summary(document))}", ""]
    revision = f" @ {document['revision'][:12]}" if document.get("revision") else ""
    lines += [f"- **Model:** {shown_text(document.get('model', '?'))}{revision} ({document.get('backend', '?')}, {shown_text(document.get('device', '?'))}, "
              f"prompt format {document.get('prompt_format', '?')}, context {document.get('context_window', 0):,} tokens)",
              f"- **Skill:** {shown_text(document.get('skill') or 'none')}",
              f"- **Instructions:** {shown_text(_one_line(document.get('instructions', '')) or '(none)')}"]
    reproduces = document.get("reproduces")
    if reproduces and reproduces in session.tree.messages:
        k, _ = session.tree.version(reproduces)
        same = session.tree.messages[reproduces]["content"] == session.history[index]["content"]
        lines.append(f"- **Reproduces version {k}:** {'identical text ✓' if same else 'the text differs'}")
    for number, part in enumerate(document.get("parts", []), start=1):
        if "fork" in part:
            lines.append(f"- **Began with a token you chose:** {fork_line(session, part['fork'])}")
        if "settings" not in part:
            continue
        title = "Answer" if number == 1 else ("Continued by the model" if "fork" in document["parts"][0] and number == 2 else f"Continue {number - 1}")
        settings = ", ".join(f"{name} {value}" for name, value in part["settings"].items() if value is not None)
        stats = part.get("stats") or {}
        seed = "none (greedy)" if part.get("seed") is None else f"{part['seed']}{' (drawn at random)' if part.get('seed_drawn') else ''}"
        lines += ["", f"**{title}:** seed {seed} · stop: {part.get('stop_reason') or 'still running'}",
                  f"- settings: {settings}",
                  f"- prompt: {'' if part.get('prompt_exact', True) else 'about '}{part.get('prompt_tokens', 0):,} tokens "
                  f"({stats.get('cached_tokens', 0):,} cached), {part.get('messages_sent', 0)} messages sent"
                  + (f", {part['messages_left_out']} oldest left out" if part.get("messages_left_out") else ""),
                  f"- answer: {stats.get('new_tokens', 0)} tokens"
                  + (f", first token {stats['time_to_first_token']:.2f} s" if stats.get("time_to_first_token") is not None else "")
                  + (f", {stats['tokens_per_second']:.1f} tokens/s" if stats.get("tokens_per_second") else ""),
                  "", _fenced(part.get("prompt", ""))]
    return "\n".join(lines)


def fork_line(session: ChatSession, fork: dict[str, Any]) -> str:
    """Where a version that took another token came from, in words."""
    k = session.tree.version(fork["from"])[0] if fork.get("from") in session.tree.messages else None
    source = f"version {k}" if k else "an earlier version"
    chosen = f"«{shown_text(fork['chosen'])}»" + (" (end of the answer)" if fork.get("special") else "")
    return (f"token {fork['token'] + 1} of {source}: {chosen} ({percent(math.exp(fork['logprob']))}) "
            f"instead of «{shown_text(fork['instead_of'])}»")


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:199] + "…"


def _fenced(text: str) -> str:
    fence = "`" * max(3, max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"


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
