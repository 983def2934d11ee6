"""Fitting a conversation into a small (128-token) context: what goes, what stays, what the user is told."""

from __future__ import annotations

import pytest

from chat.context import TRIM_NOTICE, fit_to_context
from chat.errors import ChatError
from chat.formats import encode
from chat.settings import GenerationSettings
from tests.helpers.engines import make_engine
from tests.helpers.tiny_models import save_tiny_model

CONTEXT = 128
SYSTEM = {"role": "system", "content": "Be brief."}
CURRENT = {"role": "user", "content": "And now?"}


def exchange(i: int) -> list[dict]:
    return [{"role": "user", "content": f"Hello {i}?"}, {"role": "assistant", "content": f"Fine {i}."}]


HISTORY = [message for i in range(1, 9) for message in exchange(i)]


@pytest.fixture(scope="module")
def small_dir(tmp_path_factory):
    return save_tiny_model(tmp_path_factory.mktemp("tiny-128"), context=CONTEXT)


@pytest.fixture(scope="module", params=["chat-template", "transcript"])
def small_engine(request, small_dir):
    engine = make_engine(small_dir, prompt_format=request.param)
    assert engine.context_window == CONTEXT
    return engine


def settings(max_new_tokens: int) -> GenerationSettings:
    return GenerationSettings(temperature=0, max_new_tokens=max_new_tokens)


def test_a_short_conversation_is_sent_whole(small_engine):
    messages = [SYSTEM, *exchange(1), CURRENT]
    fitted = small_engine.prepare(messages, settings(16))
    assert fitted.messages == messages
    assert (fitted.dropped_messages, fitted.message_trimmed, fitted.notice) == (0, False, None)
    assert fitted.max_new_tokens == 16
    assert fitted.prompt.text == small_engine.render(messages)


def test_oldest_exchanges_go_first_instructions_and_current_message_stay(small_engine):
    messages = [SYSTEM, *HISTORY, CURRENT]
    fitted = small_engine.prepare(messages, settings(32))
    kept = fitted.messages
    assert kept[0] == SYSTEM and kept[-1] == CURRENT
    kept_history = kept[1:-1]
    assert 0 < len(kept_history) < len(HISTORY)
    assert kept_history == HISTORY[len(HISTORY) - len(kept_history) :]  # the newest ones
    assert kept_history[0]["role"] == "user"  # whole exchanges go, never half of one
    assert fitted.dropped_messages == len(HISTORY) - len(kept_history)
    assert fitted.notice == (
        f"Note: the {fitted.dropped_messages} oldest messages were left out to fit the model's context."
    )
    assert fitted.prompt.text == small_engine.render(kept)
    assert len(fitted.prompt.ids) + fitted.max_new_tokens <= CONTEXT
    # Only as much as needed went: one more exchange would not have fitted beside the answer.
    one_more = [SYSTEM, *HISTORY[fitted.dropped_messages - 2 :], CURRENT]
    assert len(encode(small_engine.format, small_engine.tokenizer, one_more).ids) > CONTEXT - 32


LONG_MESSAGES = {
    "ascii": "Hello, how are you today? " * 40,
    "emoji": "😀" * 200,
    "umlauts": "Grüße 😀 ünïcödé " * 40,
    "cjk": "日本語のテキスト" * 40,
}


@pytest.mark.parametrize("kind", LONG_MESSAGES)
def test_a_message_too_long_alone_is_cut_with_a_notice(small_engine, kind):
    long_text = LONG_MESSAGES[kind]
    messages = [SYSTEM, *exchange(1), {"role": "user", "content": long_text}]
    fitted = small_engine.prepare(messages, settings(32))
    system, current = fitted.messages
    assert system == SYSTEM
    assert current["content"].endswith(TRIM_NOTICE)
    kept_text = current["content"][: -len(TRIM_NOTICE)]
    assert kept_text and long_text.startswith(kept_text)
    assert "\ufffd" not in current["content"]  # not cut in the middle of a character
    assert fitted.message_trimmed and fitted.dropped_messages == 2
    assert "your message was too long for the model's context and was cut short" in fitted.notice
    assert "the 2 oldest messages were left out" in fitted.notice
    assert len(fitted.prompt.ids) + fitted.max_new_tokens <= CONTEXT
    assert len(fitted.prompt.ids) <= CONTEXT - 32


