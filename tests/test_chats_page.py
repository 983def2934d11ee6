"""The sidebar's handlers on a real session (tiny model) and a real SQLite store: what a user sees
after New chat, opening, renaming, deleting (and Undo), searching, and an id that isn't theirs."""

from __future__ import annotations

import gradio as gr
import pytest

from chat.session import ChatSession
from chat.settings import SETTINGS, GenerationSettings
from chat.skills import load_skills
from chat.store.store import Store
from chat.web.panels import sidebar as chats
from chat.web.handlers import PAGE_OUTPUTS, answer, post

GREEDY = GenerationSettings(temperature=0, max_new_tokens=6)


@pytest.fixture
def store(tmp_path):
    return Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}")


def tab(engine, store, user: str | None = "alice", saved=None) -> tuple[ChatSession, tuple]:
    session = ChatSession(engine, load_skills(), "Be brief.", GREEDY)
    shown = chats.restore(store, session, saved, gr.Request(username=user))
    return session, shown


def say(store, session, text: str, number: int = 1) -> None:
    session.last_taken = number - 1
    chats.keep(store, session)
    post(session, f'[[{number}, "{text}"]]')
    for _ in answer(session):
        pass


def listed(update) -> list[str]:
    return [label for label, _ in update["choices"]]


def test_new_chat_open_rename_search_delete_and_undo(tiny_engine, store):
    session, _ = tab(tiny_engine, store)
    say(store, session, "What is bread?")
    first = session.record.chat_id
    chats.new_chat(store, session, {})
    assert session.history == [] and session.record is None
    say(store, session, "Tell me about the moon")
    assert listed(chats.chat_list(store, session)) == ["Tell me about the moon", "What is bread?"]
    shown = chats.open_chat(store, session, first, "", {})
    assert [m["content"] for m in session.history][:1] == ["What is bread?"] and shown[-1]["chat"] == first
    chats.rename(store, session, "Baking", "")
    assert listed(chats.chat_list(store, session, "bak")) == ["Baking"]
    assert listed(chats.chat_list(store, session, "moon")) == ["Tell me about the moon"]
    *_, deleted, undo_button = chats.delete(store, session, {})
    assert deleted == first and undo_button["visible"] and session.history == []
    assert listed(chats.chat_list(store, session)) == ["Tell me about the moon"]
    chats.undo_delete(store, session, deleted, {})
    assert session.record.chat_id == first and listed(chats.chat_list(store, session)) == ["Baking", "Tell me about the moon"]


def test_a_reload_brings_the_chat_back_and_another_owners_id_opens_nothing(tiny_engine, store):
    alice, _ = tab(tiny_engine, store, "alice")
    say(store, alice, "alice's plan")
    saved = {"token": "", "chat": alice.record.chat_id}
    again, _ = tab(tiny_engine, store, "alice", saved)  # the same user, reloading (or on another device)
    assert [m["content"] for m in again.history][:1] == ["alice's plan"]
    bob, shown = tab(tiny_engine, store, "bob", saved)  # bob's browser holding alice's chat id
    assert bob.history == [] and bob.record is None and shown[-1]["chat"] == ""
    with pytest.warns(UserWarning, match="no such chat"):
        chats.open_chat(store, bob, alice.record.chat_id, "", {})
    assert bob.history == [] and listed(chats.chat_list(store, bob)) == []


def test_browsers_without_login_each_get_their_own_chats(tiny_engine, store):
    one, shown = tab(tiny_engine, store, None)
    token = shown[-1]["token"]
    assert len(token) >= 32 and one.owner == f"browser:{token}"
    say(store, one, "mine")
    other, _ = tab(tiny_engine, store, None)
    assert other.owner != one.owner and listed(chats.chat_list(store, other)) == []
    back, _ = tab(tiny_engine, store, None, {"token": token, "chat": one.record.chat_id})  # the first browser, reloaded
    assert back.owner == one.owner and [m["content"] for m in back.history][:1] == ["mine"]


def test_an_uploaded_conversation_becomes_a_new_chat(tiny_engine, store, tmp_path):
    import json

    session, _ = tab(tiny_engine, store)
    say(store, session, "Existing chat")
    existing = session.record.chat_id
    path = tmp_path / "old.json"
    path.write_text(json.dumps([{"role": "user", "content": "From a file"}, {"role": "assistant", "content": "Yes."}]))
    chats.uploading(store, session, str(path))
    assert session.record.chat_id != existing
    assert listed(chats.chat_list(store, session)) == ["From a file", "Existing chat"]
    assert [m["content"] for m in store.open_chat("user:alice", existing).messages][:1] == ["Existing chat"]  # untouched


def test_opening_a_chat_brings_back_its_instructions_skill_and_settings(tiny_engine, store):
    session, _ = tab(tiny_engine, store)
    session.instructions = "Answer in French."
    session.settings = GREEDY.replace(temperature=0.3, top_k=7, seed=11)
    session.last_taken = 0
    chats.keep(store, session)
    post(session, '[[1, "Bonjour"]]', None, "🔄 Translate to German")
    for _ in answer(session):
        pass
    other, shown = tab(tiny_engine, store, "alice", {"token": "", "chat": session.record.chat_id})  # another device
    instructions, skill, *settings = shown[len(PAGE_OUTPUTS): len(PAGE_OUTPUTS) + 2 + len(SETTINGS)]
    assert (instructions, skill) == ("Answer in French.", "🔄 Translate to German")
    values = dict(zip((s.name for s in SETTINGS), settings))
    assert (values["temperature"], values["top_k"], values["seed"]) == (0.3, 7, 11)
    assert other.settings == session.settings and other.instructions == "Answer in French."


def test_with_user_every_visitor_is_that_user_as_in_the_terminal(tiny_engine, store):
    """app.py --user alice (a page only alice uses): her terminal chats are on the page, and the reverse."""
    from chat.store.record import ChatRecord

    terminal = ChatSession(tiny_engine, load_skills(), "Be brief.", GREEDY)
    terminal.owner = "user:alice"  # as python -m chat --user alice (or alice's login name) sets it
    terminal.start_record(ChatRecord.new(store, terminal.owner, terminal.instructions, terminal.settings))
    "".join(terminal.send("Begun in the terminal"))
    session = ChatSession(tiny_engine, load_skills(), "Be brief.", GREEDY)
    chats.restore(store, session, None, gr.Request(), everyone="alice")
    assert session.owner == "user:alice" and listed(chats.chat_list(store, session)) == ["Begun in the terminal"]
