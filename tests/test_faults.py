"""Faults: a model that fails mid-answer or runs out of memory, clients that hang up, and buttons
pressed while an answer streams. The app on a tiny model, driven by gradio_client, raw HTTP and
Chromium; each test checks what the user sees, that no worker is left running, and that the chat
is still consistent and usable.

Covered elsewhere, not repeated here: a model failing from its first step, at the handler
(test_ui_handlers.py); Stop in the page halting the model (test_browser.py); the /v1 API stopping
when its stream is closed or its client gives up (test_api.py, within 5 s; here: within 1 s).
"""

from __future__ import annotations

import itertools
import json
import random
import re
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import gradio as gr
import httpx
import pytest
import torch

from chat.engine import StopReason
from chat.settings import GenerationSettings
from chat.web.view import ERROR_PREFIX
from tests.helpers.api_servers import serve_api
from tests.helpers.apps import running_app
from tests.helpers.browser import answers, open_tab, questions, send
from tests.helpers.clients import new_client, raw_send_events, streaming, texts, warnings_of
from tests.helpers.engines import RecordingEngine, finished, make_engine
from tests.helpers.tiny_models import save_tiny_model
from tests.helpers.waiting import wait_for
from tests.helpers.workers import generation_workers

pytestmark = pytest.mark.usefixtures("no_worker_left")
SETTINGS = GenerationSettings(max_new_tokens=24, temperature=1.0, seed=7)
LONG = 4096  # max new tokens for answers that must still be running when a button is pressed
STOPS_WITHIN_S = 1.0  # a worker must end this soon after its client goes away or Stop is pressed
WORKERS_END_WITHIN_S = 5.0  # after each test, for `no_worker_left`: every test leaves no generation running
FAIL_AT = 12  # the model call that fails: the prompt, then 10 answer tokens, then this one
FAULTS = {
    "an exception": (RuntimeError("simulated device failure"), "generation failed: RuntimeError: simulated device failure"),
    "out of memory": (torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 20.00 GiB"),
                      "out of memory while generating: try a shorter conversation, fewer new tokens, or --quantize 4bit"),
}


@pytest.fixture(scope="module", params=[True, False], ids=["batched", "alone"])
def engine(tmp_path_factory, request):
    """The tiny model with end-of-sequence off (answers run to their limit), remembering each generation;
    answers sharing each step (the app's default) and each running its own `generate`. Its context holds
    8,192 tokens: a `LONG` answer runs for seconds, so a test sees it streaming before it can end (in a
    512-token context it got the ~400 tokens left, and a fast machine finished them between two looks)."""
    model = save_tiny_model(tmp_path_factory.mktemp("tiny-faults"), context=8192)
    return RecordingEngine(make_engine(model, batching=request.param, endless=True))


@pytest.fixture(scope="module", params=[True, False], ids=["batched", "alone"])
def long_engine(tmp_path_factory, request):
    """As `engine`, with an 8,192-token context: a 4,096-token answer really runs for seconds. (In the shared
    512-token model an answer gets the ~400 tokens left, about a second batched: it could end on its own
    between the test seeing it run and the page's Stop arriving.)"""
    model = save_tiny_model(tmp_path_factory.mktemp("tiny-long"), context=8192)
    return RecordingEngine(make_engine(model, batching=request.param, endless=True))


@pytest.fixture(scope="module")
def app(engine):
    with running_app(engine, SETTINGS, concurrency=4) as (demo, url):
        yield url


@pytest.fixture(scope="module")
def api(engine):
    with serve_api(engine, defaults=SETTINGS) as server:
        yield server.url + "/v1/chat/completions"


def fail_once_at(monkeypatch, model, call: int, error: BaseException) -> None:
    """The model's `call`-th forward pass from now raises `error`; every other pass works."""
    original, calls = model.forward, itertools.count(1)

    def forward(*args, **kwargs):
        if next(calls) == call:
            raise error
        return original(*args, **kwargs)

    monkeypatch.setattr(model, "forward", forward)


def roles(chat) -> list[str]:
    return [role for role, _ in texts(chat)]


def user_turns(prompt: str) -> int:
    return prompt.count("<|im_start|>user\n")


# -- the model fails ---------------------------------------------------------------------------


