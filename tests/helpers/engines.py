"""Engines for tests: the app's own loader and `LocalEngine` on a model folder, and a wrapper that
remembers what it generated."""

from __future__ import annotations

import threading
import time

from pathlib import Path
from typing import Any

NO_EOS = frozenset({10**6})  # an end-of-sequence id no tiny model can produce


def load_quietly(folder: Path | str | None, **load_options: Any):
    """The model in `folder` (None: the embedded SmolLM2) through the app's `load_model`, printing
    nothing; `load_options` are further `LoadOptions` fields (quantize, dtype, device_map ...)."""
    from chat.local.loader import LoadOptions, load_model

    model = None if folder is None else str(folder)
    load_options.setdefault("quantize", "none")  # float weights, unless a test is about a weight format
    return load_model(LoadOptions(model=model, **load_options), say=lambda _: None)


def engine_on(loaded, prompt_format: str = "auto", batching: bool = False, endless: bool = False):
    """A `LocalEngine` on an already loaded model (several engines can share its weights).

    `endless`: the engine never meets end-of-sequence, so every answer runs to its token limit."""
    from chat.formats import choose_format
    from chat.local.engine import LocalEngine

    engine = LocalEngine(loaded, choose_format(loaded.tokenizer, prompt_format), batching=batching)
    if endless:
        engine.eos_ids = NO_EOS
    return engine


def make_engine(folder: Path | str | None, prompt_format: str = "auto", batching: bool = False, endless: bool = False,
                **load_options: Any):
    """A fresh `LocalEngine` (its own weights, its own cache pool) on the model in `folder`, as the
    app builds one; see `load_quietly` and `engine_on` for the options."""
    return engine_on(load_quietly(folder, **load_options), prompt_format, batching, endless)


def repeating(engine, word: str = " a"):
    """`engine`, whose model says `word` again and again whatever it is asked, on every CPU: its output layer
    is pushed far towards that one token. An answer of many pieces (the streamer passes text on word by
    word), for tests that need one: what a random model says, and where its text breaks, differs between
    CPUs. Give it an engine of its own (`make_engine`): the hook stays on its model."""
    [token] = engine.tokenizer(word, add_special_tokens=False)["input_ids"]

    def towards_word(module, inputs, logits):
        logits[..., token] += 1e4
        return logits

    engine.model.lm_head.register_forward_hook(towards_word)
    return engine


def paced(engine, seconds_per_step: float = 0.002):
    """`engine`, whose model takes at least `seconds_per_step` for every step: an answer of n tokens lasts at
    least n × that on every CPU, for tests where a client must give up before the answer ends (a tiny model
    can make hundreds of tokens in the half second such a client waits). Give it an engine of its own."""
    engine.model.register_forward_pre_hook(lambda module, inputs: time.sleep(seconds_per_step))
    return engine


def at_once(generations) -> list[str]:
    """Reads all `generations` in parallel, as browser tabs would; their texts, in order."""
    texts = [""] * len(generations)

    def read(index):
        texts[index] = "".join(generations[index])

    threads = [threading.Thread(target=read, args=(i,)) for i in range(len(generations))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return texts


def started_together(engine, fitted, settings) -> list[Any]:
    """An answer for each of `fitted` on the batching `engine`, all started while its model holds the first
    one's first step: every answer is waiting to join before any can end, so they share steps on any CPU,
    however busy (started one after another, a tiny model can finish one before the next is asked)."""
    from tests.helpers.waiting import wait_for

    holding, release = threading.Event(), threading.Event()

    def hold(module, inputs):
        holding.set()
        release.wait(30)

    handle = engine.model.register_forward_pre_hook(hold)
    try:
        generations = [engine.generate(f, settings) for f in fitted]
        assert wait_for(lambda: holding.is_set() and engine.batcher.queued == len(fitted) - 1, 30), "the answers never queued"
    finally:
        handle.remove()
        release.set()
    return generations


class RecordingEngine:
    """The real engine, remembering each generation it starts (to see the server's side of a Stop)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.generations: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(self, fitted, settings, extra_stop_strings=(), **options):
        generation = self.engine.generate(fitted, settings, extra_stop_strings, **options)
        self.generations.append(generation)
        return generation


def finished(generation) -> bool:
    """The model stopped and the generation's reader has written the final stats."""
    return not generation.running and bool(generation.stats.stop_reason)
