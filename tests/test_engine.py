"""The engine on a tiny real model: streaming, stats, sampling, stop strings, cancel, worker errors."""

from __future__ import annotations


import pytest
import torch

from chat.engine import StopReason
from chat.errors import GenerationError
from chat.settings import GenerationSettings
from tests.helpers.engines import make_engine
from tests.helpers.settings import greedy
from tests.helpers.tiny_models import save_tiny_model
from tests.helpers.waiting import wait_for

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello, how are you?"}]
GREEDY = greedy(24)
pytestmark = pytest.mark.usefixtures("no_worker_left")


def run(engine, settings=GREEDY, messages=MESSAGES, stops=()):
    generation = engine.generate(engine.prepare(messages, settings), settings, stops)
    deltas = list(generation)
    return generation, deltas


def scripted(monkeypatch, engine, answer: str) -> None:
    """Makes the model answer `answer` (then EOS), through the real generate, streamer and filter.

    A random tiny model can't be steered to write an emoji or a stop string; this overrides the
    last position's logits after the real forward pass, so everything else runs for real.
    """
    ids = engine.tokenizer(answer, add_special_tokens=False)["input_ids"] + [min(engine.eos_ids)]
    forward, step = engine.model.forward, [0]

    def forced(*args, **kwargs):
        output = forward(*args, **kwargs)
        input_ids = kwargs.get("input_ids", args[0] if args else None)
        if input_ids.shape[-1] > 1:  # the prompt: a new generation starts
            step[0] = 0
        logits = torch.full_like(output.logits[:, -1, :], -1e4)
        logits[:, ids[min(step[0], len(ids) - 1)]] = 0.0
        output.logits[:, -1, :] = logits
        step[0] += 1
        return output

    monkeypatch.setattr(engine.model, "forward", forced)


@pytest.fixture
def scripted_engine(tiny_chat_dir):
    return make_engine(tiny_chat_dir)


# -- streaming and stats -------------------------------------------------------------------


def test_deltas_add_up_to_the_answer_and_stats_are_filled(tiny_engine):
    fitted = tiny_engine.prepare(MESSAGES, GREEDY)
    generation = tiny_engine.generate(fitted, GREEDY)
    deltas = list(generation)
    stats = generation.stats
    assert deltas and all(deltas)
    assert "".join(deltas) == generation.text
    assert stats.prompt_tokens == len(fitted.prompt.ids)
    assert 0 < stats.new_tokens <= GREEDY.max_new_tokens
    assert stats.time_to_first_token is not None and stats.time_to_first_token > 0
    assert stats.tokens_per_second is not None and stats.tokens_per_second > 0
    assert stats.stop_reason in (StopReason.EOS, StopReason.MAX_TOKENS)
    assert f"{stats.new_tokens} tokens" in stats.summary()


def test_greedy_is_deterministic(chatty_engine):
    first, _ = run(chatty_engine)
    second, _ = run(chatty_engine)
    assert first.text and first.text == second.text


def test_a_seed_reproduces_sampling(chatty_engine):
    sampled = GenerationSettings(temperature=1.0, top_p=1.0, top_k=0, max_new_tokens=24, seed=1234)
    texts = [run(chatty_engine, sampled)[0].text for _ in range(2)]
    other = run(chatty_engine, sampled.replace(seed=4321))[0].text
    assert texts[0] == texts[1]
    assert other != texts[0]  # the seed really drives the sampling


def test_max_new_tokens_is_respected(chatty_engine):
    generation, _ = run(chatty_engine, GREEDY.replace(max_new_tokens=7))
    assert generation.stats.new_tokens == 7
    assert generation.stats.stop_reason == StopReason.MAX_TOKENS


def fresh_piece(text: str, after: int, size: int = 3) -> int:
    """Where a printable ASCII piece of `text` starts that does not occur earlier in it."""
    for i in range(after, len(text) - size):
        piece = text[i : i + size]
        if piece.isascii() and piece.isprintable() and piece.strip() == piece and text.find(piece) == i:
            return i
    raise AssertionError(f"no usable stop string in {text!r}")


def test_a_stop_string_ends_the_answer_exactly(chatty_engine):
    full = run(chatty_engine, GREEDY.replace(max_new_tokens=40))[0].text
    start = fresh_piece(full, after=8)
    stop = full[start : start + 3]
    generation, deltas = run(chatty_engine, GREEDY.replace(max_new_tokens=40), stops=(stop,))
    assert generation.text == full[:start]
    assert stop not in "".join(deltas)
    assert generation.stats.stop_reason == StopReason.STOP_STRING
    assert generation.stats.new_tokens < 40


def test_transcript_answer_ends_before_a_new_user_turn(monkeypatch, tiny_chat_dir):
    engine = make_engine(tiny_chat_dir, prompt_format="transcript")
    scripted(monkeypatch, engine, " Hi there!\nUser: and now I speak for you")
    generation, deltas = run(engine)
    assert generation.text == "Hi there!"  # the space after "Assistant:" is not part of the answer
    assert "\nUs" not in "".join(deltas)
    assert generation.stats.stop_reason == StopReason.STOP_STRING


