"""The sidebar's handlers on a real session (tiny model) and a real SQLite store: what a user sees
after New chat, opening, renaming, deleting (and Undo), searching, and an id that isn't theirs."""

from __future__ import annotations

import gradio as gr
import pytest

from chat.session import ChatSession
from chat.settings import SETTINGS
from chat.skills_file import load_skills
from chat.store.store import Store
from chat.web.handlers import answer, post
from chat.web.panels import sidebar as chats
from chat.web.tabs import Tab
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy

GREEDY = greedy(6)


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}")


def tab(engine, store, user: str | None = "alice", saved=None) -> tuple[Tab, dict]:
    opened = Tab(seeded_session(engine, load_skills(), "Be brief.", GREEDY))
    shown = chats.restore(store, opened, saved, gr.Request(username=user))
    return opened, shown


def say(store, tab: Tab, text: str, number: int = 1) -> None:
    tab.last_taken = number - 1
    chats.keep(store, tab)
    post(tab, f'[[{number}, "{text}"]]')
    for _ in answer(tab):
        pass


def listed(update) -> list[str]:
    return [label for label, _ in update["choices"]]


def test_new_chat_open_rename_search_delete_and_undo(tiny_engine, store):
    session, _ = tab(tiny_engine, store)
    say(store, session, "What is bread?")
    first = session.session.record.chat_id
    chats.new_chat(store, session, {})
    assert session.session.history == [] and session.session.record is None
    say(store, session, "Tell me about the moon")
    assert listed(chats.chat_list(store, session)) == ["Tell me about the moon", "What is bread?"]
    shown = chats.open_chat(store, session, first, "", {})
    assert [m["content"] for m in session.session.history][:1] == ["What is bread?"] and shown["browser"]["chat"] == first
    chats.rename(store, session, "Baking", "")
    assert listed(chats.chat_list(store, session, "bak")) == ["Baking"]
    assert listed(chats.chat_list(store, session, "moon")) == ["Tell me about the moon"]
    shown = chats.delete(store, session, {})
    deleted, undo_button = shown["deleted"], shown["undo_delete"]
    assert deleted == first and undo_button["visible"] and session.session.history == []
    assert listed(chats.chat_list(store, session)) == ["Tell me about the moon"]
    chats.undo_delete(store, session, deleted, {})
    assert session.session.record.chat_id == first and listed(chats.chat_list(store, session)) == ["Baking", "Tell me about the moon"]


def test_a_reload_brings_the_chat_back_and_another_owners_id_opens_nothing(tiny_engine, store):
    alice, _ = tab(tiny_engine, store, "alice")
    say(store, alice, "alice's plan")
    saved = {"token": "", "chat": alice.session.record.chat_id}
    again, _ = tab(tiny_engine, store, "alice", saved)  # the same user, reloading (or on another device)
    assert [m["content"] for m in again.session.history][:1] == ["alice's plan"]
    bob, shown = tab(tiny_engine, store, "bob", saved)  # bob's browser holding alice's chat id
    assert bob.session.history == [] and bob.session.record is None and shown["browser"]["chat"] == ""
    with pytest.warns(UserWarning, match="no such chat"):
        chats.open_chat(store, bob, alice.session.record.chat_id, "", {})
    assert bob.session.history == [] and listed(chats.chat_list(store, bob)) == []


def test_browsers_without_login_each_get_their_own_chats(tiny_engine, store):
    one, shown = tab(tiny_engine, store, None)
    token = shown["browser"]["token"]
    assert len(token) >= 32 and one.owner == f"browser:{token}"
    say(store, one, "mine")
    other, _ = tab(tiny_engine, store, None)
    assert other.owner != one.owner and listed(chats.chat_list(store, other)) == []
    back, _ = tab(tiny_engine, store, None, {"token": token, "chat": one.session.record.chat_id})  # the first browser, reloaded
    assert back.owner == one.owner and [m["content"] for m in back.session.history][:1] == ["mine"]


def test_an_uploaded_conversation_becomes_a_new_chat(tiny_engine, store, tmp_path):
    import json

    session, _ = tab(tiny_engine, store)
    say(store, session, "Existing chat")
    existing = session.session.record.chat_id
    path = tmp_path / "old.json"
    path.write_text(json.dumps([{"role": "user", "content": "From a file"}, {"role": "assistant", "content": "Yes."}]))
    chats.uploading(store, session, str(path), "", {})
    assert session.session.record.chat_id != existing
    assert listed(chats.chat_list(store, session)) == ["From a file", "Existing chat"]
    assert [m["content"] for m in store.open_chat("user:alice", existing).messages][:1] == ["Existing chat"]  # untouched


def test_opening_a_chat_brings_back_its_instructions_skill_and_settings(tiny_engine, store):
    session, _ = tab(tiny_engine, store)
    session.session.instructions = "Answer in French."
    session.session.settings = GREEDY.replace(temperature=0.3, top_k=7, seed=11)
    session.last_taken = 0
    chats.keep(store, session)
    post(session, '[[1, "Bonjour"]]', None, "🔄 Translate to German")
    for _ in answer(session):
        pass
    other, shown = tab(tiny_engine, store, "alice", {"token": "", "chat": session.session.record.chat_id})  # another device
    assert (shown["instructions"], shown["skill"]["value"]) == ("Answer in French.", "🔄 Translate to German")
    values = {declared.name: shown[declared.name] for declared in SETTINGS}
    assert (values["temperature"], values["top_k"], values["seed"]) == (0.3, 7, 11)
    assert other.session.settings == session.session.settings and other.session.instructions == "Answer in French."


def test_with_user_every_visitor_is_that_user_as_in_the_terminal(tiny_engine, store):
    """app.py --user alice (a page only alice uses): her terminal chats are on the page, and the reverse."""
    from chat.store.record import ChatRecord

    terminal = seeded_session(tiny_engine, load_skills(), "Be brief.", GREEDY)
    owner = "user:alice"  # as python -m chat --user alice (or alice's login name) sets it
    terminal.start_record(ChatRecord.new(store, owner, terminal.instructions, terminal.settings))
    "".join(terminal.send("Begun in the terminal"))
    session = Tab(seeded_session(tiny_engine, load_skills(), "Be brief.", GREEDY))
    chats.restore(store, session, None, gr.Request(), everyone="alice")
    assert session.owner == "user:alice" and listed(chats.chat_list(store, session)) == ["Begun in the terminal"]
