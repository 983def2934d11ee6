"""Decode-step batching: answers generated together are the ones each would get alone."""

from __future__ import annotations

import gc
import threading

import pytest
import torch
from transformers import StoppingCriteria

from chat.local.batching import Request, can_batch
from chat.session import ChatSession
from chat.settings import GenerationSettings
from chat.skills_file import load_skills
from chat.local.criteria import CancelCriteria
from tests.helpers.engines import at_once, engine_on, load_quietly, started_together
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy
from tests.helpers.waiting import wait_for

GREEDY = greedy(24)
PROMPTS = ["Hello there", "What is the capital of France? Tell me more.", "Hi", "Summarize: the quick brown fox jumps."]


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engines(tiny_chat_dir):
    """(one request at a time, batched) over the same weights."""
    loaded = load_quietly(tiny_chat_dir)
    plain = engine_on(loaded)
    batched = engine_on(loaded, batching=True)
    assert batched.batcher is not None
    return plain, batched


@pytest.mark.parametrize(
    "settings",
    [
        GREEDY,
        GREEDY.replace(repetition_penalty=1.3, no_repeat_ngram_size=2),
        GenerationSettings(temperature=0.9, top_p=0.8, top_k=20, seed=5, max_new_tokens=24),  # seeded sampling too
        GenerationSettings(temperature=1.5, top_p=1.0, top_k=0, min_p=0.2, seed=5, max_new_tokens=24),
    ],
    ids=["greedy", "penalties", "seeded-sampling", "min-p"],
)
def test_answers_together_are_the_answers_alone(engines, settings):
    plain, batched = engines
    fitted = [plain.prepare([{"role": "user", "content": p}], settings) for p in PROMPTS]
    alone = ["".join(plain.generate(f, settings)) for f in fitted]
    batched.batcher.largest_batch = 0
    together = at_once(started_together(batched, fitted, settings))
    assert together == alone
    assert batched.batcher.largest_batch > 1  # they really shared steps


def test_min_p_keeps_only_tokens_near_the_likeliest_batched_or_alone(engines):
    """min_p 1 leaves only the likeliest token: hot sampling then answers as greedy decoding does. (Not 0.999: a
    random model's two likeliest tokens can lie within 0.1% of each other, on some weights or CPUs.)"""
    plain, batched = engines
    hot = GenerationSettings(temperature=2.0, top_p=1.0, top_k=0, seed=3, max_new_tokens=24)
    fitted = plain.prepare([{"role": "user", "content": PROMPTS[1]}], hot)
    likeliest = "".join(plain.generate(fitted, hot.replace(temperature=0)))
    assert "".join(plain.generate(fitted, hot)) != likeliest  # hot sampling wanders off …
    for engine in engines:
        assert "".join(engine.generate(fitted, hot.replace(min_p=1.0))) == likeliest  # … unless min_p holds it


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
    together = [seeded_session(batched, skills, "Be brief.", GREEDY) for _ in PROMPTS]
    alone = [seeded_session(plain, skills, "Be brief.", GREEDY) for _ in PROMPTS]
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


# -- faults and memory: one answer's trouble stays its own ----------------------------------------

NO_EOS = frozenset({10**6})


