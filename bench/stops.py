"""Stop exactness: model steps run after a stop string is complete (goal: 0).

    .venv/bin/python -m bench.stops --threads 2

An answer is generated once without stop strings; stop strings are then picked from its text
(a word, a piece inside a token, a span over several tokens, a line break) and the same prompt
is run again with each. Greedy decoding makes the runs identical up to the stop, so the step
that completed the stop string is known from the first run's tokens. The engine's clock counts
the steps the model actually ran. Also checked: the text shown ends right before the stop string.
Deterministic: one run per case (the figure is a count, not a time).
"""

from __future__ import annotations

from bench.common import batched_twin, load_engine, machine, parser, set_threads, table

PROMPTS = {
    "chat-template": "List the days of the week, one per line, and say something about each.",
    "transcript": "Hi! What can you tell me about the moon?",
}
ANSWER_TOKENS = 96


def completing_step(tokenizer, new_ids: list[int], stop: str) -> int | None:
    """The 1-based step whose token first makes the decoded answer contain `stop`."""
    for step in range(1, len(new_ids) + 1):
        if stop in tokenizer.decode(new_ids[:step], skip_special_tokens=True):
            return step
    return None


def pick_stops(text: str) -> list[str]:
    """Stop strings taken from `text`: a word, a fragment, a longer span, a line break."""
    words = [w for w in text.split() if len(w) > 3]
    picks = []
    if len(words) > 4:
        picks.append(words[len(words) // 3])  # a whole word
        picks.append(words[len(words) // 2][1:3])  # two letters inside a word (inside a token)
    middle = len(text) * 2 // 3
    picks.append(text[middle : middle + 12])  # a span over several tokens
    if "\n" in text.strip():
        picks.append("\n")
    # U+FFFD is a decoding artefact (half a character), not text a user could mean to stop at.
    return [p for p in dict.fromkeys(picks) if (p.strip() or p == "\n") and "\ufffd" not in p]


def run_case(engine, settings, prompt_text, stop):
    fitted = engine.prepare([{"role": "user", "content": prompt_text}], settings)
    generation = engine.generate(fitted, settings, (stop,))
    shown = "".join(generation)
    return shown, generation.stats


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    from chat.settings import GenerationSettings

    settings = GenerationSettings(temperature=0, max_new_tokens=ANSWER_TOKENS)
    rows, worst = [], 0
    for format_name, prompt_text in PROMPTS.items():
        engine = load_engine(args.model, format_name)
        fitted = engine.prepare([{"role": "user", "content": prompt_text}], settings)
        free = engine.run_generate(fitted, settings, engine.format.stop_strings, None, [])
        new_ids = free.sequences[0, len(fitted.prompt.ids) :].tolist()
        full = engine.tokenizer.decode(new_ids, skip_special_tokens=True)
        stops = pick_stops(full) + list(engine.format.stop_strings)
        for way, runner in (("generate", engine), ("batching", batched_twin(engine))):
            for stop in stops:
                step = completing_step(engine.tokenizer, new_ids, stop)
                shown, stats = run_case(runner, settings, prompt_text, stop)
                expected = full[: full.find(stop)].strip() if step else None
                after = stats.steps - step if step else None
                if after is not None:
                    worst = max(worst, after)
                rows.append([
                    f"{format_name}, {way}", repr(stop), step or "never", stats.steps, "–" if after is None else after,
                    stats.stop_reason, "–" if expected is None else shown.strip() == expected,
                ])
    print(table(
        "Stop exactness: model steps run after the stop string was complete",
        ["format, engine path", "stop string", "completing step", "steps run", "steps after", "stop reason", "text cut right"],
        rows,
        [
            f"embedded model unless --model; greedy, up to {ANSWER_TOKENS} tokens; one run per case (a count, not a time)",
            f"most steps after a completed stop string: {worst} (goal 0): {'met' if worst == 0 else 'MISSED'}",
            machine(args.threads),
        ],
    ))


if __name__ == "__main__":
    main()
