"""Driving the running app as its users do, through `gradio_client` (and raw HTTP where a browser
can send what `gradio_client` can't): chat texts, warnings, streaming jobs."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator

import httpx
from gradio_client import Client

from tests.helpers.waiting import wait_for


def texts(chat) -> list[tuple[str, str]]:
    """Chatbot messages → [(role, text)] (Gradio 6 sends content as a list of parts)."""
    return [(m["role"], "".join(p.get("text", "") for p in m["content"])) for m in chat]


class SteadyClient(Client):
    """gradio_client's `Client`, less a race it has with Gradio 6's event streams (sse_v3).

    The server closes a session's stream once no event of the session is left. An event the client sent while its
    reader was about to act on that close was registered with the closing reader, which then failed it
    (`CancelledError`) though the server runs it and sends its messages to the next stream. A storm of buttons on a
    busy machine met it (tests/test_faults.py); tests/test_client_race.py meets it every time. Here a reader that
    meets the close reads on while an event it answers for has not completed. (gradio_client 2.7.2's own attributes:
    the versions are pinned.)
    """

    def stream_messages(self, protocol, session_hash):
        with self.pending_lock:
            epoch = self.stream_epoch
        while True:
            super().stream_messages(protocol, session_hash)
            with self.pending_lock:
                waiting = [event for event in self.pending_event_ids
                           if self.pending_event_epoch.get(event) == epoch and not self._completed(event)]
                if not waiting:
                    return
                if self.stream_epoch != epoch:  # a newer reader reads the session's stream now: it answers for them
                    self.pending_event_epoch.update({event: self.stream_epoch for event in waiting})
                    return
                self.stream_open = True  # (the close set it False) this reader opens the stream again

    def _completed(self, event: str) -> bool:
        messages = self.pending_messages_per_event.get(event)
        return messages is None or any(message is not None and message.get("msg") == "process_completed" for message in messages)


def new_client(url: str, **options) -> Client:
    """A quiet gradio_client on the app at `url`; `options` go to `Client` (auth ...)."""
    return SteadyClient(url, verbose=False, analytics_enabled=False, **options)


def close_all(clients: list[Client]) -> None:
    """Closes the clients at once, not in turn: each waits up to 1 s for its heartbeat thread."""
    with ThreadPoolExecutor(max(1, len(clients)), thread_name_prefix="close-client") as pool:
        list(pool.map(Client.close, clients))


def warnings_of(job) -> list[str]:
    """The `gr.Warning` toasts a finished job showed (they reach gradio_client as log messages)."""
    updates, shown = job.communicator.updates, []
    while not updates.empty():
        update = updates.get_nowait()
        if getattr(update, "log", None):
            shown.append(update.log[0])
    return shown


def streaming(job, timeout_s: float = 30.0) -> None:
    """Waits until `job` is streaming its answer (the model is generating); fails if it never does."""
    assert wait_for(lambda: job.status().code.name == "ITERATING", timeout_s), f"never streamed: {job.status()}"


def raw_send_events(url: str, text: str, session_hash: str, settings: dict | None = None, timeout: float = 60.0) -> Iterator[dict]:
    """/send as the page's own JavaScript sends it, yielding the server's messages as they come.

    For what gradio_client can't do: send what a browser can (JSON.stringify writes a lone
    surrogate as a `\\ud800` escape; gradio_client fails to encode it), or hang up mid-answer
    (`close()` it: the connection closes, as when a tab closes). `settings` maps a control's label to
    its value (`{"Max new tokens": 4096}`); other inputs keep the page's values.
    """
    config = httpx.get(url + "config").json()
    send = next(d for d in config["dependencies"] if d.get("api_name") == "send")
    components = {c["id"]: c.get("props", {}) for c in config["components"]}
    given = {"Message": text, **(settings or {})}
    data = [given.get(components[i].get("label"), components[i].get("value")) for i in send["inputs"]]
    body = json.dumps({"data": data, "fn_index": send["id"], "session_hash": session_hash, "trigger_id": None})
    httpx.post(url + "gradio_api/queue/join", content=body, headers={"content-type": "application/json"}).raise_for_status()
    with httpx.stream("GET", url + f"gradio_api/queue/data?session_hash={session_hash}", timeout=timeout) as stream:
        for line in stream.iter_lines():
            if line.startswith("data:"):
                message = json.loads(line[5:])
                yield message
                if message["msg"] == "process_completed":
                    return
