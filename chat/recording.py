"""Where a conversation is written as it happens, seen from the session: the `ConversationRecord` seam
(the store's `chat.store.record.ChatRecord` is one), and each answer's token data kept beside it.

The session and its answers tell their record what changed; they never know what stores it. So the
core depends on this declaration, and the store depends on the core: imports point one way.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Protocol, Sequence

from .answer_tokens import TokenLog
from .settings import GenerationSettings
from .tree import ChatMessage

TOKEN_LOGS_KEPT = 16  # answers' token data held in memory per session, where the record keeps all (a few MB each)


class ConversationRecord(Protocol):
    """One conversation's record: told of each change, in the order it happens."""

    chat_id: str  # the conversation it writes (the store's id)

    def added(self, message: ChatMessage, parent: ChatMessage | None) -> None:
        """`message` joined the chat after `parent` (an answer: still empty, about to stream)."""
        ...

    def streaming(self, answer: ChatMessage) -> None:
        """The answer's text so far (called per piece: the record decides how often it writes)."""
        ...

    def ended(self, answer: ChatMessage) -> None:
        """The answer is complete, stopped or failed: its text, status and provenance as they are now."""
        ...

    def compared(self, question: ChatMessage) -> None:
        """The message was compared (chat/compare.py), or its comparison changed: voted on, gone on from."""
        ...

    def tokens(self, answer: ChatMessage, log: TokenLog) -> None:
        """The answer's token data, once it has ended."""
        ...

    def stored_tokens(self, message_id: str) -> TokenLog | None:
        """An answer's token data, if it was recorded."""
        ...

    def shown(self, history: Sequence[ChatMessage]) -> None:
        """The chat now shows `history` (a version switch, Undo, Clear, Retry: nothing is deleted)."""
        ...

    def settings(self, instructions: str, skill: str | None, settings: GenerationSettings) -> None:
        """What the chat uses now, for the next time it is opened."""
        ...

    def model(self, name: str) -> None:
        """The chat answers with the model `name` from now on."""
        ...


class TokenLogs:
    """Each answer's token data, by answer id: the latest in memory, every one in the record (read from it
    the first time it is asked for)."""

    def __init__(self, record: ConversationRecord | None, kept: int = TOKEN_LOGS_KEPT):
        self.record, self.kept = record, kept
        self._logs: OrderedDict[str, TokenLog] = OrderedDict()  # oldest first

    def of(self, message: ChatMessage) -> TokenLog | None:
        """The answer's token data, if it was recorded."""
        message_id = message.get("id")
        if message_id is None:
            return None
        if message_id not in self._logs and self.record is not None:
            stored = self.record.stored_tokens(message_id)
            if stored is not None:
                self._logs[message_id] = stored
        return self._logs.get(message_id)

    def keep(self, answer: ChatMessage, log: TokenLog) -> None:
        self._logs.pop(answer["id"], None)
        self._logs[answer["id"]] = log
        if self.record is not None:
            self.record.tokens(answer, log)
            while len(self._logs) > self.kept:  # the record has them: memory keeps the latest
                self._logs.popitem(last=False)
