"""Model loading: hub id, local folder or .gguf file → (model, tokenizer), placed and quantized.

Everything a user can get wrong here becomes one `ModelLoadError` line: a name that is
neither a folder nor reachable on the hub, a quantization this machine can't run, memory.
bitsandbytes is imported only when quantization is asked for (it takes seconds to import).
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable

from .embedded import EMBEDDED_NAME, ensure_converted, find_embedded_gguf
from .omp_threads import release_this_threads_team
from ..errors import ModelLoadError

if TYPE_CHECKING:  # torch is imported when a model is loaded, not when flags are parsed
    import torch

log = logging.getLogger(__name__)

QUANTIZE_CHOICES = ("auto", "none", "8bit", "4bit", "int8", "int4")
GPU_QUANTIZE = ("8bit", "4bit")  # bitsandbytes: for fitting big models on GPUs
CPU_QUANTIZE = ("int8", "int4")  # PyTorch's CPU kernels (cpu_weights.py): faster answers on a CPU
# What `auto` picks on a CPU: the fastest format whose perplexity stays within 3 % of float32's
# (python -m bench.weights; README, Performance).
AUTO_CPU_WEIGHTS = "int8"
DTYPE_CHOICES = ("auto", "bfloat16", "float16", "float32")
ADAPTER_CONFIG = "adapter_config.json"  # a folder holding a LoRA adapter, not a whole model


@dataclass(frozen=True)
class LoadOptions:
    """What to load and how; mirrors the command-line flags of app.py and `python -m chat`."""

    model: str | None = None  # hub id, folder or .gguf; None = the embedded SmolLM2
    quantize: str = "auto"  # auto: int8 weights on a CPU (AUTO_CPU_WEIGHTS), as loaded on a GPU
    dtype: str = "auto"
    device_map: str | None = None  # "auto" shards over all visible GPUs (and CPU/disk offload)
    max_memory: str | None = None  # "0=20GiB,1=20GiB,cpu=64GiB"
    trust_remote_code: bool = False
    cache_dir: str | None = None  # hub downloads (default: HF_HOME) and GGUF conversions


@dataclass
class LoadedModel:
    model: Any
    tokenizer: Any
    name: str  # what the user asked for, for display
    device: str  # where it runs, in words (with its weight format)
    weights: str = "float32"  # the weight format: float32, bfloat16, int8, int4, 8bit (bitsandbytes) ...


def load_model(options: LoadOptions, say: Callable[[str], None] = print,
               progress: Callable[[float, str], None] | None = None) -> LoadedModel:
    """Loads tokenizer and model as `options` say. Raises `ModelLoadError` with one clear line.
    `progress(fraction, words)` hears each stage (a loading bar)."""
    step = progress or (lambda fraction, words: None)
    step(0.02, "starting")
    import torch

    if options.quantize not in QUANTIZE_CHOICES:
        raise ModelLoadError(f"--quantize must be one of {', '.join(QUANTIZE_CHOICES)}")
    options = replace(options, quantize=chosen_quantize(options, torch.cuda.is_available()))
    if options.trust_remote_code:
        log.warning("--trust-remote-code: running Python code shipped with %s; only do this for models you trust", options.model)
    source, name = _resolve_source(options, say)
    kwargs = _from_pretrained_kwargs(options, torch)
    say(f"Loading {name} ({_placement_words(options, torch)}) ...")
    try:
        step(0.1, "tokenizer")
        tokenizer = _load_tokenizer(source, options)
        step(0.2, "weights")
        model = _load_weights(source, kwargs, say)
    except torch.OutOfMemoryError:
        raise ModelLoadError(
            f"out of memory while loading {name}: try --quantize 4bit, a smaller model, "
            "or --device-map auto with --max-memory to offload part of it to the CPU"
        ) from None
    except ModelLoadError:
        raise
    except (OSError, ValueError, ImportError, RuntimeError) as error:
        raise _explain_load_error(name, options, error) from None
    model.eval()
    weights = _weight_format(model, options)
    if options.quantize in CPU_QUANTIZE:
        from .cpu_weights import own_float_tensors, quantize_for_cpu

        step(0.8, f"{options.quantize} weights")
        if not quantize_for_cpu(model, options.quantize):
            weights = _weight_format(model, replace(options, quantize="none"))  # no layer the kernels take
        own_float_tensors(model)
    release_this_threads_team()  # answers compute on other threads: at full speed only once this one's team is gone
    step(1.0, "ready")
    return LoadedModel(model=model, tokenizer=tokenizer, name=name, device=describe_device(model, weights), weights=weights)


def chosen_quantize(options: LoadOptions, gpu: bool) -> str:
    """`options.quantize` with `auto` resolved: int8 weights for a model that runs on the CPU, as loaded on GPUs.
    Raises `ModelLoadError` for a CPU format asked on a GPU, where bitsandbytes' formats are the ones that work."""
    on_cpu = not gpu and not options.device_map
    if options.quantize == "auto":
        return AUTO_CPU_WEIGHTS if on_cpu else "none"
    if options.quantize in CPU_QUANTIZE and not on_cpu:
        raise ModelLoadError(f"--quantize {options.quantize} is for a model on the CPU; on GPUs use --quantize 8bit or 4bit")
    return options.quantize


