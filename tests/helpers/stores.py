"""Store helpers for tests that stop an app mid-answer."""

from __future__ import annotations

from sqlalchemy import update

from chat.store.schema import messages
from chat.store.rows import MessageStatus
from chat.store.store import STALE_S, Store


def as_if_abandoned(store: Store, seconds: float = STALE_S) -> None:
    """Moves the last write of every streaming answer `seconds` back in time: the store then finds their
    writer gone, as it would after waiting that long (an answer still written is fresh again at its next write)."""
    with store.engine.begin() as connection:
        connection.execute(update(messages).where(messages.c.status == MessageStatus.STREAMING)
                           .values(updated_at=messages.c.updated_at - seconds))
