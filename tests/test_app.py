"""The web app through its API, with gradio_client against a launched server (tiny model)."""

from __future__ import annotations

import subprocess
import sys
import time

import gradio as gr
import pytest
from gradio_client import Client

from chat.settings import GenerationSettings
from tests.app_server import free_port, running_app
from tests.conftest import make_engine


def texts(chat):
    """Chatbot messages → [(role, text)] (Gradio 6 sends content as a list of parts)."""
    return [(m["role"], "".join(p.get("text", "") for p in m["content"])) for m in chat]


@pytest.fixture(scope="module")
def app(tiny_chat_dir):
    # As app.py runs it: up to 4 answers at once, sharing each model step. End-of-sequence off: a
    # sampled answer of the random model meets it now and then (1 run in ~15 here), and then it is
    # too short to show streaming and its status says "stop: eos".
    engine = make_engine(tiny_chat_dir, batching=True)
    engine.eos_ids = frozenset({10**6})
    with running_app(engine, GenerationSettings(max_new_tokens=24, temperature=1.0)) as (demo, url):
        yield url


def test_send_streams_the_answer_in_pieces(app):
    client = Client(app, verbose=False)
    job = client.submit("Hello there", api_name="/send")
    job.result(timeout=60)
    updates = [texts(out[0]) for out in job.outputs()]
    answers = [chat[-1][1] for chat in updates if chat and chat[-1][0] == "assistant"]
    assert len(set(answers)) >= 3, "the answer should arrive in several growing pieces"
    # grows (not always a strict prefix: a closing ` can change how earlier text is shown)
    assert all(len(later) >= len(earlier) for earlier, later in zip(answers, answers[1:]))
    final_chat, _, status, prompt, _ = job.outputs()[-1]
    assert texts(final_chat)[0] == ("user", "Hello there")
    assert "tokens/s" in status and "stop: max tokens" in status
    assert prompt.endswith("<|im_start|>assistant\n") and "Hello there" in prompt


def test_retry_gives_a_new_answer_to_the_same_message(app):
    client = Client(app, verbose=False)
    first = texts(client.predict("Tell me a story", api_name="/send")[0])
    second = texts(client.predict(api_name="/retry")[0])
    assert [m for m in second if m[0] == "user"] == [("user", "Tell me a story")]
    assert len(second) == 2 and second[1][1] != first[1][1]


def test_undo_returns_the_typed_text_and_clear_empties(app):
    client = Client(app, verbose=False)
    client.predict("first", api_name="/send")
    client.predict("second", api_name="/send")
    chat, message_box, *_ = client.predict(api_name="/undo")
    assert message_box == "second" and [t for r, t in texts(chat) if r == "user"] == ["first"]
    chat, message_box, *_ = client.predict(api_name="/clear")
    assert chat == [] and message_box == gr.skip()  # the box is the user's: Clear leaves it as it is


def test_skill_is_shown_tagged_and_expanded_in_the_prompt(app):
    client = Client(app, verbose=False)
    chat, _, _, prompt, _ = client.predict("Der Hund bellt.", "🇬🇧 Translate to English", api_name="/send")
    assert texts(chat)[0] == ("user", "🇬🇧 Translate to English: Der Hund bellt.")
    assert "Translate" in prompt and "```\nDer Hund bellt.\n```" in prompt


def test_two_clients_never_see_each_others_text(app):
    alice, bob = Client(app, verbose=False), Client(app, verbose=False)
    jobs = [alice.submit("alice-secret", api_name="/send"), bob.submit("bob-secret", api_name="/send")]
    chats = [texts(job.result(timeout=60)[0]) for job in jobs]
    assert "bob-secret" not in str(chats[0]) and "alice-secret" in str(chats[0])
    assert "alice-secret" not in str(chats[1]) and "bob-secret" in str(chats[1])


def test_out_of_range_settings_are_refused_clearly_and_the_app_keeps_serving(app):
    client = Client(app, verbose=False)
    with pytest.raises(Exception, match="less than minimum"):
        client.predict("never sent", temperature=-1, api_name="/send")
    chat, *_ = client.predict("still works", api_name="/send")
    assert texts(chat)[0] == ("user", "still works") and "never sent" not in str(chat)


def test_auth_protects_page_and_api(tiny_engine):
    with running_app(tiny_engine, GenerationSettings(max_new_tokens=4), auth=[("ada", "lovelace")]) as (demo, url):
        with pytest.raises(Exception):
            Client(url, verbose=False).predict("hi", api_name="/send")
        chat, *_ = Client(url, auth=("ada", "lovelace"), verbose=False).predict("hi", api_name="/send")
        assert texts(chat)[0] == ("user", "hi")


def test_app_py_starts_prints_its_url_and_warns_about_share_without_auth(tiny_chat_dir, tmp_path):
    """The real entry point: flags, the local URL line, the --share warning (no internet here)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "app.py", "--model", str(tiny_chat_dir), "--port", str(port), "--share", "--max-new-tokens", "8"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    try:
        lines = _read_until(process, "Public link", "Could not create a public link", timeout=120)
        output = "\n".join(lines)
        assert f"http://127.0.0.1:{port}/" in output
        assert "(up to 4 answers at once)" in output  # batching on: answers share each step
        assert "anyone with the link can use this model" in output
        chat, *_ = Client(f"http://127.0.0.1:{port}/", verbose=False).predict("hi", api_name="/send")
        assert texts(chat)[0] == ("user", "hi")
    finally:
        process.terminate()
        process.wait(timeout=30)


def _read_until(process, *markers, timeout):
    lines, deadline = [], time.monotonic() + timeout
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip())
        if any(marker in line for marker in markers):
            return lines
    raise AssertionError("app.py did not come up:\n" + "\n".join(lines))


def test_a_second_user_waits_with_a_position_and_past_the_queue_size_is_told_busy(chatty_engine):
    settings = GenerationSettings(max_new_tokens=3000)
    with running_app(chatty_engine, settings, concurrency=1, queue_size=1) as (demo, url):
        first, second, third = (Client(url, verbose=False) for _ in range(3))
        running = first.submit("long answer", api_name="/send")
        _wait_for(lambda: running.status().code.name in ("PROCESSING", "ITERATING"))
        waiting = second.submit("wait for me", api_name="/send")
        _wait_for(lambda: waiting.status().code.name == "IN_QUEUE")
        assert waiting.status().rank == 0  # first in line: the UI shows the queue position
        with pytest.raises(Exception, match="Queue is full! Please try again"):
            third.submit("one too many", api_name="/send").result(timeout=30)
        running.cancel()  # the first user leaves; the waiting one is served next
        second_chat = texts(waiting.result(timeout=120)[0])
        assert second_chat[0] == ("user", "wait for me")


def _wait_for(condition, timeout=30):
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_answers_at_once_default_to_4_only_where_they_share_the_work(tiny_chat_dir):
    """4 when answers share each step (batching) or a server batches them; 1 when they would only
    compete for the processor and each get slower (--no-batching)."""
    from app import default_concurrency
    from chat.remote.engine import RemoteEngine

    assert default_concurrency(make_engine(tiny_chat_dir, batching=True)) == 4
    assert default_concurrency(make_engine(tiny_chat_dir, batching=False)) == 1
    assert default_concurrency(RemoteEngine.__new__(RemoteEngine)) == 4
