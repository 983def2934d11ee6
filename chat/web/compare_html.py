"""What the page shows of a comparison and of the leaderboard, as HTML: pure functions, tested without a browser.

The columns stand side by side, each with its letter, its name (hidden while blind and not judged), what it
changed from the chat, its answer with the words that differ from the other column marked (a word-level diff,
difflib), and its figures: tokens, tokens/s and, where token data was recorded, the answer's mean log-probability
under its own model. The leaderboard is a table with a plot: each contender's rating as a dot on its 95% interval.
"""

from __future__ import annotations

import difflib
import html
import re
from dataclasses import dataclass
from functools import lru_cache

from ..answer_tokens import MODEL, TokenLog
from ..compare import Comparison
from ..leaderboard import Rating
from ..markup import NUL_SHOWN_AS
from ..tree import ChatMessage

_WORDS = re.compile(r"\s+|\w+|[^\w\s]")  # words, runs of space and single marks: a diff of words that keeps the text

CSS = """
.compare .compare-grid { display: grid; gap: 10px; }
.compare .compare-column { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 8px; }
.compare .compare-name { font-weight: 600; margin-bottom: 2px; }
.compare .compare-changes, .compare .compare-figures { font-size: 0.85em; opacity: 0.8; }
.compare .compare-text { white-space: pre-wrap; margin: 6px 0; }
.compare mark.differs { background: rgba(255, 200, 0, 0.45); color: inherit; padding: 0 1px; border-radius: 2px; }
.compare .compare-column.winner { border: 2px solid var(--color-accent); }
.board table { width: 100%; border-collapse: collapse; }
.board td, .board th { padding: 3px 6px; text-align: left; border-bottom: 1px solid var(--border-color-primary); }
.board .track { position: relative; height: 14px; min-width: 160px; background: var(--background-fill-secondary); }
.board .interval { position: absolute; top: 6px; height: 2px; background: var(--color-accent); }
.board .interval::before, .board .interval::after { content: ""; position: absolute; top: -4px; height: 10px;
  width: 2px; background: var(--color-accent); }
.board .interval::before { left: 0; } .board .interval::after { right: 0; }
.board .dot { position: absolute; top: 2px; width: 10px; height: 10px; margin-left: -5px; border-radius: 50%;
  background: var(--color-accent); }
"""


@dataclass(frozen=True)
class ShownColumn:
    """One column as the page draws it: its answer now, whether it is still coming, its token data (if recorded)."""

    answer: ChatMessage | None
    running: bool
    tokens: TokenLog | None


@lru_cache(maxsize=64)
def marked_words(text: str, other: str) -> str:
    """`text` as HTML, the words that `other` does not have there marked (`<mark class="differs">`). Kept for the
    redraws that follow (a diff of long answers takes a while: it is drawn once the columns have ended)."""
    # As the chat shows it (and the store keeps it): a NUL as ␀, before a reload as after it.
    words, others = _WORDS.findall(text.replace("\x00", NUL_SHOWN_AS)), _WORDS.findall(other.replace("\x00", NUL_SHOWN_AS))
    marked: list[str] = []
    for tag, _, _, start, end in difflib.SequenceMatcher(None, others, words).get_opcodes():
        piece = words[start:end]
        if tag in ("replace", "insert"):
            marked += [f'<mark class="differs">{html.escape(word)}</mark>' if word.strip() else html.escape(word) for word in piece]
        else:
            marked += [html.escape(word) for word in piece]
    return "".join(marked)


def mean_logprob(log: TokenLog | None) -> float | None:
    """The answer's mean log-probability per token under its own model (None: no token data)."""
    steps = [step.dists[MODEL].logprob for step in log.steps if MODEL in step.dists] if log is not None else []
    return sum(steps) / len(steps) if steps else None


