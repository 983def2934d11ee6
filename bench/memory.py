"""Memory and load: peak RSS and load time for --quantize none/8bit/4bit; first start vs later starts.

    .venv/bin/python -m bench.memory --threads 2 --repeats 5

Every figure comes from a fresh Python process (what starting the app costs): it imports the
app's modules, loads the embedded model the way `app.py` does, and generates 32 tokens.
Peak RSS is the process's high-water mark (`ru_maxrss`), imports included; the "imports only"
row shows that floor. "First start" points CHAT_CACHE_DIR at an empty folder, so the shipped
GGUF is converted to safetensors; "later start" loads the converted copy.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bench.common import machine, median, parser, table

ROOT = Path(__file__).resolve().parent.parent
TOKENS = 32

CHILD = r"""
import json, resource, sys, time
start = time.perf_counter()
import torch
torch.set_num_threads(int(sys.argv[2]))
from chat.loader import LoadOptions, load_model
imported = time.perf_counter()
result = {"import_s": imported - start}
if sys.argv[1] != "imports":
    try:
        loaded = load_model(LoadOptions(quantize=sys.argv[1]), say=lambda _: None)
        result["load_s"] = time.perf_counter() - imported
        ids = loaded.tokenizer("Tell me about the sea.", return_tensors="pt")
        began = time.perf_counter()
        with torch.inference_mode():
            out = loaded.model.generate(**ids, max_new_tokens=%d, min_new_tokens=%d, do_sample=False)
        result["tokens_per_s"] = (out.shape[1] - ids["input_ids"].shape[1]) / (time.perf_counter() - began)
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(result))
""" % (TOKENS, TOKENS)


def child(mode: str, threads: int, cache_dir: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    if cache_dir:
        env["CHAT_CACHE_DIR"] = cache_dir
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(threads)], cwd=ROOT, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:120]}


def summarize(name: str, runs: list[dict]) -> list:
    errors = [r["error"] for r in runs if "error" in r]
    pick = lambda key: median(r[key] for r in runs if key in r)  # noqa: E731
    return [name, pick("load_s"), pick("peak_rss_mib"), pick("tokens_per_s"), errors[0] if errors else ""]


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    rows = [summarize("imports only", [child("imports", args.threads) for _ in range(args.repeats)])]
    for quantize in ("none", "8bit", "4bit"):
        rows.append(summarize(f"--quantize {quantize}", [child(quantize, args.threads) for _ in range(args.repeats)]))
    first, later = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
            first.append(child("none", args.threads, cache))
            later.append(child("none", args.threads, cache))
    rows.append(summarize("first start (converts the GGUF)", first))
    rows.append(summarize("later start (converted copy)", later))
    print(table(
        "Memory and load: the embedded model on CPU, one fresh process per run",
        ["run", "load (s)", "peak RSS (MiB)", f"tokens/s ({TOKENS} tokens)", "error"],
        rows,
        [
            f"SmolLM2-135M-Instruct (embedded); medians of {args.repeats} processes each; load = `load_model` "
            "after imports; peak RSS includes Python, torch and transformers (see 'imports only')",
            machine(args.threads),
        ],
    ))


if __name__ == "__main__":
    main()
