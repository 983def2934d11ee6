"""The page's saved chats: the sidebar's list, New chat, open, rename, delete (with Undo), search.

Who owns a chat: the `--auth` user logged in (`gr.Request.username`), on any device; without
`--auth`, the browser, through a random token it keeps (`gr.BrowserState`, whose secret is kept in
the database so that it survives restarts and is shared by every instance). Every store query
names that owner: a chat id sent by anyone else opens nothing.

Each handler takes the conversation store first (bound by the page), then the tab's session.
"""

from __future__ import annotations

import secrets
from typing import Any

import gradio as gr

from ...errors import StoreError
from ...session import ChatSession
from ...settings import SETTINGS
from ...store.record import ChatRecord, settings_of, tree_of
from ...store.store import Store, browser_owner, user_owner
from .. import handlers
from ..handlers import page, warn

BROWSER_KEY = "chat-workbench-chats"  # the browser's localStorage key
SECRET_KEY = "browser_state_secret"  # the store's meta key for the BrowserState secret
LISTED = 200  # chats the sidebar lists (search finds the rest)


def empty_browser_state() -> dict[str, str]:
    return {"token": "", "chat": ""}  # the browser's owner token, the chat it shows


def restore(store: Store, session: ChatSession, saved: dict[str, str] | None, request: gr.Request,
            everyone: str | None = None) -> tuple:
    """On page load: who this is, and the chat this browser showed last (a reload brings it back).

    `everyone` (app.py --user NAME, without --auth): every visitor is that user, as in the terminal.
    """
    saved = dict(saved or empty_browser_state())
    username = getattr(request, "username", None) or everyone
    if username:
        session.owner = user_owner(username)
    else:
        saved["token"] = saved.get("token") or secrets.token_urlsafe(24)
        session.owner = browser_owner(saved["token"])
    if saved.get("chat") and (session.record is None or session.record.chat_id != saved["chat"]):
        try:
            _open(store, session, saved["chat"])
        except StoreError:
            saved["chat"] = ""  # deleted since, or not this owner's: start empty
    return opened(store, session, saved)


def open_chat(store: Store, session: ChatSession, chat_id: str | None, search: str, saved: dict[str, str]) -> tuple:
    if chat_id and (session.record is None or chat_id != session.record.chat_id):
        try:
            _open(store, session, chat_id)
        except StoreError as error:
            warn(str(error))
    return opened(store, session, dict(saved or {}), search)


def new_chat(store: Store, session: ChatSession, saved: dict[str, str]) -> tuple:
    """An empty chat; it joins the list with its first message. (The chat shown stays as it is.)"""
    session.new_conversation()
    return opened(store, session, dict(saved or {}))


def rename(store: Store, session: ChatSession, title: str, search: str) -> Any:
    if session.record is not None and title.strip():
        store.rename(session.owner, session.record.chat_id, title)
    return chat_list(store, session, search)


def delete(store: Store, session: ChatSession, saved: dict[str, str]) -> tuple:
    """Deletes the chat shown (kept for Undo); the page then shows an empty chat."""
    deleted = session.record.chat_id if session.record is not None else ""
    if deleted:
        store.delete(session.owner, deleted)
    return (*new_chat(store, session, saved), deleted, gr.update(visible=bool(deleted)))


def undo_delete(store: Store, session: ChatSession, deleted: str, saved: dict[str, str]) -> tuple:
    if deleted:
        store.restore(session.owner, deleted)
    return (*open_chat(store, session, deleted, "", saved), "", gr.update(visible=False))


def chat_list(store: Store, session: ChatSession, search: str = "") -> Any:
    """The sidebar's list: the owner's chats, newest first, titled by their first message."""
    chats = store.chats(session.owner, search=search or "", limit=LISTED) if session.owner else []
    current = session.record.chat_id if session.record is not None else None
    return gr.update(choices=[(c.title or "(empty chat)", c.id) for c in chats], value=current)


def listing(store: Store, session: ChatSession, search: str, saved: dict[str, str]) -> tuple:
    """After a message: the list (a new chat joins it) and the chat this browser shows."""
    saved = dict(saved or {})
    saved["chat"] = session.record.chat_id if session.record is not None else ""
    return chat_list(store, session, search), _title(store, session), saved


def keep(store: Store, session: ChatSession) -> None:
    """Before a message is taken: a chat not yet in the store becomes one (a new chat, an uploaded file)."""
    if session.record is None and session.owner:
        session.start_record(ChatRecord.new(store, session.owner, session.instructions, session.settings))


def opened(store: Store, session: ChatSession, saved: dict[str, str], search: str = "") -> tuple:
    """Everything a chat sets on the page: the chat, its instructions, skill and settings, the list, the browser's state."""
    saved["chat"] = session.record.chat_id if session.record is not None else ""
    settings = [getattr(session.settings, declared.name) for declared in SETTINGS]
    settings = [-1 if value is None else value for value in settings]  # (the Seed box: -1 = random)
    return (*page(session), session.instructions, _last_skill(session), *settings, chat_list(store, session, search),
            _title(store, session), saved)


def _open(store: Store, session: ChatSession, chat_id: str) -> None:
    chat = store.open_chat(session.owner, chat_id)
    session.open(ChatRecord(store, session.owner, chat.id), *tree_of(chat), chat.instructions,
                 settings_of(chat, session.settings))


def _title(store: Store, session: ChatSession) -> str:
    return "" if session.record is None else store.title(session.owner, session.record.chat_id)


def _last_skill(session: ChatSession) -> Any:
    """The skill of the chat's last message, for the Skill menu (unchanged when it has none this app knows)."""
    skill = next((m.get("skill") for m in reversed(session.history) if m["role"] == "user"), None)
    return skill if skill in session.skills.names() else gr.skip()


def posting(store: Store, session: ChatSession, search: str, saved: dict[str, str], *args: Any) -> tuple:
    """The page's Enter or Send (handlers.post), the chat kept in the store from its first message; with the
    message, the list (a new chat joins it) and the chat this browser shows. In the same page as the message:
    the browser then knows its chat before the answer begins (a crash mid-answer finds it after a restart)."""
    keep(store, session)
    return (*handlers.post(session, *args), *listing(store, session, search, saved))


def uploading(store: Store, session: ChatSession, file: Any) -> tuple:
    """An uploaded conversation file becomes a new chat in the list (the one shown stays as it was)."""
    result = handlers.upload(session, file)
    if session.record is None and session.history:
        keep(store, session)
    return result
