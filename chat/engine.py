"""The engine seam: what a backend offers the rest of the app, and one answer in progress.

`Engine` is what the session, the page, the /v1 API and the terminal chat see of a backend: the
local transformers engine (chat/local/) and any OpenAI-compatible server (chat/remote/). What a
backend can do is a declared attribute, never probed. `Generation` is one answer streaming in; the
two backends share everything but where the text comes from. Nothing here imports torch or
transformers, so a process that only talks to a server stays small.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from enum import StrEnum
from typing import Iterator, Protocol

from .context_window import FittedPrompt
from .errors import ChatError, GenerationError
from .formats import Messages, PromptFormat
from .prompt_tokens import PromptTokens
from .settings import GenerationSettings
from .stopping import REPLACEMENT_CHARACTER, StopStringFilter
from .answer_tokens import TokenLog, TokenStep, fit_to_text


class StopReason(StrEnum):
    EOS = "eos"
    STOP_STRING = "stop string"
    MAX_TOKENS = "max tokens"
    CANCELLED = "cancelled"
    # A server ended the answer and did not say whether at the model's end or at one of our stop strings.
    SERVER_STOP = "eos or stop string (the server's)"


@dataclass
class Stats:
    prompt_tokens: int
    new_tokens: int = 0
    time_to_first_token: float | None = None  # seconds from request to first generated token
    tokens_per_second: float | None = None  # decoding speed after the first token
    stop_reason: StopReason | None = None  # None while the answer runs
    steps: int = 0  # model steps run (one per generated token)
    cached_tokens: int = 0  # prompt tokens reused from the session's cache, not computed again
    estimated: bool = False  # the token counts are estimates (a server that did not report usage)

    def summary(self) -> str:
        about = "~" if self.estimated else ""
        parts = [f"{about}{self.new_tokens} tokens"]
        if self.tokens_per_second:
            parts.append(f"{about}{self.tokens_per_second:.1f} tokens/s")
        if self.time_to_first_token is not None:
            parts.append(f"first token {self.time_to_first_token:.2f} s")
        cached = f" ({self.cached_tokens} cached)" if self.cached_tokens else ""
        parts.append(f"prompt {about}{self.prompt_tokens} tokens{cached}{' (estimates)' if self.estimated else ''}")
        parts.append(f"stop: {self.stop_reason or ''}")
        return " · ".join(parts)


class SessionCache:
    """What a session keeps between its turns for its engine to reuse (the local engine: the keys
    and values of its last turn). Opaque to everyone but the engine that made it."""


class Engine(Protocol):
    name: str  # the model's name
    device: str  # where it runs, in words
    context_window: int  # tokens of prompt plus answer
    window_source: str  # where `context_window` comes from, in words (the model's config, the server, a flag)
    revision: str | None  # the model's exact version where known (a Hub commit), for each answer's provenance
    format: PromptFormat  # how messages become the prompt (and which strings end a turn)

    # What it can do, declared (read-only: a class attribute or a property).
    @property
    def exact_prompt(self) -> bool:
        """True: `prepare` gives the very text and token ids the model gets; False: a server renders its own."""
        ...

    @property
    def shares_steps(self) -> bool:
        """Answers generated at once share each model step (batching), so several may run at once."""
        ...

    @property
    def answers_at_once(self) -> int:
        """How many answers it serves well at once (the /v1 API's limit; more requests wait)."""
        ...

    def prepare(self, messages: Messages, settings: GenerationSettings, continues: bool = False) -> FittedPrompt:
        """The prompt for `messages` (the last one: the new user message), fitted to the context;
        `continues`: the last one is an answer cut short, and the prompt asks for more of it (Continue)."""
        ...

    def render(self, messages: Messages) -> str:
        """The prompt text for `messages`, as the Prompt view shows it."""
        ...

    def prompt_tokens(self, fitted: FittedPrompt, typed: str | None = None) -> PromptTokens | None:
        """`prepare`'s prompt token by token, each in its part (instructions, history, your text ...), for
        the Prompt view; `typed`: what the user typed of the last user message, before a skill wrapped it.
        None where a server tokenizes the prompt itself (`exact_prompt` False)."""
        ...

    def generate(self, fitted: FittedPrompt, settings: GenerationSettings, extra_stop_strings: tuple[str, ...] = (),
                 cache: SessionCache | None = None, tokens: bool = False) -> "Generation":
        """Starts the answer (in the background); iterate the result for its text. `tokens`: record each
        token's probabilities and alternatives too (`Generation.tokens`; see chat/answer_tokens.py)."""
        ...

    def new_cache(self) -> SessionCache | None:
        """A fresh cache for one session (None: this engine keeps nothing between turns)."""
        ...


class Generation(ABC):
    """One answer in progress. Iterate for text deltas; afterwards `stats` and `text` hold the result.

    A worker thread produces text chunks (`_produce`, subclasses); the reader holds back what might
    become a stop string, cuts the answer at one, and keeps the figures. Stop (`cancel`) ends both.

    >>> generation = engine.generate(engine.prepare(messages, settings), settings)  # doctest: +SKIP
    >>> for delta in generation: print(delta, end="")  # doctest: +SKIP
    """

    THREAD_NAME = "generate"
    CLOSE_WAIT_S = 10.0  # how long closing waits for the worker to finish its last step

    def __init__(self, fitted: FittedPrompt, settings: GenerationSettings, stop_strings: tuple[str, ...]):
        self.fitted, self.settings = fitted, settings
        self.text = ""
        self.tokens: TokenLog | None = None  # when recorded: the answer's tokens, once it has ended
        self.stats = Stats(prompt_tokens=fitted.prompt.length, estimated=fitted.prompt.estimated_length is not None)
        self._filter = StopStringFilter(stop_strings)
        self._cancel = threading.Event()
        self._cancelled_by_user = False
        self._error: BaseException | None = None
        self._started = time.perf_counter()
        self._worker = threading.Thread(target=self._run, name=self.THREAD_NAME, daemon=True)

    def _start(self) -> None:
        """Subclasses call this last in `__init__`, once the worker has all it needs."""
        self._worker.start()

    def cancel(self) -> None:
        """Stop: the worker ends at its next step (the model stops computing, not just the display)."""
        self._cancelled_by_user = True
        self._cancel.set()

    def close(self) -> None:
        """Ends the worker (idempotent); called when reading ends for any reason."""
        self._cancel.set()
        if self._worker.is_alive() and threading.current_thread() is not self._worker:
            self._worker.join(self.CLOSE_WAIT_S)

    @property
    def running(self) -> bool:
        return self._worker.is_alive()

    def __iter__(self) -> Iterator[str]:
        try:
            for chunk in self._chunks():
                safe = self._filter.feed(chunk)
                if safe:
                    yield from self._emit(safe)
                if self._filter.stopped:
                    self._cancel.set()  # the stop string is complete: no reason to produce more
                    break
            # A stream cut off by the token limit may end in half a multi-byte character.
            yield from self._emit(self._filter.flush().rstrip(REPLACEMENT_CHARACTER))
        finally:
            self._release()
        if self._error is not None:
            raise self._as_chat_error(self._error)
        self._finish_stats()
        self.tokens = self._token_log(complete_only=False)
        self._finished()

    def tokens_so_far(self) -> list[TokenStep]:
        """While the answer streams: the recorded tokens whose text has reached the reader so far."""
        log = self._token_log(complete_only=True)
        return log.steps if log is not None else []

    def _token_log(self, complete_only: bool) -> TokenLog | None:
        recorded = self._recorded_tokens()
        if recorded is None:
            return None
        steps = fit_to_text(recorded.steps, self.text, strip_start=not self.fitted.continues, complete_only=complete_only)
        return TokenLog(steps, recorded.distributions, recorded.note)

    def _emit(self, text: str) -> Iterator[str]:
        if not self.text and not self.fitted.continues:  # "Assistant: Hi" in a transcript, " Hi" from some servers: the answer is "Hi"
            text = text.lstrip()
        if text:
            self.text += text
            yield text

    def _finish_stats(self) -> None:
        stats = self.stats
        stats.new_tokens, stats.steps = self._token_counts()
        first, last = self._first_and_last_token_times()
        if first is not None:
            stats.time_to_first_token = first - self._started
            if stats.steps > 1 and last is not None and last > first:
                stats.tokens_per_second = (stats.steps - 1) / (last - first)
        if self._cancelled_by_user:
            stats.stop_reason = StopReason.CANCELLED
        elif self._filter.stopped or self._stopped_at_string():
            stats.stop_reason = StopReason.STOP_STRING
        elif self._hit_token_limit():
            stats.stop_reason = StopReason.MAX_TOKENS
        else:
            stats.stop_reason = StopReason.EOS

    # -- what each backend provides ----------------------------------------------------------------

    @abstractmethod
    def _run(self) -> None:
        """The worker: produces the answer's text chunks for `_chunks`; stores any failure in `_error`."""

    @abstractmethod
    def _chunks(self) -> Iterator[str]:
        """The reader's side: text chunks as the worker produces them, until it ends or `_cancel`."""

    @abstractmethod
    def _token_counts(self) -> tuple[int, int]:
        """(tokens generated, model steps run)."""

    @abstractmethod
    def _first_and_last_token_times(self) -> tuple[float | None, float | None]:
        """`time.perf_counter()` at the first and the last generated token (None: none came)."""

    @abstractmethod
    def _hit_token_limit(self) -> bool:
        """The answer ended because it reached its token limit (not the model's own end)."""

    def _recorded_tokens(self) -> TokenLog | None:
        """The tokens recorded so far, with their texts (None: not asked for). Their texts join to the
        text produced, before the reader lost a leading space or cut a stop string off."""
        return None

    def _stopped_at_string(self) -> bool:
        """A stop string ended the answer before this reader saw it (a server that applied it)."""
        return False

    def _release(self) -> None:
        """When reading ends: stop the worker."""
        self.close()

    def empty_answer_error(self) -> GenerationError:
        """What to tell the user when the answer ended before it had any text."""
        return GenerationError(f"the model ended its answer before writing anything (stop: {self.stats.stop_reason}): "
                               "try again, perhaps with a higher temperature or other words")

    def _as_chat_error(self, error: BaseException) -> ChatError:
        return error if isinstance(error, ChatError) else ChatError(f"generation failed: {type(error).__name__}: {error}")

    def _finished(self) -> None:
        """After a complete read (the local engine prefills the next turn here)."""
