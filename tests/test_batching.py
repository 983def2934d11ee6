"""Decode-step batching: answers generated together are the ones each would get alone."""

from __future__ import annotations

import threading

import pytest
import torch

from chat.engine import LocalEngine
from chat.formats import choose_format
from chat.loader import LoadOptions, load_model
from chat.session import ChatSession
from chat.settings import GenerationSettings
from chat.skills import load_skills

GREEDY = GenerationSettings(temperature=0, max_new_tokens=24)
PROMPTS = ["Hello there", "What is the capital of France? Tell me more.", "Hi", "Summarize: the quick brown fox jumps."]


@pytest.fixture(autouse=True, scope="module")
def _one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def engines(tiny_chat_dir):
    """(one request at a time, batched) over the same weights."""
    loaded = load_model(LoadOptions(model=str(tiny_chat_dir)), say=lambda _: None)
    plain = LocalEngine(loaded, choose_format(loaded.tokenizer))
    batched = LocalEngine(loaded, choose_format(loaded.tokenizer), batching=True)
    assert batched.batcher is not None
    return plain, batched


def at_once(generations) -> list[str]:
    """Reads all generations in parallel, as four browser tabs would."""
    texts = [""] * len(generations)

    def read(index):
        texts[index] = "".join(generations[index])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(generations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return texts


@pytest.mark.parametrize(
    "settings",
    [
        GREEDY,
        GREEDY.replace(repetition_penalty=1.3, no_repeat_ngram_size=2),
        GenerationSettings(temperature=0.9, top_p=0.8, top_k=20, seed=5, max_new_tokens=24),  # seeded sampling too
    ],
    ids=["greedy", "penalties", "seeded-sampling"],
)
def test_answers_together_are_the_answers_alone(engines, settings):
    plain, batched = engines
    fitted = [plain.prepare([{"role": "user", "content": p}], settings) for p in PROMPTS]
    alone = ["".join(plain.generate(f, settings)) for f in fitted]
    batched.batcher.largest_batch = 0
    together = at_once([batched.generate(f, settings) for f in fitted])
    assert together == alone
    assert batched.batcher.largest_batch > 1  # they really shared steps


def test_a_stop_string_or_a_cancel_ends_only_its_own_answer(engines):
    plain, batched = engines
    chatty = GREEDY.replace(max_new_tokens=60)
    fitted = [plain.prepare([{"role": "user", "content": p}], chatty) for p in PROMPTS]
    alone = ["".join(plain.generate(f, chatty)) for f in fitted]
    stop = alone[1][10:13]
    generations = [batched.generate(f, chatty, (stop,) if i == 1 else ()) for i, f in enumerate(fitted)]
    generations[2].cancel()
    texts = at_once(generations)
    assert texts[1] == alone[1][: alone[1].find(stop)]
    assert generations[1].stats.stop_reason == "stop string"
    assert generations[2].stats.stop_reason == "cancelled" and generations[2].stats.new_tokens < 60
    assert texts[0] == alone[0] and texts[3] == alone[3]


def test_sessions_chatting_together_reuse_their_own_caches_and_answer_as_alone(engines):
    plain, batched = engines
    skills = load_skills()
    together = [ChatSession(batched, skills, "Be brief.", GREEDY) for _ in PROMPTS]
    alone = [ChatSession(plain, skills, "Be brief.", GREEDY) for _ in PROMPTS]
    for alone_session in alone:
        alone_session.kv_cache = None  # everything computed from scratch
    for turn in range(3):
        replies = [s.send(f"{p} (turn {turn})") for s, p in zip(together, PROMPTS)]
        texts = at_once(replies)
        expected = ["".join(s.send(f"{p} (turn {turn})")) for s, p in zip(alone, PROMPTS)]
        assert texts == expected
        for session, reply in zip(together, replies):
            kept = session.kv_cache
            assert kept.wait_free(30)  # warmed up for the next turn
            assert kept.kv.get_seq_length() == len(kept.ids) > reply.stats.prompt_tokens
            if turn:
                assert reply.stats.cached_tokens > 0
    retried = [s.retry() for s in together]
    texts = at_once(retried)
    assert texts == ["".join(s.retry()) for s in alone]
