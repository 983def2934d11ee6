"""A server's token probabilities as the answer's `TokenLog` (chat/answer_tokens.py), for `--backend openai`.

Asked with `logprobs: true, top_logprobs: 20`, an OpenAI-compatible server sends, with the answer's
text, the tokens that make it up (in the same chunk, or, from this app, in the chunk where the token's
text is complete): each one's text, logprob and likeliest alternatives. Which distribution those come
from is the server's affair (llama.cpp: the model's own; this app: after the repetition penalty), so
they are recorded as one, `server`. The server knows its tokens by their text only: every id is None.

>>> tokens = ServerTokens("the model server at http://gpu-box:8000/v1 (model 'qwen')")  # doctest: +SKIP
>>> tokens.take(chunk.choices[0].delta.content, chunk.choices[0].logprobs)  # doctest: +SKIP
"""

from __future__ import annotations

import codecs
import math
import threading
from typing import Any

from ..answer_tokens import RULED_OUT, SERVER, TOP, Alternative, Distribution, TokenLog, TokenStep

ASK = {"logprobs": True, "top_logprobs": TOP}  # the request fields; llama.cpp, vLLM and OpenAI take 20


class ServerTokens:
    """One answer's tokens as the server streams them: the worker `take`s each chunk and says when the
    stream has `end`ed, the reader reads the `log` so far. `where` names the server and model, for the
    note when it sends none."""

    def __init__(self, where: str):
        self.where = where
        self.refused: str | None = None  # the server's words, when it refused the fields (asked again without)
        self._steps: list[TokenStep] = []
        self._text = ""  # all the text received
        self._ended = False
        # A character split over tokens: its bytes come in pieces, and its text with the token that completes it.
        self._decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._lock = threading.Lock()

    def take(self, text: str, logprobs: Any) -> None:
        """One chunk: its text and its `logprobs` (None: the server sent none with it)."""
        steps = [TokenStep(None, self._token_text(entry), {SERVER: _distribution(entry)})
                 for entry in getattr(logprobs, "content", None) or ()]
        with self._lock:
            self._steps.extend(steps)
            self._text += text

    def end(self) -> None:
        """The whole answer has come: tokens still missing will not."""
        self._ended = True

    def log(self) -> TokenLog:
        with self._lock:
            steps, text = list(self._steps), self._text
        return TokenLog(steps, (SERVER,), self._note(steps, text))

    def _token_text(self, entry: Any) -> str:
        """What the token adds to the answer: its bytes decoded where the server sends them (OpenAI,
        vLLM, llama.cpp), else its text (a piece of a character alone is not one)."""
        raw = getattr(entry, "bytes", None)
        return self._decoder.decode(bytes(raw)) if raw is not None else str(entry.token)

    def _note(self, steps: list[TokenStep], text: str) -> str | None:
        if self.refused is not None:
            return f"{self.where} refused to send token probabilities ({self.refused})"
        if not self._ended or "".join(step.text for step in steps) == text:
            return None
        if not steps:
            return f"{self.where} did not return token probabilities for this answer"
        return f"{self.where} sent tokens that do not make up its answer: they may miss part of it"


def _distribution(entry: Any) -> Distribution:
    top = sorted((Alternative(None, str(a.token), _logprob(a.logprob)) for a in entry.top_logprobs or ()),
                 key=lambda alternative: -alternative.logprob)[:TOP]
    # At least this: the server names only its likeliest tokens, and the others add to the entropy.
    entropy = -sum(a.probability * a.logprob for a in top if a.logprob > -math.inf)
    return Distribution(_logprob(entry.logprob), max(entropy, 0.0), top)


def _logprob(value: float | None) -> float:
    return -math.inf if value is None or value <= RULED_OUT else float(value)
