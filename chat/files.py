"""Conversation files: this app's JSON with every version, plain messages lists, a Markdown export.

The JSON download holds the whole tree: every version of every message, which one is shown, and
each answer's provenance, under a format name and version, so that a later release reads it (and
this one refuses a newer one with a clear line). A plain messages list, as earlier releases wrote
and other tools write, still loads: it is one path. The Markdown export is the shown path, for
reading and handing in.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping, Protocol, Sequence

from .errors import ConversationError
from .messages import EXTRA_KEYS, TypedMessage, extras, normalize_messages
from .compare import Comparison
from .provenance import Provenance
from .tree import ChatMessage, ConversationTree

FORMAT_NAME = "chat-workbench conversation"
FORMAT_VERSION = 2  # 1 was the plain messages list
MAX_FILE_BYTES = 20 * 1024 * 1024
Shown = tuple[str | None, ConversationTree, list[ChatMessage]]  # (instructions or None, every version, the path shown)


class Conversation(Protocol):
    """What a conversation file is written from (a `ChatSession` is one)."""

    @property
    def tree(self) -> ConversationTree:  # every version
        ...

    @property
    def history(self) -> Sequence[ChatMessage]:  # the path shown
        ...

    @property
    def instructions(self) -> str:
        ...


def plain_messages(conversation: Conversation) -> list[TypedMessage]:
    """The shown conversation in the messages format, instructions first: what the user typed and its skill kept,
    not the chat's own notes (errors, notices) nor its versions (the first release's file, and an exchange format)."""
    instructions = conversation.instructions
    messages: list[TypedMessage] = [{"role": "system", "content": instructions}] if instructions else []
    for message in conversation.history:
        plain: TypedMessage = {"role": message["role"], "content": message["content"], **extras(message)}  # type: ignore[typeddict-item]
        messages.append(plain)
    return messages


def conversation_document(conversation: Conversation) -> dict[str, Any]:
    """A whole conversation (every version in its tree, its history shown) as this app's JSON file."""
    tree, history = conversation.tree, conversation.history
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "instructions": conversation.instructions,
        "shown": history[-1]["id"] if history else None,
        "last_shown": {parent or "": child for parent, child in tree.last_shown_children().items()},
        "messages": [{"id": message["id"], "parent": tree.parent[message["id"]], **_entry(message)} for message in tree.ordered()],
    }


def _entry(message: ChatMessage) -> dict[str, Any]:
    """A message as the file keeps it (not the chat's notes for the user, such as a notice)."""
    entry: dict[str, Any] = {"role": message["role"], "content": message["content"], **extras(message)}
    if "error" in message:
        entry["error"] = message["error"]
    if "provenance" in message:
        entry["provenance"] = message["provenance"].to_json()
    if message.get("interrupted"):
        entry["interrupted"] = True
    if "comparison" in message:
        entry["comparison"] = message["comparison"].to_json()
    return entry


def read_conversation(data: Any, source: str) -> Shown:
    """(instructions or None, the tree, the shown path) from a file's parsed JSON: this app's file, or a
    messages list. Raises ConversationError naming the file and the problem."""
    if isinstance(data, dict) and data.get("format") == FORMAT_NAME:
        return _read_tree(data, source)
    messages = normalize_messages(data, source)
    instructions = messages.pop(0)["content"] if messages and messages[0]["role"] == "system" else None
    tree = ConversationTree()
    parent = None
    for message in messages:
        parent = tree.add(_chat_message(message), parent)["id"]
    return instructions, tree, tree.path_to(parent)


def _read_tree(data: dict[str, Any], source: str) -> Shown:
    version = data.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ConversationError(f"{source}: written by a newer release of this app (file version {version!r}; this one "
                                f"reads up to {FORMAT_VERSION}): upgrade the app")
    raw = data.get("messages")
    if not isinstance(raw, list):
        raise ConversationError(f"{source}: \"messages\" must be a list")
    checked = normalize_messages([{k: v for k, v in item.items() if k in ("role", "content", *EXTRA_KEYS)}
                                  if isinstance(item, dict) else item for item in raw], source)
    tree = ConversationTree()
    new_ids: dict[str, str] = {}  # the file's ids → fresh ones (a file's ids are not trusted to be unique)
    for number, (item, message) in enumerate(zip(raw, checked), start=1):
        if message["role"] == "system":
            raise ConversationError(f"{source}, message {number}: system instructions belong in \"instructions\"")
        parent = item.get("parent")
        if parent is not None and parent not in new_ids:
            raise ConversationError(f"{source}, message {number}: its parent {parent!r} is not an earlier message")
        added = tree.add(_chat_message(message, item), new_ids.get(parent) if parent is not None else None)
        if isinstance(item.get("id"), str):
            new_ids[item["id"]] = added["id"]
    for message in tree.messages.values():  # a comparison names its answers by the file's ids
        if "comparison" in message:
            message["comparison"] = message["comparison"].read_from_file(new_ids)
    for parent, child in (data.get("last_shown") or {}).items():
        if child in new_ids:
            tree.remember(new_ids.get(parent) if parent else None, new_ids[child])
    shown = new_ids.get(data["shown"]) if isinstance(data.get("shown"), str) else None
    instructions = data.get("instructions")
    return instructions if isinstance(instructions, str) else None, tree, tree.path_to(shown)


