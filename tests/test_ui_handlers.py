"""The page's handlers on a real session (tiny model): files, errors and notices as shown."""

from __future__ import annotations

import json
import threading

import gradio as gr
import pytest

from chat.instructions import default_instructions
from chat.session import ChatSession
from chat.settings import GenerationSettings
from chat.skills_file import DEFAULT_SKILLS_PATH, load_skills
from chat.web import handlers as handlers
from chat.web.panels.file import download, upload
from chat.web.tabs import Tab
from chat.web.view import ERROR_PREFIX, NOTICE_PREFIX, STOPPED_NOTE, UNANSWERED_NOTE
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy


@pytest.fixture
def tab(tiny_engine):
    return Tab(seeded_session(tiny_engine, load_skills(DEFAULT_SKILLS_PATH), default_instructions(tiny_engine.format),
                              GenerationSettings(max_new_tokens=8)))


@pytest.fixture
def session(tab):
    return tab.session


def last_page(generator):
    pages = list(generator)
    return pages[-1]


def shown(page):
    return [(m["role"], m["content"]) for m in page["chat"]]


def message_box(page):
    """What the page writes into the message box; None: the box is left as the user has it."""
    return page.get("message")


def test_download_then_upload_restores_the_conversation_in_a_new_tab(tab, session, tiny_engine):
    last_page(handlers.send(tab, "Der Hund bellt.", "🇬🇧 Translate to English", "Be brief."))
    path, markdown_path = download(tab)
    saved = json.loads(open(path, encoding="utf-8").read())
    assert saved["instructions"] == "Be brief."
    assert saved["messages"][0]["typed"] == "Der Hund bellt." and saved["messages"][0]["skill"] == "🇬🇧 Translate to English"
    assert "Der Hund bellt." in open(markdown_path, encoding="utf-8").read()
    other_tab = seeded_session(tiny_engine, session.skills, "other", GenerationSettings(max_new_tokens=8))
    page = upload(Tab(other_tab), path)
    assert page["instructions"] == "Be brief."
    assert shown(page)[0] == ("user", "🇬🇧 Translate to English: Der Hund bellt.")
    assert other_tab.model_messages() == session.model_messages()


@pytest.mark.parametrize("content", ["not json {", '{"messages": 3}', '[{"role": "wizard", "content": "hi"}]'])
def test_a_bad_upload_warns_and_keeps_the_chat(tab, session, tmp_path, content):
    last_page(handlers.send(tab, "keep me", None, None))
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.warns(UserWarning):
        page = upload(tab, str(bad))
    assert shown(page)[0] == ("user", "keep me")


def test_a_failing_model_shows_the_error_in_the_chat_keeps_the_message_and_retry_works(tab, session, monkeypatch):
    model = session.engine.model
    original = model.forward

    def broken(*args, **kwargs):
        raise RuntimeError("simulated device failure")

    monkeypatch.setattr(model, "forward", broken)
    with pytest.warns(UserWarning):
        page = last_page(handlers.send(tab, "hello", None, None))
    assert shown(page)[0] == ("user", "hello")
    assert shown(page)[1][1].startswith(ERROR_PREFIX) and "simulated device failure" in shown(page)[1][1]
    monkeypatch.setattr(model, "forward", original)
    page = last_page(handlers.retry(tab))
    assert len(shown(page)) == 2 and not shown(page)[1][1].startswith(ERROR_PREFIX)


def test_left_out_history_is_one_notice_kept_where_what_the_model_sees_begins(tab, session):
    session.engine.context_window, old = 400, session.engine.context_window
    placements = []
    try:
        for turn in range(12):
            page = last_page(handlers.send(tab, f"message number {turn} " + "words " * 5, None, None))
            notices = [i for i, (_, text) in enumerate(shown(page)) if text.startswith(NOTICE_PREFIX)]
            assert not session.last_prompt.message_trimmed
            if notices:
                assert len(notices) == 1  # one notice, however many turns trimmed
                after = shown(page)[notices[0] + 1]
                first_seen = session.last_prompt.messages[1]  # (after the instructions)
                assert after == ("user", first_seen["content"])  # it sits where the model's view begins
                assert "no longer sees the messages above" in shown(page)[notices[0]][1]
                placements.append(notices[0])
    finally:
        session.engine.context_window = old
    assert placements and placements == sorted(placements)  # it moves down as the chat grows, never repeats
    assert len(set(placements)) < len(placements)  # and stays put between trims (hysteresis)


# -- the message box is the user's: taking messages from the page ----------------------------------------


def outbox(*numbered):
    return json.dumps([list(pair) for pair in numbered])