def test_instructions_that_fill_the_context_are_an_error(small_engine):
    messages = [{"role": "system", "content": "Always answer politely. " * 30}, CURRENT]
    with pytest.raises(ChatError, match="shorten them"):
        small_engine.prepare(messages, settings(32))


@pytest.mark.parametrize("requested", [8, 32, 64, 1000, 32_768])
def test_answer_room_is_capped_so_prompt_and_answer_fit(small_engine, requested):
    messages = [SYSTEM, CURRENT]
    fitted = small_engine.prepare(messages, settings(requested))
    prompt_tokens = len(fitted.prompt.ids)
    assert fitted.max_new_tokens == min(requested, CONTEXT - prompt_tokens)
    # A huge answer limit never pushes the question itself out.
    assert fitted.messages == messages and not fitted.message_trimmed


@pytest.mark.parametrize("window", [100, 160, 256, 400])
@pytest.mark.parametrize("max_new_tokens", [16, 1000])
def test_fit_to_context_keeps_its_promises_for_any_window(small_engine, window, max_new_tokens):
    tokenizer = small_engine.tokenizer
    messages = [SYSTEM, *HISTORY, CURRENT]
    fitted = fit_to_context(
        messages,
        encode=lambda m: encode(small_engine.format, tokenizer, m),
        tokenize=lambda text: tokenizer(text, add_special_tokens=False)["input_ids"],
        detokenize=tokenizer.decode,
        context_window=window,
        max_new_tokens=max_new_tokens,
    )
    kept = fitted.messages[1:-1]
    assert fitted.messages[0] == SYSTEM and fitted.messages[-1] == CURRENT
    assert kept == HISTORY[len(HISTORY) - len(kept) :] and fitted.dropped_messages == len(HISTORY) - len(kept)
    assert len(fitted.prompt.ids) + fitted.max_new_tokens <= window
    assert len(fitted.prompt.ids) <= window - min(max_new_tokens, window // 2)  # room planned for the answer
    assert fitted.max_new_tokens == min(max_new_tokens, window - len(fitted.prompt.ids))


# Uneven exchanges: an answer before any question, a question with two answers, long and short turns.
UNEVEN = [
    {"role": "assistant", "content": "Welcome!"},
    {"role": "user", "content": "Hi " * 9},
    {"role": "assistant", "content": "Hello."},
    {"role": "assistant", "content": "Anything else? " * 3},
    *[m for i in range(2, 12) for m in ({"role": "user", "content": f"Q{i} " * (i % 4 + 1)}, {"role": "assistant", "content": f"A{i}"})],
]


@pytest.mark.parametrize("window", range(60, 200, 7))
def test_as_little_history_is_left_out_as_fits(small_engine, window):
    """The kept history is the longest run of newest whole exchanges that fits, for any window."""
    tokenizer = small_engine.tokenizer
    encode_messages = lambda m: encode(small_engine.format, tokenizer, m)  # noqa: E731
    messages = [SYSTEM, *UNEVEN, CURRENT]
    budget = window - min(16, window // 2)
    fitted = fit_to_context(messages, encode_messages, lambda t: tokenizer(t, add_special_tokens=False)["input_ids"],
                            tokenizer.decode, context_window=window, max_new_tokens=16)
    cuts = [0, *(i for i, m in enumerate(UNEVEN) if i and m["role"] == "user"), len(UNEVEN)]
    fitting = [c for c in cuts if len(encode_messages([SYSTEM, *UNEVEN[c:], CURRENT]).ids) <= budget]
    expected = min(fitting) if fitting else len(UNEVEN)
    assert fitted.dropped_messages == expected
    if not fitted.message_trimmed:
        assert fitted.messages == [SYSTEM, *UNEVEN[expected:], CURRENT]


def test_generation_stops_at_the_capped_room(small_dir):
    engine = make_engine(small_dir, endless=True)  # never ends on its own
    config = settings(1000)
    fitted = engine.prepare([SYSTEM, CURRENT], config)
    generation = engine.generate(fitted, config)
    text = "".join(generation)
    assert text == generation.text
    assert generation.stats.new_tokens == fitted.max_new_tokens == CONTEXT - len(fitted.prompt.ids)
    assert generation.stats.stop_reason == "max tokens"
