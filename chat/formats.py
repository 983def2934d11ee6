"""Prompt formats: messages → the exact text and token ids the model receives.

Two small formats, each carrying its own stop strings (as litgpt's prompt styles do):

* `ChatTemplateFormat` renders with the tokenizer's own chat template, byte-identical to
  `apply_chat_template(messages, tokenize=False, add_generation_prompt=True)`.
* `TranscriptFormat` is for base models without a template: instructions, then
  `User: …` / `Assistant: …` lines, ending in `Assistant:`; it stops at `\\nUser:`.

Both hand back the prompt as *segments*: template text (may hold control tokens) and
message text (never does). Encoding respects that split, so a user who types `<|im_end|>`
sends those characters, not the end-of-turn token.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Protocol, Sequence

from .errors import ChatError
from .messages import Message

Messages = Sequence[Message]  # what a format reads (a chat's own messages carry more: chat.tree.ChatMessage)
Segment = tuple[str, bool]  # (text, is_message_text)

# Stands in for message i while locating messages in a rendered template: private-use
# characters, which no template writes.
_MARK = "\ue000{}\ue001"
_MARK_PATTERN = re.compile("\ue000(\\d+)\ue001")


@dataclass(frozen=True)
class Prompt:
    text: str
    ids: list[int]  # empty where a server tokenizes the prompt itself (then `estimated_length` is set)
    estimated_length: int | None = None  # tokens by estimate, for a prompt with no ids

    @property
    def length(self) -> int:
        """Its length in tokens (exact where there are ids)."""
        return len(self.ids) if self.estimated_length is None else self.estimated_length


class PromptFormat(Protocol):
    name: str
    stop_strings: tuple[str, ...]
    strips_answer_space: bool  # the model answers " Hi" after "Assistant:"; show "Hi"

    def segments(self, messages: Messages, continue_final: bool = False) -> list[Segment]:
        """The prompt for the next answer; `continue_final`: for more of the last message (an answer
        cut short), which then stays open: no end of turn, no new turn."""
        ...


def render(prompt_format: PromptFormat, messages: Messages, continue_final: bool = False) -> str:
    return "".join(text for text, _ in prompt_format.segments(messages, continue_final))


def encode(prompt_format: PromptFormat, tokenizer: Any, messages: Messages, continue_final: bool = False) -> Prompt:
    """The prompt text and its token ids, with message text never turned into control tokens."""
    segments = prompt_format.segments(messages, continue_final)
    text = "".join(part for part, _ in segments)
    add_special = adds_special_tokens(prompt_format)
    ids = _encode_whole_if_safe(tokenizer, segments, text, add_special)
    if ids is None:
        ids = _encode_by_segment(tokenizer, segments, add_special)
    return Prompt(text=text, ids=ids)


def adds_special_tokens(prompt_format: PromptFormat) -> bool:
    """Whether the tokenizer adds its special tokens (a BOS): a template writes its own; a transcript doesn't."""
    return prompt_format.name == "transcript"


class ChatTemplateFormat:
    """The model's own chat template. Stops at the model's EOS ids, which the template uses."""

    name = "chat-template"
    stop_strings: tuple[str, ...] = ()
    strips_answer_space = False

    def __init__(self, tokenizer: Any):
        self.tokenizer = tokenizer

    def segments(self, messages: Messages, continue_final: bool = False) -> list[Segment]:
        plain: list[Message] = [{"role": m["role"], "content": m["content"]} for m in messages]
        text = self._apply(plain, continue_final)
        return self._marked_segments(plain, text, continue_final) or _split_at_contents(text, [m["content"] for m in plain])

    def _marked_segments(self, messages: Messages, text: str, continue_final: bool) -> list[Segment] | None:
        """Renders again with a marker for each content: the markers show where each message sits.

        Searching for the content in the text instead would find `<|im_end|>` typed by a user
        in the template's own `<|im_end|>` before it. None if the template changes the text.
        """
        marked = self._apply([{**m, "content": _MARK.format(i)} for i, m in enumerate(messages)], continue_final)
        segments: list[Segment] = []
        cursor = 0
        for match in _MARK_PATTERN.finditer(marked):
            if int(match[1]) >= len(messages):
                return None
            segments += [(marked[cursor : match.start()], False), (messages[int(match[1])]["content"], True)]
            cursor = match.end()
        segments = [s for s in segments + [(marked[cursor:], False)] if s[0]]
        return segments if "".join(part for part, _ in segments) == text else None

    def _apply(self, messages: Messages, continue_final: bool = False) -> str:
        try:
            return self.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=not continue_final,
                                                      continue_final_message=continue_final)
        except Exception as error:  # jinja raises its own types; templates raise on unsupported roles
            if messages and messages[0]["role"] == "system" and len(messages) > 1:
                # Some templates (older Mistral, Gemma) have no system role: fold it into the first user turn.
                return self._apply(_fold_system(messages), continue_final)
            raise ChatError(f"the model's chat template rejected the conversation: {error}") from None


