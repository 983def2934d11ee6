"""What every benchmark shares: flags, threads, loading, medians, the machine line and the table.

Benchmarks are run by hand from the repository root, never in CI:

    .venv/bin/python -m bench.multiturn --threads 2
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from typing import Any, Callable, Iterable, Sequence

DEFAULT_THREADS = 2  # the baseline figures were taken on 2 CPU threads
DEFAULT_REPEATS = 5  # the issue asks for medians of at least 5 repetitions


def parser(description: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--threads", type=int, default=DEFAULT_THREADS, help="torch CPU threads (default %(default)s)")
    p.add_argument("--repeats", type=int, default=DEFAULT_REPEATS, help="repetitions per figure; medians are shown")
    p.add_argument("--model", default=None, help="model folder, .gguf, or 'tiny' (default: the embedded SmolLM2-135M-Instruct)")
    return p


def set_threads(threads: int) -> None:
    """Pins torch (and child processes, through OMP_NUM_THREADS) to `threads` CPU threads."""
    import torch

    os.environ["OMP_NUM_THREADS"] = str(threads)
    torch.set_num_threads(threads)


def tiny_model_dir() -> str:
    """The tests' tiny random 2-layer Llama, saved once per run into a temporary folder."""
    import tempfile
    from pathlib import Path

    from tests.helpers.tiny_models import save_tiny_model

    global _TINY
    if _TINY is None:
        _TINY = str(save_tiny_model(Path(tempfile.mkdtemp(prefix="bench-tiny-"))))
    return _TINY


_TINY: str | None = None


def load_engine(model: str | None = None, prompt_format: str = "auto", quantize: str = "none") -> Any:
    """The engine for `model` ("tiny": the tests' random model; None: the embedded SmolLM2)."""
    from chat.local.engine import LocalEngine
    from chat.formats import choose_format
    from chat.local.loader import LoadOptions, load_model

    if model == "tiny":
        model = tiny_model_dir()
    loaded = load_model(LoadOptions(model=model, quantize=quantize), say=lambda _: None)
    return LocalEngine(loaded, choose_format(loaded.tokenizer, prompt_format))


def batched_twin(engine: Any) -> Any:
    """An engine over the same weights with decode-step batching on."""
    from chat.local.engine import LocalEngine
    from chat.local.loader import LoadedModel

    loaded = LoadedModel(model=engine.model, tokenizer=engine.tokenizer, name=engine.name, device=engine.device)
    twin = LocalEngine(loaded, engine.format, batching=True)
    twin.eos_ids = engine.eos_ids
    return twin


def session(engine: Any, settings: Any, instructions: str | None = None, cached: bool = True) -> Any:
    """A ChatSession as a browser tab gets it; `cached=False` turns prefix reuse off."""
    from chat.instructions import default_instructions
    from chat.session import ChatSession
    from chat.skills_file import load_skills

    chat = ChatSession(engine, load_skills(), default_instructions(engine.format) if instructions is None else instructions, settings)
    if not cached:
        chat.kv_cache = None
    return chat


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    start = time.perf_counter()
    result = function()
    return time.perf_counter() - start, result


def median(values: Iterable[float]) -> float:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def machine(threads: int) -> str:
    """One line: CPU, cores, torch threads, memory, load, versions."""
    import torch
    import transformers

    cpu = platform.processor() or "CPU"
    try:
        with open("/proc/cpuinfo") as info:
            cpu = next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    memory = ""
    try:
        import psutil

        memory = f", {psutil.virtual_memory().total / 2**30:.0f} GiB RAM"
    except ImportError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return (
        f"{cpu}, {os.cpu_count()} cores{memory}, torch {torch.__version__} on {threads} thread(s), "
        f"transformers {transformers.__version__}, Python {platform.python_version()}; load average {load:.1f} at the end"
    )


def table(title: str, headers: Sequence[str], rows: Sequence[Sequence[Any]], notes: Sequence[str] = ()) -> str:
    """A Markdown table with a bold title line and notes under it."""
    cells = [[_cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda values: "| " + " | ".join(v.ljust(w) for v, w in zip(values, widths)) + " |"  # noqa: E731
    out = [f"**{title}**", "", line(headers), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [line(r) for r in cells]
    out += [""] + [f"- {note}" for note in notes]
    return "\n".join(out)


def _cell(value: Any) -> str:
    if isinstance(value, float):
        if value != value:
            return "–"
        return f"{value:.3f}" if abs(value) < 10 else f"{value:.1f}"
    return str(value)


def goal(name: str, value: float, target: float, at_least: bool) -> str:
    met = value >= target if at_least else value <= target
    sign = "≥" if at_least else "≤"
    return f"{name}: {value:.3f} (goal {sign} {target:g}): {'met' if met else 'MISSED'}"
