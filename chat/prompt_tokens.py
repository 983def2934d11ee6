"""The prompt as the model gets it, token by token: each token's id, its text, whether it is a control
token, and which part of the prompt it belongs to.

The parts: the system instructions, the history, the chat template's own scaffolding (role markers,
control tokens), the skill's wrapper around what the user typed, the user's own text, and the
generation prompt that asks for the answer (`<|im_start|>assistant\\n`, `Assistant:`); a Continue
prompt ends in the answer so far instead.

Parts are character spans of the prompt text, found from the format's segments (which say where each
message sits); tokens are character spans too, from the tokenizer's offsets. A token spanning two
parts goes to the one holding most of its characters. The tokens are always the prompt's own ids:
the view shows exactly what the model got, never a fresh tokenization of the text.

Only engines that tokenize the prompt themselves (the local one) can say this; a server tokenizes
what it is sent. No torch here: the tokenizer is used only through its Python interface.

>>> tokens = read_prompt(fitted, engine.format, engine.tokenizer, typed="Guten Tag")  # doctest: +SKIP
>>> print(as_text(tokens))  # doctest: +SKIP
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import StrEnum
from itertools import islice
from typing import Any, Sequence

from .answer_tokens import token_texts, visible
from .context_window import TRIM_NOTICE, FittedPrompt
from .formats import PromptFormat, Segment, adds_special_tokens, control_token_ids
from .messages import Message


class PromptPart(StrEnum):
    """The part of the prompt a token belongs to (the value: its name in the legend), in the legend's order."""

    INSTRUCTIONS = "instructions"
    HISTORY = "history"
    TEMPLATE = "template"
    SKILL_TEMPLATE = "skill template"
    YOUR_TEXT = "your text"
    GENERATION_PROMPT = "generation prompt"
    ANSWER_SO_FAR = "answer so far"


INSTRUCTIONS, HISTORY, TEMPLATE, SKILL_TEMPLATE, YOUR_TEXT, GENERATION_PROMPT, ANSWER_SO_FAR = PromptPart
PARTS = tuple(PromptPart)
Span = tuple[int, int, PromptPart]  # (start, end, part): characters of the prompt text


@dataclass(frozen=True)
class PromptToken:
    id: int
    text: str  # the prompt characters it stands for; all of them joined are the prompt text
    special: bool  # a control token (<|im_start|>, <|im_end|>, a BOS), not text
    part: PromptPart
    name: str = ""  # shown where it stands for no text: a BOS the tokenizer adds, a byte of a split character

    @property
    def piece(self) -> str:
        """The token as a learner can read it: spaces and line breaks visible, else its name."""
        return visible(self.text) if self.text else (self.name or "∅")


@dataclass(frozen=True)
class PromptTokens:
    tokens: tuple[PromptToken, ...]
    dropped_messages: int = 0  # the oldest history messages trimming left out
    message_trimmed: bool = False  # the last message itself was cut short to fit

    @property
    def counts(self) -> dict[PromptPart, int]:
        """Tokens per part, in PARTS order, parts with none left out."""
        counted = Counter(token.part for token in self.tokens)
        return {part: counted[part] for part in PARTS if counted[part]}

    @property
    def left_out(self) -> str | None:
        """A sentence on what trimming left out of the prompt, None when nothing was."""
        parts = []
        if self.dropped_messages:
            parts.append(f"the {self.dropped_messages} oldest message{'s' if self.dropped_messages > 1 else ''} of the history")
        if self.message_trimmed:
            parts.append("the end of your message (cut short)")
        return ("Left out to fit the model's context: " + "; ".join(parts) + ".") if parts else None


def read_prompt(fitted: FittedPrompt, prompt_format: PromptFormat, tokenizer: Any, typed: str | None = None) -> PromptTokens:
    """`fitted`'s prompt token by token. `typed`: what the user typed of the last user message, which a
    skill's template wraps (None: all of that message counts as the user's own text)."""
    text, ids = fitted.prompt.text, list(fitted.prompt.ids)
    segments = prompt_format.segments(fitted.messages, fitted.continues)
    if "".join(part for part, _ in segments) != text:  # never seen: then the prompt is one plain part
        segments = [(text, False)]
    texts = _token_texts(tokenizer, segments, ids, adds_special_tokens(prompt_format))
    start = _generation_prompt_start(tokenizer, prompt_format, fitted, segments)
    spans = part_spans(segments, fitted.messages, typed, fitted.continues, start)
    control = control_token_ids(tokenizer)
    tokens, cursor, next_span = [], 0, 0
    for token_id, token_text in zip(ids, texts):
        end = cursor + len(token_text)
        while next_span < len(spans) and spans[next_span][1] <= cursor:
            next_span += 1
        special = token_id in control
        name = "" if token_text else tokenizer.decode([token_id])
        tokens.append(PromptToken(token_id, token_text, special, _part_of(cursor, end, special, spans, next_span), name))
        cursor = end
    return PromptTokens(tuple(tokens), fitted.dropped_messages, fitted.message_trimmed)


