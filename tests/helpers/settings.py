"""Sampling settings the tests share: greedy answers (the same tokens every run, on one machine) kept short
(a tiny model's answer costs time per token, and the tests assert behaviour, not what it says)."""

from __future__ import annotations

from typing import Any

from chat.settings import GenerationSettings

SHORT_ANSWER = 8  # new tokens: enough for several streamed pieces, quick on any CPU


def greedy(max_new_tokens: int = SHORT_ANSWER, **changes: Any) -> GenerationSettings:
    """Greedy decoding (temperature 0: the likeliest token each step) of at most `max_new_tokens`, plus `changes`."""
    return GenerationSettings(temperature=0, max_new_tokens=max_new_tokens, **changes)
