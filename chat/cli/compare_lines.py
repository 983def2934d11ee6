"""The terminal's /compare: contenders from the command line, and their answers printed one after another, labelled.

`/compare temperature=0 temperature=1.2` answers the next message twice; one contender alone is compared with the chat
as it is; a contender of several changes is quoted (`/compare "temperature=0 top_k=5" model=NAME`). The answers run at
once (chat/comparing.py); each is printed under its letter and label as it comes, the next once it is complete.
"""

from __future__ import annotations

import shlex
import time
from typing import TextIO

from ..compare import LETTERS, Comparison, Contender, FindSkill, Outcome
from ..comparing import ComparisonRun
from ..errors import ChatError

USAGE = ("/compare CHANGES …  answer the next message with each contender at once, e.g. /compare temperature=0 temperature=1.2 "
         "(one alone: against the chat as it is; quote several changes: \"temperature=0 top_k=5\"; model=NAME, "
         "skill=summarize@2, instructions=\"…\")")
POLL_S = 0.05  # how often a column's growing text is printed on
VERDICTS = {"tie": Outcome.TIE, "bad": Outcome.BOTH_BAD, "both bad": Outcome.BOTH_BAD}


def contenders(text: str, find_skill: FindSkill) -> list[Contender]:
    """The contenders `/compare TEXT` names (ChatError: what can't be taken)."""
    try:
        specs = shlex.split(text)
    except ValueError as error:
        raise ChatError(f"/compare {text}: {error}") from None
    if not specs:
        raise ChatError(USAGE)
    found = [Contender.parse(spec, find_skill) for spec in specs]
    return [Contender(), *found] if len(found) == 1 else found


def heading(comparison: Comparison, index: int) -> str:
    column = comparison.columns[index]
    return f"[{comparison.letter(index)} · {column.label} · changes: {column.changes}]"


def print_answers(run: ComparisonRun, out: TextIO) -> None:
    """Each column under its heading, in order: its text as it comes, then the next (already running alongside)."""
    comparison = run.comparison
    replies = {reply.answer.get("id"): reply for reply in run.replies}
    for index, column in enumerate(comparison.columns):
        reply = replies[column.answer_id]
        out.write(heading(comparison, index) + "\n")
        written = 0
        while True:
            ended = reply.ended.is_set()
            text = reply.answer["content"]
            out.write(text[written:])
            out.flush()
            written = len(text)
            if ended:
                break
            time.sleep(POLL_S)
        if reply.answer.get("error"):
            out.write(f"error: {reply.answer['error']}")
        out.write("\n\n")
    out.flush()


def letter_index(word: str, comparison: Comparison) -> int:
    """The column a letter names ("b" → 1)."""
    letter = word.strip().upper()
    if len(letter) != 1 or letter not in LETTERS[: len(comparison.columns)]:
        raise ChatError(f"name a column: {', '.join(LETTERS[: len(comparison.columns)])}")
    return LETTERS.index(letter)


def verdict(word: str, comparison: Comparison) -> tuple[Outcome, int | None]:
    """`/vote B`, `/vote tie`, `/vote bad`."""
    word = word.strip().lower()
    if word in VERDICTS:
        return VERDICTS[word], None
    return Outcome.WIN, letter_index(word, comparison)

