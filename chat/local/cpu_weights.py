"""Smaller weights for answering on a CPU: int8 or int4 copies of a model's linear layers.

Decoding one token reads every weight once, so on a CPU it is bound by how fast memory delivers
them: SmolLM2-135M reads 538 MB per token in float32. PyTorch ships CPU kernels for matrix
products with weight-only quantized weights (`_weight_int8pack_mm`, `_weight_int4pack_mm_for_cpu`,
the ones gpt-fast uses): int8 with one scale per output row (a quarter of the bytes), int4 with a
scale and an offset per group of 32 inputs (an eighth, plus the scales). The activations stay
floating point (bfloat16 inside the kernel: its fast path); embeddings, norms and attention are
untouched. Only the linear layers change, so batching, the prefix cache, token probabilities,
stop strings and seeded sampling work exactly as with the float weights.

>>> quantize_for_cpu(model, "int8")  # doctest: +SKIP
211
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

CPU_WEIGHTS = ("int8", "int4")  # the formats `--quantize` offers for CPUs (bitsandbytes' 8bit/4bit are for GPUs)
INT4_GROUP = 32  # inputs sharing one scale and offset: the finest group the kernel takes, the closest to the float weights
COMPUTE = torch.bfloat16  # activations inside the kernels: their vectorised path on CPUs with AVX512 or AMX
# From this many rows on (a prompt's tokens, not a decoding step's answers), int8 weights are widened
# to bfloat16 for one matrix product: for 2,000 rows that took a third of the int8 kernel's time (AVX512-BF16).
PREFILL_ROWS = 64  # more than the answers that decode together (--concurrency, 4 by default): batched stay as alone


class Int8Linear(nn.Module):
    """`nn.Linear` with int8 weights (symmetric, one scale per output row)."""

    weight: torch.Tensor
    scales: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear):
        super().__init__()
        weight = linear.weight.detach().float()
        scales = (weight.abs().amax(dim=1) / 127).clamp(min=1e-12)
        self.register_buffer("weight", torch.round(weight / scales[:, None]).clamp(-127, 127).to(torch.int8))
        self.register_buffer("scales", scales.to(COMPUTE))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(COMPUTE)
        if flat.shape[0] >= PREFILL_ROWS:  # a prompt's many rows: the bfloat16 matrix product is 3x faster than the kernel
            return _finish(nn.functional.linear(flat, self.weight.to(COMPUTE) * self.scales[:, None]), x, self.bias)
        return _finish(torch._weight_int8pack_mm(flat, self.weight, self.scales), x, self.bias)


class Int4Linear(nn.Module):
    """`nn.Linear` with int4 weights (asymmetric, a scale and an offset per group of `INT4_GROUP` inputs)."""

    weight: torch.Tensor
    scales_and_zeros: torch.Tensor
    bias: torch.Tensor | None

    def __init__(self, linear: nn.Linear):
        super().__init__()
        rows, columns = linear.weight.shape
        groups = linear.weight.detach().float().reshape(rows, columns // INT4_GROUP, INT4_GROUP)
        low, high = groups.amin(dim=-1, keepdim=True), groups.amax(dim=-1, keepdim=True)
        scales = ((high - low) / 15).clamp(min=1e-12)
        levels = torch.round((groups - low) / scales).clamp(0, 15).to(torch.int32).reshape(rows, columns)
        # The kernel computes (level - 8) × scale + zero: the zero is the group's value at level 8.
        zeros = low + 8 * scales
        scales_and_zeros = torch.stack([scales.reshape(rows, -1), zeros.reshape(rows, -1)], dim=-1).transpose(0, 1)
        self.register_buffer("weight", torch.ops.aten._convert_weight_to_int4pack_for_cpu(levels, 1))
        self.register_buffer("scales_and_zeros", scales_and_zeros.contiguous().to(COMPUTE))
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach().clone())
        self.in_features, self.out_features = linear.in_features, linear.out_features

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.reshape(-1, self.in_features).to(COMPUTE)
        product = torch.ops.aten._weight_int4pack_mm_for_cpu(flat, self.weight, INT4_GROUP, self.scales_and_zeros)
        return _finish(product, x, self.bias)


def _finish(product: torch.Tensor, x: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    out = product.reshape(*x.shape[:-1], -1).to(x.dtype)
    return out + bias if bias is not None else out


QUANTIZERS: dict[str, Callable[[nn.Linear], nn.Module]] = {"int8": Int8Linear, "int4": Int4Linear}


def can_quantize(linear: nn.Linear, weights: str) -> bool:
    """Whether the kernel for `weights` takes this layer's shape (int4 packs groups of 32 inputs, rows in sixteens)."""
    if linear.weight.dtype not in (torch.float32, torch.bfloat16, torch.float16) or linear.weight.device.type != "cpu":
        return False
    return weights == "int8" or (linear.in_features % INT4_GROUP == 0 and linear.out_features % 16 == 0)


def quantize_for_cpu(model: nn.Module, weights: str) -> int:
    """Replaces every linear layer of `model` (the output layer included) with its `weights` copy, in place;
    returns how many it replaced. Layers the kernel can't take keep their float weights. A tied output
    layer gets its own copy: the input embedding keeps reading the float table."""
    make = QUANTIZERS[weights]
    replaced = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Linear and can_quantize(child, weights):
                setattr(parent, name, make(child))
                replaced += 1
    return replaced


def own_float_tensors(model: nn.Module) -> None:
    """Copies the float tensors left after `quantize_for_cpu` (embeddings, norms) into memory of their own.

    transformers maps a safetensors file rather than reading it: the float tensors point into that mapping, and
    while one does, every page of the file that quantizing read stays in the process's memory, the replaced
    float weights included (SmolLM2-135M with int8 weights: 674 MB instead of 237). With copies, the mapping goes.
    """
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.data = tensor.data.clone()


def weight_bytes(model: Any) -> int:
    """Bytes a forward pass reads from the weights: parameters and buffers, the input embedding's table left
    out (a step reads one row of it)."""
    embeddings = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    output = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    read_whole = {id(t) for t in output.parameters()} if output is not None else set()  # a tied output layer reads it all
    skip = {id(t) for t in embeddings.parameters()} - read_whole if embeddings is not None else set()
    tensors = {id(t): t for t in [*model.parameters(), *model.buffers()] if id(t) not in skip}
    return sum(t.numel() * t.element_size() for t in tensors.values())
