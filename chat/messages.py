"""The one message format: a list of {"role", "content"} dicts, checked at the boundary.

Gradio may hand content as a list of parts, files may hold anything, API clients send
whatever they like: all of it passes through `normalize_messages`, which returns clean
messages or raises one `ConversationError` saying what is wrong and where.

A user message may carry extra keys: `typed` (what the user typed), `skill` (the skill that
expanded it into `content`), `values` (the skill's variables, as given) and `attached` (the
name of a file attached to it). Other tools ignore them; this app shows `typed`.
(A chat keeps more beside each message: `chat.tree.ChatMessage`.)
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any, Literal, TypedDict

from .errors import ConversationError

Role = Literal["system", "user", "assistant"]
ROLES: tuple[Role, ...] = ("system", "user", "assistant")
EXTRA_KEYS = ("typed", "skill", "values", "attached")


class Message(TypedDict):
    """A message as a model, Gradio's Chatbot and OpenAI's API take it."""

    role: Role
    content: str


class TypedMessage(Message, total=False):
    """A message as files and the messages format carry it: a user message may say what was typed and
    which skill expanded it into `content`."""

    typed: str
    skill: str
    values: dict[str, str]
    attached: str  # the name of the file attached to it (its text is in `typed`: chat/attachments.py)


Messages = list[Message]
MAX_MESSAGES = 2_000  # a conversation longer than this is not a chat, it is an attack or a mistake
_SURROGATE = re.compile("[\ud800-\udfff]")  # half of a UTF-16 pair: JSON can carry one, UTF-8 can't


def is_blank(text: str) -> bool:
    """Nothing a reader could see: whitespace, control and invisible format characters only
    (zero-width spaces, direction marks, a byte-order mark). Such a message has nothing to answer."""
    return all(ch.isspace() or unicodedata.category(ch) in ("Cc", "Cf") for ch in text)


def replace_broken_characters(text: str) -> str:
    """Unpaired surrogates (half a character, as a browser may send after a cut emoji) → U+FFFD.

    The tokenizer can't encode them: left in, one would make every later turn of the chat fail.
    """
    return _SURROGATE.sub("\ufffd", text)


def content_text(content: Any, where: str = "message") -> str:
    """Text of a message content: a string, or a list of text parts (Gradio, OpenAI)."""
    if isinstance(content, str):
        return _checked(content, where)
    if isinstance(content, list):
        texts = []
        for part in content:
            if isinstance(part, str):
                texts.append(part)
            elif isinstance(part, dict) and isinstance(part.get("text"), str):
                texts.append(part["text"])
            elif isinstance(part, dict) and isinstance(part.get("content"), str):
                texts.append(part["content"])
            else:
                raise ConversationError(f"{where}: content parts must be text")
        return _checked("".join(texts), where)
    raise ConversationError(f"{where}: content must be a string, got {type(content).__name__}")


def _checked(text: str, where: str) -> str:
    broken = _SURROGATE.search(text)
    if broken:
        raise ConversationError(
            f"{where}: the text holds half a character ({broken[0].encode('unicode_escape').decode()}, an unpaired surrogate), "
            "which is not valid Unicode"
        )
    return text


def normalize_messages(data: Any, source: str = "conversation") -> list[TypedMessage]:
    """Checks and cleans a messages list; raises `ConversationError` naming the first problem."""
    if isinstance(data, dict) and "messages" in data:
        data = data["messages"]
    if not isinstance(data, list):
        raise ConversationError(f"{source}: expected a list of messages like [{{\"role\": \"user\", \"content\": \"Hi\"}}]")
    if len(data) > MAX_MESSAGES:
        raise ConversationError(f"{source}: {len(data)} messages is more than the {MAX_MESSAGES} allowed")
    messages: list[TypedMessage] = []
    for index, item in enumerate(data, start=1):
        where = f"{source}, message {index}"
        if not isinstance(item, dict):
            raise ConversationError(f"{where}: expected an object with role and content")
        role = item.get("role")
        if role not in ROLES:
            raise ConversationError(f"{where}: role must be one of {', '.join(ROLES)}, got {role!r}")
        if role == "system" and index != 1:
            raise ConversationError(f"{where}: a system message may only come first")
        message: TypedMessage = {"role": role, "content": content_text(item.get("content"), where)}
        if isinstance(item.get("typed"), str):
            message["typed"] = _checked(item["typed"], where)  # it goes to the model again on Retry
        if isinstance(item.get("skill"), str):
            message["skill"] = _checked(item["skill"], where)
        if isinstance(item.get("attached"), str):
            message["attached"] = _checked(item["attached"], where)
        if isinstance(item.get("values"), dict):
            message["values"] = _checked_values(item["values"], where)
        messages.append(message)
    return messages


def _checked_values(values: dict, where: str) -> dict[str, str]:
    if not all(isinstance(name, str) and isinstance(value, str) for name, value in values.items()):
        raise ConversationError(f"{where}: \"values\" must map each variable's name to its text")
    return {_checked(name, where): _checked(value, where) for name, value in values.items()}


def extras(message: Any) -> dict[str, Any]:
    """What a user message carries besides role and content (EXTRA_KEYS), to copy along with it."""
    return {key: message[key] for key in EXTRA_KEYS if key in message}
