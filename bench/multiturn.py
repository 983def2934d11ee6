"""Multi-turn: time to first token at each turn of a growing 12-turn chat, with and without the cache.

    .venv/bin/python -m bench.multiturn --threads 2 --repeats 5

First the chat is played once (greedy). After every answer the session's cache is kept twice:
as the answer left it, and after the warm-up the engine runs while the user reads and types
(it prefills the history up to where the next message starts; answers are not always
tokenized back into the tokens the model generated). Then each turn is timed again from those
states: without a cache (everything prefilled), with the cache as the answer left it, and with
the warmed-up cache, in rotating order; the model is stopped at its first token. TTFT counts
from `session.send` (prompt building included) to the first generated token.
"""

from __future__ import annotations

import copy
import time

from bench.common import goal, load_engine, machine, median, parser, session, set_threads, table

QUESTIONS = [
    "Explain in detail how a bicycle works, part by part.",
    "What were the main causes of the French Revolution? Please give a detailed answer.",
    "Describe how bread is made, step by step, with all the details.",
    "Why is the sky blue? Explain the physics in detail.",
    "Give me ten detailed tips for learning a new language.",
    "How does a refrigerator keep food cold? Explain every part of the cycle.",
    "Tell me in detail about the life of honey bees.",
    "What is the difference between weather and climate? Give examples.",
    "How do airplanes stay in the air? Explain lift, thrust, drag and weight.",
    "Describe a typical day in ancient Rome, from morning to night.",
    "What makes a good night's sleep? Give detailed advice.",
    "Summarize everything we talked about so far.",
]
ANSWER_TOKENS = 200  # per answer: ~2,200 prompt tokens at turn 12, as in the issue
GOAL_RATIO = 0.10
MODES = ("none", "cache", "warm")  # no cache; the cache as the answer left it; warmed up for the next turn


def play_chat(engine, settings):
    """Plays all turns; returns the last answer, the states before each turn, and the warm-up times."""
    chat = session(engine, settings)
    engine.warm_up = False  # run by hand below, to keep the state before and after it
    states = {mode: [] for mode in MODES}
    left = warmed = ((), None)  # (cache ids, cache) before the first turn
    warm_seconds = [0.0]
    for question in QUESTIONS:
        history = copy.deepcopy(chat.history)
        states["none"].append((history, (), None))
        states["cache"].append((history, *left))
        states["warm"].append((history, *warmed))
        reply = chat.send(question)
        for _ in reply:
            pass
        left = (chat.kv_cache.ids, copy.deepcopy(chat.kv_cache.kv))
        start = time.perf_counter()
        thread = engine.warm(chat.kv_cache, [*reply.fitted.messages, {"role": "assistant", "content": reply.generation.text}])
        if thread is not None:
            thread.join()
        warm_seconds.append(time.perf_counter() - start)
        warmed = (chat.kv_cache.ids, copy.deepcopy(chat.kv_cache.kv))
    return chat.history[-1]["content"], states, warm_seconds


def first_token_time(engine, chat, state, question) -> tuple[float, int, int]:
    """(seconds from send to first token, prompt tokens, reused tokens) for one turn."""
    history, ids, kv = state
    chat.history = copy.deepcopy(history)
    if chat.kv_cache is not None:
        chat.kv_cache.release()
        if kv is not None:
            engine.caches.keep(chat.kv_cache, ids, copy.deepcopy(kv))
    start = time.perf_counter()
    reply = chat.send(question)
    sent = time.perf_counter() - start
    for _ in reply:
        reply.cancel()  # only the first token is timed
    return sent + reply.stats.time_to_first_token, reply.stats.prompt_tokens, reply.stats.cached_tokens


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    from chat.settings import GenerationSettings

    engine = load_engine(args.model)
    settings = GenerationSettings(temperature=0, max_new_tokens=ANSWER_TOKENS, repetition_penalty=1.1)
    last_answer, states, warm_seconds = play_chat(engine, settings)
    # The cache must not change the answer: the last turn again from scratch gives the same text.
    plain = session(engine, settings, cached=False)
    plain.history = copy.deepcopy(states["none"][-1][0])
    identical = "".join(plain.send(QUESTIONS[-1])) == last_answer

    chats = {mode: session(engine, settings, cached=mode != "none") for mode in MODES}
    times = {(turn, mode): [] for turn in range(len(QUESTIONS)) for mode in MODES}
    reused, prompts = {}, {}
    for repeat in range(args.repeats):
        for turn, question in enumerate(QUESTIONS):
            shift = (repeat + turn) % len(MODES)
            for mode in MODES[shift:] + MODES[:shift]:
                seconds, prompts[turn], reused[turn, mode] = first_token_time(engine, chats[mode], states[mode][turn], question)
                times[turn, mode].append(seconds)
    rows, ratios = [], {}
    for turn in range(len(QUESTIONS)):
        for mode in ("cache", "warm"):
            ratios[turn, mode] = median(c / p for c, p in zip(times[turn, mode], times[turn, "none"]))
        rows.append([
            turn + 1, prompts[turn], reused[turn, "cache"], reused[turn, "warm"], warm_seconds[turn],
            *(median(times[turn, mode]) for mode in MODES), ratios[turn, "cache"], ratios[turn, "warm"],
        ])
    last = len(QUESTIONS) - 1
    print(table(
        "Multi-turn: time to first token (s) in a growing chat, without and with the prefix cache",
        ["turn", "prompt tokens", "reused", "reused after warm-up", "warm-up before (s)", "TTFT no cache",
         "TTFT cache", "TTFT cache + warm-up", "cache ÷ none", "warm-up ÷ none"],
        rows,
        [
            f"{engine.name}, greedy, answers of up to {ANSWER_TOKENS} tokens; medians of {args.repeats} repetitions, "
            "ratios = medians of per-repetition ratios",
            "warm-up: the background prefill the engine runs after each answer (column: the one before this turn); "
            "a message sent before it ends waits for it",
            goal("turn 12, cache + warm-up ÷ no cache", ratios[last, "warm"], GOAL_RATIO, at_least=False),
            goal("turn 12, cache without warm-up ÷ no cache", ratios[last, "cache"], GOAL_RATIO, at_least=False),
            f"turn 12 answer with the cache identical to the one computed from scratch: {identical}",
            machine(args.threads),
        ],
    ))


if __name__ == "__main__":
    main()
