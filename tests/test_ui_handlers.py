"""The page's handlers on a real session (tiny model): files, errors and notices as shown."""

from __future__ import annotations

import json

import pytest

from chat.instructions import default_instructions
from chat.session import ChatSession
from chat.settings import GenerationSettings
from chat.skills import DEFAULT_SKILLS_PATH, load_skills
from chat import ui_handlers as handlers
from chat.ui_view import ERROR_PREFIX, NOTICE_PREFIX


@pytest.fixture
def session(tiny_engine):
    return ChatSession(tiny_engine, load_skills(DEFAULT_SKILLS_PATH), default_instructions(tiny_engine.format),
                       GenerationSettings(max_new_tokens=8))


def last_page(generator):
    pages = list(generator)
    return pages[-1]


def shown(page):
    return [(m["role"], m["content"]) for m in page[0]]


def test_download_then_upload_restores_the_conversation_in_a_new_tab(session, tiny_engine):
    last_page(handlers.send(session, "Der Hund bellt.", "🇬🇧 Translate to English", "Be brief."))
    path = handlers.download(session)
    saved = json.loads(open(path, encoding="utf-8").read())
    assert saved[0] == {"role": "system", "content": "Be brief."}
    assert saved[1]["typed"] == "Der Hund bellt." and saved[1]["skill"] == "🇬🇧 Translate to English"
    other_tab = ChatSession(tiny_engine, session.skills, "other", GenerationSettings(max_new_tokens=8))
    *page, instructions = handlers.upload(other_tab, path)
    assert instructions == "Be brief."
    assert shown(page)[0] == ("user", "🇬🇧 Translate to English: Der Hund bellt.")
    assert other_tab.model_messages() == session.model_messages()


@pytest.mark.parametrize("content", ["not json {", '{"messages": 3}', '[{"role": "wizard", "content": "hi"}]'])
def test_a_bad_upload_warns_and_keeps_the_chat(session, tmp_path, content):
    last_page(handlers.send(session, "keep me", None, None))
    bad = tmp_path / "bad.json"
    bad.write_text(content)
    with pytest.warns(UserWarning):
        *page, _ = handlers.upload(session, str(bad))
    assert shown(page)[0] == ("user", "keep me")


def test_a_failing_model_shows_the_error_in_the_chat_keeps_the_message_and_retry_works(session, monkeypatch):
    model = session.engine.model
    original = model.forward

    def broken(*args, **kwargs):
        raise RuntimeError("simulated device failure")

    monkeypatch.setattr(model, "forward", broken)
    with pytest.warns(UserWarning):
        page = last_page(handlers.send(session, "hello", None, None))
    assert shown(page)[0] == ("user", "hello")
    assert shown(page)[1][1].startswith(ERROR_PREFIX) and "simulated device failure" in shown(page)[1][1]
    monkeypatch.setattr(model, "forward", original)
    page = last_page(handlers.retry(session))
    assert len(shown(page)) == 2 and not shown(page)[1][1].startswith(ERROR_PREFIX)


def test_dropped_history_is_announced_in_the_chat(session):
    session.engine.context_window, old = 220, session.engine.context_window
    try:
        for turn in range(6):
            page = last_page(handlers.send(session, f"message number {turn} " + "words " * 15, None, None))
    finally:
        session.engine.context_window = old
    assert any(text.startswith(NOTICE_PREFIX) and "left out" in text for _, text in shown(page))
