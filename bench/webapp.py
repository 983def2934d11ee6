"""Through the web app: time to first token and tokens/s with `gradio_client` ÷ the engine direct.

    .venv/bin/python -m bench.webapp --threads 2 --repeats 5

Starts `app.py` (the embedded model) as its own process on a free local port, pinned to the same
number of torch threads, and asks it through `gradio_client` exactly what a browser's Send does
(`/send`, streamed). The engine direct is a `ChatSession` in this process with the same settings
and message. A third way reads the app as the page's JavaScript does: its own HTTP requests and the
server's event stream, without gradio_client's 50 ms polling. Each repetition sends a new message
(after Clear) each way, in rotating order.
TTFT = from the request to the first piece of answer text received; tokens/s = answer tokens
(counted with the tokenizer, identical text on both sides) ÷ time from first text to the end.
Ratios are "speed" ratios, higher is better: direct TTFT ÷ app TTFT, app tokens/s ÷ direct tokens/s.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.common import load_engine, machine, median, parser, session, set_threads, table, tiny_model_dir

MESSAGE = "Write a story about a dragon who learns to fly ({})."
ANSWER_TOKENS = 200
START_TIMEOUT_S = 300  # the first start may convert the embedded GGUF
SETTLE_S = 60.0  # after an answer the app warms its cache up for the next turn: wait (at most this) until it idles
IDLE_CPU_PERCENT = 10.0  # the app process counts as idle below this CPU use
GOAL_RATIO = 0.90
ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_app(port: int, threads: int, model: str | None) -> subprocess.Popen:
    command = [sys.executable, "app.py", "--port", str(port), "--temperature", "0", "--max-new-tokens", str(ANSWER_TOKENS)]
    if model:
        command += ["--model", model]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads), "GRADIO_ANALYTICS_ENABLED": "False"}
    app = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + START_TIMEOUT_S
    for line in app.stdout:
        if "running at" in line:
            return app
        if time.monotonic() > deadline:
            break
    app.kill()
    raise SystemExit(f"app.py did not start (exit code {app.poll()})")


def answer_text(chat) -> str:
    """The last assistant message's text (Gradio 6 sends content as a list of parts)."""
    if not chat or chat[-1]["role"] != "assistant":
        return ""
    content = chat[-1]["content"]
    return content if isinstance(content, str) else "".join(part.get("text", "") for part in content)


def through_app(client, message: str) -> tuple[float, float, str]:
    """(seconds to first text, seconds from first text to the end, answer)."""
    client.predict(api_name="/clear")
    start = time.perf_counter()
    job = client.submit(message, api_name="/send", temperature=0, max_new_tokens=ANSWER_TOKENS)
    first, text = None, ""
    for output in job:
        text = answer_text(output[0])
        if first is None and text:
            first = time.perf_counter()
    job.result()
    text = answer_text(job.outputs()[-1][0])
    return first - start, time.perf_counter() - first, text


class PageReader:
    """Reads the app as the page's JavaScript does: one kept-alive HTTP connection, `queue/join`,
    then the server's event stream; no polling. (A new HTTP client per request would add ~40 ms of
    its own set-up to every first token.)"""

    def __init__(self, url: str):
        import httpx

        self.url, self.http, self.tab = url, httpx.Client(timeout=300), uuid.uuid4().hex
        config = self.http.get(url + "config").json()
        self.send = next(d for d in config["dependencies"] if d.get("api_name") == "send")
        self.props = {c["id"]: c.get("props", {}) for c in config["components"]}

    def ask(self, message: str) -> tuple[float, float, str]:
        """(seconds to first text, seconds from first text to the end, answer); the handler's first
        update shows the user's message, the second brings the first text."""
        self.http.post(self.url + "gradio_api/run/clear", json={"data": [None], "session_hash": self.tab}).raise_for_status()
        given = {"Message": message, "Temperature": 0, "Max new tokens": ANSWER_TOKENS}
        data = [given.get(self.props[i].get("label"), self.props[i].get("value")) for i in self.send["inputs"]]
        body = {"data": data, "fn_index": self.send["id"], "session_hash": self.tab, "trigger_id": None}
        start = time.perf_counter()
        self.http.post(self.url + "gradio_api/queue/join", json=body).raise_for_status()
        first, updates, text = None, 0, ""
        with self.http.stream("GET", self.url + f"gradio_api/queue/data?session_hash={self.tab}") as stream:
            for line in stream.iter_lines():
                if not line.startswith("data:"):
                    continue
                event = json.loads(line[5:])
                if event["msg"] == "process_generating":
                    updates += 1
                    if updates == 2:
                        first = time.perf_counter()
                elif event["msg"] == "process_completed":
                    text = answer_text(event["output"]["data"][0])
                    break
        return first - start, time.perf_counter() - first, text


