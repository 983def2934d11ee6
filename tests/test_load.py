"""Load: many gradio_client sessions at once against the app on a tiny model, as the app runs:
answers one at a time (`--no-batching`: `--concurrency 1`) and 4 at once sharing each step (the
default: `--batching`, `--concurrency 4`); `--queue-size 20` both times.

The clients run in their own process (tests/helpers/load_driver.py), so this process holds the server
alone and its threads and memory are the server's. CI runs 20 sessions × 2 turns; the full
20 × 5 run, with its figures, is `python -m bench.load` (README, "Reliability").
Covered elsewhere: two clients isolated, and the busy message at queue size 1 (test_app.py).
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest
import torch

from chat.session import ChatSession
from chat.settings import GenerationSettings
from tests.helpers.apps import running_app
from tests.helpers.clients import close_all, new_client, streaming, texts
from tests.helpers.engines import make_engine, repeating
from tests.helpers.load_driver import PeakMemory
from tests.helpers.waiting import wait_for
from tests.helpers.workers import generation_workers

ROOT = Path(__file__).resolve().parent.parent
SESSIONS, TURNS = 20, 2  # CI size; bench/load.py runs 20 × 5
SETTINGS = GenerationSettings(max_new_tokens=8, temperature=0.7)
QUEUE_SIZE = 20  # app.py's default
CLIENTS_TIMEOUT_S = 240
MEMORY_SLACK_MB = 150  # RSS may stay above its start (allocator pools, first-use imports); a leak per turn would not
POOL_THREAD = "AnyIO worker thread"  # Starlette's bounded thread pool: idle workers linger a while, by design


def live_sessions(engine) -> int:
    """Sessions on `engine` still in memory (other tests' apps may keep theirs)."""
    gc.collect()
    return sum(type(item) is ChatSession and item.engine is engine for item in gc.get_objects())


def own_threads() -> list[str]:
    """This process's threads, less the bounded pool's idle workers."""
    return sorted(t.name for t in threading.enumerate() if t.name != POOL_THREAD)


def run_clients(url: str, sessions: int, turns: int) -> dict:
    done = subprocess.run([sys.executable, "-m", "tests.helpers.load_driver", url, str(sessions), str(turns)],
                          cwd=ROOT, capture_output=True, text=True, timeout=CLIENTS_TIMEOUT_S)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def short_lived_tabs(monkeypatch):
    """Gradio keeps a closed tab's state an hour (to allow a reload); its own test switch makes it a second."""
    monkeypatch.setenv("GRADIO_IS_E2E_TEST", "1")


@pytest.mark.parametrize("concurrency, batching", [(1, False), (4, True)], ids=["one at a time", "4 at once, batched"])
def test_many_sessions_at_once_each_get_only_their_own_chat_and_all_is_freed_after(
    tiny_chat_dir, short_lived_tabs, concurrency, batching,
):
    # Sampled, as people chat; "a a a …", so that no answer is empty by chance (a random model may end one at
    # once, which is a failed answer, on some weights or CPUs): this test is about whose text reaches whom.
    engine = repeating(make_engine(tiny_chat_dir, batching=batching))
    with running_app(engine, SETTINGS, concurrency=concurrency, queue_size=QUEUE_SIZE) as (demo, url):
        warm_up = new_client(url)
        warm_up.predict("warm up", api_name="/send")
        warm_up.close()
        assert wait_for(lambda: live_sessions(engine) == 0, 15), "a closed tab's session was never dropped"
        threads_before = own_threads()
        with PeakMemory() as memory:
            result = run_clients(url, SESSIONS, TURNS)
        assert result["failures"] == [] and result["completed_turns"] == SESSIONS * TURNS
        assert sorted(map(int, result["tags"])) == list(range(SESSIONS))
        assert wait_for(lambda: live_sessions(engine) == 0, 15), f"{live_sessions(engine)} sessions outlived their tabs"
        assert wait_for(lambda: engine.caches.tokens == 0, 5), "KV caches outlived their sessions"
        assert wait_for(lambda: not generation_workers() and len(own_threads()) <= len(threads_before), 10), (
            f"threads before {threads_before}, after {own_threads()}")
        after = memory.now()
        print(f"\nload (--concurrency {concurrency}, batching {batching}): {SESSIONS} sessions × {TURNS} turns, {result['completed_turns']} answers, "
              f"{len(result['failures'])} failures, {result['seconds']:.1f} s, RSS {memory.baseline / 2**20:.0f} MiB → "
              f"peak {memory.peak / 2**20:.0f} → {after / 2**20:.0f} MiB after; threads {len(threads_before)} → {len(own_threads())}")
        assert after - memory.baseline < MEMORY_SLACK_MB * 2**20
        if batching:  # the answers really were computed together, not one after another
            assert engine.batcher.largest_batch > 1


def test_a_burst_past_the_queue_size_is_told_busy_and_everyone_else_is_served(tiny_chat_dir):
    engine = make_engine(tiny_chat_dir, endless=True)  # every answer takes its full 30 tokens: the queue stays full
    burst, queue_size = 12, 4
    with running_app(engine, GenerationSettings(max_new_tokens=30), concurrency=1, queue_size=queue_size) as (demo, url):
        with ThreadPoolExecutor(burst) as pool:
            clients = list(pool.map(lambda _: new_client(url), range(burst)))
        jobs = [client.submit(f"burst {index}", api_name="/send") for index, client in enumerate(clients)]
        served, busy = [], []
        for index, job in enumerate(jobs):
            try:
                chat = texts(job.result(timeout=120)[0])
            except Exception as error:  # noqa: BLE001 - the refusal is what this test looks at
                busy.append(str(error))
                continue
            assert chat[0] == ("user", f"burst {index}") and len(chat) == 2 and chat[1][1]
            served.append(index)
        print(f"\nburst: {burst} at once, --concurrency 1 --queue-size {queue_size}: {len(served)} served, {len(busy)} told busy")
        assert busy and all("Queue is full! Please try again." in message for message in busy), busy
        assert len(served) >= queue_size + 1 and len(served) + len(busy) == burst
        assert wait_for(lambda: not generation_workers(), 5)
        chat, *_ = clients[0].predict("after the burst", api_name="/send")  # and the app serves again
        assert texts(chat)[-2] == ("user", "after the burst")
        close_all(clients)


def test_the_concurrency_limit_counts_every_answer_whichever_button_started_it(tiny_chat_dir):
    """`--concurrency 1`: a second user's Retry waits while the first user's Send streams (Gradio
    would otherwise give Send, Enter and Retry each their own limit: three answers at once)."""
    engine = make_engine(tiny_chat_dir, endless=True)
    with running_app(engine, GenerationSettings(max_new_tokens=4000), concurrency=1) as (demo, url):
        first, second = new_client(url), new_client(url)
        second.predict("short one", max_new_tokens=2, api_name="/send")
        sending = first.submit("long one", api_name="/send")
        streaming(sending)
        retrying = second.submit(max_new_tokens=4, api_name="/retry")
        assert wait_for(lambda: retrying.status().code.name == "IN_QUEUE", 10)
        assert len(generation_workers()) == 1
        first.predict(api_name="/stop")
        chat, *_ = retrying.result(timeout=120)
        assert texts(chat)[0] == ("user", "short one") and len(texts(chat)) == 2
        close_all([first, second])


def test_opening_the_page_never_copies_the_sessions_or_the_model(tiny_chat_dir, monkeypatch):
    """Gradio deep-copies the page's config at every page load and gradio_client connect. The session
    State's delete callback used to be the store's bound method, and copying a bound method copies its
    object: every session and the model's weights. With SmolLM2-135M, 20 tabs opening at once took
    the app from 1 GB to 5.5 GB and every one of them timed out."""
    copies: list = []
    clone = torch.nn.Parameter.__deepcopy__
    monkeypatch.setattr(ChatSession, "__deepcopy__", lambda self, memo: copies.append(self) or self, raising=False)
    monkeypatch.setattr(torch.nn.Parameter, "__deepcopy__", lambda self, memo: copies.append(self) or clone(self, memo))
    with running_app(make_engine(tiny_chat_dir), SETTINGS) as (demo, url):
        first = new_client(url)
        first.predict("now a session exists", api_name="/send")
        with ThreadPoolExecutor(4) as pool:
            others = list(pool.map(lambda _: new_client(url), range(4)))
        assert all(httpx.get(url + "config").status_code == 200 for _ in range(3))
        close_all([first, *others])
    assert not copies, f"{len(copies)} sessions or model weights were copied"
