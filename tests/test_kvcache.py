"""Prefix KV-cache reuse: same greedy answers as without it, never shared, memory bounded."""

from __future__ import annotations

import gc
import threading

import pytest
import torch
from transformers import DynamicCache

from chat.engine import Stats
from chat.local.kvcache import CachePool, PrefixCache, common_prefix_length
from chat.session import ChatSession
from chat.skills_file import load_skills
from tests.helpers.engines import make_engine
from tests.helpers.sessions import seeded_session
from tests.helpers.settings import greedy
from tests.helpers.tiny_models import save_tiny_model

GREEDY = greedy(12, repetition_penalty=1.0)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def engine(tiny_chat_dir):
    return make_engine(tiny_chat_dir)  # its own engine: its own pool


@pytest.fixture(scope="module")
def small_context_engine(tmp_path_factory):
    """A context of 160 tokens: a few turns in, the oldest exchanges are dropped."""
    return make_engine(save_tiny_model(tmp_path_factory.mktemp("tiny-160"), context=160))


@pytest.fixture(scope="module")
def skills():
    return load_skills()


def kv_of(length: int) -> DynamicCache:
    """A real one-layer cache holding `length` tokens."""
    cache = DynamicCache()
    cache.update(torch.randn(1, 2, length, 4), torch.randn(1, 2, length, 4), 0)
    return cache


def answer(reply) -> str:
    return "".join(reply)


def uncached_answer(engine, reply) -> str:
    """What the same prompt gives when everything is computed from scratch."""
    return "".join(engine.generate(reply.fitted, reply.generation.settings))


def check_turn(engine, session, reply) -> str:
    """Runs one turn and asserts it matches a from-scratch run and that the cache holds what was fed."""
    text = answer(reply)
    assert text == uncached_answer(engine, reply)
    kept = session.kv_cache
    assert kept.wait_free(30)  # the warm-up for the next turn is done
    if kept.kv is not None:
        assert kept.kv.get_seq_length() == len(kept.ids)
        assert common_prefix_length(kept.ids, reply.fitted.prompt.ids) > 0
    return text


# -- which prefix is reused ----------------------------------------------------------------


@pytest.mark.parametrize(
    "cached, prompt, reused",
    [
        ([1, 2, 3], [1, 2, 3, 4, 5], 3),  # next turn: everything kept is reused
        ([1, 2, 3, 4, 5], [1, 2, 3, 4, 5], 4),  # same prompt (Retry): one token left to prefill
        ([1, 2, 3, 9, 9], [1, 2, 3, 4, 5, 6], 3),  # an edited message: crop to the common prefix
        ([1, 2, 3, 4, 5, 6, 7], [1, 2, 3], 2),  # a shorter prompt (Undo)
        ([7, 2, 3], [1, 2, 3, 4], 0),  # edited instructions at the very start: nothing reused
        ([1, 2], [1], 0),  # a one-token prompt always prefills
    ],
)
def test_reuse_crops_to_the_longest_common_prefix_leaving_one_token(cached, prompt, reused):
    cache = PrefixCache()
    cache.update(cached, kv_of(len(cached)))
    kv, count = cache.reuse_for(prompt)
    assert count == reused
    if reused:
        assert kv.get_seq_length() == reused
    else:
        assert kv is None
    assert cache.reuse_for(prompt, wait_s=0) == (None, 0)  # handed out: nobody else gets it


def test_a_cache_that_does_not_match_its_ids_is_not_kept():
    cache = PrefixCache()
    cache.update([1, 2, 3], kv_of(2))
    assert cache.kv is None and cache.tokens == 0


def test_a_new_answer_waits_for_the_cache_to_come_back():
    cache = PrefixCache()
    cache.update([1, 2, 3], kv_of(3))
    ids, kv = cache.lend()  # e.g. a warm-up for the next turn
    assert cache.lend() is None
    threading.Timer(0.2, cache.update, args=(ids, kv)).start()
    reused_kv, reused = cache.reuse_for([1, 2, 3, 4], wait_s=10)
    assert reused == 3 and reused_kv is kv


