"""A real llama.cpp server (llama-cpp-python's `python -m llama_cpp.server`) serving the embedded GGUF.

Started with the README's recipe. Its output goes to a log file that is kept: when a test fails, the
report shows the server's exit status and the end of its log (conftest's report hook), so a server
that crashed (as the default native build did on AMX CPUs) is named as the cause, not hidden
behind "can't reach the model server".
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.helpers.ports import HOST, free_port

START_TIMEOUT_S = 120.0
LOG_TAIL_LINES = 40
ALIAS = "smollm2"
# CI installs llama-cpp-python (scripts/test): there a missing one is a failure, not a skip.
REQUIRED_ENV = "REQUIRE_LLAMA_CPP"


def require_llama_cpp() -> None:
    """Skips the test where llama-cpp-python's server is not installed (it takes a build), unless required."""
    try:
        import llama_cpp.server.app  # noqa: F401
    except ImportError as error:
        if os.environ.get(REQUIRED_ENV):
            pytest.fail(f"llama-cpp-python is required here ({REQUIRED_ENV} is set) but can't be imported: {error}")
        pytest.skip("llama-cpp-python[server] is not installed (scripts/install-llama-cpp builds it)")


class LlamaServer:
    """`with LlamaServer(log_dir, n_ctx=512) as server:` ... `server.base_url` is its /v1 root."""

    def __init__(self, log_dir: Path, n_ctx: int = 2048, interrupt_requests: bool = False, threads: int = 2):
        from chat.local.embedded import find_embedded_gguf

        self.n_ctx, self.port = n_ctx, free_port()
        self.log_path = log_dir / f"llama-server-{self.port}.log"
        self.command = [sys.executable, "-m", "llama_cpp.server", "--model", str(find_embedded_gguf()),
                        "--model_alias", ALIAS, "--host", HOST, "--port", str(self.port), "--n_ctx", str(n_ctx),
                        "--n_threads", str(threads), "--interrupt_requests", str(interrupt_requests)]
        self.base_url = f"http://{HOST}:{self.port}/v1"
        self.process: subprocess.Popen | None = None
        self._stopping = False

    def __enter__(self) -> "LlamaServer":
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.command, stdout=log, stderr=subprocess.STDOUT)
        log.close()  # the child has its own handle
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.__exit__()
                pytest.fail(f"llama.cpp server did not start\n{self.report()}")
            time.sleep(0.2)
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self._stopping = True
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def _ready(self) -> bool:
        try:
            return httpx.get(f"{self.base_url}/models", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def report(self) -> str:
        """The server's state and the end of its log, for a failing test's report."""
        code = None if self.process is None else self.process.poll()
        if code is None:
            state = "still running"
        elif self._stopping:
            state = f"stopped by the test (exit status {code})"
        else:
            state = f"EXITED with status {code}" + (f" (signal {-code})" if code < 0 else "")
        lines = self.log_path.read_text(errors="replace").splitlines() if self.log_path.exists() else []
        tail = "\n".join(lines[-LOG_TAIL_LINES:])
        return f"llama.cpp server {state}; command: {' '.join(self.command)}\nlog {self.log_path} (last {LOG_TAIL_LINES} lines):\n{tail}"
