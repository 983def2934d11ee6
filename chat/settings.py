"""Sampling settings: one small frozen object, validated once, passed everywhere.

Defaults follow the seeds (temperature 0.8, top_p 0.9) with a mild repetition penalty,
which keeps small models from looping without changing what large ones say.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Mapping

from .errors import SettingsError

# The largest answer a single turn may ask for; the model's context caps it further.
MAX_NEW_TOKENS_LIMIT = 32_768


@dataclass(frozen=True)
class GenerationSettings:
    """How one answer is sampled.

    >>> GenerationSettings().replace(temperature=0).greedy
    True
    """

    temperature: float = 0.8  # 0 = greedy (always the most likely token); higher = more varied
    top_p: float = 0.9  # sample only from the smallest set of tokens holding this much probability
    top_k: int = 50  # ... and from at most this many tokens (0 = no limit)
    max_new_tokens: int = 512  # the answer's length limit, in tokens
    repetition_penalty: float = 1.1  # >1 discourages repeating earlier tokens; 1 = off
    no_repeat_ngram_size: int = 0  # forbid any n-gram of this size from appearing twice; 0 = off
    num_beams: int = 1  # >1 = beam search: better for short exact answers; streams only at the end
    seed: int | None = None  # fixed seed = reproducible sampling

    def __post_init__(self) -> None:
        for field in dataclasses.fields(self):
            # Coerce so that `512.0` from a slider or JSON reaches `generate` as 512.
            object.__setattr__(self, field.name, _check(field.name, getattr(self, field.name)))

    @property
    def greedy(self) -> bool:
        return self.temperature == 0

    def replace(self, **changes: Any) -> "GenerationSettings":
        """A copy with `changes` applied; unknown names or bad values raise `SettingsError`."""
        unknown = sorted(set(changes) - set(FIELD_NAMES))
        if unknown:
            raise SettingsError(
                f"unknown setting {unknown[0]!r}; known settings: {', '.join(FIELD_NAMES)}"
            )
        return dataclasses.replace(self, **changes)

    def merged(self, overrides: Mapping[str, Any] | None) -> "GenerationSettings":
        return self.replace(**dict(overrides or {}))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


FIELD_NAMES = tuple(f.name for f in dataclasses.fields(GenerationSettings))

# name -> (type, lowest allowed, highest allowed)
_RANGES: dict[str, tuple[type, float, float]] = {
    "temperature": (float, 0.0, 5.0),
    "top_p": (float, 0.0, 1.0),
    "top_k": (int, 0, 100_000),
    "max_new_tokens": (int, 1, MAX_NEW_TOKENS_LIMIT),
    "repetition_penalty": (float, 0.5, 5.0),
    "no_repeat_ngram_size": (int, 0, 100),
    "num_beams": (int, 1, 16),
    "seed": (int, 0, 2**32 - 1),
}


def _check(name: str, value: Any) -> Any:
    kind, low, high = _RANGES[name]
    if name == "seed" and value is None:
        return None
    # bool is an int subclass; `top_k: true` in YAML is a mistake, not 1.
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise SettingsError(f"{name} must be a number, got {value!r}")
    if math.isnan(value) or math.isinf(value):
        raise SettingsError(f"{name} must be a finite number, got {value!r}")
    if kind is int and value != int(value):
        raise SettingsError(f"{name} must be a whole number, got {value!r}")
    if not (low <= value <= high):
        raise SettingsError(f"{name} must be between {low:g} and {high:g}, got {value!r}")
    if name == "top_p" and value == 0:
        raise SettingsError("top_p must be above 0 (1 = no limit)")
    return kind(value)
