"""The web app through its API, with gradio_client against a launched server (tiny model)."""

from __future__ import annotations

import gradio as gr
import pytest
from gradio_client.exceptions import AuthenticationError

from chat.settings import GenerationSettings
from tests.helpers.apps import AppProcess, running_app
from tests.helpers.clients import new_client, texts
from tests.helpers.engines import make_engine
from tests.helpers.waiting import wait_for


@pytest.fixture(scope="module")
def app(tiny_chat_dir):
    # As app.py runs it: up to 4 answers at once, sharing each model step. End-of-sequence off: a
    # sampled answer of the random model meets it now and then (1 run in ~15 here), and then it is
    # too short to show streaming and its status says "stop: eos".
    engine = make_engine(tiny_chat_dir, batching=True, endless=True)
    with running_app(engine, GenerationSettings(max_new_tokens=24, temperature=1.0)) as (demo, url):
        yield url


def test_send_streams_the_answer_in_pieces(app):
    client = new_client(app)
    job = client.submit("Hello there", api_name="/send")
    job.result(timeout=60)
    updates = [texts(out[0]) for out in job.outputs()]
    answers = [chat[-1][1] for chat in updates if chat and chat[-1][0] == "assistant"]
    assert len(set(answers)) >= 3, "the answer should arrive in several growing pieces"
    # grows (not always a strict prefix: a closing ` can change how earlier text is shown)
    assert all(len(later) >= len(earlier) for earlier, later in zip(answers, answers[1:]))
    final_chat, _, status, prompt, *_ = job.outputs()[-1]
    assert texts(final_chat)[0] == ("user", "Hello there")
    assert "tokens/s" in status and "stop: max tokens" in status
    assert prompt.endswith("<|im_start|>assistant\n") and "Hello there" in prompt


def test_retry_gives_a_new_answer_to_the_same_message(app):
    client = new_client(app)
    first = texts(client.predict("Tell me a story", api_name="/send")[0])
    second = texts(client.predict(api_name="/retry")[0])
    assert [m for m in second if m[0] == "user"] == [("user", "Tell me a story")]
    assert len(second) == 2 and second[1][1] != first[1][1]
    assert second[1][1].endswith("*version 2 / 2*")  # the first answer is kept, a version away


def test_continue_extends_the_answer_and_reproduce_remakes_it(app):
    client = new_client(app)
    chat, *_ = client.predict("Tell me a story", api_name="/send")  # cut at max tokens (the app's settings)
    story = texts(chat)[-1][1]
    chat, _, status, prompt, *_, provenance = client.predict(api_name="/continue")
    longer = texts(chat)[-1][1]
    assert len(texts(chat)) == 2 and longer.startswith(story) and len(longer) > len(story)
    assert prompt.count("<|im_start|>assistant") == 1 and not prompt.endswith("<|im_start|>assistant\n")  # it ends inside the answer
    assert "Continue 1" in provenance
    chat, *_, provenance = client.predict(api_name="/reproduce")
    assert texts(chat)[-1][1] == longer + "\n\n*version 2 / 2*" and "identical text ✓" in provenance


def test_undo_returns_the_typed_text_and_clear_empties(app):
    client = new_client(app)
    client.predict("first", api_name="/send")
    client.predict("second", api_name="/send")
    chat, message_box, *_ = client.predict(api_name="/undo")
    assert message_box == "second" and [t for r, t in texts(chat) if r == "user"] == ["first"]
    chat, message_box, *_ = client.predict(api_name="/clear")
    assert chat == [] and message_box == gr.skip()  # the box is the user's: Clear leaves it as it is


def test_skill_is_shown_tagged_and_expanded_in_the_prompt(app):
    client = new_client(app)
    chat, _, _, prompt, *_ = client.predict("Der Hund bellt.", "🇬🇧 Translate to English", api_name="/send")
    assert texts(chat)[0] == ("user", "🇬🇧 Translate to English: Der Hund bellt.")
    assert "Translate" in prompt and "```\nDer Hund bellt.\n```" in prompt


def test_two_clients_never_see_each_others_text(app):
    alice, bob = new_client(app), new_client(app)
    jobs = [alice.submit("alice-secret", api_name="/send"), bob.submit("bob-secret", api_name="/send")]
    chats = [texts(job.result(timeout=60)[0]) for job in jobs]
    assert "bob-secret" not in str(chats[0]) and "alice-secret" in str(chats[0])
    assert "alice-secret" not in str(chats[1]) and "bob-secret" in str(chats[1])


def test_out_of_range_settings_are_refused_clearly_and_the_app_keeps_serving(app):
    client = new_client(app)
    with pytest.raises(Exception, match="less than minimum"):
        client.predict("never sent", temperature=-1, api_name="/send")
    chat, *_ = client.predict("still works", api_name="/send")
    assert texts(chat)[0] == ("user", "still works") and "never sent" not in str(chat)


def test_auth_protects_page_and_api(tiny_engine):
    with running_app(tiny_engine, GenerationSettings(max_new_tokens=4), auth=[("ada", "lovelace")]) as (demo, url):
        with pytest.raises(AuthenticationError, match=r"credentials were not provided\. Please login"):  # the page's config: 401
            new_client(url).predict("hi", api_name="/send")
        chat, *_ = new_client(url, auth=("ada", "lovelace")).predict("hi", api_name="/send")
        assert texts(chat)[0] == ("user", "hi")


def test_app_py_starts_prints_its_url_and_warns_about_share_without_auth(tiny_chat_dir, tmp_path):
    """The real entry point: flags, the local URL line, the --share warning (no internet here)."""
    with AppProcess("--model", str(tiny_chat_dir), "--share", "--max-new-tokens", "8") as app:
        app.wait_for_line("Public link", "Could not create a public link")
        output = "".join(app.printed)
        assert app.url in output
        assert "(up to 4 answers at once)" in output  # batching on: answers share each step
        assert "anyone with the link can use this model" in output
        chat, *_ = new_client(app.url).predict("hi", api_name="/send")
        assert texts(chat)[0] == ("user", "hi")


def test_a_second_user_waits_with_a_position_and_past_the_queue_size_is_told_busy(chatty_engine):
    settings = GenerationSettings(max_new_tokens=3000)
    with running_app(chatty_engine, settings, concurrency=1, queue_size=1) as (demo, url):
        first, second, third = (new_client(url) for _ in range(3))
        running = first.submit("long answer", api_name="/send")
        assert wait_for(lambda: running.status().code.name in ("PROCESSING", "ITERATING"), 30), "the first answer never started"
        waiting = second.submit("wait for me", api_name="/send")
        assert wait_for(lambda: waiting.status().code.name == "IN_QUEUE", 30), "the second user never joined the queue"
        assert waiting.status().rank == 0  # first in line: the UI shows the queue position
        with pytest.raises(Exception, match="Queue is full! Please try again"):
            third.submit("one too many", api_name="/send").result(timeout=30)
        running.cancel()  # the first user leaves; the waiting one is served next
        second_chat = texts(waiting.result(timeout=120)[0])
        assert second_chat[0] == ("user", "wait for me")


def test_answers_at_once_default_to_4_only_where_they_share_the_work(tiny_chat_dir):
    """4 when answers share each step (batching) or a server batches them; 1 when they would only
    compete for the processor and each get slower (--no-batching)."""
    from app import default_concurrency
    from chat.remote.engine import RemoteEngine

    assert default_concurrency(make_engine(tiny_chat_dir, batching=True)) == 4
    assert default_concurrency(make_engine(tiny_chat_dir, batching=False)) == 1
    assert default_concurrency(RemoteEngine.__new__(RemoteEngine)) == 4
