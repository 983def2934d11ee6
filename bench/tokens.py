"""What the token view costs: decoding speed with answers' tokens recorded, not recorded, and without this app's picker.

    .venv/bin/python -m bench.tokens --threads 2 --repeats 5

Every answer is the same length (the end-of-sequence token is ignored, as a long answer would be),
sampled with a fixed seed, so each mode decodes the very same tokens. In rotating order, per repeat:
- `generate` alone: transformers' own sampling (no picker, no recording: the code before the token view);
- view closed: this app's token picker (its own seeded generator), nothing recorded;
- view open: the same, recording three distributions with their top 20 at every step;
and the last two again with decode-step batching (one answer at a time: the batcher's own loop).
Ratios are taken in one run (these machines are noisy).
"""

from __future__ import annotations

import time

from bench.common import batched_twin, load_engine, machine, median, parser, set_threads, table

MESSAGES = [{"role": "user", "content": "Tell me everything you know about honey bees."}]
NEW_TOKENS = 128
NEVER = frozenset({10**9})  # an end-of-sequence id no model produces: every answer runs to its limit


def tokens_per_second_generate(engine, settings) -> float:
    """transformers' `generate` alone, sampling with torch's global generator (no picker, no streamer)."""
    import torch

    from chat.local.engine import sampling_kwargs

    fitted = engine.prepare(MESSAGES, settings)
    ids = torch.tensor([fitted.prompt.ids])
    torch.manual_seed(settings.seed)
    began = time.perf_counter()
    with torch.inference_mode():
        out = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), eos_token_id=sorted(NEVER),
                                    pad_token_id=engine.pad_id, **sampling_kwargs(settings, NEW_TOKENS))
    return (out.shape[1] - ids.shape[1]) / (time.perf_counter() - began)


class RecordingClock:
    """Adds up the time the token view's own code takes (recording each step, naming the tokens at the
    end) inside the "view open" runs: its share of their time is the cost, measured without the noise
    of comparing two runs."""

    def __init__(self) -> None:
        self.recording_s = 0.0
        self.total_s = 0.0

    def install(self) -> None:
        from chat.local.engine import LocalGeneration
        from chat.local.sampling import TokenRecorder

        for owner, name in ((TokenRecorder, "add"), (LocalGeneration, "_recorded_tokens")):
            original = getattr(owner, name)

            def timed(*args, _original=original, **kwargs):
                began = time.perf_counter()
                try:
                    return _original(*args, **kwargs)
                finally:
                    self.recording_s += time.perf_counter() - began

            setattr(owner, name, timed)


CLOCK = RecordingClock()


def tokens_per_second(engine, settings, record: bool) -> float:
    began = time.perf_counter()
    generation = engine.generate(engine.prepare(MESSAGES, settings), settings, tokens=record)
    for _ in generation:
        pass
    seconds = time.perf_counter() - began
    if record:
        CLOCK.total_s += seconds
        assert generation.tokens is not None and len(generation.tokens) == generation.stats.new_tokens
    return generation.stats.new_tokens / seconds


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    from chat.settings import GenerationSettings

    engine = load_engine(args.model)
    batched = batched_twin(engine)
    for one in (engine, batched):
        one.eos_ids = NEVER
        one.warm_up = False
    settings = GenerationSettings(temperature=0.8, top_p=0.9, max_new_tokens=NEW_TOKENS, seed=1)
    modes = {
        "generate alone (transformers' sampling)": lambda: tokens_per_second_generate(engine, settings),
        "alone, view closed": lambda: tokens_per_second(engine, settings, False),
        "alone, view open": lambda: tokens_per_second(engine, settings, True),
        "batched, view closed": lambda: tokens_per_second(batched, settings, False),
        "batched, view open": lambda: tokens_per_second(batched, settings, True),
    }
    names = list(modes)
    modes[names[1]]()  # warm-up: the first run pays for lazy initialisation
    CLOCK.install()
    speeds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            speeds[name].append(modes[name]())
    closed = {"alone": median(speeds[names[1]]), "batched": median(speeds[names[3]])}
    rows = []
    for name in names:
        base = closed["batched" if name.startswith("batched") else "alone"]
        rows.append((name, median(speeds[name]), median(speeds[name]) / base))
    print(table(f"Decoding speed with the token view, {engine.name}, {NEW_TOKENS} tokens per answer (medians of {args.repeats})",
                ["mode", "tokens/s", "÷ view closed"], rows,
                [machine(args.threads),
                 f"the token view's own code (recording every step, naming the tokens at the end) took {CLOCK.recording_s / CLOCK.total_s:.1%} "
                 "of the time of the view-open answers: the cost, measured inside them",
                 "view open: each token's three distributions recorded (softmax, entropy, top 20); "
                 "the goal: open costs ≤ 5% (÷ ≥ 0.95), closed costs nothing against `generate` alone"]))


if __name__ == "__main__":
    main()
