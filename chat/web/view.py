"""What the page shows of a tab: chat bubbles, the status line, the prompt view, the versions line, how
an answer was made. Pure functions, so they are tested without a browser and every handler draws alike.

`page` gathers them as the page's named outputs (see chat/web/wiring.py): a handler returns
`page(tab)`, or the names it changes.
"""

from __future__ import annotations

import html
import math
import re
from typing import Any, Generator

import gradio as gr

from ..answer_tokens import percent
from ..attachments import split_attachment
from ..engine import Stats
from ..markup import escape_html_outside_code as shown_text
from ..provenance import Fork, Part, Provenance
from ..session import ChatSession
from ..tree import ChatMessage
from .tabs import Tab

ERROR_PREFIX = "⚠️ **The answer failed:**"
NOTICE_PREFIX = "ℹ️"
UNANSWERED_NOTE = "⏹️ *No answer: stopped before it began.*"
STOPPED_NOTE = "⏹️ *Stopped before the end.*"  # under what came of an answer cut short (Stop, a crash)
VERSION_MARK = "version"  # under an answer that has other versions: "version 2 / 3"
COMPARED_NOTE = "⚖️ *{} answers side by side, below the chat: vote, or continue with one.*"
MODEL_MARK = "model:"  # under each answer of a chat whose answers come from several models: "model: SmolLM2-135M-Instruct · int4"
NO_ANSWER_YET = "No answer yet: each answer's model, settings, seed and exact prompt appear here."
NO_PROMPT_YET = "No prompt yet: send a message, and the exact text the model receives appears here."
# The page's named outputs that `page` draws (API clients get them in this order: chat first).
PAGE = ("chat", "message", "status", "prompt", "context", "versions_line", "versions_bar", "provenance")


class PageUpdate(dict[str, Any]):
    """Values for the page's outputs, by the names the panels registered them under (chat/web/wiring.py)."""


Pages = Generator[PageUpdate, None, None]  # what a handler that streams an answer yields


def page(tab: Tab, message_box: str | None = None, running: bool = False) -> PageUpdate:
    """The page drawn from the tab; the message box is left as the user has it unless given."""
    session = tab.session
    prompt_text, context_line = prompt_view(session)
    # A message taken whose answer has not begun: an answer comes, whichever event draws this page (the last
    # page of the answer it stopped may be drawn after it was taken, and must not show that answer as the end).
    running = running or session.awaiting_answer
    versions_line, has_versions = versions_bar(tab)
    shown = PageUpdate({"chat": chat_messages(session), "status": status_line(None if running else session.last_stats, running),
                      "prompt": prompt_text, "context": context_line, "versions_line": versions_line,
                      "versions_bar": gr.update(visible=has_versions), "provenance": provenance_view(tab)})
    if message_box is not None:
        shown["message"] = message_box
    return shown


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
    versions = {index: (k, n) for index, k, n in session.tree.versions(session.history)}
    models = answer_models(session.history)
    for index, message in enumerate(session.history):
        if index and index == session.out_of_view:
            shown.append((None, {"role": "assistant", "content": out_of_view_note(session)}))
        if message["role"] == "user":  # (no marks: the chat's edit control edits what is shown)
            shown.append((index, {"role": "user", "content": shown_text(_typed_with_skill(message, default_skill))}))
            if "comparison" in message and index == len(session.history) - 1:
                shown.append((None, {"role": "assistant", "content": COMPARED_NOTE.format(len(message["comparison"].columns))}))
            continue
        if message.get("notice"):
            shown.append((None, {"role": "assistant", "content": f"{NOTICE_PREFIX} {message.get('notice')}"}))
        version = f"\n\n*{VERSION_MARK} {versions[index][0]} / {versions[index][1]}*" if index in versions else ""
        if len(set(models.values())) > 1 and index in models:
            version = f"\n\n*{MODEL_MARK} {shown_text(models[index])}*" + version.replace("\n\n*", " · *", 1)
        bubble = _answer_bubble(message, version)
        if bubble is not None:
            shown.append((index, {"role": "assistant", "content": bubble}))
    return shown


def answer_models(history: list[ChatMessage]) -> dict[int, str]:
    """The model that wrote each answer shown (by history index), where its provenance says."""
    return {index: message["provenance"].model for index, message in enumerate(history)
            if message["role"] == "assistant" and message.get("provenance") is not None and message["provenance"].model}