def _chat_message(message: TypedMessage, item: dict[str, Any] | None = None) -> ChatMessage:
    """A checked message of a file, with what the file's entry `item` says beside it (an answer's error,
    provenance, interruption)."""
    chat: ChatMessage = {"role": message["role"], "content": message["content"], **extras(message)}  # type: ignore[typeddict-item]
    item = item or {}
    if isinstance(item.get("error"), str):
        chat["error"] = item["error"]
    if isinstance(item.get("provenance"), dict):
        chat["provenance"] = Provenance.from_json(item["provenance"])
    if item.get("interrupted") is True:
        chat["interrupted"] = True
    if isinstance(item.get("comparison"), dict) and message["role"] == "user":
        chat["comparison"] = Comparison.from_json(item["comparison"])
    return chat


def markdown(conversation: Conversation, model: str, default_skill: str, title: str = "Conversation") -> str:
    """The shown conversation as Markdown: each message under its speaker (a user's skill named, unless it is
    `default_skill`), each answer with how it was made."""
    lines = [f"# {title}", "", f"*{model}, {time.strftime('%Y-%m-%d %H:%M')}*", ""]
    if conversation.instructions.strip():
        lines += ["**System instructions:**", "", _quoted(conversation.instructions), ""]
    for message in conversation.history:
        k, n = conversation.tree.version(message["id"])
        version = f" (version {k} of {n})" if n > 1 else ""
        if message["role"] == "user":
            skill = message.get("skill")
            tag = f" · {skill}" if skill and skill != default_skill else ""
            lines += [f"## You{tag}{version}", "", message.get("typed", message["content"]), ""]
            if "comparison" in message:
                lines += _comparison_lines(conversation.tree, message["comparison"])
        else:
            lines += [f"## Assistant{version}", "", *_answer_lines(message)]
    return "\n".join(lines).rstrip() + "\n"


def _answer_lines(message: ChatMessage, how: bool = True) -> list[str]:
    """An answer's text and, with `how`, how it was made (not under a blind column before the vote: it names it)."""
    if message.get("error"):
        return [f"*The answer failed: {message.get('error')}*", ""]
    lines = [message["content"], ""]
    if message.get("interrupted"):
        lines += ["*(stopped before the end)*", ""]
    if "provenance" in message and how:
        lines += [f"<sub>{message['provenance'].summary()}</sub>", ""]
    return lines


def _comparison_lines(tree: ConversationTree, comparison: Comparison) -> list[str]:
    """A compared message's answers, column by column, and the vote (names only once they showed on the page)."""
    lines = ["### Compared side by side" + (" (blind)" if comparison.blind else ""), ""]
    for index, column in enumerate(comparison.columns):
        answer = tree.messages.get(column.answer_id)
        name = column.label if comparison.revealed else "name hidden until the vote"
        went_on = " · the chat went on with this one" if comparison.continued == index else ""
        lines += [f"#### {comparison.letter(index)} · {name}{went_on}", "",
                  *(_answer_lines(answer, how=comparison.revealed) if answer is not None else ["*(not in this file)*", ""])]
    lines += [f"**Vote:** {comparison.verdict() or 'not judged yet'}", ""]
    return lines


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines())


def load_conversation(path: str | Path) -> Any:
    """A conversation file's content, checked: this app's file with every version, or a messages list. Raises `ConversationError` naming the file and the problem."""
    path = Path(path)
    try:
        if path.stat().st_size > MAX_FILE_BYTES:
            raise ConversationError(f"{path.name}: file is larger than {MAX_FILE_BYTES // 2**20} MiB")
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError) as error:
        raise ConversationError(f"{path.name}: can't read the file ({error})") from None
    except json.JSONDecodeError as error:
        raise ConversationError(f"{path.name}: not JSON (line {error.lineno}: {error.msg})") from None
    if isinstance(data, dict) and data.get("format") == FORMAT_NAME:
        read_conversation(data, path.name)  # checked here, so that the error names the file
        return data
    return normalize_messages(data, path.name)


def save_conversation(path: str | Path, conversation: Sequence[Mapping[str, Any]] | Mapping[str, Any]) -> Path:
    """Writes a messages list, or this app's file (`files.conversation_document`)."""
    path = Path(path)
    path.write_text(json.dumps(conversation, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path
