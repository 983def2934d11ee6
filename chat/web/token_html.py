"""The token view: an answer's tokens shaded by how likely the model found them, and one token's alternatives.

Pure functions of a `TokenLog` (chat/answer_tokens.py) → HTML, escaped throughout (tokens are model output).
The chips are buttons: the page's script (`CLICK_SCRIPT`) reports which one was clicked.
"""

from __future__ import annotations

import html
import math

from ..answer_tokens import (
    DESCRIPTIONS, MODEL, PENALIZED, SAMPLED, Alternative, DistributionName, TokenLog, TokenStep, label, percent, visible,
)

SHOWN_ALTERNATIVES = 8
DISTRIBUTION_CHOICES = [("The model's own", MODEL), ("After the repetition penalty", PENALIZED),
                        ("Sampled from (after temperature, top-k, top-p)", SAMPLED)]
# Gradio's `js_on_load` for the view: a click on a token chip (or Enter on it) becomes the component's
# click event, with the token's position. Delegated: the chips are drawn again with every answer.
CLICK_SCRIPT = """
element.addEventListener('click', (event) => {
  const chip = event.target.closest('[data-token]');
  if (chip) trigger('click', {token: Number(chip.dataset.token)});
});
"""
CSS = """
.tokens { line-height: 2.1; font-family: var(--font-mono); font-size: 0.9em; white-space: pre-wrap; }
.tok { border: 1px solid transparent; border-radius: 4px; padding: 1px 2px; margin: 0 1px;
  color: inherit; font: inherit; cursor: pointer; white-space: pre-wrap; }
.tok:focus-visible, .tok.picked { outline: 2px solid var(--color-accent); }
.tok.special { border-style: dashed; border-color: currentColor; }
.legend, .summary { font-size: 0.85em; opacity: 0.85; margin: 4px 0; }
.bars { display: grid; grid-template-columns: max-content 1fr max-content max-content; gap: 3px 10px;
  align-items: center; font-size: 0.9em; margin-top: 6px; }
.bar { height: 0.9em; border-radius: 3px; background: rgba(59, 130, 246, 0.7); min-width: 1px; }
.bars .chosen { font-weight: bold; }
.piece { font-family: var(--font-mono); }
"""


def shade(probability: float) -> str:
    """A chip's background: green when the model was sure of the token, red when it was surprised
    (semi-transparent: readable in light and dark themes)."""
    hue = 120 * max(0.0, min(1.0, probability))
    return f"hsla({hue:.0f}, 85%, 45%, 0.35)"


def chips(log: TokenLog, name: str, picked: int | None = None) -> str:
    """The answer's tokens as buttons, each shaded by its probability under distribution `name`."""
    name = log.shown(name)
    if not log.steps:
        return f"<p>{html.escape(log.note or 'No tokens were recorded for this answer.')}</p>"
    parts = []
    for position, step in enumerate(log.steps):
        dist = step.dists[name]
        classes = "tok" + ("" if step.text else " special") + (" picked" if position == picked else "")
        title = f"{percent(dist.probability)} · " + ", ".join(f"{visible(a.text)} {percent(a.probability)}" for a in dist.top[:5])
        parts.append(f'<button type="button" class="{classes}" data-token="{position}" style="background:{shade(dist.probability)}" '
                     f'title="{html.escape(title)}">{html.escape(label(step, name))}</button>')
    return (f'<div class="legend">Shaded by {html.escape(DESCRIPTIONS[name])}: '
            '<span style="background:hsla(120,85%,45%,0.35)">sure</span> → '
            '<span style="background:hsla(0,85%,45%,0.35)">surprised</span>. Click a token for its alternatives.</div>'
            f'<div class="summary">{summary(log, name)}</div><div class="tokens">{"".join(parts)}</div>')


def summary(log: TokenLog, name: DistributionName) -> str:
    """A line: how many tokens, how likely on average, the least expected one."""
    probabilities = [step.dists[name].probability for step in log.steps]
    position = min(range(len(probabilities)), key=probabilities.__getitem__)
    least = log.steps[position]
    return (f"{len(log.steps)} tokens · average probability {percent(sum(probabilities) / len(probabilities))} · "
            f"least expected: token {position + 1} «{html.escape(label(least, name))}» "
            f"({percent(probabilities[position])})")


def details(log: TokenLog, position: int, name: str) -> str:
    """One token: its probability under each distribution, how sure the model was, its alternatives as bars."""
    step = log.steps[position]
    name = log.shown(name)
    dist = step.dists[name]
    text = label(step, name)
    under = " · ".join(f"{percent(step.dists[other].probability)} {_short(other)}" for other in log.distributions)
    sure = math.exp(dist.entropy)  # perplexity: as unsure as a fair choice among this many tokens
    lines = [f"<p><b>Token {position + 1}: «{html.escape(text)}»</b> · {html.escape(under)}<br>"
             f"Entropy {dist.entropy:.2f} nats: as unsure as a fair choice among {sure:,.1f} tokens.</p>",
             f'<div class="bars" role="table" aria-label="Alternatives to token {position + 1}">']
    # Beside each alternative, its probability under the distribution that differs most from this one.
    others = [other for other in (SAMPLED, MODEL) if other != name and other in log.distributions]
    for alternative in dist.top[:SHOWN_ALTERNATIVES]:
        chosen = alternative.id == step.id if step.id is not None else alternative.text == step.text
        cls = ' class="chosen"' if chosen else ""
        width = max(0.0, alternative.probability) * 100
        other_values = " ".join(f"{_short(other)}: {_probability_in(step, other, alternative)}" for other in others[:1])
        shown_as = visible(alternative.text) + (" (special)" if alternative.special else "")
        lines.append(f'<span class="piece"{cls}>{html.escape(shown_as)}</span><div class="bar" style="width:{width:.1f}%"></div>'
                     f'<span{cls}>{percent(alternative.probability)}</span><span>{html.escape(other_values)}</span>')
    lines.append("</div>")
    return "".join(lines)


def _short(name: DistributionName) -> str:
    return {MODEL: "model's own", PENALIZED: "after penalty", SAMPLED: "sampled from"}.get(name, name)


def _probability_in(step: TokenStep, name: DistributionName, alternative: Alternative) -> str:
    top = step.dists[name].top
    match = next((a for a in top if (a.id, a.text) == (alternative.id, alternative.text)), None)
    if match is not None and match.logprob > -math.inf:
        return percent(match.probability)
    if match is not None or any(a.logprob == -math.inf for a in top):  # fewer possible tokens than listed: not one of them
        return "ruled out"
    return "—"  # (not among the likeliest there)


def alternative_choices(log: TokenLog, position: int, name: str) -> list[tuple[str, int]]:
    """The token's alternatives as (label, index into its top list), for "Continue from this token"."""
    step = log.steps[position]
    dist = step.dists[log.shown(name)]
    return [(f"«{visible(a.text)}»{' (ends the answer)' if a.special else ''} {percent(a.probability)}", index)
            for index, a in enumerate(dist.top[:SHOWN_ALTERNATIVES])
            if not (a.id == step.id if step.id is not None else a.text == step.text) and a.logprob > -math.inf]
