"""The conversation store on a real SQLite file and a real PostgreSQL server (started by the test)."""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, text

from chat.errors import StoreError
from chat.markup import escape_html_outside_code
from chat.models import ModelDefaults
from chat.store import schema
from chat.store.rows import MessageStatus
from chat.store.store import Store, open_store
from tests.helpers.postgres import PASSWORD, postgres_server

DATABASES = ["sqlite", "postgresql"]


@pytest.fixture(scope="module")
def postgres():
    with postgres_server() as url:
        yield url


@pytest.fixture(params=DATABASES)
def db_url(request, tmp_path):
    """A fresh, empty database of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'chats.sqlite3'}"
    admin = request.getfixturevalue("postgres")
    name = f"test_{os.urandom(6).hex()}"
    import psycopg

    server = admin.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(server, autocommit=True) as connection:
        connection.execute(f"CREATE DATABASE {name}")
    return admin.rsplit("/", 1)[0] + "/" + name


def write_chat(store: Store, owner: str, question: str, answer: str, **chat) -> str:
    chat_id = store.new_chat(owner, **chat)
    asked = store.add_message(owner, chat_id, {"role": "user", "content": f"[skill] {question}", "typed": question,
                                               "skill": "Chat"}, None)
    answered = store.add_message(owner, chat_id, {"role": "assistant", "content": ""}, asked, MessageStatus.STREAMING)
    store.update_message(owner, chat_id, answered, answer, MessageStatus.COMPLETE, provenance={"version": 1, "seed": 7})
    return chat_id


def test_a_chat_is_listed_newest_first_and_opens_with_everything_it_had(db_url):
    store = Store(db_url)
    older = write_chat(store, "alice", "What is the capital of France?", "Paris.")
    newer = write_chat(store, "alice", "And of Germany?", "Berlin.", instructions="Be brief.", skill="Chat",
                       settings={"temperature": 0.2, "max_new_tokens": 64})
    assert [c.id for c in store.chats("alice")] == [newer, older]
    assert [c.title for c in store.chats("alice")] == ["And of Germany?", "What is the capital of France?"]
    chat = Store(db_url).open_chat("alice", newer)  # another connection: it was committed
    assert (chat.instructions, chat.skill, chat.settings) == ("Be brief.", "Chat", {"temperature": 0.2, "max_new_tokens": 64})
    assert [(m["role"], m["content"], m["status"]) for m in chat.messages] == [
        ("user", "[skill] And of Germany?", "complete"), ("assistant", "Berlin.", "complete")]
    assert chat.messages[0]["typed"] == "And of Germany?" and chat.messages[1]["provenance"] == {"version": 1, "seed": 7}


def test_no_owner_reaches_anothers_chats_whatever_id_they_send(db_url):
    store = Store(db_url)
    alices = write_chat(store, "alice", "my secret plan", "ok")
    assert store.chats("bob") == [] and store.chats("bob", search="secret") == []
    for attempt in (lambda: store.open_chat("bob", alices), lambda: store.rename("bob", alices, "mine"),
                    lambda: store.delete("bob", alices), lambda: store.show("bob", alices, []),
                    lambda: store.add_message("bob", alices, {"role": "user", "content": "x"}, None)):
        with pytest.raises(StoreError, match="no such chat"):
            attempt()
    leaf = store.open_chat("alice", alices).messages[-1]["id"]
    store.update_message("bob", alices, leaf, "overwritten", MessageStatus.COMPLETE)  # silently nothing
    chat = store.open_chat("alice", alices)
    assert chat.title == "my secret plan" and chat.messages[-1]["content"] == "ok"


def test_ids_are_long_random_and_distinct(db_url):
    store = Store(db_url)
    ids = {store.new_chat("alice") for _ in range(50)}
    assert len(ids) == 50 and all(len(i) == 22 and i.replace("-", "").replace("_", "").isalnum() for i in ids)


def test_search_finds_titles_and_message_text_in_any_case_and_wildcards_are_literal(db_url):
    store = Store(db_url)
    bread = write_chat(store, "alice", "How is bread made?", "With FLOUR, water and yeast.")
    discount = write_chat(store, "alice", "Is 100% a lot?", "Yes.")
    write_chat(store, "alice", "Something else", "Nothing.")
    assert [c.id for c in store.chats("alice", search="flour")] == [bread]
    assert [c.id for c in store.chats("alice", search="BREAD")] == [bread]
    assert [c.id for c in store.chats("alice", search="100%")] == [discount]
    assert store.chats("alice", search="%") == [c for c in store.chats("alice") if c.id == discount]
    assert len(store.chats("alice", search="  ")) == 3


def test_a_deleted_chat_leaves_the_list_and_can_be_brought_back(db_url):
    store = Store(db_url)
    chat_id = write_chat(store, "alice", "keep me", "ok")
    store.delete("alice", chat_id)
    assert store.chats("alice") == []
    with pytest.raises(StoreError):
        store.open_chat("alice", chat_id)
    store.restore("alice", chat_id)
    assert [c.id for c in store.chats("alice")] == [chat_id]
    store.delete("alice", chat_id)
    store.purge_deleted(older_than_s=-1)
    store.restore("alice", chat_id)
    assert store.chats("alice") == []  # gone for good


def test_an_answer_cut_off_by_a_crash_is_kept_and_marked_interrupted(db_url):
    store = Store(db_url)
    chat_id = store.new_chat("alice")
    asked = store.add_message("alice", chat_id, {"role": "user", "content": "Tell me a story"}, None)
    answer = store.add_message("alice", chat_id, {"role": "assistant", "content": ""}, asked, MessageStatus.STREAMING)
    store.update_message("alice", chat_id, answer, "Once upon a", MessageStatus.STREAMING)
    store.engine.dispose()  # (the process dies here)
    restarted = Store(db_url)
    assert restarted.open_chat("alice", chat_id).messages[-1]["status"] == "streaming"  # (its writer may be alive)
    assert restarted.mark_interrupted(older_than_s=-1) == 1
    shown = restarted.open_chat("alice", chat_id).messages
    assert [(m["content"], m["status"]) for m in shown] == [("Tell me a story", "complete"), ("Once upon a", "interrupted")]


def test_the_shown_path_follows_the_chosen_version(db_url):
    """The tree the versions feature builds on: an alternative answer is a sibling; the path follows the leaf."""
    store = Store(db_url)
    chat_id = store.new_chat("alice")
    asked = store.add_message("alice", chat_id, {"role": "user", "content": "Hi"}, None)
    first = store.add_message("alice", chat_id, {"role": "assistant", "content": "Hello!"}, asked)
    second = store.add_message("alice", chat_id, {"role": "assistant", "content": "Hey."}, asked)
    assert [m["content"] for m in store.open_chat("alice", chat_id).messages] == ["Hi", "Hey."]
    store.show("alice", chat_id, [asked, first])
    assert [m["id"] for m in store.open_chat("alice", chat_id).messages] == [asked, first]
    assert second  # kept: nothing is deleted to make an alternative


def test_many_writers_at_once_lose_nothing_and_mix_nothing(db_url):
    store = Store(db_url)
    errors: list[BaseException] = []

    def user(number: int) -> None:
        try:
            owner = f"user{number}"
            chat_id = store.new_chat(owner)
            parent = None
            for turn in range(5):
                parent = store.add_message(owner, chat_id, {"role": "user", "content": f"{owner} question {turn}"}, parent)
                parent = store.add_message(owner, chat_id, {"role": "assistant", "content": ""}, parent, MessageStatus.STREAMING)
                store.update_message(owner, chat_id, parent, f"{owner} answer {turn}", MessageStatus.COMPLETE)
        except BaseException as error:  # noqa: BLE001 - reported below
            errors.append(error)

    threads = [threading.Thread(target=user, args=(n,)) for n in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors[:3]
    for number in range(20):
        owner = f"user{number}"
        (summary,) = store.chats(owner)
        shown = [m["content"] for m in store.open_chat(owner, summary.id).messages]
        assert shown == [f"{owner} {kind} {turn}" for turn in range(5) for kind in ("question", "answer")]


# -- opening: one clear line, never a traceback, never a password ------------------------------------


def test_sqlite_runs_in_wal_mode_and_reopens_with_its_chats(tmp_path):
    path = tmp_path / "chats.sqlite3"
    chat_id = write_chat(open_store(str(path)), "alice", "Hello", "Hi")
    assert [c.id for c in open_store(str(path)).chats("alice")] == [chat_id]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_none_keeps_conversations_in_memory_only():
    assert open_store("none") is None


def test_a_read_only_database_is_one_line(tmp_path):
    path = tmp_path / "chats.sqlite3"
    Store(f"sqlite:///{path}").engine.dispose()
    # Opened read-only (as SQLite does for a file this user may not write; as root, permissions can't show it).
    with pytest.raises(StoreError, match="read-only") as caught:
        Store(f"sqlite:///file:{path}?mode=ro&uri=true")
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("make, words", [
    (lambda path: None, "its folder does not exist"),
    (lambda path: path.write_bytes(b"this is not a database at all" * 100), "not a SQLite database"),
])
def test_a_database_that_cant_be_opened_is_one_line(tmp_path, make, words):
    path = tmp_path / ("missing/chats.sqlite3" if words.startswith("its folder") else "chats.sqlite3")
    make(path)
    with pytest.raises(StoreError) as caught:
        Store(f"sqlite:///{path}")
    message = str(caught.value)
    assert words in message and str(path) in message and "\n" not in message


def test_a_locked_database_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr("chat.store.store.BUSY_TIMEOUT_MS", 200)
    path = tmp_path / "chats.sqlite3"
    Store(f"sqlite:///{path}").engine.dispose()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")  # another program holds the database
    try:
        with pytest.raises(StoreError, match="locked by another program"):
            Store(f"sqlite:///{path}")
    finally:
        holder.execute("ROLLBACK")


def test_a_database_from_a_newer_release_is_refused_not_damaged(db_url):
    store = Store(db_url)
    chat_id = write_chat(store, "alice", "Hello", "Hi")
    with store.engine.begin() as connection:
        connection.execute(text("UPDATE meta SET value = '99' WHERE key = 'schema_version'"))
    with pytest.raises(StoreError, match=f"newer release of this app .schema 99; this one knows up to {schema.SCHEMA_VERSION}.: upgrade the app"):
        Store(db_url)
    with store.engine.begin() as connection:
        connection.execute(text(f"UPDATE meta SET value = '{schema.SCHEMA_VERSION}' WHERE key = 'schema_version'"))
    assert [c.id for c in Store(db_url).chats("alice")] == [chat_id]


def test_a_database_from_this_release_is_upgraded_by_the_next_releases_steps(db_url, monkeypatch):
    """The upgrade path: a later release adds a step (here: a column); today's database gets it, data kept."""
    chat_id = write_chat(Store(db_url), "alice", "Hello", "Hi")

    def add_pinned(connection) -> None:
        column = Column("pinned", Integer, nullable=False, server_default="0")
        connection.execute(text(f"ALTER TABLE conversations ADD COLUMN {column.name} INTEGER NOT NULL DEFAULT 0"))

    today = schema.SCHEMA_VERSION
    monkeypatch.setattr(schema, "SCHEMA_VERSION", today + 1)
    monkeypatch.setattr("chat.store.store.SCHEMA_VERSION", today + 1)
    monkeypatch.setitem(schema.MIGRATIONS, today, add_pinned)
    upgraded = Store(db_url)
    with upgraded.engine.connect() as connection:
        assert connection.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar_one() == str(today + 1)
        assert connection.execute(text("SELECT pinned FROM conversations")).scalar_one() == 0
    assert [c.id for c in upgraded.chats("alice")] == [chat_id]


