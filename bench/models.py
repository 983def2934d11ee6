"""The model list's memory estimates against the process's memory: each variant of a model loaded, answering, unloaded.

    .venv/bin/python -m bench.models --threads 2 --repeats 3

The model list (chat/shelf.py) checks each model's estimate (chat/local/memory.py) against the memory free
before it loads it; the issue's goal is an estimate within ±25 % of what the process really takes. For
each variant of the embedded SmolLM2-135M-Instruct (int8, int4, float32 on a CPU), in a fresh process
of its own (one variant's freed memory, kept by the allocator, would otherwise hide the next one's):

- weights: the RSS the load adds, against the estimate's weights. Taken after a first 1-token answer: the
  loader maps the model's safetensors file, and mapped weights count in RSS only once a step reads them.
  The part that is pages of mapped files is shown apart, and `model_bytes` (what the tensors take). Also
  the process's high-water mark until then, against what the list checks before loading
  (`MemoryEstimate.while_loading` without the KV cache), and the load's time;
- KV cache: one answer of 8 tokens to a ~2,000-token prompt, through the engine with a session cache
  (the engine's CachePool keeps its keys and values after the answer, as it does for a tab); the
  RSS it adds against the estimate's KV cache per token × the tokens cached;
- unload: `ModelShelf.unload(name)`, its time and the RSS it gives back.

The model list is built as app.py builds it (`app.parse_args`, `--db none`: nothing is written but the
embedded model's conversion, which a first start makes anyway). Ratios are measured ÷ estimate, per
process; medians are shown.
"""

from __future__ import annotations

import resource
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from bench.common import machine, median, parser, set_threads, table, tiny_model_dir
from bench.weights import HELD_OUT

PROMPT_TOKENS = 2000
ANSWER_TOKENS = 8
MIB = 2**20


def in_a_fresh_process(function: Any, *args: Any) -> Any:
    """`function(*args)` in a new Python process (spawned: nothing of this one's memory or threads in it)."""
    with ProcessPoolExecutor(max_workers=1, mp_context=get_context("spawn")) as pool:
        return pool.submit(function, *args).result()


def model_list(model: str | None) -> Any:
    """The model list as `app.py` builds it from its flags, storing nothing."""
    import app
    from chat.cli.args import build_models

    flags = ["--db", "none"] + (["--model", model] if model else [])
    return build_models(app.parse_args(flags), say=lambda _: None)


def variants(model: str | None) -> list[str]:
    """The names of the list's default model's variants ("SmolLM2-135M-Instruct · int8", "· int4", …)."""
    shelf = model_list(model)
    base = shelf.info(shelf.default).base
    return [info.name for info in shelf.listing() if info.base == base and info.estimate is not None]


def memory() -> tuple[int, int]:
    """The process's resident memory and the part of it that is pages of mapped files (the model's safetensors,
    which the loader maps rather than copies), once freed memory is handed back (as the list does on unload)."""
    from chat.machine import give_back_freed_memory

    give_back_freed_memory()
    status = dict(line.split(":", 1) for line in Path("/proc/self/status").read_text().splitlines() if ":" in line)
    return int(status["VmRSS"].split()[0]) * 1024, int(status["RssFile"].split()[0]) * 1024


def high_water_mark() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # kB on Linux


def import_what_loading_imports() -> None:
    """transformers imports a model's code lazily, on the first load: about 100 MiB of modules (measured here)
    that a process's first load pays once, whichever model it is. Imported before the figures start, so that
    the load measures the model."""
    import torch

    import chat.local.cpu_weights  # noqa: F401
    import chat.local.engine  # noqa: F401
    import transformers.models.llama.modeling_llama  # noqa: F401
    from transformers import AutoModelForCausalLM, AutoTokenizer, PreTrainedTokenizerFast  # noqa: F401

    torch.ones(64, 64) @ torch.ones(64, 64)  # torch's thread pool and first allocations: the process's, not the model's


def measure(name: str, model: str | None, threads: int) -> dict[str, Any]:
    """Loads `name` through a model list, answers twice, unloads it: this process's memory at each stage."""
    set_threads(threads)
    from chat.local.memory import model_bytes
    from chat.settings import GenerationSettings

    shelf = model_list(model)
    estimate = shelf.info(name).estimate
    import_what_loading_imports()
    before, file_before = memory()
    start = time.perf_counter()
    engine = shelf.engine(name)
    load_s = time.perf_counter() - start
    tensors = model_bytes(engine.model)
    engine.warm_up = False  # the app prefills the next turn after an answer: a second cache, not this answer's
    # Weights mapped from the model's file are read from it (and count in RSS) only when a step first uses them:
    # a first short answer, nothing cached, makes every weight resident before the figures are taken.
    answer(engine, "Hello!", GenerationSettings(temperature=0, max_new_tokens=1))
    peak = high_water_mark() - before  # the process only grew before the load: its mark was about `before`
    loaded, file_loaded = memory()

    settings = GenerationSettings(temperature=0, max_new_tokens=ANSWER_TOKENS)
    fitted = engine.prepare([{"role": "user", "content": "Summarize this text:\n\n" + pasted_text(engine)}], settings)
    ready, _ = memory()
    cache = engine.new_cache()  # the pool keeps a session's keys and values only while the session keeps its cache
    answer(engine, fitted, settings, cache)
    cached_tokens = engine.caches.tokens
    answered, _ = memory()

    del engine  # the list's reference is the last one, as in the app
    start = time.perf_counter()
    shelf.unload(name)  # (hands freed memory back itself)
    unload_s = time.perf_counter() - start
    unloaded, _ = memory()
    kv_per_token = estimate.kv_cache / (estimate.context * estimate.answers)
    return {
        "weights_estimate": estimate.weights, "tensors": tensors, "weights": loaded - before, "file": file_loaded - file_before,
        "peak_estimate": max(estimate.weights, estimate.peak), "peak": peak, "load_s": load_s,
        "prompt_tokens": fitted.prompt.length, "cached_tokens": cached_tokens,
        "kv_estimate": kv_per_token * cached_tokens, "kv": answered - ready,
        "unload_s": unload_s, "freed": answered - unloaded, "held": answered - before,
    }


