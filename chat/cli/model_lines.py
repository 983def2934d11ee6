"""The terminal's model commands' words: which model a user means (`/model tiny`), and one line per model (`/models`)."""

from __future__ import annotations

from ..errors import ChatError
from ..models import ModelInfo, ModelList, size_words
from .names import matching


def find_model(models: ModelList, query: str) -> str:
    """The model a user means: its name, its base model's name (its default variant), its number in /models, or a
    unique part of the name in any case ("tiny-b" → "tiny-b · int8"). Raises `ChatError` naming the candidates if unclear."""
    query = query.strip()
    names = models.names()
    found = models.find(query)
    if found is not None:
        return found
    if query.isdigit() and 1 <= int(query) <= len(names):
        return names[int(query) - 1]
    matches = matching(names, query)
    if len(matches) == 1:
        return matches[0]
    if matches:
        default_variant = _default_variant(models, matches)
        if default_variant is not None:
            return default_variant
        raise ChatError(f"{query!r} matches several models: {', '.join(matches)}; type more of the name")
    raise ChatError(f"no model called {query!r}; the list has: {', '.join(names)}")


def _default_variant(models: ModelList, matches: list[str]) -> str | None:
    """Where `matches` are weight formats of one model ("smollm2" matches its int8, int4 and float32), the one its
    name means, as `ModelList.find` picks it; None when they are different models."""
    bases = {info.base for info in models.listing() if info.name in matches}
    found = models.find(bases.pop()) if len(bases) == 1 else None
    return found if found in matches else None


def model_line(number: int, info: ModelInfo, current: str) -> str:
    """One line of /models: "* 1. NAME: int8 weights, 135M parameters, context 8,192, loaded (uses 160 MB), estimate
    ~230 MB of RAM". The estimate's total only: a line per model stays one line in a terminal (the page shows its parts)."""
    estimate = info.estimate
    facts = [f"{info.weights} weights", f"{_count_words(info.parameters)} parameters" if info.parameters else "",
             f"context {info.context_window:,}" if info.context_window else "", _state_words(info),
             f"estimate ~{size_words(estimate.total)} of {estimate.where}" if estimate else ""]
    line = f"{'*' if info.name == current else ' '} {number}. {info.name}: {', '.join(fact for fact in facts if fact)}"
    return line + (f"; can't load: {info.problem}" if info.problem else "")


def _state_words(info: ModelInfo) -> str:
    if not info.loaded:
        return "not loaded"
    now = [f"uses {size_words(info.in_use)}" if info.in_use else "", f"answering {info.answering}" if info.answering else ""]
    return "loaded" + (f" ({', '.join(word for word in now if word)})" if any(now) else "")


def _count_words(count: int) -> str:
    """135_000_000 → '135M', 7_610_000_000 → '7.61B', 95_000 → '95K'."""
    for size, unit in ((10**9, "B"), (10**6, "M"), (10**3, "K")):
        if count >= size:
            return f"{count / size:.3g}{unit}"
    return str(count)
