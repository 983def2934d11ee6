"""Launching the real Gradio app in-process for tests (127.0.0.1, a free port)."""

from __future__ import annotations

import socket
import threading
from contextlib import contextmanager

from chat.instructions import default_instructions
from chat.settings import GenerationSettings
from chat.skills import DEFAULT_SKILLS_PATH, load_skills

BROWSER_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def running_app(engine, settings: GenerationSettings | None = None, concurrency: int = 4, queue_size: int = 20, **launch):
    """Yields (demo, url) for the app's real UI on `engine`; closes it afterwards."""
    from chat.web.page import build_ui

    demo = build_ui(engine, load_skills(DEFAULT_SKILLS_PATH), default_instructions(engine.format), settings or GenerationSettings())
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    _, url, _ = demo.launch(server_name="127.0.0.1", server_port=free_port(), prevent_thread_lock=True, quiet=True, show_error=True, **launch)
    try:
        yield demo, url
    finally:
        demo.close()


def generate_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "generate" and t.is_alive()]
