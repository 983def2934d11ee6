"""Fitting a conversation into a small (128-token) context: what goes, what stays, what the user is told."""

from __future__ import annotations

import copy
import random

import pytest

from chat.context_window import ESTIMATE_MARGIN_SHARE, LOW_WATER_SHARE, TRIM_NOTICE, FittedPrompt, fit_to_context
from chat.errors import ChatError
from chat.formats import encode
from chat.remote.engine import RemoteEngine, estimate_tokens
from chat.settings import GenerationSettings
from tests.helpers.engines import make_engine
from tests.helpers.settings import greedy
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
    return greedy(max_new_tokens)


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
    assert len(fitted.prompt.ids) <= CONTEXT - 32  # room for the answer


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
def test_a_chat_that_fits_is_sent_whole_and_one_that_does_not_loses_only_its_oldest_exchanges(small_engine, window):
    tokenizer = small_engine.tokenizer
    encode_messages = lambda m: encode(small_engine.format, tokenizer, m)  # noqa: E731
    messages = [SYSTEM, *UNEVEN, CURRENT]
    budget = window - min(16, window // 2)
    fitted = fit_to_context(messages, encode_messages, lambda t: tokenizer(t, add_special_tokens=False)["input_ids"],
                            tokenizer.decode, context_window=window, max_new_tokens=16)
    if len(encode_messages(messages).ids) <= budget:
        assert fitted.messages == messages and fitted.dropped_messages == 0
        return
    cuts = [0, *(i for i, m in enumerate(UNEVEN) if i and m["role"] == "user"), len(UNEVEN)]
    assert fitted.dropped_messages in cuts[1:]  # whole exchanges, never half of one
    if not fitted.message_trimmed:
        assert fitted.messages == [SYSTEM, *UNEVEN[fitted.dropped_messages :], CURRENT]
    assert len(fitted.prompt.ids) <= budget


# -- long chats: trimming with hysteresis ----------------------------------------------------------

def _turns(kind: str, count: int = 30) -> list[tuple[str, str]]:
    """(question, answer) pairs of a chat that outgrows small windows."""
    rng = random.Random(kind)
    if kind == "even":
        return [(f"Question {i}?", f"Answer {i} is short.") for i in range(count)]
    if kind == "growing":
        return [(f"Q{i}?", "More words. " * (1 + i // 3)) for i in range(count)]
    if kind == "uneven":
        return [("Why " * rng.randint(1, 12), "Because " * rng.randint(0, 15)) for _ in range(count)]
    assert kind == "one-long-message"
    turns = [(f"Question {i}?", f"Answer {i}.") for i in range(count)]
    turns[count // 2] = ("Read this: " + "long text " * 120, "Done.")
    return turns


class _Fitter:
    """One engine's fitting at a chosen window, the way a session calls it at every turn."""

    def __init__(self, kind: str, engine, window: int):
        self.window, self.budget = window, window - min(16, window // 2)
        if kind == "remote":  # a server's prompt: counted by estimate (no server needed to fit it)
            self.engine = RemoteEngine("http://127.0.0.1:9/v1", "served-model", context_window=window)
            self.length = lambda messages: estimate_tokens(messages)
        else:
            tokenizer = engine.tokenizer
            self.engine = make_engine_view(engine, window)
            self.length = lambda messages: len(encode(engine.format, tokenizer, messages).ids)

    def chat(self, turns: list[tuple[str, str]]) -> list[tuple[list[dict], FittedPrompt]]:
        history: list[dict] = []
        fitted_turns = []
        for question, answer in turns:
            messages = [SYSTEM, *history, {"role": "user", "content": question}]
            fitted_turns.append((messages, self.engine.prepare(messages, settings(16))))
            history += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        return fitted_turns


def make_engine_view(engine, window: int):
    """The local engine with another context window (the same tokenizer and template)."""
    view = copy.copy(engine)
    view.context_window = window
    return view


@pytest.mark.parametrize("kind", ["chat-template", "transcript", "remote"])
@pytest.mark.parametrize("window", [100, 160, 256, 400])
@pytest.mark.parametrize("turns", ["even", "growing", "uneven", "one-long-message"])
def test_after_a_trim_the_next_turns_keep_the_prompts_beginning_until_it_is_full_again(
        small_dir, kind, window, turns):
    engine = make_engine(small_dir, prompt_format="transcript" if kind == "transcript" else "chat-template")
    fitter = _Fitter(kind, engine, window)
    chat = fitter.chat(_turns(turns))
    low = int(fitter.budget * LOW_WATER_SHARE)
    trims = 0
    for turn, (messages, fitted) in enumerate(chat):
        assert fitted.messages[0] == SYSTEM
        assert fitter.length(fitted.messages) + fitted.max_new_tokens <= window
        if fitter.length(messages) <= fitter.budget and not any(f.dropped_messages for _, f in chat[:turn]):
            assert fitted.messages == messages  # until the chat outgrows the window, it is sent whole
        if turn == 0:
            continue
        before_messages, before = chat[turn - 1]
        history = messages[1:-1]
        if fitted.dropped_messages == before.dropped_messages:  # no trim: the same beginning as the turn before
            kept_before = before.messages[1:-1]
            assert fitted.messages[1 : 1 + len(kept_before)] == kept_before or before.message_trimmed
            continue
        # A trim: only when keeping the old beginning would have (nearly) filled the room ...
        trims += 1
        assert fitted.dropped_messages > before.dropped_messages
        kept_old = [SYSTEM, *history[before.dropped_messages :], messages[-1]]
        assert fitter.length(kept_old) > fitter.budget * (1 - 3 * ESTIMATE_MARGIN_SHARE) - 4
        # ... and then down to the low-water mark (give or take the last exchange, when the trim came
        # one turn early inside the estimate's margin), so that the next turns have room to keep it.
        kept_history = fitted.messages[1:-1]
        last_exchange = fitter.length([SYSTEM, *history[-2:]]) - fitter.length([SYSTEM])
        assert fitter.length(fitted.messages) <= low + last_exchange + 8 or len(kept_history) <= 2 or fitted.message_trimmed
    exchange = fitter.length([SYSTEM, *messages[1:3]]) - fitter.length([SYSTEM])
    freed = (1 - LOW_WATER_SHARE - ESTIMATE_MARGIN_SHARE) * fitter.budget - exchange  # room a trim frees for later turns
    if turns == "even" and freed > exchange:  # then a trim lasts several turns: few trims in 30 turns
        assert trims <= 1 + exchange * (len(chat) - 1) / freed


@pytest.mark.parametrize("window", [160, 400])
def test_the_local_prompts_share_their_first_tokens_between_trims(small_engine, window):
    """What every prefix cache needs: the token ids of turn t+1 begin with those of turn t's kept part."""
    fitter = _Fitter(small_engine.format.name, small_engine, window)
    chat = fitter.chat(_turns("even"))
    assert any(f.dropped_messages for _, f in chat), "the chat must outgrow the window"
    shared = []
    for (_, before), (_, after) in zip(chat, chat[1:]):
        if after.dropped_messages == before.dropped_messages:
            common = common_prefix(before.prompt.ids, after.prompt.ids)
            question = len(small_engine.tokenizer(before.messages[-1]["content"], add_special_tokens=False)["input_ids"])
            assert common >= len(before.prompt.ids) - question - 8
            shared.append(common / len(after.prompt.ids))
    assert len(shared) >= len(chat) // 2  # most turns reuse their beginning


def common_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b)) if x != y), min(len(a), len(b)))


def test_generation_stops_at_the_capped_room(small_dir):
    engine = make_engine(small_dir, endless=True)  # never ends on its own
    config = settings(1000)
    fitted = engine.prepare([SYSTEM, CURRENT], config)
    generation = engine.generate(fitted, config)
    text = "".join(generation)
    assert text == generation.text
    assert generation.stats.new_tokens == fitted.max_new_tokens == CONTEXT - len(fitted.prompt.ids)
    assert generation.stats.stop_reason == "max tokens"