def run_at_once(batcher, requests) -> list:
    """Each (ids, max_new_tokens, criteria) through `batcher.run` from its own thread: results or errors."""
    results: list = [None] * len(requests)

    def one(index):
        ids, max_new, criteria = requests[index]
        try:
            results[index] = batcher.run(ids, GREEDY, max_new, NO_EOS, (), None, criteria)
        except Exception as error:  # noqa: BLE001 - what each reader gets is the point
            results[index] = error

    threads = [threading.Thread(target=one, args=(i,)) for i in range(len(requests))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    return results


class FailsAtStep(StoppingCriteria):
    def __init__(self, step):
        self.step, self.calls = step, 0

    def __call__(self, input_ids, scores, **kwargs):
        self.calls += 1
        if self.calls == self.step:
            raise ValueError("this answer's own criterion broke")
        return torch.zeros((input_ids.shape[0],), dtype=torch.bool)


def test_one_answers_own_failure_ends_only_that_answer(engines):
    _, batched = engines
    prompts = [[5, 6, 7, 8], [9, 10, 11], [12, 13, 14, 15, 16]]
    alone = [batched.batcher.run(ids, GREEDY, 30, NO_EOS, (), None, []).sequences[0].tolist() for ids in prompts]
    results = run_at_once(batched.batcher, [(prompts[0], 30, []), (prompts[1], 30, [FailsAtStep(5)]), (prompts[2], 30, [])])
    assert isinstance(results[1], ValueError) and "own criterion broke" in str(results[1])
    assert [r.sequences[0].tolist() for r in (results[0], results[2])] == [alone[0], alone[2]]


def test_a_failed_shared_step_reaches_every_answer_as_its_own_error_and_the_next_ones_work(engines):
    _, batched = engines
    forward = batched.model.forward
    failed = threading.Event()

    def flaky(*args, **kwargs):
        if kwargs["input_ids"].shape[0] > 1 and not failed.is_set():  # the first shared step
            failed.set()
            raise RuntimeError("the shared step broke")
        return forward(*args, **kwargs)

    batched.model.forward = flaky
    try:
        results = run_at_once(batched.batcher, [([5, 6, 7], 40, []), ([8, 9], 40, []), ([10, 11, 12, 13], 40, [])])
    finally:
        del batched.model.forward
    errors = [r for r in results if isinstance(r, Exception)]
    assert failed.is_set() and len(errors) >= 2 and all("the shared step broke" in str(e) for e in errors)
    assert len({id(e) for e in errors}) == len(errors)  # each reader raises its own, tracebacks never mix
    again = run_at_once(batched.batcher, [([5, 6, 7], 8, []), ([8, 9], 8, [])])
    assert all(len(r.sequences[0]) == len(ids) + 8 for r, ids in zip(again, ([5, 6, 7], [8, 9])))


def test_an_answer_cancelled_while_waiting_costs_no_model_step(engines):
    _, batched = engines
    cancelled = threading.Event()
    cancelled.set()
    calls = []
    hook = batched.model.register_forward_hook(lambda *_: calls.append(1))
    try:
        result = batched.batcher.run([5, 6, 7], GREEDY, 30, NO_EOS, (), None, [CancelCriteria(cancelled)])
    finally:
        hook.remove()
    assert result.sequences[0].tolist() == [5, 6, 7] and calls == []


def test_finished_answers_leave_nothing_behind_in_the_batcher(engines):
    _, batched = engines
    gc.collect()
    # (Counted against those alive before: an answer of another test may still be running in this process.)
    before = {id(obj) for obj in gc.get_objects() if isinstance(obj, Request)}
    run_at_once(batched.batcher, [([5, 6, 7], 12, []), ([8, 9], 20, [])])

    def left_behind() -> list[Request]:
        gc.collect()
        return [obj for obj in gc.get_objects() if isinstance(obj, Request) and id(obj) not in before]

    # An answer is handed back while the batcher's thread is still in the step that finished it: until that
    # step ends, the step holds the request. Wait for the batcher to be idle; a real leak never lets go.
    assert wait_for(lambda: not left_behind() and batched.batcher._cache is None and not batched.batcher._rows, 10), left_behind()


def test_a_model_whose_generation_config_asks_for_more_answers_alone(tiny_chat_dir):
    loaded = load_quietly(tiny_chat_dir)
    assert can_batch(loaded.model)
    loaded.model.generation_config.min_p = 0.05  # `generate` would apply it; the batcher does not
    assert not can_batch(loaded.model)
    assert engine_on(loaded, batching=True).batcher is None