def test_common_prefix_length():
    assert common_prefix_length([], [1]) == 0
    assert common_prefix_length([1, 2], [1, 2]) == 2
    assert common_prefix_length([1, 2, 3], [1, 5, 3]) == 1


# -- greedy answers are the same with and without the cache ---------------------------------


def test_a_growing_chat_reuses_the_previous_turns_and_answers_the_same(engine, skills):
    session = seeded_session(engine, skills, "You are terse.", GREEDY)
    reused = []
    for text in ["Hello, how are you?", "What is the capital of France?", "Translate: Guten Tag!", "Summarize."]:
        reply = session.send(text)
        check_turn(engine, session, reply)
        reused.append(reply.stats.cached_tokens)
    assert reused[0] == 0
    assert all(count > 0 for count in reused[1:])
    assert reused == sorted(reused)  # the reused part grows with the chat
    assert f"({reused[-1]} cached)" in session.last_stats.summary()


def test_retry_undo_and_edited_instructions_answer_the_same(engine, skills):
    session = seeded_session(engine, skills, "You are terse.", GREEDY)
    check_turn(engine, session, session.send("Hello there"))
    check_turn(engine, session, session.send("What is the capital of France?"))
    retried = session.retry()
    check_turn(engine, session, retried)
    assert retried.stats.cached_tokens > 0
    session.undo()
    check_turn(engine, session, session.send("What is the capital of Germany?"))
    session.instructions = "You answer in German."
    edited = session.send("Und jetzt?")
    check_turn(engine, session, edited)
    session.undo()
    session.undo()
    check_turn(engine, session, session.send("Hello again"))


def test_changed_settings_and_beam_search_answer_the_same(engine, skills):
    session = seeded_session(engine, skills, "", GREEDY)
    check_turn(engine, session, session.send("Hello"))
    for changes in [
        {"max_new_tokens": 5},
        {"repetition_penalty": 1.3},
        {"no_repeat_ngram_size": 2},
        {"num_beams": 3},  # beams neither use nor replace the cache
        {"temperature": 0.9, "seed": 7},  # seeded sampling too
        {},
    ]:
        session.settings = GREEDY.replace(**changes)
        reply = session.send("And now?")
        check_turn(engine, session, reply)
        if changes.get("num_beams", 1) > 1:
            assert reply.stats.cached_tokens == 0
        else:
            assert reply.stats.cached_tokens > 0


def test_trimmed_history_answers_the_same(small_context_engine, skills):
    engine = small_context_engine
    session = seeded_session(engine, skills, "Be brief.", GREEDY.replace(max_new_tokens=16))
    dropped = []
    for turn in range(8):
        reply = session.send(f"Tell me more about topic number {turn}, please.")
        check_turn(engine, session, reply)
        dropped.append(reply.fitted.dropped_messages)
    assert max(dropped) > 0  # the test reached the point where history is trimmed


def test_the_warm_up_leaves_only_the_new_message_to_compute(engine, skills):
    session = seeded_session(engine, skills, "Be brief.", GREEDY.replace(max_new_tokens=40))
    check_turn(engine, session, session.send("Hello there"))
    for message in ["What is the capital of France?", "Translate: Guten Tag!"]:
        # What any next prompt shares with this one: everything before the new message.
        other = engine.prepare([*session.model_messages(), {"role": "user", "content": "Zz"}], session.settings).prompt.ids
        reply = session.send(message)
        check_turn(engine, session, reply)
        # The random model's answers are seldom tokenized back the same way: without the
        # warm-up the reuse would stop inside the previous answer.
        assert reply.stats.cached_tokens == common_prefix_length(reply.fitted.prompt.ids, other)


def test_a_stopped_answer_leaves_a_cache_that_is_still_exact(engine, skills):
    chatty = GREEDY.replace(max_new_tokens=100)
    session = seeded_session(engine, skills, "", chatty)
    reply = session.send("Hello")
    for _ in reply:
        reply.cancel()  # Stop after the first piece of text
    assert reply.stats.stop_reason == "cancelled"
    assert session.kv_cache.wait_free(30)
    kept = len(session.kv_cache.ids)
    assert kept == reply.stats.prompt_tokens + reply.stats.new_tokens - 1  # not warmed: Retry is likely
    check_turn(engine, session, session.send("Go on"))


