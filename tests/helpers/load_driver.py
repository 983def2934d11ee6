"""Many sessions chatting at once through `gradio_client`, and the process's peak memory meanwhile.

`chat_at_once` is the load driver of tests/test_load.py (a CI-sized run) and bench/load.py (the
full-size run, by hand). Every session sends messages carrying its own unique tag; after each
turn it checks that the chat it got back holds exactly its own messages, in order, with one
answer each, and that the prompt the model received holds its own tags and no other session's.
Any other outcome is a failure, reported with what was seen.
"""

from __future__ import annotations

import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from gradio_client import Client

from tests.helpers.clients import close_all, new_client, texts

TURN_TIMEOUT_S = 300.0  # one turn, queue wait included (20 sessions on a real model: minutes); slower is a failure
SAMPLE_INTERVAL_S = 0.05


@dataclass
class LoadResult:
    sessions: int
    turns: int
    seconds: float
    completed_turns: int = 0
    failures: list[str] = field(default_factory=list)
    tags: dict[int, list[str]] = field(default_factory=dict)  # session → the tags it sent

    @property
    def turns_per_second(self) -> float:
        return self.completed_turns / self.seconds if self.seconds else 0.0


def session_tag(session: int, turn: int, run: str) -> str:
    """A tag no other session (or run) sends: `q07t3k9f2` = session 7, turn 3, run k9f2."""
    return f"q{session:02d}t{turn}{run}"


def chat_at_once(url: str, sessions: int, turns: int, client_options: dict | None = None) -> LoadResult:
    """`sessions` clients, each in its own thread, each sending `turns` messages one after another."""
    run = uuid.uuid4().hex[:4]
    result = LoadResult(sessions, turns, 0.0)
    lock = threading.Lock()
    clients: list[Client] = []

    def one_session(index: int) -> None:
        try:
            client = new_client(url, **(client_options or {}))
        except Exception as error:  # noqa: BLE001 - counted and reported, not raised in a worker thread
            with lock:
                result.failures.append(f"session {index}: could not connect: {error}")
            return
        with lock:
            clients.append(client)
        sent: list[str] = []
        for turn in range(turns):
            tag = session_tag(index, turn, run)
            sent.append(tag)
            problem = _turn(client, index, tag, sent, run, sessions)
            with lock:
                if problem:
                    result.failures.append(problem)
                else:
                    result.completed_turns += 1
            if problem:
                return
        with lock:
            result.tags[index] = sent

    start = time.perf_counter()
    with ThreadPoolExecutor(sessions, thread_name_prefix="load-session") as pool:
        list(pool.map(one_session, range(sessions)))
    result.seconds = time.perf_counter() - start
    close_all(clients)
    return result


def _turn(client: Client, index: int, tag: str, sent: list[str], run: str, sessions: int) -> str | None:
    """One Send; None if the page came back right, else what was wrong."""
    try:
        chat, _, status, prompt, *_ = client.submit(f"note {tag}", api_name="/send").result(timeout=TURN_TIMEOUT_S)
    except Exception as error:  # noqa: BLE001 - a refused or failed turn is a failure to report
        return f"session {index}, {tag}: {type(error).__name__}: {error}"
    shown = texts(chat)
    users = [text for role, text in shown if role == "user"]
    answers = [text for role, text in shown if role == "assistant"]
    foreign = [session_tag(other, turn, run) for other in range(sessions) if other != index for turn in range(len(sent) + 5)]
    leaked = [other for other in foreign if other in prompt or other in str(shown)]
    if users != [f"note {t}" for t in sent]:
        return f"session {index}, {tag}: chat holds {users}, expected its own {len(sent)} messages"
    if len(answers) != len(sent) or shown[-1][0] != "assistant":
        return f"session {index}, {tag}: {len(answers)} answers for {len(sent)} messages"
    if leaked:
        return f"session {index}, {tag}: another session's text {leaked[:3]} reached this one"
    if not all(f"note {t}" in prompt for t in sent):
        return f"session {index}, {tag}: the prompt lacks this session's earlier messages"
    if "stop:" not in status:
        return f"session {index}, {tag}: status line {status!r} shows no finished answer"
    return None


class PeakMemory:
    """Samples this process's resident memory in a thread; `peak` in bytes (psutil)."""

    def __init__(self) -> None:
        import psutil

        self._process = psutil.Process()
        self.baseline = self.peak = self._process.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, name="rss-sampler", daemon=True)

    def __enter__(self) -> "PeakMemory":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def now(self) -> int:
        return self._process.memory_info().rss

    def _sample(self) -> None:
        while not self._stop.wait(SAMPLE_INTERVAL_S):
            self.peak = max(self.peak, self.now())


def main(argv: list[str] | None = None) -> int:
    """`python -m tests.helpers.load_driver URL SESSIONS TURNS`: runs the clients, prints the result as JSON.

    The load test runs the clients in their own process, so the app's process holds only the
    server: its threads and memory are then the server's alone.
    """
    import dataclasses
    import json
    import sys

    url, sessions, turns = (argv or sys.argv[1:])[:3]
    result = chat_at_once(url, int(sessions), int(turns))
    print(json.dumps({**dataclasses.asdict(result), "tags": {str(k): v for k, v in result.tags.items()}}), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
