"""Fitting a conversation into the model's context window.

When instructions + history + the new message + room for the answer don't fit, the oldest
exchanges go first. The instructions and the current message always stay; a current message
that alone is too long is cut, and the caller is told what happened so the user can be too.

Trimming has hysteresis. Dropping the fewest messages that fit would change the prompt's
beginning at every turn of a long chat, and every prefix cache (a server's, this app's own
per-session KV cache) would be useless from then on: each turn would compute its whole prompt
again. So a trim goes down to a low-water mark (LOW_WATER_SHARE of the prompt's room), and the
following turns keep that same beginning until the room is full again. No state is kept for
this: the cut is replayed from the history itself (`_window_start`), so a chat reloaded from a
file, or sent whole to the /v1 API turn after turn, gets the same cuts.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import accumulate
from typing import Callable, Sequence, TypeVar

from .errors import ChatError
from .formats import Messages, Prompt
from .messages import Message

# Never plan an answer room larger than this share of the context: a 32k max_new_tokens on
# a 2k model would otherwise leave no room for the question.
MAX_ANSWER_SHARE = 0.5
# After a trim the prompt takes at most this share of its room (the window less the answer's room).
LOW_WATER_SHARE = 0.6
# The replay counts each message alone, which can be a token or so off the rendered prompt: it
# trims this share of the room early, so that the prompt it keeps really fits.
ESTIMATE_MARGIN_SHARE = 0.02
TRIM_NOTICE = "\n[… message trimmed to fit the model's context]"
Token = TypeVar("Token")  # a token id, or (for a server's prompt, counted by estimate) a chunk of text


@dataclass(frozen=True)
class FittedPrompt:
    prompt: Prompt
    messages: list[Message]  # what was actually sent
    dropped_messages: int  # older history messages left out
    message_trimmed: bool  # the current message itself was cut
    max_new_tokens: int  # answer room actually left
    continues: bool = False  # the prompt ends inside the last answer, for more of it (Continue)
    wanted: int = 0  # the prompt's tokens before anything was left out or cut
    room: int = 0  # the tokens a prompt may have: the window less the answer's room

    @property
    def notice(self) -> str | None:
        """A sentence for the user when something was left out, else None."""
        parts = [part for part in (self.history_notice, self.message_notice) if part]
        return ("Note: " + "; ".join(parts) + ".") if parts else None

    @property
    def history_notice(self) -> str | None:
        return f"the {self.dropped_messages} oldest messages were left out to fit the model's context" if self.dropped_messages else None

    @property
    def message_notice(self) -> str | None:
        return "your message was too long for the model's context and was cut short" if self.message_trimmed else None


def fit_to_context(
    messages: Messages,
    encode: Callable[[Messages], Prompt],
    tokenize: Callable[[str], Sequence[Token]],
    detokenize: Callable[[Sequence[Token]], str],
    context_window: int,
    max_new_tokens: int,
    continues: bool = False,
) -> FittedPrompt:
    """Drops oldest history (with hysteresis), then trims the last message, until the prompt fits.

    `messages` is [optional system] + history + the current user message (last); with `continues`,
    the last is an answer to go on with, which is never cut (it would no longer be the same answer).
    """
    answer_room = max(1, min(max_new_tokens, int(context_window * MAX_ANSWER_SHARE)))
    budget = context_window - answer_room
    system, history, current = _split(messages)
    whole = encode(messages)
    if whole.length <= budget:  # a chat that fits is sent whole
        return FittedPrompt(whole, list(messages), 0, False, min(max_new_tokens, context_window - whole.length), continues,
                            whole.length, budget)
    start = _window_start(system, history, current, budget, encode, tokenize)
    extra, prompt = _drop_oldest_until_fit(system, history[start:], current, budget, encode)
    dropped = start + extra
    history = history[dropped:]
    candidate = system + history + [current]
    trimmed = prompt.length > budget
    if trimmed and continues:
        raise ChatError("the answer already fills the model's context: it can't go on (Retry makes a shorter one)")
    if trimmed:
        current, prompt = _trim_to_fit(system, current, prompt.length - budget, budget, encode, tokenize, detokenize)
        if prompt.length > budget:
            raise ChatError(
                f"the instructions alone take {prompt.length} tokens of this model's "
                f"{context_window}-token context: shorten them"
            )
        candidate = system + [current]
    room = min(max_new_tokens, context_window - prompt.length)
    return FittedPrompt(prompt, candidate, dropped, trimmed, room, continues, whole.length, budget)


def _split(messages: Messages) -> tuple[list[Message], list[Message], Message]:
    system = [m for m in messages[:1] if m["role"] == "system"]
    return system, list(messages[len(system) : -1]), messages[-1]


def _window_start(system: list[Message], history: list[Message], current: Message, budget: int, encode, tokenize) -> int:
    """How many of the oldest history messages this turn leaves out: the cut a chat sent turn by turn
    has reached by now.

    Replays the chat's turns, counting tokens per message: whenever a turn's prompt would pass the
    high-water mark (its room, less a small margin for the estimate), the oldest whole exchanges go
    until it is under the low-water mark. Earlier turns replay the same way at every later turn, so
    the cut only moves when the kept part outgrows the room again.
    """
    chat = [*history, current]
    per_message, fixed = _template_costs(system, encode, tokenize)
    before = list(accumulate((len(tokenize(m["content"])) + per_message for m in chat), initial=0))  # cost of chat[:i]
    high = budget - max(1, int(budget * ESTIMATE_MARGIN_SHARE))
    low = int(budget * LOW_WATER_SHARE)
    cuts = _exchange_starts(history)
    start, next_cut = 0, 1  # cuts[next_cut] is the next place the kept history may begin
    for turn in (i for i, m in enumerate(chat) if m["role"] == "user"):
        if fixed + before[turn + 1] - before[start] <= high:
            continue
        while next_cut < len(cuts) and cuts[next_cut] <= turn and fixed + before[turn + 1] - before[start] > low:
            start = cuts[next_cut]
            next_cut += 1
    return start


def _template_costs(system: list[Message], encode, tokenize) -> tuple[int, int]:
    """(tokens a message costs beyond its text, tokens the prompt costs beyond its messages), as the
    format renders them: measured on a one- and a three-message chat with the same instructions."""
    probe = "x"
    one = encode([*system, {"role": "user", "content": probe}]).length
    three = encode([*system, *({"role": role, "content": probe} for role in ("user", "assistant", "user"))]).length
    per_message = max(0, round((three - one) / 2) - len(tokenize(probe)))
    return per_message, one - len(tokenize(probe)) - per_message


def _drop_oldest_until_fit(system: list[Message], history: list[Message], current: Message, budget: int, encode) -> tuple[int, Prompt]:
    """(how many of the oldest history messages to leave out, the prompt without them).

    The fewest whole exchanges that make the prompt fit, or all history when nothing does.
    A binary search over the exchange boundaries: a 2,000-message history is rendered about
    a dozen times, not once per exchange dropped (which made long chats quadratic).
    """
    cuts = _exchange_starts(history)  # 0 = drop nothing, ..., len(history) = drop everything
    prompts: dict[int, Prompt] = {}

    def fits(index: int) -> bool:
        prompts[index] = encode(system + history[cuts[index] :] + [current])
        return prompts[index].length <= budget

    low, high = 0, len(cuts) - 1  # answer in [low, high]; dropping everything is the last resort
    if fits(low):
        return 0, prompts[low]
    while high - low > 1:  # invariant: cuts[low] does not fit; cuts[high] fits or is "drop all"
        middle = (low + high) // 2
        if fits(middle):
            high = middle
        else:
            low = middle
    if high not in prompts:
        fits(high)
    return cuts[high], prompts[high]


def _exchange_starts(history: list[Message]) -> list[int]:
    """Where history may be cut: a user message and the answers that follow it go together."""
    return [0, *(i for i, m in enumerate(history) if i > 0 and m["role"] == "user"), len(history)]


def _trim_to_fit(system: list[Message], message: Message, excess: int, budget: int, encode, tokenize, detokenize):
    """Cuts `message` until system + message fit `budget`; (cut message, its prompt).

    Cut text does not re-tokenize to the same count (a cut inside a character, merges at
    the edges), so cut again by the overshoot until it fits or nothing is left.
    """
    ids = tokenize(message["content"])
    keep = max(0, len(ids) - excess - len(tokenize(TRIM_NOTICE)))
    while True:
        # A cut inside a multi-byte character decodes to U+FFFD: drop it rather than send it.
        cut: Message = {**message, "content": detokenize(ids[:keep]).rstrip("\ufffd") + TRIM_NOTICE}
        prompt = encode(system + [cut])
        if prompt.length <= budget or keep == 0:
            return cut, prompt
        keep = max(0, keep - (prompt.length - budget))
