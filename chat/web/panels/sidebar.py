"""The page's saved chats: the sidebar's list, New chat, open, rename, delete (with Undo), search.

Who owns a chat: the `--auth` user logged in (`gr.Request.username`), on any device; without
`--auth`, the browser, through a random token it keeps (`gr.BrowserState`, whose secret is kept in
the database so that it survives restarts and is shared by every instance). Every store query
names that owner: a chat id sent by anyone else opens nothing.

Each handler takes the conversation store first (bound by the panel), then the tab.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from functools import partial
from typing import Any, Callable

import gradio as gr

from ...errors import ChatError, StoreError
from ...settings import SETTINGS
from ...store.record import ChatRecord, settings_of, tree_of
from ...store.rows import ChatSummary
from ...store.store import Store, browser_owner, user_owner
from .. import handlers
from ..handlers import warn
from ..tabs import Tab
from ..view import PAGE, PageUpdate, page
from ..wiring import QUICK, TAKING_EVENT, Wiring, tab_key
from . import file
from .chat import Keeping, Posting

BROWSER_KEY = "chat-workbench-chats"  # the browser's localStorage key
SECRET_KEY = "browser_state_secret"  # the store's meta key for the BrowserState secret
LISTED = 200  # chats the sidebar lists (search finds the rest)
LISTING = ("chat_list", "title", "browser")  # what a change of the chat shown changes in the sidebar
Saved = dict[str, str]  # what the browser keeps: its owner token (without --auth) and the chat it shows


def empty_browser_state() -> Saved:
    return {"token": "", "chat": ""}


def restore(store: Store, tab: Tab, saved: Saved | None, request: gr.Request, everyone: str | None = None) -> PageUpdate:
    """On page load: who this is, and the chat this browser showed last (a reload brings it back).

    `everyone` (app.py --user NAME, without --auth): every visitor is that user, as in the terminal.
    """
    saved = dict(saved or empty_browser_state())
    username = getattr(request, "username", None) or everyone
    if username:
        tab.owner = user_owner(username)
    else:
        saved["token"] = saved.get("token") or secrets.token_urlsafe(24)
        tab.owner = browser_owner(saved["token"])
    record = tab.session.record
    if saved.get("chat") and (record is None or record.chat_id != saved["chat"]):
        try:
            _open(store, tab, saved["chat"])
        except StoreError:
            saved["chat"] = ""  # deleted since, or not this owner's: start empty
    return opened(store, tab, saved)


def open_chat(store: Store, tab: Tab, chat_id: str | None, search: str, saved: Saved) -> PageUpdate:
    record = tab.session.record
    if chat_id and (record is None or chat_id != record.chat_id):
        try:
            _open(store, tab, chat_id)
        except StoreError as error:
            warn(str(error))
    return opened(store, tab, dict(saved or {}), search)


def new_chat(store: Store, tab: Tab, saved: Saved) -> PageUpdate:
    """An empty chat; it joins the list with its first message. (The chat shown stays as it was.)"""
    tab.session.new_conversation()
    tab.focus = None
    return opened(store, tab, dict(saved or {}))


def rename(store: Store, tab: Tab, title: str, search: str) -> Any:
    record = tab.session.record
    if record is not None and title.strip():
        store.rename(tab.owner, record.chat_id, title)
    return chat_list(store, tab, search)


def delete(store: Store, tab: Tab, saved: Saved) -> PageUpdate:
    """Deletes the chat shown (kept for Undo); the page then shows an empty chat."""
    record = tab.session.record
    deleted = record.chat_id if record is not None else ""
    if deleted:
        store.delete(tab.owner, deleted)
    return PageUpdate(new_chat(store, tab, saved), deleted=deleted, undo_delete=gr.update(visible=bool(deleted)))


def undo_delete(store: Store, tab: Tab, deleted: str, saved: Saved) -> PageUpdate:
    if deleted:
        store.restore(tab.owner, deleted)
    return PageUpdate(open_chat(store, tab, deleted, "", saved), deleted="", undo_delete=gr.update(visible=False))


def chat_list(store: Store, tab: Tab, search: str = "") -> Any:
    """The sidebar's list: the owner's chats, newest first, titled by their first message."""
    chats = store.chats(tab.owner, search=search or "", limit=LISTED) if tab.owner else []
    record = tab.session.record
    # The chat shown is marked if it is listed (a search may leave it out: a value not among the choices fails the update).
    shown = record.chat_id if record is not None and any(c.id == record.chat_id for c in chats) else None
    return gr.update(choices=[(_label(c, tab), c.id) for c in chats], value=shown)


def _label(chat: ChatSummary, tab: Tab) -> str:
    """A chat's line in the list: its title, and its model where that is not the one new chats start with."""
    title = chat.title or "(empty chat)"
    models = tab.session.models
    return f"{title} · {chat.model}" if models is not None and chat.model and chat.model != models.default else title