def as_text(tokens: PromptTokens) -> str:
    """For the terminal: the tokens as `piece|id` (control tokens in ⟨ ⟩), a block per run of one part,
    a line break after each token that holds one; then tokens per part and what was left out."""
    lines: list[str] = []
    run: list[str] = []
    for index, token in enumerate(tokens.tokens):
        if index == 0 or token.part != tokens.tokens[index - 1].part:
            _flush(run, lines)
            lines.append(f"[{token.part}]")
        run.append(f"⟨{token.piece}⟩|{token.id}" if token.special else f"{token.piece}|{token.id}")
        if "\n" in token.text:
            _flush(run, lines)
    _flush(run, lines)
    counts = " · ".join(f"{part} {count}" for part, count in tokens.counts.items())
    lines.append(f"{len(tokens.tokens)} tokens: {counts}")
    return "\n".join(lines + ([tokens.left_out] if tokens.left_out else []))


def _flush(run: list[str], lines: list[str]) -> None:
    if run:
        lines.append("  " + " ".join(run))
        run.clear()


# -- which characters each token stands for ------------------------------------------------------------


def _token_texts(tokenizer: Any, segments: list[Segment], ids: list[int], add_special: bool) -> list[str]:
    """The prompt characters each of `ids` stands for (joined: the prompt text)."""
    text = "".join(part for part, _ in segments)
    offsets = _offsets(tokenizer, segments, ids, add_special)
    if offsets is None:  # a slow tokenizer has no offsets: decode instead (each token's share of the text)
        return token_texts(lambda some: tokenizer.decode(list(some), skip_special_tokens=False), ids)
    return texts_from_offsets(text, offsets)


def _offsets(tokenizer: Any, segments: list[Segment], ids: list[int], add_special: bool) -> list[tuple[int, int]] | None:
    """Each token's (start, end) in the prompt text, from tokenizing it again as `formats.encode` did:
    whole, or segment by segment where a message held a control token's text. None unless that gives
    the very same ids."""
    text = "".join(part for part, _ in segments)
    try:
        whole = tokenizer(text, add_special_tokens=add_special, return_offsets_mapping=True)
    except (NotImplementedError, TypeError, ValueError):  # slow tokenizers have no offsets
        return None
    if list(whole["input_ids"]) == ids:
        return [(start, end) for start, end in whole["offset_mapping"]]
    found: list[int] = []
    offsets: list[tuple[int, int]] = []
    at = 0
    for index, (part, is_message) in enumerate(segments):
        encoded = tokenizer(part, add_special_tokens=add_special and index == 0, split_special_tokens=is_message,
                            return_offsets_mapping=True)
        found += encoded["input_ids"]
        offsets += [(at + start, at + end) for start, end in encoded["offset_mapping"]]
        at += len(part)
    return offsets if found == ids else None


def texts_from_offsets(text: str, offsets: Sequence[tuple[int, int]]) -> list[str]:
    """Cuts `text` at the tokens' offsets so that every character goes to exactly one token.

    Offsets may overlap (the bytes of one emoji split over two tokens: the character goes to the
    token that completes it) or leave gaps (tokenizers that trim spaces off their offsets: a gap goes
    to the token after it); a token the tokenizer adds (a BOS) covers no text.
    """
    starts = [start for start, end in offsets if end > start]
    texts, cursor, later = [], 0, 0
    for start, end in offsets:
        if end > start:
            later += 1
        following = starts[later] if later < len(starts) else len(text)
        stop = max(cursor, min(end, following))
        texts.append(text[cursor:stop])
        cursor = stop
    if texts:
        texts[-1] += text[cursor:]
    return texts


# -- which part each character belongs to -------------------------------------------------------------


def part_spans(segments: list[Segment], messages: Sequence[Message], typed: str | None, continues: bool,
               generation_start: int) -> list[Span]:
    """The prompt's parts as character spans, in order, covering the whole text."""
    owners = _owners(segments, messages)
    last_user = max((i for i, m in enumerate(messages) if m["role"] == "user"), default=None)
    spans: list[Span] = []
    start = 0
    for (text, is_message), owner in zip(segments, owners):
        end = start + len(text)
        if owner is None:
            spans += _template_spans(start, end, generation_start)
        elif owner == last_user:
            spans += _user_spans(text, start, typed)
        else:
            spans.append((start, end, _message_part(messages, owner, continues)))
        start = end
    return spans


