"""The entries of the model list: a local model in each weight format that makes sense on this machine, and
each model a server lists. An entry knows how to build its engine and, for a local model, what it will take.

Variants are entries of their own, so that a learner can put `SmolLM2-135M-Instruct · int8` beside
`· float32`: on a CPU int8 (the default: `--quantize auto`), int4 and float; on a GPU the float dtype and
bitsandbytes' 8bit and 4bit (where bitsandbytes is installed).
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from ..engine import Engine
from ..local.discovery import LocalModel
from ..local.memory import FLOAT_BYTES, estimate
from ..models import ModelDefaults, ModelInfo, Progress
from ..errors import ChatError
from ..shelf import Build, Entry, Reformat, Say
NAME_SEPARATOR = " · "  # "SmolLM2-135M-Instruct · int8"
CPU_VARIANTS = ("int8", "int4", "none")  # `--quantize auto` picks the first on a CPU
GPU_VARIANTS = ("none", "8bit", "4bit")


@dataclass(frozen=True)
class LocalFlags:
    """How local models load and answer: the model flags of app.py and `python -m chat` (one per process)."""

    quantize: str = "auto"  # for the --model given (its default variant); others list every variant
    dtype: str = "auto"
    device_map: str | None = None
    max_memory: str | None = None
    trust_remote_code: bool = False
    cache_dir: str | None = None
    prompt_format: str = "auto"
    user_name: str = "User"
    bot_name: str = "Assistant"
    batching: bool = True
    answers: int = 4  # answers at once (the estimate's KV cache is for this many)
    context_window: int | None = None  # --context-window: a smaller window than the model's


def local_entries(model: LocalModel, flags: LocalFlags, gpu: bool, bf16: bool = True) -> list[Entry]:
    """`model` in each weight format for this machine, the default one first."""
    variants: tuple[str, ...] = GPU_VARIANTS if gpu or flags.device_map else CPU_VARIANTS
    if variants is GPU_VARIANTS and importlib.util.find_spec("bitsandbytes") is None:
        variants = ("none",)
    default = _default_quantize(flags, gpu)
    ordered = [default, *(v for v in variants if v != default)]  # (a --quantize this machine lists no variant of: first too)
    float_name = _float_name(flags.dtype, gpu or bool(flags.device_map), bf16)
    return [_local_entry(model, flags, quantize, float_name, gpu) for quantize in ordered]


def weights_label(quantize: str, float_name: str) -> str:
    return float_name if quantize == "none" else quantize


def _local_entry(model: LocalModel, flags: LocalFlags, quantize: str, float_name: str, gpu: bool) -> Entry:
    label = weights_label(quantize, float_name)
    name = f"{model.base}{NAME_SEPARATOR}{label}"
    float_bytes = FLOAT_BYTES[float_name]
    where = "GPU memory" if flags.device_map else ("cuda:0" if gpu else "RAM")
    shape = model.shape
    context = min(shape.context or 2048, flags.context_window or 10**9) if shape else None
    guess = estimate(shape, label, float_bytes, flags.answers, where, context, loads_as_float=quantize in ("int8", "int4")) \
        if shape is not None else None
    notes = (f"adapter of {model.adapter_of}",) if model.adapter_of else ()
    info = ModelInfo(name, model.base, model.source, model.shown_location, label, shape.parameters if shape else None, context,
                     model.disk_bytes, guess, problem=model.problem, notes=notes)
    return Entry(info, _local_builder(model, flags, quantize, name), reformat=_reformatter(flags))


def _local_builder(model: LocalModel, flags: LocalFlags, quantize: str, name: str) -> Build:
    def build(say: Say, progress: Progress | None, defaults: ModelDefaults) -> Engine:
        from ..formats import choose_format
        from ..local.engine import LocalEngine  # here: torch (seconds to import) only once a local model loads
        from ..local.loader import LoadOptions, load_model

        options = LoadOptions(model=model.location, quantize=quantize, dtype=flags.dtype, device_map=flags.device_map,
                              max_memory=flags.max_memory, trust_remote_code=flags.trust_remote_code, cache_dir=flags.cache_dir)
        loaded = load_model(options, say, progress)
        loaded.name = name
        try:
            prompt_format = choose_format(loaded.tokenizer, defaults.prompt_format or flags.prompt_format, flags.user_name,
                                          flags.bot_name)
        except ChatError as error:  # a default saved before the model was ever loaded, which its tokenizer can't do
            say(f"{name}: its default prompt format can't be used ({error}); using --format {flags.prompt_format}")
            prompt_format = choose_format(loaded.tokenizer, flags.prompt_format, flags.user_name, flags.bot_name)
        engine = LocalEngine(loaded, prompt_format, batching=flags.batching, context_window=flags.context_window)
        engine.revision = engine.revision or model.revision
        if flags.batching and engine.batcher is None:
            say(f"{name}: batching off (this model's cache is not plain attention); answers at once take turns")
        return engine

    return build


def _reformatter(flags: LocalFlags) -> Reformat:
    def reformat(engine: Engine, defaults: ModelDefaults) -> None:
        """A loaded model takes its (new) default prompt format, or --format's again; raises `ChatError` for one its
        tokenizer can't do (a chat template it doesn't have), changing nothing."""
        from ..formats import choose_format

        tokenizer = getattr(engine, "tokenizer")
        setattr(engine, "format", choose_format(tokenizer, defaults.prompt_format or flags.prompt_format, flags.user_name,
                                                flags.bot_name))

    return reformat


def server_entries(base_url: str, api_key: str | None, model_ids: list[str], problem: str | None, context_window: int | None,
                   standard_sampling: bool) -> list[Entry]:
    """One entry per model the server at `base_url` lists (`problem`: why it could not be asked)."""
    shown = shown_url(base_url)
    return [Entry(ModelInfo(model_id, model_id, f"server {shown}", shown, "server", context_window=context_window,
                            problem=None, notes=(f"server unreachable at start: {problem}",) if problem else ()),
                  _server_builder(base_url, api_key, model_id, context_window, standard_sampling), local=False)
            for model_id in model_ids]


def shown_url(url: str) -> str:
    """`url` as the page and /v1/models may show it: without a user name or password written into it."""
    from urllib.parse import urlsplit, urlunsplit

    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))) if parts.hostname else url


def _server_builder(base_url: str, api_key: str | None, model_id: str, context_window: int | None, standard_sampling: bool) -> Build:
    def build(say: Say, progress: Progress | None, defaults: ModelDefaults) -> Engine:
        from ..remote.engine import RemoteEngine

        engine = RemoteEngine(base_url, model_id, api_key, context_window, standard_sampling)
        engine.connect(say)
        return engine

    return build


def _default_quantize(flags: LocalFlags, gpu: bool) -> str:
    on_cpu = not gpu and not flags.device_map
    if flags.quantize == "auto":
        return CPU_VARIANTS[0] if on_cpu else "none"
    return flags.quantize


def _float_name(dtype: str, gpu: bool, bf16: bool) -> str:
    if dtype != "auto":
        return dtype
    return ("bfloat16" if bf16 else "float16") if gpu else "float32"
