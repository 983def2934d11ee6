"""Where one session's conversation is written as it happens: a chat in the store, for its owner.

The session tells its record what changed (a message taken, an answer streaming, ending, failing;
the shown path cut back by Undo, Clear or Retry); the record writes it. An answer's text is
written every SAVE_EVERY_S while it streams, not per token, and once more when it ends: a crash
loses at most those seconds, and the model never waits for the disk.
"""

from __future__ import annotations

import time
from dataclasses import asdict
from typing import Any, Sequence

from ..answer_tokens import TokenLog
from ..messages import extras
from ..compare import Comparison
from ..provenance import Provenance
from ..settings import GenerationSettings
from ..tree import ChatMessage, ConversationTree
from .rows import MessageStatus, StoredChat, StoredMessage
from .store import Store

SAVE_EVERY_S = 2.0


class ChatRecord:
    """A chat in the store, for its owner: a `chat.recording.ConversationRecord`."""

    def __init__(self, store: Store, owner: str, chat_id: str, save_every_s: float = SAVE_EVERY_S):
        self.store, self.owner, self.chat_id = store, owner, chat_id
        self.save_every_s = save_every_s  # how often a streaming answer's text is written
        self._saved_at: dict[str, float] = {}  # answer id → when its text was last written

    @classmethod
    def new(cls, store: Store, owner: str, instructions: str, settings: GenerationSettings,
            save_every_s: float = SAVE_EVERY_S) -> "ChatRecord":
        return cls(store, owner, store.new_chat(owner, instructions=instructions, settings=asdict(settings)), save_every_s)

    def added(self, message: ChatMessage, parent: ChatMessage | None) -> None:
        """`message` joined the chat after `parent`: written now, and given its id."""
        streaming = message["role"] == "assistant" and not message["content"] and not (message.get("error") or message.get("interrupted"))
        status = MessageStatus.STREAMING if streaming else _status(message)
        message["id"] = self.store.add_message(self.owner, self.chat_id, _stored(message), parent.get("id") if parent else None, status)

    def streaming(self, answer: ChatMessage) -> None:
        """The answer's text so far: its first piece at once, then at most every `save_every_s`."""
        now, last = time.monotonic(), self._saved_at.get(answer["id"])
        if last is None or now - last >= self.save_every_s:  # (the clock may start near 0: no default time)
            self._saved_at[answer["id"]] = now
            self.store.update_message(self.owner, self.chat_id, answer["id"], answer["content"], MessageStatus.STREAMING)

    def ended(self, answer: ChatMessage) -> None:
        """The answer is complete, stopped or failed: its last text, status and provenance."""
        self._saved_at.pop(answer["id"], None)
        provenance = answer["provenance"].to_json() if "provenance" in answer else None
        self.store.update_message(self.owner, self.chat_id, answer["id"], answer["content"], _status(answer),
                                  answer.get("error"), provenance)

    def compared(self, question: ChatMessage) -> None:
        """The message's comparison as it is now (its vote, the column the chat went on with)."""
        self.store.save_comparison(self.owner, self.chat_id, question["id"], question["comparison"].to_json())

    def tokens(self, answer: ChatMessage, log: TokenLog) -> None:
        """The answer's token data (written once it has ended)."""
        self.store.save_tokens(self.owner, self.chat_id, answer["id"], log.to_bytes())

    def stored_tokens(self, message_id: str) -> TokenLog | None:
        data = self.store.tokens(self.owner, self.chat_id, message_id)
        return TokenLog.from_bytes(data) if data is not None else None

    def shown(self, history: Sequence[ChatMessage]) -> None:
        """The chat now shows `history` (a version switch, Undo, Clear, Retry; nothing is deleted)."""
        self.store.show(self.owner, self.chat_id, [message["id"] for message in history if "id" in message])

    def model(self, name: str) -> None:
        """The chat answers with `name` from now on."""
        self.store.save_chat_model(self.owner, self.chat_id, name)

    def settings(self, instructions: str, skill: str | None, settings: GenerationSettings) -> None:
        self.store.save_chat_settings(self.owner, self.chat_id, instructions, skill, asdict(settings))


def _status(message: ChatMessage) -> MessageStatus:
    if message.get("error"):
        return MessageStatus.FAILED
    return MessageStatus.INTERRUPTED if message.get("interrupted") else MessageStatus.COMPLETE


def _stored(message: ChatMessage) -> dict[str, Any]:
    """The message as the store takes it: its provenance as the JSON document it is kept as."""
    stored: dict[str, Any] = {key: value for key, value in message.items() if key not in ("provenance", "comparison")}
    if "provenance" in message:
        stored["provenance"] = message["provenance"].to_json()
    if "comparison" in message:
        stored["comparison"] = message["comparison"].to_json()
    return stored


def tree_of(chat: StoredChat) -> tuple[ConversationTree, list[ChatMessage]]:
    """The stored chat as a session's tree and shown path: every version, interrupted answers marked
    so, failed ones with their error; below each message, the version shown last is shown again."""
    tree = ConversationTree()
    latest: dict[str | None, tuple[float, str]] = {}
    for stored in chat.all_messages:
        parent = stored.get("parent_id") if stored.get("parent_id") in tree.messages else None  # (an orphan starts a branch)
        tree.add(_chat_message(stored), parent)
        shown_at = stored.get("shown_at", 0.0)
        if shown_at >= latest.get(parent, (float("-inf"), ""))[0]:
            latest[parent] = (shown_at, stored["id"])
    for parent, (_, child) in latest.items():
        tree.remember(parent, child)
    leaf = chat.shown_leaf if chat.shown_leaf in tree.messages else None
    return tree, tree.path_to(leaf)


def _chat_message(stored: StoredMessage) -> ChatMessage:
    message: ChatMessage = {"id": stored["id"], "role": stored["role"], "content": stored["content"], **extras(stored)}  # type: ignore[typeddict-item]
    if "error" in stored:
        message["error"] = stored["error"]
    if "provenance" in stored:
        message["provenance"] = Provenance.from_json(stored["provenance"])
    if "comparison" in stored:
        message["comparison"] = Comparison.from_json(stored["comparison"])
    if stored["status"] == MessageStatus.INTERRUPTED:
        message["interrupted"] = True
    return message


def settings_of(chat: StoredChat, fallback: GenerationSettings) -> GenerationSettings:
    """The chat's saved settings (those this release doesn't know, or refuses, keep `fallback`'s)."""
    return GenerationSettings.from_json(chat.settings, fallback)
