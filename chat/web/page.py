"""The Gradio page: chat, skills, Stop/Retry/Undo/Clear, Instructions, Settings, Prompt.

`build_ui` only lays out components and wires them to `handlers`; every browser tab gets
its own `ChatSession` through a callable `gr.State`, so tabs never see each other's text.
"""

from __future__ import annotations

from functools import partial, wraps
from typing import Any, Callable, Iterator

import gradio as gr

from . import handlers, prompt_tokens_html
from .panels import sidebar as chats, tokens as token_panel
from ..engine import Engine
from ..errors import ChatError
from ..store.store import Store
from ..session import ChatSession
from .tabs import SessionStore, new_session_key
from .view import NO_ANSWER_YET, NO_PROMPT_YET
from ..settings import SETTINGS, GenerationSettings
from ..skills import SkillBook

# All answers share one concurrency group, so `--concurrency N` counts answers however they were
# started (Enter, Send, Retry); by default Gradio would give each event listener its own N.
GENERATE = "generate"
TAKING = "taking"  # taking messages, Retry and settings into the chat: milliseconds each, never behind an answer
# Runs in the browser on Enter/Send, before anything reaches the server: the message leaves the box
# at once (so nothing typed next can be overwritten by this send) for the page's outbox, numbered.
# The outbox (a page variable: a component's value may lag behind a quick second Enter) keeps every
# message the server hasn't confirmed taking, so whichever request arrives first takes them all, in
# the order they were sent. A blank message stays in the box (and is warned about).
TAKE_MESSAGE_JS = """(text, taken) => {
    const outbox = (window.chatOutbox ??= {next: 1, waiting: []});
    outbox.waiting = outbox.waiting.filter(([number]) => number > (taken || 0));
    outbox.waiting.push([outbox.next++, text || ""]);
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

CSS = """
#status {min-height: 1.5em; opacity: .8}
#skill-help {font-size: .9em; opacity: .8}
#chat-list label {width: 100%}
"""


def build_ui(engine: Engine, skills: SkillBook, instructions: str, defaults: GenerationSettings, title: str = "Chat workbench",
             conversations: Store | None = None, everyone: str | None = None) -> gr.Blocks:
    """The page; with `conversations` (the store), a sidebar of the user's saved chats (`everyone`: the
    user every visitor is without --auth, from app.py --user; None: each browser its own)."""
    store = SessionStore(lambda: ChatSession(engine, skills, instructions, defaults))
    bind, bind_stream = partial(_bind, store), partial(_bind_stream, store)
    with gr.Blocks(title=title) as demo:
        if conversations is not None:
            # What the browser keeps: its owner token (without --auth) and the chat it shows. The secret
            # lives in the database: Gradio's default is random per launch, and the value would vanish.
            browser = gr.BrowserState(chats.empty_browser_state(), storage_key=chats.BROWSER_KEY,
                                      secret=conversations.secret(chats.SECRET_KEY))
            with gr.Sidebar(label="Chats", open=True):
                new_chat_button = gr.Button("New chat", variant="primary", size="sm")
                search_box = gr.Textbox(label="Search chats", placeholder="a word from a title or a message", lines=1, max_lines=1)
                chat_list = gr.Radio(label="Your chats", choices=[], elem_id="chat-list")
                title_box = gr.Textbox(label="Title of this chat", placeholder="Enter renames it", lines=1, max_lines=1)
                with gr.Row():
                    delete_button = gr.Button("Delete chat", variant="stop", size="sm")
                    undo_delete_button = gr.Button("Undo delete", size="sm", visible=False)
                deleted = gr.State("")
        gr.Markdown(f"## 💬 {title}\n**Model:** {engine.name} · {engine.device}")
        # A key per tab; the store holds the session. The callback is a plain function, not the bound
        # method `store.drop`: Gradio deep-copies the page config (State props included) on every page
        # load, and deep-copying a bound method copies its object: the store, every session, the model.
        # The key is made by the tab's first event, in the tab's own copy of this dict (`_tab_key`). Not a
        # callable value (`gr.State(new_session_key)`): Gradio calls that for the first event that reads it
        # and again in a page-load event of its own, whose key then replaces the first; a message sent before
        # that load was done went to a session the tab then forgot, and was never answered.
        session = gr.State({}, delete_callback=lambda tab: store.drop(tab.get("key")))
        chatbot = gr.Chatbot(
            label="Chat", height=480, buttons=["copy", "copy_all"], render_markdown=True,
            sanitize_html=True, allow_tags=False, placeholder="Ask anything, or pick a **Skill** first.",
            editable="user",  # an edit makes a new version of the message, answered; the old one stays
        )
        # Other versions of a message (Retry, edits, Reproduce): of the message clicked in the chat, or the last one.
        with gr.Row(visible=False, equal_height=True) as versions_row:
            versions_line = gr.Markdown("", elem_id="versions")
            previous_button = gr.Button("Previous version", size="sm", scale=0, min_width=140)
            next_button = gr.Button("Next version", size="sm", scale=0, min_width=140)
        with gr.Row(equal_height=True):
            skill = gr.Dropdown(skills.names(), value=skills.default.name, label="Skill", scale=1, min_width=180)
            # With saved chats the box opens once the page knows whose chat it is (see `restore`).
            message = gr.Textbox(label="Message", placeholder="Type a message, Enter sends (Shift+Enter: new line). /retry retries.",
                                 lines=1, max_lines=10, scale=4, autofocus=True, elem_id="message",
                                 interactive=conversations is None)
            send_button = gr.Button("Send", variant="primary", scale=0, min_width=90)
        skill_help = gr.Markdown(skills.default.description, elem_id="skill-help")
        with gr.Row():
            stop_button = gr.Button("Stop", variant="stop", size="sm")
            retry_button = gr.Button("Retry", size="sm")
            continue_button = gr.Button("Continue", size="sm")
            reproduce_button = gr.Button("Reproduce", size="sm")
            undo_button = gr.Button("Undo", size="sm")
            clear_button = gr.Button("Clear", size="sm")
        status = gr.Markdown("", elem_id="status")
        with gr.Accordion("Instructions", open=False):
            instructions_box = gr.Textbox(value=instructions, label="System instructions", lines=4, max_lines=16, elem_id="instructions")
            reset_button = gr.Button("Reset to default", size="sm")
        with gr.Accordion("Settings", open=False):
            setting_inputs = _settings_controls(defaults)
        tokens = token_panel.Panel.build()
        with gr.Accordion("How this answer was made", open=False):
            provenance = gr.Markdown(NO_ANSWER_YET, elem_id="provenance")
        with gr.Accordion("Prompt", open=False):
            context_line = gr.Markdown(NO_PROMPT_YET)
            prompt_box = gr.Textbox(label="Exact prompt of the last turn", lines=8, max_lines=30, interactive=False, buttons=["copy"], elem_id="prompt-view")
            prompt_as_tokens = gr.Checkbox(False, label="Show as tokens: each piece and id, coloured by part", elem_id="prompt-as-tokens")
            prompt_tokens = gr.HTML("", visible=False, elem_id="prompt-tokens", css_template=prompt_tokens_html.CSS)
        with gr.Accordion("Conversation file", open=False):
            with gr.Row():
                download_button = gr.DownloadButton("Download conversation (JSON)", size="sm")
                markdown_button = gr.DownloadButton("Download as Markdown", size="sm")
                upload_button = gr.UploadButton("Upload conversation (JSON)", file_types=[".json"], size="sm")

        # Messages on their way from the box to the chat, and the number of the last one taken (never shown).
        outbox, taken = gr.Textbox(visible=False), gr.Number(0, precision=0, visible=False)
        # For programs only (`/send`, `/retry`: one call sends and streams the answer back); the page
        # never presses these: it sends in the steps below, which leave the message box to the user.
        api_send, api_retry = gr.Button(visible=False), gr.Button(visible=False)

        outputs = [chatbot, message, status, prompt_box, context_line, versions_line, versions_row, provenance]
        controls = [instructions_box, *setting_inputs]
        answering: dict[str, Any] = dict(outputs=[*outputs, session], concurrency_id=GENERATE, show_progress="minimal", trigger_mode="multiple")
        # No limit: taking a message waits for no model, and the page's numbers (TAKE_MESSAGE_JS) keep a
        # tab's messages in the order sent however their requests overtake each other.
        taking: dict[str, Any] = dict(concurrency_id=TAKING, concurrency_limit=None, show_progress="hidden", trigger_mode="multiple",
                      api_visibility="private")

        # Enter or Send: the box empties in the browser at once (a blank message stays, to be warned
        # about), the message joins the chat, the answer in progress stops, the new answer streams.
        # "multiple": Gradio's default ("once") would drop a message sent while the last answer streams.
        sent = gr.on([message.submit, send_button.click], None, [message, taken], [message, outbox], js=TAKE_MESSAGE_JS,
                     queue=False, trigger_mode="multiple", show_progress="hidden", api_visibility="private")
        if conversations is None:
            posted = sent.then(bind(handlers.post), [session, outbox, message, skill, *controls], [*outputs, taken], **taking)
        else:
            posted = sent.then(bind(partial(chats.posting, conversations)), [session, search_box, browser, outbox, message, skill, *controls],
                               [*outputs, taken, chat_list, title_box, browser], **taking)
        posted.failure(None, [message, taken], message, js=PUT_BACK_JS, queue=False, show_progress="hidden", api_visibility="private")
        retaken = retry_button.click(bind(handlers.take_back_answer), [session, *controls], outputs, **taking)
        generating_events = [
            posted.success(bind_stream(handlers.answer), session, api_visibility="private", **answering),
            retaken.success(bind_stream(handlers.answer), session, api_visibility="private", **answering),
            api_send.click(bind_stream(handlers.send), [session, message, skill, *controls], api_name="send", **answering),
            api_retry.click(bind_stream(handlers.retry), [session, *controls], api_name="retry", **answering),
            continue_button.click(bind_stream(handlers.continue_answer), [session, *controls], api_name="continue", **answering),
            reproduce_button.click(bind_stream(handlers.reproduce), session, api_name="reproduce", **answering),
            chatbot.edit(bind_stream(handlers.edit), [session, *controls], api_visibility="private", **answering),
        ]
        generating_events.append(tokens.wire(bind, bind_stream, session, controls, answering))
        tokens.redraw_after(generating_events, bind, session)
        # The prompt as tokens: drawn when ticked, and again after each answer while it is.
        show_prompt_tokens: dict[str, Any] = dict(fn=bind(prompt_tokens_html.shown), inputs=[session, prompt_as_tokens], outputs=prompt_tokens,
                                                  queue=False, show_progress="hidden", api_visibility="private")
        prompt_as_tokens.change(**show_prompt_tokens)
        for event in generating_events:
            event.then(**show_prompt_tokens)
        downloads = [download_button, markdown_button]
        for event in generating_events:
            event.then(bind(handlers.download), session, downloads, queue=False, show_progress="hidden", api_visibility="private")
        # Quick, like Undo: switching versions stops an answer in progress and shows the other branch at once.
        for button, step in ((previous_button, -1), (next_button, +1)):
            switched = button.click(bind(partial(handlers.switch_version, step=step)), session, outputs, queue=False,
                                    cancels=generating_events, api_visibility="private")
            switched.then(bind(handlers.download), session, downloads, queue=False, show_progress="hidden", api_visibility="private")
            tokens.redraw_after([switched], bind, session)
        picked = chatbot.select(bind(handlers.pick), session, outputs, queue=False, show_progress="hidden", api_visibility="private")
        tokens.redraw_after([picked], bind, session)
        # Stop, Undo and Clear skip the queue: they must act while an answer is still streaming.
        stop_button.click(bind(handlers.stop), session, None, queue=False, cancels=generating_events, api_name="stop")
        undo_button.click(bind(handlers.undo), [session, message], outputs, queue=False, cancels=generating_events, api_name="undo")
        clear_button.click(bind(handlers.clear), session, outputs, queue=False, cancels=generating_events, api_name="clear")
        # The Chatbot's own trash icon must clear the session too, not just the display.
        chatbot.clear(bind(handlers.clear), session, outputs, queue=False, cancels=generating_events, api_visibility="private")
        # Queued, unlike the other quick events: only a queued event's gr.Warning reaches the page, and a bad file must say so.
        upload = handlers.upload if conversations is None else partial(chats.uploading, conversations)
        uploaded = upload_button.upload(partial(_bind, store, keep=True)(upload), [session, upload_button],
                                        [*outputs, instructions_box, session], api_visibility="private")
        uploaded.then(bind(handlers.download), session, downloads, queue=False, show_progress="hidden", api_visibility="private")
        reset_button.click(bind(partial(handlers.reset_instructions, default=instructions)), session, instructions_box,
                           queue=False, api_visibility="private")
        skill.change(bind(handlers.describe_skill), [session, skill], skill_help, queue=False, show_progress="hidden", api_visibility="private")
        # Queued with the messages, so "Settings not applied" can show and a message sent next sees the change.
        instructions_box.blur(bind(handlers.apply_controls), [session, *controls], None, **taking)

        if conversations is not None:
            quick: dict[str, Any] = dict(queue=False, show_progress="hidden", api_visibility="private")
            shown = [*outputs, instructions_box, skill, *setting_inputs, chat_list, title_box, browser]

            def on(handler: Callable) -> Callable:  # each sidebar handler takes the store first
                return partial(handler, conversations)

            def restore(key: dict, saved: dict, request: gr.Request) -> tuple:
                """Whose chats, and the chat to show; only then does the message box open: a message sent
                earlier could be taken before the page knew where to save it (and would not be saved)."""
                with store.turn(_tab_key(key)) as tab:
                    try:
                        restored = chats.restore(conversations, tab, saved, request, everyone)
                    except ChatError as error:  # the database went away: chat on, unsaved, and say so
                        handlers.warn(f"Saved chats are not available: {error}")
                        restored = (gr.skip(),) * len(shown)
                    return (restored[0], gr.update(interactive=True), *restored[2:], key)

            # Queued, like the messages: run outside the queue, the load wrote the tab's state back over the
            # one a message sent right after the page appeared had made, and the message vanished. (And
            # the box opens only when the load is done: see `restore`.)
            loaded = demo.load(restore, [session, browser], [*shown, session], **taking)
            new_chat_button.click(bind(on(chats.new_chat)), [session, browser], shown, cancels=generating_events, **quick)
            chose = chat_list.input(bind(on(chats.open_chat)), [session, chat_list, search_box, browser], shown,
                                    cancels=generating_events, **quick)
            for event in (loaded, chose):  # the download buttons hold the chat shown
                event.then(bind(handlers.download), session, downloads, queue=False, show_progress="hidden", api_visibility="private")
            search_box.input(bind(on(chats.chat_list)), [session, search_box], chat_list, **quick)
            title_box.submit(bind(on(chats.rename)), [session, title_box, search_box], chat_list, **quick)
            delete_button.click(bind(on(chats.delete)), [session, browser], [*shown, deleted, undo_delete_button],
                                cancels=generating_events, **quick)
            undo_delete_button.click(bind(on(chats.undo_delete)), [session, deleted, browser], [*shown, deleted, undo_delete_button], **quick)
            listed = dict(inputs=[session, search_box, browser], outputs=[chat_list, title_box, browser], **taking)
            uploaded.then(bind(on(chats.listing)), **listed)
    return demo


def _tab_key(tab: dict) -> str:
    """The key of the tab's session: made by the tab's first event and kept in its State's dict."""
    return tab.setdefault("key", new_session_key())  # one call: two first events at once get one key


