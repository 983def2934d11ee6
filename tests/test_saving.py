"""A session writes its conversation to the store as it happens (real tiny model, real SQLite and
PostgreSQL): what a user sent and what the model answered survive Stop, failures and crashes."""

from __future__ import annotations

import pytest

from chat.files import plain_messages
from chat.errors import GenerationError
from chat.session import ChatSession
from chat.settings import GenerationSettings
from chat.skills_file import load_skills
from chat.store.record import ChatRecord, settings_of, tree_of
from chat.store.rows import storable
from chat.store.store import Store
from tests.helpers.engines import make_engine, repeating
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy
from tests.test_store import db_url, postgres  # noqa: F401 - the same real databases

GREEDY = greedy()


def recorded_session(engine, store: Store, owner: str = "alice", settings: GenerationSettings = GREEDY) -> ChatSession:
    session = seeded_session(engine, load_skills(), "Be brief.", settings)
    session.record = ChatRecord.new(store, owner, session.instructions, session.settings)
    return session


def as_stored(messages: list[dict]) -> list[dict]:
    """Messages as the store keeps them (a NUL a random model wrote becomes ␀: see store.storable)."""
    return [{key: storable(value) if isinstance(value, str) else value for key, value in m.items()} for m in messages]


def reopened(store: Store, session: ChatSession, engine) -> ChatSession:
    """The chat as a new tab (or a restarted app) opens it from the store."""
    chat = store.open_chat(session.record.owner, session.record.chat_id)
    fresh = seeded_session(engine, load_skills())
    fresh.open(ChatRecord(store, session.record.owner, chat.id), *tree_of(chat), chat.instructions, settings_of(chat, GREEDY))
    return fresh


def test_every_turn_is_in_the_store_and_a_reopened_chat_goes_on(db_url, tiny_engine):  # noqa: F811
    store = Store(db_url)
    session = recorded_session(tiny_engine, store)
    answers = ["".join(session.send(question)) for question in ("Hello", "How are you?")]
    "".join(session.send("Translate this", "🔄 Translate to German"))
    again = reopened(store, session, tiny_engine)
    assert plain_messages(again) == as_stored(plain_messages(session))  # the same messages, typed text and skills
    assert [m["content"] for m in again.history if m["role"] == "assistant"][:2] == [storable(a) for a in answers]
    assert again.instructions == "Be brief." and again.settings == GREEDY
    assert store.chats("alice")[0].title == "Hello"
    "".join(again.send("And now?"))  # it goes on, and that is saved too
    assert plain_messages(reopened(store, again, tiny_engine)) == as_stored(plain_messages(again))


def test_undo_clear_and_retry_change_what_is_shown_and_delete_nothing(db_url, tiny_engine):  # noqa: F811
    store = Store(db_url)
    session = recorded_session(tiny_engine, store, settings=GREEDY.replace(temperature=1.0, seed=None))
    for question in ("one", "two"):
        "".join(session.send(question))
    session.undo()
    assert [m["content"] for m in reopened(store, session, tiny_engine).history] == ["one", storable(session.history[1]["content"])]
    "".join(session.retry())
    assert plain_messages(reopened(store, session, tiny_engine)) == as_stored(plain_messages(session))
    with store.engine.connect() as connection:
        from sqlalchemy import func, select

        from chat.store.schema import messages
        assert connection.execute(select(func.count()).select_from(messages)).scalar_one() == 5  # kept: the undone and retried
    session.clear()
    assert reopened(store, session, tiny_engine).history == []


def test_a_stopped_answer_is_kept_as_far_as_it_got_and_marked_interrupted(db_url, chatty_engine):  # noqa: F811
    store = Store(db_url)
    session = recorded_session(chatty_engine, store, settings=GREEDY.replace(max_new_tokens=500))
    deltas = iter(session.send("Tell me a story"))
    said = "".join(next(deltas) for _ in range(3))
    session.stop()
    "".join(deltas)
    (question, answer) = reopened(store, session, chatty_engine).history
    assert answer["content"].startswith(storable(said)) and answer["content"] == storable(session.history[1]["content"])
    assert answer.get("interrupted") is True


def test_a_failed_answer_is_kept_with_its_error(db_url, tiny_engine, monkeypatch):  # noqa: F811
    store = Store(db_url)
    session = recorded_session(tiny_engine, store)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated device failure")

    monkeypatch.setattr(tiny_engine.model, "forward", broken)
    with pytest.raises(GenerationError):
        "".join(session.send("Hello"))
    monkeypatch.undo()
    (question, answer) = reopened(store, session, tiny_engine).history
    assert question["content"] == "Hello" and "simulated device failure" in answer["error"]


def test_an_answer_is_written_while_it_streams_every_few_seconds_not_per_token(db_url, tiny_chat_dir, monkeypatch):  # noqa: F811
    engine = repeating(make_engine(tiny_chat_dir, endless=True))  # "a a a …": a piece per token, on any CPU
    store = Store(db_url)
    writes = []
    original = store.update_message
    monkeypatch.setattr(store, "update_message", lambda *args, **kwargs: (writes.append(args[3]), original(*args, **kwargs)))
    session = seeded_session(engine, load_skills(), "Be brief.", GREEDY.replace(max_new_tokens=12))
    session.record = ChatRecord.new(store, "alice", session.instructions, session.settings,
                                    save_every_s=0.0)  # every token: then the store holds each step
    deltas = iter(session.send("Hello"))
    first = next(deltas)
    assert store.open_chat("alice", session.record.chat_id).messages[-1]["content"] == first  # on disk mid-answer
    "".join(deltas)
    every_token = len(writes)
    writes.clear()
    session.record.save_every_s = 3600.0
    "".join(session.send("Again"))
    assert len(writes) == 2 < every_token  # the first piece, then the end
