"""Weight formats on a CPU: perplexity on a held-out text, decode speed and prefill time, against float32.

    .venv/bin/python -m bench.weights --threads 2 --repeats 5

For each format `--quantize` offers for a CPU (float32 as loaded, bfloat16, int8, int4) on the same
model: perplexity on bench/data/held_out.txt (a few pages of Pride and Prejudice, public domain,
Project Gutenberg eBook #1342), the bytes a step reads from the weights, one answer's decode speed
(greedy, end-of-sequence ignored) and the time to prefill a 2,000-token text. Formats alternate
within each repetition; ratios are taken per repetition against float32 and their medians shown.
The last line names the fastest format whose perplexity is within 3 % of float32's: the one
`--quantize auto` uses on a CPU (chat/local/loader.py, AUTO_CPU_WEIGHTS).
"""

from __future__ import annotations

import copy
import math
import time
from pathlib import Path
from typing import Any

import torch

from bench.common import machine, median, parser, set_threads, table

HELD_OUT = Path(__file__).parent / "data" / "held_out.txt"
WINDOW = 1024  # tokens scored together; each window starts fresh (no context carried over)
DECODE_TOKENS = 64
PREFILL_TOKENS = 2000
QUALITY_LIMIT = 0.03  # the default keeps perplexity within 3 % of float32's
FORMATS = ("float32", "bfloat16", "int8", "int4")


def perplexity(model: Any, ids: list[int]) -> float:
    """exp(mean negative log-likelihood) of `ids`, scored in windows of `WINDOW` tokens."""
    total, count = 0.0, 0
    with torch.inference_mode():
        for start in range(0, len(ids) - 1, WINDOW):
            window = torch.tensor([ids[start : start + WINDOW + 1]])
            logits = model(input_ids=window[:, :-1]).logits.float()
            losses = torch.nn.functional.cross_entropy(logits[0], window[0, 1:], reduction="sum")
            total, count = total + losses.item(), count + window.shape[1] - 1
    return math.exp(total / count)


def decode_rate(model: Any, tokens: int = DECODE_TOKENS) -> float:
    """Greedy tokens/s of one answer after a 64-token prompt, its first token excluded."""
    from transformers import DynamicCache

    cache = DynamicCache(config=model.config)
    with torch.inference_mode():
        out = model(input_ids=torch.arange(100, 164)[None], past_key_values=cache, use_cache=True, logits_to_keep=1)
        token = out.logits[:, -1].argmax(-1, keepdim=True)
        start = time.perf_counter()
        for _ in range(tokens):
            token = model(input_ids=token, past_key_values=cache, use_cache=True).logits[:, -1].argmax(-1, keepdim=True)
    return tokens / (time.perf_counter() - start)


def prefill_seconds(model: Any, ids: list[int]) -> float:
    from transformers import DynamicCache

    with torch.inference_mode():
        start = time.perf_counter()
        model(input_ids=torch.tensor([ids]), past_key_values=DynamicCache(config=model.config), use_cache=True, logits_to_keep=1)
    return time.perf_counter() - start


def formats_of(model: Any) -> dict[str, Any]:
    from chat.local.cpu_weights import quantize_for_cpu

    models = {"float32": model, "bfloat16": copy.deepcopy(model).to(torch.bfloat16)}
    for weights in ("int8", "int4"):
        models[weights] = copy.deepcopy(model)
        quantize_for_cpu(models[weights], weights)
    return models


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    from chat.local.cpu_weights import weight_bytes
    from chat.local.loader import AUTO_CPU_WEIGHTS, LoadOptions, load_model

    loaded = load_model(LoadOptions(model=args.model, quantize="none"), say=lambda _: None)
    text_ids = loaded.tokenizer(HELD_OUT.read_text(encoding="utf-8"))["input_ids"]
    long_ids = (text_ids * 2)[:PREFILL_TOKENS]
    models = formats_of(loaded.model)
    quality = {name: perplexity(model, text_ids) for name, model in models.items()}
    rates: dict[str, list[float]] = {name: [] for name in models}
    prefills: dict[str, list[float]] = {name: [] for name in models}
    for repeat in range(args.repeats):
        order = list(models)[repeat % len(models) :] + list(models)[: repeat % len(models)]
        for name in order:
            rates[name].append(decode_rate(models[name]))
            prefills[name].append(prefill_seconds(models[name], long_ids))
    rows, acceptable = [], []
    for name, model in models.items():
        speed = median(r / f for r, f in zip(rates[name], rates["float32"]))
        change = quality[name] / quality["float32"] - 1
        if change <= QUALITY_LIMIT:
            acceptable.append((speed, name))
        rows.append([name, f"{weight_bytes(model) / 2**20:,.0f}", f"{quality[name]:.2f}", f"{change:+.1%}",
                     median(rates[name]), speed, median(prefills[name]), median(p / f for p, f in zip(prefills[name], prefills["float32"]))])
    best = max(acceptable)[1]
    print(table(
        "Weight formats on this CPU: quality and speed against float32",
        ["weights", "read per step (MiB)", "perplexity", "vs float32", "decode tokens/s", "÷ float32",
         f"prefill {PREFILL_TOKENS:,} tokens (s)", "÷ float32"],
        rows,
        [
            f"{loaded.name}; perplexity on {HELD_OUT.name} ({len(text_ids):,} tokens, windows of {WINDOW}); decode: greedy, "
            f"{DECODE_TOKENS} tokens; medians of {args.repeats} repetitions, formats alternating",
            f"fastest within +{QUALITY_LIMIT:.0%} perplexity: {best} (`--quantize auto` uses {AUTO_CPU_WEIGHTS})",
            machine(args.threads),
        ],
    ))


if __name__ == "__main__":
    main()
