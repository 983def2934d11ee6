"""The model list as the page draws it: one row per model, loaded ones first in mind (● and what each uses now),
and a bar per model: its memory estimate against the memory this machine has free, so a model that won't fit
shows it before anyone presses anything. Pure functions of `ModelInfo`s → escaped HTML."""

from __future__ import annotations

import html

from ..models import ModelInfo, size_words

COLUMNS = ("Model", "Loaded", "Memory (estimate · uses now)", "Weights", "Parameters", "Context", "On disk", "From")
CSS = """
.models { width: 100%; border-collapse: collapse; font-size: 0.9em; }
.models th, .models td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--border-color-primary); vertical-align: top; }
.models td { white-space: nowrap; }
.models td.name { font-family: var(--font-mono); }
.models td.name .note { font-family: var(--font); font-size: 0.85em; opacity: 0.8; }
.models .meter { position: relative; height: 0.8em; width: 10em; border-radius: 3px; background: var(--background-fill-secondary);
  border: 1px solid var(--border-color-primary); margin-top: 3px; }
.models .meter > span { position: absolute; left: 0; top: 0; bottom: 0; border-radius: 3px; }
.models .meter .estimate { background: rgba(59, 130, 246, 0.35); }
.models .meter .used { background: rgba(59, 130, 246, 0.9); }
.models .meter .over { background: rgba(239, 68, 68, 0.8); }
.models .problem { color: var(--error-text-color, #b91c1c); white-space: normal; }
.models-legend { font-size: 0.8em; opacity: 0.8; margin-top: 4px; }
"""


def models_table(listing: list[ModelInfo], free: int | None) -> str:
    """The table; `free`: bytes of memory free now (None: unknown), what each bar is measured against."""
    head = "".join(f"<th>{html.escape(column)}</th>" for column in COLUMNS)
    rows = "".join(_row(info, free) for info in listing)
    legend = (f"Bars: each model's estimate against the {size_words(free)} free now (dark: what a loaded one uses; "
              "red: more than is free)." if free else "")
    return f'<table class="models"><tr>{head}</tr>{rows}</table><div class="models-legend">{html.escape(legend)}</div>'


def _row(info: ModelInfo, free: int | None) -> str:
    note = f'<div class="note">{html.escape("; ".join(info.notes))}</div>' if info.notes else ""
    cells = [f'<td class="name">{html.escape(info.name)}{note}</td>', f"<td>{html.escape(_state(info))}</td>",
             f"<td>{_memory(info, free)}</td>", f"<td>{html.escape(info.weights)}</td>",
             f"<td>{html.escape(_parameters(info.parameters))}</td>",
             f"<td>{f'{info.context_window:,}' if info.context_window else '?'}</td>",
             f"<td>{html.escape(size_words(info.disk_bytes) if info.disk_bytes else '')}</td>",
             f"<td>{html.escape(info.source)}{_problem(info)}</td>"]
    return f"<tr>{''.join(cells)}</tr>"


def _state(info: ModelInfo) -> str:
    if not info.loaded:
        return ""
    return f"● answering ({info.answering})" if info.answering else "● loaded"


def _memory(info: ModelInfo, free: int | None) -> str:
    if info.estimate is None:
        return "?" if info.weights != "server" else "on the server"
    words = f"~{size_words(info.estimate.total)}" + (f" · uses {size_words(info.in_use)}" if info.in_use else "")
    if not free:
        return html.escape(words)
    scale = max(free, info.estimate.total, info.in_use or 0)
    estimate = 100 * info.estimate.total / scale
    used = 100 * (info.in_use or 0) / scale
    over = not info.loaded and info.estimate.while_loading > free
    bar = (f'<div class="meter" title="{html.escape(info.estimate.words())}">'
           f'<span class="{"over" if over else "estimate"}" style="width:{estimate:.1f}%"></span>'
           f'<span class="used" style="width:{used:.1f}%"></span></div>')
    return html.escape(words) + bar


def _parameters(count: int | None) -> str:
    if not count:
        return "?"
    if count >= 10**9:
        return f"{count / 1e9:.1f}B"
    return f"{count / 1e6:.0f}M" if count >= 10**7 else (f"{count / 1e6:.1f}M" if count >= 10**6 else f"{count / 1e3:.0f}k")


def _problem(info: ModelInfo) -> str:
    return f'<div class="problem">⚠️ {html.escape(info.problem)}</div>' if info.problem else ""
