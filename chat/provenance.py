"""How an answer was made: what every answer records, and what Reproduce reads back.

An answer's provenance is a small versioned JSON document (stored with the answer, written into
downloads): the model and backend, the skill, the instructions, every sampling setting with the
seed actually used (a random seed is drawn and recorded, never left to chance), the exact prompt
and its token count, the figures and the stop reason. A Continue adds a part: the answer is then
its first part and each continuation, each with its own seed, figures and prompt. An answer that
began with a token the user chose (the token view) records that fork first.

In memory it is typed (`Provenance`, `Part`, `Fork`); `to_json` and `from_json` convert at the
store and the files. `from_json` reads what earlier releases wrote, and leaves out what it can't read.

>>> provenance = Provenance.begin(engine, "💬 Chat", "Be brief.", Part.made(engine, fitted, settings, drawn))  # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from .answer_tokens import Alternative, TokenLog, TokenStep
from .context_window import FittedPrompt
from .engine import Engine, Stats
from .settings import SETTINGS, GenerationSettings

PROVENANCE_VERSION = 1
SEED_LIMIT = 2**32  # the Seed setting's range
Json = dict[str, Any]


def with_seed(settings: GenerationSettings, seeds: random.Random) -> tuple[GenerationSettings, bool]:
    """(the settings with a seed to use, whether it was drawn here): sampling always runs seeded, so
    that the answer can be reproduced; a random seed is drawn from `seeds` now and recorded."""
    if settings.seed is not None or settings.greedy:
        return settings, False
    return settings.replace(seed=seeds.randrange(SEED_LIMIT)), True


@dataclass
class Figures:
    """A part's figures once it ended (`Stats`, as recorded)."""

    new_tokens: int = 0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    time_to_first_token: float | None = None
    tokens_per_second: float | None = None
    estimated: bool = False

    @classmethod
    def of(cls, stats: Stats) -> "Figures":
        return cls(stats.new_tokens, stats.prompt_tokens, stats.cached_tokens, stats.time_to_first_token,
                   stats.tokens_per_second, stats.estimated)


@dataclass
class Fork:
    """A version that begins with a token the user chose in the token view, instead of the one the model took."""

    from_id: str  # the answer it forks (its id)
    token: int  # the position of the token replaced (0: the first)
    instead_of: str  # that token's text
    chosen: str  # the chosen token's text (a control token: its name)
    special: bool  # the chosen token is a control token (the end of the answer)
    logprob: float  # the chosen token's log-probability there
    text: str  # the new version's beginning: the tokens kept, then the chosen one

    def to_json(self) -> Json:
        return {"from": self.from_id, "token": self.token, "instead_of": self.instead_of, "chosen": self.chosen,
                "special": self.special, "logprob": self.logprob, "text": self.text}

    @classmethod
    def taking(cls, answer_id: str, log: TokenLog, position: int, choice: Alternative) -> tuple["Fork", TokenLog | None]:
        """The fork of the answer `answer_id` (its tokens: `log`) that takes `choice` at `position`, and the new
        version's token data so far (None when its text is not the tokens' own: a first token's space dropped)."""
        taken = log.steps[position]
        chosen = TokenStep(choice.id, "" if choice.special else choice.text, taken.dists)  # the same distributions
        kept = TokenLog([*log.steps[:position], chosen], log.distributions)
        text = kept.text if position else kept.text.lstrip()
        fork = cls(answer_id, position, taken.text, choice.text, choice.special, choice.logprob, text)
        return fork, kept if text == kept.text else None

    @classmethod
    def from_json(cls, data: Json) -> "Fork":
        return cls(str(data.get("from", "")), int(data.get("token", 0)), str(data.get("instead_of", "")),
                   str(data.get("chosen", "")), bool(data.get("special")), float(data.get("logprob", 0.0)),
                   str(data.get("text", "")))


@dataclass
class Part:
    """One generation of an answer: the answer, or one Continue of it."""

    settings: Json  # every GenerationSettings field as it was (a newer release's too: see `settings_in`)
    seed: int | None  # the seed used (None: greedy)
    seed_drawn: bool  # the seed was drawn at random for this part (and recorded)
    prompt: str  # the exact prompt text
    prompt_sha256: str
    prompt_tokens: int
    prompt_exact: bool  # False: a server applied its own template to the messages sent
    messages_sent: int
    messages_left_out: int
    max_new_tokens: int  # the answer room left
    started_at: float
    figures: Figures | None = None  # once it ended
    stop_reason: str | None = None

    @classmethod
    def made(cls, engine: Engine, fitted: FittedPrompt, settings: GenerationSettings, seed_drawn: bool) -> "Part":
        """What one generation is given (its figures come with `finish`)."""
        text = fitted.prompt.text
        return cls(asdict(settings), settings.seed if not settings.greedy else None, seed_drawn, text,
                   hashlib.sha256(text.encode()).hexdigest(), fitted.prompt.length, engine.exact_prompt,
                   len(fitted.messages), fitted.dropped_messages, fitted.max_new_tokens, time.time())

    def finish(self, stats: Stats) -> None:
        self.figures = Figures.of(stats)
        self.stop_reason = str(stats.stop_reason) if stats.stop_reason else None

    def settings_in(self, fallback: GenerationSettings) -> GenerationSettings:
        """The settings it was made with (fields this release doesn't know are left out)."""
        return GenerationSettings.from_json(self.settings, fallback)

    def to_json(self) -> Json:
        data = {"settings": self.settings, "seed": self.seed, "seed_drawn": self.seed_drawn, "prompt": self.prompt,
                "prompt_sha256": self.prompt_sha256, "prompt_tokens": self.prompt_tokens, "prompt_exact": self.prompt_exact,
                "messages_sent": self.messages_sent, "messages_left_out": self.messages_left_out,
                "max_new_tokens": self.max_new_tokens, "started_at": self.started_at}
        if self.figures is not None:
            data["stats"] = asdict(self.figures)
            data["stop_reason"] = self.stop_reason
        return data

    @classmethod
    def from_json(cls, data: Json) -> "Part":
        figures = data.get("stats")
        known = {name for name in Figures.__dataclass_fields__}
        return cls(dict(data.get("settings") or {}), data.get("seed"), bool(data.get("seed_drawn")), str(data.get("prompt", "")),
                   str(data.get("prompt_sha256", "")), int(data.get("prompt_tokens", 0)), bool(data.get("prompt_exact", True)),
                   int(data.get("messages_sent", 0)), int(data.get("messages_left_out", 0)), int(data.get("max_new_tokens", 0)),
                   float(data.get("started_at", 0.0)),
                   Figures(**{k: v for k, v in figures.items() if k in known}) if isinstance(figures, dict) else None,
                   data.get("stop_reason"))