def _answer_bubble(message: ChatMessage, version: str) -> str | None:
    """What the chat shows of an answer (None: nothing, where its notice says it all)."""
    if message.get("error"):
        return f"{ERROR_PREFIX} {shown_text(message.get('error', ''))}\n\nYour message is kept: press **Retry** to try again.{version}"
    if message.get("interrupted") and not message["content"]:
        return UNANSWERED_NOTE + version
    if message["content"] or not message.get("notice"):
        stopped = f"\n\n{STOPPED_NOTE}" if message.get("interrupted") else ""
        return shown_text(message["content"]) + stopped + version
    return None


def edited_text(session: ChatSession, index: int, edited: str) -> str:
    """What the user means by `edited`, the text of the message at `index` as the chat showed it
    (skill tag and HTML escapes included) after an edit in the chat."""
    message = session.history[index]
    shown = shown_text(_typed_with_skill(message, session.skills.default.name))
    tag = _skill_tag(message, session.skills.default.name)
    text = edited.removeprefix(tag) if shown.startswith(tag) else edited
    if message.get("attached"):  # (the session keeps the file: chat.session.ChatSession.edit)
        text = text.rstrip().removesuffix(f"📎 {message['attached']}").rstrip()
    return html.unescape(text) if shown != _typed_with_skill(message, session.skills.default.name) else text


def versions_bar(tab: Tab) -> tuple[str, bool]:
    """(the line above Previous version / Next version, whether to show them): for the message the user
    picked, or else the last one shown with other versions."""
    index = versions_target(tab)
    if index is None:
        return "", False
    k, n = tab.session.tree.version(tab.session.history[index]["id"])
    return f"**{_name(tab.session, index)}** · version **{k} / {n}** (click a message in the chat to pick another)", True


def versions_target(tab: Tab) -> int | None:
    """The history index the version buttons act on (see `versions_bar`)."""
    versions = [index for index, _, _ in tab.session.tree.versions(tab.session.history)]
    focused = tab.focused_index()
    return focused if focused in versions else (max(versions) if versions else None)


def _name(session: ChatSession, index: int) -> str:
    role = session.history[index]["role"]
    number = sum(1 for m in session.history[: index + 1] if m["role"] == role)
    return f"Your message {number}" if role == "user" else f"Answer {number}"


def provenance_view(tab: Tab) -> str:
    """How the picked answer (or else the last one) was made, for the "How this answer was made" panel."""
    index = tab.picked_answer()
    if index is None:
        return NO_ANSWER_YET
    session = tab.session
    provenance = session.history[index].get("provenance")
    if provenance is None or not provenance.recorded:
        return f"**{_name(session, index)}**: no record of how it was made (it comes from a file or an earlier release)."
    revision = f" @ {provenance.revision[:12]}" if provenance.revision else ""
    lines = [f"**{_name(session, index)}** · {shown_text(provenance.summary())}", "",
             f"- **Model:** {shown_text(provenance.model)}{revision} ({provenance.backend}, {shown_text(provenance.device)}, "
             f"prompt format {provenance.prompt_format}, context {provenance.context_window:,} tokens)",
             *([f"- **The model's defaults:** {shown_text('; '.join(provenance.model_defaults))}"] if provenance.model_defaults else []),
             f"- **Skill:** {skill_line(session, provenance)}",
             f"- **Instructions:** {shown_text(_one_line(provenance.instructions) or '(none)')}"]
    reproduces = provenance.reproduces
    if reproduces and reproduces in session.tree.messages:
        k, _ = session.tree.version(reproduces)
        same = session.tree.messages[reproduces]["content"] == session.history[index]["content"]
        lines.append(f"- **Reproduces version {k}:** {'identical text ✓' if same else 'the text differs'}")
    if provenance.fork is not None:
        lines.append(f"- **Began with a token you chose:** {fork_line(session, provenance.fork)}")
    for number, part in enumerate(provenance.parts, start=1):
        lines += _part_lines(_part_title(provenance, number), part)
    return "\n".join(lines)


