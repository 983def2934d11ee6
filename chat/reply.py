"""An answer streaming into a chat: the text as it comes, the stats, the provenance, the record.

`ChatSession` starts one per answer (send, retry, continue, reproduce, an edit, a token fork); the page,
the terminal and the tests iterate it for the text. It reports its end to whoever started it through
`on_end`, and writes to the record it was given: it knows nothing of the session.
"""

from __future__ import annotations

import threading
from typing import Callable, Generator, Iterator

from .context_window import FittedPrompt
from .engine import Generation, Stats, StopReason
from .errors import ChatError
from .provenance import Part
from .recording import ConversationRecord, TokenLogs
from .tree import ChatMessage

NextPart = Callable[[], tuple[Generation, Part]]  # starts the next part of an answer (a Continue of it)


class Reply:
    """An answer streaming into its message (`answer`). Iterate for text deltas.

    An answer may be made of parts: Reproduce of an answer that was continued runs its first part
    and then each continuation (`then`), into the same bubble.
    """

    def __init__(self, generation: Generation, answer: ChatMessage, made: Part, record: ConversationRecord | None,
                 token_logs: TokenLogs, on_end: Callable[["Reply"], None], then: tuple[NextPart, ...] = ()):
        self.generation, self.answer, self.made = generation, answer, made
        self.record = record  # the chat this answer belongs to, even if the tab opens another meanwhile
        self.token_logs, self._on_end = token_logs, on_end
        self.finished = False
        self.ended = threading.Event()  # set once it has ended, whoever ended it (its stream, or its stream closed)
        self._stream: Generator[str, None, None] | None = None
        self._then = list(then)
        self._cancelled = False
        self._before = answer["content"]  # the answer's text before this part (a Continue goes on from it)

    @property
    def stats(self) -> Stats:
        return self.generation.stats

    @property
    def fitted(self) -> FittedPrompt:
        return self.generation.fitted

    def cancel(self) -> None:
        self._cancelled = True
        self.generation.cancel()

    def __iter__(self) -> Iterator[str]:
        if self._stream is None:
            self._stream = self.stream()
        return self._stream

    def close(self) -> None:
        """The reader went away: the answer ends where it is (the model stops), whether or not its stream began."""
        if self._stream is not None:
            self._stream.close()
        elif not self.ended.is_set():
            self._stream = _no_pieces()  # (never to begin now)
            try:
                self._end()
            finally:
                self.ended.set()

    def stream(self) -> Generator[str, None, None]:
        """The answer's text deltas; closing the generator early stops the model."""
        try:
            while True:
                yield from self._part()
                if not self._then or self._cancelled or self.stats.stop_reason is StopReason.CANCELLED:
                    break
                self._next_part()
            self.finished = True
        except ChatError as error:
            self.answer["error"] = str(error)  # shown in the chat; the user's message stays for Retry
            raise
        finally:
            try:
                self._end()
            finally:
                self.ended.set()

    def _part(self) -> Iterator[str]:
        for delta in self.generation:
            self.answer["content"] += delta
            if self.record is not None:
                self.record.streaming(self.answer)
            yield delta
        if not self.answer["content"].strip() and self.stats.stop_reason is not StopReason.CANCELLED:
            raise self.generation.empty_answer_error()  # never a blank bubble

    def _next_part(self) -> None:
        """The part ended and another follows, into the same bubble."""
        self.made.finish(self.stats)
        self._keep_tokens()
        self._before = self.answer["content"]
        self.generation, self.made = self._then.pop(0)()
        self.answer["provenance"].parts.append(self.made)

    def _end(self) -> None:
        if not self.finished and "error" not in self.answer:
            self.generation.close()  # the reader went away (Stop, closed tab): stop the model too
            self.generation.stats.stop_reason = StopReason.CANCELLED
        if self.generation.stats.stop_reason is StopReason.CANCELLED:
            self.answer["interrupted"] = True  # stopped before its end (what came is kept)
        self.made.finish(self.stats)
        if self.record is not None and "id" in self.answer:
            self.record.ended(self.answer)
        self._keep_tokens()
        self._on_end(self)

    def _keep_tokens(self) -> None:
        """The part's token data (if it was recorded, and the part ended), after the answer's earlier parts'."""
        part = self.generation.tokens
        if part is None or "error" in self.answer:
            return
        earlier = self.token_logs.of(self.answer) if self._before else None
        if self._before and (earlier is None or earlier.text != self._before):
            return  # the answer's beginning has no token data (made with the token view off): no half a view
        self.token_logs.keep(self.answer, earlier.extended(part) if earlier is not None else part)


def _no_pieces() -> Generator[str, None, None]:
    yield from ()
