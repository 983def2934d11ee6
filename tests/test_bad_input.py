"""Bad input through the page's API (gradio_client), the /v1 API (HTTP) and the real page (Chromium).

Each case gets a clear message, changes nothing it shouldn't, and the app keeps serving.
Covered elsewhere, not repeated here: temperature -1 on the page (test_app.py); the /v1 API's
wrong roles, number or image content, max_tokens 10^9, unknown skill, non-JSON and oversize
bodies (test_api.py BAD_REQUESTS and neighbours); `skills.yaml` fuzzed with hypothesis, every
input one `SkillError` and never a traceback (test_skills.py test_any_text_gives_a_book_or_a_skill_error,
test_any_yaml_data_gives_a_book_or_a_skill_error); bad uploads at the handler (test_ui_handlers.py).
"""

from __future__ import annotations

import json
import re
import uuid

import httpx
import pytest

from chat.markup import NUL_SHOWN_AS
from chat.messages import MAX_MESSAGES
from chat.settings import GenerationSettings
from tests.helpers.api_servers import serve_api
from tests.helpers.apps import running_app
from tests.helpers.browser import open_tab, questions, send, toast_text, upload_conversation, wait_done
from tests.helpers.clients import new_client, raw_send_events, texts, warnings_of
from tests.helpers.engines import RecordingEngine, make_engine

SETTINGS = GenerationSettings(max_new_tokens=8, temperature=1.0)
LONG_MESSAGE = ("All work and no play makes Jack a dull boy. " * 2400)[:100_000]
ODD_TEXTS = {
    "control characters": "bell\x07 escape\x1b[31m red\x7f delete \x0b\x0c end",
    "NUL bytes": "nul\x00in\x00between\x00",
    "right-to-left": "\u202eevil.exe\u202c שלום עולם مرحبا بالعالم",
    "emoji": "😀 👩‍👩‍👧 🇩🇪 🏳️‍🌈 ünïcödé",
}


@pytest.fixture(scope="module")
def engine(tiny_chat_dir):
    return RecordingEngine(make_engine(tiny_chat_dir))


@pytest.fixture(scope="module")
def app(engine):
    with running_app(engine, SETTINGS) as (demo, url):
        yield url


@pytest.fixture(scope="module")
def api(engine):
    with serve_api(engine, defaults=SETTINGS) as server:
        yield server.url + "/v1/chat/completions"


def keeps_serving(client) -> None:
    """The same session still chats: a normal message gets an answer."""
    chat, *_ = client.predict("still there?", api_name="/send")
    shown = texts(chat)
    last_user = max(i for i, (role, _) in enumerate(shown) if role == "user")
    assert shown[last_user][1] == "still there?" and shown[-1][0] == "assistant" and shown[-1][1]


def post(api_url: str, messages, **fields) -> httpx.Response:
    return httpx.post(api_url, json={"model": served_model(api_url), "messages": messages, **fields}, timeout=60)


def served_model(api_url: str) -> str:
    return httpx.get(api_url.replace("chat/completions", "models")).json()["data"][0]["id"]


def api_error(response: httpx.Response) -> str:
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "messages"
    return error["message"]


# -- empty messages and commands with nothing to act on ---------------------------------------


@pytest.mark.parametrize("text", ["", "   ", "\n\t \n", "\u200b\u200e\ufeff \u2060"], ids=["empty", "spaces", "whitespace", "invisible"])
def test_an_empty_or_blank_message_gets_a_warning_and_nothing_is_sent(app, engine, text):
    client = new_client(app)
    started = len(engine.generations)
    job = client.submit(text, api_name="/send")
    chat, box, status, prompt, *_ = job.result(timeout=60)
    assert warnings_of(job) == ["type a message first"]
    assert chat == [] and prompt == "" and status == "" and box == text  # the text stays for editing
    assert len(engine.generations) == started  # the model was not asked
    keeps_serving(client)


@pytest.mark.parametrize("content", ["", "  \n ", "\u200b\u200f"], ids=["empty", "blank", "invisible"])
def test_an_empty_last_message_gets_400_from_the_api(api, content):
    message = api_error(post(api, [{"role": "user", "content": content}]))
    assert "the last message is empty" in message
    assert post(api, [{"role": "user", "content": "Hi"}]).status_code == 200


@pytest.mark.parametrize("how", ["button", "typed"])
def test_retry_in_an_empty_chat_says_there_is_nothing_to_retry(app, how):
    client = new_client(app)
    job = client.submit(api_name="/retry") if how == "button" else client.submit("/retry", api_name="/send")
    chat, *_ = job.result(timeout=60)
    assert chat == [] and warnings_of(job) == ["nothing to retry yet: send a message first"]
    keeps_serving(client)