def skill_line(session: ChatSession, provenance: Provenance) -> str:
    """The answer's skill: its version then and now (a user's skill, edited since), and its variables' values."""
    line = shown_text(provenance.skill or "none")
    if provenance.skill_version is not None:
        line += f" · version {provenance.skill_version}"
        now = session.skills.find(provenance.skill)
        if now is None:
            line += " (deleted since: its recorded text is used by Reproduce)"
        elif now.version != provenance.skill_version:
            line += f" (it is at version {now.version} now: Reproduce uses version {provenance.skill_version})"
    if provenance.values:
        line += " · " + ", ".join(f"{shown_text(name)}: {shown_text(value)}" for name, value in provenance.values.items())
    return line


def _part_title(provenance: Provenance, number: int) -> str:
    if provenance.fork is not None:  # (the fork counts as the answer's first part)
        return "Continued by the model" if number == 1 else f"Continue {number}"
    return "Answer" if number == 1 else f"Continue {number - 1}"


def _part_lines(title: str, part: Part) -> list[str]:
    settings = ", ".join(f"{name} {value}" for name, value in part.settings.items() if value is not None)
    figures = part.figures
    seed = "none (greedy)" if part.seed is None else f"{part.seed}{' (drawn at random)' if part.seed_drawn else ''}"
    left_out = f", {part.messages_left_out} oldest left out" if part.messages_left_out else ""
    answer = f"- answer: {figures.new_tokens if figures else 0} tokens"
    if figures is not None and figures.time_to_first_token is not None:
        answer += f", first token {figures.time_to_first_token:.2f} s"
    if figures is not None and figures.tokens_per_second:
        answer += f", {figures.tokens_per_second:.1f} tokens/s"
    return ["", f"**{title}:** seed {seed} · stop: {part.stop_reason or 'still running'}",
            f"- settings: {settings}",
            f"- prompt: {'' if part.prompt_exact else 'about '}{part.prompt_tokens:,} tokens "
            f"({figures.cached_tokens if figures else 0:,} cached), {part.messages_sent} messages sent{left_out}",
            answer, "", _fenced(part.prompt)]


def fork_line(session: ChatSession, fork: Fork) -> str:
    """Where a version that took another token came from, in words."""
    k = session.tree.version(fork.from_id)[0] if fork.from_id in session.tree.messages else None
    source = f"version {k}" if k else "an earlier version"
    chosen = f"«{shown_text(fork.chosen)}»" + (" (end of the answer)" if fork.special else "")
    return f"token {fork.token + 1} of {source}: {chosen} ({percent(math.exp(fork.logprob))}) instead of «{shown_text(fork.instead_of)}»"


def _one_line(text: str) -> str:
    line = " ".join(text.split())
    return line if len(line) <= 200 else line[:199] + "…"


def _fenced(text: str) -> str:
    fence = "`" * max(3, max((len(run) for run in re.findall("`+", text)), default=0) + 1)
    return f"{fence}text\n{text}\n{fence}"


def out_of_view_note(session: ChatSession) -> str:
    """The one notice about trimmed history, shown where what the model still sees begins."""
    window = session.prompt_engine.context_window
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
    engine = session.prompt_engine
    prompt = f"{fitted.prompt.length:,} prompt tokens"
    if not engine.exact_prompt:  # (the status line gives the server's own count after the answer, where it sends one)
        prompt = f"about {prompt} (an estimate: the server applies its own chat template and counts them)"
    line = (f"**Context:** {prompt} + up to {fitted.max_new_tokens:,} answer tokens of {engine.context_window:,} "
            f"({engine.window_source})")
    if fitted.notice:
        line += f"  \n⚠️ {fitted.notice}"
    return fitted.prompt.text, line


def _typed_with_skill(message: ChatMessage, default_skill: str) -> str:
    typed = message.get("typed", message["content"])
    if message.get("attached"):  # the file by its name, not its text
        said, _ = split_attachment(typed, message["attached"])
        typed = f"{said}\n\n📎 {message['attached']}".lstrip("\n")
    return _skill_tag(message, default_skill) + typed


def _skill_tag(message: ChatMessage, default_skill: str) -> str:
    """What the chat shows before a message of a skill other than the default: "🌍 Translate (language: French): "."""
    skill = message.get("skill")
    if not skill or skill == default_skill:
        return ""
    values = ", ".join(f"{name}: {value}" for name, value in (message.get("values") or {}).items())
    return f"{skill} ({values}): " if values else f"{skill}: "