def _template_spans(start: int, end: int, generation_start: int) -> list[Span]:
    """Template text: the template's scaffolding, up to where the generation prompt begins."""
    spans = [(start, min(end, generation_start), TEMPLATE), (max(start, generation_start), end, GENERATION_PROMPT)]
    return [span for span in spans if span[1] > span[0]]


def _owners(segments: list[Segment], messages: Sequence[Message]) -> list[int | None]:
    """The message each segment shows (None: template text). Formats leave out messages with no text
    (a blank system message) and may change the text (a transcript strips and escapes it), so a
    message segment goes to the next message that, like it, is blank or not."""
    owners: list[int | None] = []
    following = 0  # the first message no segment has shown yet
    for text, is_message in segments:
        if not is_message or following >= len(messages):
            owners.append(None)
            continue
        while following < len(messages) - 1 and bool(text.strip()) != bool(messages[following]["content"].strip()):
            following += 1
        owners.append(following)
        following += 1
    return owners


def _message_part(messages: Sequence[Message], index: int, continues: bool) -> PromptPart:
    if index == 0 and messages[0]["role"] == "system":
        return INSTRUCTIONS
    return ANSWER_SO_FAR if continues and index == len(messages) - 1 else HISTORY


def _user_spans(text: str, start: int, typed: str | None) -> list[Span]:
    """The last user message: the user's own text, the skill's template around it, and the note a cut
    leaves (the app's words, like the template's)."""
    notice = len(TRIM_NOTICE) if text.endswith(TRIM_NOTICE) else 0
    body = text[: len(text) - notice]
    found = _locate(body, typed) if typed is not None else (0, len(body))
    begin, end = found or (0, len(body))  # not found (a transcript escaped a line of it): all of it is the user's
    spans = [(start, start + begin, SKILL_TEMPLATE), (start + begin, start + end, YOUR_TEXT),
             (start + end, start + len(body), SKILL_TEMPLATE), (start + len(body), start + len(text), TEMPLATE)]
    return [span for span in spans if span[1] > span[0]]


def _locate(body: str, typed: str) -> tuple[int, int] | None:
    """Where `typed` sits in the message; for a message cut short, where the part of it that was kept
    does (the longest beginning of it found: a binary search, as every shorter beginning is found too)."""
    if not typed:
        return 0, 0  # the user typed nothing: all of the message is the skill's
    low, high = 0, len(typed)  # typed[:low] is found; typed[:high + 1] is not (or is all of it)
    while low < high:
        middle = (low + high + 1) // 2
        low, high = (middle, high) if typed[:middle] in body else (low, middle - 1)
    at = body.rfind(typed[:low])  # a skill's template comes before the text more often than after it
    return (at, at + low) if low else None


def _part_of(start: int, end: int, special: bool, spans: Sequence[Span], first: int) -> PromptPart:
    """The part holding most of the characters from `start` to `end` (`spans[first:]` may hold them), on
    a tie the text's rather than the template's. A token that holds none: a control token the tokenizer
    adds (a BOS) is template; a byte of a character that the next token completes goes with it."""
    if end == start:
        if special:
            return TEMPLATE
        end = start + 1
    best, most = TEMPLATE, 0
    for span_start, span_end, part in islice(spans, first, None):
        if span_start >= end:
            break
        overlap = min(end, span_end) - max(start, span_start)
        if overlap > most or (overlap == most and overlap > 0 and best == TEMPLATE):  # a tie: " I" is the message's
            best, most = part, overlap
    return best


def _generation_prompt_start(tokenizer: Any, prompt_format: PromptFormat, fitted: FittedPrompt, segments: list[Segment]) -> int:
    """Where the generation prompt begins: what a chat template adds for `add_generation_prompt`, or a
    transcript's last line (`Assistant:`). A Continue prompt has none: it ends in the answer itself."""
    text = fitted.prompt.text
    if fitted.continues or segments[-1][1]:
        return len(text)
    if prompt_format.name == "chat-template":
        plain = [{"role": m["role"], "content": m["content"]} for m in fitted.messages]
        try:
            without = tokenizer.apply_chat_template(plain, tokenize=False, add_generation_prompt=False)
        except Exception:  # a template that needed its system message folded in (see formats): the last segment
            without = None
        if isinstance(without, str) and text.startswith(without) and len(text) - len(without) <= len(segments[-1][0]):
            return len(without)
    return len(text) - len(segments[-1][0])
