"""Real HTTP servers on 127.0.0.1 for the API and remote-backend tests.

`serve_api` runs this app's /v1 API (the real `mount_api`) under uvicorn in a thread, on a port
the OS picks. `serve_failure` exists only because no real server misbehaves on cue: it answers
every request with an HTTP error (for one that never answers, see `ports.silent_port`);
`serve_api_refusing_logprobs`, because no model that refuses them (OpenAI's reasoning models) runs here.
"""

from __future__ import annotations

import contextlib
import threading
import time
from typing import Any, Iterator

import uvicorn
from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse

from chat.api.server import mount_api
from chat.skills_file import parse_skills
from tests.helpers.ports import HOST

START_TIMEOUT_S = 10.0
WAIT_S = 5.0  # longest a test waits for a server to notice something (a Stop, a free slot)

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
    """A uvicorn server in a daemon thread; `url` is its root. Entering waits until it listens."""

    def __init__(self, app: Any, port: int = 0):
        config = uvicorn.Config(app, host=HOST, port=port, log_level="warning", lifespan="off", timeout_graceful_shutdown=1)
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


@contextlib.contextmanager
def serve_api(engine: Any, skills=TEST_SKILLS, port: int = 0, **options: Any) -> Iterator[Server]:
    """This app's API on `port` (0: one the OS picks); `options` go to `mount_api` (api_key, auth, defaults ...)."""
    app = FastAPI()
    mount_api(app, engine=engine, skills=skills, **options)
    with Server(app, port) as server:
        yield server


@contextlib.contextmanager
def serve_api_refusing_logprobs(engine: Any, **options: Any) -> Iterator[Server]:
    """This app's API, but a request with `logprobs` gets the 400 naming the field that OpenAI's
    reasoning models answer (and this app did before it had logprobs)."""
    app = FastAPI()
    mount_api(app, engine=engine, skills=TEST_SKILLS, **options)

    @app.middleware("http")
    async def refuse_logprobs(request: Request, call_next: Any) -> Any:
        if request.url.path == "/v1/chat/completions" and (await request.json()).get("logprobs"):
            return JSONResponse({"error": {"message": "logprobs is not supported with this model", "type": "invalid_request_error",
                                           "param": "logprobs", "code": "unsupported_parameter"}}, 400)
        return await call_next(request)  # (the body stays readable for the API)

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
def serve_json(routes: dict[tuple[str, str], Any]) -> Iterator[Server]:
    """A server that answers each (method, path) with a fixed JSON body, 404 otherwise: how the servers
    this machine cannot run (vLLM, llama.cpp's llama-server, TGI, Ollama) describe themselves, as
    documented, for the code that reads those descriptions."""
    app = FastAPI()
    for (method, path), body in routes.items():
        app.add_route(path, _fixed(body), methods=[method])
    with Server(app) as server:
        yield server


def _fixed(body: Any):
    async def answer(request: Request) -> JSONResponse:
        return JSONResponse(body)
    return answer


@contextlib.contextmanager
def serve_empty_stream() -> Iterator[Server]:
    """A chat-completions endpoint that opens an event stream and closes it without a word: what
    llama-cpp-python's server does when the prompt overflows its --n_ctx."""
    from starlette.responses import StreamingResponse

    async def nothing():
        return
        yield  # (an async generator that yields nothing)

    async def empty(request: Request) -> StreamingResponse:
        return StreamingResponse(nothing(), media_type="text/event-stream")

    app = FastAPI()
    app.add_route("/v1/chat/completions", empty, methods=["POST"])
    with Server(app) as server:
        yield server