def test_messages_whose_requests_overtake_each_other_are_taken_in_the_order_sent(tab, session):
    # The second Enter's request carries both messages and arrives first; the first arrives late.
    page = handlers.post(tab, outbox((1, "What is the capital of France?"), (2, "And of Germany?")))
    assert page["taken"] == 2 and [text for role, text in shown(page) if role == "user"] == ["What is the capital of France?", "And of Germany?"]
    page = handlers.post(tab, outbox((1, "What is the capital of France?")))
    assert page["taken"] == 2 and [m["role"] for m in session.history] == ["user", "assistant", "user"]  # nothing taken twice
    assert shown(page)[1] == ("assistant", UNANSWERED_NOTE)  # the first was never answered: said so, no empty bubble
    page = last_page(handlers.answer(tab))
    assert [role for role, _ in shown(page)] == ["user", "assistant", "user", "assistant"]
    assert "stop:" in page["status"] and message_box(page) is None  # the last message answered; the box left alone


def test_an_answers_last_page_drawn_after_the_next_message_was_taken_says_an_answer_comes(tab, session):
    """A message sent as the answer before it ends: that answer's stream draws its last page after the new
    message was taken. The page must say the new message's answer is coming, not show the ended answer's
    figures under an unanswered question (the browser waited for "stop:" and found one answer, not two)."""
    ended = session._ended

    def ended_then_next_message_taken(reply):
        ended(reply)
        handlers.post(tab, outbox((1, "And of Germany?")))

    session._ended = ended_then_next_message_taken
    page = last_page(handlers.send(tab, "What is the capital of France?"))
    assert [text for role, text in shown(page) if role == "user"][-1] == "And of Germany?"
    assert "generating" in page["status"] and "stop:" not in page["status"]
    page = last_page(handlers.answer(tab))
    assert [role for role, _ in shown(page)] == ["user", "assistant", "user", "assistant"] and "stop:" in page["status"]


def test_a_refused_message_goes_back_into_the_box_before_what_was_typed_since(tab):
    page = handlers.post(tab, outbox((1, "Hi")), "", "No such skill")
    assert message_box(page) == "Hi" and tab.session.history == [] and page["taken"] == 1
    page = handlers.post(tab, outbox((2, "Hello")), "and more", "No such skill")
    assert message_box(page) == "Hello\nand more"
    page = handlers.post(tab, outbox((3, "   ")), "   ")  # blank: warned about, the box left as it is
    assert message_box(page) is None


def test_undo_puts_the_message_back_before_a_draft_and_leaves_the_box_when_nothing_is_undone(tab):
    assert message_box(handlers.undo(tab, "draft")) is None
    last_page(handlers.send(tab, "Take this back"))
    assert message_box(handlers.undo(tab, "draft")) == "Take this back\ndraft"


def test_uploading_a_chat_without_instructions_leaves_the_instructions_box_alone(tab, tmp_path):
    path = tmp_path / "chat.json"
    path.write_text(json.dumps([{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]), encoding="utf-8")
    page = upload(tab, str(path))
    assert "instructions" not in page and [role for role, _ in shown(page)] == ["user", "assistant"]


@pytest.mark.parametrize("action", ["clear", "undo"])
def test_a_clear_or_undo_is_never_undone_by_the_last_page_of_the_answer_it_stops(chatty_engine, action):
    """The stopped stream draws its last page as soon as the model ends, while Clear (or Undo) is
    still waiting for the model's thread: that page must already show the emptied chat."""
    tab = Tab(seeded_session(chatty_engine, load_skills(DEFAULT_SKILLS_PATH), "", GenerationSettings(max_new_tokens=2000)))
    session = tab.session
    last_page(handlers.send(tab, "Keep this one"))
    stream = handlers.send(tab, "Talk for a long time")
    next(stream), next(stream)  # streaming
    generation, joined = session._current.generation, threading.Event()
    stop_model = generation.close

    def close_slowly():  # the window in which the race happened on a busy machine, made wide
        stop_model()
        if threading.current_thread() is acting:
            joined.wait(1.0)

    generation.close = close_slowly
    acting = threading.Thread(target=getattr(handlers, action), args=(tab,))
    acting.start()
    pages = list(stream)
    joined.set()
    acting.join()
    expected = [] if action == "clear" else [("user", "Keep this one")]
    assert [(role, text) for role, text in shown(pages[-1]) if role == "user"] == expected


@pytest.mark.parametrize("stream_closed_first", [False, True], ids=["stream still reading", "stream closed first"])
def test_stop_draws_where_the_answer_ended_whether_or_not_its_stream_draws_again(chatty_engine, stream_closed_first):
    """The page's Stop also cancels the answer's stream: when the cancel closes it first, its last page is never
    drawn, and the status line said "generating" for good. Stop's own page says where the answer ended."""
    tab = Tab(seeded_session(chatty_engine, load_skills(DEFAULT_SKILLS_PATH), "", greedy(2000)))
    stream = handlers.send(tab, "Talk for a long time")
    next(stream), next(stream)  # streaming
    if stream_closed_first:
        stream.close()
        reading = None
    else:  # as Gradio reads a stream: in a thread of its own
        reading = threading.Thread(target=lambda: list(stream))
        reading.start()
    shown = handlers.stop(tab)
    if reading is not None:
        reading.join()
    assert "stop: cancelled" in shown["status"]
    assert shown["chat"][-1]["content"].endswith(STOPPED_NOTE) and not tab.session.busy