def answer(engine: Any, prompt: Any, settings: Any, cache: Any = None) -> None:
    """One answer through the engine, read to its end (`prompt`: a message, or a prompt already fitted)."""
    fitted = engine.prepare([{"role": "user", "content": prompt}], settings) if isinstance(prompt, str) else prompt
    for _ in engine.generate(fitted, settings, cache=cache):
        pass
    # (the generation, which holds its output's keys and values too, is gone now: only the pool keeps them)


def pasted_text(engine: Any) -> str:
    """The first PROMPT_TOKENS tokens of the held-out text: a long pasted message."""
    ids = engine.tokenizer(HELD_OUT.read_text(encoding="utf-8"))["input_ids"][:PROMPT_TOKENS]
    return engine.tokenizer.decode(ids)


def rows(runs: dict[str, list[dict[str, Any]]]) -> tuple[list[list[Any]], list[list[Any]]]:
    """The weights table's rows and the KV cache and unload table's, medians over each variant's processes."""
    weights, kv = [], []
    for name, group in runs.items():
        mib = lambda key: f"{median(r[key] for r in group) / MIB:,.0f}"  # noqa: E731
        ratio = lambda measured, estimated: median(r[measured] / r[estimated] for r in group)  # noqa: E731
        variant = name.split(" · ")[-1]
        weights.append([variant, mib("weights_estimate"), mib("tensors"), mib("weights"), mib("file"), ratio("weights", "weights_estimate"),
                        mib("peak_estimate"), mib("peak"), ratio("peak", "peak_estimate"), median(r["load_s"] for r in group)])
        kv.append([variant, f"{median(r['cached_tokens'] for r in group):,.0f}", f"{median(r['kv_estimate'] for r in group) / MIB:.1f}",
                   f"{median(r['kv'] for r in group) / MIB:.1f}", ratio("kv", "kv_estimate"), median(r["unload_s"] for r in group),
                   f"{mib('freed')} of {mib('held')}"])
    return weights, kv


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.set_defaults(repeats=3)
    args = p.parse_args()
    set_threads(args.threads)  # (OMP_NUM_THREADS: the children inherit it)
    model = tiny_model_dir() if args.model == "tiny" else args.model
    names = variants(model)
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in names}
    for _ in range(args.repeats):
        for name in names:  # the variants take turns: a slow moment of this machine doesn't fall on one alone
            runs[name].append(in_a_fresh_process(measure, name, model, args.threads))
    weights, kv = rows(runs)
    prompt = median(r["prompt_tokens"] for group in runs.values() for r in group)
    print(table(
        f"Weights: the model list's estimate against the process's memory ({names[0].split(' · ')[0]})",
        ["weights", "estimate (MiB)", "tensors (MiB)", "RSS added (MiB)", "of it, file pages (MiB)", "÷ estimate",
         "loading: estimate (MiB)", "peak (MiB)", "÷ estimate", "load (s)"],
        weights,
        [
            f"each variant loaded by the model list (`ModelShelf.engine`) in a fresh process; medians of {args.repeats}",
            "RSS added: from before the load to after it and a first 1-token answer (which makes mapped weights resident), "
            "freed memory handed back; file pages: the part that is pages of mapped files (the model's safetensors, library code)",
            "tensors: `model_bytes` of the loaded model; loading: the estimate the list checks before a load (without KV cache) "
            "and the process's high-water mark until that first answer, above its RSS before the load",
        ],
    ))
    print()
    print(table(
        "KV cache and unload",
        ["weights", "tokens cached", "KV estimate (MiB)", "RSS added (MiB)", "÷ estimate", "unload (s)", "unload frees (MiB)"],
        kv,
        [
            f"one greedy answer of {ANSWER_TOKENS} tokens to a {prompt:,.0f}-token prompt with a session cache: the engine's cache "
            "pool keeps its keys and values; estimate: the entry's KV cache per token × the tokens cached",
            "unload frees: the RSS `ModelShelf.unload` gives back, of all that the load and both answers added",
            machine(args.threads),
        ],
    ))


if __name__ == "__main__":
    main()
