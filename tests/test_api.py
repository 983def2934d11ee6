"""The app's own OpenAI-compatible API, driven by the official `openai` client over real HTTP."""

from __future__ import annotations

import threading

import httpx
import openai
import pytest

from chat.engine import StopReason
from chat.settings import SETTINGS
from tests.helpers.api_servers import TEST_SKILLS, WAIT_S, serve_api
from tests.helpers.tiny_models import save_tiny_model
from tests.helpers.engines import RecordingEngine, finished, make_engine, paced
from tests.helpers.ports import free_port
from tests.helpers.settings import greedy
from tests.helpers.waiting import wait_for

GREEDY = greedy(12)  # the server's defaults: repeatable answers
KEY = "test-key-5f3a"


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    """A tiny engine that never meets end-of-sequence, so every answer runs to its token limit. Its context holds
    8,192 tokens: a 3,000-token answer runs for seconds, so a client that closes its stream after a few pieces
    does so while the answer still streams (in 512 tokens the ~490 left could end first on a fast machine)."""
    return RecordingEngine(make_engine(save_tiny_model(tmp_path_factory.mktemp("tiny-api"), context=8192), endless=True))


@pytest.fixture(scope="module")
def server(engine):
    with serve_api(engine, defaults=GREEDY, instructions="Be nice.") as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def ask(client, engine, text, **fields):
    return client.chat.completions.create(model=engine.name, messages=[{"role": "user", "content": text}], **fields)


def ask_streaming(client, engine, text, **fields):
    """(text, last usage, finish reasons) of a streamed answer."""
    parts, usage, finishes = [], None, []
    for chunk in ask(client, engine, text, stream=True, stream_options={"include_usage": True}, **fields):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            parts.append(choice.delta.content or "")
            finishes += [choice.finish_reason] if choice.finish_reason else []
    return "".join(parts), usage, finishes


def test_models_lists_the_model_then_one_entry_per_skill(client, engine):
    ids = [model.id for model in client.models.list()]
    assert ids == [engine.name, f"{engine.name}:chat", f"{engine.name}:say-twice", f"{engine.name}:short"]


def test_streamed_and_whole_answers_are_the_same_with_usage(client, engine):
    whole = ask(client, engine, "Hello")
    text, usage, finishes = ask_streaming(client, engine, "Hello")
    assert text and text == whole.choices[0].message.content
    assert whole.choices[0].finish_reason == "length" and finishes == ["length"]
    assert whole.usage.completion_tokens == usage.completion_tokens == GREEDY.max_new_tokens
    assert whole.usage.prompt_tokens == usage.prompt_tokens > 0
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + whole.usage.completion_tokens


def test_max_tokens_and_temperature_are_honoured(client, engine):
    answer = ask(client, engine, "Hello", max_tokens=5, temperature=0.3, seed=1)
    assert answer.usage.completion_tokens == 5 and answer.choices[0].finish_reason == "length"
    assert engine.generations[-1].settings.temperature == 0.3


def test_sampling_extensions_vllm_clients_send_are_honoured(client, engine):
    ask(client, engine, "Hello", temperature=1.0, extra_body={"top_k": 7, "min_p": 0.05, "repetition_penalty": 1.2})
    received = engine.generations[-1].settings
    assert (received.top_k, received.min_p, received.repetition_penalty) == (7, 0.05, 1.2)


def test_the_apps_instructions_apply_unless_the_client_sends_its_own(client, engine):
    implicit = ask(client, engine, "Hello")
    explicit = client.chat.completions.create(
        model=engine.name, messages=[{"role": "system", "content": "Be nice."}, {"role": "user", "content": "Hello"}])
    other = client.chat.completions.create(
        model=engine.name, messages=[{"role": "system", "content": "Be rude."}, {"role": "user", "content": "Hello"}])
    assert implicit.choices[0].message.content == explicit.choices[0].message.content
    assert implicit.usage.prompt_tokens == explicit.usage.prompt_tokens
    assert engine.generations[-1].fitted.messages[0] == {"role": "system", "content": "Be rude."}
    assert len([m for m in engine.generations[-1].fitted.messages if m["role"] == "system"]) == 1
    assert other.choices[0].message.content  # answered with the client's system message alone


