"""Event handlers of the web page: thin adapters from UI values to `ChatSession` calls.

Each handler returns the page's outputs in the order of `PAGE_OUTPUTS`: (chatbot, message box,
status line, prompt text, context line). `ChatError`s become `gr.Warning` toasts or error notes
in the chat; the app keeps serving either way.

The message box belongs to the user: a handler writes it only when the user's action means it
(Undo gives the undone text back, a refused message is put back); every other page leaves it
alone (`gr.skip()`), so what the user types while an answer streams is never overwritten.
"""

from __future__ import annotations

import html
import inspect
import json
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Iterator

import gradio as gr

from ..messages import is_blank, replace_broken_characters
from ..errors import ChatError
from ..session import RETRY_COMMAND, ChatSession, Reply
from ..settings import SETTINGS
from .view import (
    chat_messages, edited_text, history_index, prompt_view, provenance_view, status_line, versions_bar, versions_target,
)

STREAM_UPDATE_INTERVAL_S = 0.05  # redraw at most 20 times a second: smooth, and cheap for long answers


def warn(message: str) -> None:
    """A warning toast. Toasts render HTML, and messages quote what users and models wrote (a file
    name, a setting, an exception's text): escaped, they show as typed and can't load or run anything."""
    gr.Warning(html.escape(message, quote=False))


# What `page` returns, in order.
PAGE_OUTPUTS = ("chat", "message box", "status line", "prompt view", "context line", "versions line", "versions bar",
                "provenance")


def page(session: ChatSession, message_box: Any = None, running: bool = False) -> tuple:
    """The page drawn from the session; the message box is left as the user has it unless given."""
    prompt_text, context_line = prompt_view(session)
    # A message taken whose answer has not begun: an answer comes, whichever event draws this page (the last
    # page of the answer it stopped may be drawn after it was taken, and must not show that answer as the end).
    running = running or session.awaiting_answer
    stats = None if running else session.last_stats
    box = gr.skip() if message_box is None else message_box
    versions_line, has_versions = versions_bar(session)
    return (chat_messages(session), box, status_line(stats, running), prompt_text, context_line, versions_line,
            gr.update(visible=has_versions), provenance_view(session))


def unchanged_page() -> tuple:
    return (gr.skip(),) * len(PAGE_OUTPUTS)


def takes_settings(handler: Callable) -> Callable:
    """Names the handler's trailing `*values` after the sampling settings, in `SETTINGS` order.

    Gradio passes the Settings controls' values by position; gradio_client shows and takes them by
    these names (`client.predict("Hi", temperature=0, api_name="/send")`).
    """
    signature = inspect.signature(handler)
    fixed = [p for p in signature.parameters.values() if p.kind is not inspect.Parameter.VAR_POSITIONAL]
    named = [inspect.Parameter(s.name, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=None) for s in SETTINGS]
    handler.__signature__ = signature.replace(parameters=[*fixed, *named])  # type: ignore[attr-defined]
    return handler


@takes_settings
def apply_controls(session: ChatSession, instructions: str | None = None, *values: Any) -> None:
    """Copies the Instructions box and the Settings controls into the session (None = unchanged)."""
    if instructions is not None:
        session.instructions = replace_broken_characters(instructions)
    changes = {declared.name: value for declared, value in zip(SETTINGS, values) if value is not None}
    if changes.get("seed") is not None and changes["seed"] < 0:
        changes["seed"] = None  # the Seed box: -1 = random
    try:
        session.settings = session.settings.replace(**changes)
    except ChatError as error:
        warn(f"Settings not applied: {error}")


@takes_settings
def send(session: ChatSession, text: str, skill: str | None = None, instructions: str | None = None, *values: Any) -> Iterator[tuple]:
    """`/send` for programs: the message in, the answer streamed back, in one call."""
    apply_controls(session, instructions, *values)
    if _taken(session, replace_broken_characters(text or ""), skill):
        yield from answer(session)
    else:
        yield page(session, text)


@takes_settings
def retry(session: ChatSession, instructions: str | None = None, *values: Any) -> Iterator[tuple]:
    """`/retry` for programs: a new answer to the last message, streamed back."""
    apply_controls(session, instructions, *values)
    if _taken(session, RETRY_COMMAND):
        yield from answer(session)
    else:
        yield page(session)


def post(session: ChatSession, outbox: str, typed_since: str | None = None, skill: str | None = None, *controls: Any) -> tuple:
    """The page's Enter or Send: messages join the chat at once, the answer in progress stops.

    `outbox` holds the page's numbered messages ([[1, "Hi"], [2, "And…"]], see ui.TAKE_MESSAGE_JS): those
    not taken yet are taken in number order, so requests that overtake each other change nothing.
    Returns the page and the number of the last message taken. The page has already emptied the
    box; a refused message goes back into it, before anything typed there since.
    """
    apply_controls(session, *controls)
    refused = []
    for number, text in sorted(_numbered(outbox)):
        if number > session.last_taken:
            session.last_taken = number
            if not _taken(session, replace_broken_characters(text), skill):
                refused.append(text)
    box = _put_back("\n".join(text for text in refused if not is_blank(text)), typed_since)
    return (*page(session, box), session.last_taken)


def _numbered(outbox: str) -> list[tuple[int, str]]:
    try:
        return [(int(number), str(text)) for number, text in json.loads(outbox or "[]")]
    except (ValueError, TypeError):
        return []  # only this page's own script writes it


