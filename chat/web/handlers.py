"""The chat's event handlers: thin adapters from the page's values to a tab's `ChatSession` calls.

Each handler takes the tab (chat/web/tabs.py) and returns what the page shows, by name (`view.page`, a
`PageUpdate`). `ChatError`s become `gr.Warning` toasts or error notes in the chat; the app keeps serving
either way.

The message box belongs to the user: a handler writes it only when the user's action means it
(Undo gives the undone text back, a refused message is put back); every other page leaves it
alone (no "message" in the update), so what the user types while an answer streams is never overwritten.
"""

from __future__ import annotations

import html
import inspect
import json
import time
from pathlib import Path
from typing import Any, Callable

import gradio as gr

from ..attachments import Attachment, AttachmentError, read_attachment
from ..errors import ChatError
from ..messages import is_blank, replace_broken_characters
from ..session import Reply
from ..settings import SETTINGS
from .tabs import Tab
from .view import Pages, PageUpdate, chat_messages, edited_text, history_index, page

STREAM_UPDATE_INTERVAL_S = 0.05  # redraw at most 20 times a second: smooth, and cheap for long answers
STOP_DRAWS_WITHIN_S = 5.0  # Stop waits this long at most for the answer's end, to draw the page as it ended


SKILLS_COMMAND = "/skills"


def warn(message: str) -> None:
    """A warning toast. Toasts render HTML, and messages quote what users and models wrote (a file
    name, a setting, an exception's text): escaped, they show as typed and can't load or run anything."""
    gr.Warning(html.escape(message, quote=False))


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
def apply_controls(tab: Tab, instructions: str | None = None, *values: Any) -> None:
    """Copies the Instructions box and the Settings controls into the session (None = unchanged)."""
    session = tab.session
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
def send(tab: Tab, text: str, skill: str | None = None, instructions: str | None = None, *values: Any) -> Pages:
    """`/send` for programs: the message in, the answer streamed back, in one call."""
    apply_controls(tab, instructions, *values)
    if _taken(tab, replace_broken_characters(text or ""), skill):
        yield from answer(tab)
    else:
        yield page(tab, text)


@takes_settings
def retry(tab: Tab, instructions: str | None = None, *values: Any) -> Pages:
    """`/retry` for programs: a new answer to the last message, streamed back."""
    apply_controls(tab, instructions, *values)
    yield from _streamed(tab, lambda: tab.session.retry(tokens=tab.record_tokens))


def post(tab: Tab, outbox: str, typed_since: str | None = None, skill: str | None = None, attached: Any = None,
         *controls: Any) -> PageUpdate:
    """The page's Enter or Send: messages join the chat at once, the answer in progress stops.

    `outbox` holds the page's numbered messages ([[1, "Hi"], [2, "And…"]], see the chat panel's
    TAKE_MESSAGE_JS): those not taken yet are taken in number order, so requests that overtake each other
    change nothing. Shows the page and the number of the last message taken ("taken"). The page has
    already emptied the box; a refused message goes back into it, before anything typed there since.
    `attached`: a file in the Attach box, the material of the first message taken (the box empties once it is).
    """
    apply_controls(tab, *controls)
    refused = []
    attachment, took_file = _attachment(attached), False
    for number, text, form in sorted(_numbered(outbox)):
        if number > tab.last_taken:
            tab.last_taken = number
            file = None if took_file else attachment
            if not _taken(tab, replace_broken_characters(text), skill, form_values(tab.session, skill, form), file):
                refused.append(text)
            took_file = took_file or file is not None
    box = _put_back("\n".join(text for text in refused if not is_blank(text)), typed_since)
    # The Attach box empties once a message took its file; refused, the file stays for the next try.
    return PageUpdate(page(tab, box), taken=tab.last_taken, attached=gr.update(value=None) if took_file else gr.skip())


def read_attached(attached: Any) -> Attachment | None:
    """The Attach box's file, read (AttachmentError, a ChatError: why it can't be), or None for none."""
    found = _attachment(attached)
    if isinstance(found, AttachmentError):
        raise found
    return found


def _attachment(attached: Any) -> Attachment | AttachmentError | None:
    """The Attach box's file read (its error, to be said when its message is sent), or None for none."""
    if not attached:
        return None
    path = getattr(attached, "name", attached)
    try:
        return read_attachment(path, Path(path).name)
    except AttachmentError as error:
        return error


def _numbered(outbox: str) -> list[tuple[int, str, list[str]]]:
    """The outbox's messages: (number, text, the variables form's fields as they were when it was sent)."""
    try:
        return [(int(number), str(text), [str(field) if field is not None else "" for field in (rest[0] if rest else [])])
                for number, text, *rest in json.loads(outbox or "[]")]
    except (ValueError, TypeError):
        return []  # only this page's own script writes it


def form_values(session: Any, skill: str | None, form: list[str]) -> dict[str, str]:
    """The values of the skill's variables from the form beside the message box: its fields in pairs, (a text box,
    a menu) per variable in the skill's order (chat panel)."""
    chosen = session.skills.find(skill) if skill else session.skills.default
    if chosen is None:
        return {}
    pairs = [form[i:i + 2] for i in range(0, len(form), 2)]
    return {variable.name: (pair[1] if variable.type == "choice" else pair[0])
            for variable, pair in zip(chosen.variables, pairs) if len(pair) == 2 and (pair[1] if variable.type == "choice" else pair[0])}


def take_back_answer(tab: Tab, *controls: Any) -> PageUpdate:
    """The page's Retry, its first step (the session's own): the last answer stops and goes; `answer`
    then answers that message again, in the answers' queue."""
    apply_controls(tab, *controls)
    try:
        tab.session.take_back_answer()
    except ChatError as error:
        warn(str(error))
    return page(tab)


