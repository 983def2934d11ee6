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
from typing import Any

from .messages import EXTRA_KEYS, normalize_messages
from .errors import ConversationError
from .provenance import summary
from .session import INTERRUPTED, ChatSession
from .tree import ConversationTree

FORMAT_NAME = "chat-workbench conversation"
FORMAT_VERSION = 2  # 1 was the plain messages list
MAX_FILE_BYTES = 20 * 1024 * 1024
KEPT_KEYS = ("role", "content", *EXTRA_KEYS, "error", "provenance")


def conversation_document(session: ChatSession) -> dict[str, Any]:
    """The session's whole conversation as this app's JSON file."""
    tree = session.tree
    messages = []
    for message in tree.ordered():
        entry = {"id": message["id"], "parent": tree.parent[message["id"]], **{k: message[k] for k in KEPT_KEYS if k in message}}
        if message.get(INTERRUPTED):
            entry["interrupted"] = True
        messages.append(entry)
    return {
        "format": FORMAT_NAME,
        "version": FORMAT_VERSION,
        "instructions": session.instructions,
        "shown": session.history[-1]["id"] if session.history else None,
        "last_shown": {parent or "": child for parent, child in tree.last_shown_children().items()},
        "messages": messages,
    }


def read_conversation(data: Any, source: str) -> tuple[str | None, ConversationTree, list[dict[str, Any]]]:
    """(instructions or None, the tree, the shown path) from a file's parsed JSON: this app's file, or a
    messages list. Raises ConversationError naming the file and the problem."""
    if isinstance(data, dict) and data.get("format") == FORMAT_NAME:
        return _read_tree(data, source)
    messages = normalize_messages(data, source)
    instructions = messages.pop(0)["content"] if messages and messages[0]["role"] == "system" else None
    tree = ConversationTree()
    parent = None
    for message in messages:
        parent = tree.add(message, parent)["id"]
    return instructions, tree, tree.path_to(parent)


def _read_tree(data: dict[str, Any], source: str) -> tuple[str | None, ConversationTree, list[dict[str, Any]]]:
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
        where = f"{source}, message {number}"
        if message["role"] == "system":
            raise ConversationError(f"{where}: system instructions belong in \"instructions\"")
        parent = item.get("parent")
        if parent is not None and parent not in new_ids:
            raise ConversationError(f"{where}: its parent {parent!r} is not an earlier message")
        if isinstance(item.get("error"), str):
            message["error"] = item["error"]
        if isinstance(item.get("provenance"), dict):
            message["provenance"] = item["provenance"]
        if item.get("interrupted") is True:
            message[INTERRUPTED] = True
        added = tree.add(message, new_ids.get(parent) if parent is not None else None)
        if isinstance(item.get("id"), str):
            new_ids[item["id"]] = added["id"]
    for parent, child in (data.get("last_shown") or {}).items():
        if child in new_ids:
            tree.remember(new_ids.get(parent) if parent else None, new_ids[child])
    shown_in_file = data.get("shown")
    shown = new_ids.get(shown_in_file) if isinstance(shown_in_file, str) else None
    instructions = data.get("instructions")
    return instructions if isinstance(instructions, str) else None, tree, tree.path_to(shown)


def markdown(session: ChatSession, title: str = "Conversation") -> str:
    """The shown conversation as Markdown: each message under its speaker, each answer with how it was made."""
    lines = [f"# {title}", "", f"*{session.engine.name}, {time.strftime('%Y-%m-%d %H:%M')}*", ""]
    if session.instructions.strip():
        lines += ["**System instructions:**", "", _quoted(session.instructions), ""]
    for message in session.history:
        k, n = session.tree.version(message["id"])
        version = f" (version {k} of {n})" if n > 1 else ""
        if message["role"] == "user":
            skill = message.get("skill")
            tag = f" · {skill}" if skill and skill != session.skills.default.name else ""
            lines += [f"## You{tag}{version}", "", message.get("typed", message["content"]), ""]
            continue
        lines += [f"## Assistant{version}", ""]
        if message.get("error"):
            lines += [f"*The answer failed: {message['error']}*", ""]
            continue
        lines += [message["content"], ""]
        if message.get(INTERRUPTED):
            lines += ["*(stopped before the end)*", ""]
        if message.get("provenance"):
            lines += [f"<sub>{summary(message['provenance'])}</sub>", ""]
    return "\n".join(lines).rstrip() + "\n"


def _quoted(text: str) -> str:
    return "\n".join(f"> {line}" for line in text.splitlines())


def load_conversation(path: str | Path) -> Any:
    """A conversation file's content, checked: this app's file with every version (see files.py), or a
    messages list. Raises `ConversationError` naming the file and the problem."""
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


def save_conversation(path: str | Path, conversation: list[dict[str, Any]] | dict[str, Any]) -> Path:
    """Writes a messages list, or this app's file (`files.conversation_document`)."""
    path = Path(path)
    path.write_text(json.dumps(conversation, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
    return path
