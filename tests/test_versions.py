"""Every version kept (real tiny models): Retry and edits add versions, switching shows a branch as it
was, Continue extends the same answer, Reproduce remakes an answer from its provenance, files hold
the whole tree, and all of it survives the store."""

from __future__ import annotations

import json
import threading

import pytest

from chat.files import load_conversation, plain_messages, save_conversation
from chat.errors import ChatError
from chat.files import FORMAT_VERSION, conversation_document, markdown
from chat.session import ChatSession
from chat.settings import GenerationSettings
from chat.skills_file import load_skills
from chat.store.record import ChatRecord, settings_of, tree_of
from chat.store.store import Store
from tests.helpers.engines import make_engine
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy

SAMPLED = GenerationSettings(temperature=1.0, max_new_tokens=12)  # no seed: a random one is drawn per answer
GREEDY = greedy(12)


def new_session(engine, settings: GenerationSettings = SAMPLED) -> ChatSession:
    return seeded_session(engine, load_skills(), "Be brief.", settings)


def versions(session: ChatSession) -> list[tuple[int, int, int]]:
    return session.tree.versions(session.history)


def say(session: ChatSession, text: str) -> str:
    return "".join(session.send(text))


def shown(session: ChatSession) -> list[str]:
    return [m["content"] for m in session.history]


def test_retry_keeps_every_answer_as_a_version_and_switching_shows_each(tiny_engine):
    session = new_session(tiny_engine)
    say(session, "Hello")
    first = session.history[-1]["content"]
    answers = [first] + ["".join(session.retry()) for _ in range(2)]
    assert versions(session) == [(1, 3, 3)]
    session.switch(1, -1)
    session.switch(1, -1)
    assert session.history[-1]["content"] == answers[0] and versions(session) == [(1, 1, 3)]
    session.switch(1, -1)  # no version before the first: it stays
    assert versions(session) == [(1, 1, 3)]
    session.switch(1, +2)
    assert session.history[-1]["content"] == answers[2] and versions(session) == [(1, 3, 3)]


def test_an_edit_is_a_new_branch_and_the_old_one_comes_back_whole(tiny_engine):
    session = new_session(tiny_engine)
    for text in ("First question", "Second question", "Third question"):
        say(session, text)
    old_branch = shown(session)
    session.edit(0, "First question, better worded")
    assert "".join(session.answer_last())
    assert [m.get("typed") for m in session.history if m["role"] == "user"] == ["First question, better worded"]
    assert versions(session) == [(0, 2, 2)]
    session.switch(0, -1)
    assert shown(session) == old_branch  # with its whole follow-up
    session.switch(0, +1)
    assert session.history[0]["typed"] == "First question, better worded" and len(session.history) == 2


def test_a_branch_comes_back_as_it_was_last_shown(tiny_engine):
    session = new_session(tiny_engine)
    say(session, "One")
    say(session, "Two")
    "".join(session.retry())
    session.switch(3, -1)  # the first answer to "Two"
    chosen = shown(session)
    session.edit(0, "One, edited")
    "".join(session.answer_last())
    session.switch(0, -1)
    assert shown(session) == chosen


def test_an_edit_keeps_the_skill_of_the_message_it_replaces(tiny_engine):
    session = new_session(tiny_engine)
    translate = "🔄 Translate to German"
    "".join(session.send("Good morning", translate))
    session.edit(0, "Good evening")
    assert session.history[0]["skill"] == translate and "Good evening" in session.history[0]["content"]
    with pytest.raises(ChatError, match="only your own messages"):
        session.edit(1, "x")


@pytest.mark.parametrize("base", [False, True], ids=["chat template", "transcript"])
def test_continue_extends_the_same_answer_where_the_token_limit_cut_it(tiny_engine, tiny_base_engine, base):
    engine = tiny_base_engine if base else tiny_engine
    session = new_session(engine, GREEDY.replace(max_new_tokens=6))
    say(session, "Tell me a long story")
    cut = session.history[-1]["content"]
    if session.last_stats.stop_reason != "max tokens":
        pytest.skip("the tiny model ended its answer before the limit")  # (it never does with this prompt)
    more = "".join(session.continue_answer())
    answer = session.history[-1]
    assert len(session.history) == 2 and answer["content"] == cut + more and more
    assert len(answer["provenance"].parts) == 2
    prompt = session.last_prompt.prompt.text
    assert prompt.endswith(cut) or prompt.rstrip().endswith(cut.rstrip())  # the prompt ends inside the answer
    assert session.last_stats.cached_tokens > 0  # the cache held the answer so far


def test_continue_goes_on_after_stop_and_the_answer_is_no_longer_marked_stopped(chatty_engine):
    session = new_session(chatty_engine, GREEDY.replace(max_new_tokens=200))
    deltas = iter(session.send("Hello"))
    next(deltas)
    session.stop()
    "".join(deltas)
    assert session.history[-1].get("interrupted")
    before = session.history[-1]["content"]
    continuing = session.continue_answer()
    assert "interrupted" not in session.history[-1]
    continuing.stream().close()  # stopped again at once: what came is kept
    assert session.history[-1]["content"].startswith(before)


def test_nothing_to_continue_is_a_clear_refusal(tiny_engine):
    session = new_session(tiny_engine)
    with pytest.raises(ChatError, match="nothing to continue"):
        session.continue_answer()


