"""Against llama.cpp: this app's engine and llama.cpp on the same GGUF and thread count, taking turns.

    .venv/bin/python -m bench.peers --threads 2 --repeats 5

llama.cpp is llama-cpp-python (the build scripts/test installs) on the embedded SmolLM2 GGUF; this
app's engine loads the same GGUF as the app does (`--quantize auto`: int8 weights on a CPU, batching
on). Both get the very same prompt token ids (the chat template applied by this app). Four figures,
the two taking turns within each repetition:

- one answer's decode speed: 128 greedy tokens (end-of-sequence ignored), the first token excluded;
- first token of a fresh chat whose message is a pasted 2,000-token text (nothing cached);
- first token at turn 12 of a long chat (~2,500 tokens), each with its own prefix cache holding the
  chat so far (this app: its warmed-up session cache; llama.cpp: the tokens it evaluated last);
- 4 streams at once, total tokens/s: this app batches them; llama-cpp-python's server answers one
  request at a time (one model, one lock), so for it they run one after another.

llama.cpp runs in a child process: it computes with the same OpenMP runtime as torch, and in one process
each one's idle threads would slow the other (chat/local/omp_threads.py). The two never run at once.
Ratios are this app's speed ÷ llama.cpp's (for times: llama.cpp's time ÷ this app's), taken per
repetition; > 1 means this app is faster. Medians are shown.
"""

from __future__ import annotations

import copy
import threading
import time
from typing import Any

from bench.common import load_engine, machine, median, parser, set_threads, table
from bench.multiturn import QUESTIONS
from bench.weights import HELD_OUT
from chat.local.omp_threads import release_this_threads_team

ANSWER_TOKENS = 128
PASTED_TOKENS = 2000
TURN = 12
ANSWER_WORDS = 160  # each earlier answer in the long chat: ~200 tokens, as in bench.multiturn
STREAMS = 4
NO_EOS = frozenset({10**6})
STORY = "Write a long story about a lighthouse keeper and the sea."
STREAM_PROMPTS = [STORY, "Explain how a bicycle works.", "Describe the city of Paris to a visitor.", "Write a short poem about the sea."]


class LlamaCpp:
    """llama-cpp-python's `Llama` on the embedded GGUF, timed as this app's engine is timed."""

    def __init__(self, threads: int, context: int = 4096):
        from llama_cpp import Llama

        from chat.local.embedded import find_embedded_gguf

        self.llm = Llama(model_path=str(find_embedded_gguf()), n_ctx=context, n_threads=threads, n_threads_batch=threads,
                         verbose=False)

    def tokens(self, ids: list[int], count: int, fresh: bool = True) -> tuple[float, list[float]]:
        """Greedy continuation of `ids`: (seconds to the first token, the time of each token). With `fresh`, nothing is
        reused; otherwise the longest prefix of `ids` it evaluated last is (as its server does)."""
        if fresh:
            self.llm.reset()
        start, times = time.perf_counter(), []
        for token in self.llm.generate(ids, temp=0.0, reset=True):
            times.append(time.perf_counter())
            if len(times) == count:
                break
        return times[0] - start, times

    def prime(self, ids: list[int]) -> None:
        """Evaluates `ids`, as the previous turn of a chat left them in its cache."""
        self.llm.reset()
        self.llm.eval(ids)


class InItsOwnProcess:
    """A `LlamaCpp` in a child process, called through a pipe. llama.cpp computes with the same OpenMP runtime
    as torch: in one process, each one's idle thread team would make the other's sleep between kernels
    (see chat/local/omp_threads.py), which neither would suffer as its own server."""

    def __init__(self, threads: int):
        import multiprocessing

        context = multiprocessing.get_context("spawn")
        self._pipe, child = context.Pipe()
        self._process = context.Process(target=_serve, args=(child, threads), daemon=True)
        self._process.start()

    def __getattr__(self, name: str) -> Any:
        def call(*args: Any) -> Any:
            self._pipe.send((name, args))
            return self._pipe.recv()

        return call


