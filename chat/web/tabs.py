"""The browser tabs of one running app: each tab's chat session and what only the page shows of it.

`gr.State` deep-copies its values in places, and a session holds the engine (the model): so the
State holds only a key, and `Tabs`, owned by the app (not a global), holds each key's `Tab`.
Closing a tab drops it; beyond `max_tabs` the least recently used go.
"""

from __future__ import annotations

import threading
import uuid
from collections import OrderedDict
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Callable, Iterator

from ..engine import Generation
from ..session import ChatSession

MAX_TABS = 500  # open tabs kept at once; each holds its history and its KV cache


def new_tab_key() -> str:
    return uuid.uuid4().hex


@dataclass
class Tab:
    """One browser tab: its conversation (`session`, as the terminal has one too), and the page's own state."""

    session: ChatSession
    owner: str = ""  # whose chats these are, as the store knows them (a --auth login, or the browser's own id)
    focus: str | None = None  # the id of the message the user clicked in the chat (its versions, its provenance)
    record_tokens: bool = False  # the token view is open: answers record their tokens' probabilities
    token_pick: tuple[str, int] | None = None  # (answer id, token position) clicked in the token view
    last_taken: int = 0  # the number of the page's last message taken (see handlers.post)
    own_key: str = field(default_factory=lambda: f"tab:{new_tab_key()}")  # whose skills, before the page knows whose (or never)
    skills_shown: tuple[str, ...] = ()  # the skills the page's menus list (the timer redraws them when these change)
    deleted_skill: str | None = None  # the id of the skill deleted last (Undo delete)
    trial: Generation | None = None  # the Skills section's Try in progress (its Stop)

    @property
    def skills_owner(self) -> str:
        """Whose skills this tab shows and saves: the chats' owner (a --auth login, the browser's own id); without a
        store, this tab's own (they last until the app stops)."""
        return self.owner or self.own_key

    def focused_index(self) -> int | None:
        """The history index of the message the user picked, if it is still shown."""
        ids = [message["id"] for message in self.session.history]
        return ids.index(self.focus) if self.focus in ids else None

    def picked_answer(self) -> int | None:
        """The history index of the answer the panels show (how it was made, its tokens): the one the user
        picked, or else the last."""
        answers = [index for index, message in enumerate(self.session.history) if message["role"] == "assistant"]
        focused = self.focused_index()
        return focused if focused in answers else (answers[-1] if answers else None)

    def focus_on(self, index: int) -> None:
        """The message at `index` is the one the version buttons and the panels now act on."""
        self.focus = self.session.history[index]["id"]


class Tabs:
    def __init__(self, factory: Callable[[], Tab], max_tabs: int = MAX_TABS):
        self._factory, self._max = factory, max_tabs
        self._tabs: OrderedDict[str, Tab] = OrderedDict()
        self._turns: dict[str, threading.Lock] = {}  # per tab: one request changes it at a time
        self._lock = threading.Lock()

    def get(self, key: str) -> Tab:
        """The tab for `key`, created on first use; marks it recently used."""
        with self._lock:
            tab = self._tabs.get(key)
            if tab is None:
                tab = self._tabs[key] = self._factory()
                self._turns[key] = threading.Lock()
            self._tabs.move_to_end(key)
            evicted = [self._tabs.popitem(last=False) for _ in range(len(self._tabs) - self._max)]
            for old_key, _ in evicted:
                self._turns.pop(old_key, None)
        for _, old in evicted:
            old.session.stop()
        return tab

    @contextmanager
    def turn(self, key: str) -> Iterator[Tab]:
        """The tab for `key`, changed by this block alone.

        A session is not thread-safe, and one tab can have two requests in flight (Send clicked
        twice, Clear while a Send starts): without this, both could add their message first and
        then both answer, leaving two user turns in a row.
        """
        tab = self.get(key)
        with self._lock:
            lock = self._turns.setdefault(key, threading.Lock())
        with lock:
            yield tab

    def drop(self, key: str) -> None:
        """Forgets a tab (closed in the browser), stopping any answer it is generating."""
        with self._lock:
            tab = self._tabs.pop(key, None)
            self._turns.pop(key, None)
        if tab is not None:
            tab.session.stop()

    def __len__(self) -> int:
        return len(self._tabs)
