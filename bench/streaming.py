"""Streaming overhead: tokens/s through the engine ÷ a plain `model.generate` with the same settings.

    .venv/bin/python -m bench.streaming --threads 2 --repeats 7

The engine adds a `TextIteratorStreamer`, the stop-string filter on the reader side, a worker
thread, and stopping criteria (clock, cancel; with stop strings also transformers'
`StopStringCriteria`). End-of-sequence is switched off on both sides so every run makes exactly
`--tokens` tokens; tokens/s = tokens ÷ wall time of the whole call (prefill included on both
sides). The three ways run in rotating order within each repetition.
"""

from __future__ import annotations

import torch

from bench.common import batched_twin, goal, load_engine, machine, median, parser, set_threads, table, timed

PROMPT = "Write a long story about a dragon who learns to fly."
STOP_STRINGS = ("\nUser:", "###")  # never produced here: the filter and criteria run, nothing stops
NO_EOS = 10**6  # an id no model has: answers always run to max tokens
GOAL_RATIO = 0.97


def plain_generate(engine, fitted, settings):
    from chat.local.engine import sampling_kwargs

    ids = torch.tensor([fitted.prompt.ids])
    with torch.inference_mode():
        out = engine.model.generate(
            input_ids=ids, attention_mask=torch.ones_like(ids), eos_token_id=[NO_EOS], pad_token_id=engine.pad_id,
            **sampling_kwargs(settings, fitted.max_new_tokens),
        )
    return engine.tokenizer.decode(out[0, ids.shape[1]:], skip_special_tokens=True)


def through_engine(engine, fitted, settings, stops=()):
    generation = engine.generate(fitted, settings, stops)
    return "".join(generation), generation.stats


def _same(a: str, b: str) -> bool:
    # The engine trims the answer's leading space and never shows a broken character (U+FFFD).
    return a.replace("\ufffd", "").strip() == b.replace("\ufffd", "").strip()


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=256, help="tokens per answer (default %(default)s)")
    p.set_defaults(repeats=7)
    args = p.parse_args()
    set_threads(args.threads)
    from chat.settings import GenerationSettings

    engine = load_engine(args.model)
    engine.eos_ids = frozenset({NO_EOS})
    settings = GenerationSettings(temperature=0, max_new_tokens=args.tokens)  # greedy, repetition penalty 1.1
    fitted = engine.prepare([{"role": "user", "content": PROMPT}], settings)
    batched = batched_twin(engine)
    ways = {
        "plain model.generate": lambda: plain_generate(engine, fitted, settings),
        "engine (streamer, filter, thread)": lambda: through_engine(engine, fitted, settings)[0],
        "engine + 2 stop strings": lambda: through_engine(engine, fitted, settings, STOP_STRINGS)[0],
        "engine with batching on (one request)": lambda: through_engine(batched, fitted, settings)[0],
    }
    names = list(ways)
    ways[names[0]]()  # warm-up
    seconds = {name: [] for name in names}
    texts = {}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names) :] + names[: repeat % len(names)]:
            elapsed, texts[name] = timed(ways[name])
            seconds[name].append(elapsed)
    base = seconds[names[0]]
    rows, ratios = [], {}
    for name in names:
        ratios[name] = median(b / s for b, s in zip(base, seconds[name]))  # tokens/s ratio = inverse time ratio
        rows.append([name, args.tokens / median(seconds[name]), ratios[name], _same(texts[name], texts[names[0]])])
    print(table(
        "Streaming overhead: tokens/s through the engine vs plain model.generate",
        ["way", "tokens/s", "÷ plain generate", "same text"],
        rows,
        [
            f"{engine.name}, greedy (repetition penalty 1.1), {args.tokens} new tokens from a {len(fitted.prompt.ids)}-token prompt; "
            f"medians of {args.repeats} repetitions, ratio = median of per-repetition ratios",
            goal("engine ÷ plain", ratios[names[1]], GOAL_RATIO, at_least=True),
            goal("engine with stop strings ÷ plain", ratios[names[2]], GOAL_RATIO, at_least=True),
            goal("engine with batching on ÷ plain", ratios[names[3]], GOAL_RATIO, at_least=True),
            machine(args.threads),
        ],
    ))


if __name__ == "__main__":
    main()
