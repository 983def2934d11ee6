"""Load: many gradio_client sessions chatting at once with app.py, each checking it gets only its own chat.

    .venv/bin/python -m bench.load                          # 20 sessions × 5 turns, the tests' tiny model
    .venv/bin/python -m bench.load --sessions 50 --turns 10 --model tiny --max-new-tokens 16

Starts `app.py` as its own process (as users run it: defaults, or --app-flags) on a
free local port and runs the sessions from this process (tests/helpers/load_driver.py `chat_at_once`):
every turn's chat must hold exactly that session's messages, one answer each, and its prompt no
other session's text. The app process's memory (RSS, sampled every 50 ms) and thread count are
read with psutil before, during and after the run. tests/test_load.py runs a smaller version in CI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import psutil

from bench.common import machine, table, tiny_model_dir
from bench.webapp import free_port
from tests.helpers.load_driver import chat_at_once

ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 300  # the first start may convert the embedded GGUF
SETTLE_S = 5.0  # after the run: time for finished requests' threads to end before "after" is read


def main() -> None:
    import argparse

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--sessions", type=int, default=20)
    p.add_argument("--turns", type=int, default=5)
    p.add_argument("--model", default="tiny", help="'tiny' (the tests' random model, default), a folder, or '' for the embedded SmolLM2")
    p.add_argument("--max-new-tokens", type=int, default=8)
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads of the app process")
    p.add_argument("--app-flags", default="", help="more app.py flags, e.g. '--no-batching' (default: app.py's own defaults)")
    args = p.parse_args()

    port = free_port()
    app = start_app(port, args)
    server = psutil.Process(app.pid)
    try:
        url = f"http://127.0.0.1:{port}/"
        chat_at_once(url, 1, 1)  # warm-up: first-use imports and allocations are not load
        time.sleep(SETTLE_S)
        rss_before, threads_before = server.memory_info().rss, server.num_threads()
        peak = Peak(server)
        with peak:
            result = chat_at_once(url, args.sessions, args.turns)
        time.sleep(SETTLE_S)
        rss_after, threads_after = server.memory_info().rss, server.num_threads()
    finally:
        app.terminate()
        app.wait(timeout=30)
    mib = 2**20
    rows = [[args.sessions, args.turns, result.completed_turns, len(result.failures), result.seconds,
             result.turns_per_second, rss_before / mib, peak.rss / mib, rss_after / mib, threads_before, peak.threads, threads_after]]
    print(table(
        f"{args.sessions} sessions × {args.turns} turns at once, app.py {args.app_flags or '(defaults)'}, "
        f"max {args.max_new_tokens} new tokens, model {args.model or 'embedded SmolLM2'}",
        ["sessions", "turns", "answers", "failures", "seconds", "turns/s", "RSS before MiB", "RSS peak MiB", "RSS after MiB",
         "threads before", "threads peak", "threads after"],
        rows,
        [machine(args.threads),
         "RSS and threads are the app process's; 'before' is after a one-turn warm-up, 'after' 5 s after the last client closed.",
         "Closed tabs' sessions stay until Gradio expires them (an hour) or 500 newer ones push them out: RSS after includes them."],
    ))
    for failure in result.failures:
        print("FAILURE:", failure)
    sys.exit(1 if result.failures else 0)


def start_app(port: int, args) -> subprocess.Popen:
    command = [sys.executable, "app.py", "--port", str(port), "--max-new-tokens", str(args.max_new_tokens), "--temperature", "0.7"]
    model = tiny_model_dir() if args.model == "tiny" else args.model
    if model:
        command += ["--model", model]
    command += args.app_flags.split()
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "GRADIO_ANALYTICS_ENABLED": "False"}
    app = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in app.stdout:
        if "running at" in line:
            threading.Thread(target=app.stdout.read, daemon=True).start()  # keep its pipe from filling up
            return app
        if time.monotonic() > deadline:
            break
    app.kill()
    raise SystemExit(f"app.py did not start (exit code {app.poll()})")


class Peak:
    """Samples a process's RSS and thread count every 50 ms; keeps the highest of each."""

    def __init__(self, process: psutil.Process):
        self.process, self.rss, self.threads = process, 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def __enter__(self) -> "Peak":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _sample(self) -> None:
        while not self._stop.wait(0.05):
            self.rss = max(self.rss, self.process.memory_info().rss)
            self.threads = max(self.threads, self.process.num_threads())


if __name__ == "__main__":
    main()