@pytest.mark.parametrize("fault", FAULTS)
def test_a_failure_mid_answer_shows_in_the_chat_keeps_the_message_and_retry_works(app, engine, monkeypatch, fault):
    error, words = FAULTS[fault]
    fail_once_at(monkeypatch, engine.model, FAIL_AT, error)
    client = new_client(app)
    job = client.submit("Tell me about the sea", api_name="/send")
    chat, _, status, *_ = job.result(timeout=60)
    streamed = [texts(page[0])[-1][1] for page in job.outputs() if roles(page[0]) == ["user", "assistant"]]
    assert any(text and not text.startswith(ERROR_PREFIX) for text in streamed), "part of the answer streamed first"
    (_, asked), (_, shown) = texts(chat)
    assert asked == "Tell me about the sea"
    assert shown.startswith(ERROR_PREFIX) and words in shown and "press **Retry**" in shown
    assert words in warnings_of(job)
    chat, _, status, prompt, *_ = client.predict(api_name="/retry")
    (_, asked), (_, answer) = texts(chat)
    assert asked == "Tell me about the sea" and answer and not answer.startswith(ERROR_PREFIX)
    assert "stop: max tokens" in status and user_turns(prompt) == 1 and words not in prompt
    chat, *_ = client.predict("and the mountains?", api_name="/send")
    assert roles(chat) == ["user", "assistant", "user", "assistant"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("fault", FAULTS)
def test_a_failure_mid_answer_reaches_an_api_client_as_an_error_and_the_next_request_works(api, engine, monkeypatch, fault, stream):
    error, words = FAULTS[fault]
    fail_once_at(monkeypatch, engine.model, FAIL_AT, error)
    body = {"model": engine.name, "messages": [{"role": "user", "content": "Hello"}], "stream": stream}
    response = httpx.post(api, json=body, timeout=60)
    if stream:
        events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        failure = json.loads(events[-2])["error"]
        deltas = [json.loads(e)["choices"][0]["delta"].get("content") for e in events[:-2]]
        assert any(deltas), "part of the answer streamed first"
    else:
        assert response.status_code == 500
        failure = response.json()["error"]
    assert failure["message"] == words and failure["type"] == "server_error" and failure["code"] == "generation_failed"
    again = httpx.post(api, json={**body, "stream": False}, timeout=60)
    assert again.status_code == 200 and again.json()["choices"][0]["finish_reason"] == "length"


# -- the client goes away ----------------------------------------------------------------------------


def test_a_page_that_hangs_up_mid_answer_stops_its_worker_within_a_second(app, engine):
    events = raw_send_events(app, "Tell me a long story", uuid.uuid4().hex, {"Max new tokens": LONG})
    generating = (event for event in events if event["msg"] == "process_generating")
    for _ in range(3):
        next(generating)
    generation = engine.generations[-1]
    assert generation.running
    events.close()  # the connection closes, as when the tab closes or the network drops
    hung_up = time.monotonic()
    assert wait_for(lambda: not generation.running, STOPS_WITHIN_S), "the model kept generating for nobody"
    assert time.monotonic() - hung_up <= STOPS_WITHIN_S
    assert wait_for(lambda: generation.stats.stop_reason == StopReason.CANCELLED, 2)


def test_an_api_client_that_hangs_up_mid_stream_stops_its_worker_within_a_second(api, engine):
    body = {"model": engine.name, "messages": [{"role": "user", "content": "Hello"}], "stream": True, "max_tokens": LONG}
    with httpx.stream("POST", api, json=body, timeout=60) as response:
        lines = response.iter_lines()
        for _ in range(6):
            next(lines)
        generation = engine.generations[-1]
        assert generation.running
    hung_up = time.monotonic()
    assert wait_for(lambda: finished(generation), STOPS_WITHIN_S), "the model kept generating for nobody"
    assert time.monotonic() - hung_up <= STOPS_WITHIN_S and generation.stats.stop_reason == StopReason.CANCELLED


# -- buttons pressed while an answer streams -----------------------------------------------------------


def test_stop_pressed_many_times_at_once_stops_the_answer_and_the_chat_goes_on(app, engine):
    client = new_client(app)
    for _ in range(3):
        client.predict(api_name="/stop")  # nothing to stop yet: harmless
    job = client.submit("Talk for a long time", max_new_tokens=LONG, api_name="/send")
    streaming(job)
    generation = engine.generations[-1]
    with ThreadPoolExecutor(10) as pool:
        list(pool.map(lambda _: client.predict(api_name="/stop"), range(20)))
    assert wait_for(lambda: not generation.running, STOPS_WITHIN_S)
    chat, _, status, *_ = job.result(timeout=30)
    assert roles(chat) == ["user", "assistant"] and "stop: cancelled" in status
    chat, _, status, prompt, *_ = client.predict("Now briefly.", api_name="/send")
    assert roles(chat) == ["user", "assistant", "user", "assistant"] and "stop: max tokens" in status
    assert user_turns(prompt) == 2 and prompt.count("<|im_start|>assistant\n") == 2  # the partial answer stays as said


def test_clear_while_an_answer_streams_empties_the_chat_for_good(app, engine):
    client = new_client(app)
    client.predict("An earlier question", api_name="/send")
    job = client.submit("Talk for a long time", max_new_tokens=LONG, api_name="/send")
    streaming(job)
    generation = engine.generations[-1]
    chat, box, _, prompt, *_ = client.predict(api_name="/clear")
    assert chat == [] and box == gr.skip() and prompt == ""  # the box is the user's: Clear leaves it as it is
    assert wait_for(lambda: not generation.running, STOPS_WITHIN_S)
    assert job.result(timeout=30)[0] == []  # the stopped stream's last page doesn't bring the answer back
    chat, _, _, prompt, *_ = client.predict("A fresh start", api_name="/send")
    assert texts(chat)[0] == ("user", "A fresh start") and roles(chat) == ["user", "assistant"]
    assert user_turns(prompt) == 1 and "earlier" not in prompt


def test_after_clear_during_an_answer_the_status_line_shows_no_stale_figures(app):
    client = new_client(app)
    for _ in range(3):
        job = client.submit("Talk for a long time", max_new_tokens=LONG, api_name="/send")
        streaming(job)
        client.predict(api_name="/clear")
        job.result(timeout=30)
        assert wait_for(lambda: not generation_workers(), STOPS_WITHIN_S)
        _, _, status, _, *_ = client.predict(api_name="/retry")  # "nothing to retry yet", drawn afresh
        assert status == "", f"the emptied chat's status line shows {status!r}"


def test_undo_while_an_answer_streams_gives_the_text_back_and_removes_the_exchange(app, engine):
    client = new_client(app)
    client.predict("Keep this one", api_name="/send")
    job = client.submit("Take this back", max_new_tokens=LONG, api_name="/send")
    streaming(job)
    chat, box, _, _, *_ = client.predict(api_name="/undo")
    assert box == "Take this back" and texts(chat)[0] == ("user", "Keep this one") and roles(chat) == ["user", "assistant"]
    assert wait_for(lambda: not generation_workers(), STOPS_WITHIN_S)
    chat, _, _, prompt, *_ = client.predict("Instead this", api_name="/send")
    assert [text for role, text in texts(chat) if role == "user"] == ["Keep this one", "Instead this"]
    assert user_turns(prompt) == 2 and "Take this back" not in prompt


def test_two_sends_at_once_from_one_tab_keep_question_and_answer_together(app):
    """Send double-clicked, or Enter and Send: both requests run, one after the other, never interleaved."""
    client = new_client(app)
    for _ in range(3):  # the two can interleave only in a short window: try it a few times
        client.predict(api_name="/clear")
        jobs = [client.submit(f"twin {i}", max_new_tokens=4, api_name="/send") for i in range(2)]
        for job in jobs:
            job.result(timeout=60)
        chat, _, _, prompt, *_ = client.predict("after the twins", max_new_tokens=4, api_name="/send")
        assert roles(chat) == ["user", "assistant"] * 3 and user_turns(prompt) == 3


def test_a_storm_of_buttons_leaves_a_consistent_chat_and_no_worker(app, engine):
    """Send, Retry, Stop, Undo and Clear fired at random (seeded) without waiting, as impatient hands do."""
    client, rng, jobs = new_client(app), random.Random(2024), []
    actions = ["send"] * 12 + ["retry"] * 6 + ["stop"] * 8 + ["undo"] * 5 + ["clear"] * 3
    rng.shuffle(actions)
    for number, action in enumerate(actions):
        if action == "send":
            jobs.append(client.submit(f"storm {number}", max_new_tokens=rng.choice([8, 200]), api_name="/send"))
        else:
            jobs.append(client.submit(api_name=f"/{action}"))
        time.sleep(rng.uniform(0, 0.15))
    for job in jobs:
        job.result(timeout=120)  # each request completes: no error, no hang
    assert wait_for(lambda: not generation_workers(), STOPS_WITHIN_S * 2)
    chat, _, status, prompt, *_ = client.predict("final check", api_name="/send")
    shape = " ".join(roles(chat))
    assert re.fullmatch(r"user( assistant)+( user( assistant)+)*", shape), f"not question-then-answers: {shape}"
    asked = [text for role, text in texts(chat) if role == "user"]
    assert asked[-1] == "final check" and re.findall(r"<\|im_start\|>user\n(.*?)<\|im_end\|>", prompt) == asked
    assert "stop:" in status


# -- Retry in the real page while an answer streams, one answer at a time ---------------------------------


@pytest.mark.browser
def test_retry_in_the_page_while_an_answer_streams_replaces_it_at_once(browser, long_engine):
    """With --concurrency 1 the retry queues behind the streaming answer, which holds the one slot:
    the page must stop that answer first, not leave the retry waiting until it has run its course."""
    with running_app(long_engine, GenerationSettings(max_new_tokens=LONG, temperature=1.0), concurrency=1) as (demo, url):
        with open_tab(browser, url) as page:
            send(page, "Tell me a long story")
            page.wait_for_function("() => document.querySelector('[data-testid=\"bot\"]')?.innerText.length > 0", timeout=20_000)
            first = long_engine.generations[-1]
            page.get_by_role("button", name="Retry").click()
            assert wait_for(lambda: long_engine.generations[-1] is not first, 10), "the retry never started"
            retried = long_engine.generations[-1]
            assert wait_for(lambda: finished(first), 2) and first.stats.stop_reason == StopReason.CANCELLED
            assert retried.running, "the retry runs while the first answer would still be going"
            page.get_by_role("button", name="Stop").click()
            assert wait_for(lambda: finished(retried), 5) and retried.stats.stop_reason == StopReason.CANCELLED
            assert questions(page).count() == 1 and answers(page).count() == 1
