"""Picking each next token, the same way alone and batched, with each answer's own random generator.

`model.generate` samples with torch's global generator: two answers generated at once draw from
the same stream, and a seed set for one is consumed by the other. Here every answer draws from a
`torch.Generator` of its own, seeded with the seed its provenance records, in the batcher and alone
alike: the same seed, settings and prompt give the same text, whatever else runs at the time.

`TokenPicker` applies what `generate` would (built by transformers itself from the same settings:
penalties, then temperature, top-k, top-p, …), picks the token, and, when the answer's tokens are
wanted (the token view, /v1 `logprobs`), records the model's own distribution and the reshaped
ones (see chat/answer_tokens.py). Recording costs one softmax and a top-k per distribution per step.
"""

from __future__ import annotations

import threading
from contextlib import contextmanager
from typing import Any, Iterator

import torch
from transformers import GenerationConfig, LogitsProcessor, LogitsProcessorList
from transformers.generation.logits_process import (
    EpsilonLogitsWarper, EtaLogitsWarper, MinPLogitsWarper, TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper,
    TypicalLogitsWarper,
)

from ..settings import GenerationSettings
from ..answer_tokens import MODEL, PENALIZED, SAMPLED, TOP, Alternative, Distribution, DistributionName, TokenStep

# What `generate` applies after every other processor when it samples (its former "logits warpers").
WARPERS = (TemperatureLogitsWarper, TopKLogitsWarper, TopPLogitsWarper, MinPLogitsWarper, TypicalLogitsWarper,
           EpsilonLogitsWarper, EtaLogitsWarper)

# What `generate` itself is given when a `TokenPicker` picks: nothing of its own to apply, just the
# likeliest of the one-hot scores the picker hands it (the model's generation_config stays overridden).
GENERATE_PICKS = {"do_sample": False, "temperature": None, "top_p": None, "top_k": None, "min_p": None,
                  "repetition_penalty": None, "no_repeat_ngram_size": None}


def processors_for(model: Any, settings: GenerationSettings, device: torch.device, prompt_length: int) -> LogitsProcessorList:
    """The logits processors `generate` builds for these settings, in its order (built by transformers itself)."""
    return model._get_logits_processor(GenerationConfig(**settings.generate_kwargs()), input_ids_seq_length=prompt_length, device=device)


def draw(scores: torch.Tensor, generator: torch.Generator) -> int:
    """One token from the processed scores of one row, sampled."""
    return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator))


def own_generator(seed: int | None, device: torch.device) -> torch.Generator:
    """An answer's own random generator: seeded, or (no seed) from the system's entropy, never torch's global one."""
    generator = torch.Generator(device=device)
    if seed is None:
        generator.seed()
    else:
        generator.manual_seed(seed)
    return generator


# transformers' beam search samples with torch's global generator, and takes no other.
_GLOBAL_GENERATOR = threading.Lock()


@contextmanager
def global_generator_seeded(seed: int | None, device: torch.device) -> Iterator[None]:
    """Runs a seeded beam search with torch's global generator seeded for it alone: forked (put back
    after) and held, so that it neither disturbs nor is disturbed by another. Unseeded: as it is."""
    if seed is None:
        yield
        return
    with _GLOBAL_GENERATOR, torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        yield


class TokenRecorder:
    """The distributions of each step of one answer, as `TokenStep`s (texts are filled in later:
    a token's text depends on its neighbours). Written by the model's thread, read by others."""

    def __init__(self) -> None:
        self.steps: list[TokenStep] = []
        self.distributions: tuple[DistributionName, ...] = ()
        self._lock = threading.Lock()

    def add(self, token: int, stages: dict[DistributionName, torch.Tensor]) -> None:
        """`stages`: name → the scores of one row at that stage; the same tensor twice is computed once."""
        computed: dict[int, Distribution] = {}
        dists: dict[DistributionName, Distribution] = {}
        for name, scores in stages.items():
            if id(scores) not in computed:
                computed[id(scores)] = _distribution(scores[0].float(), token)
            dists[name] = computed[id(scores)]
        with self._lock:
            self.distributions = tuple(stages)
            self.steps.append(TokenStep(token, "", dists))

    def snapshot(self) -> list[TokenStep]:
        with self._lock:
            return list(self.steps)


def _distribution(scores: torch.Tensor, token: int) -> Distribution:
    logprobs = torch.log_softmax(scores, dim=-1)
    entropy = torch.special.entr(logprobs.exp()).sum()
    top = torch.topk(logprobs, min(TOP, logprobs.shape[-1]))
    # One transfer from the device per distribution (a GPU would otherwise wait on each number).
    values = torch.cat([logprobs[token : token + 1], entropy[None], top.values]).tolist()
    return Distribution(values[0], max(values[1], 0.0), [Alternative(i, "", lp) for i, lp in zip(top.indices.tolist(), values[2:])])


class TokenPicker:
    """Picks one answer's tokens: the processors `generate` builds for its settings, then the likeliest
    (greedy) or a draw with the answer's own generator; records the distributions when given a recorder."""

    def __init__(self, model: Any, settings: GenerationSettings, device: torch.device, prompt_length: int,
                 recorder: TokenRecorder | None = None):
        processors = processors_for(model, settings, device, prompt_length)
        self.penalties = LogitsProcessorList(p for p in processors if not isinstance(p, WARPERS))
        self.warpers = LogitsProcessorList(p for p in processors if isinstance(p, WARPERS))
        self.greedy = settings.greedy
        self.seed = settings.seed if not settings.greedy else None
        self.generator: torch.Generator | None = None
        self.recorder = recorder

    def pick(self, input_ids: torch.LongTensor, logits: torch.Tensor) -> int:
        """The next token after `input_ids` (one row), given the model's `logits` for it."""
        logits = logits.float()  # (no copy when it is float32 already: the caller has no further use for it)
        # A processor may change its scores in place: copies only where the stage before it is recorded.
        recording = self.recorder is not None
        penalized = self.penalties(input_ids, logits.clone() if recording else logits) if self.penalties else logits
        if self.greedy:
            sampled, token = penalized, int(torch.argmax(penalized, dim=-1))
        else:
            sampled = self.warpers(input_ids, penalized.clone() if recording else penalized)
            if self.generator is None:
                self.generator = own_generator(self.seed, logits.device)
            token = draw(sampled, self.generator)
        if self.recorder is not None:
            self.recorder.add(token, {MODEL: logits, PENALIZED: penalized, SAMPLED: sampled})
        return token


class PickedByPicker(LogitsProcessor):
    """For `model.generate` (given `GENERATE_PICKS`): the picker chooses, and generate's greedy step
    can only take that token (the scores handed on are -inf but for it)."""

    def __init__(self, picker: TokenPicker):
        self.picker = picker

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        token = self.picker.pick(input_ids, scores)
        only = torch.full_like(scores, float("-inf"))
        only[:, token] = 0.0
        return only  # type: ignore[return-value]
