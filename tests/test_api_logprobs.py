"""/v1/chat/completions with `logprobs`: each token of the answer with its logprob and likeliest
alternatives, as the official `openai` client and LangChain read them, from an engine alone and batched."""

from __future__ import annotations

import math

import openai
import pytest
from langchain_openai import ChatOpenAI

from chat.api.logprobs import content, sendable
from chat.answer_tokens import PENALIZED, TOP, Alternative, Distribution, TokenStep
from tests.helpers.api_servers import serve_api
from tests.helpers.engines import engine_on, load_quietly
from tests.helpers.settings import greedy

GREEDY = greedy(12)  # the server's defaults
INSTRUCTIONS = "Be nice."
HELLO = [{"role": "user", "content": "Hello"}]


@pytest.fixture(scope="module")
def loaded(tiny_chat_dir):
    return load_quietly(tiny_chat_dir)


@pytest.fixture(scope="module", params=["alone", "batched"])
def engine(request, loaded):
    """A tiny engine that never meets end-of-sequence, so every answer runs to its token limit."""
    return engine_on(loaded, batching=request.param == "batched", endless=True)


@pytest.fixture(scope="module")
def server(engine):
    with serve_api(engine, defaults=GREEDY, instructions=INSTRUCTIONS) as server:
        yield server


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0, timeout=30)


def ask(client, engine, **fields):
    return client.chat.completions.create(model=engine.name, messages=HELLO, **fields)


def ask_streaming(client, engine, **fields):
    """(text, token entries) of a streamed answer; checks on the way that each token comes with its
    text: never before it, and (but for the last, completed at the end) not after."""
    text, entries, after_the_text = "", [], 0
    for chunk in ask(client, engine, stream=True, **fields):
        for choice in chunk.choices:
            text += choice.delta.content or ""
            new = choice.logprobs.content if choice.logprobs else []
            entries += new
            after_the_text += 0 if choice.delta.content else len(new)
            assert text.startswith("".join(entry.token for entry in entries))
    assert after_the_text <= 1
    return text, entries


def recorded(engine, settings=GREEDY):
    """The steps the engine itself records for the same request, as they are reported: up to the last
    that adds text (an unfinished character's first bytes at the token limit add none)."""
    messages = [{"role": "system", "content": INSTRUCTIONS}, *HELLO]
    generation = engine.generate(engine.prepare(messages, settings), settings, tokens=True)
    text = "".join(generation)
    steps = list(generation.tokens.steps)
    while steps and not steps[-1].text:
        steps.pop()
    return text, steps


def reported(logprob: float) -> float:
    return max(logprob, -9999.0)  # OpenAI's stand-in for -inf


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
def test_the_tokens_join_to_the_answer_and_are_what_the_engine_records(client, engine, streaming):
    if streaming:
        text, entries = ask_streaming(client, engine, logprobs=True, top_logprobs=5)
    else:
        choice = ask(client, engine, logprobs=True, top_logprobs=5).choices[0]
        text, entries = choice.message.content, choice.logprobs.content
    expected_text, steps = recorded(engine)
    assert text == expected_text != ""
    assert "".join(entry.token for entry in entries) == text
    assert [entry.token for entry in entries] == [step.text for step in steps]
    for entry, step in zip(entries, steps):
        dist = step.dists[PENALIZED]  # the model's own after the repetition penalty
        assert entry.logprob == pytest.approx(dist.logprob, abs=1e-5)
        assert entry.bytes == list(entry.token.encode())
        assert [t.token for t in entry.top_logprobs] == [a.text for a in dist.top[:5]]
        assert [t.logprob for t in entry.top_logprobs] == pytest.approx([reported(a.logprob) for a in dist.top[:5]], abs=1e-5)