def settle(chat, way: str, app: subprocess.Popen) -> None:
    """Waits for the warm-up that follows an answer: the app's by watching its CPU use."""
    if way == "direct":
        chat.kv_cache.wait_free()
        return
    import psutil

    process, deadline = psutil.Process(app.pid), time.monotonic() + SETTLE_S
    while process.cpu_percent(interval=0.5) > IDLE_CPU_PERCENT and time.monotonic() < deadline:
        pass


def round_trip(client) -> float:
    """A request that runs no model (`/stop` with nothing running): the client and server floor."""
    start = time.perf_counter()
    client.predict(api_name="/stop")
    return time.perf_counter() - start


def direct(chat, message: str) -> tuple[float, float, str]:
    chat.clear()
    start = time.perf_counter()
    first, text = None, ""
    for delta in chat.send(message):
        text += delta
        if first is None:
            first = time.perf_counter()
    return first - start, time.perf_counter() - first, text


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    from gradio_client import Client

    from chat.settings import GenerationSettings

    engine = load_engine(args.model)
    chat = session(engine, GenerationSettings(temperature=0, max_new_tokens=ANSWER_TOKENS))
    port = free_port()
    app = start_app(port, args.threads, tiny_model_dir() if args.model == "tiny" else args.model)
    try:
        url = f"http://127.0.0.1:{port}/"
        client = Client(url, verbose=False)
        reader = PageReader(url)
        through_app(client, MESSAGE.format("warm-up"))
        settle(chat, "app", app)
        reader.ask(MESSAGE.format("warm-up"))
        settle(chat, "app", app)
        direct(chat, MESSAGE.format("warm-up"))
        settle(chat, "direct", app)
        ways = ("app", "sse", "direct")
        results = {way: [] for way in ways}
        floor = median(round_trip(client) for _ in range(max(5, args.repeats)))
        same = True
        for repeat in range(args.repeats):
            message = MESSAGE.format(f"take {repeat + 1}")
            order = ways[repeat % 3 :] + ways[: repeat % 3]
            texts = {}
            for way in order:
                if way == "app":
                    ttft, rest, texts[way] = through_app(client, message)
                elif way == "sse":
                    ttft, rest, texts[way] = reader.ask(message)
                else:
                    ttft, rest, texts[way] = direct(chat, message)
                settle(chat, way, app)
                tokens = len(engine.tokenizer(texts[way], add_special_tokens=False)["input_ids"])
                results[way].append((ttft, tokens / rest if rest > 0 else float("nan"), tokens))
            same = same and texts["app"] == texts["direct"] == texts["sse"]
    finally:
        app.terminate()
        app.wait(timeout=30)
    ratio = lambda way, index: median(  # noqa: E731 - "speed" ratios: higher is better
        (d[index] / a[index]) if index == 0 else (a[index] / d[index]) for a, d in zip(results[way], results["direct"]))
    ttft_ratio, rate_ratio = ratio("app", 0), ratio("app", 1)
    names = {"direct": "engine direct (ChatSession)", "app": "web app via gradio_client", "sse": "web app read as a browser does (SSE)"}
    rows = [
        [names[way], median(r[0] for r in results[way]), median(r[1] for r in results[way]), median(r[2] for r in results[way]),
         ratio(way, 0) if way != "direct" else 1.0, ratio(way, 1) if way != "direct" else 1.0]
        for way in ("direct", "app", "sse")
    ]
    print(table(
        "Through the web app: time to first token and tokens/s, gradio_client and a browser-like reader vs the engine direct",
        ["way", "TTFT (s)", "tokens/s", "answer tokens", "direct TTFT ÷ this", "this tokens/s ÷ direct"],
        rows,
        [
            f"{engine.name}, greedy, up to {ANSWER_TOKENS} tokens; app.py in its own process, localhost; "
            f"medians of {args.repeats} repetitions, ratios = medians of per-repetition ratios; same answers: {same}",
            f"TTFT speed (direct TTFT ÷ app TTFT): {ttft_ratio:.3f} (goal ≥ {GOAL_RATIO}): {'met' if ttft_ratio >= GOAL_RATIO else 'MISSED'}",
            f"a request that runs no model (/stop) takes {floor * 1000:.0f} ms through gradio_client here "
            "(its reader polls every 50 ms)",
            f"tokens/s (app ÷ direct): {rate_ratio:.3f} (goal ≥ {GOAL_RATIO}): {'met' if rate_ratio >= GOAL_RATIO else 'MISSED'}",
            "SSE: the page's own requests (queue/join, then the event stream), timed to the update that brings the first text",
            machine(args.threads),
        ],
    ))


if __name__ == "__main__":
    main()