def test_a_skill_is_picked_by_model_suffix_or_skill_field(client, engine):
    skill = TEST_SKILLS.get("🔁 Say Twice")
    by_model = client.chat.completions.create(model=f"{engine.name}:say-twice", messages=[{"role": "user", "content": "Hi"}])
    by_field = ask(client, engine, "Hi", extra_body={"skill": skill.name})
    expanded_by_hand = ask(client, engine, skill.expand("Hi"))
    plain = ask(client, engine, "Hi")
    assert by_model.choices[0].message.content == by_field.choices[0].message.content == expanded_by_hand.choices[0].message.content
    assert by_model.choices[0].message.content != plain.choices[0].message.content
    assert by_model.model == f"{engine.name}:say-twice"


def test_a_skills_settings_apply_and_the_request_overrides_them(client, engine):
    short = ask(client, engine, "Hi", extra_body={"skill": "short"})
    assert short.usage.completion_tokens == 3  # the skill's max_new_tokens
    longer = ask(client, engine, "Hi", max_tokens=6, extra_body={"skill": "short"})
    assert longer.usage.completion_tokens == 6


@pytest.mark.parametrize("streaming", [False, True])
def test_stop_strings_end_the_answer_before_them(client, engine, streaming):
    full = ask(client, engine, "Hello", max_tokens=24).choices[0].message.content
    stop = next(full[i : i + 3] for i in range(4, len(full) - 3) if full[i : i + 3].strip() == full[i : i + 3])
    expected = full[: full.index(stop)]
    if streaming:
        text, _, finishes = ask_streaming(client, engine, "Hello", max_tokens=24, stop=[stop])
    else:
        answer = ask(client, engine, "Hello", max_tokens=24, stop=stop)
        text, finishes = answer.choices[0].message.content, [answer.choices[0].finish_reason]
    assert text == expected and finishes == ["stop"]
    assert engine.generations[-1].stats.stop_reason == StopReason.STOP_STRING


def _messages(*roles_and_contents):
    return [{"role": role, "content": content} for role, content in roles_and_contents]


HI = _messages(("user", "Hi"))
BAD_REQUESTS = [  # (what, body without model unless given, status, param)
    ("missing messages", {}, 400, "messages"),
    ("empty messages", {"messages": []}, 400, "messages"),
    ("messages not a list", {"messages": "Hi"}, 400, "messages"),
    ("unknown role", {"messages": _messages(("robot", "Hi"))}, 400, "messages"),
    ("tool role", {"messages": _messages(("user", "Hi"), ("tool", "42"))}, 400, "messages"),
    ("system not first", {"messages": _messages(("user", "Hi"), ("system", "x"), ("user", "Hi"))}, 400, "messages"),
    ("last message not the user's", {"messages": _messages(("user", "Hi"), ("assistant", "Hello"))}, 400, "messages"),
    ("number as content", {"messages": _messages(("user", 42))}, 400, "messages"),
    ("image part", {"messages": _messages(("user", [{"type": "image_url", "image_url": {"url": "x"}}]))}, 400, "messages"),
    ("temperature too high", {"messages": HI, "temperature": 9}, 400, "temperature"),
    ("max_tokens zero", {"messages": HI, "max_tokens": 0}, 400, "max_tokens"),
    ("max_tokens huge", {"messages": HI, "max_tokens": 10**9}, 400, "max_tokens"),
    ("top_p as text", {"messages": HI, "top_p": "high"}, 400, "top_p"),
    ("stop not text", {"messages": HI, "stop": [1]}, 400, "stop"),
    ("stream not a flag", {"messages": HI, "stream": "yes"}, 400, "stream"),
    ("several choices", {"messages": HI, "n": 2}, 400, "n"),
    ("tools", {"messages": HI, "tools": [{"type": "function", "function": {"name": "f"}}]}, 400, "tools"),
    ("misspelt field", {"messages": HI, "temprature": 0.5}, 400, "temprature"),
    ("unknown skill", {"messages": HI, "skill": "juggle"}, 400, "skill"),
    ("missing model", {"model": None, "messages": HI}, 400, "model"),
    ("unknown model", {"model": "gpt-4o", "messages": HI}, 404, "model"),
    ("unknown skill in model", {"model": "{name}:juggle", "messages": HI}, 404, "model"),
]