def _serve(pipe: Any, threads: int) -> None:
    import torch

    torch.set_num_threads(threads)
    llama = LlamaCpp(threads)
    while True:
        try:
            name, args = pipe.recv()
        except EOFError:  # the benchmark is done
            return
        pipe.send(getattr(llama, name)(*args))


def on_a_thread_of_its_own(work: Any) -> Any:
    """`work()` computed on a thread that ends with it. Its OpenMP team goes with it: kept on this long-lived
    thread, it would make the engine's threads wait longer between kernels (chat/local/omp_threads.py)."""
    result = []
    thread = threading.Thread(target=lambda: result.append(work()))
    thread.start()
    thread.join()
    return result[0]


def decode_rate(times: list[float]) -> float:
    return (len(times) - 1) / (times[-1] - times[0])


def long_chat(words: list[str]) -> list[dict[str, str]]:
    """Eleven exchanges (the questions of bench.multiturn, each answered by ~200 tokens of the held-out text), then the 12th question."""
    messages = []
    for turn, question in enumerate(QUESTIONS[: TURN - 1]):
        answer = " ".join(words[turn * ANSWER_WORDS : (turn + 1) * ANSWER_WORDS])
        messages += [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
    return messages + [{"role": "user", "content": QUESTIONS[TURN - 1]}]


class ThisApp:
    """This app's local engine as the app builds it, timed through its own statistics."""

    def __init__(self, quantize: str):
        from chat.local.engine import LocalEngine
        from chat.local.loader import LoadedModel
        from chat.settings import GenerationSettings

        plain = load_engine(None, quantize=quantize)
        loaded = LoadedModel(model=plain.model, tokenizer=plain.tokenizer, name=plain.name, device=plain.device)
        self.engine = LocalEngine(loaded, plain.format, batching=True)
        self.engine.eos_ids = NO_EOS  # every answer makes all its tokens
        self.engine.warm_up = False  # no background prefill spilling into the next timing
        self.answer = GenerationSettings(temperature=0, max_new_tokens=ANSWER_TOKENS)
        self.first = GenerationSettings(temperature=0, max_new_tokens=1)

    def prompt(self, messages: list[dict[str, str]], settings: Any) -> Any:
        return self.engine.prepare(messages, settings)

    def run(self, fitted: Any, settings: Any, cache: Any = None) -> Any:
        generation = self.engine.generate(fitted, settings, cache=cache)
        for _ in generation:
            pass
        return generation.stats

    def primed_cache(self, history: list[dict[str, str]]) -> tuple[list[int], Any]:
        """The keys and values of what every next prompt after `history` starts with: what the warm-up leaves."""
        from transformers import DynamicCache

        from chat.local.warmup import prefill

        ids = self.engine._next_turn_prefix(history)
        kv = DynamicCache(config=self.engine.model.config)
        prefill(self.engine.model, ids, 0, kv)
        return ids, kv

    def cached_first_token(self, fitted: Any, primed: tuple[list[int], Any]) -> tuple[float, int]:
        cache = self.engine.new_cache()
        self.engine.caches.keep(cache, primed[0], on_a_thread_of_its_own(lambda: copy.deepcopy(primed[1])))
        stats = self.run(fitted, self.first, cache)
        cache.release()
        return stats.time_to_first_token, stats.cached_tokens

    def streams(self, prompts: list[Any]) -> float:
        """Total tokens/s of `prompts` answered at once, each from its own thread (as browser tabs)."""
        counts = [0] * len(prompts)

        def answer(index: int) -> None:
            counts[index] = self.run(prompts[index], self.answer).new_tokens

        threads = [threading.Thread(target=answer, args=(i,)) for i in range(len(prompts))]
        start = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.perf_counter() - start)


