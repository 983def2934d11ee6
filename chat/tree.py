"""A conversation as a tree: every version of every message kept, one path shown.

Each message points at its parent (the message it follows; None for the first). Alternatives are
siblings: Retry adds an answer beside the old one, an edit adds a question beside the old one, and
neither deletes anything. The chat shows the path from the first message to a leaf. Switching to
another version shows that sibling and, below it, the branch that was last shown there, so going
back to an old branch brings back its whole follow-up as it was.

Messages are `ChatMessage`s: the plain message dicts of the rest of the app (`role`, `content`),
each with its `id`, and what the chat keeps beside it.

>>> tree = ConversationTree()
>>> question = tree.add({"role": "user", "content": "Hi"}, None)
>>> first = tree.add({"role": "assistant", "content": "Hello"}, question["id"])
>>> second = tree.add({"role": "assistant", "content": "Hey"}, question["id"])
>>> tree.version(second["id"])
(2, 2)
>>> [m["content"] for m in tree.path_to(tree.switch(second["id"], -1))]
['Hi', 'Hello']
"""

from __future__ import annotations

import secrets
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

from .messages import TypedMessage
from .provenance import Provenance

if TYPE_CHECKING:
    from .compare import Comparison


class ChatMessage(TypedMessage, total=False):
    """A message of a chat: what the model saw (`role`, `content`; a user's `typed` text and `skill`), and
    what the chat keeps beside it. The store and the files keep all but `notice`."""

    id: str  # its place in the tree: 128 random bits
    error: str  # an answer that failed: why (the chat shows it; the user's message stays, for Retry)
    notice: str  # an answer's note for the user (their message was cut to fit): shown above it
    interrupted: bool  # an answer stopped before its end (Stop, a crash, a message sent meanwhile): what came is kept
    provenance: Provenance  # an answer: how it was made
    comparison: Comparison  # a message answered side by side (chat/compare.py): its columns (its answers) and the vote



def new_id() -> str:
    """128 random bits (ids can't be guessed or enumerated), URL-safe; never starting with "-", which a command
    line would take for a flag (`python -m chat --resume ID`)."""
    while (made := secrets.token_urlsafe(16)).startswith("-"):
        pass
    return made


def path_ids(leaf_id: str | None, parents: Mapping[str, str | None]) -> list[str]:
    """The ids from the first message to `leaf_id`, following `parents` (message id → its parent's id);
    a chain that reaches an id `parents` doesn't know begins there."""
    path = []
    while leaf_id is not None and leaf_id in parents:
        path.append(leaf_id)
        leaf_id = parents[leaf_id]
    return path[::-1]


class ConversationTree:
    def __init__(self) -> None:
        self.messages: dict[str, ChatMessage] = {}
        self.parent: dict[str, str | None] = {}
        self.children: dict[str | None, list[str]] = {}  # in the order they were made
        self._last_shown: dict[str | None, str] = {}  # parent → the child last shown below it

    def __len__(self) -> int:
        return len(self.messages)

    def add(self, message: ChatMessage, parent_id: str | None) -> ChatMessage:
        """Adds `message` (giving it an id if it has none) after `parent_id`; it becomes the one shown there."""
        if "id" not in message:
            message["id"] = new_id()
        self.messages[message["id"]] = message
        self.parent[message["id"]] = parent_id
        self.children.setdefault(parent_id, []).append(message["id"])
        self._last_shown[parent_id] = message["id"]
        return message

    def path_to(self, leaf_id: str | None) -> list[ChatMessage]:
        """The messages from the first to `leaf_id`, following parents."""
        return [self.messages[message_id] for message_id in path_ids(leaf_id, self.parent)]

    def siblings(self, message_id: str) -> list[str]:
        """The versions of the message: it and every other message with its parent, oldest first."""
        return self.children[self.parent[message_id]]

    def version(self, message_id: str) -> tuple[int, int]:
        """(k, n): the message is version k of n."""
        siblings = self.siblings(message_id)
        return siblings.index(message_id) + 1, len(siblings)

    def switch(self, message_id: str, step: int) -> str:
        """The leaf to show when the user steps `step` versions from `message_id` (its branch as last shown)."""
        siblings = self.siblings(message_id)
        target = siblings[max(0, min(len(siblings) - 1, siblings.index(message_id) + step))]
        return self.leaf_below(target)

    def leaf_below(self, message_id: str) -> str:
        """Where the branch from `message_id` ends, following the versions last shown below it."""
        while self.children.get(message_id):
            message_id = self._last_shown.get(message_id) or self.children[message_id][-1]
        return message_id

    def shown(self, path: Iterable[ChatMessage]) -> None:
        """The chat now shows `path`: remembered at each of its messages' parents."""
        for message in path:
            self._last_shown[self.parent[message["id"]]] = message["id"]

    def remember(self, parent_id: str | None, child_id: str) -> None:
        """Restores which child was last shown below `parent_id` (a chat read back from the store or a file)."""
        if child_id in self.children.get(parent_id, []):
            self._last_shown[parent_id] = child_id

    def ordered(self) -> list[ChatMessage]:
        """Every message, each after its parent (depth first, versions in the order they were made)."""
        result: list[ChatMessage] = []
        pending = list(reversed(self.children.get(None, [])))
        while pending:
            message_id = pending.pop()
            result.append(self.messages[message_id])
            pending.extend(reversed(self.children.get(message_id, [])))
        return result

    def last_shown_children(self) -> dict[str | None, str]:
        return dict(self._last_shown)

    def versions(self, path: Sequence[ChatMessage]) -> list[tuple[int, int, int]]:
        """(index, k, n) for each message of `path` (the chat shown) that has other versions: it is version k of n."""
        found = []
        for index, message in enumerate(path):
            k, n = self.version(message["id"])
            if n > 1:
                found.append((index, k, n))
        return found
