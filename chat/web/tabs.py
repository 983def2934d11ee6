"""The sessions of one running app, one per browser tab, looked up by a small key.

`gr.State` deep-copies its values in places, and a session holds the engine (the model):
so the State holds only a key, and this store, owned by the app (not a global), holds the
sessions. Closing a tab drops its session; beyond `max_sessions` the least recently used go.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from typing import Callable, Iterator

from ..session import ChatSession

MAX_SESSIONS = 500  # open tabs kept at once; each holds its history and its KV cache


def new_session_key() -> str:
    return uuid.uuid4().hex


class SessionStore:
    def __init__(self, factory: Callable[[], ChatSession], max_sessions: int = MAX_SESSIONS):
        self._factory, self._max = factory, max_sessions
        self._sessions: OrderedDict[str, ChatSession] = OrderedDict()
        self._turns: dict[str, threading.Lock] = {}  # per session: one request changes it at a time
        self._lock = threading.Lock()

    def get(self, key: str) -> ChatSession:
        """The session for `key`, created on first use; marks it recently used."""
        with self._lock:
            session = self._sessions.get(key)
            if session is None:
                session = self._sessions[key] = self._factory()
                self._turns[key] = threading.Lock()
            self._sessions.move_to_end(key)
            evicted = [self._sessions.popitem(last=False) for _ in range(len(self._sessions) - self._max)]
            for old_key, _ in evicted:
                self._turns.pop(old_key, None)
        for _, old in evicted:
            old.stop()
        return session

    @contextmanager
    def turn(self, key: str) -> Iterator[ChatSession]:
        """The session for `key`, changed by this block alone.

        A session is not thread-safe, and one tab can have two requests in flight (Send clicked
        twice, Clear while a Send starts): without this, both could add their message first and
        then both answer, leaving two user turns in a row.
        """
        session = self.get(key)
        with self._lock:
            lock = self._turns.setdefault(key, threading.Lock())
        with lock:
            yield session

    def drop(self, key: str) -> None:
        """Forgets a session (its tab closed), stopping any answer it is generating."""
        with self._lock:
            session = self._sessions.pop(key, None)
            self._turns.pop(key, None)
        if session is not None:
            session.stop()

    def __len__(self) -> int:
        return len(self._sessions)