@pytest.mark.parametrize("what, body, status, param", BAD_REQUESTS, ids=[case[0] for case in BAD_REQUESTS])
def test_a_bad_request_gets_an_openai_error_naming_the_field(client, engine, what, body, status, param):
    body = {"model": engine.name, **body}
    if isinstance(body["model"], str):
        body["model"] = body["model"].replace("{name}", engine.name)
    with pytest.raises(openai.APIStatusError) as caught:
        client.post("/chat/completions", body={k: v for k, v in body.items() if v is not None}, cast_to=object)
    error = caught.value
    assert error.status_code == status
    assert error.body["param"] == param and error.body["type"] == "invalid_request_error" and error.body["message"]


SAMPLING_FIELDS = {declared.api_field: declared for declared in SETTINGS if declared.api_field}
SAMPLING_FIELDS["max_completion_tokens"] = SAMPLING_FIELDS["max_tokens"]


@pytest.mark.parametrize("field", SAMPLING_FIELDS)
def test_every_setting_with_an_api_field_is_a_request_field_checked_against_its_range(client, engine, field):
    """The request's sampling fields come from chat/settings.py: a new setting needs no edit in chat/api/."""
    with pytest.raises(openai.BadRequestError) as caught:
        ask(client, engine, "Hi", extra_body={field: SAMPLING_FIELDS[field].high + 1})
    assert caught.value.body["param"] == field and caught.value.body["code"] == "invalid_value"
    assert f"{field} must be between" in caught.value.body["message"]


@pytest.mark.parametrize("content, status", [
    (b"{not json", 400), (b"[1, 2]", 400), (b'{"temperature": NaN}', 400), (b"\xff\xfe", 400),
])
def test_a_body_that_is_not_a_json_object_gets_400(server, content, status):
    response = httpx.post(server.url + "/v1/chat/completions", content=content, headers={"content-type": "application/json"})
    assert response.status_code == status and response.json()["error"]["code"] == "invalid_json"


def test_an_oversize_body_gets_413_and_the_server_keeps_serving(client, engine):
    with pytest.raises(openai.APIStatusError) as caught:
        ask(client, engine, "x" * (2 * 1024 * 1024))
    assert caught.value.status_code == 413 and caught.value.body["code"] == "request_too_large"
    assert ask(client, engine, "Hello").choices[0].message.content


def test_credentials_are_required_when_a_key_or_accounts_are_set(engine):
    with serve_api(engine, defaults=GREEDY, api_key=KEY, auth=[("ann", "s3cret")]) as server:
        def client_with(key):
            return openai.OpenAI(base_url=server.url + "/v1", api_key=key, max_retries=0, timeout=30)

        for wrong in ("", "wrong-key", "ann:wrong"):
            with pytest.raises(openai.AuthenticationError):
                ask(client_with(wrong or "x"), engine, "Hi")
            with pytest.raises(openai.AuthenticationError):
                client_with(wrong or "x").models.list()
        assert ask(client_with(KEY), engine, "Hi").choices[0].message.content
        assert ask(client_with("ann:s3cret"), engine, "Hi").choices[0].message.content
        assert httpx.get(server.url + "/v1/models", auth=("ann", "s3cret")).status_code == 200
        refused = httpx.get(server.url + "/v1/models")
        assert refused.status_code == 401 and refused.json()["error"]["code"] == "invalid_api_key"


