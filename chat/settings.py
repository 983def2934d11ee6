"""Sampling settings, each declared once: its type, default, allowed range, slider, help and API field.

`GenerationSettings` is the one small frozen object passed everywhere. Every field carries its
`Setting` (see `setting`), and everything else is derived from those declarations: the command-line
flags (cli/args.py), the page's sliders and handler parameters (web/), the /v1 API's request fields
(api/), the `generate` arguments of the local engine and its batcher (local/), and what a remote
server is sent (remote/). A new setting is one field here (plus its effect, if `generate` lacks it).

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
class Setting:
    """What is declared about one sampling setting."""

    name: str
    kind: type  # int or float
    default: Any
    low: float  # allowed range, inclusive
    high: float
    ui: tuple[float, float, float]  # the slider: lowest, highest, step (within the allowed range)
    label: str
    help: str  # what the value does to the answer; shown by --help, under the slider and in the README
    api_field: str | None = None  # its name in an OpenAI-style chat request (None: not in the API)
    openai_standard: bool = True  # False: an extension that vLLM and llama.cpp read, api.openai.com refuses
    generate_arg: bool = True  # passed to transformers' `generate` under its own name
    sampling: bool = False  # only matters when sampling (temperature > 0): left out for greedy decoding
    optional: bool = False  # may be None (unset)
    off: Any = None  # the value at which it does nothing: then it is not passed on at all

    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def setting(default: Any, **declared: Any) -> Any:
    """A `GenerationSettings` field with its declaration (the name and type are filled in below)."""
    return dataclasses.field(default=default, metadata={"setting": declared})


@dataclass(frozen=True)
class GenerationSettings:
    """How one answer is sampled.

    >>> GenerationSettings().replace(temperature=0).greedy
    True
    """

    temperature: float = setting(0.8, low=0, high=5, ui=(0, 2, 0.05), label="Temperature", sampling=True, api_field="temperature",
                                 help="0 = greedy (always the likeliest token); higher = more varied")
    top_p: float = setting(0.9, low=0, high=1, ui=(0.05, 1, 0.05), label="Top p", sampling=True, api_field="top_p",
                           help="sample from the smallest set of tokens holding this much probability; 1 = all")
    top_k: int = setting(50, low=0, high=100_000, ui=(0, 200, 1), label="Top k", sampling=True, api_field="top_k", openai_standard=False,
                         help="… and from at most this many tokens; 0 = no limit")
    min_p: float = setting(0.0, low=0, high=1, ui=(0, 0.5, 0.01), label="Min p", sampling=True, api_field="min_p", openai_standard=False, off=0.0,
                           help="drop tokens less likely than this share of the likeliest one's probability; 0 = off")
    max_new_tokens: int = setting(512, low=1, high=MAX_NEW_TOKENS_LIMIT, ui=(1, 4096, 1), label="Max new tokens", api_field="max_tokens",
                                  generate_arg=False, help="the answer's length limit, in tokens")
    repetition_penalty: float = setting(1.1, low=0.5, high=5, ui=(1, 2, 0.05), label="Repetition penalty", api_field="repetition_penalty",
                                        openai_standard=False, help=">1 discourages repeating earlier tokens; 1 = off")
    no_repeat_ngram_size: int = setting(0, low=0, high=100, ui=(0, 10, 1), label="No-repeat n-gram size",
                                        help="forbid any n-gram of this size from appearing twice; 0 = off")
    num_beams: int = setting(1, low=1, high=16, ui=(1, 8, 1), label="Beams",
                             help=">1: beam search, better for short exact answers; the answer appears when complete")
    seed: int | None = setting(None, low=0, high=2**32 - 1, ui=(-1, 2**32 - 1, 1), label="Seed", api_field="seed", generate_arg=False,
                               optional=True, help="a fixed seed makes sampling reproducible; unset (-1 on the page) = random")

    def __post_init__(self) -> None:
        for declared in SETTINGS:
            # Coerce so that `512.0` from a slider or JSON reaches `generate` as 512.
            object.__setattr__(self, declared.name, _check(declared, getattr(self, declared.name)))

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

    @classmethod
    def from_json(cls, data: Mapping[str, Any], fallback: "GenerationSettings") -> "GenerationSettings":
        """Settings as they were recorded (a saved chat, an answer's provenance): `fallback`, with each
        recorded value this release knows and accepts (another release's may be unknown, or out of range)."""
        settings = fallback
        for name, value in data.items():
            if name in FIELD_NAMES:
                try:
                    settings = settings.replace(**{name: value})
                except (SettingsError, TypeError, ValueError, OverflowError):
                    pass  # this release's rules refuse it: the fallback's value stays
        return settings

    def generate_kwargs(self) -> dict[str, Any]:
        """The settings `generate` takes by name; greedy decoding leaves the sampling ones out."""
        kwargs = {s.name: value for s, value in self._in_effect() if s.generate_arg and not (s.sampling and self.greedy)}
        if self.greedy:
            kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
        else:
            kwargs.update(do_sample=True)
        return kwargs

    def api_fields(self, standard_only: bool = False) -> dict[str, Any]:
        """The settings as fields of an OpenAI-style chat request (unset and "off" ones left out)."""
        return {s.api_field: value for s, value in self._in_effect()
                if s.api_field and (s.openai_standard or not standard_only)}

    def _in_effect(self) -> list[tuple[Setting, Any]]:
        values = [(s, getattr(self, s.name)) for s in SETTINGS]
        return [(s, value) for s, value in values if value is not None and not (s.off is not None and value == s.off)]


def _declared(field: dataclasses.Field) -> Setting:
    kind = int if field.type in ("int", "int | None") else float
    return Setting(name=field.name, kind=kind, default=field.default, **field.metadata["setting"])


SETTINGS: tuple[Setting, ...] = tuple(_declared(f) for f in dataclasses.fields(GenerationSettings))
FIELD_NAMES = tuple(s.name for s in SETTINGS)


def _check(declared: Setting, value: Any) -> Any:
    name, kind, low, high = declared.name, declared.kind, declared.low, declared.high
    if declared.optional and value is None:
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
