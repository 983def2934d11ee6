"""The local engine: a transformers model on this machine, behind the `Engine` seam (chat/engine.py).

Every request gets its own `TextIteratorStreamer` (with a timeout), worker thread, cancel event
and clock. Requests share the model weights and, with batching on, each model step (see
`batching`), never their text: a crash in one worker reaches only its own caller.

A session may pass its `PrefixCache`: the keys and values of its last turn are then reused and
only the new part of the prompt is prefilled (see `kvcache`). The engine's `CachePool` bounds
what all sessions keep.
"""

from __future__ import annotations

import threading
import time
from queue import Empty
from typing import Any, Iterator, Sequence, cast

import torch
from transformers import LogitsProcessorList, StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

from ..context_window import FittedPrompt, fit_to_context
from ..engine import Generation, SessionCache, StopReason
from ..errors import ChatError, GenerationError, ModelUnloaded
from ..formats import Messages, PromptFormat, encode, render
from ..prompt_tokens import PromptTokens, read_prompt
from ..settings import GenerationSettings
from ..answer_tokens import LOOKBACK, TokenLog, TokenStep, TokenTexts
from .batching import StepBatcher, can_batch
from .criteria import CancelCriteria, stop_string_criteria
from .kvcache import CachePool, PrefixCache, common_prefix_length
from .loader import LoadedModel, input_device
from .sampling import GENERATE_PICKS, PickedByPicker, TokenPicker, TokenRecorder, global_generator_seeded
from .warmup import warm_next_turn

STREAM_TIMEOUT_S = 120.0  # longest wait for the next piece of text before the worker counts as stuck