def _weight_format(model: Any, options: LoadOptions) -> str:
    if options.quantize != "none":
        return {"8bit": "8bit (bitsandbytes)", "4bit": "nf4 (bitsandbytes)"}.get(options.quantize, options.quantize)
    dtype = getattr(model, "dtype", None)
    return str(dtype).removeprefix("torch.") if dtype is not None else "float32"


def parse_max_memory(text: str | None) -> dict[int | str, str] | None:
    """'0=20GiB,1=20GiB,cpu=64GiB' → {0: '20GiB', 1: '20GiB', 'cpu': '64GiB'}."""
    if not text:
        return None
    result: dict[int | str, str] = {}
    for part in text.split(","):
        device, sep, amount = part.strip().partition("=")
        if not sep or not re.fullmatch(r"\d+(\.\d+)?\s*[KMGT]i?B", amount.strip(), re.IGNORECASE):
            raise ModelLoadError(f"--max-memory: can't read {part.strip()!r}; write e.g. 0=20GiB,1=20GiB,cpu=64GiB")
        device = device.strip()
        if not (device.isdigit() or device in ("cpu", "disk", "mps")):
            raise ModelLoadError(f"--max-memory: unknown device {device!r}; use GPU numbers, cpu or disk")
        result[int(device) if device.isdigit() else device] = amount.strip()
    return result


def describe_device(model: Any, weights: str = "float32") -> str:
    """Where `model` runs and in which weights, in words: "CPU, int8 weights (no GPU found: …)", "cuda:0, bfloat16 weights"."""
    place = _placement(model)
    if place.startswith("CPU"):
        return place.replace("CPU", f"CPU, {weights} weights", 1)
    return f"{place}, {weights} weights" if not place.startswith(("sharded", "disk")) else place


def _placement(model: Any) -> str:
    placement = getattr(model, "hf_device_map", None)
    if placement and len(set(placement.values())) > 1:
        counts: dict[str, int] = {}
        for device in placement.values():
            counts[str(device)] = counts.get(str(device), 0) + 1
        return "sharded: " + ", ".join(f"{n} modules on {d}" for d, n in counts.items())
    if placement and set(placement.values()) == {"disk"}:  # model.device says "meta" then
        return "disk (all weights offloaded: every token reads them from disk)"
    device = str(getattr(model, "device", "cpu"))
    return "CPU (no GPU found: expect a few tokens per second on large models)" if device == "cpu" else device


def _resolve_source(options: LoadOptions, say: Callable[[str], None]) -> tuple[str, str]:
    """(what from_pretrained gets, what the user calls it). GGUF files are converted once."""
    cache = Path(options.cache_dir) if options.cache_dir else None
    if options.model is None:
        return str(ensure_converted(find_embedded_gguf(), cache, say)), EMBEDDED_NAME
    path = Path(options.model).expanduser()
    if path.suffix == ".gguf":
        if not path.is_file():
            raise ModelLoadError(f"GGUF file not found: {path}")
        return str(ensure_converted(path, cache, say)), options.model
    if path.exists() and not path.is_dir():
        raise ModelLoadError(f"--model {options.model}: expected a folder, a .gguf file or a hub id")
    if not path.exists() and _is_path(options.model):
        raise ModelLoadError(f"model folder not found: {path} (a hub id looks like owner/name)")
    return options.model, options.model


def _is_path(name: str) -> bool:
    """A name that can only mean a folder: a hub id is `name` or `owner/name`."""
    return Path(name).expanduser().is_absolute() or name.startswith((".", "~")) or name.count("/") > 1 or "\\" in name


def _from_pretrained_kwargs(options: LoadOptions, torch: Any) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "dtype": _dtype(options.dtype, torch),
        "trust_remote_code": options.trust_remote_code,
        "cache_dir": options.cache_dir,
    }
    if options.quantize in GPU_QUANTIZE:
        kwargs["quantization_config"] = _quantization_config(options.quantize, kwargs["dtype"], torch)
    if options.device_map:
        kwargs["device_map"] = options.device_map
        kwargs["max_memory"] = parse_max_memory(options.max_memory)
        kwargs["offload_folder"] = str(Path(options.cache_dir or ".") / "offload")
    elif torch.cuda.is_available():
        kwargs["device_map"] = {"": 0}  # one GPU: put it all there
    elif options.quantize in GPU_QUANTIZE:
        kwargs["device_map"] = {"": "cpu"}
    return kwargs


