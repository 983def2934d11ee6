"""A chat session with the shipped skills: send, retry, undo, clear, failures, saving and loading."""

from __future__ import annotations

import json

import pytest

from chat.files import load_conversation, plain_messages, save_conversation
from chat.errors import ChatError, ConversationError, GenerationError, SkillError
from chat.session import ChatSession
from chat.skills_file import DEFAULT_SKILLS_PATH, load_skills
from tests.helpers.engines import make_engine
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy

TRANSLATE = "🔄 Translate to German"
SETTINGS = greedy(6)
pytestmark = pytest.mark.usefixtures("no_worker_left")


@pytest.fixture(scope="module")
def skills():
    return load_skills(DEFAULT_SKILLS_PATH)


@pytest.fixture
def session(tiny_engine, skills):
    return seeded_session(tiny_engine, skills, instructions="Be brief.", settings=SETTINGS)


def answer(reply) -> str:
    return "".join(reply)


def test_send_keeps_typed_text_skill_and_expanded_content(session, skills):
    reply = session.send("Guten Tag", TRANSLATE)
    text = answer(reply)
    expanded = skills.get(TRANSLATE).expand("Guten Tag")
    assert expanded != "Guten Tag"
    assert plain_messages(session)[1:] == [
        {"role": "user", "content": expanded, "typed": "Guten Tag", "skill": TRANSLATE},
        {"role": "assistant", "content": text},
    ]
    assert session.last_prompt.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": expanded},
    ]
    assert reply.generation.settings.temperature == 0.2  # the skill's own setting
    assert session.last_stats is reply.stats and reply.stats.new_tokens > 0
    assert not session.busy


def test_no_skill_means_the_first_one_which_sends_the_text_as_is(session):
    answer(session.send("Just chatting"))
    assert session.history[0]["content"] == "Just chatting"
    assert session.history[0]["skill"] == "💬 Chat"


def test_retry_replaces_the_last_answer_with_the_same_skill(session, skills):
    answer(session.send("Guten Tag", TRANSLATE))
    first = session.history[-1]
    reply = session.retry()
    answer(reply)
    assert len(session.history) == 2 and session.history[-1] is not first
    assert session.history[0]["content"] == skills.get(TRANSLATE).expand("Guten Tag")
    assert reply.generation.settings.temperature == 0.2
    assert session.last_prompt.messages[-1]["content"] == skills.get(TRANSLATE).expand("Guten Tag")


def test_retry_expands_the_typed_text_again(session, skills):
    # A saved conversation whose skill template has changed since: retry uses today's template.
    session.load_messages([
        {"role": "user", "content": "stale expansion", "typed": "Guten Tag", "skill": TRANSLATE},
        {"role": "assistant", "content": "old answer"},
    ])
    answer(session.retry())
    assert session.history[0]["content"] == skills.get(TRANSLATE).expand("Guten Tag")
    assert session.history[1]["content"] != "old answer" and len(session.history) == 2


@pytest.mark.parametrize("typed", ["/retry", "  /retry \n"])
def test_typing_retry_retries(session, typed):
    answer(session.send("Hello there"))
    first = session.history[-1]
    answer(session.send(typed))
    assert [m["role"] for m in session.history] == ["user", "assistant"]
    assert session.history[0]["typed"] == "Hello there" and session.history[-1] is not first


def test_retry_with_an_empty_chat_says_what_to_do(session):
    with pytest.raises(ChatError, match="nothing to retry yet: send a message first"):
        session.retry()


def test_undo_returns_the_typed_text_and_removes_only_the_last_exchange(session):
    answer(session.send("First question"))
    answer(session.send("Hallo Welt", TRANSLATE))
    assert session.undo() == "Hallo Welt"
    assert [m.get("typed") for m in session.history] == ["First question", None]
    assert session.undo() == "First question"
    assert session.history == [] and session.undo() == ""


def test_clear_forgets_everything(session):
    answer(session.send("Hello"))
    session.clear()
    assert (session.history, session.last_prompt, session.last_stats) == ([], None, None)
    assert session.instructions == "Be brief."  # instructions are settings, not conversation


def test_an_empty_message_or_unknown_skill_changes_nothing(session):
    with pytest.raises(ChatError, match="type a message first"):
        session.send("   ")
    with pytest.raises(SkillError, match="unknown skill 'Poetry'; known skills: 💬 Chat"):
        session.send("Hello", "Poetry")
    assert session.history == []


def test_a_message_that_cannot_be_answered_stays_with_the_reason_for_retry(session):
    session.instructions = "Always answer politely. " * 200  # more than the whole context
    with pytest.raises(ChatError, match="shorten them"):
        session.send("Hello")
    assert [m["role"] for m in session.history] == ["user", "assistant"]  # the message stays in the chat …
    assert "shorten them" in session.history[-1]["error"]  # … with why it wasn't answered
    assert session.model_messages() == [{"role": "system", "content": session.instructions}]  # never sent as is
    session.instructions = "Be brief."
    answer(session.retry())
    assert [m["role"] for m in session.history] == ["user", "assistant"] and "error" not in session.history[-1]