class Clock(StoppingCriteria):
    """Called by `generate` once per new token: times the first token and counts steps."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.steps = 0

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor, **kwargs: Any) -> torch.BoolTensor:
        now = time.perf_counter()
        self.first = self.first or now
        self.last = now
        self.steps += 1
        return cast(torch.BoolTensor, torch.zeros((input_ids.shape[0],), dtype=torch.bool, device=input_ids.device))


class LocalGeneration(Generation):
    """One answer from the model on this machine: `generate` (or the batcher) in a worker thread
    streams its text through a `TextIteratorStreamer` of its own."""

    CLOSE_WAIT_S = 10.0  # the worker ends after the model's current step

    def __init__(self, engine: "LocalEngine", fitted: FittedPrompt, settings: GenerationSettings, stop_strings: tuple[str, ...],
                 cache: PrefixCache | None = None, tokens: bool = False):
        super().__init__(fitted, settings, stop_strings)
        self.engine = engine
        # Beam search keeps several candidates: no one distribution per token to show.
        self._recorder = TokenRecorder() if tokens and settings.num_beams == 1 else None
        self._texts = TokenTexts(engine.decode_answer)
        self._named = 0  # steps whose alternatives have their texts
        # Beam search runs several rows at once: it neither uses nor replaces the session's cache.
        self._cache = cache if settings.num_beams == 1 else None
        self._clock = Clock()
        self._output: Any = None
        # Beam search can't stream (transformers refuses a streamer with beams): the answer arrives whole.
        self._streamer = None if settings.num_beams > 1 else TextIteratorStreamer(
            engine.tokenizer, skip_prompt=True, skip_special_tokens=True, timeout=STREAM_TIMEOUT_S
        )
        engine.hold()  # (raises ModelUnloaded when the model went away since the session got its engine)
        try:
            self._start()
        except BaseException:
            engine.release()
            raise

    def _run(self) -> None:
        try:
            past = None
            if self._cache is not None:
                past, self.stats.cached_tokens = self.engine.caches.take(self._cache, self.fitted.prompt.ids)
            criteria = [self._clock, CancelCriteria(self._cancel)]
            self._output = self.engine.run_generate(
                self.fitted, self.settings, self._filter.stop_strings, self._streamer, criteria, past_key_values=past,
                recorder=self._recorder,
            )
        except BaseException as error:  # reaches the reader; never dies silently in the thread
            self._error = error
            if self._streamer is not None:
                self._streamer.end()
        finally:
            self._give_back_cache()
            self.engine.release()

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

    def _recorded_tokens(self) -> TokenLog | None:
        if self._recorder is None:
            return None
        steps = self._recorder.snapshot()
        texts = self._texts.feed([cast(int, step.id) for step in steps[len(self._texts.ids):]], final=not self.running)
        named = [TokenStep(step.id, text, step.dists) for step, text in zip(steps, texts)]
        for index in range(self._named, len(named)):  # each step's alternatives are named once
            self._name_alternatives(named[index], index)
        self._named = len(named)
        return TokenLog(named, self._recorder.distributions or ())

    def _name_alternatives(self, step: TokenStep, index: int) -> None:
        """What each alternative would have added in place of the answer's token `index` (a special
        token: its name), decoded after the tokens before it, as the answer's own tokens are."""
        before = self._texts.ids[max(0, index - LOOKBACK) : index]
        known = self.engine.decode_answer(before)
        names: dict[int, tuple[str, bool]] = {}
        for dist in step.dists.values():
            for alternative in dist.top:
                token = cast(int, alternative.id)
                if token not in names:
                    names[token] = ((self.engine.tokenizer.decode([token]), True) if token in self.engine.special_ids
                                    else (self.engine.decode_answer([*before, token])[len(known):], False))
                alternative.text, alternative.special = names[token]

    def _give_back_cache(self) -> None:
        """Hands the keys and values of this turn back to the session (nothing after a failure)."""
        if self._cache is None:
            return
        kv = getattr(self._output, "past_key_values", None) if self._error is None else None
        covered = kv.get_seq_length() if kv is not None else 0  # prompt + answer but its last token
        ids = self._output.sequences[0, :covered].tolist() if kv is not None else []
        self.engine.caches.keep(self._cache, ids, kv)

    def _finished(self) -> None:
        # Only a complete answer: after Stop the user often retries or edits instead.
        if self._cache is not None and self.engine.warm_up and self.stats.stop_reason != StopReason.CANCELLED:
            before = self.fitted.messages[:-1] if self.fitted.continues else self.fitted.messages
            so_far = self.fitted.messages[-1]["content"] if self.fitted.continues else ""
            self.engine.warm(self._cache, [*before, {"role": "assistant", "content": so_far + self.text}])

    def _new_ids(self) -> list[int]:
        sequences = self._output.sequences if hasattr(self._output, "sequences") else self._output
        return sequences[0, len(self.fitted.prompt.ids) :].tolist()

    def _token_counts(self) -> tuple[int, int]:
        return len(self._new_ids()) if self._output is not None else 0, self._clock.steps

    def _first_and_last_token_times(self) -> tuple[float | None, float | None]:
        return self._clock.first, self._clock.last

    def _hit_token_limit(self) -> bool:
        new_ids = self._new_ids() if self._output is not None else []
        return not (new_ids and new_ids[-1] in self.engine.eos_ids)

    def _as_chat_error(self, error: BaseException) -> ChatError:
        if isinstance(error, torch.OutOfMemoryError):
            return GenerationError("out of memory while generating: try a shorter conversation, fewer new tokens, or --quantize 4bit")
        return error if isinstance(error, ChatError) else GenerationError(f"generation failed: {type(error).__name__}: {error}")


