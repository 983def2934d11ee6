"""The model's side of stopping: criteria that end `generate` (and the batcher's steps).

* `stop_string_criteria` ends `generate` at the step that completes a stop string (transformers'
  `StopStringCriteria`, built once per tokenizer and stop strings: building it reads the whole
  vocabulary, over a second for a 49k-token one, which every request would otherwise pay).
* `CancelCriteria` ends it when the request is cancelled (Stop button, closed tab, Ctrl+C), so
  the model stops computing, not just the display.
"""

from __future__ import annotations

import threading
from functools import lru_cache
from typing import cast

import torch
from transformers import StoppingCriteria
from transformers.generation.stopping_criteria import StopStringCriteria


@lru_cache(maxsize=32)
def stop_string_criteria(tokenizer, stop_strings: tuple[str, ...]) -> StopStringCriteria:
    """The criterion that stops `generate` on `stop_strings`. It holds no state between calls, so
    one serves every request (and thread) with the same tokenizer and stop strings."""
    return StopStringCriteria(tokenizer, list(stop_strings))


class CancelCriteria(StoppingCriteria):
    """Ends `generate` at the next step once `event` is set."""

    def __init__(self, event: threading.Event):
        self.event = event

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs) -> torch.BoolTensor:
        done = self.event.is_set()
        return cast(torch.BoolTensor, torch.full((input_ids.shape[0],), done, dtype=torch.bool, device=input_ids.device))