def take_back_answer(session: ChatSession, *controls: Any) -> tuple:
    """The page's Retry: the last answer stops and goes; `answer` then answers that message again."""
    apply_controls(session, *controls)
    _taken(session, RETRY_COMMAND)
    return page(session)


def _taken(session: ChatSession, text: str, skill: str | None = None) -> bool:
    """`session.post`; a refusal (nothing typed, nothing to retry, an unknown skill) is a warning."""
    try:
        session.post(text, skill)
    except ChatError as error:
        warn(str(error))
        return False
    return True


def answer(session: ChatSession) -> Iterator[tuple]:
    """Streams the answer to the chat's last message, if it is waiting for one.

    Several messages taken in quick succession each queue an `answer`; the first to run answers
    the last message and the others find nothing left to do.
    """
    try:
        reply = session.answer_last()
    except ChatError as error:
        warn(str(error))
        yield page(session)
        return
    if reply is None:
        yield unchanged_page()
        return
    yield from _stream(session, reply)


def stop(session: ChatSession) -> None:
    session.stop()


@takes_settings
def continue_answer(session: ChatSession, instructions: str | None = None, *values: Any) -> Iterator[tuple]:
    """Continue: more of the last answer, streamed into the same message."""
    apply_controls(session, instructions, *values)
    yield from _streamed(session, session.continue_answer)


def reproduce(session: ChatSession) -> Iterator[tuple]:
    """Reproduce: the last answer made again from its recorded model, skill, instructions, settings and seed."""
    yield from _streamed(session, session.reproduce)


@takes_settings
def edit(session: ChatSession, edited: gr.EditData, instructions: str | None = None, *values: Any) -> Iterator[tuple]:
    """The chat's edit control on a message of the user's: a new version of it, answered (the old one stays)."""
    apply_controls(session, instructions, *values)
    index = history_index(session, edited.index if isinstance(edited.index, int) else edited.index[0])
    text = replace_broken_characters(str(edited.value or ""))

    def edit_and_answer() -> Reply:
        if index is None:
            raise ChatError("only your own messages can be edited")
        session.edit(index, edited_text(session, index, text))
        reply = session.answer_last()
        assert reply is not None
        return reply

    yield from _streamed(session, edit_and_answer)


def switch_version(session: ChatSession, step: int) -> tuple:
    """Previous version / Next version: of the message picked in the chat (or the last one with versions)."""
    index = versions_target(session)
    if index is not None:
        session.switch(index, step)
    return page(session)


def pick(session: ChatSession, selected: gr.SelectData) -> tuple:
    """A click on a message: the version buttons and the provenance panel now show that message's."""
    index = history_index(session, selected.index if isinstance(selected.index, int) else selected.index[0])
    if index is not None:
        session.focus = session.history[index]["id"]
    return page(session)


def _streamed(session: ChatSession, start: Callable[[], Reply]) -> Iterator[tuple]:
    try:
        reply = start()
    except ChatError as error:
        warn(str(error))
        yield page(session)
        return
    yield from _stream(session, reply)


def undo(session: ChatSession, typed_since: str | None = None) -> tuple:
    """Removes the last exchange; its message goes back into the box, before anything typed there."""
    undone = session.undo()
    return page(session, _put_back(undone, typed_since))


def clear(session: ChatSession) -> tuple:
    session.clear()
    return page(session)


def _put_back(text: str, typed_since: str | None) -> str | None:
    """The message box with `text` back in it, before whatever the user typed there since;
    None (leave the box alone) when there is nothing to put back."""
    if not text or is_blank(text):
        return None
    return f"{text}\n{typed_since}" if typed_since and not is_blank(typed_since) else text


def download(session: ChatSession) -> tuple[str, str]:
    """Writes the conversation for the download buttons: (JSON with every version, Markdown of the shown path)."""
    from ..files import conversation_document, markdown

    folder = Path(tempfile.gettempdir()) / "chat-workbench-downloads"
    folder.mkdir(exist_ok=True)
    stem = folder / f"conversation-{time.strftime('%Y%m%d-%H%M%S')}-{id(session):x}"
    document = conversation_document(session)
    json_path, markdown_path = stem.with_suffix(".json"), stem.with_suffix(".md")
    json_path.write_text(json.dumps(document, ensure_ascii=False, indent=2), encoding="utf-8")
    markdown_path.write_text(markdown(session, _title_of(session)), encoding="utf-8")
    return str(json_path), str(markdown_path)


def _title_of(session: ChatSession) -> str:
    first = next((m.get("typed", m["content"]) for m in session.history if m["role"] == "user"), "")
    line = " ".join(first.split())
    return (line[:60] + "…" if len(line) > 60 else line) or "Conversation"


def upload(session: ChatSession, file: Any) -> tuple:
    """Loads a conversation file; a bad file is a warning and the current chat stays."""
    from ..files import load_conversation

    path = getattr(file, "name", file)
    before = session.instructions
    try:
        session.load_messages(load_conversation(path), Path(path).name)
    except ChatError as error:
        warn(str(error))
    # The Instructions box is written only if the file brought instructions: an edit there stays.
    return (*page(session), session.instructions if session.instructions != before else gr.skip())


def reset_instructions(session: ChatSession, default: str) -> str:
    session.instructions = default
    return default


def describe_skill(session: ChatSession, skill: str) -> str:
    try:
        return session.skill(skill).description
    except ChatError as error:
        return str(error)


def _stream(session: ChatSession, reply: Reply) -> Iterator[tuple]:
    yield page(session, running=True)
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
    yield page(session)
