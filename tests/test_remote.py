"""The remote backend against a real server: this app's own API (llama.cpp's: test_llama_cpp.py)."""

from __future__ import annotations

import argparse
import contextlib
import threading

import openai
import pytest

from chat.cli.args import add_model_arguments, add_sampling_arguments, build_engine
from chat.engine import StopReason
from chat.errors import ChatError, GenerationError
from chat.instructions import CHAT_INSTRUCTIONS, default_instructions
from chat.remote.engine import RemoteEngine, add_backend_arguments
from chat.session import ChatSession
from chat.settings import GenerationSettings
from chat.skills import Skill, SkillBook
from chat.answer_tokens import PENALIZED, SERVER
from chat.web.view import chat_messages
from tests.helpers.api_servers import TEST_SKILLS, WAIT_S, serve_api, serve_api_refusing_logprobs, serve_failure
from tests.helpers.engines import RecordingEngine, finished, make_engine
from tests.helpers.ports import free_port, silent_port
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy
from tests.helpers.waiting import wait_for

GREEDY = greedy()
KEY = "remote-key-9c1e"


@pytest.fixture(scope="module")
def backend(tiny_chat_dir):
    """The model behind the server: never meets end-of-sequence, so answers run to their limit."""
    return RecordingEngine(make_engine(tiny_chat_dir, endless=True))


@pytest.fixture(scope="module")
def server(backend):
    with serve_api(backend, defaults=GenerationSettings(temperature=0)) as server:
        yield server


def remote(server, backend, **options) -> RemoteEngine:
    return RemoteEngine(server.url + "/v1", backend.name, **options)


def session_on(engine, settings=GREEDY, skills=TEST_SKILLS) -> ChatSession:
    return seeded_session(engine, skills, "Be nice.", settings)


def test_continue_through_a_remote_server_extends_the_answer_as_the_local_engine_does(server, backend):
    local = session_on(backend.engine)
    cut = "".join(local.send("Tell me a story"))
    more = "".join(local.continue_answer())
    session = session_on(remote(server, backend))
    assert "".join(session.send("Tell me a story")) == cut
    assert "".join(session.continue_answer()) == more != ""  # the server continued the same answer
    assert session.history[-1]["content"] == cut + more and len(session.history) == 2
    assert backend.generations[-1].fitted.continues


def test_a_remote_session_gets_the_servers_answer_and_its_token_counts(server, backend):
    expected = session_on(backend.engine).send("Hello")
    expected_text = "".join(expected)
    session = session_on(remote(server, backend))
    reply = session.send("Hello")
    assert "".join(reply) == expected_text != ""
    stats = reply.stats
    assert (stats.prompt_tokens, stats.new_tokens) == (expected.stats.prompt_tokens, GREEDY.max_new_tokens)
    assert stats.stop_reason == StopReason.MAX_TOKENS and stats.time_to_first_token is not None
    assert session.history[-1]["content"] == expected_text


def test_the_prompt_view_shows_the_messages_and_says_the_server_applies_the_template(server, backend):
    engine = remote(server, backend)
    fitted = session_on(engine).preview("What is 2+2?")
    assert "applies its own chat template" in fitted.prompt.text
    assert "Be nice." in fitted.prompt.text and "What is 2+2?" in fitted.prompt.text
    assert fitted.prompt.ids == [] and fitted.notice is None
    assert default_instructions(engine.format) == CHAT_INSTRUCTIONS


def test_a_long_chat_is_trimmed_by_estimate_when_the_context_window_is_given(server, backend):
    session = session_on(remote(server, backend, context_window=400))
    session.load_messages([{"role": "user", "content": "old " * 300}, {"role": "assistant", "content": "ok"}])
    fitted = session.preview("Hello")
    assert fitted.dropped_messages == 2 and "Note:" in fitted.notice


def test_sampling_settings_reach_the_server(server, backend):
    settings = GenerationSettings(temperature=0.3, top_p=0.7, top_k=7, min_p=0.05, repetition_penalty=1.3, seed=5, max_new_tokens=4)
    "".join(session_on(remote(server, backend), settings).send("Hello"))
    received = backend.generations[-1].settings
    for name in ("temperature", "top_p", "top_k", "min_p", "repetition_penalty", "seed", "max_new_tokens"):
        assert getattr(received, name) == getattr(settings, name), name
    "".join(session_on(remote(server, backend, standard_sampling=True), settings).send("Hello"))
    received, defaults = backend.generations[-1].settings, GenerationSettings()
    assert (received.top_k, received.min_p, received.repetition_penalty) == (defaults.top_k, defaults.min_p, defaults.repetition_penalty)


