"""One answer streaming from an OpenAI-compatible server (`RemoteEngine.generate`), read in a worker thread.

The stream's chunks become the answer's text (stop strings filtered as everywhere), its figures (the
server's usage where it sends it, else estimates) and, when asked, its tokens' probabilities. Every
failure is worded once (remote/errors.py) and reaches the reader.
"""

from __future__ import annotations

import time
from queue import Empty, Queue
from typing import Any, Iterator, Protocol

import openai

from ..answer_tokens import TokenLog
from ..context_window import FittedPrompt
from ..engine import Generation, StopReason
from ..errors import GenerationError
from ..settings import GenerationSettings
from .errors import explain, refused_field
from .logprobs import ASK, ServerTokens
from .servers import ServerInfo

POLL_S = 0.1  # how often a waiting reader checks for Stop


class Served(Protocol):
    """What a generation needs of the engine that started it (a `RemoteEngine`)."""

    base_url: str
    name: str
    timeout_s: float
    server: ServerInfo
    client: openai.OpenAI
    context_window: int
    window_source: str

    def request(self, fitted: FittedPrompt, settings: GenerationSettings, stop_strings: tuple[str, ...],
                tokens: bool = False) -> dict[str, Any]: ...


_END = object()  # the worker's last word on the queue


class RemoteGeneration(Generation):
    """One answer streaming from the server through the `openai` client, read in a worker thread."""

    THREAD_NAME = "remote-generate"
    # The worker closes the stream on the server's next chunk; a stalled server would hold it until
    # the read timeout, and Stop must not wait for that.
    CLOSE_WAIT_S = 1.0

    def __init__(self, engine: Served, fitted: FittedPrompt, settings: GenerationSettings, stop_strings: tuple[str, ...],
                 tokens: bool = False):
        super().__init__(fitted, settings, stop_strings)
        self.engine = engine
        kind = "" if engine.server.kind == "unknown" else f", {engine.server.kind}"
        self._tokens = ServerTokens(f"the model server at {engine.base_url} (model {engine.name!r}{kind})") if tokens else None
        self._queue: Queue = Queue()
        self._first: float | None = None
        self._last: float | None = None
        self._pieces = 0
        self._usage: Any = None
        self._finish_reason: str | None = None
        self._server_stop_string = False
        self._start()

    def _release(self) -> None:
        self._cancel.set()  # not close(): a reader that stops early must not wait for the network

    def _chunks(self) -> Iterator[str]:
        while not self._cancel.is_set():
            try:
                item = self._queue.get(timeout=POLL_S)
            except Empty:
                if not self._worker.is_alive() and self._queue.empty():
                    return
                continue
            if item is _END:
                return
            yield item

    def _run(self) -> None:
        try:
            stream = self._open_stream()
            with stream:  # leaving it closes the connection: that is how the server learns of a Stop
                for chunk in stream:
                    if self._cancel.is_set():
                        break
                    self._take(chunk)
            if not self._cancel.is_set() and self._finish_reason is None:
                self._error = self._unfinished_error()
            elif self._tokens is not None and not self._cancel.is_set():
                self._tokens.end()
        except Exception as error:  # noqa: BLE001 - every failure reaches the reader, worded once
            if not self._cancel.is_set():
                self._error = explain(error, self.engine.base_url, self.engine.name, self.engine.timeout_s)
        finally:
            self._queue.put(_END)

    def _open_stream(self) -> Any:
        request = self.engine.request(self.fitted, self.settings, self._filter.stop_strings, tokens=self._tokens is not None)
        try:
            return self.engine.client.chat.completions.create(**request)
        except openai.BadRequestError as error:
            # A server that can't give logprobs (OpenAI's reasoning models) and says so by naming the
            # field: the answer matters more than its token data. Any other refusal is reported.
            refused = refused_field(error, tuple(ASK))
            if self._tokens is None or refused is None:
                raise
            self._tokens.refused = refused
            return self.engine.client.chat.completions.create(**{k: v for k, v in request.items() if k not in ASK})

    def _recorded_tokens(self) -> TokenLog | None:
        return self._tokens.log() if self._tokens is not None else None

    def _unfinished_error(self) -> GenerationError:
        """The stream ended without saying why: the server failed inside the answer (its log says why)."""
        if not self._pieces:
            return self._overflow_error()
        hint = (" (llama-cpp-python's server ends an answer when another request arrives, unless started with "
                "--interrupt_requests False)" if self.engine.server.kind == "llama-cpp-python" else "")
        return GenerationError(f"the model server at {self.engine.base_url} stopped sending the answer before it "
                               f"ended (no finish reason): its log may say why{hint}")

    def empty_answer_error(self) -> GenerationError:
        # No text and no room (or no reason) is a full context; no text at the model's own end is the model's choice.
        return self._overflow_error() if self._finish_reason in (None, "length") else super().empty_answer_error()

    def _overflow_error(self) -> GenerationError:
        engine = self.engine
        return GenerationError(
            f"the model server at {engine.base_url} sent back an empty answer. Most often the chat has outgrown the "
            f"server's context window (this app counts {engine.context_window:,} tokens: {engine.window_source}): "
            f"start the server with a larger one (llama.cpp: --n_ctx) or set --context-window to the server's size, "
            f"so that long chats are trimmed to fit")

    def _take(self, chunk: Any) -> None:
        if getattr(chunk, "usage", None) is not None:
            self._usage = chunk.usage
        for choice in chunk.choices or ():
            content = getattr(choice.delta, "content", None) if choice.delta else None
            if self._tokens is not None:  # before its text reaches the reader, who looks for its tokens
                self._tokens.take(content or "", getattr(choice, "logprobs", None))
            if content:
                now = time.perf_counter()
                self._first, self._last = self._first or now, now
                self._pieces += 1
                self._queue.put(content)
            if choice.finish_reason:
                self._finish_reason = choice.finish_reason
                # vLLM names the stop string that ended the answer (None for end-of-sequence).
                self._server_stop_string = isinstance(getattr(choice, "stop_reason", None), str)

    def _finish_stats(self) -> None:
        usage = self._usage
        if usage is not None and usage.prompt_tokens and usage.completion_tokens is not None:
            self.stats.prompt_tokens = usage.prompt_tokens  # exact, where the server says
            self.stats.estimated = False
        super()._finish_stats()
        if self.stats.stop_reason is StopReason.EOS and self._filter.stop_strings and self._finish_reason == "stop":
            self.stats.stop_reason = StopReason.SERVER_STOP  # it may have been one of the stop strings we sent

    def _token_counts(self) -> tuple[int, int]:
        # Servers send about one token per chunk (an estimate, marked so); usage, when sent, is exact.
        usage = self._usage
        count = usage.completion_tokens if usage is not None and usage.completion_tokens is not None else self._pieces
        return count, count

    def _first_and_last_token_times(self) -> tuple[float | None, float | None]:
        return self._first, self._last

    def _stopped_at_string(self) -> bool:
        return self._server_stop_string

    def _hit_token_limit(self) -> bool:
        return self._finish_reason == "length"
