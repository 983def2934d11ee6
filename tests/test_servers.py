"""What the app learns from a model server at start-up, and how it talks to each kind.

This app's own API and llama-cpp-python's server are real here (see test_remote.py for the
latter); vLLM, llama.cpp's llama-server, TGI and Ollama cannot run on this machine, so their
self-descriptions are served as documented by `serve_json`.
"""

from __future__ import annotations

import pytest

from chat.errors import GenerationError
from chat.remote.engine import DEFAULT_CONTEXT_WINDOW, REPROBE_S, RemoteEngine
from chat.remote.servers import LLAMA_CPP_PYTHON_DEFAULT_N_CTX, OLLAMA_DEFAULT_NUM_CTX
from chat.session import ChatSession
from chat.settings import GenerationSettings
from chat.skills import Skill, SkillBook
from chat.skills_file import load_skills
from chat.web.view import chat_messages
from tests.helpers.api_servers import serve_api, serve_empty_stream, serve_json
from tests.helpers.ports import free_port
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy

MODEL = "served-model"

SERVERS = {  # kind: (routes with the documented bodies, the context window it tells)
    "vllm": ({("GET", "/v1/models"): {"object": "list", "data": [
        {"id": MODEL, "object": "model", "owned_by": "vllm", "max_model_len": 8192}]}}, 8192),
    "llama.cpp": ({("GET", "/v1/models"): {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "llamacpp"}]},
                   ("GET", "/props"): {"default_generation_settings": {"n_ctx": 4096, "params": {}}, "total_slots": 1}}, 4096),
    "tgi": ({("GET", "/info"): {"model_id": MODEL, "max_input_tokens": 3071, "max_total_tokens": 3072}}, 3072),
    "ollama": ({("GET", "/v1/models"): {"object": "list", "data": [{"id": MODEL, "object": "model", "owned_by": "library"}]},
                ("GET", "/api/version"): {"version": "0.12.0"},
                ("POST", "/api/show"): {"parameters": "stop \"<|im_end|>\"\nnum_ctx 16384", "model_info": {"qwen2.context_length": 32768}}},
               16384),
    "llama-cpp-python": ({("GET", "/v1/models"): {"object": "list", "data": [
        {"id": MODEL, "object": "model", "owned_by": "me", "permissions": []}]}}, LLAMA_CPP_PYTHON_DEFAULT_N_CTX),
}


def connect(url: str, context_window: int | None = None) -> tuple[RemoteEngine, list[str]]:
    said: list[str] = []
    engine = RemoteEngine(url + "/v1", MODEL, context_window=context_window)
    engine.connect(said.append)
    return engine, said


@pytest.mark.parametrize("kind", SERVERS)
def test_the_context_window_comes_from_the_server_and_start_up_says_so(kind):
    routes, window = SERVERS[kind]
    with serve_json(routes) as server:
        engine, said = connect(server.url)
    assert engine.server.kind == kind and engine.context_window == window
    assert said == [f"Model server ({kind}): {server.url}/v1, model {MODEL!r}, context window {window:,} tokens "
                    f"({engine.window_source})"]


def test_ollama_without_num_ctx_is_taken_at_its_default_which_start_up_calls_an_assumption():
    routes = dict(SERVERS["ollama"][0])
    routes[("POST", "/api/show")] = {"parameters": "stop \"<|im_end|>\"", "model_info": {"qwen2.context_length": 32768}}
    with serve_json(routes) as server:
        engine, said = connect(server.url)
    assert engine.context_window == OLLAMA_DEFAULT_NUM_CTX and "assumed" in said[0] and "OLLAMA_CONTEXT_LENGTH" in said[0]


@pytest.mark.parametrize("asked, expected, warned", [(2048, 2048, False), (100_000, 8192, True)])
def test_a_smaller_context_window_flag_limits_the_servers_and_a_larger_one_is_refused_with_a_warning(asked, expected, warned):
    with serve_json(SERVERS["vllm"][0]) as server:
        engine, said = connect(server.url, context_window=asked)
    assert engine.context_window == expected
    assert any(line.startswith("warning: --context-window 100,000 is more than the server's 8,192") for line in said) == warned


def test_a_server_that_only_assumes_its_window_yields_to_the_flag():
    with serve_json(SERVERS["llama-cpp-python"][0]) as server:
        engine, said = connect(server.url, context_window=8192)
    assert engine.context_window == 8192 and engine.window_source == "--context-window"


def test_an_unknown_server_keeps_the_flag_or_the_default(tiny_engine):
    with serve_json({("GET", "/v1/models"): {"object": "list", "data": [{"id": MODEL, "object": "model"}]}}) as server:
        engine, said = connect(server.url)
        flagged, _ = connect(server.url, context_window=1000)
    assert engine.server.kind == "unknown" and engine.context_window == DEFAULT_CONTEXT_WINDOW and "assumed" in said[0]
    assert flagged.context_window == 1000


def test_this_apps_own_api_tells_its_window_so_one_instance_can_serve_another(tiny_engine):
    with serve_api(tiny_engine) as server:
        engine, said = connect(server.url)
    assert engine.server.kind == "chat-workbench" and engine.context_window == tiny_engine.context_window