def test_preview_shows_the_prompt_without_sending(session, skills):
    fitted = session.preview("Guten Tag", TRANSLATE)
    assert session.history == []
    assert fitted.messages[-1]["content"] == skills.get(TRANSLATE).expand("Guten Tag")
    assert fitted.prompt.text.startswith("<|im_start|>system\nBe brief.<|im_end|>")


@pytest.mark.timeout(60)
def test_a_failed_answer_keeps_the_message_for_retry(monkeypatch, tiny_chat_dir, skills):
    engine = make_engine(tiny_chat_dir)
    session = seeded_session(engine, skills, settings=SETTINGS)

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure")

    monkeypatch.setattr(engine.model, "forward", broken)
    with pytest.raises(GenerationError, match="simulated failure"):
        answer(session.send("Guten Tag", TRANSLATE))
    user, failed = session.history
    assert user["typed"] == "Guten Tag" and "simulated failure" in failed["error"]
    assert session.model_messages() == []  # the failed exchange is not sent again
    assert "error" not in json.dumps(plain_messages(session))
    assert not session.busy and session.last_stats is None

    monkeypatch.undo()
    answer(session.retry())
    assert len(session.history) == 2 and "error" not in session.history[-1]
    assert session.model_messages()[0]["content"] == user["content"]
    assert session.last_stats.new_tokens > 0


def test_stop_keeps_the_partial_answer_and_marks_it_cancelled(chatty_engine, skills):
    session = seeded_session(chatty_engine, skills, settings=SETTINGS.replace(max_new_tokens=300))
    reply = session.send("Tell me a long story")
    stream = iter(reply)
    shown = next(stream) + next(stream)
    stream.close()  # what the UI does on Stop / a closed tab
    assert not reply.generation.running and not session.busy
    assert reply.stats.stop_reason == "cancelled"
    assert session.history[-1]["content"] == shown


def test_sending_while_an_answer_streams_stops_the_old_one(chatty_engine, skills):
    session = seeded_session(chatty_engine, skills, settings=SETTINGS.replace(max_new_tokens=300))
    first = session.send("One")
    stream = iter(first)
    next(stream)
    session.settings = SETTINGS  # a short second answer
    second = session.send("Two")
    assert not first.generation.running
    answer(second)
    stream.close()
    assert [m.get("typed") for m in session.history if m["role"] == "user"] == ["One", "Two"]
    assert session.last_stats is second.stats


def test_saved_conversation_loads_back_the_same(session, tiny_engine, skills, tmp_path):
    answer(session.send("Guten Tag", TRANSLATE))
    answer(session.send("How are you?"))
    path = save_conversation(tmp_path / "chat.json", plain_messages(session))
    saved = json.loads(path.read_text(encoding="utf-8"))
    assert saved[0] == {"role": "system", "content": "Be brief."}
    assert saved[1] == plain_messages(session)[1]  # typed text and skill travel with the message

    restored = seeded_session(tiny_engine, skills, settings=SETTINGS)
    restored.load_messages(load_conversation(path), path.name)
    assert restored.instructions == "Be brief."
    assert plain_messages(restored) == plain_messages(session)
    assert restored.model_messages() == session.model_messages()
    assert plain_messages(restored) == plain_messages(session)
    assert restored.preview("Next").prompt.text == session.preview("Next").prompt.text


@pytest.mark.parametrize(
    "data, problem",
    [
        ("just text", "expected a list of messages"),
        ({"messages": "nope"}, "expected a list of messages"),
        (["hi"], "message 1: expected an object with role and content"),
        ([{"role": "robot", "content": "beep"}], "message 1: role must be one of system, user, assistant"),
        ([{"role": "user"}], "message 1: content must be a string"),
        ([{"role": "user", "content": 42}], "message 1: content must be a string, got int"),
        (
            [{"role": "user", "content": "a"}, {"role": "system", "content": "late"}],
            "message 2: a system message may only come first",
        ),
        ([{"role": "user", "content": [{"image": "x.png"}]}], "message 1: content parts must be text"),
    ],
)
def test_bad_conversation_data_is_refused_and_the_chat_kept(session, data, problem):
    answer(session.send("Keep me"))
    before = [dict(m) for m in session.history]
    with pytest.raises(ConversationError, match=problem):
        session.load_messages(data, "upload.json")
    assert session.history == before


def test_a_broken_file_names_itself(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("[{not json", encoding="utf-8")
    with pytest.raises(ConversationError, match=r"broken.json: not JSON \(line 1"):
        load_conversation(path)
    with pytest.raises(ConversationError, match="missing.json: can't read the file"):
        load_conversation(tmp_path / "missing.json")