def llama_streams(llama: Any, prompts: list[list[int]]) -> float:
    start, tokens = time.perf_counter(), 0
    for ids in prompts:
        tokens += len(llama.tokens(ids, ANSWER_TOKENS)[1])
    return tokens / (time.perf_counter() - start)


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--quantize", default="auto", help="this app's weights, as app.py's flag (default %(default)s: int8 on a CPU)")
    args = p.parse_args()
    set_threads(args.threads)
    app, llama = ThisApp(args.quantize), InItsOwnProcess(args.threads)
    release_this_threads_team()  # loading ran on this thread (the app's loader does the same)
    text = HELD_OUT.read_text(encoding="utf-8")
    pasted_text = app.engine.tokenizer.decode(app.engine.tokenizer(text)["input_ids"][:PASTED_TOKENS])
    story = app.prompt([{"role": "user", "content": STORY}], app.answer)
    pasted = app.prompt([{"role": "user", "content": "Summarize this text:\n\n" + pasted_text}], app.first)
    chat = long_chat(text.split())
    turn12 = app.prompt(chat, app.first)
    primed = on_a_thread_of_its_own(lambda: app.primed_cache(chat[:-1]))
    streams = [app.prompt([{"role": "user", "content": p}], app.answer) for p in STREAM_PROMPTS[:STREAMS]]

    figures: dict[str, dict[str, list[float]]] = {name: {"app": [], "llama": []} for name in ("decode", "pasted", "turn12", "streams")}
    reused = {}
    for repeat in range(args.repeats):
        sides = ("app", "llama") if repeat % 2 == 0 else ("llama", "app")
        for side in sides:
            if side == "app":
                figures["decode"]["app"].append(app.run(story, app.answer).tokens_per_second)
                figures["pasted"]["app"].append(app.run(pasted, app.first).time_to_first_token)
                seconds, reused["app"] = app.cached_first_token(turn12, primed)
                figures["turn12"]["app"].append(seconds)
                figures["streams"]["app"].append(app.streams(streams))
            else:
                figures["decode"]["llama"].append(decode_rate(llama.tokens(story.prompt.ids, ANSWER_TOKENS)[1]))
                figures["pasted"]["llama"].append(llama.tokens(pasted.prompt.ids, 1)[0])
                llama.prime(primed[0])
                figures["turn12"]["llama"].append(llama.tokens(turn12.prompt.ids, 1, False)[0])
                figures["streams"]["llama"].append(llama_streams(llama, [s.prompt.ids for s in streams]))

    def ratio(name: str, faster_is_higher: bool) -> float:
        pairs = zip(figures[name]["app"], figures[name]["llama"])
        return median(a / b if faster_is_higher else b / a for a, b in pairs)

    rows = [
        [f"one answer's decode, {ANSWER_TOKENS} tokens (tokens/s)", median(figures["decode"]["app"]),
         median(figures["decode"]["llama"]), ratio("decode", True)],
        [f"first token, a pasted {len(pasted.prompt.ids):,}-token message (s)", median(figures["pasted"]["app"]),
         median(figures["pasted"]["llama"]), ratio("pasted", False)],
        [f"first token at turn {TURN} of a chat, {len(turn12.prompt.ids):,} tokens, {reused['app']:,} cached (s)",
         median(figures["turn12"]["app"]), median(figures["turn12"]["llama"]), ratio("turn12", False)],
        [f"{STREAMS} streams at once, total tokens/s", median(figures["streams"]["app"]), median(figures["streams"]["llama"]),
         ratio("streams", True)],
    ]
    print(table(
        "This app against llama.cpp, same GGUF, same threads",
        ["what", f"this app ({app.engine.device.split(' (')[0]})", "llama.cpp (llama-cpp-python)", "this app ÷ llama.cpp (speed)"],
        rows,
        [
            f"{app.engine.name}; greedy; medians of {args.repeats} repetitions, the two alternating; "
            "ratio > 1: this app is faster",
            "llama.cpp: llama-cpp-python in a child process on the same GGUF (Q4_1); its 4 streams run one after another, "
            "as its server serves them",
            machine(args.threads),
        ],
    ))


if __name__ == "__main__":
    main()