@pytest.mark.parametrize("settings", [GREEDY, SAMPLED, SAMPLED.replace(seed=1234)], ids=["greedy", "random seed", "fixed seed"])
def test_reproduce_gives_the_same_text_from_the_recorded_seed_and_settings(tiny_engine, settings):
    session = new_session(tiny_engine, settings)
    original = say(session, "Hello there")
    recorded = session.history[-1]["provenance"].parts[0]
    assert recorded.seed == (None if settings.greedy else recorded.settings["seed"])
    assert recorded.seed_drawn == (settings.seed is None and not settings.greedy)
    session.settings = session.settings.replace(temperature=1.7, max_new_tokens=3)  # changed since: not used
    session.instructions = "Other instructions."
    again = "".join(session.reproduce())
    assert again == original
    assert versions(session) == [(1, 2, 2)]
    assert session.history[-1]["provenance"].reproduces == session.tree.messages[session.tree.siblings(session.history[-1]["id"])[0]]["id"]


def test_reproduce_is_the_same_batched_with_other_answers_and_alone(tiny_chat_dir):
    alone, batched = make_engine(tiny_chat_dir), make_engine(tiny_chat_dir, batching=True)
    session = new_session(batched)
    others = [new_session(batched) for _ in range(2)]
    texts: dict[int, str] = {}

    def chat(number: int, session: ChatSession) -> None:
        texts[number] = say(session, f"Hello number {number}" if number else "Hello there")

    threads = [threading.Thread(target=chat, args=(n, s)) for n, s in enumerate([session, *others])]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert batched.batcher.largest_batch >= 2
    session.engine = alone  # the same model, answering alone
    assert "".join(session.reproduce()) == texts[0]


def test_reproduce_of_a_continued_answer_runs_each_part_with_its_seed(tiny_engine):
    session = new_session(tiny_engine, SAMPLED.replace(max_new_tokens=5))
    say(session, "Tell me a long story")
    "".join(session.continue_answer())
    whole = session.history[-1]["content"]
    assert "".join(session.reproduce()) == whole
    assert len(session.history[-1]["provenance"].parts) == 2


def test_the_file_holds_every_version_and_loads_back_the_same_tree(tiny_engine, tmp_path):
    session = new_session(tiny_engine)
    say(session, "One")
    "".join(session.retry())
    say(session, "Two")
    session.edit(2, "Two, edited")
    "".join(session.answer_last())
    path = save_conversation(tmp_path / "chat.json", conversation_document(session))
    data = json.loads(path.read_text(encoding="utf-8"))
    assert data["version"] == FORMAT_VERSION and len(data["messages"]) == 7
    assert all("provenance" in m for m in data["messages"] if m["role"] == "assistant")
    restored = new_session(tiny_engine)
    restored.load_messages(load_conversation(path), path.name)
    assert plain_messages(restored) == plain_messages(session) and versions(restored) == versions(session)
    restored.switch(2, -1)
    session.switch(2, -1)
    assert shown(restored) == shown(session)
    restored.switch(1, -1)
    session.switch(1, -1)
    assert shown(restored) == shown(session)


def test_a_newer_file_is_refused_and_an_old_messages_list_still_loads(tiny_engine, tmp_path):
    newer = tmp_path / "newer.json"
    newer.write_text(json.dumps({"format": "chat-workbench conversation", "version": 99, "messages": []}), encoding="utf-8")
    with pytest.raises(ChatError, match="newer.json: written by a newer release"):
        load_conversation(newer)
    old = save_conversation(tmp_path / "old.json", [{"role": "system", "content": "Hi."}, {"role": "user", "content": "Q"},
                                                    {"role": "assistant", "content": "A"}])
    session = new_session(tiny_engine)
    session.load_messages(load_conversation(old), old.name)
    assert session.instructions == "Hi." and shown(session) == ["Q", "A"] and versions(session) == []


def test_the_markdown_export_is_the_shown_path_with_how_each_answer_was_made(tiny_engine):
    session = new_session(tiny_engine, SAMPLED.replace(seed=42))
    say(session, "Hello")
    "".join(session.retry())
    text = markdown(session, session.engine.name, session.skills.default.name, "My homework")
    assert text.startswith("# My homework") and "## You" in text and "## Assistant (version 2 of 2)" in text
    assert session.history[-1]["content"] in text and "seed 42" in text


def test_versions_survive_the_store_with_the_branch_last_shown(tiny_engine, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}")
    session = new_session(tiny_engine)
    session.record = ChatRecord.new(store, "alice", session.instructions, session.settings)
    say(session, "One")
    "".join(session.retry())
    say(session, "Two")
    session.switch(1, -1)  # back to the first answer to "One" (its branch: nothing after it)
    expected = shown(session)
    chat = store.open_chat("alice", session.record.chat_id)
    again = new_session(tiny_engine)
    again.open(ChatRecord(store, "alice", chat.id), *tree_of(chat), chat.instructions, settings_of(chat, SAMPLED))
    assert shown(again) == expected and versions(again) == [(1, 1, 2)]
    again.switch(1, +1)  # the second answer, with "Two" after it as it was
    assert [m.get("typed") for m in again.history if m["role"] == "user"] == ["One", "Two"]
    assert again.history[1]["provenance"].parts[0].settings["seed"] is not None