def test_a_server_that_is_down_is_a_warning_at_start_up_and_is_asked_again_later(tiny_engine, monkeypatch):
    port = free_port()
    engine, said = connect(f"http://127.0.0.1:{port}")
    assert len(said) == 1 and said[0].startswith(f"warning: can't reach the model server at http://127.0.0.1:{port}/v1 "
                                                 "(connection refused); starting anyway")
    assert engine.context_window == DEFAULT_CONTEXT_WINDOW
    with serve_api(tiny_engine, port=port) as server:
        assert server.port == port
        engine.prepare([{"role": "user", "content": "Hi"}], GenerationSettings())
        assert engine.server.kind == "unknown"  # asked again only after REPROBE_S
        engine._probed_at -= REPROBE_S
        engine.prepare([{"role": "user", "content": "Hi"}], GenerationSettings())
    assert engine.server.kind == "chat-workbench" and engine.context_window == tiny_engine.context_window
    assert said[-1].startswith("Model server (chat-workbench)")


def test_llama_cpp_gets_repeat_penalty_beside_repetition_penalty_unless_standard_sampling_is_asked():
    settings = GenerationSettings(repetition_penalty=1.3, top_k=20)
    with serve_json(SERVERS["llama.cpp"][0]) as server:
        engine, _ = connect(server.url)
    fitted = engine.prepare([{"role": "user", "content": "Hi"}], settings)
    extra = engine.request(fitted, settings, ())["extra_body"]
    assert extra["repeat_penalty"] == extra["repetition_penalty"] == 1.3 and extra["top_k"] == 20
    engine.standard_sampling = True
    assert "extra_body" not in engine.request(fitted, settings, ())
    with serve_json(SERVERS["vllm"][0]) as server:
        vllm, _ = connect(server.url)
    assert "repeat_penalty" not in vllm.request(fitted, settings, ())["extra_body"]  # vLLM reads repetition_penalty


def test_an_empty_stream_is_an_error_that_says_what_to_do_never_a_blank_bubble():
    with serve_empty_stream() as server:
        engine = RemoteEngine(server.url + "/v1", MODEL, context_window=4096)
        session = seeded_session(engine, load_skills())
        with pytest.raises(GenerationError) as caught:
            "".join(session.send("Hello"))
    message = str(caught.value)
    assert "empty answer" in message and "context window" in message and "--context-window" in message and "--n_ctx" in message
    shown = chat_messages(session)
    assert shown[-1]["content"].count(message) == 1 and "Retry" in shown[-1]["content"]


def stopping_at(stop: str | None) -> SkillBook:
    """A skill book whose one skill sends the message as is, with `stop` as its stop string."""
    return SkillBook([Skill("Chat", "{message}", stop=(stop,) if stop else ())])


def greedy_then_stopped(engine, stop_at: slice, max_new_tokens: int = 8) -> tuple[str, ChatSession, str]:
    """(the greedy answer to "Hello", a session whose skill stops at `greedy[stop_at]`, that stop string)."""
    settings = greedy(max_new_tokens)
    likeliest = "".join(seeded_session(engine, stopping_at(None), settings=settings).send("Hello"))
    return likeliest, seeded_session(engine, stopping_at(likeliest[stop_at]), settings=settings), likeliest[stop_at]


def test_a_local_answer_with_no_text_is_an_error_too(tiny_engine):
    # A stop string the greedy answer begins with: the answer ends before any text.
    _, session, _ = greedy_then_stopped(tiny_engine, slice(0, 2))
    with pytest.raises(GenerationError, match="ended its answer before writing anything .stop: stop string.: try again"):
        "".join(session.send("Hello"))
    assert session.history[-1]["error"] and session.history[0]["content"] == "Hello"  # kept for Retry


def test_a_server_that_ends_at_once_is_the_models_choice_not_a_full_context(tiny_engine):
    """An empty answer with the server's "stop" (here: a stop string it applied at the first token)."""
    with serve_api(tiny_engine) as server:
        engine, _ = connect(server.url)
        engine.name = tiny_engine.name
        _, session, _ = greedy_then_stopped(engine, slice(0, 2))
        with pytest.raises(GenerationError) as caught:
            "".join(session.send("Hello"))
    message = str(caught.value)
    assert "ended its answer before writing anything (stop: eos or stop string (the server's))" in message
    assert "context window" not in message


def test_a_stop_string_the_server_applied_is_reported_as_the_servers_stop(tiny_engine):
    with serve_api(tiny_engine) as server:
        engine, _ = connect(server.url)
        engine.name = tiny_engine.name
        greedy, session, stop = greedy_then_stopped(engine, slice(4, 6), max_new_tokens=12)
        reply = session.send("Hello")
        text = "".join(reply)
    assert text and greedy.startswith(text) and stop not in text and len(text) <= greedy.index(stop)
    assert reply.stats.stop_reason == "eos or stop string (the server's)"
    assert not reply.stats.estimated  # this app reports usage: exact counts, no "~"
    assert "~" not in reply.stats.summary()
