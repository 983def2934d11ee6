"""Memory: what a model will take before it loads, what it takes once loaded, what the machine has free.

The estimate is read from the model's files, not guessed from its name: the tensor shapes in its
safetensors headers (or its GGUF), its config's layers and key/value heads. Weights count at the
format they will have once loaded (float32 on a CPU even where the file holds bfloat16; int8 and int4
per `cpu_weights`, including the output layer's own copy when it is tied to the embeddings);
the KV cache counts two vectors per layer, key/value head and token. `python -m bench.models`
measures both against the process's memory.
"""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..models import MemoryEstimate

FLOAT_BYTES = {"float32": 4, "bfloat16": 2, "float16": 2}
INT4_GROUP = 32  # as cpu_weights.INT4_GROUP (not imported: that module loads torch)
SCALE_BYTES = 2  # int8/int4 scales are bfloat16
EMBEDDING_NAMES = ("embed_tokens", "wte", "wpe", "word_embeddings", "token_embd", "embed_positions")
HEADER_LIMIT = 100 * 2**20  # a safetensors header larger than this is not one


@dataclass(frozen=True)
class ModelShape:
    """What memory estimates need of a model, from its files."""

    parameters: int
    linear: tuple[tuple[int, int], ...]  # (rows, columns) of each linear layer's weight
    tied_head: tuple[int, int] | None  # (vocabulary, width) of an output layer that shares the embeddings' table
    layers: int
    kv_heads: int
    head_dim: int
    context: int | None

    @property
    def linear_parameters(self) -> int:
        return sum(rows * columns for rows, columns in self.linear)

    def kv_bytes_per_token(self, element_bytes: int) -> int:
        return 2 * self.layers * self.kv_heads * self.head_dim * element_bytes


