"""An answer's tokens as OpenAI's `logprobs`, for /v1/chat/completions with `"logprobs": true`.

The distribution reported is `penalized` (chat/answer_tokens.py): the model's own after the repetition
penalty and the no-repeat rule, before temperature, top-k and top-p reshape it. Those rules are part
of how this answer was written, so a greedy answer's tokens are always the top-1 of its logprobs;
temperature and the rest only change which token is drawn, not the logprobs, as with OpenAI's API. A
server backend (`--backend openai`) records only what its server reported (`server`): that is sent.

>>> content(generation.tokens.steps, top=5)  # doctest: +SKIP
[{"token": "Hello", "logprob": -0.31, "bytes": [72, 101, 108, 108, 111], "top_logprobs": [...]}, ...]
"""

from __future__ import annotations

import math
from typing import Any, Sequence

from ..engine import Generation
from ..answer_tokens import PENALIZED, RULED_OUT, Alternative, Distribution, TokenLog, TokenStep


def whole_answer(log: TokenLog | None, top: int) -> dict[str, Any] | None:
    """A whole answer's `logprobs`; None where nothing was recorded (beam search, a server that gave none)."""
    if log is None or (log.note and not log.steps):
        return None
    return choice_logprobs(sendable(log.steps), top)


def choice_logprobs(steps: Sequence[TokenStep], top: int) -> dict[str, Any]:
    """A choice's `logprobs`: `{"content": [...], "refusal": None}`."""
    return {"content": content(steps, top), "refusal": None}


def content(steps: Sequence[TokenStep], top: int) -> list[dict[str, Any]]:
    """One entry per token, with its `top` likeliest alternatives; the tokens join to the answer's text."""
    entries = []
    for step in steps:
        dist = _reported(step)
        entries.append({**_token(step.text, dist.logprob), "top_logprobs": [_alternative(a) for a in dist.top[:top]]})
    return entries


def sendable(steps: Sequence[TokenStep]) -> list[TokenStep]:
    """`steps` up to the last one that adds text. A token without text of its own is the end of the
    turn (OpenAI reports no such token) or the first bytes of a character: those go with the token
    that completes it, so a stream never sends a token before its text."""
    end = len(steps)
    while end and not steps[end - 1].text:
        end -= 1
    return list(steps[:end])


class TokenFeed:
    """A streaming answer's tokens, chunk by chunk: after each text delta, those whose text has now
    reached the client and were not sent before (`new`); once it has ended, the rest (`rest`).

    `new` reads the generation's progress, so it is called by the thread that iterates it."""

    def __init__(self, generation: Generation):
        self.generation = generation
        self.sent = 0  # tokens handed out so far

    def new(self) -> list[TokenStep]:
        return self._unsent(sendable(self.generation.tokens_so_far()))

    def rest(self) -> list[TokenStep]:
        log = self.generation.tokens
        return self._unsent(sendable(log.steps) if log is not None else [])

    def _unsent(self, steps: list[TokenStep]) -> list[TokenStep]:
        fresh = steps[self.sent:]
        self.sent += len(fresh)
        return fresh


def _reported(step: TokenStep) -> Distribution:
    # A server backend's answer has only the server's distribution.
    return step.dists.get(PENALIZED) or next(iter(step.dists.values()))


def _token(text: str, logprob: float) -> dict[str, Any]:
    return {"token": text, "logprob": logprob if logprob > -math.inf else RULED_OUT, "bytes": list(text.encode())}


def _alternative(alternative: Alternative) -> dict[str, Any]:
    return _token(alternative.text, alternative.logprob)