def _dtype(name: str, torch: Any) -> Any:
    if name not in DTYPE_CHOICES:
        raise ModelLoadError(f"--dtype must be one of {', '.join(DTYPE_CHOICES)}")
    if name != "auto":
        return getattr(torch, name)
    if torch.cuda.is_available():
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32  # CPU matmuls are fastest and exact in float32


def _quantization_config(mode: str, dtype: Any, torch: Any) -> Any:
    try:
        import bitsandbytes  # noqa: F401  (fails early with a clear message instead of mid-load)
        from transformers import BitsAndBytesConfig
    except ImportError as error:
        raise ModelLoadError(f"--quantize {mode} needs bitsandbytes, which could not be imported: {error}") from None
    if mode == "8bit":
        return BitsAndBytesConfig(load_in_8bit=True)
    compute = dtype if dtype != torch.float32 else (torch.bfloat16 if torch.cuda.is_available() else torch.float32)
    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",  # normal-float 4 bit: the best 4-bit grid for normally distributed weights
        bnb_4bit_use_double_quant=True,  # also quantize the scales: ~0.4 bit/weight saved
        bnb_4bit_compute_dtype=compute,
    )


def _load_tokenizer(source: str, options: LoadOptions) -> Any:
    from transformers import AutoTokenizer

    base = _adapter_base(source) or source
    return AutoTokenizer.from_pretrained(
        source if Path(source, "tokenizer_config.json").exists() else base,
        trust_remote_code=options.trust_remote_code,
        cache_dir=options.cache_dir,
    )


def _load_weights(source: str, kwargs: dict[str, Any], say: Callable[[str], None]) -> Any:
    from transformers import AutoModelForCausalLM

    base = _adapter_base(source)
    if base is None:
        return AutoModelForCausalLM.from_pretrained(source, **kwargs)
    from peft import PeftModel

    say(f"{source} holds a LoRA adapter; loading its base model {base} first")
    base_source, _ = _resolve_source(LoadOptions(model=base if base != "embedded" else None, cache_dir=kwargs.get("cache_dir")), say)
    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_source, **kwargs), source)
    if "quantization_config" in kwargs:  # bitsandbytes' weights: merging would round the adapter away
        return model
    # Merged into the base weights, the adapter costs nothing per token, the model batches like any other, and the
    # CPU formats quantize the merged weights (PEFT's layers would cast their input to the adapter's int8 weights
    # and lose the adapter: its answers were the base model's).
    return model.merge_and_unload()


def _adapter_base(source: str) -> str | None:
    """For a folder holding a LoRA adapter: the base model it was trained on, else None."""
    config = Path(source) / ADAPTER_CONFIG
    if not config.is_file():
        return None
    import json

    base = json.loads(config.read_text()).get("base_model_name_or_path")
    if not base:
        raise ModelLoadError(f"{config} does not say which base model the adapter belongs to")
    return base


def _placement_words(options: LoadOptions, torch: Any) -> str:
    where = "device map " + options.device_map if options.device_map else ("GPU 0" if torch.cuda.is_available() else "CPU")
    quant = "" if options.quantize == "none" else f", {options.quantize}"
    return f"{where}{quant}"


def _explain_load_error(name: str, options: LoadOptions, error: Exception) -> ModelLoadError:
    text = str(error)
    if options.quantize != "none" and ("bitsandbytes" in text or "bnb" in text or "quantiz" in text.lower()):
        return ModelLoadError(f"--quantize {options.quantize} can't run here: {_first_line(text)}")
    if isinstance(error, OSError) and (
        "not a valid model identifier" in text or "couldn't connect" in text.lower()
        or "does not appear to have" in text or "offline" in text.lower() or "Can't load" in text
    ):
        return ModelLoadError(
            f"model {name!r} not found: it is not a local folder or .gguf file, and it could not be "
            "fetched from the Hugging Face hub (offline? check the name, your connection or HF_HUB_OFFLINE, "
            "or pass a downloaded folder)"
        )
    if "trust_remote_code" in text:
        return ModelLoadError(f"{name} ships its own model code: pass --trust-remote-code if you trust it")
    return ModelLoadError(f"could not load {name}: {_first_line(text)}")


def _first_line(text: str) -> str:
    return text.strip().splitlines()[0] if text.strip() else "unknown error"


def input_device(model: Any) -> torch.device:
    """Where input ids go: the embedding's device, or, when accelerate offloaded it (its weight
    is then on "meta"), the device its hook runs it on."""
    import torch

    try:
        embedding = model.get_input_embeddings()
    except (AttributeError, NotImplementedError):
        return model.device
    if embedding.weight.device.type != "meta":
        return embedding.weight.device
    hook = getattr(embedding, "_hf_hook", None)
    return torch.device(getattr(hook, "execution_device", None) or "cpu")