@pytest.mark.parametrize("streaming", [False, True], ids=["whole", "streamed"])
def test_a_greedy_answers_tokens_are_the_top_one_and_the_count_asked_is_honoured(client, engine, streaming):
    # A long answer and a strong penalty: many of its tokens are not the model's own top-1.
    fields = {"logprobs": True, "max_tokens": 40, "extra_body": {"repetition_penalty": 2.0}}
    for count in (0, 5, TOP):
        if streaming:
            _, entries = ask_streaming(client, engine, top_logprobs=count, **fields)
        else:
            entries = ask(client, engine, top_logprobs=count, **fields).choices[0].logprobs.content
        assert len(entries) >= 30  # (a character split over tokens: one entry)
        assert all(len(entry.top_logprobs) == count for entry in entries)
        if count:  # greedy: each token is the likeliest
            assert all(entry.logprob == pytest.approx(entry.top_logprobs[0].logprob, abs=1e-6) for entry in entries)


def test_temperature_changes_the_token_drawn_not_the_logprobs(client, engine):
    greedy = ask(client, engine, logprobs=True, top_logprobs=TOP).choices[0].logprobs.content[0]
    hot = ask(client, engine, logprobs=True, top_logprobs=TOP, temperature=1.8, seed=3).choices[0].logprobs.content[0]
    assert [(t.token, t.logprob) for t in hot.top_logprobs] == [(t.token, t.logprob) for t in greedy.top_logprobs]


def test_without_logprobs_there_are_none(client, engine):
    assert ask(client, engine).choices[0].logprobs is None
    assert ask(client, engine, logprobs=True).choices[0].logprobs.content[0].top_logprobs == []


def test_an_answer_without_token_data_has_logprobs_null(engine):
    with serve_api(engine, defaults=GREEDY.replace(num_beams=2)) as beams:  # beam search records none
        client = openai.OpenAI(base_url=beams.url + "/v1", api_key="unused", max_retries=0, timeout=30)
        choice = ask(client, engine, logprobs=True).choices[0]
    assert choice.message.content and choice.logprobs is None


def test_a_token_ruled_out_is_sent_as_openais_minus_9999_and_the_end_of_the_turn_is_left_out():
    hi = TokenStep(1, "Hi", {PENALIZED: Distribution(-0.1, 0.5, [Alternative(1, "Hi", -0.1), Alternative(7, "x", -math.inf)])})
    end = TokenStep(2, "", {PENALIZED: Distribution(-0.2, 0.1, [Alternative(2, "<|im_end|>", -0.2, special=True)])})
    entries = content(sendable([hi, end]), top=2)  # (a tiny model rarely ends its turn or rules a token out)
    assert [entry["token"] for entry in entries] == ["Hi"]
    assert entries[0]["top_logprobs"] == [{"token": "Hi", "logprob": -0.1, "bytes": [72, 105]},
                                          {"token": "x", "logprob": -9999.0, "bytes": [120]}]


BAD_VALUES = [  # (fields, the param named)
    ({"logprobs": True, "top_logprobs": TOP + 1}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": -1}, "top_logprobs"),
    ({"logprobs": True, "top_logprobs": 2.5}, "top_logprobs"),
    ({"top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": False, "top_logprobs": 3}, "top_logprobs"),
    ({"logprobs": "yes"}, "logprobs"),
    ({"logprobs": True, "n": 2}, "n"),
]


@pytest.mark.parametrize("fields, param", BAD_VALUES, ids=[str(fields) for fields, _ in BAD_VALUES])
def test_bad_values_get_a_400_naming_the_field(client, engine, fields, param):
    with pytest.raises(openai.BadRequestError) as caught:
        client.post("/chat/completions", body={"model": engine.name, "messages": HELLO, **fields}, cast_to=object)
    assert caught.value.body["param"] == param and caught.value.body["message"]


def test_langchain_reads_the_tokens_of_an_answer_whole_and_streamed(server, engine):
    chat = ChatOpenAI(model=engine.name, base_url=server.url + "/v1", api_key="unused", logprobs=True, max_retries=0, timeout=30)
    whole = chat.invoke("Hello")
    assert whole.content and "".join(t["token"] for t in whole.response_metadata["logprobs"]["content"]) == whole.content
    chunks = list(chat.stream("Hello"))
    streamed = sum(chunks[1:], start=chunks[0])  # LangChain adds chunks up: texts joined, logprobs lists concatenated
    assert streamed.content == whole.content
    assert "".join(t["token"] for t in streamed.response_metadata["logprobs"]["content"]) == whole.content
