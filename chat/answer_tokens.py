"""What the model gave each token of an answer: its probability, how sure the model was, the alternatives.

The local engine records, at every step, up to three distributions over the next token:

* `model`: the model's own (the softmax of its logits), what a learner means by "the probabilities";
* `penalized`: after the repetition penalty and the no-repeat rule: what temperature and friends reshape
  (and what /v1 reports as `logprobs`: greedy answers' tokens are then always the top-1);
* `sampled`: after temperature, top-k, top-p and min-p too: the one the token was drawn from.

A server (`--backend openai`) reports one distribution, of its own choosing: `server`.

A `TokenLog` is plain data (no torch): the page's token view, the terminal's `/tokens`, the /v1
API's logprobs and the store all read it. Its tokens' texts join to the answer's text.
"""

from __future__ import annotations

import json
import math
import zlib
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Callable, Sequence

TOKEN_DATA_VERSION = 1
TOP = 20  # alternatives kept per token: the /v1 API's `top_logprobs` limit
RULED_OUT = -9999.0  # OpenAI's logprob for a token that can't be picked (JSON has no -inf)


class DistributionName(StrEnum):
    """Which probabilities: see the module's docstring. (Stored by these values.)"""

    MODEL = "model"
    PENALIZED = "penalized"
    SAMPLED = "sampled"
    SERVER = "server"


MODEL, PENALIZED, SAMPLED, SERVER = DistributionName
DISTRIBUTIONS = (MODEL, PENALIZED, SAMPLED)  # what the local engine records, in the view's order
DESCRIPTIONS = {
    MODEL: "the model's own probabilities (its logits, softmaxed)",
    PENALIZED: "after the repetition penalty (what temperature, top-k and top-p then reshape)",
    SAMPLED: "after temperature, top-k, top-p and min-p: what the token was drawn from",
    SERVER: "as the server reported them",
}
INCOMPLETE = "\ufffd"  # what decoding shows for the first bytes of a character split over tokens
LOOKBACK = 8  # tokens decoded before each one, so that a token's text is what it adds to its neighbours


@dataclass
class Alternative:
    id: int | None  # None: a server's token, known by its text only
    text: str  # what it would add to the answer; a special token (end of turn): its name
    logprob: float  # -inf: ruled out (by top-k, top-p, min-p or the penalty rules)
    special: bool = False  # a control token: it adds no text (the end of the turn, usually)

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)


@dataclass
class Distribution:
    """One distribution at one step: the chosen token's log-probability, the entropy, the likeliest tokens."""

    logprob: float
    entropy: float  # in nats; 0: the model was certain
    top: list[Alternative]  # likeliest first

    @property
    def probability(self) -> float:
        return math.exp(self.logprob)


@dataclass
class TokenStep:
    id: int | None
    text: str  # what this token adds to the answer's text ("" for a special token)
    dists: dict[DistributionName, Distribution]


