"""Real HTTP servers on 127.0.0.1 for the API and remote-backend tests.

`serve_api` runs this app's /v1 API (the real `mount_api`) under uvicorn in a thread, on a port
the OS picks. The two stand-ins below exist only because no real server misbehaves on cue:
one answers every request with an HTTP error, one accepts connections and never answers.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from typing import Any, Iterator

import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse

from chat.api.server import mount_api
from chat.skills import parse_skills

START_TIMEOUT_S = 10.0
WAIT_S = 5.0  # longest a test waits for a server to notice something (a Stop, a free slot)
HOST = "127.0.0.1"  # tests never listen on other addresses

TEST_SKILLS = parse_skills(
    """
skills:
  - name: "💬 Chat"
    template: "{message}"
  - name: "🔁 Say Twice"
    description: "Asks for the message twice."
    template: "Say this twice, loudly: {message}"
  - name: "✂️ Short"
    template: "Be brief: {message}"
    settings:
      max_new_tokens: 3
""",
    "test-skills.yaml",
)


class Server:
    """A uvicorn server in a daemon thread; `url` is its root."""

    def __init__(self, app: Any):
        config = uvicorn.Config(app, host=HOST, port=0, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, name="test-server", daemon=True)

    def __enter__(self) -> "Server":
        self.thread.start()
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("test server did not start")
            time.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]
        self.url = f"http://{HOST}:{self.port}"
        return self

    def __exit__(self, *exc: Any) -> None:
        self.server.should_exit = True
        self.thread.join(START_TIMEOUT_S)


class RecordingEngine:
    """The real engine, remembering each generation it starts (to see the server's side of a Stop)."""

    def __init__(self, engine: Any):
        self.engine = engine
        self.generations: list[Any] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    def generate(self, fitted, settings, extra_stop_strings=(), **options):
        generation = self.engine.generate(fitted, settings, extra_stop_strings, **options)
        self.generations.append(generation)
        return generation


@contextlib.contextmanager
def serve_api(engine: Any, skills=TEST_SKILLS, **options: Any) -> Iterator[Server]:
    """This app's API on a fresh port; `options` go to `mount_api` (api_key, auth, defaults ...)."""
    app = FastAPI()
    mount_api(app, engine=engine, skills=skills, **options)
    with Server(app) as server:
        yield server


@contextlib.contextmanager
def serve_failure(status: int, message: str) -> Iterator[Server]:
    """A server that answers every request with `status` and an OpenAI-shaped error."""
    app = FastAPI()

    async def fail(request: Request) -> JSONResponse:
        return JSONResponse({"error": {"message": message, "type": "server_error", "param": None, "code": None}}, status)

    app.add_route("/v1/chat/completions", fail, methods=["POST"])
    with Server(app) as server:
        yield server


@contextlib.contextmanager
def silent_port() -> Iterator[int]:
    """A port that accepts connections (the kernel's backlog) but never answers."""
    with socket.socket() as listener:
        listener.bind((HOST, 0))
        listener.listen(8)
        yield listener.getsockname()[1]


def finished(generation) -> bool:
    """The model stopped and the server's reader has written the final stats."""
    return not generation.running and bool(generation.stats.stop_reason)


def wait_until(condition, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.05)
    return condition()


def free_port() -> int:
    """A port nothing listens on (connection refused)."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]
