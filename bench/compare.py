"""Compare side by side: wall time of a comparison's columns ÷ one answer alone.

    .venv/bin/python -m bench.compare --threads 2 --repeats 5             # the embedded model (int8 and int4)
    .venv/bin/python -m bench.compare --threads 2 --repeats 5 --model tiny

One message, answered: once alone (a chat's Send); by 4 contenders on one model at once (temperature 0, 0.7, 1.0, 1.2,
as `ChatSession.comparisons.compare` runs them, with the app's decode-step batching, and without it for reference);
and by 2 models side by side (the same weights at int8 and int4, each its own engine), against the same two answered
one after the other. End-of-sequence is off, so every answer makes `--tokens` tokens; each repetition runs every way,
in a rotating order, and ratios are taken within a repetition (these machines are noisy).
"""

from __future__ import annotations

import time

from bench.common import batched_twin, load_engine, machine, median, parser, set_threads, table

MESSAGE = "Write a short poem about the sea."
NO_EOS = 10**6
TEMPERATURES = (0.0, 0.7, 1.0, 1.2)
GOAL_FOUR_COLUMNS = 2.0  # 4 columns on one model take at most twice one answer's time (the goal, on 2 cores)


def quiet(engine):
    engine.eos_ids = frozenset({NO_EOS})
    engine.warm_up = False  # no background prefill after an answer spilling into the next timing
    return engine


def chat_on(engines, settings):
    """A fresh chat over `engines` (the first: the chat's model), with the shipped skills and instructions."""
    from chat.instructions import default_instructions
    from chat.session import ChatSession
    from chat.shelf import ModelShelf
    from chat.skills_file import load_skills

    models = ModelShelf.of(*engines, say=lambda _: None)
    return ChatSession(engines[0], load_skills(), default_instructions(engines[0].format), settings, models=models)


def alone(engine, settings) -> float:
    chat = chat_on([engine], settings)
    start = time.perf_counter()
    "".join(chat.send(MESSAGE))
    return time.perf_counter() - start


def side_by_side(engines, settings, contenders) -> float:
    chat = chat_on(engines, settings)
    start = time.perf_counter()
    run = chat.comparisons.compare(MESSAGE, contenders, blind=False)
    run.wait()
    seconds = time.perf_counter() - start
    assert all(reply.stats.new_tokens == settings.max_new_tokens for reply in run.replies)
    return seconds


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--tokens", type=int, default=128, help="tokens per answer (default %(default)s)")
    args = p.parse_args()
    set_threads(args.threads)
    from chat.compare import Contender
    from chat.settings import GenerationSettings

    plain = quiet(load_engine(args.model, quantize="int8"))
    batched = quiet(batched_twin(plain))
    other = quiet(batched_twin(quiet(load_engine(args.model, quantize="int4"))))
    for engine, weights in ((plain, "int8"), (batched, "int8"), (other, "int4")):
        engine.name = f"{engine.name} · {weights}" if not engine.name.endswith(weights) else engine.name
    settings = GenerationSettings(temperature=0, max_new_tokens=args.tokens, seed=7)
    four = [Contender(settings={"temperature": t}) for t in TEMPERATURES]
    two_models = [Contender(), Contender(model=other.name)]
    ways = {
        "one answer alone (batching on)": lambda: alone(batched, settings),
        "4 columns, one model, batching on (as the app runs)": lambda: side_by_side([batched], settings, four),
        "4 columns, one model, no batching": lambda: side_by_side([plain], settings, four),
        "2 models side by side (int8 + int4)": lambda: side_by_side([batched, other], settings, two_models),
        "the same 2 answers one after the other": lambda: alone(batched, settings) + alone(other, settings),
    }
    names = list(ways)
    seconds: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(args.repeats):
        for name in names[repeat % len(names):] + names[: repeat % len(names)]:
            seconds[name].append(ways[name]())
    base = seconds[names[0]]
    rows = [[name, median(seconds[name]), median(s / b for s, b in zip(seconds[name], base))] for name in names]
    four_ratio = rows[1][2]
    two_ratio = median(s / b for s, b in zip(seconds[names[3]], seconds[names[4]]))
    print(table(
        "Compare side by side: wall time of the columns ÷ one answer alone",
        ["way", "seconds", "÷ one answer alone"],
        rows,
        [
            f"{plain.name.split(' · ')[0]}, {args.tokens} tokens per answer (end-of-sequence off), temperatures "
            f"{', '.join(f'{t:g}' for t in TEMPERATURES)}; medians of {args.repeats} repetitions, ratios within a repetition",
            f"4 columns on one model ÷ one answer alone: {four_ratio:.2f}× (goal ≤ {GOAL_FOUR_COLUMNS:g}×): "
            f"{'met' if four_ratio <= GOAL_FOUR_COLUMNS else 'MISSED'}",
            f"2 models side by side ÷ the same answers one after the other: {two_ratio:.2f}×",
            machine(args.threads),
        ],
    ))


if __name__ == "__main__":
    main()