def test_closing_the_stream_stops_the_servers_generation(client, engine):
    stream = ask(client, engine, "Hello", max_tokens=3000, stream=True)
    for _, _ in zip(stream, range(3)):
        pass
    generation = engine.generations[-1]
    stream.close()
    assert wait_for(lambda: finished(generation), WAIT_S)
    assert generation.stats.stop_reason == StopReason.CANCELLED
    assert generation.stats.new_tokens < 3000


def test_a_client_that_gives_up_on_a_whole_answer_stops_it_too(tiny_chat_dir):
    # Paced: the whole answer (up to ~500 tokens here) takes at least a second on any CPU, twice the client's patience.
    engine = RecordingEngine(paced(make_engine(tiny_chat_dir, endless=True)))
    body = {"model": engine.name, "messages": HI, "max_tokens": 3000}
    with serve_api(engine, defaults=GREEDY) as server:
        with pytest.raises(httpx.ReadTimeout):
            httpx.post(server.url + "/v1/chat/completions", json=body, timeout=httpx.Timeout(30, read=0.5))
        generation = engine.generations[-1]
        assert wait_for(lambda: finished(generation), WAIT_S)
    assert generation.stats.stop_reason == StopReason.CANCELLED


def test_a_busy_server_answers_429_then_serves_again(engine):
    with serve_api(engine, defaults=GREEDY, max_parallel=1, queue_wait_s=0.2) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0, timeout=30)
        stream = ask(client, engine, "Hello", max_tokens=3000, stream=True)
        next(iter(stream))
        with pytest.raises(openai.RateLimitError) as caught:
            ask(client, engine, "Hi")
        assert caught.value.response.headers["retry-after"]
        stream.close()
        generation = engine.generations[-1]
        assert wait_for(lambda: finished(generation), WAIT_S)
        assert wait_for(lambda: _answers(client, engine), WAIT_S)


def _answers(client, engine) -> bool:
    try:
        return bool(ask(client, engine, "Hi").choices[0].message.content)
    except openai.RateLimitError:
        return False


def test_the_api_on_a_launched_gradio_app_streams_and_checks_credentials(engine):
    """app.py mounts the API on `demo.app` after launch; Gradio's auth doesn't cover it, ours must."""
    gr = pytest.importorskip("gradio")
    from chat.api.server import mount_api

    with gr.Blocks() as demo:
        gr.Markdown("chat")
    demo.launch(prevent_thread_lock=True, server_name="127.0.0.1", server_port=free_port(), auth=[("ann", "s3cret")], quiet=True)
    try:
        mount_api(demo.app, engine=engine, skills=TEST_SKILLS, defaults=GREEDY, auth=[("ann", "s3cret")])
        base = demo.local_url.rstrip("/") + "/v1"
        with pytest.raises(openai.AuthenticationError):
            openai.OpenAI(base_url=base, api_key="nobody", max_retries=0).models.list()
        client = openai.OpenAI(base_url=base, api_key="ann:s3cret", max_retries=0, timeout=30)
        text, usage, _ = ask_streaming(client, engine, "Hello")
        assert text and usage.completion_tokens == GREEDY.max_new_tokens
    finally:
        threading.Thread(target=demo.close, daemon=True).start()  # closing waits on idle connections; don't


def test_continue_final_message_continues_the_answer_and_anything_else_is_refused(client, engine):
    first = ask(client, engine, "Tell me a story").choices[0].message.content
    messages = [{"role": "user", "content": "Tell me a story"}, {"role": "assistant", "content": first}]
    more = client.chat.completions.create(model=engine.name, messages=messages,
                                          extra_body={"continue_final_message": True, "add_generation_prompt": False})
    fitted = engine.generations[-1].fitted
    assert more.choices[0].message.content and fitted.continues
    assert fitted.prompt.text.endswith(first)  # the model was asked for more of that answer, not a new turn
    with pytest.raises(openai.BadRequestError, match="the last message must be the user's, not 'assistant'"):
        client.chat.completions.create(model=engine.name, messages=messages)
    with pytest.raises(openai.BadRequestError, match="continue_final_message needs the answer to continue last"):
        client.chat.completions.create(model=engine.name, messages=[messages[0]], extra_body={"continue_final_message": True})