# -- never shared, bounded --------------------------------------------------------------------


def test_sessions_never_share_a_cache(engine, skills):
    first = seeded_session(engine, skills, "Same instructions", GREEDY)
    second = seeded_session(engine, skills, "Same instructions", GREEDY)
    assert first.kv_cache is not second.kv_cache
    answer(first.send("Same question"))
    reply = second.send("Same question")  # identical prompt, but first's cache is first's
    answer(reply)
    assert reply.stats.cached_tokens == 0
    assert first.kv_cache.wait_free(30) and second.kv_cache.wait_free(30)  # their warm-ups have given them back
    assert first.kv_cache.kv is not None and second.kv_cache.kv is not None
    assert first.kv_cache.kv is not second.kv_cache.kv


def test_two_generations_never_use_one_cache_at_once():
    cache = PrefixCache()
    cache.update([1, 2, 3], kv_of(3))
    results = []
    barrier = threading.Barrier(2)

    def take():
        barrier.wait()
        results.append(cache.reuse_for([1, 2, 3, 4], wait_s=0.2))  # nobody gives it back here

    threads = [threading.Thread(target=take) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(count for _, count in results) == [0, 3]


def test_pool_stays_bounded_under_many_sessions_and_releases_least_recently_used(tiny_chat_dir, skills):
    engine = make_engine(tiny_chat_dir)
    engine.caches = CachePool(max_sessions=8, max_tokens=400)
    sessions = [seeded_session(engine, skills, "", GREEDY.replace(max_new_tokens=3)) for _ in range(50)]
    for number, session in enumerate(sessions):
        answer(session.send(f"Hello number {number}"))
        # Its warm-up for the next turn gives the cache back as its latest use: waiting for it keeps the
        # uses in the order of the sessions (a slow warm-up returning after the next answer would be newer).
        assert session.kv_cache.wait_free(30)
        assert engine.caches.sessions <= 8
        assert engine.caches.tokens <= 400
    kept = [s for s in sessions if s.kv_cache.kv is not None]
    assert kept == sessions[-len(kept):] and len(kept) >= 2  # the most recent survive
    newest = sessions[-1].send("again")
    answer(newest)
    assert newest.stats.cached_tokens > 0
    oldest = sessions[0].send("again")  # released long ago: computed from scratch, still right
    check_turn(engine, sessions[0], oldest)
    assert oldest.stats.cached_tokens == 0


def test_tokens_limit_releases_oldest_first():
    pool = CachePool(max_sessions=10, max_tokens=10)
    caches = [PrefixCache() for _ in range(4)]
    for cache in caches:
        pool.keep(cache, list(range(4)), kv_of(4))
    assert pool.tokens <= 10
    assert [c.tokens for c in caches] == [0, 0, 4, 4]
    pool.take(caches[2], [9])  # in use again: not counted while out
    assert pool.tokens == 4
    pool.keep(caches[2], list(range(4)), kv_of(4))  # most recent now
    pool.keep(caches[0], list(range(4)), kv_of(4))
    assert [c.tokens for c in caches] == [4, 0, 4, 0]


def test_a_cache_larger_than_the_pool_is_not_kept():
    pool = CachePool(max_sessions=4, max_tokens=3)
    cache = PrefixCache()
    pool.keep(cache, list(range(5)), kv_of(5))
    assert cache.tokens == 0 and pool.tokens == 0


def test_a_closed_session_leaves_the_pool(tiny_chat_dir, skills):
    engine = make_engine(tiny_chat_dir)
    session = seeded_session(engine, skills, "", GREEDY.replace(max_new_tokens=3))
    answer(session.send("Hello"))
    assert session.kv_cache.wait_free(30)
    assert engine.caches.sessions == 1
    del session
    gc.collect()
    assert engine.caches.sessions == 0


def test_stats_summary_mentions_cached_tokens_only_when_some_were():
    assert "cached" not in Stats(prompt_tokens=10).summary()
    assert "prompt 10 tokens (8 cached)" in Stats(prompt_tokens=10, cached_tokens=8).summary()