def weight_bytes(shape: ModelShape, weights: str, float_bytes: int) -> int:
    """Bytes of the weights once loaded as `weights` (float32, bfloat16, int8, int4, 8bit, 4bit); the rest
    of the model (embeddings, norms) stays at `float_bytes`."""
    others = (shape.parameters - shape.linear_parameters) * float_bytes
    linear = list(shape.linear) + ([shape.tied_head] if shape.tied_head and weights in ("int8", "int4") else [])
    if weights == "int8":
        return others + sum(r * c + r * SCALE_BYTES for r, c in linear)
    if weights == "int4":
        return others + sum(r * c // 2 + 2 * SCALE_BYTES * r * (c // INT4_GROUP) for r, c in linear
                            if c % INT4_GROUP == 0 and r % 16 == 0) + sum(r * c * float_bytes for r, c in linear
                                                                         if c % INT4_GROUP or r % 16)
    if weights == "8bit":  # bitsandbytes LLM.int8: a byte per weight, a float scale per row
        return others + sum(r * c + r * 4 for r, c in shape.linear)
    if weights == "4bit":  # NF4 with double quantization: ~0.53 bytes per weight
        return others + sum(r * c // 2 + r * c // 64 for r, c in shape.linear)
    return shape.parameters * FLOAT_BYTES.get(weights, float_bytes)


def estimate(shape: ModelShape, weights: str, float_bytes: int, answers: int, where: str, context: int | None = None,
             loads_as_float: bool = False) -> MemoryEstimate:
    """`shape` loaded as `weights`, serving `answers` at once, each up to `context` tokens (default: the model's)."""
    tokens = context or shape.context or 2048
    held = weight_bytes(shape, weights, float_bytes)
    # CPU formats: the float weights are read first (mapped from the file, they stay until the last layer is replaced).
    peak = shape.parameters * float_bytes + held if loads_as_float else 0
    return MemoryEstimate(held, shape.kv_bytes_per_token(float_bytes) * tokens * answers, tokens, answers, where, peak)


# -- reading shapes from files ---------------------------------------------------------------------


def folder_shape(folder: Path) -> ModelShape:
    """A transformers folder's shape (config.json and the safetensors headers). Raises ValueError naming the file."""
    config = read_config(folder / "config.json")
    tensors: dict[str, tuple[int, ...]] = {}
    for file in sorted(folder.glob("*.safetensors")):
        tensors.update(safetensors_shapes(file))
    if not tensors:
        return _shape_from_config(config)
    return _shape(tensors, config)


def read_config(path: Path) -> dict[str, Any]:
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ValueError(f"{path}: missing") from None
    except json.JSONDecodeError as error:
        raise ValueError(f"{path}: line {error.lineno}: {error.msg}") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ValueError(f"{path}: {error}") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: not a JSON object")
    return config.get("text_config", config) if isinstance(config.get("text_config"), dict) else config


def safetensors_shapes(file: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name → shape, from the file's header alone (a few kB, whatever the file's size)."""
    try:
        with file.open("rb") as handle:
            (length,) = struct.unpack("<Q", handle.read(8))
            if length > HEADER_LIMIT:
                raise ValueError("header too large")
            header = json.loads(handle.read(length))
    except (OSError, struct.error, ValueError) as error:
        raise ValueError(f"{file}: not a readable safetensors file ({error})") from None
    return {name: tuple(entry["shape"]) for name, entry in header.items() if name != "__metadata__" and isinstance(entry, dict)}


def gguf_shape(file: Path) -> ModelShape:
    """A GGUF file's shape, from its metadata and tensor table (the tensors are not read)."""
    try:
        from gguf import GGUFReader

        reader = GGUFReader(str(file))
    except Exception as error:  # gguf raises ValueError, KeyError … for a file it can't read
        raise ValueError(f"{file}: not a readable GGUF file ({str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__})") from None
    fields = {name: reader.fields[name] for name in reader.fields}

    def value(key: str) -> Any:
        found = fields.get(key)
        if found is None or not found.data:
            return None
        return found.parts[found.data[0]].tolist()[0]

    arch_field = fields.get("general.architecture")
    arch = bytes(arch_field.parts[arch_field.data[0]]).decode() if arch_field is not None else "llama"
    tensors = {t.name: tuple(int(n) for n in reversed(t.shape.tolist())) for t in reader.tensors}
    heads = value(f"{arch}.attention.head_count") or 1
    width = value(f"{arch}.embedding_length") or 0
    config = {"num_hidden_layers": value(f"{arch}.block_count"), "num_attention_heads": heads,
              "num_key_value_heads": value(f"{arch}.attention.head_count_kv") or heads, "hidden_size": width,
              "max_position_embeddings": value(f"{arch}.context_length"), "tie_word_embeddings": "output.weight" not in tensors}
    return _shape(tensors, config, embeddings=("token_embd",), head="output.weight")


def _shape(tensors: dict[str, tuple[int, ...]], config: dict[str, Any], embeddings: tuple[str, ...] = EMBEDDING_NAMES,
           head: str = "lm_head.weight") -> ModelShape:
    linear = tuple((shape[0], shape[1]) for name, shape in tensors.items()
                   if len(shape) == 2 and name.endswith(".weight") and not any(e in name for e in embeddings))
    parameters = sum(_count(shape) for shape in tensors.values())
    tied = None
    if head not in tensors and config.get("tie_word_embeddings", True):
        table = next((shape for name, shape in tensors.items() if any(e in name for e in embeddings[:1] + ("embed_tokens", "wte"))
                      and len(shape) == 2), None)
        tied = (table[0], table[1]) if table else None
    layers, kv_heads, head_dim, context = _attention(config)
    return ModelShape(parameters, linear, tied, layers, kv_heads, head_dim, context)


def _shape_from_config(config: dict[str, Any]) -> ModelShape:
    """Without weight files (a .bin-only folder): the usual decoder's parameters, from its config."""
    layers, kv_heads, head_dim, context = _attention(config)
    width, vocab = int(config.get("hidden_size") or 0), int(config.get("vocab_size") or 0)
    ffn, heads = int(config.get("intermediate_size") or 4 * width), int(config.get("num_attention_heads") or 1)
    per_layer = ((width, heads * head_dim), (kv_heads * head_dim, width), (kv_heads * head_dim, width), (width, heads * head_dim),
                 (ffn, width), (ffn, width), (width, ffn))
    linear = per_layer * layers
    tied = config.get("tie_word_embeddings", True)
    linear += () if tied else ((vocab, width),)
    parameters = sum(r * c for r, c in linear) + vocab * width + (2 * layers + 1) * width
    return ModelShape(parameters, linear, (vocab, width) if tied else None, layers, kv_heads, head_dim, context)


def _attention(config: dict[str, Any]) -> tuple[int, int, int, int | None]:
    layers = int(config.get("num_hidden_layers") or config.get("n_layer") or 0)
    heads = int(config.get("num_attention_heads") or config.get("n_head") or 1)
    kv_heads = int(config.get("num_key_value_heads") or heads)
    width = int(config.get("hidden_size") or config.get("n_embd") or 0)
    head_dim = int(config.get("head_dim") or (width // heads if heads else 0))
    context = config.get("max_position_embeddings") or config.get("n_positions")
    return layers, kv_heads, head_dim, int(context) if context else None


def _count(shape: tuple[int, ...]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count


def model_bytes(model: Any) -> int:
    """Bytes of a loaded model's parameters and buffers (each storage counted once: tied weights share one)."""
    seen: dict[int, int] = {}
    for tensor in [*model.parameters(), *model.buffers()]:
        storage = tensor.untyped_storage()
        seen[storage.data_ptr()] = storage.nbytes()
    return sum(seen.values())
