"""An answer streaming into a session's history: the text as it comes, the stats, the provenance, the record.

`ChatSession` starts one per answer (send, retry, continue, reproduce, an edit); the page, the
terminal and the tests iterate it for the text.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable, Generator, Iterator

from . import provenance
from .context_window import FittedPrompt
from .engine import Generation, Stats, StopReason
from .errors import ChatError

if TYPE_CHECKING:
    from .session import ChatSession

INTERRUPTED = "interrupted"  # an answer's mark: stopped before it ended (a UI note; not saved)


class Reply:
    """An answer streaming into the session's history. Iterate for text deltas.

    An answer may be made of parts: Reproduce of an answer that was continued runs its first part
    and then each continuation (`then`), into the same bubble.
    """

    def __init__(self, session: "ChatSession", generation: Generation, answer: dict[str, Any], made: dict[str, Any],
                 then: tuple[Callable[[], tuple[Generation, dict[str, Any]]], ...] = ()):
        self.session, self.generation, self.answer, self.made = session, generation, answer, made
        self.record = session.record  # the chat this answer belongs to, even if the tab opens another meanwhile
        self.finished = False
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
        return self.stream()

    def stream(self) -> Generator[str, None, None]:
        """The answer's text deltas; closing the generator early stops the model."""
        try:
            record = self.record
            while True:
                for delta in self.generation:
                    self.answer["content"] += delta
                    if record is not None:
                        record.streaming(self.answer)  # (every few seconds, not per token)
                    yield delta
                if not self.answer["content"].strip() and self.stats.stop_reason is not StopReason.CANCELLED:
                    raise self.generation.empty_answer_error()  # never a blank bubble
                if not self._then or self._cancelled or self.stats.stop_reason is StopReason.CANCELLED:
                    break
                provenance.finish_part(self.made, self.stats)
                self._keep_tokens()
                self._before = self.answer["content"]
                self.generation, self.made = self._then.pop(0)()  # the next part, into the same bubble
                self.answer["provenance"]["parts"].append(self.made)
            self.finished = True
        except ChatError as error:
            self.answer["error"] = str(error)  # shown in the chat; the user's message stays for Retry
            raise
        finally:
            if not self.finished and "error" not in self.answer:
                self.generation.close()  # the reader went away (Stop, closed tab): stop the model too
                self.generation.stats.stop_reason = StopReason.CANCELLED
                self.answer[INTERRUPTED] = True
            if self.generation.stats.stop_reason is StopReason.CANCELLED:
                self.answer[INTERRUPTED] = True  # stopped before its end (what came is kept)
            provenance.finish_part(self.made, self.stats)
            if self.record is not None and "id" in self.answer:
                self.record.ended(self.answer, self.answer.get("provenance"))
            self._keep_tokens()
            self.session._done(self)

    def _keep_tokens(self) -> None:
        """The part's token data (if it was recorded, and the part ended), after the answer's earlier parts'."""
        part = self.generation.tokens
        if part is None or "error" in self.answer:
            return
        earlier = self.session.tokens_of(self.answer) if self._before else None
        if self._before and (earlier is None or earlier.text != self._before):
            return  # the answer's beginning has no token data (made with the token view off): no half a view
        self.session.keep_tokens(self.answer, earlier.extended(part) if earlier is not None else part)
