"""The local generation engine: a prepared prompt in, a stream of safe text out.

Every request gets its own `TextIteratorStreamer` (with a timeout), worker thread, cancel
event and clock. Nothing is shared between requests but the model weights, so any number of
sessions can use one engine, and a crash in one worker reaches only its own caller.

A session may pass its `PrefixCache`: the keys and values of its last turn are then reused and
only the new part of the prompt is prefilled (see `kvcache`). The engine's `CachePool` bounds
what all sessions keep.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from queue import Empty
from typing import Any, Iterator

import torch
from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from .batching import StepBatcher, can_batch
from ..context import FittedPrompt, fit_to_context
from ..errors import ChatError, GenerationError
from ..formats import Messages, PromptFormat, encode, render
from .kvcache import CachePool, PrefixCache, common_prefix_length
from .loader import LoadedModel, input_device
from ..settings import GenerationSettings
from ..stopping import CancelCriteria, StopStringFilter, stop_string_criteria
from .warmup import warm_next_turn

STREAM_TIMEOUT_S = 120.0  # longest wait for the next piece of text before the worker counts as stuck
JOIN_TIMEOUT_S = 10.0  # how long closing a request waits for its worker to finish its last step


class StopReason:
    EOS = "eos"
    STOP_STRING = "stop string"
    MAX_TOKENS = "max tokens"
    CANCELLED = "cancelled"


@dataclass
class Stats:
    prompt_tokens: int
    new_tokens: int = 0
    time_to_first_token: float | None = None  # seconds from request to first generated token
    tokens_per_second: float | None = None  # decoding speed after the first token
    stop_reason: str = ""
    steps: int = 0  # model steps run (one per generated token)
    cached_tokens: int = 0  # prompt tokens reused from the session's cache, not computed again

    def summary(self) -> str:
        parts = [f"{self.new_tokens} tokens"]
        if self.tokens_per_second:
            parts.append(f"{self.tokens_per_second:.1f} tokens/s")
        if self.time_to_first_token is not None:
            parts.append(f"first token {self.time_to_first_token:.2f} s")
        cached = f" ({self.cached_tokens} cached)" if self.cached_tokens else ""
        parts.append(f"prompt {self.prompt_tokens} tokens{cached}")
        parts.append(f"stop: {self.stop_reason}")
        return " · ".join(parts)


class Clock(StoppingCriteria):
    """Called by `generate` once per new token: times the first token and counts steps."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.first: float | None = None
        self.last: float | None = None
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        now = time.perf_counter()
        self.first = self.first or now
        self.last = now
        self.steps += 1
        return torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device)


