"""Warm-up: while the user reads an answer and types, prefill what the next prompt will start with.

The next turn's prompt is the history, the answer just given, and the start of the user's next
message. The answer was generated token by token, but in the next prompt it is tokenized from its
text, which may split differently; the chat template also closes the turn after it. So the cache
as the answer left it matches the next prompt only up to where those differ. The warm-up crops
the cache to what still matches and prefills the rest, up to where the next message begins, in a
background thread: the next answer then computes only the new message.
"""

from __future__ import annotations

import inspect
import threading
from typing import Any, Callable, Sequence

import torch

from ..formats import Messages
from .kvcache import CachePool, PrefixCache, crop_to_prefix
from .loader import input_device


def warm_next_turn(
    model: Any, pool: CachePool, cache: PrefixCache, next_turn_prefix: Callable[[Messages], list[int]], messages: Messages,
    on_end: Callable[[], None] = lambda: None,
) -> threading.Thread | None:
    """Starts the warm-up of `cache` for the turn after `messages`; the thread, or None when the
    cache is busy (an answer is using it) or empty. `on_end` runs in the thread when it is done."""
    lent = pool.lend(cache)
    if lent is None:
        return None
    # Not a daemon: a program that exits right after an answer (a piped chat) waits for this
    # short prefill, instead of killing a thread inside torch (which aborts the process).
    thread = threading.Thread(target=_warm, args=(model, pool, cache, next_turn_prefix, messages, *lent, on_end), name="warm-up", daemon=False)
    thread.start()
    return thread


def _warm(model, pool: CachePool, cache: PrefixCache, next_turn_prefix, messages: Messages, ids: Sequence[int], kv: Any,
          on_end: Callable[[], None]) -> None:
    try:
        target = next_turn_prefix(messages)
        kv, kept = crop_to_prefix(ids, kv, target)
        ids = target[:kept]
        if kv is not None and kept < len(target):
            prefill(model, target, kept, kv)
            ids = target
    except Exception:  # a failed warm-up costs the next turn time, never correctness
        kv, ids = None, []
    finally:
        try:
            pool.keep(cache, ids, kv)
        finally:
            on_end()


def prefill(model: Any, ids: list[int], start: int, kv: Any) -> None:
    """Adds the keys and values of `ids[start:]` to `kv`, which holds those of `ids[:start]`."""
    device = input_device(model)
    new = torch.tensor([ids[start:]], device=device)
    positions = torch.arange(start, len(ids), device=device)[None]
    # Logits are wanted for no position: keep one (not 400 MB for 2,000 tokens) where the model allows.
    last_only = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    with torch.inference_mode():
        model(input_ids=new, position_ids=positions, past_key_values=kv, use_cache=True, **last_only)
