"""The chat itself: the Chatbot, the message box with its skill and Send, the answer's buttons (Stop,
Retry, Continue, Reproduce, Undo, Clear) and the status line; the answers they stream."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import gradio as gr

from ...attachments import TEXT_TYPES
from ...models import ModelList
from ...skill_variables import MAX_VARIABLES
from ...skills import SkillBook
from .. import handlers
from ..view import PAGE
from ..wiring import QUICK, TAKING_EVENT, Wiring

# Runs in the browser on Enter/Send, before anything reaches the server: the message leaves the box
# at once (so nothing typed next can be overwritten by this send) for the page's outbox, numbered.
# The outbox (a page variable: a component's value may lag behind a quick second Enter) keeps every
# message the server hasn't confirmed taking, so whichever request arrives first takes them all, in
# the order they were sent. A blank message stays in the box (and is warned about).
# Each message carries the skill's variables form as it was when it was sent.
TAKE_MESSAGE_JS = """(text, taken, ...form) => {
    const outbox = (window.chatOutbox ??= {next: 1, waiting: []});
    outbox.waiting = outbox.waiting.filter(([number]) => number > (taken || 0));
    outbox.waiting.push([outbox.next++, text || "", form]);
    const blank = /^[\\s\\p{Cc}\\p{Cf}]*$/u.test(text || "");
    return [blank ? text : "", JSON.stringify(outbox.waiting)];
}"""
# When the server could not take them (the queue is full, the connection broke): the messages come back.
PUT_BACK_JS = """(text, taken) => {
    const waiting = (window.chatOutbox?.waiting || []).filter(([number]) => number > (taken || 0));
    const back = waiting.map(([, t]) => t).filter((t) => t.trim()), outbox = window.chatOutbox;
    if (outbox) outbox.waiting = [];
    return [...back, ...(text?.trim() ? [text] : [])].join("\\n");
}"""


def skill_form(tab: Any, skill: str) -> list[Any]:
    """The skill's description and its variables' form (hidden for a skill without variables)."""
    chosen = tab.session.skills.find(skill) or tab.session.skills.default
    fields: list[Any] = []
    for number in range(MAX_VARIABLES):
        variable = chosen.variables[number] if number < len(chosen.variables) else None
        fields += _field_updates(variable)
    return [chosen.description, gr.update(visible=bool(chosen.variables)), *fields]


def _field_updates(variable: Any) -> list[Any]:
    """(the text box, the menu) of one variable: the one its type uses shown, with its default."""
    if variable is None:
        return [gr.update(visible=False, value=""), gr.update(visible=False, value=None, choices=[])]
    label = variable.name + (" *" if variable.required else "") + (f" ({variable.type})" if variable.type == "number" else "")
    if variable.type == "choice":
        return [gr.update(visible=False, value=""),
                gr.update(visible=True, label=label, info=variable.description or None, choices=list(variable.choices),
                          value=variable.default or None)]
    return [gr.update(visible=True, label=label, info=variable.description or None, value=variable.default,
                      lines=4 if variable.type == "long text" else 1, placeholder=variable.description or variable.name),
            gr.update(visible=False, value=None, choices=[])]


@dataclass
class Posting:
    """How Enter/Send takes a message: `handler(tab, *extra inputs, outbox, typed since, skill, attached file, *controls)`,
    showing the page, "taken" and `shows` (the saved chats' sidebar adds its list and the browser's state)."""

    handler: Callable[..., Any] = handlers.post
    inputs: tuple[Any, ...] = ()
    shows: tuple[str, ...] = ()


@dataclass
class Keeping:
    """How a chat started by another event than Enter/Send is kept (Compare): `keep(tab)` before its message is taken,
    then `shown(tab, *inputs)` with its first page (the saved chats' sidebar: the list, the chat this browser shows)."""

    keep: Callable[[Any], None] = lambda tab: None
    shown: Callable[..., dict[str, Any]] = lambda tab, *inputs: {}
    inputs: tuple[Any, ...] = ()
    shows: tuple[str, ...] = ()


@dataclass
class ChatPanel:
    chatbot: gr.Chatbot
    model: gr.Dropdown  # the chat's model (the Models section: loading, unloading, defaults)
    skill: gr.Dropdown
    message: gr.Textbox
    send: gr.Button
    skill_help: gr.Markdown
    buttons: dict[str, gr.Button]
    status: gr.Markdown
    outbox: gr.Textbox  # messages on their way from the box to the chat (never shown)
    taken: gr.Number  # the number of the last one taken (never shown)
    api_send: gr.Button  # for programs only (`/send`, `/retry`: one call sends and streams the answer back);
    api_retry: gr.Button  # the page never presses these: it sends in steps that leave the message box to the user
    form: gr.Row  # the skill's variables, beside the message box: a text box and a menu per variable, one shown
    form_fields: list[gr.Textbox | gr.Dropdown]  # (text, menu) for each of MAX_VARIABLES
    attach: gr.File  # a text file: the next message's material (chat/attachments.py)

    @staticmethod
    def build_chatbot() -> gr.Chatbot:
        return gr.Chatbot(
            label="Chat", height=480, buttons=["copy", "copy_all"], render_markdown=True,
            sanitize_html=True, allow_tags=False, placeholder="Ask anything, or pick a **Skill** first.",
            editable="user",  # an edit makes a new version of the message, answered; the old one stays
        )

    @classmethod
    def build(cls, chatbot: gr.Chatbot, skills: SkillBook, box_open: bool, models: ModelList) -> "ChatPanel":
        """Below the chatbot (and the versions bar): the message row, the buttons, the status line.
        `box_open`: the message box takes text at once (with saved chats it opens once the page knows whose)."""
        with gr.Row(equal_height=True):
            model = gr.Dropdown(models.names(), value=models.default, label="Model", scale=2, min_width=280, elem_id="model")
            skill = gr.Dropdown(skills.names(), value=skills.default.name, label="Skill", scale=1, min_width=180, elem_id="skill")
            message = gr.Textbox(label="Message", placeholder="Type a message, Enter sends (Shift+Enter: new line). /retry retries.",
                                 lines=1, max_lines=10, scale=4, autofocus=True, elem_id="message", interactive=box_open)
            send = gr.Button("Send", variant="primary", scale=0, min_width=90)
        skill_help = gr.Markdown(skills.default.description, elem_id="skill-help")
        attach = gr.File(label="Attach a text file (Markdown, code, PDF): the next message's material", file_types=list(TEXT_TYPES),
                         height=90, elem_id="attach")
        with gr.Row(visible=False, elem_id="skill-values") as form:
            form_fields: list[gr.Textbox | gr.Dropdown] = []
            for number in range(1, MAX_VARIABLES + 1):
                form_fields += [gr.Textbox(visible=False, elem_id=f"skill-value-{number}", min_width=160),
                                gr.Dropdown([], visible=False, elem_id=f"skill-choice-{number}", min_width=160)]
        with gr.Row():
            buttons = {"stop": gr.Button("Stop", variant="stop", size="sm"), "retry": gr.Button("Retry", size="sm"),
                       "continue": gr.Button("Continue", size="sm"), "reproduce": gr.Button("Reproduce", size="sm"),
                       "undo": gr.Button("Undo", size="sm"), "clear": gr.Button("Clear", size="sm")}
        status = gr.Markdown("", elem_id="status")
        return cls(chatbot, model, skill, message, send, skill_help, buttons, status, gr.Textbox(visible=False),
                   gr.Number(0, precision=0, visible=False), gr.Button(visible=False), gr.Button(visible=False), form, form_fields,
                   attach)

    def name(self, wiring: Wiring) -> None:
        wiring.name(chat=self.chatbot, model=self.model, message=self.message, status=self.status, taken=self.taken,
                    attached=self.attach)

    def wire_answers(self, wiring: Wiring, posting: Posting) -> Any:
        """The events that stream an answer (counted in `wiring.generating`); returns the event that takes a message."""
        state, controls, bind_stream = wiring.state, wiring.controls, wiring.bind_stream
        posted = self._taking(wiring, posting)
        retaken = self.buttons["retry"].click(wiring.bind(handlers.take_back_answer), [state, *controls], wiring.outputs(*PAGE),
                                              **TAKING_EVENT)
        for event in (posted, retaken):
            wiring.answers(event.success(bind_stream(handlers.answer), state, **wiring.answering(api_visibility="private")))
        wiring.answers(self.api_send.click(bind_stream(handlers.send), [state, self.message, self.skill, *controls],
                                           **wiring.answering(api_name="send")))
        wiring.answers(self.api_retry.click(bind_stream(handlers.retry), [state, *controls], **wiring.answering(api_name="retry")))
        wiring.answers(self.buttons["continue"].click(bind_stream(handlers.continue_answer), [state, *controls],
                                                      **wiring.answering(api_name="continue")))
        wiring.answers(self.buttons["reproduce"].click(bind_stream(handlers.reproduce), state, **wiring.answering(api_name="reproduce")))
        wiring.answers(self.chatbot.edit(bind_stream(handlers.edit), [state, *controls], **wiring.answering(api_visibility="private")))
        return posted

    def _taking(self, wiring: Wiring, posting: Posting) -> Any:
        """Enter or Send: the box empties in the browser at once (a blank message stays, to be warned
        about), the message joins the chat, the answer in progress stops; returns the taking event.
        "multiple": Gradio's default ("once") would drop a message sent while the last answer streams."""
        sent = gr.on([self.message.submit, self.send.click], None, [self.message, self.taken, *self.form_fields],
                     [self.message, self.outbox], js=TAKE_MESSAGE_JS, queue=False, trigger_mode="multiple", show_progress="hidden",
                     api_visibility="private")
        posted = sent.then(wiring.bind(posting.handler),
                           [wiring.state, *posting.inputs, self.outbox, self.message, self.skill, self.attach, *wiring.controls],
                           wiring.outputs(*PAGE, "taken", "attached", *posting.shows), **TAKING_EVENT)
        posted.failure(None, [self.message, self.taken], self.message, js=PUT_BACK_JS, queue=False, show_progress="hidden",
                       api_visibility="private")
        return posted

    def wire_quick(self, wiring: Wiring) -> list[Any]:
        """Stop, Undo, Clear and a click on a message: outside the queue, they act while an answer streams. Returns the
        events of Stop, Undo and Clear."""
        state, page, cancels = wiring.state, wiring.outputs(*PAGE), wiring.cancels
        quick = [self.buttons["stop"].click(wiring.bind(handlers.stop), state, page, queue=False, cancels=cancels, api_name="stop"),
                 self.buttons["undo"].click(wiring.bind(handlers.undo), [state, self.message], page, queue=False, cancels=cancels,
                                            api_name="undo"),
                 self.buttons["clear"].click(wiring.bind(handlers.clear), state, page, queue=False, cancels=cancels, api_name="clear"),
                 # The Chatbot's own trash icon must clear the session too, not just the display.
                 self.chatbot.clear(wiring.bind(handlers.clear), state, page, queue=False, cancels=cancels, api_visibility="private")]
        self.skill.change(wiring.bind(skill_form), [state, self.skill], [self.skill_help, self.form, *self.form_fields], **QUICK)
        return quick