def answer_with_tokens(engine, settings=GREEDY):
    """(text, token log) of an answer to "Hello"; checks on the way that the tokens keep up with the text."""
    generation = engine.generate(engine.prepare([{"role": "user", "content": "Hello"}], settings), settings, tokens=True)
    for _ in generation:
        assert generation.text.startswith("".join(step.text for step in generation.tokens_so_far()))
    return generation.text, generation.tokens


def test_a_remote_answers_tokens_are_the_servers_as_the_local_engine_records_them(server, backend):
    text, local = answer_with_tokens(backend.engine)
    remote_text, log = answer_with_tokens(remote(server, backend))
    assert remote_text == text != "" and log.text == text
    assert log.distributions == (SERVER,) and log.note is None
    # This app's API reports the distribution after the repetition penalty (and no token without text).
    expected = [step for step in local.steps if step.text]
    assert [step.text for step in log.steps] == [step.text for step in expected]
    for step, local_step in zip(log.steps, expected):
        got, wanted = step.dists[SERVER], local_step.dists[PENALIZED]
        assert step.id is None and all(alternative.id is None for alternative in got.top)
        assert got.logprob == pytest.approx(wanted.logprob, abs=1e-5)
        assert [a.text for a in got.top] == [a.text for a in wanted.top]
        assert [a.logprob for a in got.top] == pytest.approx([a.logprob for a in wanted.top], abs=1e-5)


def test_a_server_that_returns_no_token_probabilities_is_named_in_the_logs_note(backend):
    with serve_api(backend, defaults=GenerationSettings(num_beams=2)) as beams:  # beam search records none
        text, log = answer_with_tokens(remote(beams, backend))
    assert text and log.steps == []
    assert log.note == f"the model server at {beams.url}/v1 (model {backend.name!r}) did not return token " \
                       "probabilities for this answer"


def test_a_server_that_refuses_logprobs_is_asked_again_without_them(backend):
    with serve_api_refusing_logprobs(backend, defaults=GenerationSettings(temperature=0)) as refusing:
        text, log = answer_with_tokens(remote(refusing, backend))
    assert text == answer_with_tokens(backend.engine)[0] != ""
    assert log.steps == [] and "refused to send token probabilities (logprobs is not supported with this model)" in log.note


def test_skills_expand_here_and_their_stop_strings_cut_the_answer(server, backend):
    engine = remote(server, backend)
    full = "".join(session_on(engine, GREEDY.replace(max_new_tokens=24)).send("Hi", "🔁 Say Twice"))
    assert backend.generations[-1].fitted.messages[-1]["content"] == TEST_SKILLS.get("🔁 Say Twice").expand("Hi")
    stop = next(full[i : i + 3] for i in range(4, len(full) - 3) if full[i : i + 3].strip() == full[i : i + 3])
    # Five stop strings: the server is sent the first four (OpenAI's limit), this side applies all.
    stops = ("\x00never-1", "\x00never-2", "\x00never-3", "\x00never-4", stop)
    skills = SkillBook([Skill("Say Twice", TEST_SKILLS.get("🔁 Say Twice").template, stop=stops)])
    reply = session_on(engine, GREEDY.replace(max_new_tokens=24), skills).send("Hi", "Say Twice")
    assert "".join(reply) == full[: full.index(stop)]
    assert reply.stats.stop_reason == StopReason.STOP_STRING


def test_stop_closes_the_stream_and_the_server_stops_generating(server, backend):
    session = session_on(remote(server, backend), GREEDY.replace(max_new_tokens=3000))
    deltas = iter(session.send("Hello"))
    shown = "".join(next(deltas) for _ in range(3))
    generation = backend.generations[-1]
    session.stop()
    assert "".join(deltas) == ""  # nothing more arrives after Stop
    assert wait_for(lambda: finished(generation), WAIT_S)
    assert generation.stats.stop_reason == StopReason.CANCELLED and generation.stats.new_tokens < 3000
    assert session.last_stats.stop_reason == StopReason.CANCELLED
    assert session.history[0]["content"] == "Hello" and session.history[1]["content"] == shown


@contextlib.contextmanager
def refused(server, backend):
    yield RemoteEngine(f"http://127.0.0.1:{free_port()}/v1", backend.name, api_key=KEY)


@contextlib.contextmanager
def wrong_key(server, backend):
    with serve_api(backend, api_key="the-right-key") as guarded:
        yield RemoteEngine(guarded.url + "/v1", backend.name, api_key=KEY)


@contextlib.contextmanager
def unknown_model(server, backend):
    yield RemoteEngine(server.url + "/v1", "no-such-model", api_key=KEY)


