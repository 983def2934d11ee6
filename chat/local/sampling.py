"""Sampling with each answer's own random generator, so that a seed reproduces an answer.

`model.generate` samples with torch's global generator: two answers generated at once draw from
the same stream, and a seed set for one is consumed by the other. Here every answer draws from a
`torch.Generator` of its own, seeded with the seed its provenance records, in the batcher and alone
alike: the same seed, settings and prompt give the same text, whatever else runs at the time.
"""

from __future__ import annotations

from typing import Any

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    EpsilonLogitsWarper, EtaLogitsWarper, MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
    TypicalLogitsWarper,
)

from ..settings import GenerationSettings

# What `generate` applies after every other processor when it samples (its former "logits warpers").
WARPERS = (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper, TypicalLogitsWarper,
           EpsilonLogitsWarper, EtaLogitsWarper)


def processors_for(model: Any, settings: GenerationSettings, device: torch.device) -> LogitsProcessorList:
    """The logits processors `generate` builds for these settings, in its order (built by transformers itself)."""
    return model._get_logits_processor(GenerationConfig(**settings.generate_kwargs()), device=device)


def draw(scores: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token from the processed scores of one row: the likeliest when greedy, else sampled."""
    return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator))


def seeded_generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


class SeededSampling(LogitsProcessor):
    """For `model.generate` with sampling: draws the token with the answer's own generator.

    `generate` runs its own processors (repetition penalty, …), then custom ones like this, then the
    sampling warpers (temperature, top-k, top-p, …), then samples with the global generator. So this
    applies the warpers itself, draws with its own generator, and hands on scores where only the drawn
    token is possible: the warpers after it change nothing, and the global draw can only pick it.
    """

    def __init__(self, model: Any, settings: GenerationSettings, seed: int, device: torch.device):
        self.warpers = LogitsProcessorList(p for p in processors_for(model, settings, device) if isinstance(p, WARPERS))
        self.seed = seed
        self.generator: torch.Generator | None = None

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        if self.generator is None:
            self.generator = seeded_generator(self.seed, scores.device)
        token = draw(self.warpers(input_ids, scores), self.generator)
        only = torch.full_like(scores, float("-inf"))
        only[:, token] = 0.0
        return only  # type: ignore[return-value]