def _taken(tab: Tab, text: str, skill: str | None = None, values: dict[str, str] | None = None,
           attachment: Attachment | AttachmentError | None = None) -> bool:
    """`session.post`; a refusal (nothing typed, nothing to retry, an unknown skill or command, a value the skill
    can't take, an attached file that can't be read or won't fit the model's context) is a warning."""
    if text.strip() == SKILLS_COMMAND:  # (it lists, it sends nothing)
        info(skills_list(tab.session.skills))
        return True
    try:
        if isinstance(attachment, AttachmentError):
            raise attachment
        if attachment is not None:
            tab.session.check_fits(text, skill, values, attachment)
        tab.session.post(text, skill, values, attachment)
    except ChatError as error:
        warn(str(error))
        return False
    return True


def answer(tab: Tab) -> Pages:
    """Streams the answer to the chat's last message, if it is waiting for one.

    Several messages taken in quick succession each queue an `answer`; the first to run answers
    the last message and the others find nothing left to do.
    """
    try:
        reply = tab.session.answer_last(tokens=tab.record_tokens)
    except ChatError as error:
        warn(str(error))
        yield page(tab)
        return
    if reply is None:
        yield PageUpdate()  # (nothing changes)
        return
    yield from stream(tab, reply)


def stop(tab: Tab) -> PageUpdate:
    """Stop: the model stops, then the page shows where the answer ended.

    The answer's own stream draws that too, unless the page's cancel closed it first; then this is the only
    page drawn after the end. Its end runs in the stream's thread (or as the stream is closed), within
    moments of the model stopping: waited for, at most `STOP_DRAWS_WITHIN_S`."""
    reply = tab.session.answering
    tab.session.stop()
    if reply is not None:
        reply.ended.wait(STOP_DRAWS_WITHIN_S)
    return page(tab)


@takes_settings
def continue_answer(tab: Tab, instructions: str | None = None, *values: Any) -> Pages:
    """Continue: more of the last answer, streamed into the same message."""
    apply_controls(tab, instructions, *values)
    yield from _streamed(tab, lambda: tab.session.continue_answer(tokens=tab.record_tokens))


def reproduce(tab: Tab) -> Pages:
    """Reproduce: the last answer made again from its recorded model, skill, instructions, settings and seed."""
    yield from _streamed(tab, lambda: tab.session.reproduce(tokens=tab.record_tokens))


@takes_settings
def edit(tab: Tab, edited: gr.EditData, instructions: str | None = None, *values: Any) -> Pages:
    """The chat's edit control on a message of the user's: a new version of it, answered (the old one stays)."""
    apply_controls(tab, instructions, *values)
    session = tab.session
    index = history_index(session, edited.index if isinstance(edited.index, int) else edited.index[0])
    text = replace_broken_characters(str(edited.value or ""))

    def edit_and_answer() -> Reply:
        if index is None:
            raise ChatError("only your own messages can be edited")
        session.edit(index, edited_text(session, index, text))
        tab.focus_on(index)  # the new version: its versions bar shows
        reply = session.answer_last(tokens=tab.record_tokens)
        assert reply is not None
        return reply

    yield from _streamed(tab, edit_and_answer)


def pick(tab: Tab, selected: gr.SelectData) -> PageUpdate:
    """A click on a message: the version buttons and the panels now show that message's."""
    index = history_index(tab.session, selected.index if isinstance(selected.index, int) else selected.index[0])
    if index is not None:
        tab.focus_on(index)
    return page(tab)


def _streamed(tab: Tab, start: Callable[[], Reply]) -> Pages:
    try:
        reply = start()
    except ChatError as error:
        warn(str(error))
        yield page(tab)
        return
    yield from stream(tab, reply)


def undo(tab: Tab, typed_since: str | None = None) -> PageUpdate:
    """Removes the last exchange; its message goes back into the box, before anything typed there."""
    undone = tab.session.undo()
    return page(tab, _put_back(undone, typed_since))


def clear(tab: Tab) -> PageUpdate:
    tab.session.clear()
    return page(tab)


def _put_back(text: str, typed_since: str | None) -> str | None:
    """The message box with `text` back in it, before whatever the user typed there since;
    None (leave the box alone) when there is nothing to put back."""
    if not text or is_blank(text):
        return None
    return f"{text}\n{typed_since}" if typed_since and not is_blank(typed_since) else text


def describe_skill(tab: Tab, skill: str) -> str:
    try:
        return tab.session.skills.pick(skill).description
    except ChatError as error:
        return str(error)


def skills_list(skills: Any) -> str:
    """`/skills` on the page: each skill's command and name."""
    return "Skills (start a message with a command to use one for it): " + " · ".join(
        f"/{skill.command} {skill.name}" for skill in skills)


def info(message: str) -> None:
    gr.Info(html.escape(message, quote=False))


def stream(tab: Tab, reply: Reply) -> Pages:
    """The page while `reply` streams (only the chat changes), then the whole page. Closed early (Stop, a closed
    tab), the answer ends there, even before its first piece."""
    try:
        yield page(tab, running=True)
        last = 0.0
        for _ in reply:
            now = time.perf_counter()
            if now - last >= STREAM_UPDATE_INTERVAL_S:
                last = now
                # Only the chat changes while an answer streams. Re-sending the prompt view (the whole
                # prompt) and the rest at every token cost the model ~10% of its speed on 2 cores.
                yield PageUpdate(chat=chat_messages(tab.session))
    except ChatError as error:
        warn(str(error))
    finally:
        reply.close()
    yield page(tab)
