"""The conversation store's cost: listing 1,000 chats, opening a 500-message chat, and saving an answer
while it streams (tokens/s with the store ÷ without, in one run).

    .venv/bin/python -m bench.store --threads 2 --repeats 5

Listing and opening run on a SQLite file (the default) and, where PostgreSQL is installed, on a
throw-away PostgreSQL server. Goals: each under 0.5 s; saving while streaming costs at most 2% of
the tokens per second.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from pathlib import Path
from typing import Any, Iterator

from bench.common import goal, load_engine, machine, median, parser, session, set_threads, table

CHATS = 1_000
LONG_CHAT_MESSAGES = 500
GOAL_S = 0.5
GOAL_SAVING = 0.98
OWNER = "user:bench"


def fill(store: Any) -> str:
    """CHATS chats of 4 messages each, and one of LONG_CHAT_MESSAGES; returns the long one's id."""
    for number in range(CHATS):
        chat_id = store.new_chat(OWNER, instructions="Be brief.")
        parent = None
        for turn in range(2):
            parent = store.add_message(OWNER, chat_id, {"role": "user", "content": f"Question {turn} of chat {number}?"}, parent)
            parent = store.add_message(OWNER, chat_id, {"role": "assistant", "content": "An answer of a few words. " * 8}, parent)
    long_chat = store.new_chat(OWNER)
    parent = None
    for index in range(LONG_CHAT_MESSAGES):
        role = "user" if index % 2 == 0 else "assistant"
        parent = store.add_message(OWNER, long_chat, {"role": role, "content": f"Message {index}: " + "words " * 40}, parent)
    return long_chat


def timed_s(function: Any, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        times.append(time.perf_counter() - start)
    return median(times)


@contextlib.contextmanager
def databases() -> Iterator[list[tuple[str, str]]]:
    found = [("SQLite file", f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-store-')) / 'chats.sqlite3'}")]
    with contextlib.ExitStack() as stack:
        try:
            from tests.helpers.postgres import _binaries, postgres_server

            if _binaries() is not None:
                found.append(("PostgreSQL", stack.enter_context(postgres_server())))
        except Exception as error:  # noqa: BLE001 - the SQLite rows still say what they measure
            print(f"PostgreSQL left out: {error}")
        yield found


def saving_ratio(repeats: int) -> tuple[float, float, float]:
    """(tokens/s without a store, with one, ratio): the embedded model, 128 tokens, alternating runs."""
    from chat.settings import GenerationSettings
    from chat.store.record import ChatRecord
    from chat.store.store import Store

    engine = load_engine()
    store = Store(f"sqlite:///{Path(tempfile.mkdtemp(prefix='bench-saving-')) / 'chats.sqlite3'}")
    settings = GenerationSettings(temperature=0, max_new_tokens=128, seed=1)
    speeds: dict[bool, list[float]] = {False: [], True: []}
    for _ in range(repeats):
        for saving in (False, True):
            chat = session(engine, settings, cached=False)
            if saving:
                chat.record = ChatRecord.new(store, OWNER, chat.instructions, chat.settings)
            reply = chat.send("Tell me a long story about a lighthouse keeper.")
            for _ in reply:
                pass
            speeds[saving].append(reply.stats.tokens_per_second or float("nan"))
    plain, saved = median(speeds[False]), median(speeds[True])
    return plain, saved, saved / plain


def main() -> None:
    args = parser(__doc__.splitlines()[0]).parse_args()
    set_threads(args.threads)
    from chat.store.store import Store

    rows, goals = [], []
    with databases() as found:
        for name, url in found:
            store = Store(url)
            long_chat = fill(store)
            listing = timed_s(lambda: store.chats(OWNER, limit=CHATS + 1), args.repeats)
            searching = timed_s(lambda: store.chats(OWNER, search="chat 999"), args.repeats)
            opening = timed_s(lambda: store.open_chat(OWNER, long_chat), args.repeats)
            rows.append((name, listing, searching, opening))
            goals.append(goal(f"{name}: list {CHATS:,} chats (s)", listing, GOAL_S, at_least=False))
            goals.append(goal(f"{name}: open a {LONG_CHAT_MESSAGES}-message chat (s)", opening, GOAL_S, at_least=False))
    plain, saved, ratio = saving_ratio(args.repeats)
    goals.append(goal("tokens/s while saving ÷ without a store", ratio, GOAL_SAVING, at_least=True))
    print(table(
        f"Conversation store: {CHATS:,} chats of 4 messages and one of {LONG_CHAT_MESSAGES} (medians of {args.repeats})",
        ["database", f"list {CHATS:,} chats (s)", "search their messages (s)", f"open the {LONG_CHAT_MESSAGES}-message chat (s)"],
        rows,
        [*goals, f"streaming 128 tokens (embedded model): {plain:.1f} tokens/s without a store, {saved:.1f} while saving",
         machine(args.threads)],
    ))


if __name__ == "__main__":
    main()
