"""The token data of an answer: the model's own probabilities, the reshaped ones, the alternatives, the texts."""

from __future__ import annotations

import math

import pytest
import torch

from chat.settings import GenerationSettings
from chat.tokens import MODEL, PENALIZED, SAMPLED, TokenLog, TokenTexts, token_texts
from tests.helpers.engines import engine_on, load_quietly

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def loaded(tiny_chat_dir):
    return load_quietly(tiny_chat_dir)


@pytest.fixture(scope="module")
def alone(loaded):
    return engine_on(loaded)


@pytest.fixture(scope="module")
def batched(loaded):
    return engine_on(loaded, batching=True)


def answer(engine, settings: GenerationSettings, messages=MESSAGES):
    generation = engine.generate(engine.prepare(messages, settings), settings, tokens=True)
    text = "".join(generation)
    return generation, text


def forward_logprobs(engine, ids: list[int]) -> torch.Tensor:
    """The model's log-probabilities for the token after each prefix of `ids`, by one direct forward pass."""
    with torch.inference_mode():
        logits = engine.model(input_ids=torch.tensor([ids])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


def test_the_probabilities_shown_are_the_models_own(alone):
    settings = GenerationSettings(temperature=0, max_new_tokens=12, repetition_penalty=1.0)
    generation, text = answer(alone, settings)
    log = generation.tokens
    assert log is not None and len(log) > 3
    prompt = generation.fitted.prompt.ids
    ids = [step.id for step in log.steps]
    expected = forward_logprobs(alone, prompt + ids)[len(prompt) - 1 :]
    for position, step in enumerate(log.steps):
        row = expected[position]
        assert step.dists[MODEL].logprob == pytest.approx(float(row[step.id]), abs=1e-5)
        top = torch.topk(row, 5)
        assert [a.id for a in step.dists[MODEL].top[:5]] == top.indices.tolist()
        assert [a.logprob for a in step.dists[MODEL].top[:5]] == pytest.approx(top.values.tolist(), abs=1e-5)
        entropy = float(-(row.exp() * row).sum())
        assert step.dists[MODEL].entropy == pytest.approx(entropy, abs=1e-4)
        assert step.id == top.indices[0]  # greedy, no penalty: the likeliest
    assert log.text == text


def test_greedy_tokens_are_the_top_one_of_what_the_penalty_left(alone):
    settings = GenerationSettings(temperature=0, max_new_tokens=24, repetition_penalty=1.5)
    generation, _ = answer(alone, settings)
    for step in generation.tokens.steps:
        assert step.id == step.dists[PENALIZED].top[0].id
        assert step.dists[SAMPLED] == step.dists[PENALIZED]  # greedy: nothing reshapes it further


def test_top_k_keeps_k_tokens_and_temperature_sharpens_them(alone):
    settings = GenerationSettings(temperature=0.5, top_k=3, top_p=1.0, repetition_penalty=1.0, max_new_tokens=10, seed=7)
    generation, _ = answer(alone, settings)
    for step in generation.tokens.steps:
        model, sampled = step.dists[MODEL], step.dists[SAMPLED]
        possible = [a for a in sampled.top if a.logprob > -math.inf]
        assert [a.id for a in possible] == [a.id for a in model.top[:3]]
        kept = torch.tensor([a.logprob for a in model.top[:3]]) / 0.5  # logits up to a constant, tempered
        assert [a.logprob for a in possible] == pytest.approx(torch.log_softmax(kept, dim=-1).tolist(), abs=1e-5)
        assert step.id in {a.id for a in possible}


def test_top_p_keeps_the_fewest_tokens_that_hold_p(alone):
    p = 0.02  # a random tiny model spreads its probability thin: a few of its 20 likeliest hold this
    settings = GenerationSettings(temperature=1.0, top_k=0, top_p=p, repetition_penalty=1.0, max_new_tokens=10, seed=3)
    generation, _ = answer(alone, settings)
    for step in generation.tokens.steps:
        model, sampled = step.dists[MODEL], step.dists[SAMPLED]
        kept = [a for a in sampled.top if a.logprob > -math.inf]
        held = [a.probability for a in model.top]
        needed = next(n for n in range(1, len(held) + 1) if sum(held[:n]) >= p)
        assert len(kept) == needed
        assert sum(a.probability for a in kept) == pytest.approx(1.0, abs=1e-5)


def test_batched_tokens_equal_alone(alone, batched):
    settings = GenerationSettings(temperature=0.9, top_k=20, top_p=0.95, max_new_tokens=16, seed=11)
    one, one_text = answer(alone, settings)
    other, other_text = answer(batched, settings)
    assert one_text == other_text
    assert [s.id for s in one.tokens.steps] == [s.id for s in other.tokens.steps]
    for a, b in zip(one.tokens.steps, other.tokens.steps):
        for name in (MODEL, SAMPLED):
            assert a.dists[name].logprob == pytest.approx(b.dists[name].logprob, abs=1e-5)
            assert [x.id for x in a.dists[name].top[:5]] == [x.id for x in b.dists[name].top[:5]]


def test_recording_does_not_change_the_answer(alone, batched):
    settings = GenerationSettings(temperature=0.9, max_new_tokens=16, seed=5)
    for engine in (alone, batched):
        plain = engine.generate(engine.prepare(MESSAGES, settings), settings)
        assert "".join(plain) == answer(engine, settings)[1]
        assert plain.tokens is None  # not asked: nothing recorded


def test_alternatives_carry_their_own_text_and_specials_are_named(alone):
    settings = GenerationSettings(temperature=0, max_new_tokens=8)
    generation, _ = answer(alone, settings)
    alternatives = [a for step in generation.tokens.steps for a in step.dists[MODEL].top]
    assert all(a.text for a in alternatives)
    specials = [a for a in alternatives if a.special]
    assert all(a.text.startswith("<|") for a in specials)


def test_token_texts_join_to_the_decoded_text_even_with_split_characters(alone):
    tokenizer = alone.tokenizer
    text = "Grüße 😀 aus Köln"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert len(ids) > len(text.split())  # the emoji is several byte tokens
    texts = token_texts(alone.decode_answer, ids)
    assert "".join(texts) == text
    assert "😀" in texts or any("😀" in piece for piece in texts)
    assert not any("\ufffd" in piece for piece in texts)
    incremental = TokenTexts(alone.decode_answer)
    for token in ids:
        incremental.feed([token])
    assert "".join(incremental.feed([], final=True)) == text


def test_a_log_survives_its_stored_form(alone):
    generation, _ = answer(alone, GenerationSettings(temperature=0.7, top_k=5, max_new_tokens=6, seed=1))
    log = generation.tokens
    again = TokenLog.from_bytes(log.to_bytes())
    assert again == log
