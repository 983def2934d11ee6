"""What a model is asked: the messages, the settings and the stop strings of one answer, built one way
for the page, the terminal (`ChatSession`) and the /v1 API.

The rules, once: the instructions come first as a system message unless the conversation brings its
own; the skill's settings apply over the defaults and a request's own settings over both; the skill's
stop strings join the request's. A skill wraps the new message (`expand_last`) where it was not wrapped
when it was sent (the session wraps a message when it is taken, and keeps what was typed beside it).

>>> request = model_request(history, "Be brief.", skills.get("💎 Summarize"), defaults)  # doctest: +SKIP
>>> engine.generate(engine.prepare(request.messages, request.settings), request.settings, request.stop_strings)  # doctest: +SKIP
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping, Sequence

from .messages import Message
from .settings import GenerationSettings
from .skills import Skill
from .tree import ChatMessage


@dataclass(frozen=True)
class ModelRequest:
    messages: list[Message]
    settings: GenerationSettings
    stop_strings: tuple[str, ...]


def sent_messages(history: Sequence[ChatMessage]) -> dict[int, ChatMessage]:
    """The messages of a chat's `history` that the model is sent, by their index there: all but failed
    exchanges (an answer that failed, and the question it failed on)."""
    sent = {}
    for index, message in enumerate(history):
        failed = message.get("error") or (message["role"] == "user" and index + 1 < len(history) and history[index + 1].get("error"))
        if not failed:
            sent[index] = message
    return sent


def model_request(history: Sequence[Message], instructions: str, skill: Skill | None, defaults: GenerationSettings,
                  overrides: Mapping[str, Any] | None = None, stop_strings: Sequence[str] = (),
                  expand_last: bool = False) -> ModelRequest:
    """The request for an answer to `history` (raises `SettingsError` for an override out of range)."""
    return ModelRequest(model_messages(history, instructions, skill if expand_last else None),
                        answer_settings(defaults, skill, overrides), answer_stop_strings(skill, stop_strings))


def model_messages(history: Sequence[Message], instructions: str, expand_with: Skill | None = None) -> list[Message]:
    """The instructions (unless `history` begins with its own), then `history` as the model sees it:
    role and content alone; `expand_with`: the last message wrapped in that skill's template."""
    messages: list[Message] = [{"role": m["role"], "content": m["content"]} for m in history]
    if expand_with is not None and messages:
        messages[-1]["content"] = expand_with.expand(messages[-1]["content"])
    if instructions.strip() and not (messages and messages[0]["role"] == "system"):
        messages.insert(0, {"role": "system", "content": instructions})
    return messages


def answer_settings(defaults: GenerationSettings, skill: Skill | None, overrides: Mapping[str, Any] | None = None) -> GenerationSettings:
    """The defaults, then the skill's settings, then the request's own."""
    return defaults.merged(skill.settings if skill else None).merged(overrides)


def answer_stop_strings(skill: Skill | None, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """The skill's stop strings, then `extra` (each once)."""
    return tuple(dict.fromkeys((*(skill.stop if skill else ()), *extra)))
