"""Long chats: time to first token per turn of a 30-turn chat that outgrows the context window.

    .venv/bin/python -m bench.longchat --threads 2

The same 30 questions are asked of the embedded SmolLM2 twice per backend, once with the app's
trimming (drop to a low-water mark, then keep the prompt's beginning until it is full again) and
once with the old rule (drop the fewest oldest messages that make each turn fit), which changes the
prompt's beginning at every turn after the first trim. Backends: the local engine (its per-session
KV cache and warm-up) and, where llama-cpp-python is installed, llama.cpp's server (its own prefix
cache) on `--backend openai`. Both get a WINDOW-token context. Goal: after the first trim, the
median first-token time of the following turns is at most 2x that of the turns before it.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from pathlib import Path
from typing import Any, Iterator
from unittest import mock

from bench.common import goal, load_engine, machine, median, parser, session, set_threads, table

TURNS = 30
WINDOW = 1024  # tokens: the chat outgrows it around turn 10
ANSWER_TOKENS = 48
GOAL_RATIO = 2.0
BARS = " ▁▂▃▄▅▆▇█"


def questions() -> list[str]:
    topics = ["bicycles", "bread", "the sky", "honey bees", "airplanes", "ancient Rome", "sleep", "volcanoes",
              "the moon", "coffee", "rivers", "chess", "trains", "glass", "music"]
    return [f"Question {i + 1}: tell me something interesting about {topics[i % len(topics)]}, in two sentences."
            for i in range(TURNS)]


@contextlib.contextmanager
def fewest_drops() -> Iterator[None]:
    """The rule before hysteresis: every turn keeps as much history as fits (no replayed cut)."""
    with mock.patch("chat.context_window._window_start", lambda *args: 0):
        yield


def play(engine: Any, label: str) -> list[tuple[int, int, float]]:
    """(prompt tokens, messages left out, seconds to first token) for each turn."""
    from chat.settings import GenerationSettings

    chat = session(engine, GenerationSettings(temperature=0, max_new_tokens=ANSWER_TOKENS, seed=1))
    turns = []
    for number, question in enumerate(questions(), start=1):
        reply = chat.send(question)
        for _ in reply:
            pass
        turns.append((reply.stats.prompt_tokens, reply.fitted.dropped_messages, reply.stats.time_to_first_token or float("nan")))
        print(f"\r{label}: turn {number}/{TURNS}, first token {turns[-1][2]:.2f} s", end="", file=sys.stderr, flush=True)
    print(file=sys.stderr)
    return turns


def split_at_first_trim(turns: list[tuple[int, int, float]]) -> tuple[float, float, int]:
    """(median TTFT of the turns before the first trim (not the first turn), of the turns after it, that turn)."""
    first = next((i for i, (_, dropped, _) in enumerate(turns) if dropped), len(turns))
    before = median(t for _, _, t in turns[1:first])
    after = median(t for _, _, t in turns[first + 1 :])
    return before, after, first + 1


def bars(values: list[float]) -> str:
    top = max(values)
    return "".join(BARS[min(len(BARS) - 1, round(v / top * (len(BARS) - 1)))] for v in values)


def local_engine() -> Any:
    engine = load_engine()
    engine.context_window = WINDOW
    return engine


@contextlib.contextmanager
def llama_cpp_engine(threads: int) -> Iterator[Any]:
    from chat.remote.engine import RemoteEngine
    from tests.helpers.llama_server import ALIAS, LlamaServer

    with LlamaServer(Path(tempfile.mkdtemp(prefix="bench-llama-")), n_ctx=WINDOW, threads=threads) as server:
        engine = RemoteEngine(server.base_url, ALIAS, context_window=WINDOW)
        engine.connect(say=lambda _: None)
        yield engine


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    backends: list[tuple[str, Any]] = [("local engine", contextlib.nullcontext(local_engine()))]
    try:
        import llama_cpp.server.app  # noqa: F401

        backends.append(("llama.cpp server", llama_cpp_engine(args.threads)))
    except ImportError:
        print("llama-cpp-python is not installed (scripts/install-llama-cpp): the llama.cpp rows are left out")
    rows, pictures, goals = [], [], []
    for name, opened in backends:
        with opened as engine:
            for rule, context in (("low-water mark (now)", contextlib.nullcontext()), ("fewest drops (before)", fewest_drops())):
                with context:
                    turns = play(engine, f"{name}, {rule}")
                before, after, trim_turn = split_at_first_trim(turns)
                trims = sum(1 for a, b in zip(turns, turns[1:]) if a[1] != b[1])
                rows.append((name, rule, trim_turn, trims, before, after, after / before))
                pictures.append(f"{name}, {rule}: `{bars([t for _, _, t in turns])}` (max {max(t for _, _, t in turns):.2f} s)")
                if rule.startswith("low-water"):
                    goals.append(goal(f"{name}: after ÷ before the first trim", after / before, GOAL_RATIO, at_least=False))
    print(table(
        f"Long chat: first-token time per turn, {TURNS} turns in a {WINDOW:,}-token window (answers {ANSWER_TOKENS} tokens)",
        ["backend", "trimming", "first trim at turn", "trims", "median TTFT before (s)", "median TTFT after (s)", "after ÷ before"],
        rows,
        [*goals, "First-token time per turn (one bar per turn):", *pictures, machine(args.threads)],
    ))


if __name__ == "__main__":
    main()