class Generation:
    """One answer in progress. Iterate for text deltas; afterwards `stats` and `text` hold the result.

    >>> gen = engine.generate(engine.prepare(messages, settings), settings)  # doctest: +SKIP
    >>> for delta in gen: print(delta, end="")  # doctest: +SKIP
    """

    def __init__(
        self, engine: "LocalEngine", fitted: FittedPrompt, settings: GenerationSettings, stop_strings: tuple[str, ...],
        cache: PrefixCache | None = None,
    ):
        self.engine, self.fitted, self.settings = engine, fitted, settings
        # Beam search runs several rows at once: it neither uses nor replaces the session's cache.
        self._cache = cache if settings.num_beams == 1 else None
        self.text = ""
        self.stats = Stats(prompt_tokens=len(fitted.prompt.ids))
        self._filter = StopStringFilter(stop_strings)
        self._cancel = threading.Event()
        self._cancelled_by_user = False
        self._clock = Clock()
        self._error: BaseException | None = None
        self._output: Any = None
        tokenizer = engine.tokenizer
        # Beam search can't stream (transformers refuses a streamer with beams): the answer arrives whole.
        self._streamer = None if settings.num_beams > 1 else TextIteratorStreamer(
            tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_TIMEOUT_S
        )
        self._worker = threading.Thread(target=self._run, name="generate", daemon=True)
        self._worker.start()

    def cancel(self) -> None:
        """Stop generating: the worker ends at its next step."""
        self._cancelled_by_user = True
        self._cancel.set()

    def __iter__(self) -> Iterator[str]:
        try:
            for chunk in self._chunks():
                safe = self._filter.feed(chunk)
                if safe:
                    yield from self._emit(safe)
                if self._filter.stopped:
                    self._cancel.set()  # the stop string is complete: no reason to compute more
                    break
            yield from self._emit(_drop_partial_character(self._filter.flush()))
        finally:
            self.close()
        if self._error is not None:
            raise _as_generation_error(self._error)
        self._finish_stats()
        self._warm_next_turn()

    def close(self) -> None:
        """Ends the worker (idempotent); called when iteration ends for any reason."""
        if self._worker.is_alive():
            self._cancel.set()
            self._worker.join(JOIN_TIMEOUT_S)

    @property
    def running(self) -> bool:
        return self._worker.is_alive()

    def _chunks(self) -> Iterator[str]:
        if self._streamer is None:
            self._worker.join()
            if self._output is not None:
                yield self.engine.tokenizer.decode(self._new_ids(), skip_special_tokens=True)
            return
        while True:
            try:
                chunk = self._streamer.text_queue.get(timeout=STREAM_TIMEOUT_S)
            except Empty:
                self._error = self._error or GenerationError(
                    f"the model produced nothing for {STREAM_TIMEOUT_S:.0f} s; generation was stopped"
                )
                return
            if chunk is self._streamer.stop_signal:
                return
            yield chunk

    def _emit(self, text: str) -> Iterator[str]:
        if not self.text:  # "Assistant: Hi" in a transcript: the answer is "Hi"
            text = text.lstrip()
        if text:
            self.text += text
            yield text

    def _run(self) -> None:
        try:
            past = None
            if self._cache is not None:
                past, self.stats.cached_tokens = self.engine.caches.take(self._cache, self.fitted.prompt.ids)
            criteria = [self._clock, CancelCriteria(self._cancel)]
            self._output = self.engine.run_generate(
                self.fitted, self.settings, self._filter.stop_strings, self._streamer, criteria, past_key_values=past
            )
        except BaseException as error:  # reaches the reader; never dies silently in the thread
            self._error = error
            if self._streamer is not None:
                self._streamer.end()
        finally:
            self._give_back_cache()

    def _give_back_cache(self) -> None:
        """Hands the keys and values of this turn back to the session (nothing after a failure)."""
        if self._cache is None:
            return
        kv = getattr(self._output, "past_key_values", None) if self._error is None else None
        covered = kv.get_seq_length() if kv is not None else 0  # prompt + answer but its last token
        ids = self._output.sequences[0, :covered].tolist() if kv is not None else []
        self.engine.caches.keep(self._cache, ids, kv)

    def _warm_next_turn(self) -> None:
        # Only a complete answer: after Stop the user often retries or edits instead.
        if self._cache is not None and self.engine.warm_up and self.stats.stop_reason != StopReason.CANCELLED:
            self.engine.warm(self._cache, [*self.fitted.messages, {"role": "assistant", "content": self.text}])

    def _new_ids(self) -> list[int]:
        sequences = self._output.sequences if hasattr(self._output, "sequences") else self._output
        return sequences[0, len(self.fitted.prompt.ids) :].tolist()

    def _finish_stats(self) -> None:
        new_ids = self._new_ids() if self._output is not None else []
        clock, stats = self._clock, self.stats
        stats.new_tokens, stats.steps = len(new_ids), clock.steps
        if clock.first is not None:
            stats.time_to_first_token = clock.first - clock.started
            if clock.steps > 1 and clock.last > clock.first:
                stats.tokens_per_second = (clock.steps - 1) / (clock.last - clock.first)
        if self._cancelled_by_user:
            stats.stop_reason = StopReason.CANCELLED
        elif self._filter.stopped:
            stats.stop_reason = StopReason.STOP_STRING
        elif new_ids and new_ids[-1] in self.engine.eos_ids:
            stats.stop_reason = StopReason.EOS
        else:
            stats.stop_reason = StopReason.MAX_TOKENS