def columns_html(comparison: Comparison, shown: list[ShownColumn]) -> str:
    """The comparison's columns side by side (`shown`: each column's answer, in the comparison's order)."""
    texts = [column.answer["content"] if column.answer is not None else "" for column in shown]
    state = (f"vote: <b>{html.escape(comparison.verdict())}</b> (locked)" if comparison.outcome is not None
             else "still answering …" if any(c.running for c in shown)
             else "judge them: which is better?")
    blind = "blind: names hidden until you vote · " if comparison.blind and not comparison.revealed else ""
    head = f'<div class="compare-head">⚖️ <b>{len(shown)} answers side by side</b> · {blind}{state}</div>'
    cells = [_column_html(comparison, index, column, texts[1 if index == 0 else 0]) for index, column in enumerate(shown)]
    grid = f'<div class="compare-grid" style="grid-template-columns: repeat({len(shown)}, minmax(0, 1fr));">{"".join(cells)}</div>'
    return f'<div class="compare" data-columns="{len(shown)}">{head}{grid}</div>'


def _column_html(comparison: Comparison, index: int, column: ShownColumn, other: str) -> str:
    letter, about = comparison.letter(index), comparison.columns[index]
    answer = column.answer
    name = html.escape(about.label) if comparison.revealed else "name hidden"
    changes = f'<div class="compare-changes">changes: {html.escape(about.changes)}</div>' if comparison.revealed else ""
    if answer is None:
        body = "<i>(this answer is not in the chat)</i>"
    elif answer.get("error"):
        body = f"⚠️ <b>The answer failed:</b> {html.escape(answer.get('error', ''))}"
    elif column.running:  # (the words that differ are marked once the answers have ended)
        body = html.escape(answer["content"].replace("\x00", NUL_SHOWN_AS)) + " ⏳"
    else:
        body = marked_words(answer["content"], other)
        if answer.get("interrupted") and not column.running:
            body += "<br><i>⏹️ stopped before the end</i>"
    winner = " winner" if comparison.winner == index else ""
    went_on = " · the chat goes on with it" if comparison.continued == index else ""
    return (f'<div class="compare-column{winner}" data-letter="{letter}" data-ended="{str(not column.running).lower()}">'
            f'<div class="compare-name">{letter} · {name}{went_on}</div>{changes}'
            f'<div class="compare-text">{body}</div><div class="compare-figures">{_figures(answer, column)}</div></div>')


def _figures(answer: ChatMessage | None, column: ShownColumn) -> str:
    provenance = answer.get("provenance") if answer is not None else None
    figures = provenance.parts[0].figures if provenance is not None and provenance.parts else None
    if column.running or figures is None:
        return "…"
    said = [f"{figures.new_tokens} tokens"]
    if figures.tokens_per_second:
        said.append(f"{figures.tokens_per_second:.1f} tokens/s")
    mean = mean_logprob(column.tokens)
    if mean is not None:
        said.append(f"mean log-prob {mean:.2f}")
    return " · ".join(said)


def leaderboard_html(ratings: list[Rating], whose: str) -> str:
    """The ratings as a table with a plot: each contender's rating as a dot on its 95% interval (error bars)."""
    if not ratings:
        return f"<p>No votes yet ({html.escape(whose)}): compare a message, and vote.</p>"
    low, high = min(r.low for r in ratings), max(r.high for r in ratings)
    span = max(high - low, 1.0)

    def at(value: float) -> float:
        return 100 * (value - low) / span

    rows = "".join(
        f'<tr data-label="{html.escape(r.label)}"><td>{rank}</td><td>{html.escape(r.label)}</td><td>{r.rating:.0f}</td>'
        f"<td>{r.low:.0f} – {r.high:.0f}</td><td>{r.votes}</td><td>{r.wins}</td>"
        f'<td><div class="track" title="{r.rating:.0f} ({r.low:.0f} – {r.high:.0f})">'
        f'<div class="interval" style="left: {at(r.low):.1f}%; width: {max(at(r.high) - at(r.low), 0.5):.1f}%;"></div>'
        f'<div class="dot" style="left: {at(r.rating):.1f}%;"></div></div></td></tr>'
        for rank, r in enumerate(ratings, start=1))
    return (f'<div class="board"><p>{html.escape(whose)}: Bradley–Terry ratings (1000 = average; 400 points apart = ten-to-one odds), '
            "with a bootstrap 95% interval.</p><table><thead><tr><th>#</th><th>Contender</th><th>Rating</th><th>95% interval</th>"
            f"<th>Votes</th><th>Wins</th><th>{low:.0f} … {high:.0f}</th></tr></thead><tbody>{rows}</tbody></table></div>")
