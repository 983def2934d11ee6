"""The app launched for a test: its real Gradio UI in this process (`running_app`), or app.py itself
as its own process (`AppProcess`, for what only the entry point does: flags, printing, --share)."""

from __future__ import annotations

import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from chat.instructions import default_instructions
from chat.settings import GenerationSettings
from chat.skills_file import DEFAULT_SKILLS_PATH, load_skills
from tests.helpers.ports import HOST, free_port
from tests.helpers.sessions import seeds_of_this_test

ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 120.0  # app.py loading the tiny model and launching, on a busy machine


@contextmanager
def running_app(engine, settings: GenerationSettings | None = None, concurrency: int = 4, queue_size: int = 20,
                conversations=None, **launch):
    """Yields (demo, url) for the app's real UI on `engine` at 127.0.0.1 on a free port, with the
    shipped skills and `concurrency` answers at once; `conversations`: a store (the sidebar of saved
    chats); `launch` goes to `demo.launch` (auth ...). Closes it afterwards."""
    from chat.web.page import build_ui

    demo = build_ui(engine, load_skills(DEFAULT_SKILLS_PATH), default_instructions(engine.format), settings or GenerationSettings(),
                    conversations=conversations, seeds=seeds_of_this_test())
    demo.queue(default_concurrency_limit=concurrency, max_size=queue_size)
    _, url, _ = demo.launch(server_name=HOST, server_port=free_port(), prevent_thread_lock=True, quiet=True, show_error=True, **launch)
    try:
        yield demo, url
    finally:
        demo.close()


class AppProcess:
    """`app.py ARGUMENTS --port P` running as its own process on a free port; `url` is its page.

    `wait_for_line` reads what it prints until a line shows it is up; `output()` stops it and returns
    everything it printed. As a context manager it is stopped on leaving."""

    def __init__(self, *arguments: str, port: int | None = None):
        self.port = port or free_port()  # (the same port again: a restart, where the browser keeps its storage)
        self.url = f"http://{HOST}:{self.port}/"
        self.process = subprocess.Popen([sys.executable, "app.py", *arguments, "--port", str(self.port)], cwd=ROOT, text=True,
                                        stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        self.printed: list[str] = []

    def __enter__(self) -> "AppProcess":
        return self

    def __exit__(self, *exc) -> None:
        self.output()

    def wait_for_line(self, *markers: str, timeout_s: float = START_TIMEOUT_S) -> None:
        """Until a printed line holds one of `markers`; fails with all it printed if it exits or `timeout_s` passes first."""
        deadline = time.monotonic() + timeout_s
        for line in self.process.stdout:
            self.printed.append(line)
            if any(marker in line for marker in markers):
                return
            if time.monotonic() > deadline:
                break
        raise AssertionError("app.py did not come up:\n" + "".join(self.printed))

    def output(self) -> str:
        """Stops the app (if running) and returns everything it printed."""
        if self.process.poll() is None:
            self.process.terminate()
            self.printed.append(self.process.communicate(timeout=30)[0])
        return "".join(self.printed)
