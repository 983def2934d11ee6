"""One answer of the /v1 API running in its own thread, its text handed to the event loop piece by piece."""

from __future__ import annotations

import asyncio
import threading
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Callable

from starlette.requests import Request

from ..answer_tokens import TokenStep
from ..engine import Generation
from ..errors import ChatError, GenerationError
from .logprobs import TokenFeed

DISCONNECT_POLL_S = 0.25  # how often a non-streaming request checks that its client is still there


_END = object()  # the worker's last word


@dataclass
class Piece:
    """A text delta, and the tokens whose text has now all reached the client (when they are streamed)."""

    text: str
    tokens: list[TokenStep] = field(default_factory=list)


class Pump:
    """Runs one generation in its own thread and hands its deltas to the event loop.

    The thread, not the HTTP response, owns the generation: it always ends it (at its natural
    end or at Stop) and then frees the request's slot, even if the response never started.
    `tokens`: each piece carries its tokens, read by this thread, which alone sees the text and the
    tokens in step.
    """

    def __init__(self, generation: Generation, on_done: Callable[[], None], tokens: bool = False):
        self.generation, self._on_done = generation, on_done
        self.feed = TokenFeed(generation) if tokens else None
        self._loop = asyncio.get_running_loop()
        self._queue: asyncio.Queue = asyncio.Queue()
        self.finished = False
        threading.Thread(target=self._run, name="api-answer", daemon=True).start()

    def stop(self) -> None:
        """Cancels the generation unless it already ended (idempotent)."""
        if not self.finished:
            self.generation.cancel()

    async def pieces(self, request: Request | None = None) -> AsyncIterator[Piece]:
        """Text deltas (with their tokens); with `request`, stops when the client disconnects."""
        getter: asyncio.Future | None = None
        try:
            while True:
                getter = getter or asyncio.ensure_future(self._queue.get())
                done, _ = await asyncio.wait({getter}, timeout=DISCONNECT_POLL_S if request is not None else None)
                if not done:
                    if request is not None and await request.is_disconnected():
                        return
                    continue
                item, getter = getter.result(), None
                if item is _END:
                    return
                if isinstance(item, BaseException):
                    raise item
                yield item
        finally:
            if getter is not None:
                getter.cancel()
            self.stop()

    def _run(self) -> None:
        item: Any = _END
        try:
            for delta in self.generation:
                self._call(self._queue.put_nowait, Piece(delta, self.feed.new() if self.feed is not None else []))
        except ChatError as error:
            item = error
        except Exception as error:  # noqa: BLE001 - reaches the client as an error, never kills the thread silently
            item = GenerationError(f"generation failed: {type(error).__name__}: {error}")
        self.finished = True
        self._call(self._queue.put_nowait, item)
        self._call(self._on_done)

    def _call(self, function: Callable, *args: Any) -> None:
        try:
            self._loop.call_soon_threadsafe(function, *args)
        except RuntimeError:  # the server shut down meanwhile: nobody is listening
            pass
