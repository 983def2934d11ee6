"""Concurrency: 4 sessions chatting at once, aggregate tokens/s ÷ one session alone.

    .venv/bin/python -m bench.concurrency --threads 2 --repeats 5             # embedded model
    .venv/bin/python -m bench.concurrency --threads 2 --repeats 5 --model tiny

Ways compared, each starting 4 fresh sessions (one thread each, as 4 browser tabs) at once:
the engine as the app builds it (each answer runs its own `generate` in its own thread), the
engine with decode-step batching (`LocalEngine(..., batching=True)`), and, for reference, one
left-padded batched `model.generate` over the 4 prompts (not streamable per session).
End-of-sequence is off, so every answer makes `--tokens` tokens. Answers are compared with the
same prompts answered one at a time (greedy). The warm-up after each answer is off, so that no
background prefill spills into the next timing.
"""

from __future__ import annotations

import threading
import time

import torch

from bench.common import batched_twin, load_engine, machine, median, parser, session, set_threads, table

PROMPTS = [
    "Explain how a bicycle works.",
    "Write a short poem about the sea.",
    "What are the benefits of regular exercise?",
    "Describe the city of Paris to a visitor.",
]
NO_EOS = 10**6
GOAL_SPEEDUP = 2.5


def chat_at_once(engine, settings, prompts) -> tuple[float, list[str], int]:
    """(seconds, answers, new tokens) for all prompts sent at once from their own sessions."""
    sessions = [session(engine, settings) for _ in prompts]
    answers, tokens = [""] * len(prompts), [0] * len(prompts)

    def chat(index):
        reply = sessions[index].send(prompts[index])
        answers[index] = "".join(reply)
        tokens[index] = reply.stats.new_tokens

    threads = [threading.Thread(target=chat, args=(i,)) for i in range(len(prompts))]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return time.perf_counter() - start, answers, sum(tokens)


def batched_generate(engine, settings, prompts) -> tuple[float, list[str], int]:
    """The reference: one left-padded `model.generate` call for all prompts."""
    from chat.local.engine import sampling_kwargs
    from chat.instructions import default_instructions

    system = [{"role": "system", "content": default_instructions(engine.format)}]
    ids = [engine.prepare(system + [{"role": "user", "content": p}], settings).prompt.ids for p in prompts]
    width = max(map(len, ids))
    input_ids = torch.tensor([[engine.pad_id] * (width - len(i)) + i for i in ids])
    mask = torch.tensor([[0] * (width - len(i)) + [1] * len(i) for i in ids])
    start = time.perf_counter()
    with torch.inference_mode():
        out = engine.model.generate(
            input_ids=input_ids, attention_mask=mask, eos_token_id=[NO_EOS], pad_token_id=engine.pad_id,
            **sampling_kwargs(settings, settings.max_new_tokens),
        )
    seconds = time.perf_counter() - start
    answers = [engine.tokenizer.decode(row[width:], skip_special_tokens=True).strip() for row in out]
    return seconds, answers, (out.shape[1] - width) * len(prompts)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=128, help="tokens per answer (default %(default)s)")
    args = p.parse_args()
    set_threads(args.threads)
    from chat.settings import GenerationSettings

    plain = load_engine(args.model)
    plain.eos_ids = frozenset({NO_EOS})
    batched = batched_twin(plain)
    for engine in (plain, batched):
        engine.warm_up = False  # no background prefill after an answer spilling into the next timing
    settings = GenerationSettings(temperature=0, max_new_tokens=args.tokens)
    serial = [chat_at_once(plain, settings, [prompt])[1][0] for prompt in PROMPTS]  # one at a time: the reference answers
    ways = {
        "engine, 1 session alone": lambda: chat_at_once(plain, settings, PROMPTS[:1]),
        "engine, 4 sessions at once, no batching": lambda: chat_at_once(plain, settings, PROMPTS),
        "engine + batching, 1 session alone": lambda: chat_at_once(batched, settings, PROMPTS[:1]),
        "engine + batching, 4 sessions at once": lambda: chat_at_once(batched, settings, PROMPTS),
        "reference: batched model.generate, 4 prompts": lambda: batched_generate(plain, settings, PROMPTS),
    }
    names = list(ways)
    rates = {name: [] for name in names}
    same = {}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            seconds, answers, tokens = ways[name]()
            rates[name].append(tokens / seconds)
            same[name] = [a.strip() for a in answers] == [s.strip() for s in serial[: len(answers)]]
    base = rates[names[0]]
    rows = []
    for name in names:
        ratio = median(r / b for r, b in zip(rates[name], base))
        rows.append([name, median(rates[name]), ratio, same[name]])
    speedup = median(r / b for r, b in zip(rates[names[3]], base))
    print(table(
        "Concurrency: aggregate tokens/s of sessions chatting at once",
        ["way", "tokens/s (all sessions)", "÷ 1 session alone", "same answers as one at a time"],
        rows,
        [
            f"{plain.name}, greedy, {args.tokens} tokens per answer; medians of {args.repeats} repetitions, "
            "ratio = median of per-repetition ratios",
            f"4 sessions with batching ÷ 1 session: {speedup:.2f}× (goal ≥ {GOAL_SPEEDUP}×): {'met' if speedup >= GOAL_SPEEDUP else 'MISSED'}",
            machine(args.threads),
        ],
    ))


if __name__ == "__main__":
    main()