@dataclass
class Provenance:
    """How one answer was made: the model, the skill, the instructions, and each part."""

    model: str
    revision: str | None  # the model's exact version, where known (a Hub commit)
    backend: str
    device: str
    prompt_format: str
    context_window: int
    skill: str | None
    instructions: str
    parts: list[Part] = field(default_factory=list)  # the answer, then each Continue
    fork: Fork | None = None  # it began with a token the user chose
    reproduces: str | None = None  # the id of the answer it reproduces
    version: int = PROVENANCE_VERSION
    model_defaults: tuple[str, ...] = ()  # what the model's own defaults set, in words ("instructions", "stop strings '###'")
    skill_version: int | None = None  # a user's skill: its version then (None: the skills file's, or none)
    skill_definition: Json | None = None  # the skill as it was (the skills file's form): Reproduce uses it, edited since or not
    values: dict[str, str] = field(default_factory=dict)  # its variables' values

    @classmethod
    def begin(cls, engine: Engine, skill: str | None, instructions: str, first: Part | None = None,
              fork: Fork | None = None, reproduces: str | None = None) -> "Provenance":
        return cls(engine.name, engine.revision, type(engine).__name__, engine.device, engine.format.name, engine.context_window,
                   skill, instructions, [first] if first is not None else [], fork, reproduces)

    @property
    def recorded(self) -> bool:
        """It says how the answer was made (an answer from an earlier release's file may record nothing)."""
        return bool(self.parts) or self.fork is not None

    def summary(self) -> str:
        """One line: the model, the skill, the seed and the settings that differ from the defaults."""
        first = self.parts[0].settings if self.parts else {}
        defaults = asdict(GenerationSettings())
        changed = [f"{s.label.lower()} {first[s.name]:g}" for s in SETTINGS
                   if s.name != "seed" and first.get(s.name) is not None and first[s.name] != defaults[s.name]]
        seeds = [part.seed for part in self.parts]
        seed = "greedy" if all(s is None for s in seeds) else "seed " + " + ".join(str(s) for s in seeds if s is not None)
        if any(part.seed_drawn for part in self.parts):
            seed += " (drawn at random)"
        skill = f"skill {self.skill or 'none'}" + (f" v{self.skill_version}" if self.skill_version else "")
        skill += "".join(f" · {name} {value!r}" for name, value in self.values.items())
        line = [self.model or "?", skill, seed, *changed]
        if len(self.parts) > 1:
            line.append(f"continued {len(self.parts) - 1}×")
        return " · ".join(line)

    def to_json(self) -> Json:
        """The stored document; a fork is its first part, as earlier releases wrote it."""
        parts = ([{"fork": self.fork.to_json()}] if self.fork is not None else []) + [part.to_json() for part in self.parts]
        data: Json = {"version": self.version, "model": self.model, "revision": self.revision, "backend": self.backend,
                      "device": self.device, "prompt_format": self.prompt_format, "context_window": self.context_window,
                      "skill": self.skill, "instructions": self.instructions, "parts": parts}
        if self.reproduces:
            data["reproduces"] = self.reproduces
        if self.model_defaults:
            data["model_defaults"] = list(self.model_defaults)
        if self.skill_definition is not None:
            data["skill_definition"] = self.skill_definition
            data["skill_version"] = self.skill_version
        if self.values:
            data["values"] = dict(self.values)
        return data

    @classmethod
    def from_json(cls, data: Json) -> "Provenance":
        raw = [part for part in data.get("parts") or [] if isinstance(part, dict)]
        fork = next((Fork.from_json(part["fork"]) for part in raw if isinstance(part.get("fork"), dict)), None)
        return cls(str(data.get("model", "?")), data.get("revision"), str(data.get("backend", "?")), str(data.get("device", "?")),
                   str(data.get("prompt_format", "?")), int(data.get("context_window") or 0), data.get("skill"),
                   str(data.get("instructions", "")), [Part.from_json(part) for part in raw if "settings" in part], fork,
                   data.get("reproduces"), int(data.get("version", PROVENANCE_VERSION)),
                   tuple(str(said) for said in data.get("model_defaults") or ()),
                   data["skill_version"] if isinstance(data.get("skill_version"), int) else None,
                   data["skill_definition"] if isinstance(data.get("skill_definition"), dict) else None,
                   {str(k): str(v) for k, v in (data.get("values") or {}).items()} if isinstance(data.get("values"), dict) else {})
