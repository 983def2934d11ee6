"""What the conversation store hands out and takes: its rows as plain typed data (chat/store/store.py
queries them). A message is the plain message dict of the rest of the app, with its `id` and `status`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, NotRequired, TypedDict

from ..errors import StoreError
from ..messages import Role
from ..markup import NUL_SHOWN_AS  # (PostgreSQL text can't hold NUL: both databases store it so)
from ..tree import path_ids


class MessageStatus(StrEnum):
    COMPLETE = "complete"
    STREAMING = "streaming"  # being written; found so after a crash, it becomes INTERRUPTED
    INTERRUPTED = "interrupted"  # stopped before it ended (Stop, a crash): what came is kept
    FAILED = "failed"  # generation failed: `error` says why


class StoredMessage(TypedDict):
    """A message as the store keeps it: plain data (its provenance as the JSON document it is stored as)."""

    id: str
    role: Role
    content: str  # what the model saw (a user message after its skill's template)
    status: MessageStatus
    typed: NotRequired[str]  # what the user typed, where a skill expanded it
    skill: NotRequired[str]
    values: NotRequired[dict[str, str]]  # its skill's variables' values
    attached: NotRequired[str]  # the name of a file attached to it
    error: NotRequired[str]  # a failed answer: why
    provenance: NotRequired[dict[str, Any]]  # an answer: how it was made (chat.provenance.Provenance.to_json)
    comparison: NotRequired[dict[str, Any]]  # a message answered side by side (chat.compare.Comparison.to_json)
    parent_id: NotRequired[str | None]  # the message it follows (None: the first)
    shown_at: NotRequired[float]  # when it was last on the shown path


def no_such_chat() -> StoreError:
    """What an owner hears of a chat id that isn't theirs, or is gone: the same, so an id reveals nothing."""
    return StoreError("no such chat (it was deleted, or belongs to someone else)")


@dataclass(frozen=True)
class ChatSummary:
    id: str
    title: str
    updated_at: float
    model: str | None = None  # the model it answers with (None: the app's default)


@dataclass
class StoredChat:
    id: str
    title: str
    instructions: str
    skill: str | None
    settings: dict[str, Any]
    # Every version of every message (each with its `parent_id` and `shown_at`), in the order made.
    all_messages: list[StoredMessage] = field(default_factory=list)
    shown_leaf: str | None = None
    model: str | None = None  # the model it answers with (None: the app's default)

    @property
    def messages(self) -> list[StoredMessage]:
        """The shown path, first to last."""
        by_id = {message["id"]: message for message in self.all_messages}
        return [by_id[message_id] for message_id in path_ids(self.shown_leaf, {m["id"]: m.get("parent_id") for m in self.all_messages})]




def storable(text: str | None) -> str | None:
    """`text` as both databases can store it (the one change: NUL characters become ␀)."""
    return text.replace("\x00", NUL_SHOWN_AS) if text and "\x00" in text else text


def stored_message(row: Any, stale_after_s: float) -> StoredMessage:
    """A `messages` row as the store gives it; streaming but not written for `stale_after_s`: interrupted."""
    status = row["status"]
    if status == MessageStatus.STREAMING and row["updated_at"] < time.time() - stale_after_s:
        status = MessageStatus.INTERRUPTED  # its writer is gone
    message: StoredMessage = {"id": row["id"], "role": row["role"], "content": row["content"], "status": MessageStatus(status),
                              "parent_id": row["parent_id"], "shown_at": row["shown_at"] or row["created_at"]}
    if row["typed"] is not None:
        message["typed"] = row["typed"]
    if row["skill"] is not None:
        message["skill"] = row["skill"]
    if isinstance(row["skill_values"], dict):
        message["values"] = row["skill_values"]
    if row["attached"] is not None:
        message["attached"] = row["attached"]
    if row["error"] is not None:
        message["error"] = row["error"]
    if row["provenance"] is not None:
        message["provenance"] = row["provenance"]
    if isinstance(row["comparison"], dict):
        message["comparison"] = row["comparison"]
    return message