class LocalEngine:
    """Formats, fits and generates with a transformers model on this machine."""

    kind = "local"

    def __init__(self, loaded: LoadedModel, prompt_format: PromptFormat, batching: bool = False):
        self.model, self.tokenizer, self.name = loaded.model, loaded.tokenizer, loaded.name
        self.device = loaded.device
        self.format = prompt_format
        self.context_window = _context_window(self.model, self.tokenizer)
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.caches = CachePool()  # every session's last-turn KV cache, bounded over all sessions
        self.warm_up = True  # after an answer, prefill the history for the next turn in the background
        # Answers generated at the same time share each model step (models with plain attention caches).
        self.batcher = StepBatcher(self.model, self.tokenizer) if batching and can_batch(self.model) else None

    def prepare(self, messages: Messages, settings: GenerationSettings) -> FittedPrompt:
        """The prompt for `messages` (last one = the new user message), fitted to the context."""
        return fit_to_context(
            messages,
            encode=lambda m: encode(self.format, self.tokenizer, m),
            tokenize=lambda text: self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"],
            detokenize=lambda ids: self.tokenizer.decode(ids),
            context_window=self.context_window,
            max_new_tokens=settings.max_new_tokens,
        )

    def render(self, messages: Messages) -> str:
        return render(self.format, messages)

    def generate(
        self, fitted: FittedPrompt, settings: GenerationSettings, extra_stop_strings: tuple[str, ...] = (),
        cache: PrefixCache | None = None,
    ) -> Generation:
        """Starts generating in a worker thread; iterate the result for text.

        With `cache` (the session's own, never another's), the prompt's longest prefix already
        in it is not computed again, and the cache then holds this turn for the next one.
        """
        stops = tuple(dict.fromkeys(self.format.stop_strings + tuple(extra_stop_strings)))
        return Generation(self, fitted, settings, stops, cache)

    def warm(self, cache: PrefixCache, messages: Messages) -> threading.Thread | None:
        """Prefills, in the background, the next turn's prompt up to where the user's next message
        will start (see `warmup`). Returns the thread, or None when the cache is busy or empty."""
        return warm_next_turn(self.model, self.caches, cache, self._next_turn_prefix, messages)

    def _next_turn_prefix(self, messages: Messages) -> list[int]:
        """The token ids every next prompt after `messages` starts with (whatever the user writes)."""
        probes = [encode(self.format, self.tokenizer, [*messages, {"role": "user", "content": text}]).ids for text in ("A", "B")]
        return probes[0][: common_prefix_length(*probes)]

    def run_generate(
        self, fitted: FittedPrompt, settings: GenerationSettings, stop_strings, streamer, criteria, past_key_values: Any = None
    ) -> Any:
        """The blocking `model.generate` call of one request (runs in its worker thread).

        `past_key_values` holds the keys and values of the first tokens of the prompt; the
        rest are prefilled. The result's `past_key_values` covers all tokens but the last.
        With batching on, the batcher computes it, sharing each step with other requests.
        """
        if self.batcher is not None and settings.num_beams == 1:
            return self.batcher.run(
                fitted.prompt.ids, settings, fitted.max_new_tokens, self.eos_ids, stop_strings, streamer, criteria, past_key_values
            )
        input_ids = torch.tensor([fitted.prompt.ids], device=input_device(self.model))
        if settings.seed is not None:
            torch.manual_seed(settings.seed)
        if stop_strings:  # the model stops at the step that completes one
            criteria = [*criteria, stop_string_criteria(self.tokenizer, tuple(stop_strings))]
        with torch.inference_mode():
            return self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList(criteria),
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=self.pad_id,
                return_dict_in_generate=True,
                past_key_values=past_key_values,
                **sampling_kwargs(settings, fitted.max_new_tokens),
            )

    @property
    def pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return pad if pad is not None else min(self.eos_ids)


def sampling_kwargs(settings: GenerationSettings, max_new_tokens: int) -> dict[str, Any]:
    """GenerationSettings → `generate` keyword arguments."""
    return {"max_new_tokens": max_new_tokens, **settings.generate_kwargs()}


def _context_window(model: Any, tokenizer: Any) -> int:
    config = getattr(model, "config", None)
    for name in ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length"):
        value = getattr(config, name, None)
        if isinstance(value, int) and value > 0:
            return value
    limit = getattr(tokenizer, "model_max_length", 0)
    return limit if 0 < limit < 10**7 else 2048


def _eos_ids(model: Any, tokenizer: Any) -> frozenset[int]:
    ids: set[int] = set()
    configured = getattr(getattr(model, "generation_config", None), "eos_token_id", None)
    for value in (configured, tokenizer.eos_token_id):
        if isinstance(value, int):
            ids.add(value)
        elif value:
            ids.update(value)
    if not ids:
        raise ChatError("this model defines no end-of-sequence token; it could never stop on its own")
    return frozenset(ids)


def _drop_partial_character(text: str) -> str:
    # A stream cut off by max tokens may end in half a multi-byte character.
    return text.rstrip("\ufffd")


def _as_generation_error(error: BaseException) -> ChatError:
    if isinstance(error, ChatError):
        return error
    if isinstance(error, torch.OutOfMemoryError):
        return GenerationError("out of memory while generating: try a shorter conversation, fewer new tokens, or --quantize 4bit")
    return GenerationError(f"generation failed: {type(error).__name__}: {error}")