@dataclass
class TokenLog:
    steps: list[TokenStep] = field(default_factory=list)
    distributions: tuple[DistributionName, ...] = DISTRIBUTIONS  # which ones were recorded, in the view's order
    note: str | None = None  # why there is less than asked (a server that gave no logprobs)

    @property
    def text(self) -> str:
        return "".join(step.text for step in self.steps)

    def shown(self, name: str) -> DistributionName:
        """`name` if recorded, else the first that was (a server's answer has only `server`)."""
        return DistributionName(name) if name in self.distributions else self.distributions[0]

    def __len__(self) -> int:
        return len(self.steps)

    def extended(self, more: "TokenLog") -> "TokenLog":
        """This log, then `more` (a continuation of the same answer)."""
        names = tuple(name for name in self.distributions if name in more.distributions) or more.distributions
        return TokenLog([*self.steps, *more.steps], names, self.note or more.note)

    def to_bytes(self) -> bytes:
        """Compact stored form (zlib-compressed JSON): the store keeps it beside its answer."""
        return zlib.compress(json.dumps(self.to_json(), separators=(",", ":")).encode(), 6)

    @classmethod
    def from_bytes(cls, data: bytes) -> "TokenLog":
        return cls.from_json(json.loads(zlib.decompress(data)))

    def to_json(self) -> dict[str, Any]:
        return {
            "version": TOKEN_DATA_VERSION,
            "distributions": list(self.distributions),
            "note": self.note,
            "steps": [[s.id, s.text, {name: [_number(d.logprob), d.entropy,
                                            [[a.id, a.text, _number(a.logprob), *([1] if a.special else [])] for a in d.top]]
                                      for name, d in s.dists.items()}] for s in self.steps],
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "TokenLog":
        steps = [TokenStep(id_, text, {DistributionName(name): Distribution(_float(lp), entropy, [Alternative(a[0], a[1], _float(a[2]), len(a) > 3) for a in top])
                                       for name, (lp, entropy, top) in dists.items()})
                 for id_, text, dists in data["steps"]]
        return cls(steps, tuple(DistributionName(name) for name in data["distributions"]), data.get("note"))


def _number(value: float) -> float | None:
    return None if value == -math.inf else value  # JSON has no -inf


def _float(value: float | None) -> float:
    return -math.inf if value is None else value


# -- token texts ---------------------------------------------------------------------------------


class TokenTexts:
    """What each token adds to the decoded text of an answer, token by token as they come.

    A token's text is the decoded text of a few tokens before it and itself, less that of the few
    before it: decoding one token alone would lose the space a SentencePiece word starts with. A
    character split over tokens (a multi-byte emoji) belongs to the token that completes it.
    """

    def __init__(self, decode: Callable[[Sequence[int]], str]):
        self.decode = decode
        self.ids: list[int] = []
        self.texts: list[str] = []  # one per settled token
        self._settled = 0  # tokens before this index have their text

    def feed(self, ids: Sequence[int], final: bool = False) -> list[str]:
        """Adds `ids` (the tokens after those fed before); returns the texts of every token settled
        so far. `final`: no more will come (a last incomplete character settles as it is)."""
        self.ids.extend(ids)
        while len(self.texts) < len(self.ids):
            index = len(self.texts)
            start = max(0, self._settled - LOOKBACK)
            before, upto = self.decode(self.ids[start : self._settled]), self.decode(self.ids[start : index + 1])
            if upto.endswith(INCOMPLETE) and not (final and index + 1 == len(self.ids)):
                if index + 1 == len(self.ids):
                    break  # wait for the token that completes it
                self.texts.append("")  # its bytes show with the token that completes the character
                continue
            if not upto.startswith(before):  # a decoder that rewrites what came before: decode from the start
                before, upto = self.decode(self.ids[: self._settled]), self.decode(self.ids[: index + 1])
            self.texts.append(upto[len(before):] if upto.startswith(before) else upto)
            self._settled = index + 1
        return self.texts


def token_texts(decode: Callable[[Sequence[int]], str], ids: Sequence[int]) -> list[str]:
    """What each token adds to `decode(ids)`; joined, they are exactly that text."""
    texts = TokenTexts(decode).feed(ids, final=True)
    if "".join(texts) != decode(ids):  # never seen; the texts must still join to the answer
        texts = _by_prefixes(decode, ids)
    return texts


def _by_prefixes(decode: Callable[[Sequence[int]], str], ids: Sequence[int]) -> list[str]:
    """Each token's text from the decoded prefixes (slow: for a decoder the lookback can't follow)."""
    texts, done = [], ""
    for index in range(len(ids)):
        upto = decode(ids[: index + 1])
        if upto.endswith(INCOMPLETE) and index + 1 < len(ids):
            texts.append("")
            continue
        common = 0
        while common < min(len(done), len(upto)) and done[common] == upto[common]:
            common += 1
        texts.append(upto[common:])  # (a decoder that rewrote earlier text: only what is new)
        done = upto
    return texts


def fit_to_text(steps: list[TokenStep], text: str, strip_start: bool, complete_only: bool = False) -> list[TokenStep]:
    """The steps whose texts make up `text`: the answer as shown, which may have lost its leading
    space and be cut before a stop string. Tokens after its end are left out; the one it ends inside
    keeps its part (`complete_only`: is left out too, as while the answer streams). If the texts do
    not lead to `text` (never seen), the steps are kept as they are, or none with `complete_only`."""
    whole = "".join(step.text for step in steps)
    offset = len(whole) - len(whole.lstrip()) if strip_start else 0
    if whole[offset : offset + len(text)] != text:
        return [] if complete_only else steps
    end, position, fitted = offset + len(text), 0, []
    # After the end: a stop string (its tokens are left out), or the bytes of a character the answer
    # never completed, which the reader drops (those tokens stay, adding no text).
    unfinished = not complete_only and whole[end:].strip(INCOMPLETE) == ""
    for step in steps:
        start, stop = position, position + len(step.text)
        position = stop
        if (start >= end and (step.text or start > end) and not unfinished) or (complete_only and stop > end):
            break
        piece = whole[max(start, offset) : min(stop, end)]
        fitted.append(TokenStep(step.id, piece, step.dists))
    return fitted


# -- what a learner reads -------------------------------------------------------------------------


def percent(probability: float) -> str:
    if probability >= 0.995:
        return f"{probability * 100:.1f}%" if probability < 0.9995 else "100%"
    if probability >= 0.001:
        return f"{probability * 100:.1f}%"
    return "<0.1%" if probability > 0 else "0%"


def visible(text: str) -> str:
    """A token's text as a learner can see it: spaces and line breaks shown, the empty one named."""
    if not text:
        return "∅"
    return text.replace(" ", "␣").replace("\n", "⏎").replace("\t", "⇥")


def label(step: TokenStep, name: DistributionName) -> str:
    """A chosen token as a learner reads it: its text made visible, or, for a control token that adds
    no text (the end of the turn), its name as the step's alternatives give it."""
    if step.text:
        return visible(step.text)
    return next((a.text for a in step.dists[name].top if a.id == step.id and a.id is not None), "∅")