def test_a_postgresql_server_that_refuses_is_one_line_without_the_password(postgres):
    wrong = postgres.replace(PASSWORD, "not-the-password")
    with pytest.raises(StoreError) as caught:
        Store(wrong)
    message = str(caught.value)
    assert "refused the user name or password" in message and "not-the-password" not in message and "***" in message
    with pytest.raises(StoreError, match="connection refused") as caught:
        Store(postgres.rsplit("@", 1)[0] + "@127.0.0.1:9/chats")
    assert PASSWORD not in str(caught.value)


def test_any_text_a_model_writes_is_stored_even_a_nul_character(db_url):
    store = Store(db_url)
    chat_id = store.new_chat("alice", instructions="tab\tand\x00nul")
    asked = store.add_message("alice", chat_id, {"role": "user", "content": "a\x00b", "typed": "a\x00b"}, None)
    answer = store.add_message("alice", chat_id, {"role": "assistant", "content": ""}, asked, MessageStatus.STREAMING)
    store.update_message("alice", chat_id, answer, "ver\x00\ufffd Ü😀", MessageStatus.COMPLETE)
    chat = store.open_chat("alice", chat_id)
    assert chat.instructions == "tab\tand␀nul" and chat.title == "a␀b"
    assert [m["content"] for m in chat.messages] == ["a␀b", "ver␀\ufffd Ü😀"]  # (PostgreSQL text can't hold NUL)
    # The chat shows it so before a reload too (a browser would drop the NUL): the same text before and after.
    assert escape_html_outside_code("ver\x00\ufffd Ü😀") == "ver␀\ufffd Ü😀"