class TranscriptFormat:
    """A plain transcript for base models, as in the course notebooks (User/Falcon, Me/Bob)."""

    name = "transcript"
    strips_answer_space = True

    def __init__(self, user_name: str = "User", bot_name: str = "Assistant"):
        for label, value in (("user name", user_name), ("bot name", bot_name)):
            if not value.strip() or "\n" in value or ":" in value:
                raise ChatError(f"the {label} must be one line without ':' (got {value!r})")
        self.user_name, self.bot_name = user_name.strip(), bot_name.strip()
        self.stop_strings: tuple[str, ...] = (f"\n{self.user_name}:", f"\n{self.bot_name}:")
        names = "|".join(re.escape(n) for n in (self.user_name, self.bot_name))
        # A line inside a message that starts like a speaker tag would start a fake turn.
        self._speaker_line = re.compile(rf"^(?=\s*(?:{names})\s*:)", re.IGNORECASE | re.MULTILINE)

    def segments(self, messages: Messages, continue_final: bool = False) -> list[Segment]:
        segments: list[Segment] = []
        for message in messages:
            if message["role"] == "system":
                if message["content"].strip():
                    segments += [(message["content"].strip(), True), ("\n", False)]
                continue
            name = self.user_name if message["role"] == "user" else self.bot_name
            segments += [(f"{name}: ", False), (self.escape(message["content"]), True), ("\n", False)]
        if continue_final and messages and messages[-1]["role"] == "assistant":
            return segments[:-1]  # "Assistant: the answer so far" and the model goes on
        segments.append((f"{self.bot_name}:", False))
        return segments

    def escape(self, text: str) -> str:
        """Indents lines that look like `User:`/`Assistant:` so they stay part of this message."""
        return self._speaker_line.sub(" ", text.replace("\r\n", "\n").replace("\r", "\n"))


FORMATS = ("auto", "chat-template", "transcript")


def choose_format(tokenizer: Any, name: str = "auto", user_name: str = "User", bot_name: str = "Assistant") -> PromptFormat:
    """The tokenizer's chat template when it has one (or when asked), else a transcript."""
    if name not in FORMATS:
        raise ChatError(f"unknown prompt format {name!r}; choose one of {', '.join(FORMATS)}")
    if name == "chat-template" or (name == "auto" and getattr(tokenizer, "chat_template", None)):
        if not getattr(tokenizer, "chat_template", None):
            raise ChatError("this model's tokenizer has no chat template; use --format transcript")
        return ChatTemplateFormat(tokenizer)
    return TranscriptFormat(user_name, bot_name)


def _fold_system(messages: Messages) -> list[Message]:
    system, first, *rest = messages
    if first["role"] != "user":
        return [{"role": "user", "content": system["content"]}, first, *rest]
    merged: Message = {"role": "user", "content": f"{system['content']}\n\n{first['content']}"}
    return [merged, *rest]


def _split_at_contents(text: str, contents: list[str]) -> list[Segment]:
    """Marks where each message's text sits in the rendered template (in order)."""
    segments: list[Segment] = []
    cursor = 0
    for content in contents:
        at = text.find(content, cursor) if content else -1
        if at < 0:  # the template changed the text (e.g. trimmed it); leave it as template text
            continue
        segments += [(text[cursor:at], False), (content, True)]
        cursor = at + len(content)
    segments.append((text[cursor:], False))
    return [s for s in segments if s[0]]


def control_token_ids(tokenizer: Any) -> set[int]:
    """The ids of the tokenizer's control tokens: its special tokens and added tokens marked special."""
    ids = set(getattr(tokenizer, "all_special_ids", []) or [])
    for token_id, token in (getattr(tokenizer, "added_tokens_decoder", {}) or {}).items():
        if getattr(token, "special", False):
            ids.add(token_id)
    return ids


def _encode_whole_if_safe(tokenizer: Any, segments: list[Segment], text: str, add_special: bool) -> list[int] | None:
    """Whole-text ids (the canonical tokenization) unless a control token came from message text."""
    try:
        encoded = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
        return None
    spans, start = [], 0
    for part, is_message in segments:
        if is_message:
            spans.append((start, start + len(part)))
        start += len(part)
    control = control_token_ids(tokenizer)
    for token_id, (begin, end) in zip(encoded["input_ids"], encoded["offset_mapping"]):
        if token_id in control and end > begin and any(b < end and begin < e for b, e in spans):
            return None
    return list(encoded["input_ids"])


def _encode_by_segment(tokenizer: Any, segments: list[Segment], add_special: bool) -> list[int]:
    ids: list[int] = []
    for index, (part, is_message) in enumerate(segments):
        ids += tokenizer(
            part,
            add_special_tokens=add_special and index == 0,
            split_special_tokens=is_message,  # message text: `<|im_end|>` is just characters
        )["input_ids"]
    return ids
