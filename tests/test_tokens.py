"""The token data of an answer: the model's own probabilities, the reshaped ones, the alternatives, the texts."""

from __future__ import annotations

import math

import pytest
import torch

from chat.settings import GenerationSettings
from chat.answer_tokens import MODEL, PENALIZED, SAMPLED, TokenLog, TokenTexts, token_texts
from tests.helpers.engines import engine_on, load_quietly
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy

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
    settings = greedy(12, repetition_penalty=1.0)
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
    settings = greedy(24, repetition_penalty=1.5)
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
    settings = greedy()
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


# -- in a session: Continue, another token, Reproduce, the store ---------------------------------------


def sampling_session(engine, settings: GenerationSettings | None = None):
    from chat.skills_file import load_skills

    return seeded_session(engine, load_skills(), "Be brief.", settings or GenerationSettings(temperature=1.0, max_new_tokens=10))


def test_an_answer_and_its_continuation_keep_tokens_that_join_to_its_text(chatty_engine):
    session = sampling_session(chatty_engine)
    "".join(session.send("Hello", tokens=True))
    answer = session.history[-1]
    first = session.token_logs.of(answer)
    assert first is not None and len(first) == 10 and first.text == answer["content"]
    "".join(session.continue_answer(tokens=True))
    both = session.token_logs.of(answer)
    assert len(both) == 20 and both.text == answer["content"]
    assert both.steps[:10] == first.steps


def test_no_token_data_when_the_view_is_closed(tiny_engine):
    session = sampling_session(tiny_engine)
    "".join(session.send("Hello", tokens=False))
    assert session.token_logs.of(session.history[-1]) is None


def test_another_token_makes_a_version_that_goes_on_from_it_and_reproduces(chatty_engine):
    session = sampling_session(chatty_engine)
    "".join(session.send("Hello", tokens=True))
    old = session.history[-1]
    log = session.token_logs.of(old)
    position = 4
    choice = next(a for a in log.steps[position].dists[MODEL].top if a.id != log.steps[position].id and not a.special)
    reply = session.take_token(1, position, choice, tokens=True)
    text = "".join(reply)
    new = session.history[-1]
    prefix = "".join(step.text for step in log.steps[:position]) + choice.text
    assert new["content"] == prefix + text and new["id"] != old["id"]
    assert session.tree.versions(session.history) == [(1, 2, 2)]  # a version beside the old answer, which stays
    kept = session.token_logs.of(new)
    assert [s.id for s in kept.steps[: position + 1]] == [s.id for s in log.steps[:position]] + [choice.id]
    assert kept.text == new["content"]
    fork = new["provenance"].fork
    assert fork.from_id == old["id"] and fork.token == position and fork.chosen == choice.text
    again = "".join(session.reproduce(tokens=True))
    assert session.history[-1]["content"] == new["content"] and again == text  # same fork, same seed: same text
    session.switch(1, -2)
    assert session.history[-1]["content"] == old["content"]


def test_choosing_the_end_of_turn_ends_the_new_version_there(tiny_engine):
    session = sampling_session(tiny_engine, greedy())
    "".join(session.send("Hello", tokens=True))
    log = session.token_logs.of(session.history[-1])
    end = tiny_engine.tokenizer.convert_tokens_to_ids("<|im_end|>")
    from chat.answer_tokens import Alternative

    assert session.take_token(1, 2, Alternative(end, "<|im_end|>", -3.0, special=True)) is None
    assert session.history[-1]["content"] == "".join(step.text for step in log.steps[:2]).lstrip()
    assert not session.busy


def test_token_data_comes_back_from_the_store_for_its_owner_only(tiny_engine, tmp_path):
    from chat.store.record import ChatRecord, settings_of, tree_of
    from chat.store.store import Store

    store = Store(f"sqlite:///{tmp_path / 'chats.sqlite3'}")
    session = sampling_session(tiny_engine)
    session.record = ChatRecord.new(store, "alice", session.instructions, session.settings)
    "".join(session.send("Hello", tokens=True))
    answer = session.history[-1]
    recorded = session.token_logs.of(answer)
    chat = store.open_chat("alice", session.record.chat_id)
    again = sampling_session(tiny_engine)
    again.open(ChatRecord(store, "alice", chat.id), *tree_of(chat), chat.instructions, settings_of(chat, GenerationSettings()))
    assert again.token_logs.of(again.history[-1]) == recorded
    assert store.tokens("mallory", chat.id, answer["id"]) is None


def test_the_token_view_escapes_what_the_model_wrote():
    from chat.answer_tokens import Alternative, Distribution, TokenStep
    from chat.web.token_html import chips, details

    evil = "<img src=x onerror=alert(1)>"
    dist = Distribution(-0.1, 0.5, [Alternative(1, evil, -0.1), Alternative(2, "<script>", -2.5)])
    log = TokenLog([TokenStep(1, evil, {MODEL: dist, PENALIZED: dist, SAMPLED: dist})])
    shown = chips(log, MODEL, picked=0) + details(log, 0, MODEL)
    assert "<img" not in shown and "<script>" not in shown
    assert "&lt;img" in shown and "&lt;script&gt;" in shown


def test_the_panel_says_why_a_beam_search_answer_has_no_tokens(tiny_engine):
    from chat.web.panels.tokens import BEAMS, view
    from chat.web.tabs import Tab

    session = sampling_session(tiny_engine, greedy(6, num_beams=2))
    "".join(session.send("Hello", tokens=True))
    assert session.token_logs.of(session.history[-1]) is None
    assert BEAMS.split("**")[0] in view(Tab(session, record_tokens=True), MODEL)["token_chips"]
