"""The worker threads that generate answers, as a test sees them (the fixture `no_worker_left` in
tests/conftest.py checks that none outlives a test)."""

from __future__ import annotations

import threading

from chat.engine import Generation
from chat.remote.generation import RemoteGeneration

WORKER_NAMES = frozenset({Generation.THREAD_NAME, RemoteGeneration.THREAD_NAME})  # "generate", "remote-generate"
END_WITHIN_S = 1.0  # how long `no_worker_left` waits for workers still finishing, where a module sets no other


def generation_workers() -> list[threading.Thread]:
    """The live threads producing an answer: local engines' and the remote backend's workers."""
    return [thread for thread in threading.enumerate() if thread.name in WORKER_NAMES and thread.is_alive()]
