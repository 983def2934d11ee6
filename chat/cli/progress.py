"""A loading bar on the terminal: what `ModelList.engine(name, progress)` reports, drawn on stderr."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator, TextIO

from ..models import Progress

BAR_WIDTH = 30


@contextmanager
def terminal_bar(name: str, out: TextIO | None = None) -> Iterator[Progress]:
    """A `Progress` that redraws one line ("Loading NAME [#####-----] 40% weights") where the terminal is one;
    elsewhere (a log, a pipe) it says nothing, and the loader's own lines tell the stages."""
    stream = out or sys.stderr
    drawn = False

    def draw(fraction: float, words: str) -> None:
        nonlocal drawn
        if not stream.isatty():
            return
        done = int(BAR_WIDTH * max(0.0, min(1.0, fraction)))
        stream.write(f"\rLoading {name} [{'#' * done}{'-' * (BAR_WIDTH - done)}] {fraction:4.0%} {words:<20}")
        stream.flush()
        drawn = True

    try:
        yield draw
    finally:
        if drawn:
            stream.write("\n")
            stream.flush()