def listing(store: Store, tab: Tab, search: str, saved: Saved) -> PageUpdate:
    """The list (a new chat joins it), the chat's title and the chat this browser shows."""
    saved = dict(saved or {})
    record = tab.session.record
    saved["chat"] = record.chat_id if record is not None else ""
    return PageUpdate(chat_list=chat_list(store, tab, search), title=_title(store, tab), browser=saved)


def keep(store: Store, tab: Tab) -> None:
    """Before a message is taken: a chat not yet in the store becomes one (a new chat, an uploaded file)."""
    session = tab.session
    if session.record is None and tab.owner:
        session.start_record(ChatRecord.new(store, tab.owner, session.instructions, session.settings))


def opened(store: Store, tab: Tab, saved: Saved, search: str = "") -> PageUpdate:
    """Everything a chat sets on the page: the chat, its instructions, skill and settings, the list, the browser's state."""
    session = tab.session
    shown = PageUpdate(page(tab), instructions=session.instructions, **listing(store, tab, search, saved))
    for declared in SETTINGS:
        value = getattr(session.settings, declared.name)
        shown[declared.name] = -1 if value is None else value  # (the Seed box: -1 = random)
    skill = next((m.get("skill") for m in reversed(session.history) if m["role"] == "user"), None)
    if skill in session.skills:  # the Skill menu shows the chat's last (unchanged when it has none this app knows),
        shown["skill"] = gr.update(choices=session.skills.names(), value=skill)  # among the owner's skills
    shown["model"] = session.model
    return shown


def _open(store: Store, tab: Tab, chat_id: str) -> None:
    chat = store.open_chat(tab.owner, chat_id)
    tab.session.open(ChatRecord(store, tab.owner, chat.id), *tree_of(chat), chat.instructions, settings_of(chat, tab.session.settings),
                     chat.model)
    tab.focus = None


def _title(store: Store, tab: Tab) -> str:
    record = tab.session.record
    return "" if record is None else store.title(tab.owner, record.chat_id)


def posting(store: Store, tab: Tab, search: str, saved: Saved, *args: Any) -> PageUpdate:
    """The page's Enter or Send (handlers.post), the chat kept in the store from its first message; with the
    message, the list (a new chat joins it) and the chat this browser shows. In the same page as the message:
    the browser then knows its chat before the answer begins (a crash mid-answer finds it after a restart)."""
    keep(store, tab)
    return PageUpdate(handlers.post(tab, *args), **listing(store, tab, search, saved))


def uploading(store: Store, tab: Tab, file_data: Any, search: str, saved: Saved) -> PageUpdate:
    """An uploaded conversation file becomes a new chat in the list (the one shown stays as it was)."""
    shown = file.upload(tab, file_data)
    if tab.session.record is None and tab.session.history:
        keep(store, tab)
    return PageUpdate(shown, **listing(store, tab, search, saved))