@contextlib.contextmanager
def busy(server, backend):
    with serve_api(backend, max_parallel=1, queue_wait_s=0.1) as crowded:
        client = openai.OpenAI(base_url=crowded.url + "/v1", api_key="x", max_retries=0)
        stream = client.chat.completions.create(model=backend.name, messages=[{"role": "user", "content": "Hi"}], max_tokens=3000, stream=True)
        next(iter(stream))  # the one slot is taken
        yield RemoteEngine(crowded.url + "/v1", backend.name, api_key=KEY)
        stream.close()


@contextlib.contextmanager
def failing(server, backend):
    with serve_failure(503, "overloaded,\nplease wait") as broken:
        yield RemoteEngine(broken.url + "/v1", backend.name, api_key=KEY)


@contextlib.contextmanager
def silent(server, backend):
    with silent_port() as port:
        yield RemoteEngine(f"http://127.0.0.1:{port}/v1", backend.name, api_key=KEY, timeout_s=0.5)


FAILURES = [  # (server trouble, words the chat message must hold)
    (refused, ["can't reach", "connection refused", "is it running?"]),
    (wrong_key, ["401", "API key"]),
    (unknown_model, ["404", "no-such-model", "--model"]),
    (busy, ["429", "busy"]),
    (failing, ["503", "overloaded, please wait"]),
    (silent, ["did not answer", "timed out"]),
]


@pytest.mark.parametrize("trouble, words", FAILURES, ids=[f[0].__name__ for f in FAILURES])
def test_server_trouble_is_one_clear_line_and_the_message_stays_for_retry(server, backend, trouble, words):
    with trouble(server, backend) as engine:
        session = session_on(engine)
        with pytest.raises(GenerationError) as caught:
            "".join(session.send("Hello"))
    message = str(caught.value)
    assert "\n" not in message and KEY not in message and all(word in message for word in words), message
    assert session.history[0]["content"] == "Hello" and session.history[1]["error"] == message
    shown = chat_messages(session)[-1]["content"]
    assert message in shown and shown.count("Retry") == 1  # the advice to retry, once (the page adds it)
    session.engine = remote(server, backend)  # the server is back
    assert "".join(session.retry()) and [m["role"] for m in session.history] == ["user", "assistant"]


def test_two_app_instances_on_one_backend_keep_their_answers_apart(server, backend):
    prompts = ["Hello, how are you today?", "Translate: Guten Tag!"]
    direct = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=30)
    expected = [_answer(direct, backend.name, prompt) for prompt in prompts]
    assert expected[0] != expected[1]
    with serve_api(remote(server, backend), defaults=GREEDY) as first, serve_api(remote(server, backend), defaults=GREEDY) as second:
        clients = [openai.OpenAI(base_url=app.url + "/v1", api_key="x", max_retries=0, timeout=30) for app in (first, second)]
        results: dict[int, list[str]] = {0: [], 1: []}

        def chat(index: int) -> None:
            for _ in range(2):
                results[index].append(_answer(clients[index], backend.name, prompts[index]))

        # Two users on each instance: each instance's engine also serves two at once.
        threads = [threading.Thread(target=chat, args=(index,)) for index in (0, 1, 0, 1)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    assert results == {0: [expected[0]] * 4, 1: [expected[1]] * 4}


def _answer(client, model, prompt) -> str:
    stream = client.chat.completions.create(model=model, messages=[{"role": "user", "content": prompt}], max_tokens=8, temperature=0, stream=True)
    return "".join(choice.delta.content or "" for chunk in stream for choice in chunk.choices)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser()
    add_model_arguments(parser)
    add_sampling_arguments(parser)
    add_backend_arguments(parser)
    return parser


def test_backend_flags_build_a_remote_engine_with_the_servers_key_from_the_environment(backend, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    with serve_api(backend, api_key=KEY) as guarded:
        # --api-key guards this app's own API; the server's key comes from the environment.
        args = _parser().parse_args(["--backend", "openai", "--base-url", guarded.url + "/v1", "--model", backend.name,
                                     "--api-key", "this-apps-own-key"])
        engine = build_engine(args, say=lambda _: None)
        assert isinstance(engine, RemoteEngine) and not engine.exact_prompt  # the server renders the prompt
        assert KEY not in repr(engine) and KEY not in engine.device and guarded.url in engine.device
        assert "".join(session_on(engine).send("Hello"))


@pytest.mark.parametrize("flags, words", [
    (["--backend", "openai", "--model", "m"], "--base-url"),
    (["--backend", "openai", "--base-url", "localhost:8000"], "--base-url"),
    (["--backend", "openai", "--base-url", "http://127.0.0.1:9/v1"], "--model"),
])
def test_missing_backend_flags_are_one_line_errors(flags, words):
    with pytest.raises(ChatError, match=words):
        build_engine(_parser().parse_args(flags))