def _bind(store: SessionStore, handler: Callable, keep: bool = False) -> Callable:
    """`handler(session, …)` → a Gradio handler taking the tab's State (its session key) instead.

    `keep`: the event also writes the key back to its State. Gradio deletes a closed tab's
    State (calling `store.drop`) only if an event wrote it; a State only ever read stays forever.
    """

    @wraps(handler)  # keeps the parameter names: gradio_client shows them
    def bound(key: dict, *args: Any, **kwargs: Any) -> Any:
        with store.turn(_tab_key(key)) as session:
            result = handler(session, *args, **kwargs)
        return (*result, key) if keep else result

    return bound


def _bind_stream(store: SessionStore, handler: Callable) -> Callable:
    """As `_bind` with `keep`, for generator handlers (Gradio streams only from generator functions).

    Only the start (settings applied, message added, answer begun: up to the first page) holds
    the session's turn; the streaming doesn't, so Stop, Undo and Clear act while it runs.
    """

    @wraps(handler)
    def bound(key: dict, *args: Any, **kwargs: Any) -> Iterator[Any]:
        with store.turn(_tab_key(key)) as session:
            pages = handler(session, *args, **kwargs)
            first = next(pages, None)
        try:
            if first is not None:
                yield (*first, key)
                for page in pages:
                    yield (*page, key)
        finally:
            pages.close()  # this stream closed (Stop, a closed tab): the answer stops at once

    return bound


def _settings_controls(defaults: GenerationSettings) -> list[gr.components.Component]:
    """One control per sampling setting, in `SETTINGS` order (the order the handlers take them)."""
    controls: list[gr.components.Component] = []
    for declared in SETTINGS:
        value = getattr(defaults, declared.name)
        low, high, step = declared.ui
        if declared.optional:  # the seed: a number, -1 = unset
            controls.append(gr.Number(value=-1 if value is None else value, label=declared.label, info=declared.help,
                                      precision=0, minimum=-1, maximum=declared.high))
        else:  # a default set outside the usual range (a flag) widens the slider rather than being cut
            controls.append(gr.Slider(min(low, value), max(high, value), value=value, step=step, label=declared.label, info=declared.help))
    return controls
