"""Waiting in tests: poll a condition until it holds or a time limit passes. No retries: one wait, one verdict."""

from __future__ import annotations

import time

POLL_S = 0.02


def wait_for(condition, timeout_s: float, interval_s: float = POLL_S) -> bool:
    """Polls `condition` until it is true or `timeout_s` has passed; returns its last value, as a bool.

    Use it in an assert: `assert wait_for(lambda: not generation.running, 1.0), "still running"`."""
    deadline = time.monotonic() + timeout_s
    while not condition() and time.monotonic() < deadline:
        time.sleep(interval_s)
    return bool(condition())
