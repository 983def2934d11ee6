"""Event handlers of the web page: thin adapters from UI values to `ChatSession` calls.

Each handler returns the page's outputs in the order of `OUTPUTS` in ui.py:
(chatbot, message box, status line, prompt text, context line). `ChatError`s become
`gr.Warning` toasts or error notes in the chat; the app keeps serving either way.
"""

from __future__ import annotations

import html
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

import gradio as gr

from .conversation import is_blank, replace_broken_characters
from .errors import ChatError
from .ui_view import chat_messages, prompt_view, status_line

STREAM_UPDATE_INTERVAL_S = 0.05  # redraw at most 20 times a second: smooth, and cheap for long answers


def warn(message: str) -> None:
    """A warning toast. Toasts render HTML, and messages quote what users and models wrote (a file
    name, a setting, an exception's text): escaped, they show as typed and can't load or run anything."""
    gr.Warning(html.escape(message, quote=False))


PAGE_OUTPUTS = ("chat", "message box", "status line", "prompt view", "context line")  # what `page` returns, in order


def page(session: Any, message_box: Any = "", running: bool = False) -> tuple:
    prompt_text, context_line = prompt_view(session)
    stats = None if running else session.last_stats
    return chat_messages(session), message_box, status_line(stats, running), prompt_text, context_line


def apply_controls(
    session: Any, instructions: str | None = None, temperature=None, top_p=None, top_k=None, max_new_tokens=None,
    repetition_penalty=None, no_repeat_ngram_size=None, num_beams=None, seed=None,
) -> None:
    """Copies the Instructions box and the Settings controls into the session (None = unchanged).

    Named parameters, not *args: gradio_client shows them by name (`temperature=0`).
    """
    if instructions is not None:
        session.instructions = replace_broken_characters(instructions)
    given = dict(temperature=temperature, top_p=top_p, top_k=top_k, max_new_tokens=max_new_tokens,
                 repetition_penalty=repetition_penalty, no_repeat_ngram_size=no_repeat_ngram_size, num_beams=num_beams)
    changes = {name: value for name, value in given.items() if value is not None}
    if seed is not None:
        changes["seed"] = None if seed < 0 else seed  # the Seed box: -1 = random
    try:
        session.settings = session.settings.replace(**changes)
    except ChatError as error:
        warn(f"Settings not applied: {error}")


def send(session: Any, text: str, skill: str | None = None, instructions: str | None = None, temperature=None, top_p=None,
         top_k=None, max_new_tokens=None, repetition_penalty=None, no_repeat_ngram_size=None, num_beams=None, seed=None) -> Iterator[tuple]:
    apply_controls(session, instructions, temperature, top_p, top_k, max_new_tokens, repetition_penalty,
                   no_repeat_ngram_size, num_beams, seed)
    try:
        reply = session.send(replace_broken_characters(text or ""), skill)
    except ChatError as error:
        warn(str(error))
        yield page(session, text)
        return
    yield from _stream(session, reply)


def retry(session: Any, instructions: str | None = None, temperature=None, top_p=None, top_k=None, max_new_tokens=None,
          repetition_penalty=None, no_repeat_ngram_size=None, num_beams=None, seed=None) -> Iterator[tuple]:
    apply_controls(session, instructions, temperature, top_p, top_k, max_new_tokens, repetition_penalty,
                   no_repeat_ngram_size, num_beams, seed)
    try:
        reply = session.retry()
    except ChatError as error:
        warn(str(error))
        yield page(session, gr.update())
        return
    yield from _stream(session, reply)


def stop(session: Any) -> None:
    session.stop()


def make_way(session: Any, text: str | None = None) -> None:
    """Before a Send or Retry queues: stops this tab's answer in progress, which the new one replaces.

    An empty message replaces nothing (it only gets a warning), so it stops nothing either.
    """
    if text is None or not is_blank(text):
        session.stop()


def undo(session: Any) -> tuple:
    typed = session.undo()
    return page(session, typed)


def clear(session: Any) -> tuple:
    session.clear()
    return page(session, "")


def download(session: Any) -> str:
    """Writes the conversation (messages format) to a file for the download button."""
    folder = Path(tempfile.gettempdir()) / "chat-workbench-downloads"
    folder.mkdir(exist_ok=True)
    path = folder / f"conversation-{time.strftime('%Y%m%d-%H%M%S')}-{id(session):x}.json"
    path.write_text(json.dumps(session.to_messages(), ensure_ascii=False, indent=2), encoding="utf-8")
    return str(path)


def upload(session: Any, file: Any) -> tuple:
    """Loads a conversation file; a bad file is a warning and the current chat stays."""
    from .conversation import load_conversation

    path = getattr(file, "name", file)
    try:
        session.load_messages(load_conversation(path), Path(path).name)
    except ChatError as error:
        warn(str(error))
    return (*page(session, gr.update()), session.instructions)


def reset_instructions(session: Any, default: str) -> tuple:
    session.instructions = default
    return default


def describe_skill(session: Any, skill: str) -> str:
    try:
        return session.skill(skill).description
    except ChatError as error:
        return str(error)


def _stream(session: Any, reply: Any) -> Iterator[tuple]:
    yield page(session, "", running=True)
    last = 0.0
    try:
        for _ in reply:
            now = time.perf_counter()
            if now - last >= STREAM_UPDATE_INTERVAL_S:
                last = now
                # Only the chat changes while an answer streams. Re-sending the prompt view (the whole
                # prompt) and the rest at every token cost the model ~10% of its speed on 2 cores.
                yield chat_messages(session), *(gr.skip(),) * (len(PAGE_OUTPUTS) - 1)
    except ChatError as error:
        warn(str(error))
    yield page(session, "")