@dataclass
class Sidebar:
    store: Store
    browser: gr.BrowserState  # what the browser keeps (see `Saved`)
    new_chat: gr.Button
    search: gr.Textbox
    chat_list: gr.Radio
    title: gr.Textbox
    delete: gr.Button
    undo_delete: gr.Button
    deleted: gr.State  # the id of the chat deleted last (for Undo)

    @classmethod
    def build(cls, store: Store) -> "Sidebar":
        # The secret lives in the database: Gradio's default is random per launch, and the value would vanish.
        browser = gr.BrowserState(empty_browser_state(), storage_key=BROWSER_KEY, secret=store.secret(SECRET_KEY))
        with gr.Sidebar(label="Chats", open=True):
            new = gr.Button("New chat", variant="primary", size="sm")
            search = gr.Textbox(label="Search chats", placeholder="a word from a title or a message", lines=1, max_lines=1)
            listed = gr.Radio(label="Your chats", choices=[], elem_id="chat-list")
            title = gr.Textbox(label="Title of this chat", placeholder="Enter renames it", lines=1, max_lines=1)
            with gr.Row():
                delete_button = gr.Button("Delete chat", variant="stop", size="sm")
                undo_button = gr.Button("Undo delete", size="sm", visible=False)
        return cls(store, browser, new, search, listed, title, delete_button, undo_button, gr.State(""))

    def name(self, wiring: Wiring) -> None:
        wiring.name(chat_list=self.chat_list, title=self.title, browser=self.browser, deleted=self.deleted,
                    undo_delete=self.undo_delete)

    def posting(self) -> Posting:
        """Enter/Send with the chat kept in the store, and the sidebar updated with the message."""
        return Posting(self._on(posting), (self.search, self.browser), LISTING)

    def keeping(self) -> Keeping:
        """Compare: the chat kept in the store from its first message, and the sidebar updated with it."""
        return Keeping(self._on(keep), self._on(listing), (self.search, self.browser), LISTING)

    def uploading(self) -> tuple[Callable[..., PageUpdate], tuple[Any, ...], tuple[str, ...]]:
        """An upload made a chat of its own in the store: (the handler, its inputs after the file, what it shows)."""
        return self._on(uploading), (self.search, self.browser), LISTING

    def _on(self, handler: Callable[..., Any]) -> Callable[..., Any]:  # each handler takes the store first
        return partial(handler, self.store)

    def wire(self, wiring: Wiring, demo: Any, everyone: str | None, shows: tuple[str, ...]) -> list[Any]:
        """The sidebar's events; returns those after which another chat is shown (the page load first, a chat chosen,
        New chat, Delete, Undo delete).
        `shows`: every output a chat sets (the page, the Instructions, the Skill, the Settings, the sidebar)."""
        state, bind, cancels = wiring.state, wiring.bind, wiring.cancels
        outputs = wiring.outputs(*shows)
        # Queued, like the messages: run outside the queue, the load wrote the tab's state back over the
        # one a message sent right after the page appeared had made, and the message vanished. (And
        # the box opens only when the load is done: see `_restoring`.)
        loaded = demo.load(self._restoring(wiring, everyone), [state, self.browser], [*outputs, state], **TAKING_EVENT)
        new = self.new_chat.click(bind(self._on(new_chat)), [state, self.browser], outputs, cancels=cancels, **QUICK)
        chose = self.chat_list.input(bind(self._on(open_chat)), [state, self.chat_list, self.search, self.browser], outputs,
                                     cancels=cancels, **QUICK)
        self.search.input(bind(self._on(chat_list)), [state, self.search], self.chat_list, **QUICK)
        self.title.submit(bind(self._on(rename)), [state, self.title, self.search], self.chat_list, **QUICK)
        deleted = self.delete.click(bind(self._on(delete)), [state, self.browser], [*outputs, self.deleted, self.undo_delete],
                                    cancels=cancels, **QUICK)
        undone = self.undo_delete.click(bind(self._on(undo_delete)), [state, self.deleted, self.browser],
                                        [*outputs, self.deleted, self.undo_delete], **QUICK)
        return [loaded, chose, new, deleted, undone]

    def _restoring(self, wiring: Wiring, everyone: str | None) -> Callable[..., Any]:
        """Whose chats, and the chat to show; only then does the message box open: a message sent
        earlier could be taken before the page knew where to save it (and would not be saved)."""

        def restored(state: dict, saved: Saved, request: gr.Request) -> Any:
            with wiring.tabs.turn(tab_key(state)) as tab:
                try:
                    shown = restore(self.store, tab, saved, request, everyone)
                except ChatError as error:  # the database went away: chat on, unsaved, and say so
                    warn(f"Saved chats are not available: {error}")
                    shown = PageUpdate()
            return wiring.shown(PageUpdate(shown, message=gr.update(interactive=True)), state)

        return restored
