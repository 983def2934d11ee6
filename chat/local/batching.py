"""Decode-step batching: answers generated at the same time share each model step.

On a CPU (or a GPU at batch 1) one decoding step of a small model costs about the same for one
sequence as for four, so sessions that chat at once should not take turns. `StepBatcher` runs
one loop for all requests of an engine: a newcomer is prefilled alone (with its session's
prefix cache), then joins the batch, and every step computes the next token of every answer
together. Each request keeps its own sampling settings, stop criteria, streamer and result,
exactly as `model.generate` would give them; only the forward pass is shared.

The batch keeps one KV cache, left-padded to the longest row: a joining or leaving row costs
one copy of the cache, a step costs what `generate` costs at that batch size. Models whose cache
is not plain full attention (sliding windows, recurrent layers) are not batched.
"""

from __future__ import annotations

import inspect
import threading
from dataclasses import dataclass, field
from typing import Any, cast

import torch
from transformers import DynamicCache, StoppingCriteriaList
from transformers.cache_utils import DynamicLayer
from transformers.generation import GenerateDecoderOnlyOutput

from .loader import input_device
from .omp_threads import release_this_threads_team
from ..settings import GenerationSettings
from .criteria import CancelCriteria, stop_string_criteria
from .sampling import TokenPicker, TokenRecorder


# Settings a model's generation_config.json may carry that `generate` would apply and the batcher
# does not: such a model answers alone, so that batching never changes an answer.
STOP_WAIT_S = 10.0  # unloading waits this long for the loop's thread to end
UNBATCHED_GENERATION_OPTIONS = (
    "min_p", "typical_p", "epsilon_cutoff", "eta_cutoff", "min_new_tokens", "bad_words_ids", "suppress_tokens",
    "begin_suppress_tokens", "forced_bos_token_id", "forced_eos_token_id", "sequence_bias", "exponential_decay_length_penalty",
)


def can_batch(model: Any) -> bool:
    """True when every layer's cache is plain full attention (which left padding can batch), the
    model takes positions and a cache as `generate` gives them, and its generation config asks for
    nothing the batcher leaves out."""
    try:
        cache = DynamicCache(config=model.config)
    except Exception:  # a model with its own cache type
        return False
    if not cache.layers or any(type(layer) is not DynamicLayer for layer in cache.layers):
        return False
    if not {"position_ids", "past_key_values"} <= set(inspect.signature(model.forward).parameters):
        return False
    config = getattr(model, "generation_config", None)
    return not any(getattr(config, name, None) not in (None, 1.0, 0.0, 0) for name in UNBATCHED_GENERATION_OPTIONS)


@dataclass(eq=False)
class Request:
    """One answer being generated: what `model.generate` would have been given, and its result."""

    ids: list[int]  # prompt, then each generated token appended
    settings: GenerationSettings
    max_new_tokens: int
    eos_ids: frozenset[int]
    picker: TokenPicker  # its processors, its own random generator, its token recorder (if asked)
    criteria: StoppingCriteriaList
    streamer: Any
    past: Any  # the session's prefix cache (or None): keys and values of the first prompt tokens
    new_tokens: int = 0
    cache: Any = None  # this row's own cache before it joins the batch
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def cancelled(self) -> bool:
        return any(isinstance(c, CancelCriteria) and c.event.is_set() for c in self.criteria)