class LocalEngine:
    """Formats, fits and generates with a transformers model on this machine (an `Engine`)."""

    exact_prompt = True  # the prompt shown is the very text and token ids the model gets
    answers_at_once = 4  # answers take turns or share steps on one machine

    def __init__(self, loaded: LoadedModel, prompt_format: PromptFormat, batching: bool = False, context_window: int | None = None):
        self.model, self.tokenizer, self.name = loaded.model, loaded.tokenizer, loaded.name
        self.device, self.weights = loaded.device, loaded.weights
        self.format = prompt_format
        own = _context_window(self.model, self.tokenizer)
        self.context_window = min(own, context_window or own)  # --context-window: less KV cache per answer
        self.window_source = "--context-window" if self.context_window < own else "the model's configuration"
        self.revision = getattr(getattr(self.model, "config", None), "_commit_hash", None)  # set for Hub downloads
        self.eos_ids = _eos_ids(self.model, self.tokenizer)
        self.special_ids = frozenset(self.tokenizer.all_special_ids) | self.eos_ids
        self.caches = CachePool()  # every session's last-turn KV cache, bounded over all sessions
        self.warm_up = True  # after an answer, prefill the history for the next turn in the background
        # Answers generated at the same time share each model step (models with plain attention caches).
        self.batcher = StepBatcher(self.model, self.tokenizer) if batching and can_batch(self.model) else None
        self._users = self._answers = 0  # answers and warm-ups using the model now; answers alone
        self._users_changed = threading.Condition()
        self.closed = False  # being unloaded: no answer may start
        self._finishing = False  # unloaded: the last user lets the model go

    # -- in use, and unloaded --------------------------------------------------------------------

    @property
    def answering(self) -> int:
        """Answers computing with the model now: it can't be unloaded meanwhile."""
        return self._answers

    def hold(self, answer: bool = True) -> None:
        """One more user of the model (an answer, or a warm-up); raises `ModelUnloaded` once it is being unloaded."""
        with self._users_changed:
            if self.closed:
                raise ModelUnloaded(f"{self.name} was unloaded")
            self._users += 1
            self._answers += answer

    def release(self, answer: bool = True) -> None:
        with self._users_changed:
            self._users -= 1
            self._answers -= answer
            last = self._finishing and not self._users
        if last:
            self._let_go()  # the last user of a model being unloaded: its memory goes now

    def begin_close(self) -> bool:
        """Unload, its first step: from now on no answer starts (they get `ModelUnloaded` and ask the model list
        again). False, and nothing changes, while an answer uses the model. Quick: the list calls it under its lock."""
        with self._users_changed:
            if self._answers:
                return False
            self.closed = True
            return True

    def cancel_close(self) -> None:
        """Takes `begin_close` back (the list found it could not make room after all)."""
        with self._users_changed:
            self.closed = False

    def finish_close(self) -> None:
        """Unload, its second step: lets the weights, the batcher's thread and every session's cache of them go, now
        or, while a warm-up still prefills (a short step), when it ends."""
        with self._users_changed:
            self._finishing = True
            idle = not self._users
        if idle:
            self._let_go()

    def close(self) -> bool:
        """`begin_close` and `finish_close`."""
        if not self.begin_close():
            return False
        self.finish_close()
        return True

    def _let_go(self) -> None:
        with self._users_changed:
            batcher, self.batcher = self.batcher, None
            self.model = None
        if batcher is not None:
            batcher.stop()
        self.caches.clear()

    def memory_in_use(self) -> int:
        """Bytes its weights and the caches it keeps take now."""
        from .memory import model_bytes

        if self.model is None:
            return 0
        per_token = self.kv_bytes_per_token()
        return model_bytes(self.model) + self.caches.tokens * per_token

    def kv_bytes_per_token(self) -> int:
        config = getattr(self.model, "config", None)
        get = lambda name, default=0: getattr(config, name, None) or default  # noqa: E731
        heads = get("num_attention_heads", 1)
        head_dim = get("head_dim") or get("hidden_size") // heads
        dtype = getattr(self.model, "dtype", torch.float32)
        return 2 * get("num_hidden_layers") * get("num_key_value_heads", heads) * head_dim * torch.finfo(dtype).bits // 8

    @property
    def shares_steps(self) -> bool:
        return self.batcher is not None

    def new_cache(self) -> PrefixCache:
        return PrefixCache()

    def prepare(self, messages: Messages, settings: GenerationSettings, continues: bool = False) -> FittedPrompt:
        """The prompt for `messages` (last one = the new user message), fitted to the context."""
        return fit_to_context(
            messages,
            encode=lambda m: encode(self.format, self.tokenizer, m, continue_final=continues),
            tokenize=lambda text: self.tokenizer(text, add_special_tokens=False, split_special_tokens=True)["input_ids"],
            detokenize=lambda ids: self.tokenizer.decode(ids),
            context_window=self.context_window,
            max_new_tokens=settings.max_new_tokens,
            continues=continues,
        )

    def render(self, messages: Messages) -> str:
        return render(self.format, messages)

    def prompt_tokens(self, fitted: FittedPrompt, typed: str | None = None) -> PromptTokens:
        """`fitted`'s prompt token by token, each in its part (see chat/prompt_tokens.py)."""
        return read_prompt(fitted, self.format, self.tokenizer, typed)

    def generate(
        self, fitted: FittedPrompt, settings: GenerationSettings, extra_stop_strings: tuple[str, ...] = (),
        cache: SessionCache | None = None, tokens: bool = False,
    ) -> LocalGeneration:
        """Starts generating in a worker thread; iterate the result for text.

        With `cache` (the session's own, never another's), the prompt's longest prefix already
        in it is not computed again, and the cache then holds this turn for the next one.
        """
        stops = tuple(dict.fromkeys(self.format.stop_strings + tuple(extra_stop_strings)))
        return LocalGeneration(self, fitted, settings, stops, cache if isinstance(cache, PrefixCache) else None, tokens)

    def decode_answer(self, ids: Sequence[int]) -> str:
        """Token ids → the answer's text, exactly as the streamer decodes it."""
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def warm(self, cache: PrefixCache, messages: Messages) -> threading.Thread | None:
        """Prefills, in the background, the next turn's prompt up to where the user's next message
        will start (see `warmup`). Returns the thread, or None when the cache is busy or empty."""
        try:
            self.hold(answer=False)
        except ModelUnloaded:
            return None
        thread = None
        try:
            thread = warm_next_turn(self.model, self.caches, cache, self._next_turn_prefix, messages,
                                    on_end=lambda: self.release(answer=False))
        finally:
            if thread is None:
                self.release(answer=False)
        return thread

    def _next_turn_prefix(self, messages: Messages) -> list[int]:
        """The token ids every next prompt after `messages` starts with (whatever the user writes)."""
        probes = [encode(self.format, self.tokenizer, [*messages, {"role": "user", "content": text}]).ids for text in ("A", "B")]
        return probes[0][: common_prefix_length(*probes)]

    def run_generate(
        self, fitted: FittedPrompt, settings: GenerationSettings, stop_strings, streamer, criteria, past_key_values: Any = None,
        recorder: TokenRecorder | None = None,
    ) -> Any:
        """The blocking `model.generate` call of one request (runs in its worker thread).

        `past_key_values` holds the keys and values of the first tokens of the prompt; the
        rest are prefilled. The result's `past_key_values` covers all tokens but the last.
        With batching on, the batcher computes it, sharing each step with other requests.
        """
        if self.batcher is not None and settings.num_beams == 1:
            return self.batcher.run(
                fitted.prompt.ids, settings, fitted.max_new_tokens, self.eos_ids, stop_strings, streamer, criteria, past_key_values,
                recorder,
            )
        input_ids = torch.tensor([fitted.prompt.ids], device=input_device(self.model))
        processors, kwargs = [], sampling_kwargs(settings, fitted.max_new_tokens)
        if settings.num_beams == 1:  # as the batcher picks (sampling.py): then `generate` takes the token picked
            processors.append(PickedByPicker(TokenPicker(self.model, settings, input_ids.device, len(fitted.prompt.ids), recorder)))
            kwargs.update(GENERATE_PICKS)
        if stop_strings:  # the model stops at the step that completes one
            criteria = [*criteria, stop_string_criteria(self.tokenizer, tuple(stop_strings))]
        beam_seed = settings.seed if settings.num_beams > 1 else None  # beam search samples in its own way
        with global_generator_seeded(beam_seed, input_ids.device), torch.inference_mode():
            return self.model.generate(
                input_ids=input_ids,
                attention_mask=torch.ones_like(input_ids),
                streamer=streamer,
                stopping_criteria=StoppingCriteriaList(criteria),
                eos_token_id=sorted(self.eos_ids),
                pad_token_id=self.pad_id,
                return_dict_in_generate=True,
                past_key_values=past_key_values,
                logits_processor=LogitsProcessorList(processors),
                **kwargs,
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