def test_unicode_streams_whole_characters(monkeypatch, scripted_engine):
    answer = "Grüße 😀 ünïcödé 日本"
    scripted(monkeypatch, scripted_engine, answer)
    generation, deltas = run(scripted_engine)
    assert generation.text == answer
    assert not any("\ufffd" in delta for delta in deltas)
    assert generation.stats.stop_reason == StopReason.EOS


def test_an_answer_cut_inside_a_character_shows_no_replacement_character(monkeypatch, scripted_engine):
    answer = "Grüße 😀 ünïcödé"
    scripted(monkeypatch, scripted_engine, answer)
    tokenizer = scripted_engine.tokenizer
    ids = tokenizer(answer, add_special_tokens=False)["input_ids"]
    # Limits that end inside ß, 😀 or ï: those characters take several byte tokens here.
    limits = [n for n in range(1, len(ids)) if tokenizer.decode(ids[:n]).endswith("\ufffd")]
    assert len(limits) >= 3
    for limit in limits:
        generation, deltas = run(scripted_engine, GREEDY.replace(max_new_tokens=limit))
        assert not any("\ufffd" in delta for delta in deltas), (limit, deltas)
        assert answer.startswith(generation.text), (limit, generation.text)


def test_beam_search_returns_the_answer_in_one_piece(tiny_engine):
    generation, deltas = run(tiny_engine, GREEDY.replace(num_beams=2, max_new_tokens=12))
    assert len(deltas) == 1 and deltas[0] == generation.text != ""
    assert generation.stats.stop_reason in (StopReason.EOS, StopReason.MAX_TOKENS)


def test_a_seeded_sampled_beam_search_reproduces_and_leaves_the_global_generator_alone(tiny_engine):
    """Beam search samples with torch's global generator: a seeded one runs on a forked, seeded copy, so it
    neither changes other draws in the process nor depends on them."""
    settings = GenerationSettings(temperature=1.0, num_beams=2, seed=7, max_new_tokens=12)
    before = torch.random.get_rng_state()
    first, _ = run(tiny_engine, settings)
    assert torch.equal(torch.random.get_rng_state(), before)
    torch.rand(5)  # something else draws from the global generator in between
    again, _ = run(tiny_engine, settings)
    assert again.text == first.text


# -- stopping a generation ---------------------------------------------------------------


@pytest.fixture(scope="module")
def long_chatty_engine(tmp_path_factory):
    """Room for 2000 new tokens (several seconds of work) and no end-of-sequence token."""
    return make_engine(save_tiny_model(tmp_path_factory.mktemp("tiny-long"), context=4096), endless=True)


@pytest.mark.timeout(60)
def test_cancel_stops_the_worker_quickly(long_chatty_engine):
    settings = GREEDY.replace(max_new_tokens=2000)
    generation = long_chatty_engine.generate(long_chatty_engine.prepare(MESSAGES, settings), settings)
    stream = iter(generation)
    shown = [next(stream) for _ in range(3)]
    generation.cancel()
    assert wait_for(lambda: not generation.running, 1.0), "the model kept computing after Stop"
    shown += list(stream)  # the reader still gets what was decoded before the stop
    assert "".join(shown) == generation.text
    assert generation.stats.stop_reason == StopReason.CANCELLED
    assert 0 < generation.stats.new_tokens < 200


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["close", "break"])
def test_a_reader_that_goes_away_stops_the_worker(monkeypatch, long_chatty_engine, how):
    forward, steps = long_chatty_engine.model.forward, []
    monkeypatch.setattr(long_chatty_engine.model, "forward", lambda *a, **k: steps.append(1) or forward(*a, **k))
    settings = GREEDY.replace(max_new_tokens=2000)
    generation = long_chatty_engine.generate(long_chatty_engine.prepare(MESSAGES, settings), settings)
    if how == "close":
        stream = iter(generation)
        next(stream), next(stream)
        stream.close()
    else:
        for count, _ in enumerate(generation):
            if count == 2:
                break
    assert not generation.running  # the model's thread has ended: it computes nothing more
    assert len(steps) < 200  # stopped within a step or two, not after 2000 tokens


@pytest.mark.timeout(60)
def test_a_crash_in_the_worker_reaches_the_reader_and_the_next_answer_works(monkeypatch, scripted_engine):
    forward, calls = scripted_engine.model.forward, []

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 4:
            raise RuntimeError("simulated failure at step 4")
        return forward(*args, **kwargs)

    monkeypatch.setattr(scripted_engine.model, "forward", failing)
    with pytest.raises(GenerationError, match="generation failed: RuntimeError: simulated failure at step 4"):
        run(scripted_engine)
    monkeypatch.undo()
    generation, _ = run(scripted_engine)
    assert generation.text and generation.stats.new_tokens > 0
