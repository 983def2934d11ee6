"""Versions and the cache: time to first token of Continue, and of a message after switching versions.

    .venv/bin/python -m bench.versions --threads 2 --repeats 5

A chat of four long exchanges is played once (greedy, each answer cut at its token limit). Then,
in rotating order, each figure is timed from a copy of that session:
- cold: the last answer made again with the session's cache emptied (everything prefilled);
- Continue: more of the last answer, with the cache as the answer left it;
- after a switch: Retry makes a second version of the last answer, Previous version shows the first
  again, and the next message is timed; the cache held the other branch, so only the shared prefix
  (instructions and the first three exchanges) is reused.
The model is stopped at its first token. Ratios are taken in one run (these machines are noisy).
"""

from __future__ import annotations

import copy
import time

from bench.common import load_engine, machine, median, parser, session, set_threads, table

QUESTIONS = [
    "Explain in detail how a bicycle works, part by part.",
    "Describe how bread is made, step by step, with all the details.",
    "Why is the sky blue? Explain the physics in detail.",
    "Tell me in detail about the life of honey bees.",
]
ANSWER_TOKENS = 150


def first_token_s(start) -> float:
    """Seconds from `start()` (the button: prompt building included) to the answer's first text; the
    model is stopped right after it."""
    began = time.perf_counter()
    reply = start()
    deltas = iter(reply)
    next(deltas, None)
    seconds = time.perf_counter() - began
    reply.cancel()
    for _ in deltas:
        pass
    return seconds


def played(engine, settings):
    chat = session(engine, settings)
    for question in QUESTIONS:
        "".join(chat.send(question))
    return chat


def fresh_copy(chat):
    """The session as it stands, with a copy of its cache (its tree and path copied; the engine shared)."""
    twin = copy.copy(chat)
    twin.tree = copy.deepcopy(chat.tree)
    twin.history = twin.tree.path_to(chat.history[-1]["id"])
    twin.kv_cache = chat.engine.new_cache()
    chat.kv_cache.wait_free()
    lent = chat.engine.caches.lend(chat.kv_cache)
    if lent is not None:
        ids, kv = lent
        chat.engine.caches.keep(chat.kv_cache, ids, kv)
        chat.engine.caches.keep(twin.kv_cache, ids, copy.deepcopy(kv))
    return twin


def measure(chat, mode: str) -> float:
    twin = fresh_copy(chat)
    if mode == "cold":
        twin.kv_cache = twin.engine.new_cache()
        return first_token_s(twin.reproduce)
    if mode == "continue":
        return first_token_s(twin.continue_answer)
    "".join(twin.retry())  # the cache now holds the second version
    twin.switch(len(twin.history) - 1, -1)
    return first_token_s(lambda: twin.send("And what should I read next about it?"))


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    from chat.settings import GenerationSettings

    engine = load_engine(args.model)
    engine.warm_up = False  # the figures compare cache states; no background prefill between turns
    chat = played(engine, GenerationSettings(temperature=0, max_new_tokens=ANSWER_TOKENS))
    modes = ("cold", "continue", "switch")
    times: dict[str, list[float]] = {mode: [] for mode in modes}
    for repeat in range(args.repeats):
        for mode in modes[repeat % len(modes):] + modes[: repeat % len(modes)]:
            times[mode].append(measure(chat, mode))
    cold = median(times["cold"])
    prompt = chat.last_prompt.prompt.length if chat.last_prompt else 0
    rows = [(mode, median(times[mode]), median(times[mode]) / cold) for mode in modes]
    print(table(f"Time to first token, {engine.name}, a {prompt:,}-token prompt (medians of {args.repeats})",
                ["answer", "TTFT s", "÷ cold"], rows,
                [machine(args.threads), "cold: the last answer made again with an empty cache; continue: Continue with the "
                 "cache as the answer left it; switch: the next message after Retry then Previous version"]))


if __name__ == "__main__":
    main()