DATA = Path(__file__).parent / "data"
RELEASE_1_FILE = DATA / "chats-schema-1.sqlite3"  # made by release 1's code (commit 36337cc)
RELEASE_4_FILE = DATA / "chats-schema-4.sqlite3"  # made by release 4's code (commit 01b0bf6): a chat with its model
RELEASE_5_FILE = DATA / "chats-schema-5.sqlite3"  # made by release 5's code (commit decb49f): skill values, a user's skill
# What each release added, undone (newest first) to make today's tables an earlier release's on PostgreSQL.
ADDED_BY = {
    6: ["ALTER TABLE messages DROP COLUMN comparison"],
    5: ["DROP TABLE skill_versions", "DROP TABLE user_skills", "ALTER TABLE messages DROP COLUMN skill_values",
        "ALTER TABLE messages DROP COLUMN attached"],
    4: ["DROP TABLE model_defaults", "ALTER TABLE conversations DROP COLUMN model"],
    3: ["DROP TABLE token_data"],
    2: ["ALTER TABLE messages DROP COLUMN shown_at"],
}
JSON_COLUMNS = ("settings", "provenance", "defaults", "skill_values", "definition")


def earlier_database(db_url: str, made_by: Path, release: int) -> str:
    """`db_url` holding what release `release` wrote to the file `made_by`: the file itself, or on PostgreSQL the same
    rows in that release's tables (today's, less what later releases added)."""
    if db_url.startswith("sqlite"):
        shutil.copy(made_by, db_url.removeprefix("sqlite:///"))
        return db_url
    source = sqlite3.connect(made_by)
    store = Store(db_url)
    with store.engine.begin() as connection:
        for later in range(schema.SCHEMA_VERSION, release, -1):
            for statement in ADDED_BY[later]:
                connection.execute(text(statement))
        connection.execute(text("DELETE FROM meta"))
        tables = [name for (name,) in source.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        for table in ("meta", "conversations", "messages", "token_data", "model_defaults", "user_skills", "skill_versions"):
            if table not in tables:
                continue
            cursor = source.execute(f"SELECT * FROM {table}")
            columns = [c[0] for c in cursor.description]
            for row in cursor:
                values = {c: (json.loads(v) if c in JSON_COLUMNS and v else v) for c, v in zip(columns, row)}
                connection.execute(getattr(schema, table).insert().values({c: values[c] for c in columns}))
    store.engine.dispose()
    return db_url


def release_1_database(db_url: str) -> str:
    return earlier_database(db_url, RELEASE_1_FILE, 1)


def test_a_release_1_database_is_upgraded_with_every_chat_and_version_kept(db_url):
    """Release 1 kept a retried answer beside the new one; release 2 shows versions and remembers the branch shown."""
    store = Store(release_1_database(db_url))
    (summary,) = store.chats("user:ada")
    chat = store.open_chat("user:ada", summary.id)
    assert [m["content"] for m in chat.messages] == ["What is 2+2?", "4", "Translate: Hallo", "Hello"]
    assert chat.messages[2]["typed"] == "Hallo" and chat.messages[3]["status"] == MessageStatus.INTERRUPTED
    assert sorted(m["content"] for m in chat.all_messages if m["role"] == "assistant") == ["4", "5", "Hello"]
    assert chat.instructions == "Be brief." and chat.settings["temperature"] == 0.7
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar_one() == str(schema.SCHEMA_VERSION)
        assert connection.execute(text("SELECT count(*) FROM messages WHERE shown_at IS NULL")).scalar_one() == 0
    # Release 3 keeps answers' token data: the upgraded database takes it.
    answer = next(m for m in chat.messages if m["content"] == "4")
    store.save_tokens("user:ada", chat.id, answer["id"], b"token data")
    assert store.tokens("user:ada", chat.id, answer["id"]) == b"token data"
    assert store.tokens("user:eve", chat.id, answer["id"]) is None
    # Release 4: a chat names its model (release 1's: none, so the app's default), and models keep their defaults.
    assert chat.model is None
    store.save_chat_model("user:ada", chat.id, "SmolLM2-135M-Instruct · int4")
    assert store.open_chat("user:ada", chat.id).model == "SmolLM2-135M-Instruct · int4"
    store.save_model_defaults("SmolLM2-135M-Instruct · int4", ModelDefaults("Be terse.", {"temperature": 0.2}))
    assert Store(db_url).model_defaults("SmolLM2-135M-Instruct · int4") == ModelDefaults("Be terse.", {"temperature": 0.2})


def test_a_release_4_database_is_upgraded_and_keeps_skills_values_and_attachments_from_then_on(db_url):
    """Release 5: users' own skills with their versions, a message's skill values and attached file's name."""
    store = Store(earlier_database(db_url, RELEASE_4_FILE, 4))
    (summary,) = store.chats("user:ada")
    chat = store.open_chat("user:ada", summary.id)
    assert [m["content"] for m in chat.messages][1] == "A text." and chat.messages[0]["typed"] == "A long text."
    assert chat.model == "SmolLM2-135M-Instruct · int4" and chat.messages[1]["provenance"]["parts"][0]["seed"] == 7
    assert "values" not in chat.messages[0] and "attached" not in chat.messages[0]  # (release 4 had none)
    assert store.model_defaults("SmolLM2-135M-Instruct · int4") == ModelDefaults("Be terse.", {"temperature": 0.2})
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT value FROM meta WHERE key = 'schema_version'")).scalar_one() == str(schema.SCHEMA_VERSION)
    # What release 5 keeps, in the upgraded database:
    asked = store.add_message("user:ada", chat.id, {"role": "user", "content": "…", "typed": "Hi\n\nnotes.md:\n```\nx\n```",
                                                    "skill": "🌍 Translate", "values": {"language": "French"},
                                                    "attached": "notes.md"}, chat.messages[-1]["id"])
    again = Store(db_url).open_chat("user:ada", chat.id)
    stored = next(m for m in again.all_messages if m["id"] == asked)
    assert stored["values"] == {"language": "French"} and stored["attached"] == "notes.md"
    saved = store.skills.save_skill("user:ada", None, {"name": "🌍 Translate", "template": "{message}"}, "first")
    store.skills.save_skill("user:ada", saved.id, {"name": "🌍 Translate", "template": "In {message}"}, "")
    assert [(s.name, s.version) for s in Store(db_url).skills.owned_skills("user:ada")] == [("🌍 Translate", 2)]
    store.save_model_defaults("SmolLM2-135M-Instruct · int4", ModelDefaults("Be terse.", skill="🌍 Translate"))
    assert Store(db_url).model_defaults("SmolLM2-135M-Instruct · int4").skill == "🌍 Translate"


def test_skills_are_their_owners_alone_with_every_version_kept(db_url):
    store = Store(db_url)
    first = store.skills.save_skill("user:ada", None, {"name": "🧪 Haiku", "template": "A haiku: {message}"}, "first try")
    store.skills.save_skill("user:ada", first.id, {"name": "🧪 Haiku", "template": "A haiku on {message}"}, "")
    store.skills.save_skill("user:bob", None, {"name": "🧪 Haiku", "template": "Bob's: {message}"}, "")
    assert [s.definition["template"] for s in store.skills.owned_skills("user:ada")] == ["A haiku on {message}"]
    assert [s.definition["template"] for s in store.skills.owned_skills("user:bob")] == ["Bob's: {message}"]
    assert [(s.version, s.note) for s in store.skills.skill_versions("user:ada", first.id)] == [(2, ""), (1, "first try")]
    # Another owner's id reaches nothing: no versions, no new version, no delete.
    assert store.skills.skill_versions("user:bob", first.id) == []
    with pytest.raises(LookupError):
        store.skills.save_skill("user:bob", first.id, {"name": "🧪 Haiku", "template": "mine now {message}"}, "")
    store.skills.delete_skill("user:bob", first.id)
    assert [s.version for s in store.skills.owned_skills("user:ada")] == [2]
    store.skills.delete_skill("user:ada", first.id)
    assert store.skills.owned_skills("user:ada") == []
    store.skills.restore_skill("user:ada", first.id)
    assert [s.version for s in store.skills.owned_skills("user:ada")] == [2]
    store.skills.delete_skill("user:ada", first.id)
    store.purge_deleted(older_than_s=-1)  # (past Undo's reach): gone with its versions
    with store.engine.connect() as connection:
        assert connection.execute(text("SELECT count(*) FROM skill_versions WHERE skill_id = :id"), {"id": first.id}).scalar_one() == 0


def test_a_release_5_database_is_upgraded_and_keeps_comparisons_and_votes_from_then_on(db_url):
    """Release 6: a message keeps the comparison of its answers and the vote; the leaderboard reads the votes by owner."""
    store = Store(earlier_database(db_url, RELEASE_5_FILE, 5))
    (summary,) = store.chats("user:ada")
    chat = store.open_chat("user:ada", summary.id)
    assert chat.messages[0]["values"] == {"language": "German"} and chat.messages[1]["content"] == "Guten Morgen"
    assert "comparison" not in chat.messages[0]  # (release 5 had none)
    assert [(s.name, s.version) for s in store.skills.owned_skills("user:ada")] == [("🌍 Translate to", 1)]
    # What release 6 keeps, in the upgraded database:
    question = store.add_message("user:ada", chat.id, {"role": "user", "content": "Hi"}, chat.messages[-1]["id"])
    answers = [store.add_message("user:ada", chat.id, {"role": "assistant", "content": text}, question) for text in ("Hello", "Hey")]
    columns = [{"answer": answer, "label": f"model · {n}", "changes": "as the chat is"} for n, answer in enumerate(answers)]
    store.save_comparison("user:ada", chat.id, question, {"columns": columns, "blind": True})
    with pytest.raises(StoreError, match="no such chat"):  # (another owner can't vote on it)
        store.save_comparison("user:eve", chat.id, question, {"columns": columns, "outcome": "tie"})
    store.save_comparison("user:ada", chat.id, question, {"columns": columns, "blind": True, "outcome": "win", "winner": 1})
    again = Store(db_url)
    stored = next(m for m in again.open_chat("user:ada", chat.id).all_messages if m["id"] == question)
    assert stored["comparison"]["winner"] == 1 and stored["comparison"]["columns"][1]["answer"] == answers[1]
    eve = again.new_chat("user:eve")
    eves = again.add_message("user:eve", eve, {"role": "user", "content": "Yo", "comparison": {"columns": columns, "outcome": "tie"}}, None)
    assert [vote.get("outcome") for vote in again.votes("user:ada")] == ["win"]
    assert sorted(vote.get("outcome") for vote in again.votes(None)) == ["tie", "win"] and eves
