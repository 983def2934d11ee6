"""Memory and load: peak RSS and load time for --quantize none/8bit/4bit; first start vs later starts.

    .venv/bin/python -m bench.memory --threads 2 --repeats 5

Every figure comes from a fresh Python process (what starting the app costs): it imports the
app's modules, loads the embedded model the way `app.py` does, and generates 32 tokens.
Peak RSS is the process's high-water mark (`ru_maxrss`), imports included; the "imports only"
row shows that floor. "First start" points CHAT_CACHE_DIR at an empty folder, so the shipped
GGUF is converted to safetensors; "later start" loads the converted copy.

On a machine with a GPU the model loads there (as app.py does: bf16, or 8/4-bit) and the table
adds the GPU memory the weights take and the most allocated while generating, and tokens/s as a
share of what the memory bandwidth allows: a decoding step reads every weight once, so
tokens/s can't exceed bandwidth ÷ weight bytes (--bandwidth-gbs, or looked up by GPU name).
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
from chat.local.loader import LoadOptions, load_model
imported = time.perf_counter()
result = {"import_s": imported - start}
cuda = torch.cuda.is_available()
if sys.argv[1] != "imports":
    try:
        loaded = load_model(LoadOptions(quantize=sys.argv[1]), say=lambda _: None)
        model = loaded.model
        if cuda:
            torch.cuda.synchronize()
        result["load_s"] = time.perf_counter() - imported
        result["weights_mib"] = model.get_memory_footprint() / 2**20
        compute = str(next(p.dtype for p in model.parameters() if p.is_floating_point())).replace("torch.", "")
        result["dtype"] = {"8bit": "int8 + ", "4bit": "nf4 + "}.get(sys.argv[1], "") + compute  # quantized linears + the rest
        ids = loaded.tokenizer("Tell me about the sea.", return_tensors="pt").to(model.device)

        def timed(tokens):
            if cuda:
                torch.cuda.synchronize()
            began = time.perf_counter()
            with torch.inference_mode():
                model.generate(**ids, max_new_tokens=tokens, min_new_tokens=tokens, do_sample=False)
            if cuda:
                torch.cuda.synchronize()
            return time.perf_counter() - began

        timed(2)  # first use: kernels, caches (CUDA initialisation on a GPU)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        result["ttft_s"] = timed(1)
        whole = timed(%d)
        result["tokens_per_s"] = (%d - 1) / max(whole - result["ttft_s"], 1e-9)  # decoding, after the first token
        if cuda:
            result["gpu_peak_mib"] = torch.cuda.max_memory_allocated() / 2**20
            result["gpu"] = torch.cuda.get_device_name(0)
    except Exception as error:
        result["error"] = f"{type(error).__name__}: {str(error).splitlines()[0][:120]}"
result["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print("RESULT " + json.dumps(result))
""" % (TOKENS, TOKENS)

# Memory bandwidth (GB/s) of common GPUs, by a part of torch.cuda.get_device_name(); --bandwidth-gbs overrides.
GPU_BANDWIDTH_GBS = {"H200": 4800, "H100 PCIe": 2000, "H100": 3350, "A100-SXM4-80GB": 2039, "A100 80GB PCIe": 1935,
                     "A100": 1555, "L40S": 864, "L4": 300, "A10G": 600, "RTX 4090": 1008, "RTX 3090": 936, "T4": 320}


def bandwidth_gbs(gpu: str | None, given: float | None) -> float | None:
    if given:
        return given
    return next((value for name, value in GPU_BANDWIDTH_GBS.items() if gpu and name in gpu), None)


def child(mode: str, threads: int, cache_dir: str | None = None) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONPATH": str(ROOT)}
    if cache_dir:
        env["CHAT_CACHE_DIR"] = cache_dir
    done = subprocess.run([sys.executable, "-c", CHILD, mode, str(threads)], cwd=ROOT, env=env, capture_output=True, text=True)
    for line in done.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[7:])
    return {"error": (done.stderr.strip().splitlines() or ["no output"])[-1][:120]}


def summarize(name: str, runs: list[dict], bandwidth: float | None) -> list:
    errors = [r["error"] for r in runs if "error" in r]
    pick = lambda key: median(r[key] for r in runs if key in r)  # noqa: E731
    dtype = next((r["dtype"] for r in runs if "dtype" in r), "")
    share = float("nan")
    if bandwidth and runs and "weights_mib" in runs[0]:  # tokens/s ÷ (bandwidth ÷ bytes read per token)
        share = pick("tokens_per_s") * pick("weights_mib") * 2**20 / (bandwidth * 1e9)
    return [name, dtype, pick("load_s"), pick("peak_rss_mib"), pick("weights_mib"), pick("gpu_peak_mib"),
            pick("ttft_s"), pick("tokens_per_s"), share, errors[0] if errors else ""]


def main() -> None:
    p = parser(__doc__.splitlines()[0])
    p.add_argument("--bandwidth-gbs", type=float, default=None, help="memory bandwidth for the share column (default: by GPU name)")
    args = p.parse_args()
    runs = {"imports only": [child("imports", args.threads) for _ in range(args.repeats)]}
    for quantize in ("none", "8bit", "4bit"):
        runs[f"--quantize {quantize}"] = [child(quantize, args.threads) for _ in range(args.repeats)]
    first, later = [], []
    for _ in range(args.repeats):
        with tempfile.TemporaryDirectory(prefix="bench-cache-") as cache:
            first.append(child("none", args.threads, cache))
            later.append(child("none", args.threads, cache))
    runs["first start (converts the GGUF)"] = first
    runs["later start (converted copy)"] = later
    gpu = next((r["gpu"] for group in runs.values() for r in group if "gpu" in r), None)
    bandwidth = bandwidth_gbs(gpu, args.bandwidth_gbs)
    rows = [summarize(name, group, bandwidth) for name, group in runs.items()]
    print(table(
        f"Memory and load: the embedded model on {gpu or 'CPU'}, one fresh process per run",
        ["run", "weights", "load (s)", "peak RSS (MiB)", "weights (MiB)", "GPU peak (MiB)", "first token (s)",
         f"tokens/s ({TOKENS} tokens)", "÷ bandwidth limit", "error"],
        rows,
        [
            f"SmolLM2-135M-Instruct (embedded); medians of {args.repeats} processes each; load = `load_model` "
            "after imports; peak RSS includes Python, torch and transformers (see 'imports only')",
            "first token: a 1-token `generate` (prefill of a 7-token prompt); tokens/s: decoding after it, greedy",
            f"÷ bandwidth limit: tokens/s × weight bytes ÷ {bandwidth:g} GB/s" if bandwidth else
            "÷ bandwidth limit: needs a GPU (or --bandwidth-gbs)",
            machine(args.threads),
        ],
    ))


if __name__ == "__main__":
    main()
