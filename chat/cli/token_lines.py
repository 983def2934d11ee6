"""`/tokens` in the terminal chat: the last answer's tokens, each with its probability and alternatives."""

from __future__ import annotations

from ..answer_tokens import DESCRIPTIONS, DISTRIBUTIONS, SERVER, DistributionName, TokenLog, label, percent, visible

ALTERNATIVES = 5
USAGE = "/tokens [on | off | model | penalized | sampled]"


def token_lines(log: TokenLog, name: str) -> list[str]:
    """One line per token: number, text, probability, entropy, then the likeliest tokens there."""
    name = log.shown(name)
    if not log.steps:
        return [log.note or "No tokens were recorded for this answer."]
    lines = [f"{len(log.steps)} tokens; probabilities: {DESCRIPTIONS[name]}", "    #  token            prob  entropy  likeliest there"]
    for number, step in enumerate(log.steps, start=1):
        dist = step.dists[name]
        text = label(step, name)
        others = " · ".join(f"{visible(a.text)} {percent(a.probability)}" for a in dist.top[:ALTERNATIVES])
        lines.append(f"{number:>5}  {_cell(text, 14)}  {percent(dist.probability):>6}  {dist.entropy:>6.2f}   {others}")
    return lines


def _cell(text: str, width: int) -> str:
    return (text[: width - 1] + "…") if len(text) > width else text.ljust(width)


def chosen_distribution(word: str) -> DistributionName | None:
    """The distribution a `/tokens WORD` asks for (None: not one)."""
    return DistributionName(word) if word in (*DISTRIBUTIONS, SERVER) else None
