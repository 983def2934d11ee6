"""How an answer was made: what every answer records, and what Reproduce reads back.

An answer's provenance is a small versioned JSON document (stored with the answer, written into
downloads): the model and backend, the skill, the instructions, every sampling setting with the
seed actually used (a random seed is drawn and recorded, never left to chance), the exact prompt
and its token count, the figures and the stop reason. A Continue adds a part: the answer is then
its first part and each continuation, each with its own seed, figures and prompt.
"""

from __future__ import annotations

import hashlib
import random
import time
from dataclasses import asdict
from typing import Any

from .context_window import FittedPrompt
from .engine import Engine, Stats
from .settings import SETTINGS, GenerationSettings

PROVENANCE_VERSION = 1
SEED_LIMIT = 2**32  # the Seed setting's range
# Where drawn seeds come from: seeded from the OS at start-up (a seed is no secret: it is shown with the
# answer). The tests give it a fixed start per test, so that no test depends on what chance draws.
SEEDS = random.Random()


def with_seed(settings: GenerationSettings) -> tuple[GenerationSettings, bool]:
    """(the settings with a seed to use, whether it was drawn here): sampling always runs seeded, so
    that the answer can be reproduced; a random seed is drawn now and recorded."""
    if settings.seed is not None or settings.greedy:
        return settings, False
    return settings.replace(seed=SEEDS.randrange(SEED_LIMIT)), True


def part(engine: Engine, fitted: FittedPrompt, settings: GenerationSettings, seed_drawn: bool) -> dict[str, Any]:
    """What one generation was given (its figures are added by `finish_part` when it ends)."""
    return {
        "settings": asdict(settings),
        "seed": settings.seed if not settings.greedy else None,
        "seed_drawn": seed_drawn,
        "prompt": fitted.prompt.text,
        "prompt_sha256": hashlib.sha256(fitted.prompt.text.encode()).hexdigest(),
        "prompt_tokens": fitted.prompt.length,
        "prompt_exact": engine.exact_prompt,  # False: a server applied its own template to these messages
        "messages_sent": len(fitted.messages),
        "messages_left_out": fitted.dropped_messages,
        "max_new_tokens": fitted.max_new_tokens,
        "started_at": time.time(),
    }


def finish_part(made: dict[str, Any], stats: Stats) -> None:
    made["stats"] = {"new_tokens": stats.new_tokens, "prompt_tokens": stats.prompt_tokens, "cached_tokens": stats.cached_tokens,
                     "time_to_first_token": stats.time_to_first_token, "tokens_per_second": stats.tokens_per_second,
                     "estimated": stats.estimated}
    made["stop_reason"] = str(stats.stop_reason) if stats.stop_reason else None


def new(engine: Engine, skill: str | None, instructions: str, first: dict[str, Any], reproduces: str | None = None) -> dict[str, Any]:
    """An answer's provenance, with its first part."""
    document: dict[str, Any] = {
        "version": PROVENANCE_VERSION,
        "model": engine.name,
        "revision": engine.revision,
        "backend": type(engine).__name__,
        "device": engine.device,
        "prompt_format": engine.format.name,
        "context_window": engine.context_window,
        "skill": skill,
        "instructions": instructions,
        "parts": [first],  # the answer, then each Continue
    }
    if reproduces:
        document["reproduces"] = reproduces  # the id of the answer this one reproduces
    return document


def settings_of(made: dict[str, Any], fallback: GenerationSettings) -> GenerationSettings:
    """The settings a part was made with (fields this release doesn't know are left out)."""
    known = {name: value for name, value in made.get("settings", {}).items() if name in asdict(fallback)}
    return fallback.replace(**known)


def summary(document: dict[str, Any]) -> str:
    """One line: the model, the skill, the seed and the settings that differ from the defaults."""
    parts = document.get("parts") or [{}]
    first = parts[0]
    settings = first.get("settings", {})
    defaults = asdict(GenerationSettings())
    changed = [f"{s.label.lower()} {settings[s.name]:g}" for s in SETTINGS
               if s.name != "seed" and s.name in settings and settings[s.name] is not None and settings[s.name] != defaults[s.name]]
    seeds = [p.get("seed") for p in parts]
    seed = "greedy" if all(s is None for s in seeds) else "seed " + " + ".join(str(s) for s in seeds if s is not None)
    if any(p.get("seed_drawn") for p in parts):
        seed += " (drawn at random)"
    line = [document.get("model", "?"), f"skill {document.get('skill') or 'none'}", seed, *changed]
    if len(parts) > 1:
        line.append(f"continued {len(parts) - 1}×")
    return " · ".join(line)