class StepBatcher:
    """Runs `generate`-equivalent requests for one model, sharing each decoding step among them."""

    def __init__(self, model: Any, tokenizer: Any):
        self.model, self.tokenizer = model, tokenizer
        # Only the last position's logits are needed: a 2,000-token prefill would otherwise make
        # 2,000 × vocabulary floats (400 MB for SmolLM2) to throw away, as `generate` avoids too.
        self._last_logits = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
        self._waiting: list[Request] = []
        self._rows: list[Request] = []  # the batch, in cache row order
        self._pads: list[int] = []  # left padding of each row in the batch cache
        self._cache: Any = None
        self._wake = threading.Condition()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.largest_batch = 0  # most rows ever stepped together (for benchmarks and tests)

    @property
    def queued(self) -> int:
        """Requests waiting to join the batch (for benchmarks and tests)."""
        with self._wake:
            return len(self._waiting)

    def run(
        self, ids: list[int], settings: GenerationSettings, max_new_tokens: int, eos_ids: frozenset[int],
        stop_strings, streamer, criteria, past: Any = None, recorder: TokenRecorder | None = None,
    ) -> Any:
        """Blocks until the answer is complete; returns what `generate(return_dict_in_generate=True)` returns."""
        request = Request(
            ids=list(ids), settings=settings, max_new_tokens=max_new_tokens, eos_ids=eos_ids,
            picker=TokenPicker(self.model, settings, self._device, len(ids), recorder),
            criteria=self._criteria(stop_strings, criteria), streamer=streamer, past=past,
        )
        with self._wake:
            self._waiting.append(request)
            if self._thread is None or not self._thread.is_alive():
                self._thread = threading.Thread(target=self._loop, name="step-batcher", daemon=True)
                self._thread.start()
            self._wake.notify()
        request.done.wait()
        if request.error is not None:  # one failed step may fail several readers: each gets its own error
            error = request.error
            raise type(error)(*error.args) if _copyable(error) else RuntimeError(f"{type(error).__name__}: {error}") from error
        return request.result

    # -- the loop -----------------------------------------------------------------------------

    def stop(self) -> None:
        """Ends the loop's thread once no request is left (the model is being unloaded: nothing may hold it)."""
        with self._wake:
            self._stopped = True
            self._wake.notify()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(STOP_WAIT_S)

    def _loop(self) -> None:
        while True:
            with self._wake:
                if not self._waiting and not self._rows:
                    # Idle: let this thread's OpenMP workers go, or they would slow down the threads of the
                    # other models loaded (see omp_threads); a next answer makes them again in microseconds.
                    release_this_threads_team()
                while not self._waiting and not self._rows and not self._stopped:
                    self._wake.wait()
                if self._stopped and not self._waiting and not self._rows:
                    self._cache = None
                    return
                # One newcomer between steps: answers already streaming never wait for several prefills.
                newcomer = self._waiting.pop(0) if self._waiting else None
            with torch.inference_mode():
                if newcomer is not None:
                    self._admit(newcomer)
                newcomer = None  # an idle loop keeps no request (and no cache) alive
                if self._rows:
                    self._step_all()

    def _admit(self, request: Request) -> None:
        try:
            if request.cancelled:  # while it waited: nothing to compute
                self._finish(request, None, 0)
            else:
                self._start(request)
        except BaseException as error:  # reaches that request's reader; the loop goes on
            self._fail(request, error)

    def _step_all(self) -> None:
        try:
            self._step()
        except BaseException as error:  # the shared forward pass failed: every answer in the batch hears of it
            for request in self._rows:
                self._fail(request, error)
            self._rows, self._pads, self._cache = [], [], None

    def _start(self, request: Request) -> None:
        """Prefills the request alone (after its cached prefix), picks its first token, lets it join."""
        cache = request.past if request.past is not None else DynamicCache(config=self.model.config)
        request.past = None  # the batch (or the result) holds it from here on
        start = cache.get_seq_length()
        if request.streamer is not None:
            request.streamer.put(torch.tensor([request.ids]))  # the prompt: a streamer skips it
        new = torch.tensor([request.ids[start:]], device=self._device)
        positions = torch.arange(start, len(request.ids), device=self._device)[None]
        out = self.model(input_ids=new, position_ids=positions, past_key_values=cache, use_cache=True, **self._last_logits)
        request.cache = cache
        if self._advance(request, out.logits[:, -1]):
            self._finish(request, cache, 0)
        else:
            self._join(request)

    def _step(self) -> None:
        """One decoding step for every row of the batch."""
        rows, pads = self._rows, self._pads
        self.largest_batch = max(self.largest_batch, len(rows))
        length = self._cache.get_seq_length()
        last = torch.tensor([[r.ids[-1]] for r in rows], device=self._device)
        positions = torch.tensor([[length - pad] for pad in pads], device=self._device)
        mask = None
        if any(pads):
            mask = torch.ones((len(rows), length + 1), dtype=torch.long, device=self._device)
            for row, pad in enumerate(pads):
                mask[row, :pad] = 0
        out = self.model(input_ids=last, attention_mask=mask, position_ids=positions, past_key_values=self._cache, use_cache=True)
        logits = out.logits[:, -1]
        finished = []
        for row, request in enumerate(rows):
            try:  # a row's own trouble (its criteria, streamer, sampling) ends only that answer
                if self._advance(request, logits[row : row + 1]):
                    self._finish(request, self._cache, row)
                    finished.append(row)
            except Exception as error:
                self._fail(request, error)
                finished.append(row)
        if finished:
            self._leave(finished)

    def _advance(self, request: Request, logits: torch.Tensor) -> bool:
        """Picks the next token as `generate` would, streams it; True when the answer is complete."""
        ids = cast(torch.LongTensor, torch.tensor([request.ids + [0]], device=logits.device))  # room for the new token: one tensor per step
        token = request.picker.pick(cast(torch.LongTensor, ids[:, :-1]), logits)  # as alone: the same seed, the same tokens
        request.ids.append(token)
        request.new_tokens += 1
        if request.streamer is not None:
            request.streamer.put(torch.tensor([token]))
        ids[0, -1] = token
        stop = bool(request.criteria(ids, logits).any())  # every criterion runs: the clock counts each step
        return stop or token in request.eos_ids or request.new_tokens >= request.max_new_tokens

    # -- the batch cache ------------------------------------------------------------------------

    def _join(self, request: Request) -> None:
        cache, request.cache = request.cache, None
        if not self._rows:
            self._rows, self._pads, self._cache = [request], [0], cache
            return
        old, new = self._cache.get_seq_length(), cache.get_seq_length()
        longest = max(old, new)
        layers = []
        for batch_layer, row_layer in zip(self._cache.layers, cache.layers):
            keys = torch.cat([_pad_left(batch_layer.keys, longest - old), _pad_left(row_layer.keys, longest - new)])
            values = torch.cat([_pad_left(batch_layer.values, longest - old), _pad_left(row_layer.values, longest - new)])
            layers.append((keys, values))
        self._cache = DynamicCache(layers)
        self._pads = [pad + longest - old for pad in self._pads] + [longest - new]
        self._rows.append(request)

    def _leave(self, finished: list[int]) -> None:
        keep = [row for row in range(len(self._rows)) if row not in finished]
        self._rows = [self._rows[row] for row in keep]
        self._pads = [self._pads[row] for row in keep]
        if not keep:
            self._cache = None
            return
        self._cache.batch_select_indices(torch.tensor(keep))  # a CPU index works for layers on every GPU
        trim = min(self._pads)  # columns that are padding in every remaining row
        if trim:
            for layer in self._cache.layers:
                layer.keys, layer.values = layer.keys[:, :, trim:], layer.values[:, :, trim:]
            self._pads = [pad - trim for pad in self._pads]

    def _finish(self, request: Request, cache: Any, row: int) -> None:
        """Completes the request: its sequence, and its own copy of its keys and values for the session."""
        kv = cache
        if cache is not None and cache is self._cache and (len(self._rows) > 1 or self._pads[row]):  # its own copy, no padding
            pad = self._pads[row]
            kv = DynamicCache([(layer.keys[row : row + 1, :, pad:].clone(), layer.values[row : row + 1, :, pad:].clone())
                               for layer in cache.layers])
        request.result = GenerateDecoderOnlyOutput(sequences=cast(torch.LongTensor, torch.tensor([request.ids])), past_key_values=kv)
        request.cache = request.past = None
        if request.streamer is not None:
            request.streamer.end()
        request.done.set()

    def _fail(self, request: Request, error: BaseException) -> None:
        if request.done.is_set():  # finished in the step that failed afterwards: its answer stands
            return
        request.error = error
        request.cache = request.past = None
        if request.streamer is not None:
            request.streamer.end()
        request.done.set()

    # -- per request ----------------------------------------------------------------------------

    def _criteria(self, stop_strings, criteria) -> StoppingCriteriaList:
        extra = [stop_string_criteria(self.tokenizer, tuple(stop_strings))] if stop_strings else []
        return StoppingCriteriaList([*criteria, *extra])

    @property
    def _device(self) -> torch.device:
        return input_device(self.model)


def _pad_left(tensor: torch.Tensor, columns: int) -> torch.Tensor:
    if columns == 0:
        return tensor
    shape = list(tensor.shape)
    shape[2] = columns
    return torch.cat([tensor.new_zeros(shape), tensor], dim=2)


def _copyable(error: BaseException) -> bool:
    """Whether `type(error)(*error.args)` makes an equal new exception (most built-in and torch errors)."""
    try:
        return str(type(error)(*error.args)) == str(error)
    except Exception:
        return False