def test_an_unknown_skill_is_refused_naming_the_known_ones(app):
    client = new_client(app)
    with pytest.raises(Exception, match="not in the list of choices.*Translate to German"):
        client.predict("hi", "🪄 Conjure", api_name="/send")
    keeps_serving(client)


# -- long and odd text ---------------------------------------------------------------------------


def test_a_100000_character_message_is_shown_whole_cut_to_fit_and_answered(app, engine):
    client = new_client(app)
    chat, _, status, prompt, context_line, *_ = client.predict(LONG_MESSAGE, api_name="/send")
    shown = texts(chat)
    assert shown[0] == ("user", LONG_MESSAGE)  # the chat shows all of it
    assert "your message was too long for the model's context and was cut short" in shown[1][1]
    assert shown[-1][0] == "assistant" and shown[-1][1] and "stop:" in status
    assert "[… message trimmed to fit the model's context]<|im_end|>" in prompt
    used, room, window = map(int, re.search(r"(\d+) prompt tokens \+ up to (\d+) answer tokens of (\d+)", context_line).groups())
    assert used + room <= window == engine.context_window
    keeps_serving(client)


def test_a_100000_character_message_to_the_api_is_cut_with_a_notice_header(api, engine):
    response = post(api, [{"role": "user", "content": LONG_MESSAGE}])
    assert response.status_code == 200
    assert "your message was too long" in response.headers["x-context-notice"]
    usage = response.json()["usage"]
    assert usage["total_tokens"] <= engine.context_window and usage["completion_tokens"] > 0


@pytest.mark.parametrize("text", ODD_TEXTS.values(), ids=ODD_TEXTS.keys())
def test_odd_characters_reach_the_model_and_the_chat_exactly_as_typed(app, text):
    client = new_client(app)
    chat, _, status, prompt, *_ = client.predict(text, api_name="/send")
    shown = text.replace("\x00", NUL_SHOWN_AS)  # (a browser drops NUL: the chat shows ␀, as after a reload)
    assert texts(chat)[0] == ("user", shown) and texts(chat)[1][0] == "assistant" and "stop:" in status
    assert prompt.endswith(f"<|im_start|>user\n{text}<|im_end|>\n<|im_start|>assistant\n")  # the model gets it exactly


@pytest.mark.parametrize("text", ODD_TEXTS.values(), ids=ODD_TEXTS.keys())
def test_odd_characters_reach_the_model_exactly_through_the_api(api, engine, text):
    response = post(api, [{"role": "user", "content": text}])
    assert response.status_code == 200 and response.json()["choices"][0]["message"]["content"] is not None
    assert engine.generations[-1].fitted.messages[-1] == {"role": "user", "content": text}


def test_half_a_character_from_the_browser_becomes_a_replacement_character_and_the_chat_goes_on(app):
    """A browser can send a lone UTF-16 surrogate (an emoji cut in half); the tokenizer can't encode
    one. It used to stay in the history and fail every later turn of that tab with a TypeError."""
    tab = uuid.uuid4().hex
    first = list(raw_send_events(app, "cut \ud83d emoji", tab))[-1]
    second = list(raw_send_events(app, "and on we go", tab))[-1]
    assert first["success"] and second["success"], (first, second)
    users = [texts([m])[0][1] for m in second["output"]["data"][0] if m["role"] == "user"]
    assert users == ["cut \ufffd emoji", "and on we go"]


def test_half_a_character_in_an_api_message_gets_400_naming_the_message(api):
    body = json.dumps({"model": served_model(api), "messages": [{"role": "user", "content": "cut \ud83d"}]})
    response = httpx.post(api, content=body, headers={"content-type": "application/json"})
    assert "message 1: the text holds half a character (\\ud83d" in api_error(response)


# -- malformed history to the API ------------------------------------------------------------------

MALFORMED = [  # beyond test_api.py's: (what, messages, words in the error)
    ("content null", [{"role": "user", "content": None}], "content must be a string, got NoneType"),
    ("content an object", [{"role": "user", "content": {"text": "hi"}}], "content must be a string, got dict"),
    ("content parts not text", [{"role": "user", "content": [{"type": "text", "text": 5}]}], "content parts must be text"),
    ("no role", [{"content": "hi"}], "role must be one of system, user, assistant, got None"),
    ("a message that is a string", ["hi"], "message 1: expected an object with role and content"),
    ("a list inside the list", [[{"role": "user", "content": "hi"}]], "expected an object"),
    ("too many turns", [{"role": ("user", "assistant")[i % 2], "content": "hi"} for i in range(MAX_MESSAGES + 1)],
     f"{MAX_MESSAGES + 1} messages is more than the {MAX_MESSAGES} allowed"),
]


@pytest.mark.parametrize("what, messages, words", MALFORMED, ids=[case[0] for case in MALFORMED])
def test_a_malformed_history_gets_400_saying_what_is_wrong(api, what, messages, words):
    assert words in api_error(post(api, messages))
    assert post(api, [{"role": "user", "content": "Hi"}]).status_code == 200


def test_hundreds_of_turns_are_answered_with_the_oldest_left_out(api, engine):
    history = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i}"} for i in range(201)]
    response = post(api, history)
    assert response.status_code == 200
    assert "oldest messages were left out" in response.headers["x-context-notice"]
    sent = engine.generations[-1].fitted.messages
    assert sent[-1] == {"role": "user", "content": "turn 200"} and len(sent) < len(history)


def test_fitting_a_long_history_renders_it_a_bounded_number_of_times(tiny_chat_dir):
    engine = make_engine(tiny_chat_dir)
    tokenizer, rendered = engine.tokenizer, []
    render = tokenizer.apply_chat_template

    def counting(messages, *args, **kwargs):
        rendered.append(len(messages))
        return render(messages, *args, **kwargs)

    tokenizer.apply_chat_template = counting
    history = [{"role": ("user", "assistant")[i % 2], "content": f"turn {i}"} for i in range(121)]
    fitted = engine.prepare(history, SETTINGS)
    assert fitted.dropped_messages > 60
    assert sum(rendered) <= 20 * len(history), f"rendered {sum(rendered)} messages to fit {len(history)}"


# -- settings out of range ---------------------------------------------------------------------------


@pytest.mark.parametrize("setting, value, words", [
    ("max_new_tokens", 10**9, "greater than maximum value 4096"),
    ("top_p", 2, "greater than maximum value 1"),
    ("top_k", -5, "less than minimum value 0"),
])
def test_out_of_range_settings_on_the_page_are_refused_and_nothing_is_sent(app, setting, value, words):
    client = new_client(app)
    with pytest.raises(Exception, match=words):
        client.predict("never sent", api_name="/send", **{setting: value})
    keeps_serving(client)


@pytest.mark.parametrize("field, value, words", [
    ("temperature", -1, "temperature must be between 0 and 5, got -1"),
    ("top_p", 2, "top_p must be between 0 and 1, got 2"),
])
def test_out_of_range_settings_to_the_api_get_400_naming_the_field(api, field, value, words):
    response = post(api, [{"role": "user", "content": "Hi"}], **{field: value})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["param"] == field and words in error["message"]


# -- uploaded conversation files, through the real page ---------------------------------------------

BAD_FILES = {  # file name: (content, words in the warning)
    "not-json.json": ("this is not JSON {", "not-json.json: not JSON (line 1"),
    "not-messages.json": (json.dumps({"chat": ["hi", "there"]}), "not-messages.json: expected a list of messages"),
    "wrong-role.json": (json.dumps([{"role": "wizard", "content": "hi"}]), "wrong-role.json, message 1: role must be one of"),
    "number.json": (json.dumps([{"role": "user", "content": 42}]), "number.json, message 1: content must be a string"),
    "half-character.json": ('[{"role": "user", "content": "cut \\ud83d"}]', "half-character.json, message 1: the text holds half a character"),
    "latin-1.json": ('[{"role": "user", "content": "caf\u00e9"}]', "latin-1.json: can't read the file"),
}


@pytest.mark.browser
def test_a_bad_conversation_file_shows_a_warning_and_the_chat_stays(browser, app, tmp_path):
    with open_tab(browser, app) as page:
        send(page, "keep me")
        wait_done(page)
        for name, (content, words) in BAD_FILES.items():
            path = tmp_path / name
            path.write_bytes(content.encode("latin-1" if name == "latin-1.json" else "utf-8"))
            upload_conversation(page, path)
            assert words in toast_text(page, words), name
            assert questions(page).count() == 1 and questions(page).first.inner_text().strip() == "keep me", name
        send(page, "and more")  # the tab keeps working
        wait_done(page)
        page.wait_for_function("() => document.querySelectorAll('[data-testid=\"user\"]').length === 2", timeout=20_000)
